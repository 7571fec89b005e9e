"""SumKernelLinearSVM (``global_mkl``): one linear SVM on an explicit map of local_mkl's summed kernel."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.svm import LinearSVC

from fer_classic.classifiers import CLASSIFIERS, make_classifier
from fer_classic.estimators import SumKernelLinearSVM, SumKernelLocalSVM
from fer_classic.model import ClassicModel

from conftest import synthetic_faces
from test_local_mkl import mixed_rows


def test_the_map_of_every_training_row_reproduces_local_mkl_s_summed_kernel():
    X, _, _, y = mixed_rows(150)
    X_test, _, _, _ = mixed_rows(30, seed=1)
    params = {"linear_columns": (0, 60), "linear_weight": 0.4, "pca_components": 8}
    model = SumKernelLinearSVM(**params, n_components=150).fit(X, y)  # Nystroem on every row: exact there
    local = SumKernelLocalSVM(**params).fit(X, y)
    np.testing.assert_allclose(model.gamma_, local.gamma_)
    train, test = model._design(*model._factors(X)), model._design(*model._factors(X_test))
    expected = local._sum_kernel(local._factors(X_test), (local.linear_fit_, local.Z_fit_))
    np.testing.assert_allclose((test @ train.T).toarray(), expected, atol=1e-4)
    np.testing.assert_allclose((train @ train.T).diagonal(), 1.0, atol=1e-4)  # both terms are 1 on the diagonal


def test_it_is_the_linear_svm_on_those_rows_and_learns_the_classes():
    X, _, _, y = mixed_rows(280)
    X_test, _, _, y_test = mixed_rows(70, seed=1)
    model = SumKernelLinearSVM(linear_columns=(0, 60), pca_components=8, n_components=100, C=2.0).fit(X, y)
    direct = LinearSVC(C=2.0, dual=True, max_iter=3000, random_state=0).fit(model._design(*model._factors(X)), y)
    scores = model.decision_function(X_test)
    assert scores.shape == (70, 7)
    np.testing.assert_allclose(scores, direct.decision_function(model._design(*model._factors(X_test))), atol=1e-6)
    np.testing.assert_array_equal(model.predict(X_test), model.classes_[np.argmax(scores, axis=1)])
    assert np.mean(model.predict(X_test) == y_test) > 0.6
    # it keeps no training rows: a model's size does not grow with the training set
    assert not any(hasattr(model, name) for name in ("y_fit_", "Z_fit_", "linear_fit_"))
    assert model.nystroem_.components_.shape == (100, 8)


def test_weight_one_is_the_words_alone_and_weight_zero_ignores_them():
    X, words, other, y = mixed_rows(140)
    X_test, words_test, other_test, _ = mixed_rows(30, seed=1)
    params = {"linear_columns": (0, 60), "pca_components": 8, "n_components": 60}
    words_only = SumKernelLinearSVM(**params, linear_weight=1.0).fit(X, y)
    assert words_only.nystroem_ is None
    np.testing.assert_allclose(words_only.decision_function(X_test),
                               SumKernelLinearSVM(**params).fit(words, y).decision_function(words_test), atol=1e-6)
    rbf_only = SumKernelLinearSVM(**params, linear_weight=0.0).fit(X, y).decision_function(X_test)
    no_words = SumKernelLinearSVM(**{**params, "linear_columns": None}).fit(other, y).decision_function(other_test)
    np.testing.assert_allclose(rbf_only, no_words, atol=1e-6)


def test_two_classes_score_one_column_each_and_parameters_are_checked():
    X, _, _, y = mixed_rows(60)
    two = y < 2
    model = SumKernelLinearSVM(linear_columns=(0, 60), pca_components=4, n_components=20).fit(X[two], y[two])
    scores = model.decision_function(X[two])
    assert scores.shape == (int(two.sum()), 2)
    np.testing.assert_allclose(scores[:, 0], -scores[:, 1])
    with pytest.raises(NotFittedError):
        SumKernelLinearSVM().decision_function(X)
    for params, message in (({"linear_weight": -0.1}, r"linear_weight=-0.1; give a weight from 0 to 1"),
                            ({"n_components": 0}, r"n_components=0; give a positive number"),
                            ({"C": 0}, r"C=0; must be positive"),
                            ({"gamma": "auto"}, r"gamma='auto'; give 'scale' or a positive number")):
        with pytest.raises(ValueError, match=message):
            SumKernelLinearSVM(**params).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 3 features, but SumKernelLinearSVM was fitted on 72"):
        model.decision_function(np.zeros((1, 3)))


def test_a_classic_model_with_global_mkl_saves_and_reloads(tmp_path):
    assert CLASSIFIERS["global_mkl"].grid == {"C": [0.3, 1.0]}
    assert make_classifier("global_mkl", {"C": 2.0}).C == 2.0
    X, y = synthetic_faces(140)
    X_val, y_val = synthetic_faces(35, seed=1)
    words = {"vocabulary_size": 40, "fit_descriptors": 20_000, "step": 4}
    model = ClassicModel("hog+sift_words", "global_mkl", feature_params={"sift_words": words},
                         classifier_params={"n_components": 100, "pca_components": 20})
    model.fit(X, y, validation=(X_val, y_val))
    n_hog = model.extractor_.transformer_list[0][1].transform(X_val[:1]).shape[1]
    assert model.estimator_.linear_columns == (n_hog, n_hog + (1 + 4 + 9 + 16) * 40)
    proba = model.predict_proba(X_val)
    assert model.score(X_val, y_val) > 0.9
    loaded = ClassicModel.load(model.save(tmp_path / "global.skops"))
    np.testing.assert_array_equal(loaded.predict_proba(X_val), proba)
