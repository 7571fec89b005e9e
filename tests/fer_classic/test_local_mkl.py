"""SumKernelLocalSVM (``local_mkl``): local learning on a linear kernel of sparse words plus an RBF kernel."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.exceptions import NotFittedError
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from fer_classic.classifiers import CLASSIFIERS, make_classifier
from fer_classic.estimators import SumKernelLocalSVM
from fer_classic.model import ClassicModel

from conftest import synthetic_faces


def mixed_rows(n, seed=0, n_words=60, n_other=12):
    """Rows of a sparse 0/1 block (words that lean to the class) and a dense noisy block, and labels."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 7
    words = (rng.random((n, n_words)) < 0.05).astype(np.float32)
    for _ in range(2):
        words[np.arange(n), y * 5 + rng.integers(0, 5, n)] = 1.0  # some of the class's five words
    other = rng.normal(size=(n, n_other)).astype(np.float32)
    other[:, 0] += y * 1.5
    return sp.hstack([sp.csr_matrix(words), sp.csr_matrix(other)], format="csr"), words, other, y


def summed_kernel(words_a, other_a, words_b, other_b, scaler, pca, gamma, w):
    """w * cos(words) + (1 - w) * RBF(PCA(standardised other)), written out."""
    unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-30)  # noqa: E731
    za, zb = pca.transform(scaler.transform(other_a)), pca.transform(scaler.transform(other_b))
    squared = ((za[:, None, :] - zb[None, :, :]) ** 2).sum(axis=2)
    return w * unit(words_a.astype(np.float64)) @ unit(words_b.astype(np.float64)).T + (1 - w) * np.exp(-gamma * squared)


def test_equal_to_the_global_svm_on_the_summed_kernel_when_the_neighbours_are_the_whole_training_set():
    X, words, other, y = mixed_rows(150)
    X_test, words_test, other_test, _ = mixed_rows(30, seed=1)
    local = SumKernelLocalSVM(n_neighbors=500, linear_columns=(0, 60), linear_weight=0.4, pca_components=8,
                              C=3.0).fit(X, y)
    scaler = StandardScaler().fit(other)
    pca = PCA(8, random_state=0).fit(scaler.transform(other))
    gamma = 1 / (8 * pca.transform(scaler.transform(other)).var())
    np.testing.assert_allclose(local.gamma_, gamma, rtol=1e-5)
    gram = summed_kernel(words, other, words, other, scaler, pca, gamma, 0.4)
    global_svm = SVC(kernel="precomputed", C=3.0, break_ties=True).fit(gram, y)
    expected = global_svm.decision_function(summed_kernel(words_test, other_test, words, other, scaler, pca, gamma, 0.4))
    # the kernel factors are stored in float32
    np.testing.assert_allclose(local.decision_function(X_test), expected, atol=2e-3)
    np.testing.assert_array_equal(local.predict(X_test), global_svm.predict(
        summed_kernel(words_test, other_test, words, other, scaler, pca, gamma, 0.4)))


def test_each_row_is_classified_by_an_svm_on_its_rows_of_largest_kernel():
    X, words, other, y = mixed_rows(240)
    X_test, words_test, other_test, y_test = mixed_rows(40, seed=1)
    local = SumKernelLocalSVM(n_neighbors=40, linear_columns=(0, 60), linear_weight=0.5, pca_components=8).fit(X, y)
    scores = local.decision_function(X_test)
    assert scores.shape == (40, 7)
    np.testing.assert_array_equal(local.predict(X_test), local.classes_[np.argmax(scores, axis=1)])
    assert np.mean(local.predict(X_test) == y_test) > 0.5
    scaler = StandardScaler().fit(other)
    pca = PCA(8, random_state=0).fit(scaler.transform(other))
    query = summed_kernel(words_test, other_test, words, other, scaler, pca, local.gamma_, 0.5)
    gram = summed_kernel(words, other, words, other, scaler, pca, local.gamma_, 0.5)
    checked = 0
    for i in range(X_test.shape[0]):
        order = np.argsort(-query[i])
        if query[i, order[39]] - query[i, order[40]] < 1e-3:  # a near tie at the edge: float32 may pick either
            continue
        chosen = np.sort(order[:40])
        if len(np.unique(y[chosen])) < 3:
            continue
        svm = SVC(kernel="precomputed", C=10.0, break_ties=True).fit(gram[np.ix_(chosen, chosen)], y[chosen])
        present = np.unique(y[chosen])
        np.testing.assert_allclose(scores[i, present], svm.decision_function(query[i : i + 1, chosen])[0], atol=5e-3)
        assert np.all(np.delete(scores[i], present) < scores[i, present].min())
        checked += 1
    assert checked >= 10


def test_dense_input_weight_zero_and_weight_one_are_the_kernels_they_name():
    X, words, other, y = mixed_rows(120)
    X_test, words_test, other_test, _ = mixed_rows(20, seed=1)
    params = {"n_neighbors": 30, "linear_columns": (0, 60), "linear_weight": 0.3, "pca_components": 8}
    sparse_scores = SumKernelLocalSVM(**params).fit(X, y).decision_function(X_test)
    threaded = SumKernelLocalSVM(**params, n_jobs=2, batch_size=7).fit(X, y).decision_function(X_test)
    np.testing.assert_array_equal(threaded, sparse_scores)  # batches scored side by side, in order
    np.testing.assert_allclose(SumKernelLocalSVM(**params).fit(X.toarray(), y).decision_function(X_test.toarray()),
                               sparse_scores, atol=1e-6)
    # weight 0: the RBF kernel on the other columns alone (the words are ignored)
    rbf_only = SumKernelLocalSVM(**{**params, "linear_weight": 0.0}).fit(X, y).decision_function(X_test)
    no_words = SumKernelLocalSVM(**{**params, "linear_columns": None}).fit(other, y).decision_function(other_test)
    np.testing.assert_allclose(rbf_only, no_words, atol=1e-6)
    # weight 1: the cosine of the words alone, the same as a model given only the words
    words_only = SumKernelLocalSVM(**{**params, "linear_weight": 1.0}).fit(X, y).decision_function(X_test)
    only = SumKernelLocalSVM(**{**params, "linear_columns": (0, 60)}).fit(words, y).decision_function(words_test)
    np.testing.assert_allclose(words_only, only, atol=1e-6)
    assert not np.allclose(words_only, rbf_only)


def test_parameters_are_checked_in_fit_and_prediction_needs_fit():
    X, _, _, y = mixed_rows(30)
    with pytest.raises(NotFittedError):
        SumKernelLocalSVM().decision_function(X)
    for params, message in (({"n_neighbors": 1}, r"n_neighbors=1; must be at least 2"),
                            ({"linear_weight": 1.5}, r"linear_weight=1.5; give a weight from 0 to 1"),
                            ({"C": 0}, r"C=0; must be positive"),
                            ({"linear_columns": (0, 500)}, r"linear_columns=\(0, 500\) do not fit in 72 features")):
        with pytest.raises(ValueError, match=message):
            SumKernelLocalSVM(**params).fit(X, y)
    with pytest.raises(ValueError, match=r"X has 3 features, but SumKernelLocalSVM was fitted on 72"):
        SumKernelLocalSVM(linear_columns=(0, 60)).fit(X, y).decision_function(np.zeros((1, 3)))
    assert not hasattr(clone(SumKernelLocalSVM().fit(X, y)), "y_fit_")


def test_a_classic_model_points_the_linear_kernel_at_the_sift_words_and_saves_and_reloads(tmp_path):
    assert CLASSIFIERS["local_mkl"].grid == {"linear_weight": [0.3, 0.5, 0.7]}
    assert make_classifier("local_mkl", {"n_neighbors": 50}).n_neighbors == 50
    X, y = synthetic_faces(140)
    X_val, y_val = synthetic_faces(35, seed=1)
    words = {"vocabulary_size": 40, "fit_descriptors": 20_000, "step": 4}
    model = ClassicModel("hog+sift_words", "local_mkl", feature_params={"sift_words": words},
                         classifier_params={"n_neighbors": 40, "pca_components": 20}, memory=tmp_path / "cache")
    model.fit(X, y, validation=(X_val, y_val))
    F = model.transform(X_val)
    assert sp.issparse(F)
    n_hog = model.extractor_.transformer_list[0][1].transform(X_val[:1]).shape[1]
    assert model.estimator_.linear_columns == (n_hog, n_hog + (1 + 4 + 9 + 16) * 40)
    assert F.shape[1] == n_hog + (1 + 4 + 9 + 16) * 40
    # read back from the cache: the same sparse vectors
    again = model.transform(X_val)
    assert sp.issparse(again) and (again != F).nnz == 0
    proba = model.predict_proba(X_val)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(model.predict(X_val), np.asarray(model.classes_)[model.estimator_.predict(F)])
    assert model.score(X_val, y_val) > 0.9
    assert "_columns" in model.estimator_.__dict__  # the transposed words, kept for the next prediction
    loaded = ClassicModel.load(model.save(tmp_path / "mkl.skops"))
    assert "_columns" not in loaded.estimator_.__dict__  # and not saved: the file holds the training rows once
    np.testing.assert_array_equal(loaded.predict_proba(X_val), proba)
    np.testing.assert_array_equal(loaded.predict_proba(X_val[:1]), proba[:1])


def test_sparse_words_must_be_one_block_of_columns():
    X, y = synthetic_faces(70)
    words = {"vocabulary_size": 20, "fit_descriptors": 5_000, "step": 6}
    model = ClassicModel("sift_words+hog+sift_bovw", "local_mkl",
                         feature_params={"sift_words": words, "sift_bovw": {**words, "sparse": True}})
    with pytest.raises(ValueError, match=r"list the sparse bag-of-words features next to each other"):
        model.fit(X, y)


def test_a_classic_model_refuses_local_mkl_without_sparse_words_before_extracting(monkeypatch):
    import fer_classic.features as features_module

    def no_extraction(self, X):
        raise AssertionError("features were extracted")

    monkeypatch.setattr(features_module._FaceTransformer, "transform", no_extraction)
    X, y = synthetic_faces(20)
    for features, params in (("hog+lbp", None), ("sift_bovw+hog", None),
                             ("sift_words+hog", {"sift_words": {"sparse": False}})):
        with pytest.raises(ValueError, match=r"'local_mkl' sums a linear kernel on sparse bag-of-words features .* "
                                             r"add sift_words .* or use local_svm"):
            ClassicModel(features, "local_mkl", feature_params=params).fit(X, y)
    with pytest.raises(ValueError, match=r"'sift_words\+hog' holds sparse bag-of-words vectors \(sift_words\), which "
                                         r"only local_mkl takes; use --classifier local_mkl, or sift_bovw with 'svm'"):
        ClassicModel("sift_words+hog", "svm").fit(X, y)


def test_a_long_scoring_pass_counts_every_face_on_a_progress_bar(monkeypatch):
    """local_mkl scores a few faces a second: a pass over a test split shows how far it is."""
    import tqdm

    import fer_classic.estimators as estimators
    from fer_classic.estimators import LocalSVM

    bars = []

    class Recording(tqdm.tqdm):
        def __init__(self, *args, **kwargs):
            self.hidden = kwargs["disable"] is True  # None: shown on a terminal (forced here)
            super().__init__(*args, **{**kwargs, "disable": self.hidden})
            self.counted = 0
            bars.append(self)

        def update(self, n=1):
            self.counted += n
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Recording)
    monkeypatch.setattr(estimators, "PROGRESS_ROWS", 25)
    X, _, other, y = mixed_rows(120)
    X_test, _, other_test, _ = mixed_rows(30, seed=1)
    params = {"n_neighbors": 30, "linear_columns": (0, 60), "pca_components": 8}
    SumKernelLocalSVM(**params, n_jobs=2, batch_size=7).fit(X, y).decision_function(X_test)
    LocalSVM(n_neighbors=30, batch_size=7).fit(other, y).decision_function(other_test)
    assert [(bar.total, bar.counted, bar.hidden) for bar in bars] == [(30, 30, False), (30, 30, False)]
    bars.clear()
    SumKernelLocalSVM(**params).fit(X, y).decision_function(X_test[:20])  # a short pass shows none
    assert [(bar.total, bar.hidden) for bar in bars] == [(20, True)]
