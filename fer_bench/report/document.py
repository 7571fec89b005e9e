"""The report of a run folder: records as JSON and CSV, a Markdown and a self-contained HTML report.

Everything is rendered from the records (``RUN_DIR/records/*.json``) and the
test predictions they point to (``predictions/*.npz``), never from the models,
so ``fer-bench report RUN_DIR`` rebuilds it without retraining.  Paths in
records may be absolute or relative to the run folder; they are resolved
against the run folder first, so a moved run folder still renders.

Outputs, all in the run folder:

- ``records.json``: every record, with the report's derived figures, the
  machine, the versions and the git commit;
- ``records.csv``: one row per cell with the fixed columns of :data:`CSV_COLUMNS`;
- ``report.md`` with its plots in ``plots/``;
- ``report.html``: the same report with the plots embedded as base64 PNG and
  inline CSS only, so it opens with no network.

The verdict compares the best classical and the best deep model, each chosen
by validation accuracy (the test split stays out of the choice), with
McNemar's test on the test faces both were scored on.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..experiment.harness import load_predictions, machine_info, write_json_atomic
from ..metrics import evaluate_predictions, mcnemar_test

REPORT_SCHEMA_VERSION = 1
"""Version of records.json / records.csv; bump when a column changes meaning."""

MEMORY_NOTE = (
    "Peak memory: the process's resident high-water mark while the cell ran (kernel VmHWM, reset at the "
    "cell's start), in brackets its growth over the cell's starting size; it includes the loaded dataset "
    "and every library imported so far (TensorFlow for CNN cells). Worker processes (feature extraction, "
    "parallel grid search) are not in it; records.csv has their sampled total as peak_tree_rss_bytes."
)
"""How to read the leaderboard's memory column (shown under it)."""

ALPHA = 0.05
"""Significance level of the verdict's McNemar test."""

VERSION_COLUMNS = ("python", "numpy", "scikit-learn", "scikit-image", "opencv-python-headless", "tensorflow", "keras")

CSV_COLUMNS = (
    "schema_version", "report_schema_version", "cell", "family", "status", "preset", "dataset", "dataset_key",
    "split_train", "split_validation", "split_test", "features", "classifier", "arch", "params", "epochs", "seed",
    "n_train", "n_validation", "n_test",
    "accuracy", "accuracy_ci_low", "accuracy_ci_high", "f1_macro", "f1_macro_ci_low", "f1_macro_ci_high",
    "precision_macro", "recall_macro", "precision_weighted", "recall_weighted", "f1_weighted", "auc_macro",
    "valence_accuracy", "valence_f1_macro", "validation_accuracy",
    "fit_seconds", "wall_seconds", "predict_ms_per_face", "predict_ms_single", "model_bytes",
    "peak_rss_bytes", "start_rss_bytes", "peak_tree_rss_bytes", "peak_memory_method",
    "host", "platform", "cores", *(f"version_{name}" for name in VERSION_COLUMNS), "git_commit", "error",
)
"""The columns of records.csv, in order."""

FAMILY_NAMES = {"classic": "classical", "deep": "deep"}
FAMILY_COLOURS = {"classic": "#1f77b4", "deep": "#d62728"}


class ReportError(ValueError):
    """A run folder cannot be reported on; the message says why."""


# --------------------------------------------------------------------------- loading


def resolve_path(run_dir, value) -> Path | None:
    """The file a record's path names, looked up in ``run_dir`` first; None if it is nowhere.

    A relative path is relative to the run folder.  An absolute path is tried
    as ``run_dir/<folder>/<file>`` first (the run folder may have moved since
    the record was written), then as it stands.
    """
    if not value:
        return None
    run_dir = Path(run_dir)
    path = Path(value)
    candidates = [run_dir / path] if not path.is_absolute() else []
    candidates += [run_dir.joinpath(*path.parts[-2:]), run_dir / path.name]
    if path.is_absolute():
        candidates.append(path)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def load_records(run_dir) -> list:
    """Every record in ``run_dir/records``, sorted by family then name.

    A file that is not valid JSON becomes an error record naming the file, so
    the report lists it instead of failing.
    """
    run_dir = Path(run_dir)
    folder = run_dir / "records"
    if not folder.is_dir():
        raise ReportError(f"{run_dir}: no records/ folder; run 'fer-bench run --out {run_dir}' first")
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as error:
            record = {"cell": path.stem, "family": "unknown", "status": "error",
                      "error": f"unreadable record {path.name}: {error}"}
        record.setdefault("cell", path.stem)
        records.append(record)
    if not records:
        raise ReportError(f"{folder}: no records; run 'fer-bench run --out {run_dir}' first")
    return sorted(records, key=lambda r: (r.get("family") != "classic", r["cell"]))


# --------------------------------------------------------------------------- analysis


@dataclass
class ModelResult:
    """One finished cell with the metrics recomputed from its predictions."""

    record: dict
    metrics: dict
    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    proba: np.ndarray | None = None
    classes: tuple = ()
    warnings: list = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.record["cell"]

    @property
    def family(self) -> str:
        return self.record.get("family", "unknown")

    @property
    def accuracy(self) -> float:
        return self.metrics["accuracy"]

    def cost(self, key):
        value = self.record.get(key)
        return None if value is None else float(value)


@dataclass
class RunAnalysis:
    """Everything the report shows, computed from the records and predictions."""

    run_dir: Path
    records: list
    models: list  # ModelResult, best test accuracy first
    failed: list  # records with status other than ok
    best: dict  # family -> ModelResult chosen by validation accuracy
    selection_rule: str
    comparison: dict | None  # best classical vs best deep
    problems: list  # warnings about the run (missing predictions, different test sets)

    def model(self, name: str) -> ModelResult:
        for result in self.models:
            if result.name == name:
                return result
        available = ", ".join(m.name for m in self.models) or "none"
        raise ReportError(f"no finished model {name!r} in {self.run_dir}; models: {available}")


def _model_result(run_dir: Path, record: dict, n_resamples: int, seed: int) -> ModelResult:
    path = resolve_path(run_dir, record.get("predictions_path"))
    if path is None:
        metrics = {k: record.get(k) for k in ("accuracy", "f1_macro", "precision_macro", "recall_macro",
                                              "precision_weighted", "recall_weighted", "f1_weighted",
                                              "per_class", "confusion_matrix")}
        metrics.update(confusion=None, roc=None, ci=None, grouped=None)
        return ModelResult(record, metrics, warnings=[
            f"predictions {record.get('predictions_path')!r} not found in {run_dir}: figures from the record, "
            "no intervals, ROC or significance test"])
    arrays = load_predictions(path)
    classes = tuple(str(c) for c in arrays["classes"])
    proba = arrays.get("proba")
    metrics = evaluate_predictions(arrays["y_true"], arrays["y_pred"], proba, classes, n_resamples=n_resamples,
                                   seed=seed)
    return ModelResult(record, metrics, arrays["y_true"], arrays["y_pred"], proba, classes)


def same_faces(a: ModelResult, b: ModelResult) -> bool:
    """Whether two models were scored on the same test faces (a condition of McNemar's test)."""
    if a.y_true is None or b.y_true is None:
        return False
    if a.record.get("dataset_key") != b.record.get("dataset_key"):
        return False
    return len(a.y_true) == len(b.y_true) and bool(np.array_equal(a.y_true, b.y_true))


def compare_models(a: ModelResult, b: ModelResult) -> dict:
    """Accuracy difference and McNemar's test (all classes and valence) between two models.

    Returns
    -------
    dict
        ``a``, ``b`` (names), ``difference_points`` (accuracy of ``a`` minus ``b``
        in percentage points), ``mcnemar`` and ``valence_mcnemar`` (None when
        the models were not scored on the same faces), and ``comparable``.
    """
    out = {"a": a.name, "b": b.name, "difference_points": 100 * (a.accuracy - b.accuracy),
           "comparable": same_faces(a, b), "mcnemar": None, "valence_mcnemar": None}
    if out["comparable"]:
        out["mcnemar"] = mcnemar_test(a.y_true, a.y_pred, b.y_pred)
        from ..metrics import group_labels

        grouping = group_labels(a.classes)
        if grouping is not None:
            mapping = grouping[0]
            out["valence_mcnemar"] = mcnemar_test(mapping[a.y_true], mapping[a.y_pred], mapping[b.y_pred])
    return out


def _pick_best(models: list) -> tuple:
    """Best model per family by validation accuracy (test accuracy where some lack it); and the rule used."""
    by_validation = all(m.record.get("validation_accuracy") is not None for m in models)
    key = (lambda m: (m.record["validation_accuracy"], m.accuracy)) if by_validation else (lambda m: m.accuracy)
    best = {}
    for family in ("classic", "deep"):
        members = [m for m in models if m.family == family]
        if members:
            best[family] = max(members, key=key)
    rule = ("highest validation accuracy (the test split plays no part in the choice)" if by_validation
            else "highest test accuracy (some records have no validation accuracy)")
    return best, rule


def analyse_run(run_dir, records=None, *, n_resamples: int = 1000, seed: int = 0) -> RunAnalysis:
    """Load a run folder's records and predictions and compute every figure of the report.

    Parameters
    ----------
    run_dir : path
        The run folder (``records/`` and ``predictions/`` inside).
    records : list of dict, optional
        Records already loaded (default: :func:`load_records`).
    n_resamples, seed : int
        Bootstrap settings of the confidence intervals.
    """
    run_dir = Path(run_dir)
    records = load_records(run_dir) if records is None else records
    models, failed, problems = [], [], []
    for record in records:
        if record.get("status") != "ok":
            failed.append(record)
            continue
        try:
            result = _model_result(run_dir, record, n_resamples, seed)
        except (OSError, ValueError, KeyError) as error:
            failed.append({**record, "status": "error", "error": f"predictions unreadable: {error}"})
            continue
        problems.extend(f"{result.name}: {w}" for w in result.warnings)
        models.append(result)
    models.sort(key=lambda m: -m.accuracy)
    best, rule = _pick_best(models)
    comparison = None
    if "classic" in best and "deep" in best:
        comparison = compare_models(best["deep"], best["classic"])
        if not comparison["comparable"]:
            problems.append(f"{best['deep'].name} and {best['classic'].name} were not scored on the same test faces; "
                            "no significance test between them")
    keys = {m.record.get("dataset_key") for m in models}
    if len(keys) > 1:
        problems.append(f"the records come from {len(keys)} different datasets or subsets; compare with care")
    return RunAnalysis(run_dir, records, models, failed, best, rule, comparison, problems)


# --------------------------------------------------------------------------- wording


def pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def ci_text(interval) -> str:
    return "–" if not interval else f"[{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"


def ms_text(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3g} ms" if value < 100 else f"{value:,.0f} ms"


def mb_text(value) -> str:
    if value is None:
        return "–"
    if value < 100_000:
        return f"{value / 1e3:.0f} kB"
    return f"{value / 1e6:.1f} MB" if value < 100e6 else f"{value / 1e6:,.0f} MB"


def memory_text(model: "ModelResult") -> str:
    """Peak resident memory during the cell, with its growth over the cell's start in brackets."""
    peak, start = model.cost("peak_rss_bytes"), model.cost("start_rss_bytes")
    if peak is None:
        return "–"
    return mb_text(peak) + (f" (+{max(0.0, peak - start) / 1e6:,.0f})" if start is not None else "")


def seconds_text(value) -> str:
    if value is None:
        return "–"
    if value < 90:
        return f"{value:.1f} s"
    if value < 5400:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def p_text(p) -> str:
    if p is None:
        return "–"
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def describe_cost(model: ModelResult) -> str:
    """One phrase: what a model costs per face, on disk, in memory and to fit."""
    parts = [f"{ms_text(model.cost('predict_ms_per_face'))} per face batched",
             f"{ms_text(model.cost('predict_ms_single'))} for a single face",
             f"{mb_text(model.cost('model_bytes'))} on disk"]
    if model.cost("peak_rss_bytes") is not None:
        parts.append(f"{mb_text(model.cost('peak_rss_bytes'))} peak memory")
    parts.append(f"{seconds_text(model.cost('fit_seconds'))} to fit")
    return ", ".join(parts)


def verdict(analysis: RunAnalysis) -> list:
    """The plain-language answer to 'classical or deep, and at what cost?', as a list of sentences."""
    best = analysis.best
    lines = []
    if not analysis.models:
        return ["No cell finished, so there is nothing to compare; the failed cells are listed below."]
    if "deep" not in best or "classic" not in best:
        family = "classic" if "classic" in best else "deep"
        other = "deep (CNN)" if family == "classic" else "classical"
        model = best[family]
        lines.append(f"Only {FAMILY_NAMES[family]} models were run (no finished {other} cell), so this report "
                     f"cannot say which family wins.")
        lines.append(f"The best {FAMILY_NAMES[family]} model is {model.name}: {pct(model.accuracy)} test accuracy "
                     f"{ci_text((model.metrics.get('ci') or {}).get('accuracy'))}, macro F1 "
                     f"{pct(model.metrics.get('f1_macro'))}; it costs {describe_cost(model)}.")
        return lines
    deep, classic = best["deep"], best["classic"]
    comparison = analysis.comparison
    points = comparison["difference_points"]
    winner, loser = (deep, classic) if points > 0 else (classic, deep)
    test = classic.record.get("split", {}).get("test", "test")
    n = len(classic.y_true) if classic.y_true is not None else classic.record.get("n_test")
    if abs(points) < 0.05:
        lines.append(f"The two families tie: the best CNN ({deep.name}) and the best classical pipeline "
                     f"({classic.name}) both reach {pct(deep.accuracy)} on {test}.")
    else:
        lines.append(f"The {FAMILY_NAMES[winner.family]} family wins: {winner.name} reaches {pct(winner.accuracy)} "
                     f"test accuracy against {pct(loser.accuracy)} for {loser.name}, "
                     f"{abs(points):.1f} accuracy points ahead on {test} ({n:,} faces).")
    mcnemar = comparison["mcnemar"]
    if mcnemar is None:
        lines.append("No significance test: the two models were not scored on the same test faces.")
    else:
        significant = mcnemar["p_value"] < ALPHA
        lines.append(
            f"McNemar's test ({mcnemar['method']}; {mcnemar['b']} faces only {deep.name} got right, "
            f"{mcnemar['c']} only {classic.name}) gives p = {p_text(mcnemar['p_value'])}: "
            + (f"the difference is significant at the {ALPHA:.0%} level." if significant else
               f"the difference is not significant at the {ALPHA:.0%} level; on these faces the two are "
               "statistically indistinguishable.")
        )
    lines.append(f"Cost: {deep.name} needs {describe_cost(deep)}; {classic.name} needs {describe_cost(classic)}.")
    deep_ms, classic_ms = deep.cost("predict_ms_single"), classic.cost("predict_ms_single")
    if deep_ms and classic_ms:
        ratio = deep_ms / classic_ms
        faster = "the CNN" if ratio < 1 else "the classical pipeline"
        if 0.9 < ratio < 1.1:
            lines.append("For one face at a time, both take about as long.")
        else:
            lines.append(f"For one face at a time, {faster} is {max(ratio, 1 / ratio):.1f} times faster.")
    lines.append(f"Best of each family = {analysis.selection_rule}.")
    presets = {m.record.get("preset") for m in analysis.models}
    if "quick" in presets:
        lines.append("These numbers come from the quick preset (subsamples of the splits, few CNN epochs, "
                     "no hyperparameter grid): a smoke test of the pipeline, not the benchmark. "
                     "Run with --preset full for the real answer.")
    return lines


# --------------------------------------------------------------------------- plots


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


def _history_series(history) -> dict:
    """Keras-style history as ``{metric: [value per epoch]}`` (accepts a list of per-epoch dicts too)."""
    if isinstance(history, list):
        keys = {k for epoch in history if isinstance(epoch, dict) for k in epoch}
        return {k: [epoch.get(k) for epoch in history] for k in keys}
    return dict(history or {})


def plot_training_curves(model: ModelResult) -> bytes | None:
    """Loss and accuracy per epoch, training and validation, from a deep record's ``history``."""
    history = _history_series(model.record.get("history"))
    panels = [(metric, [k for k in (metric, f"val_{metric}") if history.get(k)]) for metric in ("loss", "accuracy")]
    panels = [(metric, keys) for metric, keys in panels if keys]
    if not panels:
        return None
    figure = _figure(4.2 * len(panels), 3.3)
    for index, (metric, keys) in enumerate(panels, start=1):
        axes = figure.add_subplot(1, len(panels), index)
        for key in keys:
            values = [np.nan if v is None else v for v in history[key]]
            axes.plot(range(1, len(values) + 1), values, marker="o", ms=3,
                      label="validation" if key.startswith("val_") else "training")
        axes.set_xlabel("epoch")
        from matplotlib.ticker import MaxNLocator

        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_ylabel(metric)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        axes.set_title(f"{model.name}: {metric}", fontsize=9)
    return _png(figure)


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


# --------------------------------------------------------------------------- tables


def leaderboard_rows(analysis: RunAnalysis) -> list:
    """The leaderboard as rows of text cells (header first)."""
    header = ["#", "model", "family", "accuracy [95% CI]", "macro F1 [95% CI]", "macro AUC", "valence acc.",
              "fit", "ms/face batched", "ms/face single", "model size", "peak memory"]
    rows = [header]
    best_names = {m.name: f for f, m in analysis.best.items()}
    for rank, m in enumerate(analysis.models, start=1):
        ci = m.metrics.get("ci") or {}
        roc = m.metrics.get("roc") or {}
        grouped = m.metrics.get("grouped") or {}
        name = m.name + (f" (best {FAMILY_NAMES[best_names[m.name]]})" if m.name in best_names else "")
        rows.append([
            str(rank), name, FAMILY_NAMES.get(m.family, m.family),
            f"{pct(m.accuracy)} {ci_text(ci.get('accuracy'))}",
            f"{pct(m.metrics.get('f1_macro'))} {ci_text(ci.get('f1_macro'))}",
            "–" if roc.get("auc_macro") is None else f"{roc['auc_macro']:.3f}",
            pct(grouped.get("accuracy")),
            seconds_text(m.cost("fit_seconds")), ms_text(m.cost("predict_ms_per_face")),
            ms_text(m.cost("predict_ms_single")), mb_text(m.cost("model_bytes")), memory_text(m),
        ])
    return rows


def valence_rows(analysis: RunAnalysis) -> list:
    """Valence (negative / neutral / positive) metrics per model, header first; [] if not FER-like."""
    models = [m for m in analysis.models if m.metrics.get("grouped")]
    if not models:
        return []
    groups = list(models[0].metrics["grouped"]["per_class"])
    rows = [["model", "accuracy [95% CI]", "macro F1 [95% CI]", *(f"F1 {g}" for g in groups), "macro AUC"]]
    for m in models:
        g = m.metrics["grouped"]
        auc = (g.get("roc") or {}).get("auc_macro")
        rows.append([m.name, f"{pct(g['accuracy'])} {ci_text(g['ci']['accuracy'])}",
                     f"{pct(g['f1_macro'])} {ci_text(g['ci']['f1_macro'])}",
                     *(f"{g['per_class'][name]['f1']:.3f}" for name in groups),
                     "–" if auc is None else f"{auc:.3f}"])
    return rows


def confusion_rows(model: ModelResult, grouped: bool = False) -> list:
    """A confusion matrix as rows of text (true classes down, predicted across), header first."""
    metrics = model.metrics.get("grouped") if grouped else model.metrics
    if not metrics or not metrics.get("confusion_matrix"):
        return []
    names = list(metrics["per_class"])
    rows = [["true \\ predicted", *names]]
    rows += [[name, *(f"{count:,}" for count in counts)] for name, counts in zip(names, metrics["confusion_matrix"])]
    return rows


def per_class_rows(model: ModelResult) -> list:
    rows = [["class", "precision", "recall", "F1", "support"]]
    for name, values in (model.metrics.get("per_class") or {}).items():
        rows.append([name, f"{values['precision']:.3f}", f"{values['recall']:.3f}", f"{values['f1']:.3f}",
                     f"{values['support']:,}"])
    return rows


def comparison_rows(comparison: dict) -> list:
    rows = [["grouping", "b (only first right)", "c (only second right)", "method", "statistic", "p"]]
    for label, key in (("all classes", "mcnemar"), ("valence", "valence_mcnemar")):
        test = comparison.get(key)
        if test:
            statistic = "–" if test["statistic"] is None else f"{test['statistic']:.2f}"
            rows.append([label, str(test["b"]), str(test["c"]), test["method"], statistic, p_text(test["p_value"])])
    return rows


def failed_rows(analysis: RunAnalysis) -> list:
    if not analysis.failed:
        return []
    rows = [["cell", "family", "error"]]
    for record in analysis.failed:
        rows.append([record.get("cell", "?"), FAMILY_NAMES.get(record.get("family"), record.get("family") or "?"),
                     str(record.get("error") or record.get("status"))])
    return rows


def provenance(analysis: RunAnalysis) -> dict:
    """Machine, versions, commit, dataset and split of the run, from the first record that has them."""
    first = next((m.record for m in analysis.models), analysis.records[0] if analysis.records else {})
    versions = {}
    for record in analysis.records:
        versions.update(record.get("versions") or {})
    return {
        "dataset": first.get("dataset"),
        "split": first.get("split"),
        "preset": sorted({str(r.get("preset")) for r in analysis.records if r.get("preset")}),
        "notes": first.get("dataset_notes") or [],
        "machine": first.get("machine") or machine_info(),
        "versions": versions,
        "git_commit": sorted({r["git_commit"] for r in analysis.records if r.get("git_commit")}),
        "n_test": first.get("n_test"),
    }


# --------------------------------------------------------------------------- rendering


def _md_table(rows) -> str:
    if not rows:
        return ""
    escape = lambda text: str(text).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(escape(c) for c in rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def _split_text(info) -> str:
    split = info.get("split") or {}
    if not split:
        return "unknown split"
    return (f"fit on {split.get('train')}, select on {split.get('validation')}, score on {split.get('test')}"
            + (f" ({split.get('method')})" if split.get("method") else ""))


def render_markdown(analysis: RunAnalysis, plots: dict) -> str:
    """The report as Markdown; plots are linked as ``plots/<name>.png``."""
    info = provenance(analysis)
    out = [f"# fer-bench report: {info['dataset'] or analysis.run_dir.name}", "",
           f"{_split_text(info)}; preset {', '.join(info['preset']) or 'unknown'}.", ""]
    out += [f"- {note}" for note in info["notes"]]
    out += ["", "## Verdict", ""] + [" ".join(verdict(analysis)), ""]
    if analysis.models:
        out += ["## Leaderboard", "", "Test accuracy and macro F1 with 95% bootstrap intervals (1,000 resamples); "
                "valence accuracy after pooling the classes into negative / neutral / positive.", "",
                _md_table(leaderboard_rows(analysis)), "", MEMORY_NOTE, ""]
    if analysis.comparison and analysis.comparison["mcnemar"]:
        c = analysis.comparison
        out += [f"## McNemar: {c['a']} vs {c['b']}", "", _md_table(comparison_rows(c)), ""]
    if analysis.problems:
        out += ["## Warnings", ""] + [f"- {p}" for p in analysis.problems] + [""]
    failed = failed_rows(analysis)
    if failed:
        out += ["## Failed cells", "", _md_table(failed), ""]
    for section, title in (("overview", "Accuracy, cost and per-class F1"), ("roc", "ROC curves"),
                           ("training", "CNN training curves"), ("confusion", "Confusion matrices")):
        if plots.get(section):
            out += [f"## {title}", ""]
            out += [f"![{p.caption}](plots/{p.name})" for p in plots[section]] + [""]
    valence = valence_rows(analysis)
    if valence:
        out += ["## Valence (negative: angry, disgust, fear, sad; neutral; positive: happy, surprise)", "",
                _md_table(valence), ""]
        for family, model in analysis.best.items():
            out += [f"Valence confusion of {model.name} (best {FAMILY_NAMES[family]}):", "",
                    _md_table(confusion_rows(model, grouped=True)), ""]
    for family, model in analysis.best.items():
        out += [f"## Per class: {model.name} (best {FAMILY_NAMES[family]})", "", _md_table(per_class_rows(model)), ""]
    out += ["## Provenance", "", f"- machine: {_machine_text(info['machine'])}",
            f"- git commit: {', '.join(info['git_commit']) or 'unknown'}",
            f"- versions: {', '.join(f'{k} {v}' for k, v in sorted(info['versions'].items()))}",
            f"- report generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from "
            f"{len(analysis.records)} records", ""]
    return "\n".join(out)


def _machine_text(machine: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in machine.items() if v is not None)


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.5em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td:nth-child(2), td:first-child { text-align: left; }
tr.classic td:nth-child(2) { color: #1f77b4; } tr.deep td:nth-child(2) { color: #d62728; }
.verdict { background: #f6f8fa; border-left: 4px solid #1f77b4; padding: 0.6em 1em; }
.warn { color: #8a5a00; } .note { font-size: 0.8em; color: #555; } .error td { color: #a00; white-space: normal; text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; } figcaption { font-size: 0.8em; color: #555; }
.grid figure img { width: 360px; }
"""


def _html_table(rows, row_classes=None, css_class="") -> str:
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows[0])
    body = []
    for index, row in enumerate(rows[1:]):
        attribute = f' class="{row_classes[index]}"' if row_classes else ""
        body.append(f"<tr{attribute}>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
    css = f' class="{css_class}"' if css_class else ""
    return f"<table{css}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _html_figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (f'<figure><img alt="{html.escape(plot.caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(plot.caption)}</figcaption></figure>")


def render_html(analysis: RunAnalysis, plots: dict) -> str:
    """The report as one HTML page: inline CSS, plots embedded as base64 PNG, no external resources."""
    info = provenance(analysis)
    title = f"fer-bench report: {info['dataset'] or analysis.run_dir.name}"
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p>{html.escape(_split_text(info))}; preset {html.escape(', '.join(info['preset']) or 'unknown')}."
             "</p>"]
    if info["notes"]:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in info["notes"]) + "</ul>")
    parts.append('<h2>Verdict</h2><div class="verdict">'
                 + "".join(f"<p>{html.escape(line)}</p>" for line in verdict(analysis)) + "</div>")
    if analysis.models:
        parts.append("<h2>Leaderboard</h2><p>Test accuracy and macro F1 with 95% bootstrap intervals (1,000 "
                     "resamples); valence accuracy after pooling the classes into negative / neutral / positive.</p>")
        parts.append(_html_table(leaderboard_rows(analysis), [m.family for m in analysis.models]))
        parts.append(f'<p class="note">{html.escape(MEMORY_NOTE)}</p>')
    if analysis.comparison and analysis.comparison["mcnemar"]:
        c = analysis.comparison
        parts.append(f"<h2>McNemar: {html.escape(c['a'])} vs {html.escape(c['b'])}</h2>")
        parts.append(_html_table(comparison_rows(c)))
    if analysis.problems:
        parts.append("<h2>Warnings</h2><ul>"
                     + "".join(f'<li class="warn">{html.escape(p)}</li>' for p in analysis.problems) + "</ul>")
    failed = failed_rows(analysis)
    if failed:
        parts.append("<h2>Failed cells</h2>" + _html_table(failed, css_class="error"))
    for section, title_text, grid in (("overview", "Accuracy, cost and per-class F1", False),
                                      ("roc", "ROC curves", False), ("training", "CNN training curves", False),
                                      ("confusion", "Confusion matrices (row-normalised; counts below)", True)):
        if plots.get(section):
            parts.append(f"<h2>{title_text}</h2>")
            figures = "".join(_html_figure(p) for p in plots[section])
            parts.append(f'<div class="grid">{figures}</div>' if grid else f"<div>{figures}</div>")
    valence = valence_rows(analysis)
    if valence:
        parts.append("<h2>Valence</h2><p>negative: angry, disgust, fear, sad; neutral; positive: happy, "
                     "surprise.</p>" + _html_table(valence))
        for family, model in analysis.best.items():
            parts.append(f"<p>Valence confusion of {html.escape(model.name)} (best {FAMILY_NAMES[family]}):</p>"
                         + _html_table(confusion_rows(model, grouped=True)))
    for family, model in analysis.best.items():
        parts.append(f"<h2>Per class: {html.escape(model.name)} (best {FAMILY_NAMES[family]})</h2>"
                     + _html_table(per_class_rows(model)))
    versions = ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items()))
    parts.append("<h2>Provenance</h2><ul>"
                 f"<li>machine: {html.escape(_machine_text(info['machine']))}</li>"
                 f"<li>git commit: {html.escape(', '.join(info['git_commit']) or 'unknown')}</li>"
                 f"<li>versions: {html.escape(versions)}</li>"
                 f"<li>generated {datetime.now(timezone.utc).isoformat(timespec='seconds')} from "
                 f"{len(analysis.records)} records</li></ul>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(parts) + "\n</body></html>\n")


# --------------------------------------------------------------------------- records.json / records.csv


def _derived(model: ModelResult) -> dict:
    ci = model.metrics.get("ci") or {}
    grouped = model.metrics.get("grouped") or {}
    return {
        "accuracy_ci": ci.get("accuracy"),
        "f1_macro_ci": ci.get("f1_macro"),
        "auc_macro": (model.metrics.get("roc") or {}).get("auc_macro"),
        "valence_accuracy": grouped.get("accuracy"),
        "valence_f1_macro": grouped.get("f1_macro"),
        "valence_accuracy_ci": (grouped.get("ci") or {}).get("accuracy"),
        "valence": {key: grouped.get(key) for key in (
            "accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
            "f1_weighted", "per_class", "confusion_matrix", "ci", "groups")} if grouped else None,
    }


def csv_row(record: dict, derived: dict | None) -> dict:
    """One records.csv row (the keys of :data:`CSV_COLUMNS`) from a record and its derived figures."""
    derived = derived or {}
    split = record.get("split") or {}
    machine = record.get("machine") or {}
    versions = record.get("versions") or {}
    params = record.get("classifier_params") if record.get("family") == "classic" else record.get("train_params")
    interval = lambda key, i: (derived.get(key) or [None, None])[i]  # noqa: E731
    row = {
        "schema_version": record.get("schema_version"), "report_schema_version": REPORT_SCHEMA_VERSION,
        "split_train": split.get("train"), "split_validation": split.get("validation"), "split_test": split.get("test"),
        "params": json.dumps(params, sort_keys=True) if params else None,
        "epochs": record.get("epochs") or (record.get("config") or {}).get("epochs"),
        "accuracy_ci_low": interval("accuracy_ci", 0), "accuracy_ci_high": interval("accuracy_ci", 1),
        "f1_macro_ci_low": interval("f1_macro_ci", 0), "f1_macro_ci_high": interval("f1_macro_ci", 1),
        "auc_macro": derived.get("auc_macro"), "valence_accuracy": derived.get("valence_accuracy"),
        "valence_f1_macro": derived.get("valence_f1_macro"),
        "host": machine.get("host"), "platform": machine.get("platform"), "cores": machine.get("cores"),
        **{f"version_{name}": versions.get(name) for name in VERSION_COLUMNS},
    }
    for column in CSV_COLUMNS:
        if column not in row:
            row[column] = record.get(column)
    return {column: row[column] for column in CSV_COLUMNS}


def write_records(analysis: RunAnalysis) -> tuple:
    """Write ``records.json`` and ``records.csv`` in the run folder; return their paths."""
    run_dir = analysis.run_dir
    derived = {m.name: _derived(m) for m in analysis.models}
    payload = {
        "report_schema_version": REPORT_SCHEMA_VERSION,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(analysis),
        "best": {family: model.name for family, model in analysis.best.items()},
        "selection_rule": analysis.selection_rule,
        "comparison": analysis.comparison,
        "verdict": verdict(analysis),
        "records": [{**r, "derived": derived.get(r.get("cell"))} for r in analysis.records],
    }
    json_path = run_dir / "records.json"
    write_json_atomic(json_path, payload)
    csv_path = run_dir / "records.csv"
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    with open(tmp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in analysis.records:
            row = csv_row(record, derived.get(record.get("cell")))
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in row.items()})
    tmp.replace(csv_path)
    return json_path, csv_path


def write_report(run_dir, *, n_resamples: int = 1000, seed: int = 0, log=None) -> dict:
    """Rebuild every report file of a run folder from its records and predictions.

    Parameters
    ----------
    run_dir : path
        The run folder.
    n_resamples, seed : int
        Bootstrap settings of the confidence intervals.
    log : callable, optional
        Receives one line per file written.

    Returns
    -------
    dict
        ``analysis`` (:class:`RunAnalysis`) and the paths written: ``records_json``,
        ``records_csv``, ``markdown``, ``html``, ``plots`` (a list).
    """
    run_dir = Path(run_dir)
    analysis = analyse_run(run_dir, n_resamples=n_resamples, seed=seed)
    json_path, csv_path = write_records(analysis)
    plots = make_plots(analysis)
    plot_dir = run_dir / "plots"
    plot_dir.mkdir(exist_ok=True)
    plot_paths = []
    for plot in (p for section in plots.values() for p in section):
        path = plot_dir / plot.name
        path.write_bytes(plot.png)
        plot_paths.append(path)
    markdown = run_dir / "report.md"
    markdown.write_text(render_markdown(analysis, plots))
    page = run_dir / "report.html"
    page.write_text(render_html(analysis, plots))
    if log:
        for path in (json_path, csv_path, markdown, page):
            log(f"wrote {path}")
    return {"analysis": analysis, "records_json": json_path, "records_csv": csv_path, "markdown": markdown,
            "html": page, "plots": plot_paths}


# --------------------------------------------------------------------------- terminal summary


def _text_table(rows) -> str:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i in (1, 2) else str(c).rjust(w) for i, (c, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def summary_text(analysis: RunAnalysis, models: tuple | None = None) -> str:
    """The classical-vs-deep summary for a terminal; with ``models=(A, B)``, that pair's comparison."""
    out = []
    if analysis.models:
        rows = leaderboard_rows(analysis)
        out += [_text_table([row[:7] + row[8:10] for row in rows]), ""]
    if models:
        a, b = (analysis.model(name) for name in models)
        comparison = compare_models(a, b)
        out.append(f"{a.name} vs {b.name}: {pct(a.accuracy)} vs {pct(b.accuracy)} test accuracy, "
                   f"{comparison['difference_points']:+.1f} points")
        if comparison["mcnemar"] is None:
            out.append("  no McNemar test: the two were not scored on the same test faces")
        for label, key in (("all classes", "mcnemar"), ("valence", "valence_mcnemar")):
            test = comparison.get(key)
            if test:
                verdict_word = "significant" if test["p_value"] < ALPHA else "not significant"
                out.append(f"  McNemar ({label}): b={test['b']} only {a.name} right, c={test['c']} only {b.name} "
                           f"right; {test['method']}, p = {p_text(test['p_value'])} ({verdict_word} at "
                           f"{ALPHA:.0%})")
        for model in (a, b):
            out.append(f"  {model.name}: {describe_cost(model)}")
    else:
        out += verdict(analysis)
    if analysis.failed:
        out.append("")
        out += [f"failed: {r.get('cell')}: {r.get('error')}" for r in analysis.failed]
    for problem in analysis.problems:
        out.append(f"warning: {problem}")
    return "\n".join(out)
