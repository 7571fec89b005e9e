import json

import numpy as np
import pytest

import fer_classic.features as features_module
from sklearn.base import clone

from fer_bench.experiment.harness import cell_id, flip_faces, load_predictions, run_classic_cell
from fer_classic.features import make_features, resolved_feature_params, transform_faces
from fer_classic.model import ClassicModel
from conftest import synthetic_faces


@pytest.fixture
def counted_extractions(monkeypatch):
    """The features whose extraction ran, in order (a cache hit runs none)."""
    calls = []
    original = features_module._FaceTransformer.transform

    def counting(self, X):
        calls.append(type(self).__name__)
        return original(self, X)

    monkeypatch.setattr(features_module._FaceTransformer, "transform", counting)
    return calls


def test_feature_cache_extracts_once_and_combines_like_feature_union(tmp_path, counted_extractions):
    X, _ = synthetic_faces(20)
    union = make_features("hog+lbp").fit(X)
    first = transform_faces(union, X, memory=tmp_path / "features")
    assert counted_extractions == ["HOGFeatures", "LBPFeatures"]
    again = transform_faces(make_features("hog+lbp").fit(X), X, memory=str(tmp_path / "features"))
    hog_only = transform_faces(make_features("hog").fit(X), X, memory=tmp_path / "features", n_jobs=2)
    assert counted_extractions == ["HOGFeatures", "LBPFeatures"]  # nothing extracted twice; n_jobs is not in the key
    np.testing.assert_array_equal(first, again)
    counted_extractions.clear()
    np.testing.assert_array_equal(first, union.transform(X))
    np.testing.assert_array_equal(hog_only, first[:, : hog_only.shape[1]])
    transform_faces(make_features("hog", {"hog": {"orientations": 9}}).fit(X), X, memory=tmp_path / "features")
    transform_faces(make_features("hog").fit(X), X[:10], memory=tmp_path / "features")
    assert counted_extractions == ["HOGFeatures", "LBPFeatures", "HOGFeatures", "HOGFeatures"]  # other params, faces


def test_a_model_with_memory_reads_its_features_from_the_cache(tmp_path, counted_extractions):
    X, y = synthetic_faces(28)
    model = ClassicModel("hog", "knn", classifier_params={"n_neighbors": 3}, memory=tmp_path / "f").fit(X, y)
    refit = clone(model).fit(X, y)
    assert counted_extractions == ["HOGFeatures"]
    np.testing.assert_array_equal(refit.predict_proba(X), model.set_params(memory=None).predict_proba(X))
    assert counted_extractions == ["HOGFeatures", "HOGFeatures"]  # memory=None: extracted again
    model.set_params(memory=tmp_path / "f")
    assert ClassicModel.load(model.save(tmp_path / "m.skops")).memory is None  # a cache stays on its machine
    assert model.memory == tmp_path / "f"


def test_cache_key_spells_out_defaults():
    # a default that changes must change the key, so old features are not reused
    assert resolved_feature_params("hog", {}) == resolved_feature_params("hog", {"orientations": 12})
    assert json.loads(resolved_feature_params("lbp", {"radius": 2}))["radius"] == 2
    assert resolved_feature_params("hog", {}) != resolved_feature_params("hog", {"engine": "skimage"})


def test_cell_ids():
    assert cell_id("HOG+lbp", "svm") == "hog+lbp__svm"
    assert cell_id("hog", "svm", flip=True) == "hog__svm__flip"
    assert cell_id("hog", "svm", flip=True, tta="flip") == "hog__svm__flip__tta_flip"


def test_flip_faces_mirrors_columns():
    X = np.arange(2 * 48 * 48, dtype=np.uint8).reshape(2, 48, 48)
    assert np.array_equal(flip_faces(X)[:, :, 0], X[:, :, -1])


def test_classic_cell_says_which_long_step_it_is_in(kaggle_dir, tmp_path):
    """The steps that run for minutes on FER-2013 (a vocabulary, each extraction, the test pass) are announced."""
    from fer_bench.data import load_dataset

    dataset = load_dataset(kaggle_dir, cache_dir=False)
    params = {"sift_bovw": {"vocabulary_size": 12, "fit_descriptors": 5000}}
    messages = []
    run_classic_cell(dataset, "sift_bovw+hog", "dt", tmp_path, feature_params=params, flip=True, select=False,
                     cache=tmp_path / "c", log=messages.append)
    name = "sift_bovw+hog__dt__flip"
    n_train, n_val, n_test = 2 * len(dataset.train), len(dataset.val), len(dataset.test)
    assert f"{name}: fitting sift_bovw on {n_train} Training faces (mirrored ones included)" in messages
    started = [m for m in messages if ": extracting " in m]
    assert started == [f"{name}: {split}: extracting {feature} of {n} faces"
                       for split, n in (("Training", n_train), ("PublicTest", n_val), ("PrivateTest", n_test))
                       for feature in ("sift_bovw", "hog")]
    assert sum(" faces extracted in " in m for m in messages) == 6
    assert messages.index(f"{name}: scoring PrivateTest ({n_test} faces)") < len(messages) - 1
    # A second run reads every feature from the cache and says nothing of extraction.
    messages.clear()
    run_classic_cell(dataset, "sift_bovw+hog", "dt", tmp_path / "again", feature_params=params, flip=True,
                     select=False, cache=tmp_path / "c", log=messages.append)
    assert not [m for m in messages if "extract" in m and "cached on reuse" not in m]


def test_a_grid_tried_one_setting_after_another_tells_each_score_as_it_comes(kaggle_dir, tmp_path):
    from fer_bench import workers
    from fer_bench.data import load_dataset

    workers.install()  # as the command line runs it: joblib's loky backend replaced by fer-bench's own
    dataset = load_dataset(kaggle_dir, cache_dir=False)
    messages = []
    record = run_classic_cell(dataset, "hog", "knn", tmp_path, cache=tmp_path / "c", log=messages.append)
    told = [m for m in messages if "settings tried)" in m]
    n = len(record["selection"])
    assert n > 1 and len(told) == n
    for i, (line, entry) in enumerate(zip(told, record["selection"]), start=1):
        assert line == (f"hog__knn:   {entry['params']} -> validation accuracy "
                        f"{entry['validation_accuracy']:.4f} ({i} of {n} settings tried)")
    assert messages.index(told[-1]) < min(i for i, m in enumerate(messages) if "refitting" in m)


def test_classic_cell_selects_on_validation_and_scores_on_test(kaggle_dir, tmp_path):
    from fer_bench.data import load_dataset

    dataset = load_dataset(kaggle_dir, cache_dir=False)
    record = run_classic_cell(dataset, "hog", "dt", tmp_path, flip=True, cache=tmp_path / "c",
                              log=lambda message: None)
    assert record["cell"] == "hog__dt__flip" and record["n_train"] == 42  # 21 faces and their mirror images
    assert [entry["params"] for entry in record["selection"]] == [
        {"max_depth": depth, "min_samples_leaf": leaf} for depth in (8, 12, 20) for leaf in (5, 20)]
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
    assert model.n_jobs is None and model.memory is None and model.random_state == 0
    np.testing.assert_array_equal(model.predict(dataset.test.X), np.asarray(dataset.classes)[predictions["y_pred"]])
    assert json.loads((tmp_path / "records" / "hog__dt__flip.json").read_text())["accuracy"] == record["accuracy"]


def test_a_cell_with_flip_tta_selects_and_scores_each_face_with_its_mirror_image(kaggle_dir, tmp_path):
    from fer_bench.data import load_dataset

    dataset = load_dataset(kaggle_dir, cache_dir=False)
    messages = []
    record = run_classic_cell(dataset, "hog", "svm", tmp_path, tta="flip", cache=tmp_path / "c",
                              log=messages.append)
    name = "hog__svm__tta_flip"
    assert record["cell"] == name and record["tta"] == "flip" and len(record["selection"]) == 2
    n_val, n_test = len(dataset.val), len(dataset.test)
    assert f"{name}: PublicTest mirrored: extracting hog of {n_val} faces" in messages
    assert any(m.startswith(f"{name}: note: test-time flipping without mirrored training faces (--flip)")
               for m in messages)
    assert f"{name}: scoring PrivateTest ({n_test} faces, and their mirror images)" in messages
    model = ClassicModel.load(record["model_path"])
    assert model.tta == "flip" and model.metadata["tta"] == "flip"
    plain = ClassicModel.load(record["model_path"]).set_params(tta="none")
    predictions = load_predictions(record["predictions_path"])
    averaged = (plain.predict_proba(dataset.test.X) + plain.predict_proba(dataset.test.X[:, :, ::-1])) / 2
    np.testing.assert_allclose(predictions["proba"], averaged, rtol=1e-6)
    np.testing.assert_array_equal(model.predict(dataset.test.X), np.asarray(dataset.classes)[predictions["y_pred"]])
    # The validation accuracy selected on is the averaged one, as a fresh pass of the saved model finds it.
    fresh = np.mean(model.predict_proba(dataset.val.X).argmax(axis=1) == dataset.val.y)
    assert record["validation_accuracy"] == pytest.approx(fresh)


def test_an_svm_scores_the_validation_faces_once_per_fit_in_its_calibration_pass(kaggle_dir, tmp_path, monkeypatch):
    # For local classifiers a pass over the validation faces costs minutes: it runs once.
    from dataclasses import replace

    from sklearn.svm import SVC

    from fer_bench.data import load_dataset
    from fer_bench.experiment.harness import select_on_validation

    full = load_dataset(kaggle_dir, cache_dir=False)
    dataset = replace(full, val=full.val.subset(np.arange(17)))  # a size no other pass has
    passes = []
    original = SVC.decision_function

    def counting(self, X):
        passes.append(len(X))
        return original(self, X)

    monkeypatch.setattr(SVC, "decision_function", counting)
    record = run_classic_cell(dataset, "hog", "svm", tmp_path, select=False, cache=tmp_path / "c",
                              log=lambda message: None)
    assert passes.count(len(dataset.val)) == 1 and len(dataset.val) != len(dataset.test)
    model = ClassicModel.load(record["model_path"])
    assert record["validation_accuracy"] == model.score(dataset.val.X, dataset.val.y)
    assert record["selection"] == [{"params": {}, "validation_accuracy": record["validation_accuracy"],
                                    "fit_seconds": record["selection"][0]["fit_seconds"]}]
    # Selection too: each candidate's decisions on the validation faces are computed once, in its fit.
    passes.clear()
    base = ClassicModel("hog", "svm", memory=tmp_path / "c")
    selection = select_on_validation(base, [{"C": 3.0}, {"C": 10.0}], dataset.train.X, dataset.train.y,
                                     dataset.val.X, dataset.val.y)
    assert passes.count(len(dataset.val)) == 2
    for entry in selection:
        refit = clone(base).set_params(classifier_params=entry["params"]).fit(dataset.train.X, dataset.train.y)
        assert entry["validation_accuracy"] == refit.score(dataset.val.X, dataset.val.y)


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


def test_timing_holds_the_classifier_workers_to_one_and_gives_them_back(monkeypatch):
    from fer_bench.experiment import harness

    X, y = synthetic_faces(60, seed=2)
    model = ClassicModel("hog", "rf", classifier_params={"n_estimators": 5}).fit(X, y)
    assert model.estimator_.get_params()["forest__n_jobs"] == -1
    seen = []
    predict = ClassicModel.predict

    def recording(self, faces):
        seen.append(self.estimator_.get_params()["forest__n_jobs"])
        return predict(self, faces)

    monkeypatch.setattr(ClassicModel, "predict", recording)
    harness.time_prediction(model, X, batch=20, singles=3)
    assert seen == [1] * 5  # warm-up, batch, three single faces
    assert model.estimator_.get_params()["forest__n_jobs"] == -1


@pytest.mark.parametrize("classifier", ["knn", "svm"])
def test_grid_search_reproduces_the_hand_rolled_selection_on_fer2013(fer2013, classifier, tmp_path):
    from fer_bench._core import stratified_subset
    from fer_bench.experiment.harness import candidate_grid, select_on_validation
    from fer_classic.classifiers import make_classifier
    from fer_classic.model import _fit_pca_to_data

    train = stratified_subset(fer2013.train.y, 600, seed=0)
    val = stratified_subset(fer2013.val.y, 300, seed=0)
    test = stratified_subset(fer2013.test.y, 300, seed=0)
    X_train, y_train = fer2013.train.X[train], fer2013.train.y[train]
    X_val, y_val = fer2013.val.X[val], fer2013.val.y[val]
    X_test = fer2013.test.X[test]
    candidates = candidate_grid(classifier, {}, select=True)
    assert len(candidates) > 1

    # The selection the harness did by hand before GridSearchCV: features extracted once, each
    # candidate's classifier fitted on the Training features and scored by its own predict on PublicTest.
    extractor = make_features("hog").fit(X_train)
    F_train, F_val, F_test = (extractor.transform(X) for X in (X_train, X_val, X_test))
    by_hand = []
    for params in candidates:
        estimator = make_classifier(classifier, params, seed=0)
        _fit_pca_to_data(estimator, *F_train.shape)
        by_hand.append((float(np.mean(estimator.fit(F_train, y_train).predict(F_val) == y_val)), estimator))
    chosen = int(np.argmax([accuracy for accuracy, _ in by_hand]))

    base = ClassicModel("hog", classifier, memory=tmp_path / "features")
    selection = select_on_validation(base, candidates, X_train, y_train, X_val, y_val)
    assert [entry["params"] for entry in selection] == candidates
    assert [entry["validation_accuracy"] for entry in selection] == [accuracy for accuracy, _ in by_hand]
    best = int(np.argmax([entry["validation_accuracy"] for entry in selection]))
    assert best == chosen
    model = clone(base).set_params(classifier_params=selection[best]["params"])
    model.fit(X_train, y_train, validation=(X_val, y_val))
    expected = np.asarray(fer2013.classes)[by_hand[chosen][1].predict(F_test)]
    np.testing.assert_array_equal(model.predict(X_test), expected)
