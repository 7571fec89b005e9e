import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from fer_classic.estimators import (
    FixedSizeLSSVM,
    VectorizedSVC,
    kernel_ridge_equations,
    ovo_weights,
    rbf_kernel_rows,
    solve_kernel_ridge,
)
from fer_classic.model import ClassicModel, prepare_for_deployment, vectorize_svm_model
from conftest import CLASSES, synthetic_faces


def blobs(n, n_classes, seed, d=6):
    """Overlapping Gaussian classes: many support vectors and many tied votes."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    X = rng.normal(size=(n, d)) + 0.8 * rng.normal(size=(n_classes, d))[y]
    return X, y


# --------------------------------------------------------------------------- VectorizedSVC


def test_ovo_weights_lay_out_libsvm_coefficients_per_pair():
    # 3 classes with 1, 2, 1 support vectors; dual_coef rows are libsvm's.
    dual = np.array([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
    weights = ovo_weights(dual, np.array([1, 2, 1]))
    # pair (0,1): class 0 uses row j-1=0, class 1 uses row i=0
    # pair (0,2): class 0 uses row 1,      class 2 uses row 0
    # pair (1,2): class 1 uses row 1,      class 2 uses row 1
    expected = np.array([
        [1.0, 5.0, 0.0],
        [2.0, 0.0, 6.0],
        [3.0, 0.0, 7.0],
        [0.0, 4.0, 8.0],
    ])
    np.testing.assert_array_equal(weights, expected)


@pytest.mark.parametrize("n_classes", [2, 3, 7])
def test_vectorized_svc_predicts_exactly_as_svc(n_classes):
    X, y = blobs(500, n_classes, seed=n_classes)
    order = np.random.default_rng(0).permutation(len(y))  # libsvm meets the classes in shuffled order
    svc = SVC(C=3.0).fit(X[order], y[order])
    fast = VectorizedSVC.from_svc(svc)
    X_test, _ = blobs(3000, n_classes, seed=100 + n_classes)
    np.testing.assert_array_equal(fast.predict(X_test), svc.predict(X_test))
    np.testing.assert_allclose(fast.decision_function(X_test), svc.decision_function(X_test), atol=1e-9)


def test_vectorized_svc_breaks_tied_votes_as_libsvm():
    X, y = blobs(400, 3, seed=5)
    svc = SVC(C=1.0, decision_function_shape="ovo").fit(X, y)
    fast = VectorizedSVC.from_svc(svc)
    X_test, _ = blobs(4000, 3, seed=6)
    votes = fast._votes(fast._ovo_decision(X_test))
    tied = votes.max(axis=1) == 1  # 1-1-1: every class wins one pair
    assert tied.sum() > 5  # the test exercises ties
    np.testing.assert_array_equal(fast.predict(X_test[tied]), svc.predict(X_test[tied]))
    np.testing.assert_array_equal(fast.predict(X_test[tied]), np.zeros(tied.sum()))  # lowest index wins
    np.testing.assert_allclose(fast.decision_function(X_test), svc.decision_function(X_test), atol=1e-9)


def test_vectorized_svc_fits_like_svc_with_string_labels_and_small_blocks():
    X, y = blobs(300, 4, seed=2)
    names = np.array(["angry", "fear", "happy", "sad"])[y]
    svc = SVC(C=10.0, gamma=0.3).fit(X, names)
    fast = VectorizedSVC(C=10.0, gamma=0.3, batch_size=7).fit(X, names)
    X_test, _ = blobs(500, 4, seed=3)
    np.testing.assert_array_equal(fast.predict(X_test), svc.predict(X_test))
    assert fast.predict(X_test).dtype == svc.predict(X_test).dtype


def test_vectorized_svc_clones_pickles_and_rejects_other_kernels():
    X, y = blobs(200, 3, seed=4)
    fast = VectorizedSVC(C=2.0, batch_size=16).fit(X, y)
    again = pickle.loads(pickle.dumps(fast))
    np.testing.assert_array_equal(again.predict(X), fast.predict(X))
    assert clone(fast).get_params()["batch_size"] == 16
    rebatched = VectorizedSVC.from_svc(fast, batch_size=3)  # from a VectorizedSVC: its batch_size replaced
    assert rebatched.batch_size == 3
    np.testing.assert_array_equal(rebatched.predict(X), fast.predict(X))
    with pytest.raises(ValueError, match=r"RBF kernel only, not kernel='linear'"):
        VectorizedSVC(kernel="linear").fit(X, y)
    with pytest.raises(TypeError, match=r"expected a fitted sklearn.svm.SVC, got str"):
        VectorizedSVC.from_svc("svc")
    with pytest.raises(ValueError, match=r"expected an array \(n, 6\), got shape \(2, 5\)"):
        fast.predict(np.zeros((2, 5)))


# --------------------------------------------------------------------------- FixedSizeLSSVM


def test_rbf_kernel_rows_matches_the_definition():
    rng = np.random.default_rng(0)
    X, C = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    expected = np.exp(-0.7 * ((X[:, None, :] - C[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(rbf_kernel_rows(X, C, (C**2).sum(1), 0.7), expected, rtol=1e-12)
    assert np.all(rbf_kernel_rows(C, C, (C**2).sum(1), 0.7).diagonal() <= 1.0)


def test_folded_affine_map_equals_scaler_pca_and_global_scale():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 20)) * rng.uniform(0.1, 5, size=20) + rng.normal(size=20)
    y = rng.integers(0, 3, 300)
    model = FixedSizeLSSVM(n_components=50, pca_components=8).fit(X, y)
    Z = PCA(8, random_state=0).fit_transform(StandardScaler().fit_transform(X))
    Z /= Z.std()
    np.testing.assert_allclose(np.abs(X @ model.weights_ + model.offset_), np.abs(Z), atol=1e-8)  # PCA signs may flip
    assert model.gamma_ == pytest.approx(1.0 / 8)


@pytest.mark.parametrize("gamma", [0.01, 1.0])
def test_kernel_ridge_equations_match_a_dense_float64_computation(gamma):
    # The chunked float32 accumulation must not lose the centred Gram matrix:
    # with a small gamma the kernel is nearly constant and naive centring cancels.
    rng = np.random.default_rng(2)
    Z = rng.normal(size=(700, 5))
    y = rng.integers(0, 3, 700)
    centres = Z[:40]
    gram, rhs, k_mean, t_mean, K_mm = kernel_ridge_equations(Z, y, 3, centres, gamma, chunk=128)
    K = rbf_kernel_rows(Z, centres, (centres**2).sum(1), gamma)
    Kc = K - K.mean(0)
    Y = np.eye(3)[y]
    np.testing.assert_allclose(gram, Kc.T @ Kc, rtol=1e-4, atol=1e-6 * np.abs(Kc.T @ Kc).max())
    np.testing.assert_allclose(rhs, Kc.T @ (Y - Y.mean(0)), rtol=1e-4, atol=1e-6 * len(Z))
    np.testing.assert_allclose(k_mean, K.mean(0), rtol=1e-6)
    np.testing.assert_allclose(t_mean, Y.mean(0))
    coef, intercept = solve_kernel_ridge(gram, rhs, k_mean, t_mean, K_mm, 0.1)
    reference = np.linalg.solve(Kc.T @ Kc + 0.1 * K_mm, Kc.T @ (Y - Y.mean(0)))
    scores, expected = K @ coef + intercept, K @ reference + (Y.mean(0) - K.mean(0) @ reference)
    # The Gram matrix is accumulated from float32 kernel blocks, and with
    # gamma=0.01 the system is ill-conditioned: scores agree to ~3e-3 there.
    np.testing.assert_allclose(scores, expected, atol=1e-2)
    assert np.mean(scores.argmax(1) == expected.argmax(1)) > 0.97


def test_ls_svm_model_learns_saves_and_loads(tmp_path):
    X, y = synthetic_faces(140, seed=1)
    X_test, y_test = synthetic_faces(70, seed=2)
    model = ClassicModel("hog", "ls_svm").fit(X, y, validation=(X_test, y_test))
    assert isinstance(model.estimator_, FixedSizeLSSVM)
    assert model.calibrator_ is None  # its own softmax probabilities, no calibrator call per face
    assert model.estimator_.centres_.shape == (140, 140)  # capped at the training set and PCA limits
    predicted = model.predict(X_test)
    assert np.mean(predicted == np.asarray(CLASSES)[y_test]) > 0.8
    proba = model.predict_proba(X_test)
    assert proba.shape == (70, 7)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(CLASSES)[proba.argmax(axis=1)], predicted)
    loaded = ClassicModel.load(model.save(tmp_path / "deploy.skops"))
    np.testing.assert_array_equal(loaded.predict(X_test), predicted)
    np.testing.assert_allclose(loaded.predict_proba(X_test), proba, rtol=1e-6)
    np.testing.assert_array_equal(loaded.predict(X_test[:1]), predicted[:1])


def test_ls_svm_float64_and_float32_agree():
    X, y = blobs(400, 4, seed=7, d=30)
    single = FixedSizeLSSVM(n_components=100, pca_components=10, dtype="float32").fit(X, y)
    double = clone(single).set_params(dtype="float64").fit(X, y)
    X_test, _ = blobs(300, 4, seed=8, d=30)
    np.testing.assert_allclose(single.decision_function(X_test), double.decision_function(X_test), atol=1e-4)
    assert single.decision_function(X_test).dtype == np.float32
    # 300 rows run as two kernel blocks; each row's scores are those it gets alone.
    for row in (0, 255, 256, 299):
        np.testing.assert_allclose(single.decision_function(X_test[row : row + 1])[0],
                                   single.decision_function(X_test)[row], rtol=1e-5, atol=1e-6)


def test_ls_svm_scores_follow_the_definition():
    X, y = blobs(400, 5, seed=10, d=12)
    model = FixedSizeLSSVM(n_components=60, pca_components=6, gamma_scale=2.0, dtype="float64").fit(X, y)
    X_test, _ = blobs(300, 5, seed=11, d=12)
    Z = X_test @ model.weights_ + model.offset_
    K = np.exp(-model.gamma_ * ((Z[:, None, :] - model.centres_[None, :, :]) ** 2).sum(-1))
    expected = K @ model.dual_coef_ + model.intercept_
    np.testing.assert_allclose(model.decision_function(X_test), expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(model.decision_function(X_test[7:8]), expected[7:8], rtol=1e-9, atol=1e-12)
    assert model.dual_coef_.shape == (60, 5) and model.temperature_ > 0


def test_ls_svm_rejects_bad_parameters_and_inputs():
    X, y = blobs(100, 3, seed=9)
    with pytest.raises(ValueError, match=r"n_components=0; must be at least 1"):
        FixedSizeLSSVM(n_components=0).fit(X, y)
    with pytest.raises(ValueError, match=r"gamma_scale=-1; must be positive"):
        FixedSizeLSSVM(gamma_scale=-1).fit(X, y)
    with pytest.raises(ValueError, match=r"dtype='float16'; choose 'float32' or 'float64'"):
        FixedSizeLSSVM(dtype="float16").fit(X, y)
    with pytest.raises(ValueError, match=r"at least two classes"):
        FixedSizeLSSVM().fit(X, np.zeros(len(X), int))
    model = FixedSizeLSSVM(n_components=20).fit(X, y)
    with pytest.raises(ValueError, match=r"expected an array \(n, 6\), got shape \(6,\)"):
        model.predict(X[0])
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError, match=r"not fitted yet"):
        FixedSizeLSSVM().predict(X)


# --------------------------------------------------------------------------- converting saved models


@pytest.fixture(scope="module")
def svm_model():
    X, y = synthetic_faces(140, seed=1)
    X_val, y_val = synthetic_faces(70, seed=2)
    return ClassicModel("hog", "svm").fit(X, y, validation=(X_val, y_val))


def test_prepare_for_deployment_keeps_every_output(svm_model, tmp_path):
    X_test, _ = synthetic_faces(60, seed=3)
    fast = prepare_for_deployment(svm_model)
    assert isinstance(fast.estimator_.steps[-1][1], VectorizedSVC)
    assert fast.metadata["deployment"] == ["SVC -> VectorizedSVC"]
    assert type(svm_model.estimator_.steps[-1][1]) is SVC  # the original is untouched
    np.testing.assert_array_equal(fast.transform(X_test), svm_model.transform(X_test))
    np.testing.assert_array_equal(fast.transform(X_test[:1]), svm_model.transform(X_test[:1]))
    np.testing.assert_array_equal(fast.predict(X_test), svm_model.predict(X_test))
    # The calibrator must call the converted estimator, not a stale copy of the old one.
    assert fast.calibrator_.estimator is fast.estimator_
    np.testing.assert_allclose(fast.predict_proba(X_test), svm_model.predict_proba(X_test), atol=1e-9)
    loaded = ClassicModel.load(fast.save(tmp_path / "fast.skops"))
    np.testing.assert_array_equal(loaded.predict(X_test), svm_model.predict(X_test))


def test_deploy_command_writes_a_converted_copy(svm_model, tmp_path):
    from click.testing import CliRunner

    from fer_bench.cli import cli

    source = svm_model.save(tmp_path / "svm.skops")
    done = CliRunner().invoke(cli, ["deploy", str(source), str(tmp_path / "out.skops")])
    assert done.exit_code == 0, done.output
    assert "SVC -> VectorizedSVC" in done.stderr
    loaded = ClassicModel.load(tmp_path / "out.skops")
    assert type(loaded.estimator_.named_steps["svc"]).__module__ == "fer_classic.estimators"
    X_test, _ = synthetic_faces(20, seed=4)
    np.testing.assert_array_equal(loaded.predict(X_test), svm_model.predict(X_test))
    missing = CliRunner().invoke(cli, ["deploy", str(tmp_path / "missing.skops"), str(tmp_path / "x.skops")])
    assert missing.exit_code == 1
    assert "no such model file" in missing.stderr
    assert "Traceback" not in missing.output


def test_vectorize_refuses_models_without_an_rbf_svc():
    X, y = synthetic_faces(70, seed=1)
    forest = ClassicModel("hog", "rf", classifier_params={"n_estimators": 5}).fit(X, y)
    with pytest.raises(ValueError, match=r"the model's classifier is RandomForestClassifier, not an RBF SVC"):
        vectorize_svm_model(forest)
    with pytest.raises(ValueError, match=r"the model is not fitted yet"):
        vectorize_svm_model(ClassicModel("hog", "svm"))

