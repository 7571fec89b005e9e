"""Validation shared by the feature transformers (``features`` and ``sift`` import it; it imports neither)."""

from __future__ import annotations

import numpy as np


def check_faces(X) -> np.ndarray:
    """Validate a stack of gray faces and return it as an array (n, h, w)."""
    X = np.asarray(X)
    if X.ndim == 2:
        raise ValueError(
            f"expected a stack of gray faces of shape (n, height, width), got a 2-D array {X.shape}; "
            "wrap a single face as X[None]"
        )
    if X.ndim != 3:
        raise ValueError(f"expected a stack of gray faces of shape (n, height, width), got shape {X.shape}")
    if X.shape[1] < 16 or X.shape[2] < 16:
        raise ValueError(f"faces of {X.shape[1]}x{X.shape[2]} pixels are too small; expected 48x48")
    if not (np.issubdtype(X.dtype, np.integer) or np.issubdtype(X.dtype, np.floating)):
        raise ValueError(f"faces must hold numbers, got dtype {X.dtype}")
    return X
