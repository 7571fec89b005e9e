import pickle

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.pipeline import FeatureUnion
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from fer_classic.features import (
    FEATURES,
    HOGFeatures,
    LandmarkFeatures,
    LBPFeatures,
    face_landmarks,
    hog_features,
    landmark_features,
    lbp_bins,
    lbp_histogram,
    make_features,
    normalised_landmark_features,
    parse_feature_spec,
)
from conftest import synthetic_faces


def edge_image(vertical: bool) -> np.ndarray:
    image = np.zeros((48, 48), np.uint8)
    if vertical:
        image[:, 24:] = 255
    else:
        image[24:, :] = 255
    return image


@pytest.mark.parametrize("engine", ["skimage", "opencv"])
def test_hog_output_length(engine):
    # 48/6 = 8 cells, 7x7 blocks of 2x2 cells, 12 bins by default: 7*7*2*2*12
    assert hog_features(np.zeros((48, 48), np.uint8), engine=engine).shape == (2352,)
    assert hog_features(np.zeros((48, 48), np.uint8), engine=engine, orientations=9).shape == (1764,)


def test_hog_of_an_edge_puts_the_energy_in_the_edge_orientation():
    # One cell, one block, L1 norm: the histogram sums to 1.  A vertical edge has a
    # horizontal gradient (0 degrees, bin 0); a horizontal edge 90 degrees (bin 4 of 9).
    params = dict(orientations=9, pixels_per_cell=(48, 48), cells_per_block=(1, 1), block_norm="L1", engine="skimage")
    vertical = hog_features(edge_image(True), **params)
    horizontal = hog_features(edge_image(False), **params)
    np.testing.assert_allclose(vertical, np.eye(9)[0], atol=1e-3)
    np.testing.assert_allclose(horizontal, np.eye(9)[4], atol=1e-3)


def test_opencv_hog_agrees_on_the_dominant_orientation():
    descriptor = hog_features(edge_image(True), engine="opencv", orientations=9).reshape(-1, 9)
    assert np.argmax(descriptor.sum(axis=0)) == 0


def test_lbp_of_a_flat_image_counted_by_hand():
    # Inside a flat image every neighbour equals the centre, so all 8 bits are 1:
    # uniform code 8, for the 46x46 interior pixels.  On the border the neighbours
    # outside the image read as 0: an edge pixel keeps 5 ones (code 5, 4*46 = 184
    # pixels), a corner pixel 3 ones (code 3, 4 pixels).
    hist = lbp_histogram(np.full((48, 48), 77, np.uint8), points=8, radius=1, grid=(1, 1))  # one radius
    assert hist.shape == (lbp_bins(8, "uniform"),)
    expected = np.zeros(10)
    expected[[8, 5, 3]] = [46 * 46, 184, 4]
    np.testing.assert_allclose(hist, expected / (48 * 48), rtol=1e-6)
    quarters = lbp_histogram(np.full((48, 48), 77, np.uint8), radius=1, grid=(2, 2)).reshape(4, 10)
    np.testing.assert_allclose(quarters.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(quarters[:, 8] == quarters[0, 8])  # the four quarters are mirror images


def test_lbp_multi_radius_and_methods():
    face = synthetic_faces(1)[0][0]
    assert lbp_histogram(face, radius=(1, 2, 3), grid=(3, 3)).shape == (3 * 9 * 10,)
    assert lbp_histogram(face, points=8, radius=1, method="nri_uniform", grid=(1, 1)).shape == (59,)
    assert lbp_histogram(face, points=(8, 16), radius=(1, 2), grid=(1, 1)).shape == (10 + 18,)
    assert np.isclose(lbp_histogram(face, radius=1, grid=(1, 1)).sum(), 1.0)


def test_lbp_unknown_method_is_refused():
    with pytest.raises(ValueError, match=r"method='var'; choose one of uniform"):
        LBPFeatures(method="var").fit(np.zeros((2, 48, 48), np.uint8))


def test_landmark_normalisation_puts_the_eyes_at_plus_minus_half():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 48, size=(68, 2))
    points[36:42] = (10, 20)  # right eye (image left)
    points[42:48] = (30, 20)
    features = normalised_landmark_features(points)
    p = features[:136].reshape(68, 2)
    np.testing.assert_allclose(p[36:42].mean(axis=0), [-0.5, 0], atol=1e-6)
    np.testing.assert_allclose(p[42:48].mean(axis=0), [0.5, 0], atol=1e-6)
    # invariant to a shift, a scale and a roll of the whole face
    angle = np.deg2rad(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    moved = (points @ rotation.T) * 1.7 + (5, -3)
    np.testing.assert_allclose(normalised_landmark_features(moved), features, atol=1e-4)
    # mouth width measure: distance 48-54 over the inter-ocular distance 20
    assert features[136] == pytest.approx(np.linalg.norm(points[48] - points[54]) / 20, rel=1e-5)


def test_landmarks_on_a_real_face_lie_inside_the_crop(fer2013):
    face = fer2013.train.X[fer2013.train.y == 3][0]  # a happy face
    points = face_landmarks(face)
    assert points.shape == (68, 2)
    assert points.min() >= 0 and points.max() <= 47
    # anatomy: eyes above the nose tip above the mouth above the chin
    assert points[36:48, 1].mean() < points[33, 1] < points[48:68, 1].mean() < points[8, 1]
    assert landmark_features(face).shape == (150,)


def test_landmark_predictor_is_not_pickled():
    transformer = LandmarkFeatures().fit(np.zeros((1, 48, 48), np.uint8))
    assert len(pickle.dumps(transformer)) < 2000  # the 99 MB predictor stays out


@pytest.mark.parametrize("cls", list(FEATURES.values()))
def test_transformer_api(cls):
    name = cls.__name__
    check_no_attributes_set_in_init(name, cls())
    check_parameters_default_constructible(name, cls())
    check_get_params_invariance(name, cls())
    check_set_params(name, cls())
    X, _ = synthetic_faces(6)
    params = {"vocabulary_size": 400} if name == "SiftWordsFeatures" else {}  # 4,000 words need more faces
    dense = lambda out: out.toarray() if sp.issparse(out) else out  # noqa: E731
    fitted = cls(**params).fit(X)
    out = dense(fitted.transform(X))
    assert out.shape == (6, fitted.n_features_out_) and out.dtype == np.float32
    copy = clone(fitted)
    assert not hasattr(copy, "face_shape_") and copy.get_params() == fitted.get_params()
    np.testing.assert_array_equal(dense(pickle.loads(pickle.dumps(fitted)).transform(X)), out)
    np.testing.assert_array_equal(dense(cls(**params).fit_transform(X)), out)


def test_transform_before_fit_and_bad_shapes():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        HOGFeatures().transform(np.zeros((1, 48, 48)))
    with pytest.raises(ValueError, match=r"wrap a single face as X\[None\]"):
        HOGFeatures().fit(np.zeros((48, 48)))
    with pytest.raises(ValueError, match=r"fitted on \(48, 48\)"):
        HOGFeatures().fit(np.zeros((1, 48, 48))).transform(np.zeros((1, 36, 36)))
    with pytest.raises(ValueError, match=r"engine='opencv' supports block_norm='L2-Hys' only"):
        HOGFeatures(engine="opencv", block_norm="L1").fit(np.zeros((1, 48, 48)))


def test_parallel_transform_matches_serial():
    X, _ = synthetic_faces(2100)
    np.testing.assert_array_equal(LBPFeatures(n_jobs=2).fit(X).transform(X), LBPFeatures().fit(X).transform(X))


def test_feature_spec_parsing_and_union():
    assert parse_feature_spec("HOG + lbp") == ["hog", "lbp"]
    with pytest.raises(ValueError, match=r"unknown feature 'sift'; choose from hog, lbp, landmarks"):
        parse_feature_spec("hog+sift")
    with pytest.raises(ValueError, match="feature named twice"):
        parse_feature_spec("hog+hog")
    union = make_features("hog+lbp", {"hog": {"orientations": 12}})
    assert isinstance(union, FeatureUnion) and union.transformer_list[0][1].orientations == 12
    X, _ = synthetic_faces(3)
    out = union.fit(X).transform(X)
    assert out.shape == (3, 1764 // 9 * 12 + 3 * 360)
    with pytest.raises(ValueError, match=r"parameters given for \['lbp'\]"):
        make_features("hog", {"lbp": {}})
