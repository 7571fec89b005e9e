"""The report's plots, as PNG bytes: accuracy against cost, per-class F1, ROC curves, training curves, confusion matrices."""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np

from .analysis import FAMILY_NAMES, ModelResult, RunAnalysis, pct, resolve_path

FAMILY_COLOURS = {"classic": "#1f77b4", "deep": "#d62728", "fusion": "#9467bd"}


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def plot_confusion(model: ModelResult) -> bytes:
    """Row-normalised confusion matrix with each cell's share and count."""
    counts = np.asarray(model.metrics["confusion"]["counts"])
    share = np.asarray(model.metrics["confusion"]["normalised"])
    classes = model.classes
    figure = _figure(4.6, 4.0)
    axes = figure.add_subplot()
    image = axes.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            colour = "white" if share[i, j] > 0.55 else "black"
            axes.text(j, i, f"{share[i, j]:.2f}\n{counts[i, j]}", ha="center", va="center", fontsize=6.5,
                      color=colour)
    axes.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    axes.set_yticks(range(len(classes)), classes, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"{model.name}  (accuracy {pct(model.accuracy)})", fontsize=9)
    figure.colorbar(image, ax=axes, shrink=0.8, label="share of the true class")
    return _png(figure)


def plot_per_class_f1(models: list) -> bytes:
    """Per-class F1 of every model as a heat map (models best first, classes as columns)."""
    classes = list(models[0].metrics["per_class"])
    values = np.array([[m.metrics["per_class"].get(c, {}).get("f1", np.nan) for c in classes] for m in models])
    figure = _figure(1.2 + 0.85 * len(classes), 1.0 + 0.28 * len(models))
    axes = figure.add_subplot()
    image = axes.imshow(values, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            axes.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=7,
                      color="black" if values[i, j] > 0.6 else "white")
    axes.set_xticks(range(len(classes)), classes, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(models)), [m.name for m in models], fontsize=7.5)
    for label, model in zip(axes.get_yticklabels(), models):
        label.set_color(FAMILY_COLOURS.get(model.family, "black"))
    axes.set_title("F1 per class (rows: best test accuracy first; blue classical, red deep)", fontsize=9)
    figure.colorbar(image, ax=axes, label="F1")
    return _png(figure)


MARKERS = "o^sDvPXhd<>p"  # no star: stars mark the CNNs


def pareto_front(points) -> set:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher)."""
    front, best = set(), -math.inf
    for index in sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1])):
        if points[index][1] > best:
            front.add(index)
            best = points[index][1]
    return front


def plot_accuracy_cost(models: list) -> bytes | None:
    """Test accuracy (with 95% interval) against batched prediction cost per face, log x.

    Classical cells are coloured by feature set and shaped by classifier, so
    dozens of cells stay readable; CNNs are red stars.  Only the CNNs and the
    cells on the cost-accuracy front are labelled.
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter

    usable = [m for m in models if m.cost("predict_ms_per_face")]
    if not usable:
        return None
    feature_sets = list(dict.fromkeys(m.record.get("features", "?") for m in usable if m.family == "classic"))
    classifiers = list(dict.fromkeys(m.record.get("classifier", "?") for m in usable if m.family == "classic"))
    palette = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#bcbd22", "#e377c2"]
    colour = {name: palette[i % len(palette)] for i, name in enumerate(feature_sets)}
    marker = {name: MARKERS[i % len(MARKERS)] for i, name in enumerate(classifiers)}
    figure = _figure(9.5, 5.4)
    axes = figure.add_subplot()
    points = [(m.cost("predict_ms_per_face"), 100 * m.accuracy) for m in usable]
    front = pareto_front(points)
    low, high = math.log10(min(x for x, _ in points)), math.log10(max(x for x, _ in points))
    for index, (m, (x, y)) in enumerate(zip(usable, points)):
        interval = (m.metrics.get("ci") or {}).get("accuracy")
        error = [[y - 100 * interval[0]], [100 * interval[1] - y]] if interval else None
        if m.family == "classic":
            style = {"fmt": marker[m.record.get("classifier", "?")], "color": colour[m.record.get("features", "?")],
                     "ms": 6}
        else:
            style = {"fmt": "*", "color": FAMILY_COLOURS["deep"], "ms": 11}
        axes.errorbar([x], [y], yerr=error, capsize=2, lw=0.7, alpha=0.9, **style)
        if m.family != "classic" or index in front:
            # Labels of the costlier half point left, so they stay inside the axes and off the legend.
            right = high > low and (math.log10(x) - low) / (high - low) > 0.5
            axes.annotate(m.name, (x, y), xytext=(-6 if right else 5, 4), textcoords="offset points", fontsize=7,
                          color=style["color"], ha="right" if right else "left")
    axes.set_xscale("log")
    # plain numbers (0.5, 2, 10) read faster than 5x10^-1 on a cost axis
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(FuncFormatter(
        lambda value, _: f"{value:g}" if value > 0 and round(value / 10 ** math.floor(math.log10(value))) in (2, 5)
        else ""))
    axes.margins(x=0.12, y=0.08)  # room for the labels of the outermost points
    axes.set_xlabel("prediction cost, ms per face (batched, one thread, features included; log scale)")
    axes.set_ylabel("test accuracy, % (95% bootstrap interval)")
    axes.set_title("Accuracy against prediction cost: up and to the left is better; labelled: CNNs and the "
                   "cells no other beats on both", fontsize=9)
    axes.grid(True, which="both", alpha=0.3)
    handles = [Line2D([], [], color=colour[f], marker="o", ls="", label=f) for f in feature_sets]
    handles += [Line2D([], [], color="grey", marker=marker[c], ls="", label=c) for c in classifiers]
    if any(m.family == "deep" for m in usable):
        handles.append(Line2D([], [], color=FAMILY_COLOURS["deep"], marker="*", ms=10, ls="", label="CNN"))
    axes.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False,
                title="colour: features\nshape: classifier", title_fontsize=7.5)
    return _png(figure)


def plot_roc(models: list) -> bytes | None:
    """One-vs-rest ROC curves of each given model, one panel per model."""
    models = [m for m in models if m.metrics.get("roc")]
    if not models:
        return None
    figure = _figure(4.6 * len(models), 4.4)
    for index, model in enumerate(models, start=1):
        axes = figure.add_subplot(1, len(models), index)
        for name, curve in model.metrics["roc"]["per_class"].items():
            if curve["auc"] is None:
                continue
            axes.plot(curve["fpr"], curve["tpr"], lw=1.2, label=f"{name} (AUC {curve['auc']:.2f})")
        axes.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        axes.set_xlim(0, 1)
        axes.set_ylim(0, 1.01)
        axes.set_aspect("equal")
        axes.set_xlabel("false positive rate")
        axes.set_ylabel("true positive rate")
        auc = model.metrics["roc"]["auc_macro"]
        axes.set_title(f"{model.name} ({FAMILY_NAMES.get(model.family, model.family)})\n"
                       f"macro AUC {auc:.3f}" if auc is not None else model.name, fontsize=9)
        axes.legend(fontsize=7, loc="lower right")
    return _png(figure)


def plot_training_curves(model: ModelResult) -> bytes | None:
    """Loss and accuracy per epoch, training and validation, from a deep record's ``history``.

    Drawn by :func:`fer_deep.curves.curves_png`, the plotter training uses, imported here so a report
    without CNNs never loads it.
    """
    from fer_deep.curves import curves_png

    return curves_png(model.record.get("history"), best_epoch=model.record.get("best_epoch"), title=model.name)


@dataclass
class Plot:
    """One figure of the report: a file name under ``plots/``, a caption, the PNG bytes."""

    name: str
    caption: str
    png: bytes


def make_plots(analysis: RunAnalysis) -> dict:
    """Every plot of the report, by section: ``overview``, ``roc``, ``training``, ``confusion``."""
    plots = {"overview": [], "roc": [], "training": [], "confusion": []}
    models = analysis.models
    if not models:
        return plots
    with_predictions = [m for m in models if m.metrics.get("confusion")]
    figure = plot_accuracy_cost(models)
    if figure:
        plots["overview"].append(Plot("accuracy_vs_cost.png", "Test accuracy against prediction cost per face.",
                                      figure))
    if with_predictions:
        plots["overview"].append(Plot("per_class_f1.png", "F1 per class and model.",
                                      plot_per_class_f1(with_predictions)))
    best = [analysis.best[f] for f in ("classic", "deep") if f in analysis.best]
    figure = plot_roc(best)
    if figure:
        plots["roc"].append(Plot("roc_best.png", "One-vs-rest ROC curves of the best classical and the best deep "
                                 "model.", figure))
    for model in models:
        if model.family != "deep":
            continue
        figure = plot_training_curves(model)
        if figure:
            plots["training"].append(Plot(f"training_{model.name}.png", f"Training curves of {model.name}.", figure))
        else:
            png = resolve_path(analysis.run_dir, model.record.get("curves_png"))
            if png is not None:
                plots["training"].append(Plot(f"training_{model.name}.png",
                                              f"Training curves of {model.name} (from the cell).", png.read_bytes()))
    for model in with_predictions:
        plots["confusion"].append(Plot(f"confusion_{model.name}.png", f"Confusion matrix of {model.name}.",
                                       plot_confusion(model)))
    return plots
