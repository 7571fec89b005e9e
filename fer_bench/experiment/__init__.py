"""Experiments: one cell (fit on Training, select on PublicTest, score on PrivateTest), CNN cells, the sweep."""
