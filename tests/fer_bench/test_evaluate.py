"""``fer-bench evaluate``: saved models scored on other labelled datasets.

The datasets are written to tmp_path as another lab would hand them over:
foreign class names, classes missing and extra, whole photos, a corrupt file.
Their faces come from FER-2013's PrivateTest folders when FER-2013 is present
and are synthetic (a class-specific bright bar) otherwise.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import CLASSES, fer2013_path, synthetic_faces, write_kaggle_layout
from fer_bench.cli import cli
from fer_bench.data import Dataset, Split, load_dataset
from fer_bench.evaluate import (EvaluationError, evaluate_model, largest_faces, match_classes, parse_label_map,
                                select_split)


# ----------------------------------------------------------------------------- faces and datasets


def faces_of(label: int, count: int, seed: int = 0) -> list:
    """``count`` 48x48 faces of FER-2013 class ``label``: real PrivateTest faces if FER-2013 is here, else synthetic."""
    root = fer2013_path()
    if root is not None:
        files = sorted((root / "test" / CLASSES[label]).glob("PrivateTest_*"))[seed * count:(seed + 1) * count]
        return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in files]
    X, y = synthetic_faces(7 * count, seed=seed + 1)
    return list(X[y == label][:count])


def write_folder(root, faces_by_folder: dict):
    """``root/<folder>/face_<i>.png`` for each folder's faces; returns root."""
    for folder, faces in faces_by_folder.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i, face in enumerate(faces):
            cv2.imwrite(str(root / folder / f"face_{i:03d}.png"), face)
    return root


def astronaut():
    from skimage import data

    return cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A small hog + kNN model with the FER-2013 classes, trained on Training faces (or synthetic ones)."""
    from fer_classic.model import ClassicModel

    root = fer2013_path()
    if root is not None:
        X, y = [], []
        for label, name in enumerate(CLASSES):
            files = sorted((root / "train" / name).glob("Training_*"))[:40]
            X += [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in files]
            y += [label] * len(files)
        X, y = np.stack(X), np.array(y)
    else:
        X, y = synthetic_faces(280, seed=7)
    model = ClassicModel("hog", "knn", classifier_params={"pca_components": 20}).fit(X, y)
    return model.save(tmp_path_factory.mktemp("model") / "hog_knn.skops")


@pytest.fixture
def foreign(tmp_path):
    """Class folders named as another dataset names them: no disgust or fear, an extra contempt, and calm."""
    return write_folder(tmp_path / "lab", {
        "Anger": faces_of(0, 6), "HAPPINESS": faces_of(3, 6), "sadness": faces_of(4, 6),
        "Surprised": faces_of(5, 6), "contempt": faces_of(1, 4), "calm": faces_of(6, 6),
    })


def invoke(*args):
    return CliRunner().invoke(cli, ["evaluate", *map(str, args)])


class TableModel:
    """A model whose probabilities are looked up by the face's top-left pixel: hand-checked answers."""

    classes_ = CLASSES

    def __init__(self, rows):
        self.rows = np.asarray(rows, dtype=float)

    def predict_proba(self, X):
        return self.rows[X[:, 0, 0]]


def face_with_code(code: int) -> np.ndarray:
    face = np.zeros((48, 48), np.uint8)
    face[0, 0] = code
    return face


# ----------------------------------------------------------------------------- labels


def test_synonyms_case_and_label_map_match_foreign_names():
    match = match_classes(("anger", "Calm", "contempt", "HAPPINESS", "sadness", "surprised"), CLASSES,
                          parse_label_map("calm=Neutral"))
    assert match.mapping == {"anger": "angry", "Calm": "neutral", "HAPPINESS": "happy", "sadness": "sad",
                             "surprised": "surprise"}
    assert match.scored_names == ("angry", "happy", "sad", "surprise", "neutral")  # the model's order
    assert match.not_in_model == {"contempt": "contempt"}
    assert match.not_in_data == ("disgust", "fear")
    assert match.target.tolist() == [0, 6, -1, 3, 4, 5]


def test_label_map_ignore_and_model_side_synonyms():
    match = match_classes(("angry", "contempt", "happy"), ("anger", "happiness", "neutral"),
                          {"contempt": "ignore"})
    assert match.mapping == {"angry": "anger", "happy": "happiness"}
    assert match.ignored == ("contempt",) and match.not_in_model == {}
    assert match.not_in_data == ("neutral",)


def test_label_map_errors_say_how_to_write_it():
    with pytest.raises(EvaluationError, match=r"--label-map 'calm': write DATA_CLASS=MODEL_CLASS"):
        parse_label_map("calm")
    with pytest.raises(EvaluationError, match=r"maps 'calm' twice"):
        parse_label_map("calm=neutral,CALM=happy")
    with pytest.raises(EvaluationError, match=r"calm=neutrall: the model has no class 'neutrall'; its classes are "
                                              r"angry, disgust"):
        match_classes(("calm",), CLASSES, {"calm": "neutrall"})


# ----------------------------------------------------------------------------- scoring


def in_memory(classes, y, codes, name="lab"):
    X = np.stack([face_with_code(c) for c in codes])
    y = np.asarray(y, dtype=np.int64)
    empty = Split("empty", X[:0], y[:0])
    return Dataset(name, "/nowhere/lab", tuple(classes), empty, empty, Split("test", X, y), "by hand", "key")


def test_answers_are_restricted_to_the_shared_classes_hand_checked():
    # angry disgust fear happy sad surprise neutral
    rows = [[0.3, 0.6, 0.0, 0.1, 0.0, 0.0, 0.0],   # disgust first: wrong; among angry/happy: angry, right
            [0.1, 0.0, 0.0, 0.7, 0.1, 0.1, 0.0],   # happy either way: right
            [0.1, 0.0, 0.4, 0.5, 0.0, 0.0, 0.0],   # happy either way: wrong for an angry face
            [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]]   # a contempt face: not scored
    dataset = in_memory(("anger", "contempt", "happiness"), [0, 2, 0, 1], [0, 1, 2, 3])
    evaluation = evaluate_model(TableModel(rows), dataset, model_name="table", n_resamples=50)
    record = evaluation.record
    assert record["classes_scored"] == ["angry", "happy"]
    assert record["n"] == 3 and record["n_images"] == 4
    assert record["accuracy"] == pytest.approx(2 / 3)
    assert record["accuracy_unrestricted"] == pytest.approx(1 / 3)
    assert record["confusion_matrix"] == [[1, 1], [0, 1]]
    assert record["classes_dropped"] == {"not_in_model": {"contempt": 1}, "ignored": {},
                                         "not_in_data": ["disgust", "fear", "sad", "surprise", "neutral"]}
    assert evaluation.y_pred.tolist() == [0, 1, 1]
    np.testing.assert_allclose(evaluation.proba[0], [0.75, 0.25])  # renormalised over the scored classes
    assert record["accuracy_ci"][0] <= record["accuracy"] <= record["accuracy_ci"][1]


def test_splits_by_name_role_or_all_and_a_clear_error():
    X, y = synthetic_faces(14)
    parts = [Split(name, X[i::3], y[i::3], tuple(f"{name}/{j}.png" for j in range(len(y[i::3]))))
             for i, name in enumerate(("Training", "PublicTest", "PrivateTest"))]
    fer = Dataset("fer2013", "/data/fer", CLASSES, *parts, "canonical", "k")
    assert select_split(fer, "privatetest") is fer.test and select_split(fer, "test") is fer.test
    assert select_split(fer, "val") is fer.val and select_split(fer, "train") is fer.train
    everything = select_split(fer, "all")
    assert len(everything) == 14 and len(everything.files) == 14 and everything.name == "all"
    with pytest.raises(EvaluationError, match=r"/data/fer: no split 'holdout'; its splits are Training, PublicTest, "
                                              r"PrivateTest \(or all\)"):
        select_split(fer, "holdout")


def test_no_shared_class_is_a_clear_error():
    dataset = in_memory(("1", "2"), [0, 1], [0, 1])
    with pytest.raises(EvaluationError, match=r"table and lab share no class.*--label-map DATA=MODEL"):
        evaluate_model(TableModel(np.eye(7)), dataset, model_name="table")


# ----------------------------------------------------------------------------- the command on disk


def test_foreign_dataset_is_mapped_named_and_written_with_a_report(model_file, foreign, tmp_path):
    out = tmp_path / "out"
    result = invoke(model_file, "--data", foreign, "--split", "all", "--label-map", "calm=neutral", "--out", out,
                    "--resamples", 100, "--cache-dir", tmp_path / "cache", "--json")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    summary = json.loads(line)
    assert summary["model"] == "hog_knn" and summary["dataset"] == "lab" and summary["split"] == "all"
    assert summary["classes_scored"] == ["angry", "happy", "sad", "surprise", "neutral"]
    assert summary["classes_dropped"] == {"not_in_model": {"contempt": 4}, "ignored": {},
                                          "not_in_data": ["disgust", "fear"]}
    assert summary["n"] == 30 and set(summary["per_class"]) == set(summary["classes_scored"])
    assert all(values["support"] == 6 for values in summary["per_class"].values())
    assert summary["accuracy"] >= summary["accuracy_unrestricted"]  # restricting can only turn errors right
    # the table and the left-out classes went to stderr
    assert "data classes the model lacks, not scored: contempt (4 images)" in result.stderr
    assert "model classes the data lacks: disgust, fear" in result.stderr

    record = json.loads((out / "evaluations" / "hog_knn@lab-all.json").read_text())
    assert record["label_map"]["calm"] == "neutral" and record["label_map"]["HAPPINESS".lower()] == "happy"
    confusion = np.array(record["confusion_matrix"])
    assert confusion.shape == (5, 5) and confusion.trace() / confusion.sum() == pytest.approx(record["accuracy"])
    with np.load(out / record["predictions_path"]) as predictions:
        assert predictions["classes"].tolist() == record["classes_scored"]
        assert predictions["proba"].shape == (30, 5)
    report = (out / "report.md").read_text()
    assert "## Cross-dataset evaluation" in report
    assert "| hog_knn | – | lab | all | 30 |" in report
    assert "contempt (4)" in report and "model: disgust, fear" in report
    assert json.loads((out / "records.json").read_text())["evaluations"][0]["name"] == "hog_knn@lab-all"


def test_another_model_under_the_same_name_keeps_the_earlier_record(model_file, foreign, tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    args = ("--data", foreign, "--split", "all", "--out", out, "--resamples", 20, "--cache-dir", cache, "--no-report")
    assert invoke(model_file, *args).exit_code == 0
    first = json.loads((out / "evaluations" / "hog_knn@lab-all.json").read_text())
    again = invoke(model_file, *args)  # the same scoring again: its record is replaced, nothing kept aside
    assert again.exit_code == 0 and "kept as" not in again.stderr
    assert not (out / "evaluations" / "earlier").exists()

    from fer_classic.model import ClassicModel

    X, y = synthetic_faces(140, seed=3)  # another model, saved under the same file name
    other = ClassicModel("hog", "dt").fit(X, y).save(tmp_path / "other" / "hog_knn.skops")
    result = invoke(other, *args)
    assert result.exit_code == 0, result.output
    (kept,) = (out / "evaluations" / "earlier").glob("*.json")
    assert f"kept as evaluations/earlier/{kept.name}" in result.stderr
    earlier = json.loads(kept.read_text())
    assert earlier["model_sha256"] == first["model_sha256"] and earlier["confusion_matrix"] == \
        first["confusion_matrix"]
    assert (out / earlier["predictions_path"]).is_file()
    latest = json.loads((out / "evaluations" / "hog_knn@lab-all.json").read_text())
    assert latest["model_sha256"] != first["model_sha256"] and (out / latest["predictions_path"]).is_file()


def test_plain_output_names_what_was_left_out(model_file, foreign, tmp_path):
    result = invoke(model_file, "--data", foreign, "--split", "all", "--out", tmp_path / "out", "--no-report",
                    "--resamples", 50, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    # without --label-map, calm is a class the model lacks
    assert "not scored: calm (6 images), contempt (4 images)" in result.stdout
    assert result.stdout.splitlines()[0].split()[:4] == ["model", "dataset", "split", "faces"]
    assert not (tmp_path / "out" / "report.md").exists()


def test_corrupt_image_is_a_clear_error_naming_it(model_file, foreign, tmp_path):
    bad = foreign / "sadness" / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    result = invoke(model_file, "--data", foreign, "--out", tmp_path / "out", "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    assert result.stderr.startswith("fer-bench: error: 1 image file(s) could not be decoded")
    assert str(bad) in result.stderr and "Traceback" not in result.output


def test_unknown_model_and_split_are_one_line_errors(model_file, foreign, tmp_path):
    result = invoke("no_such_model", "--data", foreign, "--out", tmp_path / "out")
    assert result.exit_code == 1 and "no such model file, nor a shipped model's name" in result.stderr
    result = invoke(model_file, "--data", foreign, "--split", "holdout", "--out", tmp_path / "out",
                    "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 1
    assert "no split 'holdout'; its splits are train, validation, test (or all)" in result.stderr


# ----------------------------------------------------------------------------- whole photos


@pytest.fixture
def photos(tmp_path):
    """Full-size photos: the astronaut alone, the astronaut beside a half-size copy, and a wall with no face."""
    root = tmp_path / "photos"
    (root / "Happiness").mkdir(parents=True)
    (root / "neutral").mkdir()
    face = astronaut()
    cv2.imwrite(str(root / "Happiness" / "astronaut.jpg"), face)
    canvas = np.full((700, 1100, 3), 90, np.uint8)
    canvas[100:612, 520:1032] = face
    canvas[300:556, 60:316] = cv2.resize(face, (256, 256), interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(root / "Happiness" / "two_people.png"), canvas)
    wall = np.tile(np.linspace(40, 200, 640).astype(np.uint8), (480, 1))
    cv2.imwrite(str(root / "neutral" / "wall.png"), wall)
    return root


def test_largest_face_is_the_one_scored(photos):
    X, found, boxes = largest_faces([photos / "Happiness" / "two_people.png", photos / "neutral" / "wall.png"],
                                    detector="haar")
    assert found.tolist() == [True, False] and X.shape == (1, 48, 48)
    x, y, w, h = boxes[0]
    assert x >= 520 and y >= 100 and w > 80  # the full-size astronaut, not the half-size one at x < 316


def test_detect_scores_found_faces_and_lists_images_without_one(model_file, photos, tmp_path):
    out = tmp_path / "out"
    result = invoke(model_file, "--data", photos, "--split", "all", "--detect", "haar", "--out", out, "--json",
                    "--resamples", 50, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["detector"] == "haar"
    assert summary["n"] == 2 and summary["n_no_face"] == 1 and summary["no_face"] == ["neutral/wall.png"]
    assert summary["classes_scored"] == ["happy", "neutral"]
    assert "no face found by haar in 1 of 3 images (not scored): neutral/wall.png" in result.stderr
    assert "no face found by haar in 1 images, not scored: neutral/wall.png" in (out / "report.md").read_text()

    # Without --detect every image is taken as a face crop: all three are scored.
    plain = invoke(model_file, "--data", photos, "--split", "all", "--out", out, "--json", "--no-report",
                   "--resamples", 50, "--cache-dir", tmp_path / "cache")
    assert json.loads(plain.stdout)["n"] == 3 and json.loads(plain.stdout)["n_no_face"] == 0
    assert sorted(path.name for path in (out / "evaluations").glob("*.json")) == [
        "hog_knn@photos-all+haar.json", "hog_knn@photos-all.json"]


def test_detect_needs_image_files(model_file, tmp_path):
    from fer_bench.data import write_fer2013_csv

    write_fer2013_csv(load_dataset(write_kaggle_layout(tmp_path / "fer"), cache_dir=False), tmp_path / "f.csv")
    result = invoke(model_file, "--data", tmp_path / "f.csv", "--detect", "haar", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "--detect needs the dataset's image files" in result.stderr


# ----------------------------------------------------------------------------- reproducing a run's record


def small_fer2013(root):
    """FER-2013 in the Kaggle layout with a few real faces of each usage (or synthetic ones without FER-2013)."""
    source = fer2013_path()
    if source is None:
        return write_kaggle_layout(root, per_class=15)
    for subset, usages, count in (("train", ("Training",), 40), ("test", ("PublicTest", "PrivateTest"), 12)):
        for name in CLASSES:
            (root / subset / name).mkdir(parents=True)
            for usage in usages:
                for path in sorted((source / subset / name).glob(f"{usage}_*"))[:count]:
                    shutil.copy(path, root / subset / name / path.name)
    return root


def test_evaluate_on_privatetest_reproduces_the_run_record(tmp_path):
    data, out = small_fer2013(tmp_path / "fer2013"), tmp_path / "run"
    cache = tmp_path / "cache"
    done = CliRunner().invoke(cli, ["run", "--features", "hog", "--classifier", "knn", "--param", "pca_components=20",
                                    "--no-select", "--data", str(data), "--out", str(out), "--cache-dir", str(cache),
                                    "--no-report"])
    assert done.exit_code == 0, done.output
    cell = json.loads((out / "records" / "hog__knn.json").read_text())
    assert cell["split"]["test"] == "PrivateTest"
    result = invoke(out / "models" / "hog__knn.skops", "--data", data, "--split", "PrivateTest", "--out", out,
                    "--cache-dir", cache, "--resamples", 100)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "evaluations" / "hog__knn@fer2013-PrivateTest.json").read_text())
    assert record["accuracy"] == cell["accuracy"]
    assert record["confusion_matrix"] == cell["confusion_matrix"]
    assert record["accuracy_unrestricted"] == cell["accuracy"]  # every class shared: nothing restricted
    assert record["model_trained_on"]["dataset_key"] == cell["dataset_key"] == record["dataset_key"]
    report = (out / "report.md").read_text()
    assert "## Leaderboard" in report and "## Cross-dataset evaluation" in report


def test_shipped_fast_model_reproduces_its_privatetest_record(fer2013):
    from fer_bench.models import load_model, shipped_models

    shipped = next(record for record in shipped_models() if record["name"] == "fast")
    if fer2013.content_key != shipped["dataset_key"]:
        pytest.skip("this FER-2013 copy is not the one the shipped model was scored on")
    record = evaluate_model(load_model("fast"), fer2013, model_name="fast", split="PrivateTest", n_resamples=50).record
    assert record["n"] == shipped["n_test"] == 3589
    assert record["accuracy"] == shipped["accuracy"]
    assert record["confusion_matrix"] == shipped["confusion_matrix"]
