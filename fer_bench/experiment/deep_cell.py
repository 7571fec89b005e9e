"""The harness cell of the deep path: train a CNN on one split, select on validation, score on test.

:func:`run_deep_cell` writes the same record as
:func:`fer_bench.experiment.harness.run_classic_cell` (same keys, plus the CNN's own:
``arch``, ``epochs_run``, ``history``, ``curves_png``, ``backend`` ...), so the
reports treat both families alike.  The validation split (PublicTest for
FER-2013) picks the best epoch and stops training early; the test split
(PrivateTest) is only scored.  Checkpoints go to
``out_dir/checkpoints/<cell>/``, so rerunning the same cell resumes an
interrupted training, and reuses a finished one, instead of starting over.
A run folder that holds a CNN under a former name of its architecture
(``cnn-seed``, the tutorial net's) keeps that name: see :func:`run_folder_arch`.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from .._core import stratified_subset
from ..metrics import classification_metrics
from .harness import cell_record, model_metadata, time_prediction_isolated, write_cell_outputs


def deep_cell_id(arch: str) -> str:
    """File-safe name of a CNN cell, e.g. ``cnn-tutorial``."""
    return f"cnn-{arch}"


def run_folder_arch(arch: str, out_dir) -> str:
    """The name under which run folder ``out_dir`` knows architecture ``arch``.

    The registry name (an alias such as ``seed`` reads as ``tutorial``), unless
    the folder holds this CNN's record or checkpoints under a former name
    (:data:`fer_deep.ARCHITECTURE_ALIASES`): then that name, so a rerun finds
    the finished record (``records/cnn-seed.json``) or resumes the interrupted
    training (``checkpoints/cnn-seed/``) instead of starting a second cell.
    """
    from fer_deep import ARCHITECTURE_ALIASES

    name = ARCHITECTURE_ALIASES.get(arch, arch)
    out_dir = Path(out_dir)
    for former, current in ARCHITECTURE_ALIASES.items():
        cell = deep_cell_id(former)
        if current == name and ((out_dir / "records" / f"{cell}.json").is_file()
                                or (out_dir / "checkpoints" / cell).is_dir()):
            return former
    return name


CELL_NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-_.")


def check_cell_name(name: str) -> str:
    """``name`` if it can name a cell's files (letters, digits, ``+-_.``, not starting with a dot); else ValueError."""
    if not name or len(name) > 100 or name[0] == "." or not set(name) <= CELL_NAME_CHARACTERS:
        raise ValueError(f"cell name {name!r}: use 1-100 letters, digits and + - _ . (not starting with a dot), "
                         f"e.g. cnn-vgg_cpu-seed1")
    return name


def cell_in_folder(out_dir, name: str) -> str | None:
    """What run folder ``out_dir`` holds of cell ``name``: its finished record, a training's checkpoint, or None."""
    from fer_deep.checkpoints import STATE_FILE

    out_dir = Path(out_dir)
    if (out_dir / "records" / f"{name}.json").is_file():
        return str(out_dir / "records" / f"{name}.json")
    if (out_dir / "checkpoints" / name / STATE_FILE).is_file():
        return str(out_dir / "checkpoints" / name)
    return None


def run_deep_cell(
    dataset,
    arch: str,
    out_dir,
    *,
    epochs: int,
    batch_size: int,
    seed: int = 0,
    resume: bool = True,
    train_subset: int | None = None,
    log=print,
    tta: bool = False,
    arch_params: dict | None = None,
    verbose="auto",
    cell: str | None = None,
    **train_params,
) -> dict:
    """Train, select and score one CNN cell; write its record, model, predictions and curves.

    Parameters
    ----------
    dataset : fer_bench.data.Dataset
        Train, validation and test splits.
    arch : str
        Architecture name (``tutorial``, ``vgg``, ``mobilenet_v2`` ...) or an
        alias; the cell is named as :func:`run_folder_arch` says.
    out_dir : path
        Run folder: ``records/``, ``models/``, ``predictions/``, ``curves/``, ``checkpoints/``.
    epochs, batch_size : int
        Maximum epochs (early stopping on validation may end sooner) and batch size.
    seed : int
        Seed of the subset, weights, shuffling and augmentation.
    resume : bool
        Continue from this cell's checkpoint when it matches these settings.
    train_subset : int, optional
        Train on a seeded stratified subset of this many training faces
        (validation and test splits stay whole).
    log : callable
        Receives one-line progress messages.
    tta : bool
        Average each test face's probabilities with its mirror image's.
    arch_params : dict, optional
        Keyword arguments of the architecture builder.
    verbose : "auto", 0, 1 or 2
        Keras' progress display during training.
    cell : str, optional
        The cell's name [default: ``cnn-ARCH``, see :func:`deep_cell_id`]: a
        run folder keeps several trainings of one architecture (other seeds,
        widths) under names of their own.
    **train_params
        Training overrides (``learning_rate``, ``optimizer``, ``schedule``,
        ``class_weight``, ``patience``, ``augment`` ...).

    Returns
    -------
    dict
        The record, also written to ``out_dir/records/<cell>.json``.
    """
    from fer_deep import require_keras

    keras = require_keras()
    from fer_deep.model import DeepModel, library_versions

    out_dir = Path(out_dir)
    arch = run_folder_arch(arch, out_dir)
    name = cell or deep_cell_id(arch)
    classes = tuple(dataset.classes)
    started = datetime.now(timezone.utc)
    wall_start = time.perf_counter()
    train, val, test = dataset.train, dataset.val, dataset.test

    chosen = stratified_subset(train.y, train_subset, seed) if train_subset else np.arange(len(train))
    X_train, y_train = train.X[chosen], train.y[chosen]
    log(f"{name}: training on {len(y_train):,} {train.name} faces, selecting on {val.name} ({len(val):,}), "
        f"backend {keras.backend.backend()}")

    model = DeepModel(arch, epochs=epochs, batch_size=batch_size, classes=classes, random_state=seed, tta=tta,
                      arch_params=dict(arch_params or {}), train_params=dict(train_params or {}), verbose=verbose)
    model.fit(
        X_train, y_train,
        validation=(val.X, val.y),
        checkpoint_dir=out_dir / "checkpoints" / name,
        resume=resume,
        curves_path=out_dir / "curves" / f"{name}.png",
        log=lambda message: log(f"{name}: {message}"),
    )
    history = model.history_
    validation_accuracies = history.get("val_accuracy", [])
    selection = [
        {"params": {"epoch": epoch}, "validation_accuracy": accuracy, "fit_seconds": seconds}
        for epoch, (accuracy, seconds) in enumerate(zip(validation_accuracies, history.get("epoch_seconds", [])),
                                                     start=1)
    ]
    val_accuracy = validation_accuracies[model.best_epoch_ - 1] if validation_accuracies else None
    log(f"{name}: {model.epochs_run_} epochs, best {val.name} accuracy {val_accuracy:.4f} at epoch "
        f"{model.best_epoch_}" if val_accuracy is not None else f"{name}: {model.epochs_run_} epochs")

    probabilities = model.predict_proba(test.X)
    predicted = np.argmax(probabilities, axis=1)
    scores = classification_metrics(test.y, predicted, classes)
    log(f"{name}: {test.name} accuracy {scores['accuracy']:.4f}, macro F1 {scores['f1_macro']:.4f}; "
        "timing predictions in a one-thread process")
    timing = time_prediction_isolated(model, test.X)

    params = {"arch": arch, "arch_params": model.arch_params, "epochs": epochs, "batch_size": batch_size,
              "tta": tta, **model.training_params_}
    record = cell_record(dataset, name, "deep", started, library_versions(), {
        "features": "pixels",  # a CNN learns its own features from the raw 48x48 pixels
        "feature_params": {},
        "n_features": int(np.prod(X_train.shape[1:])),
        "classifier": name,
        "classifier_params": params,
        "arch": arch,
        "arch_params": model.arch_params,
        "train_params": model.training_params_,
        "selection": selection,
        "grid_note": None,  # a CNN has no selection grid to fit to the training faces
        "validation_accuracy": val_accuracy,
        "flip_augmentation": bool(model.training_params_.get("augment") and model.training_params_.get("flip")),
        "tta": tta,
        "seed": seed,
        "n_train": int(len(y_train)),
        "train_subset": train_subset,
        "n_validation": int(len(val)),
        "n_test": int(len(test)),
        **scores,
        "fit_seconds": model.fit_seconds_,
        "selection_seconds": model.fit_seconds_,  # selection is the per-epoch validation inside training
        "extract_seconds": 0.0,
        **timing,
        "epochs": epochs,
        "epochs_run": model.epochs_run_,
        "best_epoch": model.best_epoch_,
        "stopped_early": model.stopped_early_,
        "resumed_from": model.resumed_from_,
        "history": history,
        "curves_png": model.curves_png_,
        "backend": keras.backend.backend(),
    })
    model.metadata = model_metadata(dataset, record, scores, started, n_train=record["n_train"],
                                    train_subset=train_subset, best_epoch=model.best_epoch_,
                                    validation_accuracy=val_accuracy, seed=seed)
    return write_cell_outputs(out_dir, record, model, ".zip", test.y, predicted, probabilities, wall_start)
