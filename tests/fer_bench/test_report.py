"""The report: rendered from fixture records and predictions of both families, offline, and the CLI on top."""

from __future__ import annotations

import base64
import csv
import html
import json
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from fer_bench.cli import cli
from fer_bench._core import write_json_atomic
from fer_bench.experiment.harness import save_predictions
from fer_bench.report import (
    CSV_COLUMNS,
    ReportError,
    analyse_run,
    load_records,
    resolve_path,
    summary_text,
    verdict,
    write_report,
)

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
N_TEST = 400


def predictions_with_accuracy(y_true, accuracy, seed):
    """Predictions right on the first ``accuracy`` share of a shuffled order, wrong (next class) elsewhere."""
    rng = np.random.default_rng(seed)
    right = np.zeros(len(y_true), dtype=bool)
    right[rng.permutation(len(y_true))[: int(round(accuracy * len(y_true)))]] = True
    y_pred = np.where(right, y_true, (y_true + 1) % len(CLASSES))
    proba = rng.random((len(y_true), len(CLASSES))) * 0.5
    proba[np.arange(len(y_true)), y_pred] += 1
    return y_pred, proba / proba.sum(axis=1, keepdims=True)


def fake_record(run_dir, name, family, accuracy, *, seed, validation, absolute=False, history=None, **extra):
    """A finished record plus its predictions file, as a sweep would leave them."""
    y_true = np.arange(N_TEST) % len(CLASSES)
    y_pred, proba = predictions_with_accuracy(y_true, accuracy, seed)
    path = save_predictions(run_dir / "predictions" / f"{name}.npz", y_true, y_pred, proba, CLASSES)
    (run_dir / "models").mkdir(parents=True, exist_ok=True)
    model = run_dir / "models" / f"{name}.bin"
    model.write_bytes(b"x" * 1000 * (seed + 1))
    record = {
        "schema_version": 1, "cell": name, "family": family, "status": "ok", "error": None,
        "dataset": "fer2013", "dataset_key": "k1", "preset": "quick",
        "split": {"train": "Training", "validation": "PublicTest", "test": "PrivateTest", "method": "canonical"},
        "accuracy": float(np.mean(y_pred == y_true)), "f1_macro": 0.5, "validation_accuracy": validation,
        "n_train": 2000, "n_validation": 1000, "n_test": N_TEST,
        "fit_seconds": 12.5 * (seed + 1), "predict_ms_per_face": 0.4 * (seed + 1), "predict_ms_single": 2.0 * (seed + 1),
        "model_bytes": model.stat().st_size, "peak_rss_bytes": 300_000_000, "start_rss_bytes": 200_000_000,
        "peak_memory_method": "VmHWM", "machine": {"host": "box", "platform": "Linux", "cores": 2},
        "versions": {"python": "3.12", "numpy": "2.0"}, "git_commit": "abc123",
        "predictions_path": str(path) if absolute else f"predictions/{name}.npz",
        "model_path": str(model) if absolute else f"models/{name}.bin",
        **extra,
    }
    if family == "classic":
        record.update(features=name.split("__")[0], classifier=name.split("__")[1], classifier_params={"C": 10.0})
    else:
        record.update(arch=name[4:], epochs=3, history=history or {
            "loss": [1.8, 1.5, 1.3], "val_loss": [1.7, 1.6, 1.5],
            "accuracy": [0.3, 0.45, 0.5], "val_accuracy": [0.35, 0.42, 0.47]})
    write_json_atomic(run_dir / "records" / f"{name}.json", record)
    return record


@pytest.fixture
def run_dir(tmp_path):
    """Two classical models, two CNNs and one failed cell."""
    run = tmp_path / "run"
    fake_record(run, "hog__svm", "classic", 0.50, seed=0, validation=0.52)
    fake_record(run, "lbp__dt", "classic", 0.30, seed=1, validation=0.31, absolute=True)
    fake_record(run, "cnn-seed", "deep", 0.60, seed=2, validation=0.58)
    fake_record(run, "cnn-vgg", "deep", 0.62, seed=3, validation=0.55)  # best on test, not on validation
    write_json_atomic(run / "records" / "landmarks__knn.json", {
        "schema_version": 1, "cell": "landmarks__knn", "family": "classic", "status": "error",
        "error": "LandmarkModelError: no shape predictor"})
    return run


def test_analysis_picks_best_by_validation_and_compares(run_dir):
    analysis = analyse_run(run_dir, n_resamples=200)
    assert [m.name for m in analysis.models] == ["cnn-vgg", "cnn-seed", "hog__svm", "lbp__dt"]
    assert analysis.best["deep"].name == "cnn-seed"  # higher validation accuracy, though lower test accuracy
    assert analysis.best["classic"].name == "hog__svm"
    assert [r["cell"] for r in analysis.failed] == ["landmarks__knn"]
    comparison = analysis.comparison
    assert comparison["difference_points"] == pytest.approx(10.0)
    deep, classic = analysis.best["deep"], analysis.best["classic"]
    b = int(np.sum((deep.y_pred == deep.y_true) & (classic.y_pred != classic.y_true)))
    c = int(np.sum((deep.y_pred != deep.y_true) & (classic.y_pred == classic.y_true)))
    assert (comparison["mcnemar"]["b"], comparison["mcnemar"]["c"]) == (b, c)
    ci = deep.metrics["ci"]["accuracy"]
    assert ci[0] < 0.60 < ci[1]


def test_verdict_names_winner_margin_significance_and_cost(run_dir):
    text = " ".join(verdict(analyse_run(run_dir, n_resamples=200)))
    assert "The deep family wins: cnn-seed reaches 60.0% test accuracy against 50.0% for hog__svm" in text
    assert "10.0 accuracy points ahead on PrivateTest (400 faces)" in text
    assert re.search(r"McNemar's test \(chi-square with continuity correction; \d+ faces .*p = [\d.e-]+", text)
    assert "significant at the 5% level" in text
    assert "1.2 ms per face batched" in text and "0.4 ms per face batched" in text
    assert "quick preset" in text


def test_verdict_without_deep_records(run_dir):
    for name in ("cnn-seed", "cnn-vgg"):
        (run_dir / "records" / f"{name}.json").unlink()
    lines = verdict(analyse_run(run_dir, n_resamples=100))
    assert lines[0] == ("Only classical models were run (no finished deep (CNN) cell), so this report cannot say "
                        "which family wins.")
    assert lines[1].startswith("The best classical model is hog__svm: 50.0% test accuracy [")


def test_verdict_when_nothing_finished(tmp_path):
    write_json_atomic(tmp_path / "records" / "hog__svm.json",
                      {"cell": "hog__svm", "family": "classic", "status": "error", "error": "ValueError: boom"})
    result = write_report(tmp_path, n_resamples=50)
    assert verdict(result["analysis"]) == [
        "No cell finished, so there is nothing to compare; the failed cells are listed below."]
    assert "ValueError: boom" in result["html"].read_text()


def test_report_files_are_self_contained(run_dir):
    result = write_report(run_dir, n_resamples=200)
    page = result["html"].read_text()
    # no network: no external scripts, stylesheets, fonts or images
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # accuracy-cost, per-class F1, ROC, 2 training curves, 4 confusion matrices
    assert len(images) == 9
    assert all(base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n" for data in images)
    assert page.index("Verdict") < page.index("Leaderboard") < page.index("Confusion matrices")
    assert "landmarks__knn" in page and "LandmarkModelError: no shape predictor" in page
    markdown = result["markdown"].read_text()
    for link in re.findall(r"\]\((plots/[^)]+)\)", markdown):
        assert (run_dir / link).is_file()
    assert "| 1 | cnn-vgg |" in markdown
    assert "cnn-seed (best deep)" in markdown


def test_markdown_and_html_say_the_same_and_follow_the_resamples(run_dir):
    result = write_report(run_dir, n_resamples=200)
    markdown, page = result["markdown"].read_text(), result["html"].read_text()
    for text in (markdown, page):
        assert "95% bootstrap intervals (200 resamples)" in text
        assert "1,000 resamples" not in text
    # Both renderings come from one document: every heading and sentence of one is in the other.
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    assert headings == [html.unescape(h) for h in re.findall(r"<h\d>(.*?)</h\d>", page)]
    assert "Valence confusion of hog__svm (best classical):" in page


def test_records_json_and_csv(run_dir):
    result = write_report(run_dir, n_resamples=100)
    payload = json.loads(result["records_json"].read_text())
    assert payload["best"] == {"classic": "hog__svm", "deep": "cnn-seed"}
    assert {r["cell"] for r in payload["records"]} == {"hog__svm", "lbp__dt", "cnn-seed", "cnn-vgg", "landmarks__knn"}
    with open(result["records_csv"], newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0]) == CSV_COLUMNS
    by_cell = {row["cell"]: row for row in rows}
    assert by_cell["landmarks__knn"]["status"] == "error"
    assert by_cell["landmarks__knn"]["accuracy"] == ""
    svm = by_cell["hog__svm"]
    assert float(svm["accuracy"]) == 0.5
    assert float(svm["accuracy_ci_low"]) < 0.5 < float(svm["accuracy_ci_high"])
    assert (svm["host"], svm["version_numpy"], svm["git_commit"], svm["report_schema_version"]) == \
        ("box", "2.0", "abc123", "1")
    assert json.loads(svm["params"]) == {"C": 10.0}
    # the valence metrics travel too: the confusion of the pooled groups, computed here by hand
    arrays = np.load(run_dir / "predictions" / "hog__svm.npz")
    group = np.array([0, 0, 0, 2, 0, 2, 1])  # angry disgust fear happy sad surprise neutral -> neg/neu/pos
    expected = np.zeros((3, 3), dtype=int)
    np.add.at(expected, (group[arrays["y_true"]], group[arrays["y_pred"]]), 1)
    derived = next(r["derived"] for r in payload["records"] if r["cell"] == "hog__svm")
    assert derived["valence"]["confusion_matrix"] == expected.tolist()
    assert derived["valence_accuracy"] == pytest.approx(np.trace(expected) / N_TEST)
    markdown = result["markdown"].read_text()
    assert "Valence confusion of hog__svm (best classical):" in markdown
    assert "| negative | " + " | ".join(str(v) for v in expected[0]) + " |" in markdown


def test_moved_run_dir_still_renders(run_dir, tmp_path):
    moved = tmp_path / "elsewhere"
    shutil.move(run_dir, moved)
    # lbp__dt stored absolute paths into the old folder; they resolve inside the new one
    assert resolve_path(moved, str(run_dir / "predictions" / "lbp__dt.npz")) == moved / "predictions" / "lbp__dt.npz"
    analysis = analyse_run(moved, n_resamples=50)
    assert not analysis.problems
    assert all(m.metrics["ci"] is not None for m in analysis.models)


def test_missing_predictions_are_a_warning_not_a_crash(run_dir):
    (run_dir / "predictions" / "lbp__dt.npz").unlink()
    result = write_report(run_dir, n_resamples=50)
    analysis = result["analysis"]
    assert any("lbp__dt: predictions" in p and "not found" in p for p in analysis.problems)
    assert analysis.model("lbp__dt").accuracy == pytest.approx(0.30)
    assert "not found" in result["html"].read_text()


def test_unreadable_record_and_empty_run(tmp_path):
    with pytest.raises(ReportError, match="no records/ folder"):
        load_records(tmp_path)
    (tmp_path / "records").mkdir()
    with pytest.raises(ReportError, match="no records; run 'fer-bench run --out"):
        load_records(tmp_path)
    (tmp_path / "records" / "broken.json").write_text("{not json")
    (record,) = load_records(tmp_path)
    assert record["status"] == "error" and record["error"].startswith("unreadable record broken.json")


def test_summary_for_a_named_pair(run_dir):
    analysis = analyse_run(run_dir, n_resamples=50)
    text = summary_text(analysis, ("cnn-vgg", "lbp__dt"))
    assert "cnn-vgg vs lbp__dt: 62.0% vs 30.0% test accuracy, +32.0 points" in text
    assert "McNemar (all classes)" in text and "McNemar (valence)" in text
    with pytest.raises(ReportError, match="no finished model 'nope'"):
        summary_text(analysis, ("cnn-vgg", "nope"))


def test_cli_report_rebuilds_without_training(run_dir):
    result = CliRunner().invoke(cli, ["report", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert (run_dir / "report.html").is_file() and (run_dir / "records.csv").is_file()
    assert str(run_dir / "report.html") in result.stdout


def test_cli_compare(run_dir):
    result = CliRunner().invoke(cli, ["compare", str(run_dir)])
    assert result.exit_code == 0, result.output
    assert "The deep family wins" in result.stdout
    result = CliRunner().invoke(cli, ["compare", str(run_dir), "--models", "hog__svm,cnn-vgg"])
    assert result.exit_code == 0, result.output
    assert "hog__svm vs cnn-vgg: 50.0% vs 62.0% test accuracy, -12.0 points" in result.stdout


def test_cli_compare_user_errors(run_dir, tmp_path):
    result = CliRunner().invoke(cli, ["compare", str(run_dir), "--models", "hog__svm"])
    assert result.exit_code == 1
    assert result.stderr.strip() == "fer-bench: error: --models takes two names, e.g. --models hog__svm,cnn-seed"
    result = CliRunner().invoke(cli, ["compare", str(run_dir), "--models", "hog__svm,nope"])
    assert result.exit_code == 1
    assert "fer-bench: error: no finished model 'nope'" in result.stderr
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "missing")])
    assert result.exit_code == 1
    assert "no records/ folder" in result.stderr and "Traceback" not in result.output
