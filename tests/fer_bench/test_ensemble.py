"""EnsembleModel: weights chosen on validation faces, one file that reloads alike, members that must agree on classes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CLASSES, synthetic_faces

from fer_bench.ensemble import EnsembleModel, EnsembleFileError, choose_weights, weight_grid
from fer_bench.models import load_model
from fer_classic.model import ClassicModel


class Fixed:
    """A fitted stand-in model whose probabilities are given."""

    family = "classic"

    def __init__(self, proba, classes=CLASSES):
        self.proba = np.asarray(proba, dtype=float)
        self.classes_ = tuple(classes)

    def predict_proba(self, X):
        return self.proba[: len(X)]


def one_hot(labels, k=7):
    return np.eye(k)[labels]


def test_weight_grid_covers_the_simplex():
    grid = weight_grid(3, 0.05)
    assert len(grid) == 231  # (20 + 2 choose 2) points with 3 members
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert grid.min() == 0 and grid.max() == 1


def test_weights_favour_the_member_that_is_right():
    y = np.arange(70) % 7
    right = one_hot(y) * 0.6 + 0.4 / 7
    wrong = one_hot((y + 1) % 7) * 0.9 + 0.1 / 7
    weights = choose_weights([wrong, right], y)
    mixed = weights[0] * wrong + weights[1] * right
    assert np.mean(mixed.argmax(axis=1) == y) == 1.0
    assert weights[1] > weights[0]


def test_weights_by_log_loss_minimise_it_and_weights_by_accuracy_maximise_accuracy():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 7, size=200)
    members = [rng.dirichlet(np.ones(7), size=200) for _ in range(3)]
    members[0][np.arange(200), y] += 0.3
    members = [m / m.sum(axis=1, keepdims=True) for m in members]
    grid = weight_grid(3)
    mixed = np.einsum("gm,mnk->gnk", grid, np.stack(members))
    log_losses = -np.mean(np.log(mixed[:, np.arange(200), y]), axis=1)
    accuracies = np.mean(mixed.argmax(axis=2) == y, axis=1)

    by_loss = choose_weights(members, y, criterion="log_loss")
    np.testing.assert_allclose(by_loss, grid[np.argmin(log_losses)])
    by_accuracy = choose_weights(members, y)
    row = int(np.flatnonzero(np.all(np.isclose(grid, by_accuracy), axis=1))[0])
    assert accuracies[row] == accuracies.max()
    assert log_losses[row] >= log_losses.min()
    with pytest.raises(ValueError, match="unknown weight criterion 'f1'"):
        choose_weights(members, y, criterion="f1")


def test_members_with_other_classes_are_refused():
    with pytest.raises(ValueError, match="must share one class list"):
        EnsembleModel([Fixed(np.eye(7)), Fixed(np.eye(7), classes=CLASSES[::-1])], names=["a", "b"])
    with pytest.raises(ValueError, match="at least two models"):
        EnsembleModel([Fixed(np.eye(7))])


def test_prediction_is_the_argmax_of_the_weighted_probabilities():
    y = np.arange(7)
    a = one_hot(y) * 0.5 + 0.5 / 7
    b = one_hot((y + 3) % 7) * 0.7 + 0.3 / 7
    model = EnsembleModel([Fixed(a), Fixed(b)], weights=[3, 1])
    np.testing.assert_allclose(model.weights_, [0.75, 0.25])
    proba = model.predict_proba(np.zeros((7, 48, 48)))
    np.testing.assert_allclose(proba, 0.75 * a + 0.25 * b)
    assert list(model.predict(np.zeros((7, 48, 48)))) == [CLASSES[i] for i in proba.argmax(axis=1)]


def fitted_classic(classifier, seed):
    X, y = synthetic_faces(70, seed=seed)
    return ClassicModel("hog", classifier, classifier_params={} if classifier != "knn" else {"n_neighbors": 3},
                        random_state=seed).fit(X, y)


def test_saved_ensemble_reloads_with_identical_probabilities(tmp_path):
    members = [fitted_classic("knn", 1), fitted_classic("rf", 2)]
    X_val, y_val = synthetic_faces(35, seed=3)
    model = EnsembleModel(members, names=["hog__knn", "hog__rf"], metadata={"note": "test"}).fit(X_val, y_val)
    path = model.save(tmp_path / "ensemble.zip")
    again = load_model(path, trust=True)
    assert again.family == "ensemble" and again.names == ["hog__knn", "hog__rf"]
    np.testing.assert_allclose(again.weights_, model.weights_)
    X_test, _ = synthetic_faces(14, seed=4)
    np.testing.assert_array_equal(again.predict_proba(X_test), model.predict_proba(X_test))
    assert again.metadata == {"note": "test"}


def test_fusion_of_a_cnn_and_a_classical_model_reloads_alike_in_a_fresh_process(tmp_path):
    pytest.importorskip("keras")
    import os
    import subprocess
    import sys

    from fer_deep.model import DeepModel

    X, y = synthetic_faces(28, seed=5)
    X_val, y_val = synthetic_faces(35, seed=3)
    cnn = DeepModel("tutorial", epochs=1, batch_size=14, verbose=0).fit(X, y)
    model = EnsembleModel([cnn, fitted_classic("knn", 1)], names=["cnn-tutorial", "hog__knn"]).fit(X_val, y_val)
    path = model.save(tmp_path / "fusion.zip")
    X_test, _ = synthetic_faces(14, seed=4)
    np.save(tmp_path / "faces.npy", X_test)
    code = (
        "import numpy as np, sys\n"
        "from fer_bench.models import load_model\n"
        f"model = load_model({str(path)!r}, trust=True)\n"
        f"np.save({str(tmp_path / 'proba.npy')!r}, model.predict_proba(np.load({str(tmp_path / 'faces.npy')!r})))\n"
        "print(type(model.members[0]).__name__, type(model.members[1]).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["DeepModel", "ClassicModel"]
    np.testing.assert_allclose(np.load(tmp_path / "proba.npy"), model.predict_proba(X_test), rtol=1e-6, atol=1e-7)


def test_damaged_ensemble_file_is_refused(tmp_path):
    members = [fitted_classic("knn", 1), fitted_classic("rf", 2)]
    X_val, y_val = synthetic_faces(35, seed=3)
    path = EnsembleModel(members).fit(X_val, y_val).save(tmp_path / "ensemble.zip")
    import zipfile

    with zipfile.ZipFile(path) as bundle:
        info = json.loads(bundle.read("fer-bench-ensemble.json"))
    info["files"][1] = "members/missing.joblib"
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.namelist():
            data = json.dumps(info) if item == "fer-bench-ensemble.json" else source.read(item)
            target.writestr(item, data)
    with pytest.raises(EnsembleFileError, match="lacks its member members/missing.joblib"):
        load_model(broken, trust=True)


def test_an_ensemble_can_refer_to_shipped_members_and_notices_when_one_changes(tmp_path, monkeypatch):
    import zipfile

    import fer_bench.models

    shipped = tmp_path / "shipped"
    shipped.mkdir()
    monkeypatch.setattr(fer_bench.models, "SHIPPED_DIR", shipped)
    knn, rf = fitted_classic("knn", 1), fitted_classic("rf", 2)
    knn.save(shipped / "near.skops")
    (shipped / "near.json").write_text(json.dumps({"name": "near", "file": "near.skops", "default": True}))
    X_val, y_val = synthetic_faces(35, seed=3)
    model = EnsembleModel([knn, rf], names=["hog__knn", "hog__rf"]).fit(X_val, y_val)
    path = model.save(tmp_path / "ensemble.zip", shipped_members={"hog__knn": ("near", shipped / "near.skops")})
    with zipfile.ZipFile(path) as bundle:
        assert [item for item in bundle.namelist() if item.startswith("members/")] == ["members/1-hog__rf.skops"]
    again = load_model(path, trust=True)
    X_test, _ = synthetic_faces(14, seed=4)
    np.testing.assert_array_equal(again.predict_proba(X_test), model.predict_proba(X_test))
    assert again.names == ["hog__knn", "hog__rf"]
    # An ensemble built on a shipped member, and one loaded from such a file, keep the reference when saved.
    built = EnsembleModel([knn, rf], names=["hog__knn", "hog__rf"], weights=model.weights_,
                          shipped={"hog__knn": ("near", shipped / "near.skops")})
    assert again.shipped == built.shipped
    for source in (built, again):
        with zipfile.ZipFile(source.save(tmp_path / "saved-again.zip")) as bundle:
            assert [item for item in bundle.namelist() if item.startswith("members/")] == ["members/1-hog__rf.skops"]

    with pytest.raises(ValueError, match="'hog__svm' is not a member of this ensemble"):
        model.save(tmp_path / "other.zip", shipped_members={"hog__svm": ("near", shipped / "near.skops")})
    fitted_classic("knn", 5).save(shipped / "near.skops")  # the shipped file is replaced by another model
    with pytest.raises(EnsembleFileError, match="the shipped model 'near' it is built on has changed since"):
        load_model(path, trust=True)
    (shipped / "near.json").unlink()
    with pytest.raises(EnsembleFileError, match="it is built on the shipped model 'near': no shipped model named"):
        load_model(path, trust=True)
    with pytest.raises(EnsembleFileError, match="built on the shipped model 'near'; load it with fer_bench.models"):
        EnsembleModel.load(path, load_member=load_model)
