"""Analysis of a run folder: its records and test predictions -> every figure of the report, and the verdict.

Everything comes from the records (``RUN_DIR/records/*.json``) and the test
predictions they point to (``predictions/*.npz``), never from the models, so
a report is rebuilt without retraining.  Paths in records may be absolute or
relative to the run folder; they are resolved against the run folder first,
so a moved run folder still analyses.

The verdict compares the best classical and the best deep model, each chosen
by validation accuracy (the test split stays out of the choice), with
McNemar's test on the test faces both were scored on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..experiment.harness import load_predictions, machine_info, read_record, resolve_path
from ..metrics import evaluate_predictions, group_labels, mcnemar_test

ALPHA = 0.05
"""Significance level of the verdict's McNemar test."""

FAMILY_NAMES = {"classic": "classical", "deep": "deep", "fusion": "classical + deep fusion"}

EVALUATIONS_DIR = "evaluations"
"""Sub-folder of a run folder where ``fer-bench evaluate`` writes its records and predictions (the
cross-dataset section of the report)."""


class ReportError(ValueError):
    """A run folder cannot be reported on; the message says why."""


# --------------------------------------------------------------------------- loading


def load_records(run_dir) -> list:
    """Every record in ``run_dir/records``, sorted by family then name.

    A file that cannot be read, is not valid JSON or holds no JSON object
    becomes an error record whose ``unreadable`` names the file, so the report
    lists it instead of failing, and the command says so and exits non-zero
    (:func:`unreadable_records`).
    """
    run_dir = Path(run_dir)
    folder = run_dir / "records"
    if not folder.is_dir():
        raise ReportError(f"{run_dir}: no records/ folder; run 'fer-bench run --out {run_dir}' first")
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = read_record(path)
        except ValueError as error:
            reason = str(error).removeprefix(f"{path}: ")
            record = {"cell": path.stem, "family": "unknown", "status": "error", "unreadable": str(path),
                      "error": f"unreadable record {path.name}: {reason}"}
        record.setdefault("cell", path.stem)
        records.append(record)
    if not records:
        raise ReportError(f"{folder}: no records; run 'fer-bench run --out {run_dir}' first")
    return sorted(records, key=lambda r: (r.get("family") != "classic", r["cell"]))


def unreadable_records(records) -> list:
    """The messages of the records :func:`load_records` could not read (their cells are missing from the figures)."""
    return [record["error"] for record in records if record.get("unreadable")]


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
    n_resamples: int = 1000  # bootstrap resamples behind every interval
    evaluations: list = field(default_factory=list)  # ModelResult of each `fer-bench evaluate` record

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


def load_evaluations(run_dir, *, n_resamples: int = 1000, seed: int = 0) -> tuple:
    """The ``fer-bench evaluate`` records of ``run_dir/evaluations`` with metrics from their predictions.

    Returns
    -------
    (list of ModelResult, list of str)
        One result per readable record (model, then dataset, then split), and a
        warning for each record or predictions file that could not be read.
    """
    folder = Path(run_dir) / EVALUATIONS_DIR
    results, problems = [], []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text())
            if not isinstance(record, dict) or record.get("kind") != "evaluation":
                raise ValueError("not an evaluation record")
            result = _model_result(run_dir, record, n_resamples, seed)
        except (OSError, ValueError, KeyError) as error:
            problems.append(f"{EVALUATIONS_DIR}/{path.name}: unreadable ({error})")
            continue
        problems.extend(f"{record.get('name', path.stem)}: {w}" for w in result.warnings)
        results.append(result)
    results.sort(key=lambda r: (str(r.record.get("model")), str(r.record.get("dataset")), str(r.record.get("split"))))
    return results, problems


def _has_records(run_dir: Path) -> bool:
    folder = run_dir / "records"
    return folder.is_dir() and any(folder.glob("*.json"))


def analyse_run(run_dir, records=None, *, n_resamples: int = 1000, seed: int = 0) -> RunAnalysis:
    """Load a run folder's records and predictions and compute every figure of the report.

    Parameters
    ----------
    run_dir : path
        The run folder (``records/`` and ``predictions/`` inside; ``evaluations/``
        from ``fer-bench evaluate`` too, or alone).
    records : list of dict, optional
        Records already loaded (default: :func:`load_records`).
    n_resamples, seed : int
        Bootstrap settings of the confidence intervals.
    """
    run_dir = Path(run_dir)
    evaluations, problems = load_evaluations(run_dir, n_resamples=n_resamples, seed=seed)
    if records is None:  # a folder of evaluations alone has a report too
        records = load_records(run_dir) if _has_records(run_dir) or not evaluations else []
    models, failed = [], []
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
    return RunAnalysis(run_dir, records, models, failed, best, rule, comparison, problems, n_resamples, evaluations)

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
    if not best:  # only fusions of the two families (e.g. of shipped models)
        model = max(analysis.models, key=lambda m: m.accuracy)
        lines.append("This run holds no classical and no deep cell of its own, only fusions of the two, so this "
                     "report cannot say which family wins.")
        lines.append(f"The best model is {model.name}: {pct(model.accuracy)} test accuracy "
                     f"{ci_text((model.metrics.get('ci') or {}).get('accuracy'))}, macro F1 "
                     f"{pct(model.metrics.get('f1_macro'))}; it costs {describe_cost(model)}.")
        return lines
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

def provenance(analysis: RunAnalysis) -> dict:
    """Machine, versions, commit, dataset and split of the run, from the first record that has them."""
    first = next((m.record for m in analysis.models), analysis.records[0] if analysis.records else {})
    versions = {}
    for record in analysis.records + [e.record for e in analysis.evaluations]:
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
