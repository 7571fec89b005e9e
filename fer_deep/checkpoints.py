"""Checkpoints of a training run: the per-epoch state, its files, and when a checkpoint may be resumed.

With a ``checkpoint_dir``, :func:`fer_deep.training.train` has
:class:`EpochMonitor` write, after every finished epoch, the trainer (weights +
optimiser state), the best weights and ``state.json`` (epoch, history,
early-stopping and plateau counters, the run's fingerprint).  Each file is
written to a temporary name and renamed into place; the state file goes last
and names the files it belongs to, so an interrupted run resumes from the
last finished epoch and loses at most the epoch in progress.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

from . import ARCHITECTURE_ALIASES, require_keras

keras = require_keras()

CHECKPOINT_FORMAT = "fer-bench-deep-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1
STATE_FILE = "state.json"

EPOCH_FREE_SCHEDULES = ("constant", "plateau")
"""Schedules that do not depend on the epoch budget, so a finished run can be extended."""


def current_learning_rate(optimizer) -> float:
    """The optimiser's learning rate now (schedules evaluated at the current step)."""
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))



def replace_atomically(write, path: Path) -> None:
    """Call ``write(tmp)`` for a temporary file beside ``path`` (same suffix), then rename it over ``path``."""
    suffix = "".join(path.suffixes) or ".tmp"
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-" + path.name.split(".")[0], suffix=suffix)
    os.close(handle)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_state(checkpoint_dir: Path, state: dict) -> None:
    """Write ``state.json`` atomically; it is the commit point of a checkpoint."""

    def write(tmp):
        with open(tmp, "w") as stream:
            json.dump(state, stream, indent=1)

    replace_atomically(write, checkpoint_dir / STATE_FILE)


def read_state(checkpoint_dir) -> dict | None:
    """The checkpoint state in ``checkpoint_dir``, or None if there is none (or it is unreadable).

    The fingerprint names the architecture by its registry name, also when the
    checkpoint was written under a former one (``seed``, see
    :data:`fer_deep.ARCHITECTURE_ALIASES`).
    """
    path = Path(checkpoint_dir) / STATE_FILE
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        return None
    fingerprint = state.get("fingerprint")
    if isinstance(fingerprint, dict):
        # A checkpoint written under a former name of the architecture is this architecture's.
        fingerprint["arch"] = ARCHITECTURE_ALIASES.get(fingerprint.get("arch"), fingerprint.get("arch"))
    return state


class EpochMonitor(keras.callbacks.Callback):
    """History, best-epoch selection, early stopping, reduce-on-plateau and checkpoints, with resumable state.

    Keras' own EarlyStopping / ReduceLROnPlateau / ModelCheckpoint keep their
    counters in memory only; this callback keeps them in ``state`` so a resumed
    run continues exactly where the interrupted one stood.
    """

    def __init__(self, net, state: dict, params: dict, checkpoint_dir: Path | None, validated: bool):
        super().__init__()
        self.net = net
        self.state = state
        self.params_ = params
        self.checkpoint_dir = checkpoint_dir
        self.validated = validated
        self.best_weights = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        state = self.state
        completed = epoch + 1
        optimizer = self.model.optimizer
        history = state["history"]
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            if key in logs:
                history.setdefault(key, []).append(float(logs[key]))
        history.setdefault("learning_rate", []).append(current_learning_rate(optimizer))
        history.setdefault("epoch_seconds", []).append(time.perf_counter() - self.epoch_start)

        # Best epoch and early stopping on validation accuracy (without a
        # validation split, the last epoch is the best one and nothing stops).
        improved = not self.validated or logs.get("val_accuracy", -1.0) > state["best"]
        if improved:
            state["best"] = float(logs.get("val_accuracy", 0.0))
            state["best_epoch"] = completed
            state["wait"] = 0
            self.best_weights = self.net.get_weights()
        else:
            state["wait"] += 1
            if state["wait"] >= self.params_["patience"]:
                state["stopped_early"] = True
                self.model.stop_training = True

        # Reduce on plateau of the validation loss (training loss without validation).
        if self.params_["schedule"] == "plateau":
            loss = float(logs.get("val_loss", logs.get("loss", 0.0)))
            if loss < state["plateau_best"] - 1e-4:
                state["plateau_best"] = loss
                state["plateau_wait"] = 0
            else:
                state["plateau_wait"] += 1
                if state["plateau_wait"] >= self.params_["plateau_patience"]:
                    rate = current_learning_rate(optimizer)
                    new_rate = max(rate * self.params_["plateau_factor"], self.params_["min_learning_rate"])
                    if new_rate < rate:
                        optimizer.learning_rate = new_rate
                    state["plateau_wait"] = 0

        state["epoch"] = completed
        if self.checkpoint_dir is not None:
            self.save_checkpoint(improved)

    def save_checkpoint(self, improved: bool) -> None:
        directory = self.checkpoint_dir
        state = self.state
        model_file = f"epoch-{state['epoch']:04d}.keras"
        replace_atomically(lambda tmp: self.model.save(tmp), directory / model_file)
        if improved:
            best_file = f"best-{state['epoch']:04d}.weights.h5"
            replace_atomically(lambda tmp: self.net.save_weights(tmp), directory / best_file)
            state["best_file"] = best_file
        state["model_file"] = model_file
        write_state(directory, state)
        # Only now that the new state names its files may the older ones go.
        for old in list(directory.glob("epoch-*.keras")) + list(directory.glob("best-*.weights.h5")):
            if old.name not in (state["model_file"], state.get("best_file")):
                old.unlink(missing_ok=True)


def extensible(state: dict, fingerprint: dict) -> bool:
    """Whether a checkpoint written with another epoch budget is the start of a run with this one.

    Only the budget may differ, the learning-rate schedule must not depend on
    it ("cosine" spreads its decay over all epochs, so a longer run is a
    different run), and the checkpoint must not be past the new budget.  A run
    that stopped early is then exactly what the new budget gives; one that ran
    out of epochs goes on from its last epoch.
    """
    def without_budget(print_):
        return {key: value for key, value in print_.items() if key != "epochs"}

    return (
        without_budget(state.get("fingerprint") or {}) == without_budget(fingerprint)
        and fingerprint["params"]["schedule"] in EPOCH_FREE_SCHEDULES
        and state.get("epoch", 0) <= fingerprint["epochs"]
    )
