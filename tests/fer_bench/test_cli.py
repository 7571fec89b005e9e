import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from fer_bench.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_help_lists_the_commands(runner):
    result = runner.invoke(cli, ["--help"])
    assert result.exit_code == 0
    for command in ("data", "list", "run"):
        assert command in result.output
    assert "--classifier" in runner.invoke(cli, ["run", "--help"]).output


def test_data_info_prints_split_sizes_and_class_counts(runner, kaggle_dir, tmp_path):
    result = runner.invoke(cli, ["data", "info", "--data", str(kaggle_dir), "--cache-dir", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "Training" in lines[2] and "PublicTest" in lines[2] and "PrivateTest" in lines[2]
    assert lines[-1].split() == ["total", "21", "21", "21"]
    assert lines[3].split() == ["angry", "3", "3", "3"]


def test_data_info_json_on_real_fer2013(runner, fer2013_dir):
    result = runner.invoke(cli, ["data", "info", "--data", str(fer2013_dir), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert {k: v["n"] for k, v in info["splits"].items()} == {
        "Training": 28709, "PublicTest": 3589, "PrivateTest": 3589
    }
    assert info["splits"]["Training"]["per_class"]["disgust"] == 436


def test_data_env_variable_is_the_default(runner, kaggle_dir, monkeypatch):
    monkeypatch.setenv("FER_BENCH_DATA", str(kaggle_dir))
    result = runner.invoke(cli, ["data", "info", "--json"])
    assert result.exit_code == 0 and json.loads(result.output)["source"] == str(kaggle_dir)


def test_missing_data_folder_is_one_line_and_exit_1(runner, tmp_path):
    result = runner.invoke(cli, ["data", "info", "--data", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"fer-bench: error: {tmp_path / 'none'}: no such folder. Put FER-2013 there (see data/README.md), "
        "pass --data PATH, or set FER_BENCH_DATA."
    ]


def test_unknown_names_list_the_valid_ones(tmp_path):
    # through the real entry point, which turns usage errors into one line and exit 1
    for args, message in (
        (["--classifier", "xgb"], "unknown classifier 'xgb'; choose from svm, linear_svm, rf, dt, knn, ls_svm"),
        (["--features", "hog+sift"], "unknown feature 'sift'; choose from hog, lbp, landmarks"),
        (["--param", "C"], "'C' is not KEY=VALUE"),
    ):
        out = subprocess.run([sys.executable, "-m", "fer_bench.cli", "run", *args], capture_output=True, text=True)
        assert out.returncode == 1
        assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1
        assert "Traceback" not in out.stderr


def test_run_trains_scores_writes_record_and_model_then_resumes(runner, kaggle_dir, tmp_path):
    args = ["run", "--features", "hog", "--classifier", "knn", "--data", str(kaggle_dir),
            "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "hog__knn" in result.stdout and "PrivateTest" in result.stdout
    record = json.loads((tmp_path / "out" / "records" / "hog__knn.json").read_text())
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "precision_weighted", "recall_weighted",
                "f1_weighted", "per_class", "confusion_matrix", "fit_seconds", "predict_ms_per_face",
                "model_bytes", "selection", "n_train", "n_test"):
        assert key in record
    assert record["status"] == "ok" and record["n_train"] == 21 and record["n_test"] == 21
    assert record["accuracy"] == 1.0  # the classes are plainly visible in the synthetic faces
    assert set(record["per_class"]) == {"angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"}
    assert sum(map(sum, record["confusion_matrix"])) == 21
    assert (tmp_path / "out" / "models" / "hog__knn.skops").stat().st_size == record["model_bytes"]
    assert sorted((s["params"]["n_neighbors"], s["params"]["whiten"]) for s in record["selection"]) == [
        (5, False), (5, True), (10, False), (10, True), (20, False), (20, True)
    ]

    again = runner.invoke(cli, args)
    assert again.exit_code == 0
    assert "finished earlier, skipped" in again.stderr


def test_classic_path_and_data_info_never_import_tensorflow(kaggle_dir):
    script = (
        "import sys, fer_classic, fer_classic.features, fer_classic.classifiers, fer_classic.model;"
        "from click.testing import CliRunner; from fer_bench.cli import cli;"
        f"r = CliRunner().invoke(cli, ['data', 'info', '--data', {str(kaggle_dir)!r}]);"
        "assert r.exit_code == 0, r.output;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
