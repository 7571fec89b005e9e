import json

import numpy as np
import pytest

import fer_classic.features as features_module
from fer_bench.experiment.harness import FeatureCache, cell_id, flip_faces, load_predictions, resolved_feature_params, run_classic_cell
from fer_classic.features import make_features
from fer_classic.model import ClassicModel
from conftest import synthetic_faces


@pytest.fixture
def counted_extractions(monkeypatch):
    calls = []
    original = features_module.make_features

    def counting(spec, params=None, n_jobs=None):
        calls.append(spec)
        return original(spec, params, n_jobs)

    monkeypatch.setattr(features_module, "make_features", counting)
    return calls


def test_feature_cache_extracts_once_and_combines_like_feature_union(tmp_path, counted_extractions):
    X, _ = synthetic_faces(20)
    cache = FeatureCache(tmp_path / "features", n_jobs=None)
    first = cache.transform("hog+lbp", {}, X)
    assert counted_extractions == ["hog", "lbp"]
    again = FeatureCache(tmp_path / "features", n_jobs=None).transform("hog+lbp", {}, X)  # a new process would
    hog_only = cache.transform("hog", {}, X)
    assert counted_extractions == ["hog", "lbp"]  # nothing extracted twice
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, original_union(X))
    np.testing.assert_array_equal(hog_only, first[:, : hog_only.shape[1]])
    cache.transform("hog", {"hog": {"orientations": 9}}, X)
    assert counted_extractions == ["hog", "lbp", "hog"]  # other parameters, other entry


def original_union(X):
    return make_features("hog+lbp").fit(X).transform(X)


def test_cache_key_spells_out_defaults():
    # a default that changes must change the key, so old features are not reused
    assert resolved_feature_params("hog", {}) == resolved_feature_params("hog", {"orientations": 12})
    assert json.loads(resolved_feature_params("lbp", {"radius": 2}))["radius"] == 2
    assert resolved_feature_params("hog", {}) != resolved_feature_params("hog", {"engine": "skimage"})


def test_cell_ids():
    assert cell_id("HOG+lbp", "svm") == "hog+lbp__svm"
    assert cell_id("hog", "svm", flip=True) == "hog__svm__flip"


def test_flip_faces_mirrors_columns():
    X = np.arange(2 * 48 * 48, dtype=np.uint8).reshape(2, 48, 48)
    assert np.array_equal(flip_faces(X)[:, :, 0], X[:, :, -1])


def test_classic_cell_selects_on_validation_and_scores_on_test(kaggle_dir, tmp_path):
    from fer_bench.data import load_dataset

    dataset = load_dataset(kaggle_dir, cache_dir=False)
    record = run_classic_cell(dataset, "hog", "dt", tmp_path, flip=True, cache=FeatureCache(tmp_path / "c"),
                              log=lambda message: None)
    assert record["cell"] == "hog__dt__flip" and record["n_train"] == 42  # 21 faces and their mirror images
    best = max(record["selection"], key=lambda s: s["validation_accuracy"])
    assert record["classifier_params"] == best["params"]
    assert record["validation_accuracy"] == best["validation_accuracy"]
    predictions = load_predictions(record["predictions_path"])
    np.testing.assert_array_equal(predictions["y_true"], dataset.test.y)
    assert record["accuracy"] == pytest.approx(np.mean(predictions["y_pred"] == predictions["y_true"]))
    assert predictions["proba"].shape == (21, 7)
    model = ClassicModel.load(record["model_path"])
    assert model.metadata["selection"] == record["selection"]
    assert model.metadata["split"]["test"] == "PrivateTest"
    np.testing.assert_array_equal(model.predict(dataset.test.X), np.asarray(dataset.classes)[predictions["y_pred"]])
    assert json.loads((tmp_path / "records" / "hog__dt__flip.json").read_text())["accuracy"] == record["accuracy"]


def test_isolated_timing_runs_the_saved_model_in_its_own_process(monkeypatch):
    import sys

    from fer_bench.experiment import harness

    X, y = synthetic_faces(60, seed=2)
    model = ClassicModel("hog", "dt").fit(X, y)
    timing = harness.time_prediction_isolated(model, X, batch=20, singles=5)
    assert timing["predict_threads"] == "one, own process"
    assert timing["predict_ms_per_face"] > 0 and timing["predict_ms_single"] > 0
    # If the process cannot run, the figure is still taken here, and marked as such.
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    fallback = harness.time_prediction_isolated(model, X, batch=20, singles=5)
    assert fallback["predict_threads"] == "not limited"
    assert "/nonexistent/python" in fallback["predict_timing_error"]
    assert fallback["predict_ms_per_face"] > 0
