"""The report's files: records.json and records.csv (the export), and :func:`write_report`, which writes them all.

Outputs, all in the run folder:

- ``records.json``: every record (and every ``fer-bench evaluate`` record),
  with the report's derived figures, the machine, the versions and the git commit;
- ``records.csv``: one row per cell with the fixed columns of :data:`CSV_COLUMNS`;
- ``report.md`` with its plots in ``plots/``;
- ``report.html``: the same document with the plots embedded as base64 PNG and
  inline CSS only, so it opens with no network.
"""

from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path

from .._core import replacing, write_json_atomic
from .analysis import ModelResult, RunAnalysis, analyse_run, provenance, verdict
from .document import render_html, render_markdown
from .plots import make_plots

REPORT_SCHEMA_VERSION = 1
"""Version of records.json / records.csv; bump when a column changes meaning."""

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
        "evaluations": [{**e.record, "derived": _derived(e)} for e in analysis.evaluations],
    }
    json_path = run_dir / "records.json"
    write_json_atomic(json_path, payload)
    csv_path = run_dir / "records.csv"
    with replacing(csv_path) as tmp, open(tmp, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for record in analysis.records:
            row = csv_row(record, derived.get(record.get("cell")))
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in row.items()})
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
