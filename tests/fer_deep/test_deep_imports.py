"""The classical path and the CLI start without Keras; a missing deep extra is one clear error."""

from __future__ import annotations

import json

import pytest

from conftest import synthetic_faces
from deep_testing import run_python
from fer_classic.model import ClassicModel

BACKENDS = ("keras", "tensorflow", "jax", "torch")


def test_classic_path_and_cli_do_not_import_keras(kaggle_dir, tmp_path):
    X, y = synthetic_faces(14)
    classic = ClassicModel("hog", "dt").fit(X, y).save(tmp_path / "hog__dt.skops")
    code = f"""
import json, sys
import fer_classic, fer_deep, fer_deep.model, fer_bench.cli, fer_bench.models
from click.testing import CliRunner
from fer_bench.cli import cli
runner = CliRunner()
outputs = {{}}
for args in (["--help"], ["train", "cnn", "--help"], ["explain", "--help"],
             ["data", "info", "--data", {str(kaggle_dir)!r}, "--cache-dir", {str(tmp_path / "cache")!r}]):
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, (args, result.output)
    outputs[" ".join(args[:2])] = result.output
model = fer_bench.models.load_model({str(classic)!r})
print(json.dumps({{"family": model.family, "train_help": outputs["train cnn"],
                   "imported": [name for name in {BACKENDS!r} if name in sys.modules]}}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["imported"] == []
    assert report["family"] == "classic"
    for name in ("tutorial", "seed", "vgg", "mobilenet_v2"):
        assert name in report["train_help"]


def test_missing_keras_is_one_clear_error(kaggle_dir, tmp_path):
    pytest.importorskip("keras")
    from deep_testing import tiny_model_file

    face = kaggle_dir / "test" / "happy"
    image = sorted(face.glob("*.png"))[0]
    code = f"""
import json, sys
sys.modules["keras"] = None  # as if the deep extra were not installed
from click.testing import CliRunner
from fer_bench.cli import cli
from fer_bench.models import load_model
from fer_deep import DeepDependencyError
try:
    load_model({str(tiny_model_file())!r})
    message = None
except DeepDependencyError as error:
    message = str(error)
runner = CliRunner()
explain = runner.invoke(cli, ["explain", {str(tiny_model_file())!r}, {str(image)!r}, "--out", {str(tmp_path)!r}])
train = runner.invoke(cli, ["train", "cnn", "--data", {str(kaggle_dir)!r}, "--out", {str(tmp_path)!r}])
print(json.dumps({{"message": message, "explain": [explain.exit_code, explain.stderr],
                   "train": [train.exit_code, train.stderr]}}))
"""
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert "the deep path needs Keras" in report["message"]
    assert report["message"].endswith("pip install 'fer-bench[deep]'")
    for command in ("explain", "train"):
        status, stderr = report[command]
        assert status == 1
        assert stderr.count("\n") == 1 and stderr.startswith("fer-bench: error: the deep path needs Keras")
        assert "pip install 'fer-bench[deep]'" in stderr
