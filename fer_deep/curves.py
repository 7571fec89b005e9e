"""Training curves of a CNN: loss and accuracy per epoch, training and validation, in one figure.

The one plotter of both places that draw them: :func:`fer_deep.training.train`
writes the PNG of a run (:func:`plot_history`), and the report
(:mod:`fer_bench.report.plots`) draws a record's ``history``
(:func:`curves_png`).  It imports numpy, matplotlib and the shared core only,
never Keras, so the report draws curves without the ``deep`` extra.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from fer_bench._core import replacing

METRICS = ("loss", "accuracy")
"""The panels, in order; each shows ``metric`` (training) and ``val_metric`` (validation)."""


def history_series(history) -> dict:
    """A Keras-style history as ``{key: [value per epoch]}``; a list of per-epoch dicts is read too."""
    if isinstance(history, list):
        epochs = [epoch if isinstance(epoch, dict) else {} for epoch in history]
        keys = {key for epoch in epochs for key in epoch}
        return {key: [epoch.get(key) for epoch in epochs] for key in keys}
    return dict(history or {})


def curves_figure(history, *, best_epoch: int | None = None, title: str | None = None):
    """The figure: one panel per metric with values, training and validation lines, ``best_epoch`` dashed.

    Parameters
    ----------
    history : dict or list of dict
        ``loss``, ``accuracy`` and optionally ``val_loss``, ``val_accuracy``
        lists (missing values, None, are gaps); see :func:`history_series`.
    best_epoch : int, optional
        1-based epoch to mark (the one selected on validation).
    title : str, optional
        Figure title.

    Returns
    -------
    matplotlib.figure.Figure or None
        None when the history holds neither loss nor accuracy.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    history = history_series(history)
    panels = [(metric, [key for key in (metric, f"val_{metric}") if history.get(key)]) for metric in METRICS]
    panels = [(metric, keys) for metric, keys in panels if keys]
    if not panels:
        return None
    figure = Figure(figsize=(4.6 * len(panels), 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    for index, (metric, keys) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for key in keys:
            values = [np.nan if value is None else float(value) for value in history[key]]
            axes.plot(range(1, len(values) + 1), values, marker="o", markersize=3,
                      label="validation" if key.startswith("val_") else "training")
        if best_epoch:
            axes.axvline(best_epoch, color="gray", linestyle="--", linewidth=1, label=f"best epoch {best_epoch}")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("epoch")
        axes.set_ylabel(metric)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
    if title:
        figure.suptitle(title, fontsize=10)
    return figure


def curves_png(history, *, best_epoch: int | None = None, title: str | None = None) -> bytes | None:
    """:func:`curves_figure` as PNG bytes, or None when there is nothing to draw."""
    figure = curves_figure(history, best_epoch=best_epoch, title=title)
    if figure is None:
        return None
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def plot_history(history, path, *, best_epoch: int | None = None, title: str | None = None) -> Path | None:
    """Write :func:`curves_figure` to the PNG file ``path`` (atomically; folders are made).

    Returns
    -------
    Path or None
        ``path``, or None (and no file) when the history holds neither loss nor accuracy.
    """
    png = curves_png(history, best_epoch=best_epoch, title=title)
    if png is None:
        return None
    path = Path(path)
    with replacing(path) as tmp:
        Path(tmp).write_bytes(png)
    return path
