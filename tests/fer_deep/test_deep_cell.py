"""fer_bench.experiment.deep_cell.run_deep_cell: the same record as a classical cell, resumable."""

from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from fer_bench.data import Dataset, Split  # noqa: E402
from fer_bench.experiment.deep_cell import run_deep_cell, stratified_subset  # noqa: E402
from fer_bench.experiment.harness import load_predictions, run_classic_cell  # noqa: E402
from fer_bench.models import load_model  # noqa: E402
from conftest import CLASSES, synthetic_faces  # noqa: E402


@pytest.fixture(scope="module")
def dataset():
    (X, y), (Xv, yv), (Xt, yt) = synthetic_faces(42, seed=1), synthetic_faces(14, seed=2), synthetic_faces(14, seed=3)
    return Dataset("synthetic", "memory", CLASSES, Split("Training", X, y), Split("PublicTest", Xv, yv),
                   Split("PrivateTest", Xt, yt), "fixed synthetic split", "synthetic-key")


def test_stratified_subset_by_hand():
    y = np.repeat([0, 1, 2], [60, 30, 10])
    chosen = stratified_subset(y, 20, seed=0)
    assert np.bincount(y[chosen]).tolist() == [12, 6, 2]
    assert (np.diff(chosen) > 0).all()
    assert stratified_subset(y, 500).tolist() == list(range(100))
    with pytest.raises(ValueError, match="a subset needs at least one face, got size 0"):
        stratified_subset(y, 0)


def test_deep_cell_writes_the_classic_record_format_and_resumes(dataset, tmp_path):
    messages = []
    record = run_deep_cell(dataset, "tutorial", tmp_path, epochs=1, batch_size=14, train_subset=28,
                           log=messages.append, verbose=0, patience=3)
    classic = run_classic_cell(dataset, "hog", "dt", tmp_path / "classic", select=False, log=lambda m: None)
    assert set(classic) - set(record) == set()
    assert record["cell"] == "cnn-tutorial" and record["family"] == "deep"
    assert {key: record["split"][key] for key in ("train", "validation", "test", "method")} == {
        "train": "Training", "validation": "PublicTest", "test": "PrivateTest", "method": "fixed synthetic split"}
    assert record["split"]["per_class"] == classic["split"]["per_class"]
    assert (record["n_train"], record["n_validation"], record["n_test"]) == (28, 14, 14)
    assert record["epochs_run"] == 1 and len(record["history"]["loss"]) == 1
    assert record["train_params"]["patience"] == 3
    assert record["backend"] == keras.backend.backend()
    assert record["status"] == "ok" and record["error"] is None
    # Timed like the classical cells: one thread, in a fresh process (the training one cannot be limited).
    assert record["predict_threads"] == "one, own process"
    assert record["predict_ms_per_face"] > 0 and record["predict_ms_single"] > 0
    assert json.loads((tmp_path / "records" / "cnn-tutorial.json").read_text())["accuracy"] == record["accuracy"]
    predictions = load_predictions(record["predictions_path"])
    assert np.mean(predictions["y_pred"] == predictions["y_true"]) == pytest.approx(record["accuracy"])
    model = load_model(record["model_path"])
    assert model.metadata["dataset_key"] == "synthetic-key" and model.metadata["n_train"] == 28
    np.testing.assert_array_equal(model.predict_proba(dataset.test.X).argmax(axis=1), predictions["y_pred"])
    assert (tmp_path / "checkpoints" / "cnn-tutorial" / "state.json").is_file()

    messages.clear()
    again = run_deep_cell(dataset, "tutorial", tmp_path, epochs=1, batch_size=14, train_subset=28,
                          log=messages.append, verbose=0, patience=3)
    assert again["resumed_from"] == 1 and again["accuracy"] == record["accuracy"]
    assert any("already trained" in message for message in messages)
