"""Dense SIFT bag of visual words: the grid, the descriptors, the histograms, the vocabulary and its cache key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from fer_classic.features import FEATURES, make_features, transform_faces
from fer_classic.model import ClassicModel
from fer_classic.sift import (
    SiftBovwFeatures,
    SiftWordsFeatures,
    bovw_histograms,
    dense_keypoints,
    dense_sift,
    grid_centres,
    nearest_words,
    pyramid_cells,
)

from conftest import synthetic_faces

SMALL = {"vocabulary_size": 12, "fit_descriptors": 5000}


def test_grid_is_centred_and_every_size_is_at_every_centre():
    np.testing.assert_array_equal(grid_centres(48, 4), 1.5 + 4 * np.arange(12))
    np.testing.assert_array_equal(grid_centres(48, 6), 2.5 + 6 * np.arange(8))
    keypoints, centres = dense_keypoints((48, 48), step=4, bin_sizes=(4, 6))
    assert len(keypoints) == len(centres) == 2 * 144
    # OpenCV's spatial bin is 1.5 keypoint sizes: a 4-pixel bin is a keypoint of size 8/3
    assert {round(k.size, 6) for k in keypoints[:144]} == {round(8 / 3, 6)}
    assert {k.size for k in keypoints[144:]} == {4.0}
    assert {k.angle for k in keypoints} == {0.0}
    np.testing.assert_array_equal(centres[:144], centres[144:])
    assert keypoints[1].pt == (5.5, 1.5)  # row by row: x varies first


def test_a_flat_face_has_zero_descriptors_and_a_textured_one_does_not():
    flat = dense_sift(np.full((48, 48), 128, np.uint8), step=4, bin_sizes=(4, 6))
    assert flat.shape == (288, 128) and flat.dtype == np.float32
    assert not flat.any()  # no gradient anywhere
    X, _ = synthetic_faces(1)
    textured = dense_sift(X[0], step=4, bin_sizes=(4,))
    assert textured.shape == (144, 128) and (textured.max(axis=1) > 0).all()


def test_a_vertical_edge_puts_every_gradient_in_one_orientation():
    face = np.zeros((48, 48), np.uint8)
    face[:, 24:] = 200
    descriptor = dense_sift(face, step=4, bin_sizes=(4,))
    keypoints, centres = dense_keypoints((48, 48), step=4, bin_sizes=(4,))
    on_edge = descriptor[np.argmin(np.abs(centres[:, 0] - 23.5) + np.abs(centres[:, 1] - 25.5))]
    orientation_totals = on_edge.reshape(16, 8).sum(axis=0)  # 4 x 4 spatial bins of 8 orientations
    assert orientation_totals[0] == orientation_totals.max() and orientation_totals[1:].sum() < 0.01 * orientation_totals[0]


def test_sigma_is_the_blur_the_gradients_are_taken_from():
    import cv2

    X, _ = synthetic_faces(3)
    for face in X:
        default = dense_sift(face, step=4, bin_sizes=(4,))
        np.testing.assert_array_equal(dense_sift(face, step=4, bin_sizes=(4,), sigma=1.6), default)
        # sigma=0.5 adds a blur of 0.1 only: blurring the face first by the rest of OpenCV's 1.6 gives the
        # default descriptors back, up to the rounding of the blurred face to 8 bits
        rest = np.sqrt(1.6**2 - 0.5**2 - 0.1**2)
        blurred = np.clip(np.rint(cv2.GaussianBlur(face.astype(np.float32), (0, 0), rest)), 0, 255).astype(np.uint8)
        assert np.abs(dense_sift(blurred, step=4, bin_sizes=(4,), sigma=0.5) - default).mean() < 3
        assert np.abs(dense_sift(face, step=4, bin_sizes=(4,), sigma=0.5) - default).mean() > 10


def test_a_model_saved_without_sigma_computes_with_opencvs_default():
    X, _ = synthetic_faces(20)
    fitted = SiftBovwFeatures(**SMALL).fit(X)
    expected = fitted.transform(X[:3])
    del fitted.__dict__["sigma"]  # the state of a transformer saved before sigma was a parameter
    assert fitted.get_params()["sigma"] == 1.6
    np.testing.assert_array_equal(fitted.transform(X[:3]), expected)


def test_pyramid_cells_split_the_grid_evenly():
    _, centres = dense_keypoints((48, 48), step=4, bin_sizes=(4,))
    whole, halves, quarters = pyramid_cells(centres, (48, 48), (1, 2, 4))
    assert not whole.any()
    np.testing.assert_array_equal(np.bincount(halves), [36] * 4)
    np.testing.assert_array_equal(np.bincount(quarters), [9] * 16)
    assert halves[0] == 0 and halves[11] == 1 and halves[-1] == 3  # top left, top right, bottom right


def test_presence_and_counts_on_a_constructed_face():
    # 4 keypoints: level 1 one cell, level 2 one keypoint per cell; 3 words
    cells = [np.zeros(4, int), np.arange(4)]
    words = np.array([[1, 1, 1, 2], [0, 0, 0, 0]])
    counts = bovw_histograms(words, cells, (1, 2), 3, encoding="counts", norm="none")
    presence = bovw_histograms(words, cells, (1, 2), 3, encoding="presence", norm="none")
    assert counts.shape == presence.shape == (2, 3 + 4 * 3)
    np.testing.assert_array_equal(counts[0, :3], [0, 3, 1])
    np.testing.assert_array_equal(presence[0, :3], [0, 1, 1])
    np.testing.assert_array_equal(counts[0, 3:], [0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1])  # one word per cell
    np.testing.assert_array_equal(presence[0, 3:], counts[0, 3:])
    np.testing.assert_array_equal(counts[1, :3], [4, 0, 0])
    l1 = bovw_histograms(words, cells, (1, 2), 3, encoding="counts", norm="l1", level_weights=(1.0, 0.5))
    np.testing.assert_allclose(l1[0, :3], [0, 0.75, 0.25])
    np.testing.assert_allclose(l1[0, 3:], counts[0, 3:] / 4 * 0.5)
    l2 = bovw_histograms(words, cells, (1, 2), 3, encoding="presence", norm="l2")
    np.testing.assert_allclose(l2[0, :3], [0, 2**-0.5, 2**-0.5], rtol=1e-6)


@pytest.mark.parametrize("encoding,norm,feature_map", [("presence", "l2", "none"), ("counts", "l1", "sqrt"),
                                                       ("counts", "none", "none")])
def test_sparse_vectors_hold_the_dense_values(encoding, norm, feature_map):
    X, _ = synthetic_faces(20)
    params = {**SMALL, "levels": (1, 2, 3), "encoding": encoding, "norm": norm, "feature_map": feature_map}
    dense = SiftBovwFeatures(**params).fit(X)
    sparse = SiftBovwFeatures(**params, sparse=True).fit(X)
    np.testing.assert_array_equal(sparse.vocabulary_, dense.vocabulary_)
    out = sparse.transform(X[:6])
    assert sp.issparse(out) and out.dtype == np.float32 and out.shape == (6, 14 * 12)
    np.testing.assert_allclose(out.toarray(), dense.transform(X[:6]), rtol=1e-6)
    with pytest.raises(ValueError, match=r"feature_map='chi2' gives dense vectors"):
        SiftBovwFeatures(**SMALL, feature_map="chi2", sparse=True).fit(X)


def test_sift_words_is_the_published_setting_and_each_level_is_a_unit_vector():
    words = SiftWordsFeatures()
    assert (words.step, words.sigma, words.vocabulary_size, words.levels, words.encoding, words.norm,
            words.feature_map, words.sparse) == (2, 0.8, 4000, (1, 2, 3, 4), "presence", "l2", "none", True)
    assert FEATURES["sift_words"] is SiftWordsFeatures
    X, _ = synthetic_faces(20)
    fitted = SiftWordsFeatures(vocabulary_size=30, fit_descriptors=3000).fit(X)
    out = fitted.transform(X[:3])
    assert dense_keypoints((48, 48), step=2)[1].shape == (576, 2)
    assert out.shape == (3, 30 * 30)
    blocks = np.split(out.toarray(), np.cumsum([30 * g * g for g in (1, 2, 3)]), axis=1)
    for block in blocks:  # 1 on each present word of a level, divided by the level's norm
        np.testing.assert_allclose(np.linalg.norm(block, axis=1), 1.0, rtol=1e-6)
        assert len(np.unique(np.round(block[0][block[0] > 0], 6))) == 1


def test_nearest_words():
    vocabulary = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    np.testing.assert_array_equal(nearest_words(np.array([[1, 1], [9, 2], [-1, 30]]), vocabulary), [0, 1, 2])


def test_vector_length_and_a_flat_face_lands_on_one_word():
    X, _ = synthetic_faces(20)
    for levels, feature_map, per_bin in (((1, 2, 4), "none", 1), ((1, 2), "chi2", 3), ((1,), "sqrt", 1)):
        transformer = SiftBovwFeatures(levels=levels, feature_map=feature_map, **SMALL).fit(X)
        out = transformer.transform(X[:3])
        assert out.shape == (3, sum(g * g for g in levels) * 12 * per_bin) == (3, transformer.n_features_out_)
    transformer = SiftBovwFeatures(levels=(1, 2), feature_map="none", norm="l1", **SMALL).fit(X)
    flat = transformer.transform(np.full((1, 48, 48), 90, np.uint8))[0]
    zero_word = np.argmin((transformer.vocabulary_**2).sum(axis=1))  # every descriptor of a flat face is zero
    expected = np.zeros(12)
    expected[zero_word] = 1
    np.testing.assert_array_equal(flat[:12], expected)
    np.testing.assert_array_equal(flat[12:], np.tile(expected, 4) / 4)  # l1 over the level's four cells together


def test_the_vocabulary_comes_from_the_faces_it_is_fitted_on_and_is_seeded():
    X, _ = synthetic_faces(20)
    other = 255 - X
    first = SiftBovwFeatures(**SMALL).fit(X)
    np.testing.assert_array_equal(SiftBovwFeatures(**SMALL).fit(X).vocabulary_, first.vocabulary_)
    assert first.vocabulary_.shape == (12, 128) and first.vocabulary_.dtype == np.float32
    assert not np.array_equal(SiftBovwFeatures(**SMALL).fit(other).vocabulary_, first.vocabulary_)
    assert not np.array_equal(SiftBovwFeatures(**SMALL, random_state=1).fit(X).vocabulary_, first.vocabulary_)
    assert first.training_digest_ != SiftBovwFeatures(**SMALL).fit(other).training_digest_
    assert not hasattr(clone(first), "vocabulary_")


def test_parameters_are_checked_in_fit():
    X, _ = synthetic_faces(2)
    for params, message in (
        ({"encoding": "binary"}, r"encoding='binary'; choose presence or counts"),
        ({"levels": (1, 2), "level_weights": (1,)}, r"one weight per level"),
        ({"feature_map": "rbf"}, r"feature_map='rbf'"),
        ({"vocabulary_size": 1000}, r"a vocabulary of 1000 words needs at least 1000 descriptors; 2 faces give 288"),
        ({"sigma": 0}, r"sigma=0; give the blur in pixels, above 0"),
    ):
        transformer = SiftBovwFeatures(**params)
        with pytest.raises(ValueError, match=message):
            transformer.fit(X)


def test_registered_and_combined_with_the_other_features():
    assert FEATURES["sift_bovw"] is SiftBovwFeatures
    X, _ = synthetic_faces(20)
    union = make_features("sift_bovw+hog", {"sift_bovw": SMALL}).fit(X)
    out = union.transform(X[:4])
    sift_part = union.transformer_list[0][1]
    np.testing.assert_array_equal(out[:, : sift_part.n_features_out_], sift_part.transform(X[:4]))


def test_the_feature_cache_keys_on_the_training_faces_and_the_vocabulary(tmp_path):
    X, _ = synthetic_faces(20)
    memory = tmp_path / "features"
    first = SiftBovwFeatures(**SMALL).fit(X)
    cached = transform_faces(first, X, memory=memory)
    np.testing.assert_array_equal(cached, first.transform(X))
    # fitted on other faces, same parameters: its own vectors, not the cached ones
    other = SiftBovwFeatures(**SMALL).fit(255 - X)
    np.testing.assert_array_equal(transform_faces(other, X, memory=memory), other.transform(X))
    assert not np.array_equal(other.transform(X), cached)
    entries = list(memory.rglob("*.npz"))
    assert len(entries) == 2
    # fitted again on the same faces: the cache answers
    np.testing.assert_array_equal(transform_faces(SiftBovwFeatures(**SMALL).fit(X), X, memory=memory), cached)
    assert len(list(memory.rglob("*.npz"))) == 2
    state = json.loads(first.fitted_state_digest())
    assert set(state) == {"training_faces", "vocabulary"}


def test_vocabulary_saved_with_the_model_and_reloaded_identically(tmp_path):
    X, y = synthetic_faces(70)
    model = ClassicModel("sift_bovw", "svm", feature_params={"sift_bovw": SMALL}, classifier_params={"pca_components": 20})
    model.fit(X, y)
    path = model.save(tmp_path / "model.skops")
    loaded = ClassicModel.load(path)
    np.testing.assert_array_equal(loaded.extractor_.vocabulary_, model.extractor_.vocabulary_)
    np.testing.assert_array_equal(loaded.transform(X[:10]), model.transform(X[:10]))
    np.testing.assert_array_equal(loaded.predict_proba(X[:10]), model.predict_proba(X[:10]))
    assert model.score(X, y) > 0.9  # the class bar is visible to SIFT


def test_a_sift_bovw_cell_runs_from_the_cli_and_its_vocabulary_comes_from_training(kaggle_dir, tmp_path):
    from click.testing import CliRunner

    from fer_bench.cli import cli
    from fer_bench.data import load_dataset
    from fer_classic.sift import faces_digest

    args = ["run", "--features", "sift_bovw", "--classifier", "svm", "--feature-param", "sift_bovw.vocabulary_size=30",
            "--data", str(kaggle_dir), "--out", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "records" / "sift_bovw__svm.json").read_text())
    assert record["status"] == "ok" and record["n_features"] == 21 * 30 and record["n_test"] == 21
    assert record["feature_params"] == {"sift_bovw": {"vocabulary_size": 30}}
    model = ClassicModel.load(tmp_path / "out" / record["model_path"])
    dataset = load_dataset(kaggle_dir, cache_dir=tmp_path / "cache")
    assert model.extractor_.training_digest_ == faces_digest(dataset.train.X)  # Training only
    np.testing.assert_array_equal(np.argmax(model.predict_proba(dataset.test.X), axis=1),
                                  np.load(tmp_path / "out" / record["predictions_path"])["y_pred"])
