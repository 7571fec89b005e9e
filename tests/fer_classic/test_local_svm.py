"""LocalSVM: an SVM per test row on its nearest training rows; the local_svm registry entry."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.svm import SVC

from fer_classic.classifiers import CLASSIFIERS, make_classifier
from fer_classic.estimators import LocalSVM
from fer_classic.model import ClassicModel

from conftest import synthetic_faces


def pixel_rows(n, seed=0):
    """Synthetic faces as float32 rows of pixels scaled to 0..1, and their labels."""
    X, y = synthetic_faces(n, seed=seed)
    rng = np.random.default_rng(seed)
    rows = X.reshape(n, -1)[:, ::8].astype(np.float32) / 255
    rows += rng.normal(scale=1.0, size=rows.shape).astype(np.float32)  # classes overlap: the SVMs must work
    return rows, y


@pytest.mark.parametrize("kernel", ["rbf", "linear"])
def test_equal_to_the_global_svm_when_the_neighbours_are_the_whole_training_set(kernel):
    X, y = pixel_rows(140)
    X_test, _ = pixel_rows(30, seed=1)
    local = LocalSVM(n_neighbors=500, kernel=kernel, C=3.0).fit(X, y)
    global_svm = SVC(kernel=kernel, C=3.0, gamma="scale", break_ties=True).fit(X.astype(np.float64), y)
    np.testing.assert_allclose(local.decision_function(X_test), global_svm.decision_function(X_test), atol=1e-6)
    np.testing.assert_array_equal(local.predict(X_test), global_svm.predict(X_test))


def test_few_neighbours_give_local_decisions_and_predict_is_their_argmax():
    X, y = pixel_rows(210)
    X_test, y_test = pixel_rows(40, seed=1)
    local = LocalSVM(n_neighbors=30).fit(X, y)
    scores = local.decision_function(X_test)
    assert scores.shape == (40, 7)
    np.testing.assert_array_equal(local.predict(X_test), local.classes_[np.argmax(scores, axis=1)])
    whole = LocalSVM(n_neighbors=210).fit(X, y).decision_function(X_test)
    assert not np.allclose(scores, whole)
    assert np.mean(local.predict(X_test) == y_test) > 0.5
    # a row's scores are those of an SVC fitted on its 30 nearest training rows, in training order
    nearest = np.sort(np.argsort(((X[None] - X_test[:, None]) ** 2).sum(axis=2), axis=1)[:, :30], axis=1)
    mixed = [i for i in range(len(X_test)) if len(np.unique(y[nearest[i]])) > 2]
    assert mixed  # the noise mixes the classes near some rows
    i = mixed[0]
    svm = SVC(C=10.0, gamma=local.gamma_, break_ties=True).fit(X[nearest[i]].astype(np.float64), y[nearest[i]])
    present = np.unique(y[nearest[i]])
    # libsvm stops at tol=1e-3; a precomputed kernel and its own (summed in another order) can stop a step apart
    np.testing.assert_allclose(scores[i, present], svm.decision_function(X_test[i : i + 1])[0], atol=1e-4)
    assert np.all(np.delete(scores[i], present) < scores[i, present].min())


def test_one_label_among_the_neighbours_and_absent_classes_rank_last():
    X = np.array([[0.0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10], [20, 0], [20, 1]])
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    local = LocalSVM(n_neighbors=3).fit(X, y)
    np.testing.assert_array_equal(local.decision_function([[0.2, 0.2]]), [[1.0, -1.0, -1.0]])
    # 4 neighbours of a point near class 1: three of class 1 and one of class 0 or 2; the third class is absent
    local = LocalSVM(n_neighbors=4, kernel="linear").fit(X, y)
    scores = local.decision_function([[10.2, 10.2], [19, 1]])
    for row in scores:
        absent = np.flatnonzero(row == row.min())
        assert len(absent) == 1 and row.min() <= -2 and np.sort(row)[1] - row.min() >= 1
    np.testing.assert_array_equal(local.predict([[10.2, 10.2], [19, 1]]), [1, 2])


def test_parameters_are_checked_in_fit_and_prediction_needs_fit():
    X, y = pixel_rows(14)
    with pytest.raises(NotFittedError):
        LocalSVM().decision_function(X)
    for params, message in (({"n_neighbors": 1}, r"n_neighbors=1; must be at least 2"),
                            ({"kernel": "poly"}, r"kernel='poly'; choose 'rbf' or 'linear'"),
                            ({"gamma": -1}, r"gamma=-1; give 'scale' or a positive number")):
        with pytest.raises(ValueError, match=message):
            LocalSVM(**params).fit(X, y)
    with pytest.raises(ValueError, match=r"at least two classes"):
        LocalSVM().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match=r"X has 3 features, but LocalSVM was fitted on"):
        LocalSVM().fit(X, y).decision_function(np.zeros((1, 3)))
    assert not hasattr(clone(LocalSVM().fit(X, y)), "X_fit_")


def test_registered_with_its_grid_and_usable_in_a_classic_model(tmp_path):
    assert CLASSIFIERS["local_svm"].grid == {"n_neighbors": [200, 500, 1000]}
    assert make_classifier("local_svm", {"n_neighbors": 50}).named_steps["local"].n_neighbors == 50
    with pytest.raises(ValueError, match=r"does not support class_weight"):
        make_classifier("local_svm", {"class_weight": "balanced"})
    X, y = synthetic_faces(140)
    X_val, y_val = synthetic_faces(35, seed=1)
    model = ClassicModel("hog", "local_svm", classifier_params={"n_neighbors": 40, "pca_components": 30})
    model.fit(X, y, validation=(X_val, y_val))
    proba = model.predict_proba(X_val)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    F = model.transform(X_val)
    decided = model.estimator_.predict(F)
    np.testing.assert_array_equal(model.predict(X_val), np.asarray(model.classes_)[decided])
    assert model.score(X_val, y_val) > 0.9
    loaded = ClassicModel.load(model.save(tmp_path / "local.skops"))
    np.testing.assert_array_equal(loaded.predict_proba(X_val), proba)
