"""Training: augmentation, optimiser and schedule per architecture, selection on validation, checkpoint and resume.

:func:`train` fits a registered architecture on faces ``(n, 48, 48)`` and
returns a :class:`TrainingResult` holding the inference model with the weights
of the epoch that scored best on the validation split.

- Augmentation (horizontal flip, small shifts, rotations, zoom, brightness) is
  a stack of Keras preprocessing layers in front of the network inside a
  *trainer* model; Keras runs them only in training, so validation and
  prediction see the faces as they are, and the saved inference model holds
  no augmentation at all.
- Each architecture has its own optimiser and learning-rate schedule
  (:data:`TRAINING_DEFAULTS`); any value can be overridden.
- The validation split alone picks the best epoch (highest validation
  accuracy) and stops training early when it has not improved for
  ``patience`` epochs; the test split is never seen here.
- With a ``checkpoint_dir``, every finished epoch writes a checkpoint
  (:mod:`fer_deep.checkpoints`), so an interrupted run resumes from the last
  finished epoch and loses at most the epoch in progress.  With a constant or
  plateau schedule, a finished run asked for more epochs goes on from its
  last one instead of starting over.
- The training curves are drawn by :mod:`fer_deep.curves`.

Only ``keras`` and ``keras.ops`` are used, so training runs under any Keras
backend.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import ARCHITECTURE_ALIASES, require_keras

keras = require_keras()

from .architectures import make_model  # noqa: E402  (after the clear missing-extra error above)
from .checkpoints import (  # noqa: E402, F401  (the checkpoint names stay importable from here)
    CHECKPOINT_FORMAT,
    CHECKPOINT_FORMAT_VERSION,
    EPOCH_FREE_SCHEDULES,
    STATE_FILE,
    EpochMonitor,
    current_learning_rate,
    extensible,
    read_state,
    write_state,
)
from .curves import plot_history  # noqa: E402, F401  (fer_deep.training.plot_history, as before)

COMMON_DEFAULTS = {
    "augment": True,
    "flip": True,  # horizontal mirror: expressions are (near) left-right symmetric
    "shift": 0.1,  # fraction of the side
    "rotation": 10.0,  # degrees
    "zoom": 0.1,
    "brightness": 0.2,  # fraction of the 0..255 range
    "patience": 10,  # epochs without a better validation accuracy before stopping
    "plateau_patience": 4,
    "plateau_factor": 0.5,
    "min_learning_rate": 1e-6,
    "class_weight": None,  # None, "balanced" or {label: weight}
    "weight_decay": 0.0,
    "label_smoothing": 0.0,
    "erasing": 0.0,  # probability of erasing a random rectangle (Zhong et al. 2017)
    "warmup": 0.2,  # fraction of the steps the one-cycle schedule spends rising to its peak
}
"""Training parameters every architecture shares."""

TRAINING_DEFAULTS = {
    # The Keras tutorials' recipe: Adam at a constant 1e-4, mirrored faces the only augmentation.
    # The net's dropout layers regularise it; the shared shifts, rotations, zoom and brightness
    # are switched off because on top of dropout they make this small net underfit.
    "tutorial": {"optimizer": "adam", "learning_rate": 1e-4, "schedule": "constant",
             "shift": 0.0, "rotation": 0.0, "zoom": 0.0, "brightness": 0.0},
    # SGD with Nesterov momentum, weight decay and cosine decay, as in
    # Pramerdorfer & Kampel (2016) and Khaireddin & Chen (2021) for VGG nets.
    "vgg": {"optimizer": "sgd", "learning_rate": 0.01, "momentum": 0.9, "nesterov": True,
            "weight_decay": 5e-4, "schedule": "cosine"},
    # Adam with cosine decay trains MobileNetV2 from scratch reliably.
    "mobilenet_v2": {"optimizer": "adam", "learning_rate": 1e-3, "schedule": "cosine", "weight_decay": 1e-5},
}
# The CPU networks converge in tens of epochs: SGD with Nesterov momentum under a one-cycle
# schedule (a linear rise to the peak rate, then a cosine decay), weight decay, label smoothing,
# and augmentation by random crop windows (shifts of up to (48 - crop) / 2 pixels before the
# network's centre crop), mirror images, small rotations and random erasing.
CPU_RECIPE = {"optimizer": "sgd", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
              "schedule": "one_cycle", "warmup": 0.2, "label_smoothing": 0.1, "shift": 4 / 48, "rotation": 10.0,
              "zoom": 0.0, "brightness": 0.0, "erasing": 0.5, "patience": 100}
TRAINING_DEFAULTS["vgg_cpu"] = CPU_RECIPE
TRAINING_DEFAULTS["resnet_cpu"] = CPU_RECIPE
"""Architecture -> optimiser and schedule defaults (merged over :data:`COMMON_DEFAULTS`)."""

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "plateau", "cosine", "one_cycle")


@dataclass
class TrainingResult:
    """What :func:`train` returns.

    Attributes
    ----------
    model : keras.Model
        The inference model (no augmentation) with the best epoch's weights.
    history : dict of str -> list of float
        Per epoch: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy`` (when
        validated), ``learning_rate`` and ``epoch_seconds``, over all epochs
        including resumed ones.
    epochs_run : int
        Epochs finished in total.
    best_epoch : int
        1-based epoch whose weights ``model`` holds.
    stopped_early : bool
        Whether early stopping ended training before ``epochs``.
    resumed_from : int
        Epochs already finished in the checkpoint this run resumed from (0: fresh).
    params : dict
        The resolved training parameters.
    fit_seconds : float
        Seconds of training over all epochs, including those of an interrupted
        run that this one resumed (the sum of ``history["epoch_seconds"]``).
    curves_png : str or None
        Path of the training-curve plot, if one was written.
    """

    model: object
    history: dict
    epochs_run: int
    best_epoch: int
    stopped_early: bool
    resumed_from: int
    params: dict
    fit_seconds: float
    curves_png: str | None = None


# --------------------------------------------------------------------------- parameters


def resolve_training_params(arch: str, overrides: dict | None = None) -> dict:
    """Defaults for ``arch`` merged with ``overrides``; unknown names are an error.

    Parameters
    ----------
    arch : str
        Architecture name (or an alias, :data:`fer_deep.ARCHITECTURE_ALIASES`).
    overrides : dict, optional
        Values replacing the defaults.

    Returns
    -------
    dict
    """
    params = {**COMMON_DEFAULTS, "optimizer": "adam", "learning_rate": 1e-3, "momentum": 0.9, "nesterov": True,
              "schedule": "plateau", **TRAINING_DEFAULTS.get(ARCHITECTURE_ALIASES.get(arch, arch), {})}
    unknown = sorted(set(overrides or {}) - set(params))
    if unknown:
        raise ValueError(f"unknown training parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(params))}")
    params.update(overrides or {})
    if params["optimizer"] not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {params['optimizer']!r}; choose from {', '.join(OPTIMIZERS)}")
    if params["schedule"] not in SCHEDULES:
        raise ValueError(f"unknown schedule {params['schedule']!r}; choose from {', '.join(SCHEDULES)}")
    return params


def check_parameters(arch: str, train_params: dict | None = None, arch_params: dict | None = None) -> None:
    """Raise ``ValueError`` naming any unknown training or architecture parameter, before any training starts."""
    import inspect

    from .architectures import ARCHITECTURES

    resolve_training_params(arch, train_params)
    arch = ARCHITECTURE_ALIASES.get(arch, arch)
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    signature = inspect.signature(ARCHITECTURES[arch])
    known = [name for name, p in signature.parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(arch_params or {}) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)} of architecture {arch!r}; "
                         f"known: {', '.join(known)}")


def as_model_input(X) -> np.ndarray:
    """Faces ``(n, 48, 48)`` (or ``(n, 48, 48, 1)``) of any numeric type -> float32 ``(n, 48, 48, 1)``, 0..255."""
    X = np.asarray(X)
    if X.ndim == 3:
        X = X[..., None]
    if X.ndim != 4:
        raise ValueError(f"faces must be shaped (n, height, width), got {X.shape}")
    return X.astype(np.float32, copy=False)


def class_weights(y: np.ndarray, num_classes: int, spec) -> dict | None:
    """Keras ``class_weight`` dict from ``None``, ``"balanced"`` or ``{label index: weight}``.

    ``"balanced"`` weighs class ``c`` by ``n / (k * n_c)`` over the ``k``
    classes present, as scikit-learn does.
    """
    if spec is None:
        return None
    if spec == "balanced":
        counts = np.bincount(y, minlength=num_classes)
        present = counts > 0
        weights = np.where(present, len(y) / (present.sum() * np.maximum(counts, 1)), 0.0)
        return {i: float(w) for i, w in enumerate(weights)}
    if isinstance(spec, dict):
        return {int(k): float(v) for k, v in spec.items()}
    raise ValueError(f"class_weight must be None, 'balanced' or a dict, got {spec!r}")


# --------------------------------------------------------------------------- building blocks


def make_augmentation(params: dict, seed: int = 0):
    """Random preprocessing layers, active only when the trainer runs in training mode.

    They act on raw pixels (0..255), before the network's own scaling.
    """
    steps = []
    if params.get("flip"):
        steps.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if params.get("rotation"):
        steps.append(keras.layers.RandomRotation(params["rotation"] / 360.0, fill_mode="nearest", seed=seed + 2))
    if params.get("shift"):
        steps.append(keras.layers.RandomTranslation(params["shift"], params["shift"], fill_mode="nearest",
                                                    seed=seed + 1))
    if params.get("zoom"):
        steps.append(keras.layers.RandomZoom(params["zoom"], fill_mode="nearest", seed=seed + 3))
    if params.get("brightness"):
        steps.append(keras.layers.RandomBrightness(params["brightness"], value_range=(0, 255), seed=seed + 4))
    if params.get("erasing"):
        steps.append(keras.layers.RandomErasing(params["erasing"], scale=(0.02, 0.2), value_range=(0, 255),
                                                seed=seed + 5))
    return keras.Sequential(steps, name="augmentation")


def make_schedule(params: dict, steps_per_epoch: int, epochs: int):
    """The learning rate: a number (constant, plateau) or a Keras schedule over the training steps.

    "cosine" decays to 1% over all epochs; "one_cycle" rises linearly from a
    25th of the peak rate to the peak over the first ``warmup`` fraction of
    the steps, then decays along a cosine to a thousandth of it.
    """
    rate = params["learning_rate"]
    total = max(1, steps_per_epoch * epochs)
    if params["schedule"] == "cosine":
        return keras.optimizers.schedules.CosineDecay(rate, decay_steps=total, alpha=0.01)
    if params["schedule"] == "one_cycle":
        warmup = int(round(total * params["warmup"]))
        return keras.optimizers.schedules.CosineDecay(rate / 25, decay_steps=max(1, total - warmup), alpha=1e-3,
                                                      warmup_target=rate, warmup_steps=warmup)
    return rate


def make_optimizer(params: dict, steps_per_epoch: int, epochs: int):
    """The optimiser with its learning-rate schedule (:func:`make_schedule`)."""
    rate = make_schedule(params, steps_per_epoch, epochs)
    decay = params.get("weight_decay") or None
    if params["optimizer"] == "sgd":
        return keras.optimizers.SGD(rate, momentum=params["momentum"], nesterov=params["nesterov"],
                                    weight_decay=decay)
    return keras.optimizers.Adam(rate, weight_decay=decay)


def make_trainer(net, params: dict, optimizer, seed: int = 0, jit_compile="auto"):
    """The compiled training model: augmentation (when enabled) followed by ``net``.

    ``jit_compile`` is Keras' (``"auto"``: XLA where the backend and layers support it).
    """
    inputs = keras.Input(shape=net.input_shape[1:], name="face")
    x = make_augmentation(params, seed)(inputs) if params.get("augment") else inputs
    trainer = keras.Model(inputs, net(x), name="trainer")
    if params.get("label_smoothing"):
        # Smoothing needs one-hot targets: train() passes them whenever it is on.
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=params["label_smoothing"])
        accuracy = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        loss = keras.losses.SparseCategoricalCrossentropy()
        accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    trainer.compile(optimizer=optimizer, loss=loss, metrics=[accuracy], jit_compile=jit_compile)
    return trainer


def time_training(arch: str, *, batch_size: int = 128, batches: int = 3, warmup: int = 1, seed: int = 0,
                  jit_compile="auto", arch_params: dict | None = None, steps_per_epoch: int = 225) -> dict:
    """Faces a second this machine trains ``arch`` at, with the recipe's augmentation and optimiser.

    Random 48x48 pixels stand in for faces (a convolution's cost does not depend on the pixels);
    ``warmup`` untimed batches build the graph, then ``batches`` are timed.  Returns ``net`` (the
    network built), ``faces_per_second`` and ``warmup_seconds`` (building and the untimed batches).
    ``steps_per_epoch`` shapes the learning-rate schedule only (225: FER-2013's Training at batch 128).
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    params = resolve_training_params(arch)
    started = time.perf_counter()
    net = make_model(arch, **(arch_params or {}))
    trainer = make_trainer(net, params, make_optimizer(params, steps_per_epoch, 10), seed=seed,
                           jit_compile=jit_compile)
    X = rng.integers(0, 256, size=(batch_size, 48, 48, 1)).astype(np.float32)
    y = rng.integers(0, 7, size=batch_size)
    if params.get("label_smoothing"):  # the trainer's loss then takes one-hot targets
        y = np.eye(7, dtype=np.float32)[y]
    for _ in range(warmup):
        trainer.train_on_batch(X, y)
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(batches):
        trainer.train_on_batch(X, y)
    return {"net": net, "faces_per_second": batches * batch_size / (time.perf_counter() - started),
            "warmup_seconds": warmup_seconds}


def data_digest(*arrays) -> str:
    """Short hash of arrays' bytes, so a checkpoint is only resumed on the same data."""
    digest = hashlib.blake2b(digest_size=10)
    for array in arrays:
        if array is not None:
            array = np.ascontiguousarray(array)
            digest.update(str((array.shape, array.dtype.str)).encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


# --------------------------------------------------------------------------- training


def train(
    arch: str,
    X,
    y,
    *,
    validation=None,
    epochs: int = 30,
    batch_size: int = 64,
    seed: int = 0,
    num_classes: int = 7,
    arch_params: dict | None = None,
    train_params: dict | None = None,
    checkpoint_dir=None,
    resume: bool = False,
    curves_path=None,
    verbose="auto",
    callbacks=(),
    log=None,
) -> TrainingResult:
    """Train architecture ``arch`` on faces ``X`` with integer labels ``y``.

    Parameters
    ----------
    arch : str
        A key of :data:`fer_deep.architectures.ARCHITECTURES` or an alias of one
        (:data:`fer_deep.ARCHITECTURE_ALIASES`); the checkpoint records the key.
    X : array (n, 48, 48)
        Training faces, raw pixels 0..255.
    y : array (n,)
        Integer labels in ``0..num_classes-1``.
    validation : tuple (X_val, y_val), optional
        The model-selection split: picks the best epoch and stops early.
    epochs, batch_size : int
        Maximum epochs and batch size.
    seed : int
        Seed of weights, shuffling and augmentation (``keras.utils.set_random_seed``).
    num_classes : int
        Number of classes.
    arch_params : dict, optional
        Keyword arguments of the architecture builder.
    train_params : dict, optional
        Overrides of :data:`TRAINING_DEFAULTS` / :data:`COMMON_DEFAULTS`.
    checkpoint_dir : path, optional
        Where each epoch's checkpoint is written.
    resume : bool
        Continue from the checkpoint in ``checkpoint_dir`` if it was written
        with the same architecture, parameters and data (or only a smaller
        epoch budget, see :func:`extensible`); otherwise start afresh.
    curves_path : path, optional
        Where to write the training curves as PNG.
    verbose : "auto", 0, 1 or 2
        Keras' progress display (1: a progress bar per epoch).
    callbacks : sequence of keras.callbacks.Callback
        Extra callbacks, run after the checkpointing one.
    log : callable, optional
        Receives one-line progress messages (resume decisions).

    Returns
    -------
    TrainingResult
    """
    log = log or (lambda message: None)
    arch = ARCHITECTURE_ALIASES.get(arch, arch)
    arch_params = dict(arch_params or {})
    params = resolve_training_params(arch, train_params)
    X = as_model_input(X)
    y = np.asarray(y, dtype=np.int64)
    if len(X) != len(y):
        raise ValueError(f"{len(X)} faces but {len(y)} labels")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be at least 1")
    validation_data = None
    if validation is not None:
        validation_data = (as_model_input(validation[0]), np.asarray(validation[1], dtype=np.int64))
    steps_per_epoch = math.ceil(len(X) / batch_size)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    fingerprint = json.loads(json.dumps({
        "arch": arch, "arch_params": arch_params, "params": params, "epochs": epochs, "batch_size": batch_size,
        "seed": seed, "num_classes": num_classes, "input_shape": list(X.shape[1:]),
        "data": data_digest(X, y, *(validation_data or ())),
    }, default=str))

    state = read_state(checkpoint_dir) if (checkpoint_dir is not None and resume) else None
    extend = False
    if state is not None and state.get("fingerprint") != fingerprint:
        extend = extensible(state, fingerprint)
        if not extend:
            log(f"checkpoint in {checkpoint_dir} was written with other settings or data; starting afresh")
            state = None
    if state is not None:
        trainer = keras.models.load_model(checkpoint_dir / state["model_file"])
        net = trainer.get_layer(state["net_name"])
        resumed_from = state["epoch"]
        if extend and state["stopped_early"]:
            log(f"{arch} stopped early after {resumed_from} epochs in {checkpoint_dir}, so a budget of {epochs} "
                f"epochs changes nothing; reusing it")
            state["fingerprint"] = fingerprint
        elif extend:
            log(f"extending {arch} from {resumed_from} to at most {epochs} epochs ({checkpoint_dir})")
            state.update(fingerprint=fingerprint, finished=False)
        elif state["finished"]:
            log(f"{arch} already trained in {checkpoint_dir} ({resumed_from} epochs); reusing it")
        else:
            log(f"resuming {arch} after epoch {resumed_from} of {epochs} ({checkpoint_dir})")
        # A different seed per resumed epoch keeps the continuation from
        # replaying the first epochs' shuffles and augmentations.
        keras.utils.set_random_seed(seed + resumed_from)
    else:
        keras.utils.set_random_seed(seed)
        net = make_model(arch, X.shape[1:], num_classes, **arch_params)
        trainer = make_trainer(net, params, make_optimizer(params, steps_per_epoch, epochs), seed=seed)
        resumed_from = 0
        state = {
            "format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_FORMAT_VERSION, "fingerprint": fingerprint,
            "net_name": net.name, "epoch": 0, "history": {}, "best": -1.0, "best_epoch": 0, "wait": 0,
            "plateau_best": float("inf"), "plateau_wait": 0, "stopped_early": False, "finished": False,
        }
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)

    monitor = EpochMonitor(net, state, params, checkpoint_dir, validated=validation_data is not None)
    targets = y
    if params.get("label_smoothing"):
        targets = keras.utils.to_categorical(y, num_classes)
        if validation_data is not None:
            validation_data = (validation_data[0], keras.utils.to_categorical(validation_data[1], num_classes))
    if not state["finished"] and state["epoch"] < epochs:
        trainer.fit(
            X, targets,
            batch_size=batch_size,
            epochs=epochs,
            initial_epoch=state["epoch"],
            validation_data=validation_data,
            class_weight=class_weights(y, num_classes, params["class_weight"]),
            shuffle=True,
            callbacks=[monitor, *callbacks],
            verbose=verbose,
        )
    state["finished"] = True
    if checkpoint_dir is not None:
        write_state(checkpoint_dir, state)

    # Select the best epoch's weights: from memory if this run saw it, else from the checkpoint.
    if monitor.best_weights is not None:
        net.set_weights(monitor.best_weights)
    elif checkpoint_dir is not None and state.get("best_file"):
        net.load_weights(checkpoint_dir / state["best_file"])

    curves = None
    if curves_path is not None:
        written = plot_history(state["history"], curves_path, best_epoch=state["best_epoch"], title=arch)
        curves = str(written) if written is not None else None
    return TrainingResult(
        model=net,
        history=state["history"],
        epochs_run=state["epoch"],
        best_epoch=state["best_epoch"],
        stopped_early=state["stopped_early"],
        resumed_from=resumed_from,
        params=params,
        fit_seconds=float(sum(state["history"].get("epoch_seconds", []))),
        curves_png=curves,
    )
