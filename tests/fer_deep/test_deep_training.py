"""Training: parameters, class weights, one epoch's shapes, checkpoints, kill-and-resume, curves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from conftest import synthetic_faces  # noqa: E402
from fer_deep.training import (  # noqa: E402
    STATE_FILE,
    as_model_input,
    check_parameters,
    class_weights,
    plot_history,
    read_state,
    resolve_training_params,
    time_training,
    train,
)


class InterruptAfterFirstEpoch(keras.callbacks.Callback):
    """Stands in for Ctrl-C or a killed process right after epoch 1 was checkpointed."""

    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt


class RecordOptimizerStep(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.iterations_at_start = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))


@pytest.fixture(scope="module")
def faces():
    return synthetic_faces(28, seed=1), synthetic_faces(14, seed=2)


@pytest.fixture(scope="module")
def interrupted(faces, tmp_path_factory):
    """A checkpoint folder left by a 2-epoch training interrupted after epoch 1 (copy it before use)."""
    (X, y), (X_val, y_val) = faces
    folder = tmp_path_factory.mktemp("interrupted")
    with pytest.raises(KeyboardInterrupt):
        train("tutorial", X, y, validation=(X_val, y_val), epochs=2, batch_size=14, verbose=0, checkpoint_dir=folder,
              callbacks=[InterruptAfterFirstEpoch()])
    return folder


# --------------------------------------------------------------------------- parameters


def test_each_architecture_has_its_own_optimiser():
    assert resolve_training_params("tutorial")["optimizer"] == "adam"
    vgg = resolve_training_params("vgg")
    assert (vgg["optimizer"], vgg["schedule"], vgg["momentum"]) == ("sgd", "cosine", 0.9)
    assert resolve_training_params("vgg", {"learning_rate": 0.05})["learning_rate"] == 0.05


def test_unknown_training_parameter_is_an_error():
    with pytest.raises(ValueError, match="unknown training parameter"r"\(s\) lr; known: .*learning_rate"):
        resolve_training_params("tutorial", {"lr": 0.1})


def test_unknown_optimizer_and_schedule_are_errors():
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose from adam, sgd"):
        resolve_training_params("tutorial", {"optimizer": "rmsprop"})
    with pytest.raises(ValueError, match="unknown schedule 'step'; choose from constant, plateau, cosine"):
        resolve_training_params("tutorial", {"schedule": "step"})


def test_unknown_architecture_parameter_is_an_error():
    check_parameters("vgg", {"patience": 3}, {"filters": (8, 16)})
    with pytest.raises(ValueError, match="unknown parameter"r"\(s\) width of architecture 'tutorial'; known: dropout"):
        check_parameters("tutorial", {}, {"width": 2})


def test_balanced_class_weights_by_hand():
    # 4 faces of class 0, 2 of class 1, none of class 2: n / (k * n_c) with k = 2 present classes.
    weights = class_weights(np.array([0, 0, 0, 0, 1, 1]), 3, "balanced")
    assert weights == {0: pytest.approx(0.75), 1: pytest.approx(1.5), 2: 0.0}
    assert class_weights(np.array([0, 1]), 2, None) is None
    assert class_weights(np.array([0, 1]), 2, {"1": 2}) == {1: 2.0}
    with pytest.raises(ValueError, match="class_weight must be None, 'balanced' or a dict, got 'heavy'"):
        class_weights(np.array([0, 1]), 2, "heavy")


def test_model_input_is_float_with_a_channel():
    X = as_model_input(np.zeros((2, 48, 48), np.uint8))
    assert X.shape == (2, 48, 48, 1) and X.dtype == np.float32
    with pytest.raises(ValueError, match=r"faces must be shaped \(n, height, width\), got \(48, 48\)"):
        as_model_input(np.zeros((48, 48)))


def test_train_rejects_mismatched_labels(faces):
    (X, y), _ = faces
    with pytest.raises(ValueError, match="28 faces but 27 labels"):
        train("tutorial", X, y[:-1], epochs=1)


# --------------------------------------------------------------------------- one epoch


def test_one_epoch_gives_history_and_a_working_model(faces, tmp_path):
    (X, y), (X_val, y_val) = faces
    result = train("tutorial", X, y, validation=(X_val, y_val), epochs=1, batch_size=14, verbose=0,
                   curves_path=tmp_path / "curves.png")
    assert result.epochs_run == 1 and result.best_epoch == 1 and result.resumed_from == 0
    assert sorted(result.history) == ["accuracy", "epoch_seconds", "learning_rate", "loss", "val_accuracy",
                                      "val_loss"]
    assert all(len(values) == 1 for values in result.history.values())
    assert result.history["learning_rate"] == [pytest.approx(1e-4)]  # the tutorial net's default
    proba = np.asarray(result.model.predict_on_batch(as_model_input(X_val)))
    assert proba.shape == (14, 7)
    # The inference model carries no augmentation: only the trainer did.
    assert "augmentation" not in [layer.name for layer in result.model.layers]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- checkpoints and resume


def test_interrupted_training_resumes_from_its_checkpoint(faces, interrupted, tmp_path):
    (X, y), (X_val, y_val) = faces
    tmp_path = Path(shutil.copytree(interrupted, tmp_path / "checkpoint"))
    settings = dict(validation=(X_val, y_val), epochs=2, batch_size=14, verbose=0, checkpoint_dir=tmp_path)
    state = read_state(tmp_path)
    assert state["epoch"] == 1 and not state["finished"]
    assert len(state["history"]["loss"]) == 1
    assert (tmp_path / state["model_file"]).is_file() and (tmp_path / state["best_file"]).is_file()

    messages = []
    step = RecordOptimizerStep()
    result = train("tutorial", X, y, resume=True, log=messages.append, callbacks=[step], **settings)
    assert result.resumed_from == 1
    assert result.epochs_run == 2
    assert len(result.history["loss"]) == 2  # epoch 1 from the checkpoint, epoch 2 from this run
    assert result.history["loss"][0] == state["history"]["loss"][0]
    # The optimiser state came back too: 2 steps per epoch (28 faces / 14) were already taken.
    assert step.iterations_at_start == 2
    assert messages == [f"resuming tutorial after epoch 1 of 2 ({tmp_path})"]
    final = json.loads((tmp_path / STATE_FILE).read_text())
    assert final["epoch"] == 2 and final["finished"]
    # Only the newest checkpoint and the best weights are kept.
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([STATE_FILE, final["model_file"],
                                                                 final["best_file"]])

    # A rerun of a finished training reuses it instead of training again.
    messages.clear()
    again = train("tutorial", X, y, resume=True, log=messages.append, **settings)
    assert again.epochs_run == 2 and again.resumed_from == 2
    assert messages == [f"tutorial already trained in {tmp_path} (2 epochs); reusing it"]
    np.testing.assert_allclose(again.model.get_weights()[0], result.model.get_weights()[0])


def test_a_checkpoint_written_under_the_former_name_seed_resumes(faces, interrupted, tmp_path):
    (X, y), (X_val, y_val) = faces
    tmp_path = Path(shutil.copytree(interrupted, tmp_path / "checkpoint"))
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["fingerprint"]["arch"] == "tutorial"
    state["fingerprint"]["arch"] = "seed"  # as the tutorial net's checkpoints were written before the rename
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    messages = []
    result = train("tutorial", X, y, validation=(X_val, y_val), epochs=2, batch_size=14, verbose=0,
                   checkpoint_dir=tmp_path, resume=True, log=messages.append)
    assert messages == [f"resuming tutorial after epoch 1 of 2 ({tmp_path})"]
    assert result.resumed_from == 1 and result.epochs_run == 2
    assert read_state(tmp_path)["fingerprint"]["arch"] == "tutorial"


def test_checkpoint_of_other_settings_is_not_resumed(faces, interrupted, tmp_path):
    (X, y), (X_val, y_val) = faces
    tmp_path = Path(shutil.copytree(interrupted, tmp_path / "checkpoint"))
    messages = []
    result = train("tutorial", X, y, validation=(X_val, y_val), epochs=1, batch_size=7, verbose=0,
                   checkpoint_dir=tmp_path, resume=True, log=messages.append)
    assert result.resumed_from == 0 and result.epochs_run == 1
    assert messages == [f"checkpoint in {tmp_path} was written with other settings or data; starting afresh"]


def test_finished_training_asked_for_more_epochs_goes_on_from_its_last_epoch(faces, tmp_path):
    (X, y), (X_val, y_val) = faces
    settings = dict(validation=(X_val, y_val), batch_size=14, verbose=0, checkpoint_dir=tmp_path, resume=True)
    first = train("tutorial", X, y, epochs=1, **settings)
    messages = []
    step = RecordOptimizerStep()
    longer = train("tutorial", X, y, epochs=2, log=messages.append, callbacks=[step], **settings)
    assert messages == [f"extending tutorial from 1 to at most 2 epochs ({tmp_path})"]
    assert longer.resumed_from == 1 and longer.epochs_run == 2
    assert longer.history["loss"][0] == first.history["loss"][0]
    assert step.iterations_at_start == 2  # the optimiser went on where epoch 1 left it
    assert read_state(tmp_path)["fingerprint"]["epochs"] == 2

    # Asked for fewer epochs than the checkpoint holds: that run cannot be recovered from it.
    messages.clear()
    shorter = train("tutorial", X, y, epochs=1, log=messages.append, **settings)
    assert shorter.resumed_from == 0 and shorter.epochs_run == 1
    assert messages == [f"checkpoint in {tmp_path} was written with other settings or data; starting afresh"]


def test_a_cosine_schedule_is_not_extended_because_its_decay_spans_the_budget(faces, tmp_path):
    (X, y), (X_val, y_val) = faces
    settings = dict(validation=(X_val, y_val), batch_size=14, verbose=0, checkpoint_dir=tmp_path, resume=True,
                    train_params={"schedule": "cosine"})
    train("tutorial", X, y, epochs=1, **settings)
    messages = []
    result = train("tutorial", X, y, epochs=2, log=messages.append, **settings)
    assert result.resumed_from == 0 and result.epochs_run == 2
    assert messages == [f"checkpoint in {tmp_path} was written with other settings or data; starting afresh"]


def test_a_run_that_stopped_early_is_reused_under_a_larger_budget(tmp_path):
    X, y = synthetic_faces(14, seed=3)
    settings = dict(validation=(X, y), batch_size=14, verbose=0, checkpoint_dir=tmp_path, resume=True,
                    train_params={"learning_rate": 0.0, "patience": 2, "schedule": "constant"})
    stopped = train("tutorial", X, y, epochs=5, **settings)
    assert stopped.stopped_early and stopped.epochs_run == 3
    messages = []
    again = train("tutorial", X, y, epochs=20, log=messages.append, **settings)
    assert again.epochs_run == 3 and again.resumed_from == 3 and again.best_epoch == 1
    assert messages == [f"tutorial stopped early after 3 epochs in {tmp_path}, so a budget of 20 epochs changes "
                        f"nothing; reusing it"]


def test_early_stopping_keeps_the_best_epoch(tmp_path):
    # A learning rate of zero never improves validation accuracy after epoch 1.
    X, y = synthetic_faces(14, seed=3)
    result = train("tutorial", X, y, validation=(X, y), epochs=5, batch_size=14, verbose=0,
                   train_params={"learning_rate": 0.0, "patience": 2, "schedule": "constant"})
    assert result.stopped_early
    assert result.epochs_run == 3
    assert result.best_epoch == 1


# --------------------------------------------------------------------------- curves


def test_time_training_times_the_recipe_on_the_network_it_builds():
    timed = time_training("tutorial", batch_size=8, batches=2, warmup=1)
    assert timed["faces_per_second"] > 0 and timed["warmup_seconds"] > 0
    assert timed["net"].output_shape == (None, 7)
    assert timed["net"].input_shape == (None, 48, 48, 1)


def test_plot_history_writes_a_png(tmp_path):
    history = {"loss": [1.5, 1.2], "val_loss": [1.6, 1.4], "accuracy": [0.3, 0.5], "val_accuracy": [0.25, 0.45]}
    path = plot_history(history, tmp_path / "sub" / "curves.png", best_epoch=2, title="tutorial")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["curves.png"]  # no temporary file left
