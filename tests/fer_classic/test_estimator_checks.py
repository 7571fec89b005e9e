"""scikit-learn's estimator checks on fer_classic's own estimators and transformers.

``parametrize_with_checks`` runs every check that applies; the checks listed
in :data:`NOT_APPLICABLE` fail by design, and each says why.  The feature
transformers take stacks of faces ``(n, h, w)``, not the 2-D tables the
generic checks generate, so for them the shape-independent checks run
explicitly, on faces.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    parametrize_with_checks,
)

from fer_classic.estimators import FixedSizeLSSVM, SoftmaxCalibrator, SumKernelLinearSVM, SumKernelLocalSVM
from fer_classic.features import FEATURES
from conftest import synthetic_faces

PREDICTS_WITHOUT_VALIDATION = (
    "prediction checks only the input's shape, not its values or dtype: scikit-learn's validation costs more than "
    "predicting one face (see FixedSizeLSSVM's docstring)"
)
ONE_SCORE_PER_CLASS = (
    "decision_function returns one score per class for two classes too (n, 2), not scikit-learn's binary (n,) "
    "margin; fer-bench fits it on seven classes"
)
NOT_APPLICABLE = {
    "FixedSizeLSSVM": {
        "check_n_features_in_after_fitting": PREDICTS_WITHOUT_VALIDATION,
        "check_estimators_nan_inf": PREDICTS_WITHOUT_VALIDATION,
        "check_classifiers_classes": ONE_SCORE_PER_CLASS,
        "check_classifiers_train": ONE_SCORE_PER_CLASS,
        "check_decision_proba_consistency": ONE_SCORE_PER_CLASS,
    },
}


def expected_failed_checks(estimator):
    return NOT_APPLICABLE.get(type(estimator).__name__, {})


# float64: in float32, one row (a matrix-vector product) and a batch (a matrix product) round differently
# in the 7th digit, past check_methods_subset_invariance's tolerance.
@parametrize_with_checks([FixedSizeLSSVM(n_components=50, dtype="float64")],
                         expected_failed_checks=expected_failed_checks)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


# SoftmaxCalibrator calibrates a classifier fitted beforehand (as CalibratedClassifierCV's prefit
# or FrozenEstimator do), so the generic checks, which fit it on data of their own making without
# fitting the wrapped classifier first, do not apply; the API checks do.
def calibrator():
    return SoftmaxCalibrator(LinearSVC())


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance, check_set_params])
def test_softmax_calibrator_api(check):
    check("SoftmaxCalibrator", calibrator())


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance, check_set_params,
                                   check_parameters_default_constructible])
def test_sum_kernel_local_svm_api(check):
    check("SumKernelLocalSVM", SumKernelLocalSVM())


@pytest.mark.parametrize("check", [check_no_attributes_set_in_init, check_get_params_invariance, check_set_params,
                                   check_parameters_default_constructible])
def test_sum_kernel_linear_svm_api(check):
    check("SumKernelLinearSVM", SumKernelLinearSVM())


def test_softmax_calibrator_fits_clones_and_refuses_to_predict_unfitted():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4)) + np.repeat(np.eye(3, 4) * 3, 30, axis=0)
    y = np.repeat(["a", "b", "c"], 30)
    svm = LinearSVC().fit(X, y)
    with pytest.raises(NotFittedError):
        SoftmaxCalibrator(svm).predict_proba(X)
    fitted = SoftmaxCalibrator(svm).fit(X, y)
    assert fitted.fit(X, y) is fitted
    assert not hasattr(clone(fitted), "temperature_") and not hasattr(clone(fitted).estimator, "coef_")
    proba = fitted.predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fitted.predict(X), fitted.estimator.predict(X))
    held_out = y.copy()
    held_out[1::7] = "a"  # rows the classifier gets wrong: the accuracy kept is that of its decisions
    accuracy = SoftmaxCalibrator(svm).fit(X, held_out).accuracy_
    assert accuracy == np.mean(svm.predict(X) == held_out) < 1


@pytest.mark.parametrize("cls", FEATURES.values(), ids=list(FEATURES))
def test_feature_transformers_checks_on_faces(cls):
    name = cls.__name__
    check_no_attributes_set_in_init(name, cls())
    check_parameters_default_constructible(name, cls())
    check_get_params_invariance(name, cls())
    check_set_params(name, cls())
    if cls.__name__ == "LandmarkFeatures":
        pytest.importorskip("dlib")
    X, _ = synthetic_faces(6)
    # sift_words' 4,000 words need more descriptors than six faces hold
    transformer = cls(vocabulary_size=400) if name == "SiftWordsFeatures" else cls()
    with pytest.raises(NotFittedError):
        transformer.transform(X)
    before = dict(transformer.__dict__)
    assert transformer.fit(X) is transformer and set(before) <= set(transformer.__dict__)
    assert all(key.endswith("_") for key in set(transformer.__dict__) - set(before))  # learned attributes end in _
    dense = lambda out: out.toarray() if sp.issparse(out) else out  # noqa: E731
    out = dense(transformer.transform(X))
    state = dict(transformer.__dict__)
    np.testing.assert_array_equal(dense(transformer.fit(X).transform(X)), out)  # fit is idempotent
    np.testing.assert_array_equal(dense(transformer.transform(X[::-1])), out[::-1])  # rows are independent
    np.testing.assert_array_equal(dense(clone(transformer).fit_transform(X)), out)
    assert transformer.__dict__.keys() == state.keys()  # transform leaves the object as it was
