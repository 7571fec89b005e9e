"""`fer-bench train cnn` and `fer-bench explain` through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("keras")

from fer_bench.cli import cli  # noqa: E402
from conftest import synthetic_faces  # noqa: E402
from deep_testing import tiny_model_file  # noqa: E402
from fer_classic.model import ClassicModel  # noqa: E402


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def face_image(tmp_path):
    import cv2

    path = tmp_path / "me.png"
    face = synthetic_faces(4, seed=3)[0][3]
    cv2.imwrite(str(path), cv2.resize(face, (96, 96)))  # any size: explain resizes to 48x48
    return path


def test_train_cnn_writes_record_model_and_curves(runner, kaggle_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "cnn", "--arch", "seed", "--epochs", "1", "--batch-size", "7", "--data", str(kaggle_dir),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out), "--param", "class_weight=balanced"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = result.stdout.splitlines()
    assert table[0].split()[:3] == ["cell", "test", "accuracy"]
    assert table[2].split()[0] == "cnn-tutorial" and table[2].split()[-1] == "ok"
    assert "3/3" in result.stderr  # Keras' progress bar (21 faces / 7) goes to stderr, the table to stdout
    assert "3/3" not in result.stdout
    record = json.loads((out / "records" / "cnn-tutorial.json").read_text())
    assert record["train_params"]["class_weight"] == "balanced"
    assert record["model_path"] == str(out / "models" / "cnn-tutorial.zip")
    assert record["curves_png"] == str(out / "curves" / "cnn-tutorial.png")
    assert record["predictions_path"] == str(out / "predictions" / "cnn-tutorial.npz")
    for key in ("model_path", "predictions_path", "curves_png"):
        assert Path(record[key]).is_file()

    again = runner.invoke(cli, args + ["--resume"])
    assert again.exit_code == 0, again.output
    assert "cnn-tutorial: tutorial already trained in" in again.stderr
    assert json.loads((out / "records" / "cnn-tutorial.json").read_text())["tta"] is False
    # Test-time augmentation is chosen at scoring time: the finished training is reused.
    mirrored = runner.invoke(cli, args + ["--resume", "--tta", "flip"])
    assert mirrored.exit_code == 0, mirrored.output
    assert "cnn-tutorial: tutorial already trained in" in mirrored.stderr
    assert json.loads((out / "records" / "cnn-tutorial.json").read_text())["tta"] == "flip"
    wrong = runner.invoke(cli, args + ["--tta", "five_crop"])
    assert wrong.exit_code == 1 and "Invalid value for '--tta'" in wrong.stderr


def test_train_cnn_never_trains_over_a_cell_and_keeps_variants_under_their_names(runner, kaggle_dir, tmp_path):
    out = tmp_path / "run"
    args = ["train", "cnn", "--arch", "tutorial", "--epochs", "1", "--batch-size", "7", "--data", str(kaggle_dir),
            "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    model = out / "models" / "cnn-tutorial.zip"
    before = model.read_bytes()

    again = runner.invoke(cli, args + ["--seed", "1"])  # another training of the same cell: refused, nothing touched
    assert again.exit_code == 1
    assert again.stderr == (f"fer-bench: error: {out} already holds the cell cnn-tutorial "
                            f"({out / 'records' / 'cnn-tutorial.json'}); add --resume to continue or re-score it, "
                            f"give --name to train another beside it, or remove {out / 'records' / 'cnn-tutorial.json'} "
                            f"to train it again\n")
    assert model.read_bytes() == before

    beside = runner.invoke(cli, args + ["--seed", "1", "--name", "cnn-tutorial-seed1"])
    assert beside.exit_code == 0, beside.output
    record = json.loads((out / "records" / "cnn-tutorial-seed1.json").read_text())
    assert record["cell"] == "cnn-tutorial-seed1" and record["seed"] == 1
    assert record["model_path"] == str(out / "models" / "cnn-tutorial-seed1.zip")
    assert (out / "checkpoints" / "cnn-tutorial-seed1" / "state.json").is_file()
    assert model.read_bytes() == before and json.loads((out / "records" / "cnn-tutorial.json").read_text())["seed"] == 0

    for bad in ("../elsewhere", ".hidden", "a b", ""):
        refused = runner.invoke(cli, args + ["--name", bad])
        assert refused.exit_code == 1 and "--name" in refused.stderr and "Traceback" not in refused.output


def test_train_cnn_rejects_unknown_names(runner, kaggle_dir, tmp_path):
    result = runner.invoke(cli, ["train", "cnn", "--arch", "resnet", "--data", str(kaggle_dir)])
    assert result.exit_code == 1
    assert result.stderr.startswith("fer-bench: error: Invalid value for '--arch'")
    result = runner.invoke(cli, ["train", "cnn", "--param", "lr=0.1", "--data", str(kaggle_dir),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("fer-bench: error: unknown training parameter(s) lr; known:")
    assert result.stderr.count("\n") == 1
    result = runner.invoke(cli, ["train", "cnn", "--arch-param", "width=2", "--data", str(kaggle_dir)])
    assert result.exit_code == 1
    assert result.stderr.startswith("fer-bench: error: unknown parameter(s) width of architecture 'tutorial'")


def test_train_cnn_on_a_missing_dataset_is_one_line(runner, tmp_path):
    result = runner.invoke(cli, ["train", "cnn", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert result.exit_code == 1
    assert result.stderr.startswith("fer-bench: error:") and result.stderr.count("\n") == 1


def test_explain_prints_json_and_writes_pictures(runner, face_image, tmp_path):
    out = tmp_path / "pictures"
    result = runner.invoke(cli, ["explain", str(tiny_model_file()), str(face_image), "--out", str(out),
                                 "--target", "sad"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["target"] == "sad"
    assert report["blocks"] == ["conv1", "conv2", "conv3", "conv4"]
    assert report["gradcam_png"] == str(out / "me-gradcam.png")
    assert (out / "me-gradcam.png").is_file() and (out / "me-activations.png").is_file()


def test_explain_errors_are_one_line(runner, face_image, tmp_path):
    X, y = synthetic_faces(14)
    classic = ClassicModel("hog", "dt").fit(X, y).save(tmp_path / "hog__dt.skops")
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("hello")
    cases = [
        ([str(classic), str(face_image)], "hog__dt.skops: a classical model; explain needs a CNN"),
        ([str(tiny_model_file()), str(tmp_path / "none.png")], "none.png: no such image file"),
        ([str(tiny_model_file()), str(not_an_image)], "notes.png: not an image OpenCV can decode"),
        ([str(tmp_path / "none.zip"), str(face_image)], "none.zip: no such model file"),
        ([str(tiny_model_file()), str(face_image), "--target", "bored"], "unknown class 'bored'"),
    ]
    for args, message in cases:
        result = runner.invoke(cli, ["explain", *args, "--out", str(tmp_path / "out")])
        assert result.exit_code == 1, (args, result.output)
        assert result.stderr.startswith("fer-bench: error:") and message in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
