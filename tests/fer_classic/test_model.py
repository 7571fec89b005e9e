import subprocess
import sys
import zipfile

import joblib
import numpy as np
import pytest
from sklearn.base import ClassifierMixin, clone
from sklearn.exceptions import NotFittedError

from fer_classic.classifiers import CLASSIFIERS, check_classifier_name, make_classifier
from fer_classic.model import TRUSTED_TYPES, ClassicModel, ModelFileError, encode_labels
from conftest import CLASSES, synthetic_faces


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(140, seed=1), synthetic_faces(70, seed=2)


@pytest.mark.parametrize("classifier", list(CLASSIFIERS))
def test_every_classifier_learns_the_synthetic_classes(faces, classifier):
    (X, y), (X_test, y_test) = faces
    if CLASSIFIERS[classifier].needs_words:  # local_mkl, global_mkl: a small sparse bag of words beside hog
        params = {"n_neighbors": 60} if "n_neighbors" in CLASSIFIERS[classifier].defaults() else {}
        model = ClassicModel("sift_words+hog", classifier, classifier_params=params,
                             feature_params={"sift_words": {"vocabulary_size": 40, "fit_descriptors": 20_000,
                                                            "step": 4}})
    else:
        model = ClassicModel("hog", classifier)
    model.fit(X, y, validation=(X_test, y_test))
    predicted = model.predict(X_test)
    assert predicted.shape == (70,) and set(predicted) <= set(CLASSES)
    assert np.mean(predicted == np.asarray(CLASSES)[y_test]) > 0.8
    proba = model.predict_proba(X_test)
    assert proba.shape == (70, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    assert model.classes_ == CLASSES


def test_svm_without_validation_is_calibrated_on_its_training_faces(faces):
    (X, y), (X_test, _) = faces
    model = ClassicModel("lbp", "svm").fit(X, y)
    assert model.calibrator_.temperature_ > 0
    np.testing.assert_allclose(model.predict_proba(X_test).sum(axis=1), 1.0, rtol=1e-6)


def test_validation_without_every_class_still_calibrates_every_class(faces):
    (X, y), (X_val, y_val) = faces
    partial = y_val < 3
    model = ClassicModel("hog", "svm").fit(X, y, validation=(X_val[partial], y_val[partial]))
    proba = model.predict_proba(X_val)
    assert proba.shape == (70, 7) and np.all(proba[:, 3:].sum(axis=0) > 0)
    np.testing.assert_array_equal(proba.argmax(axis=1), model.estimator_.predict(model.transform(X_val)))


def test_labels_as_names_or_indices():
    assert encode_labels(["happy", "angry"], CLASSES).tolist() == [3, 0]
    assert encode_labels(np.array([6, 0]), CLASSES).tolist() == [6, 0]
    with pytest.raises(ValueError, match=r"unknown label 'joy'; classes are angry"):
        encode_labels(["joy"], CLASSES)
    with pytest.raises(ValueError, match=r"integer labels must lie in 0..6"):
        encode_labels([7], CLASSES)


def test_class_missing_from_training_gets_probability_zero():
    X, y = synthetic_faces(60, n_classes=6)  # no neutral (index 6)
    model = ClassicModel("hog", "rf", classifier_params={"n_estimators": 20}).fit(X, y)
    proba = model.predict_proba(X[:5])
    assert proba.shape == (5, 7) and np.all(proba[:, 6] == 0)


def test_fit_errors():
    X, y = synthetic_faces(14)
    with pytest.raises(ValueError, match="14 faces but 13 labels"):
        ClassicModel().fit(X, y[:13])
    with pytest.raises(ValueError, match="at least two classes"):
        ClassicModel().fit(X, np.zeros(14, int))
    with pytest.raises(NotFittedError, match=r"this ClassicModel is not fitted yet; call fit"):
        ClassicModel().predict(X)
    with pytest.raises(ValueError, match=r"unknown feature 'sift'"):
        ClassicModel("sift").fit(X, y)  # validated in fit, not in __init__
    with pytest.raises(ValueError, match=r"unknown classifier 'xgb'"):
        ClassicModel("hog", "xgb").fit(X, y)


def test_a_scikit_learn_estimator(faces):
    (X, y), (X_test, y_test) = faces
    params = {"n_neighbors": 3}
    model = ClassicModel("hog", "knn", classifier_params=params, random_state=3)
    assert model.get_params()["classifier_params"] is params  # stored untouched
    assert not hasattr(model, "classes_")
    copy = clone(model)
    assert copy.get_params()["classifier_params"] == params and copy.random_state == 3
    assert copy.set_params(classes=CLASSES[::-1]) is copy and copy.classes == CLASSES[::-1]
    fitted = clone(model).fit(X, y)
    assert fitted.classes_ == CLASSES and isinstance(fitted, ClassifierMixin)
    assert fitted.score(X_test, y_test) == np.mean(fitted.predict(X_test) == np.asarray(CLASSES)[y_test])
    assert fitted.score(X_test, np.asarray(CLASSES)[y_test]) == fitted.score(X_test, y_test)
    assert not hasattr(clone(fitted), "estimator_")


def test_a_file_saved_with_seed_loads_with_random_state(faces, tmp_path):
    # Model files written before the scikit-learn conventions hold the instance's ``seed`` and
    # ``classes_`` (no ``classes``, no ``memory``); skops hands that dict to __setstate__.
    (X, y), (X_test, _) = faces
    fitted = ClassicModel("hog", "knn").fit(X, y)
    old = clone(fitted).fit(X, y)
    old.__dict__["seed"] = old.__dict__.pop("random_state")
    del old.__dict__["classes"], old.__dict__["memory"], old.__dict__["tta"]
    import skops.io

    from fer_classic.model import library_versions

    skops.io.dump({"format": "fer-bench-model", "format_version": 2, "family": "classic",
                   "versions": library_versions(), "model": old}, tmp_path / "old.skops")
    assert '"seed"' in zipfile.ZipFile(tmp_path / "old.skops").read("schema.json").decode()
    loaded = ClassicModel.load(tmp_path / "old.skops")
    assert loaded.random_state == 0 and loaded.classes == CLASSES and loaded.memory is None and loaded.tta == "none"
    assert "seed" not in loaded.__dict__
    np.testing.assert_array_equal(loaded.predict_proba(X_test), fitted.predict_proba(X_test))


def test_save_load_round_trip_in_a_fresh_process(faces, tmp_path):
    (X, y), (X_test, _) = faces
    model = ClassicModel("hog+lbp", "svm", metadata={"dataset": "synthetic"}).fit(X, y, validation=faces[1])
    path = model.save(tmp_path / "m.skops")
    np.save(tmp_path / "faces.npy", X_test)
    script = (
        "import numpy as np, sys; from fer_classic.model import ClassicModel;"
        f"m = ClassicModel.load({str(path)!r}); X = np.load({str(tmp_path / 'faces.npy')!r});"
        "np.save(sys.argv[1], m.predict_proba(X)); print(m.metadata['dataset'])"
    )
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "p.npy")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "synthetic"
    np.testing.assert_array_equal(np.load(tmp_path / "p.npy"), model.predict_proba(X_test))


@pytest.mark.parametrize("classifier", ["svm", "knn"])
def test_flip_tta_averages_each_face_with_its_mirror_image(faces, classifier):
    (X, y), (X_val, y_val) = faces
    model = ClassicModel("hog", classifier, tta="flip").fit(X, y, validation=(X_val, y_val))
    # Faces unlike their mirror images: the left half of one class's face beside the right half of another's.
    halves = np.concatenate([X_val[:, :, :24], np.roll(X_val, 3, axis=0)[:, :, 24:]], axis=2)
    mirrored = halves[:, :, ::-1]
    proba = model.predict_proba(halves)
    # A face and its mirror image get the same probabilities, the mean of the two views'.
    np.testing.assert_allclose(model.predict_proba(mirrored), proba, rtol=1e-10)
    plain = clone(model).set_params(tta="none")
    plain.__dict__.update({k: v for k, v in model.__dict__.items() if k.endswith("_")})
    np.testing.assert_allclose(proba, (plain.predict_proba(halves) + plain.predict_proba(mirrored)) / 2, rtol=1e-10)
    assert not np.allclose(plain.predict_proba(halves), proba)
    np.testing.assert_array_equal(model.predict(halves), np.asarray(CLASSES)[proba.argmax(axis=1)])
    proba = model.predict_proba(X_val)
    # The kept validation accuracy is that of the averaged probabilities; switching tta off scores anew.
    accuracy = np.mean(proba.argmax(axis=1) == y_val)
    assert model.score(X_val, y_val) == pytest.approx(accuracy)
    assert plain.score(X_val, y_val) == pytest.approx(np.mean(plain.predict_proba(X_val).argmax(axis=1) == y_val))
    if classifier == "svm":
        assert model.validation_accuracy_ == pytest.approx(accuracy)


def test_tta_is_saved_with_the_model_and_checked(faces, tmp_path):
    (X, y), (X_test, _) = faces
    model = ClassicModel("lbp", "svm", tta="flip").fit(X, y)
    loaded = ClassicModel.load(model.save(tmp_path / "m.skops"))
    assert loaded.tta == "flip" and "tta='flip'" in repr(loaded)
    np.testing.assert_array_equal(loaded.predict_proba(X_test), model.predict_proba(X_test))
    with pytest.raises(ValueError, match="unknown test-time augmentation 'ten_crop'; choose from none, flip"):
        ClassicModel("lbp", "svm", tta="ten_crop").fit(X, y)


def test_loading_something_that_is_not_a_model(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        ClassicModel.load(tmp_path / "missing.skops")
    text = tmp_path / "notes.joblib"
    text.write_text("hello")
    with pytest.raises(ModelFileError, match=r"not a fer-bench model file.*fer-bench run"):
        ClassicModel.load(text, trust=True)
    joblib.dump({"weights": [1, 2]}, tmp_path / "other.joblib")
    with pytest.raises(ModelFileError, match="not a fer-bench model file"):
        ClassicModel.load(tmp_path / "other.joblib", trust=True)
    import zipfile

    with zipfile.ZipFile(tmp_path / "other.skops", "w") as bundle:
        bundle.writestr("readme.txt", "not a model")
    with pytest.raises(ModelFileError, match="not a fer-bench model file"):
        ClassicModel.load(tmp_path / "other.skops")


def test_loading_a_model_from_an_incompatible_version(faces, tmp_path):
    import skops.io

    (X, y), _ = faces
    path = ClassicModel("hog", "knn").fit(X, y).save(tmp_path / "m.skops")
    payload = skops.io.load(path, trusted=sorted(TRUSTED_TYPES))
    payload["format_version"] = 99
    skops.io.dump(payload, tmp_path / "future.skops")
    with pytest.raises(ModelFileError, match=r"format version 99, this fer-bench reads versions 1 and 2; retrain"):
        ClassicModel.load(tmp_path / "future.skops")
    payload["format_version"] = 2
    payload["versions"]["scikit-learn"] = "0.24.2"
    skops.io.dump(payload, tmp_path / "old.skops")
    with pytest.raises(ModelFileError, match=r"saved with scikit-learn 0.24.2.*install scikit-learn==0.24.2 or retrain"):
        ClassicModel.load(tmp_path / "old.skops")


class RunsCode:
    """An object whose unpickling runs a command: what a hostile model file would hold."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_model_file_that_would_run_code_is_refused_and_runs_nothing(faces, tmp_path):
    import skops.io

    (X, y), _ = faces
    marker = tmp_path / "ran"
    payload = {"format": "fer-bench-model", "format_version": 1, "family": "classic", "versions": {},
               "model": RunsCode(marker)}
    joblib.dump(payload, tmp_path / "hostile.joblib")
    with pytest.raises(ModelFileError, match=r"pickle \(joblib\) model file; loading one runs any code.*--trust"):
        ClassicModel.load(tmp_path / "hostile.joblib")
    assert not marker.exists()
    # The same payload in a skops file names its foreign type, and is refused unread.
    model = ClassicModel("hog", "knn").fit(X, y)
    skops.io.dump({**payload, "format_version": 2, "model": model, "extra": RunsCode(marker)},
                  tmp_path / "hostile.skops")
    with pytest.raises(ModelFileError, match=r"holds types fer-bench does not load: test_model.RunsCode; it was not loaded"):
        ClassicModel.load(tmp_path / "hostile.skops")
    assert not marker.exists()


@pytest.mark.parametrize("classifier", ["svm", "linear_svm", "ls_svm", "rf", "knn", "dt"])
def test_the_label_is_the_most_probable_class(faces, classifier):
    (X, y), (X_test, y_test) = faces
    params = {"n_components": 40} if classifier == "ls_svm" else {}
    model = ClassicModel("hog", classifier, classifier_params=params).fit(X, y, validation=faces[1])
    proba = model.predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    labels = model.predict(X_test)
    np.testing.assert_array_equal(labels, np.asarray(model.classes_)[proba.argmax(axis=1)])
    if classifier in ("svm", "linear_svm", "ls_svm"):
        # ... and the SVM's own decision, whose accuracy the records report.
        decision = model.estimator_.predict(model.transform(X_test))
        np.testing.assert_array_equal(labels, np.asarray(model.classes_)[decision])


def test_classifier_registry_errors():
    with pytest.raises(ValueError, match=r"unknown classifier 'xgb'; choose from svm, linear_svm, rf, dt, knn, ls_svm"):
        check_classifier_name("xgb")
    with pytest.raises(ValueError, match=r"'knn' does not support class_weight"):
        make_classifier("knn", {"class_weight": "balanced"})
    with pytest.raises(ValueError, match=r"'svm' has no parameter 'depth'"):
        make_classifier("svm", {"depth": 3})
    assert make_classifier("svm", {"class_weight": "balanced"}).named_steps["svc"].class_weight == "balanced"
    assert make_classifier("rf", {"class_weight": "balanced"}).named_steps["forest"].class_weight == "balanced"
