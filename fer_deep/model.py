"""DeepModel: a Keras CNN with the interface every fer-bench model shares.

::

    fit(X, y) -> self          predict(X) -> (n,) label names
    predict_proba(X) -> (n, k) classes_ (label names, in a fixed order)
    save(path) / load(path)    metadata: dataset, split, params, versions, scores

``X`` is always a stack of ``uint8`` gray faces shaped ``(n, 48, 48)``.

A saved DeepModel is one zip file holding ``model.keras`` (the Keras model,
without optimiser) and ``fer-bench-deep.json`` (format name and version,
architecture, parameters, classes, history, library versions, metadata).
Loading it needs no flags.  This module imports Keras only inside the methods
that need it, so reading a file's metadata and reporting a missing ``deep``
extra work without Keras.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from fer_bench import _core
from fer_bench._core import FER2013_CLASSES, encode_labels

from . import DEFAULT_EPOCHS, DeepModelFileError, check_architecture_name, require_keras

DEEP_MODEL_FORMAT = "fer-bench-deep-model"
DEEP_MODEL_FORMAT_VERSION = 1
METADATA_MEMBER = "fer-bench-deep.json"
KERAS_MEMBER = "model.keras"
PREDICT_BATCH = 256
REQUIRED_METADATA = ("arch", "classes", "epochs", "batch_size", "seed", "tta")


DEEP_LIBRARIES = ("fer-bench", "numpy", "keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "h5py")
"""The distributions whose versions a saved deep model records (with the Keras backend)."""


def library_versions() -> dict:
    """Versions of the libraries a saved deep model depends on, and the Keras backend."""
    versions = _core.library_versions(DEEP_LIBRARIES)
    keras = require_keras()
    versions["keras_backend"] = keras.backend.backend()
    return versions


TTA_MODES = (False, "flip", "ten_crop")


def check_tta(tta):
    """Normalise a test-time augmentation setting: ``True`` means ``"flip"``; unknown values are an error."""
    if tta is True:
        return "flip"
    if tta in (False, None, "none", ""):
        return False
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from none, flip, ten_crop")
    return tta


def crop_shifts(X: np.ndarray, margin: int) -> list:
    """The face stack shifted so a network's centre window sees its centre and four corner windows.

    A network that cuts the centre ``(h - 2 margin)`` square of its input sees,
    on a face rolled by ``(dy, dx)`` with ``|dy|, |dx| <= margin``, the window
    of the original face offset by ``(-dy, -dx)``; the rows and columns that
    the roll wraps around fall outside that window.

    Parameters
    ----------
    X : array (n, h, w)
        Faces.
    margin : int
        Pixels between the face's border and the network's centre window; at least 1.

    Returns
    -------
    list of array (n, h, w)
        Centre, then the top-left, top-right, bottom-left and bottom-right windows.
    """
    if margin < 1:
        raise ValueError("ten-crop test-time augmentation needs a network that sees a centre crop of the face "
                         "(vgg_cpu, resnet_cpu); use tta='flip' for this one")
    offsets = [(0, 0), (margin, margin), (margin, -margin), (-margin, margin), (-margin, -margin)]
    return [np.roll(X, offset, axis=(1, 2)) for offset in offsets]


class DeepModel(ClassifierMixin, BaseEstimator):
    """A Keras CNN on 48x48 gray faces, trained with augmentation and selected on a validation split.

    A scikit-learn estimator as far as Keras allows: ``__init__`` stores the
    parameters as given and ``fit`` validates them, so ``get_params``,
    ``set_params`` and ``clone`` work on an unfitted model, and an unfitted
    model raises ``NotFittedError``.  A fitted model holds a Keras network,
    which ``clone`` leaves behind (it returns an unfitted copy) and which is
    saved with :meth:`save` rather than pickled.

    Parameters
    ----------
    arch : str
        Architecture name, a key of :data:`fer_deep.ARCHITECTURE_NAMES` (``tutorial``, ``vgg`` ...).
    epochs : int, optional
        Maximum training epochs (early stopping may end sooner); default
        :data:`fer_deep.DEFAULT_EPOCHS` of the architecture.
    batch_size : int
        Training batch size.
    classes : sequence of str
        Label names in label order; ``fit`` sets ``classes_`` from it.
    random_state : int
        Seed of weights, shuffling and augmentation.
    tta : bool or str
        Test-time augmentation: ``False`` (none), ``"flip"`` (or ``True``:
        average each face with its mirror image) or ``"ten_crop"`` (average
        the four corner windows, the centre window and their mirror images;
        for the networks that cut a centre crop, see :func:`crop_shifts`).
    arch_params : dict, optional
        Keyword arguments of the architecture builder.
    train_params : dict, optional
        Training overrides (``learning_rate``, ``optimizer``, ``schedule``,
        ``class_weight``, ``patience``, ``augment`` ...; see
        :data:`fer_deep.training.TRAINING_DEFAULTS`).
    verbose : "auto", 0, 1 or 2
        Keras' progress display during ``fit``.
    metadata : dict, optional
        Free-form provenance (dataset, split, scores); saved with the model.
    """

    family = "deep"

    def __init__(self, arch="tutorial", *, epochs=None, batch_size=64, classes=FER2013_CLASSES, random_state=0,
                 tta=False, arch_params=None, train_params=None, verbose="auto", metadata=None):
        self.arch = arch
        self.epochs = epochs
        self.batch_size = batch_size
        self.classes = classes
        self.random_state = random_state
        self.tta = tta
        self.arch_params = arch_params
        self.train_params = train_params
        self.verbose = verbose
        self.metadata = metadata

    # ------------------------------------------------------------------ fitting

    def fit(self, X, y, *, validation=None, checkpoint_dir=None, resume=False, curves_path=None, callbacks=(),
            log=None):
        """Train on faces ``X`` with labels ``y`` (names or indices).

        Parameters
        ----------
        X : array (n, 48, 48)
            Training faces, ``uint8``.
        y : array (n,)
            Labels, as names in ``classes_`` or integer indices.
        validation : tuple (X_val, y_val), optional
            The model-selection split: picks the best epoch and stops early.
            Never pass the test split here.
        checkpoint_dir : path, optional
            Where every epoch's checkpoint is written.
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir`` when it matches
            these settings and data.
        curves_path : path, optional
            Where to write the training curves (PNG).
        callbacks : sequence of keras.callbacks.Callback
            Extra Keras callbacks.
        log : callable, optional
            Receives one-line messages (resume decisions).

        Returns
        -------
        DeepModel
            ``self``, with ``model_``, ``history_``, ``epochs_run_``, ``best_epoch_``.
        """
        require_keras()
        from .training import train

        arch = check_architecture_name(self.arch)
        epochs = int(self.epochs if self.epochs is not None else DEFAULT_EPOCHS[arch])
        check_tta(self.tta)
        classes = tuple(self.classes)
        X = self._check_faces(X)
        y = encode_labels(y, classes)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} faces but {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise ValueError("training needs faces of at least two classes")
        if validation is not None:
            validation = (self._check_faces(validation[0]), encode_labels(validation[1], classes))
        result = train(
            arch, X, y,
            validation=validation,
            epochs=epochs,
            batch_size=int(self.batch_size),
            seed=self.random_state,
            num_classes=len(classes),
            arch_params=dict(self.arch_params or {}),
            train_params=dict(self.train_params or {}),
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            curves_path=curves_path,
            verbose=self.verbose,
            callbacks=callbacks,
            log=log,
        )
        self.classes_ = classes
        self.arch_ = arch
        self.epochs_ = epochs
        self.model_ = result.model
        self.history_ = result.history
        self.epochs_run_ = result.epochs_run
        self.best_epoch_ = result.best_epoch
        self.stopped_early_ = result.stopped_early
        self.resumed_from_ = result.resumed_from
        self.training_params_ = result.params
        self.fit_seconds_ = result.fit_seconds
        self.curves_png_ = result.curves_png
        self.n_train_ = int(len(y))
        self.input_shape_ = tuple(int(v) for v in X.shape[1:])
        return self

    def _check_fitted(self):
        check_is_fitted(self, "model_", msg="this %(name)s is not fitted yet; call fit(X, y) first")

    @staticmethod
    def _check_faces(X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim == 4 and X.shape[-1] == 1:
            X = X[..., 0]
        if X.ndim != 3:
            raise ValueError(f"faces must be a stack shaped (n, 48, 48), got shape {X.shape}")
        return X

    # ------------------------------------------------------------------ predicting

    def _forward(self, X: np.ndarray) -> np.ndarray:
        from .training import as_model_input

        X = as_model_input(X)
        out = np.empty((len(X), len(self.classes_)), dtype=np.float64)
        for start in range(0, len(X), PREDICT_BATCH):
            batch = X[start:start + PREDICT_BATCH]
            # predict_on_batch runs the compiled predict step without building a
            # data pipeline, so one face costs milliseconds, not tens of them.
            out[start:start + len(batch)] = np.asarray(self.model_.predict_on_batch(batch))
        return out

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, k)``, columns in ``classes_`` order.

        With ``tta``, the average over the face's views (mirror image; corner and centre windows).
        """
        self._check_fitted()
        X = self._check_faces(X)
        if self.input_shape_ and X.shape[1:] != tuple(self.input_shape_[:2]):
            raise ValueError(f"faces must be {self.input_shape_[0]}x{self.input_shape_[1]}, got {X.shape[1:]}")
        if len(X) == 0:
            return np.zeros((0, len(self.classes_)))
        tta = check_tta(self.tta)
        if not tta:
            return self._forward(X)
        views = [X, X[:, :, ::-1]]
        if tta == "ten_crop":
            views = [mirrored for shifted in crop_shifts(X, self.crop_margin()) for mirrored in
                     (shifted, shifted[:, :, ::-1])]
        return sum(self._forward(view) for view in views) / len(views)

    def crop_margin(self) -> int:
        """Pixels between the face's border and the centre window the network sees (0: it sees the whole face)."""
        self._check_fitted()
        try:
            crop = self.model_.get_layer("centre_crop")
        except ValueError:
            return 0
        return (int(self.model_.input_shape[1]) - int(crop.height)) // 2

    def predict(self, X) -> np.ndarray:
        """Label names of faces ``X`` (the most probable class)."""
        proba = self.predict_proba(X)
        return np.asarray(self.classes_)[np.argmax(proba, axis=1)]

    # ------------------------------------------------------------------ persistence

    def describe(self) -> dict:
        """The JSON metadata written into a saved model."""
        self._check_fitted()
        return {
            "format": DEEP_MODEL_FORMAT,
            "format_version": DEEP_MODEL_FORMAT_VERSION,
            "family": self.family,
            "arch": self.arch_,
            "arch_params": dict(self.arch_params or {}),
            "train_params": dict(self.train_params or {}),
            "training_params": getattr(self, "training_params_", {}),
            "classes": list(self.classes_),
            "input_shape": list(self.input_shape_),
            "epochs": self.epochs_,
            "batch_size": int(self.batch_size),
            "seed": self.random_state,  # the file format's name for random_state
            "tta": check_tta(self.tta),
            "epochs_run": getattr(self, "epochs_run_", None),
            "best_epoch": getattr(self, "best_epoch_", None),
            "stopped_early": getattr(self, "stopped_early_", None),
            "history": getattr(self, "history_", {}),
            "n_train": getattr(self, "n_train_", None),
            "versions": library_versions(),
            "metadata": dict(self.metadata or {}),
        }

    def save(self, path) -> Path:
        """Write the model as one zip file (Keras model + JSON metadata), atomically; returns the path."""
        self._check_fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        description = json.dumps(self.describe(), indent=1, default=_core.json_default)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-deep-") as scratch:
            keras_file = Path(scratch) / KERAS_MEMBER
            self.model_.save(keras_file)
            archive = Path(scratch) / "model.zip"
            with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as bundle:
                # Metadata first, so a reader finds the format before the weights.
                bundle.writestr(METADATA_MEMBER, description)
                bundle.write(keras_file, KERAS_MEMBER)
            os.replace(archive, path)
        return path

    @classmethod
    def load(cls, path) -> "DeepModel":
        """Load a model written by :meth:`save`.

        Raises
        ------
        DeepModelFileError
            The file is missing, not a fer-bench deep model, of another format
            version, or its Keras model cannot be read.
        fer_deep.DeepDependencyError
            Keras is not installed.
        """
        path = Path(path)
        info = read_deep_metadata(path)
        keras = require_keras()
        try:
            arch = check_architecture_name(info["arch"])  # "seed", the tutorial's former name, reads as "tutorial"
            model = cls(
                arch, epochs=info["epochs"], batch_size=info["batch_size"], classes=tuple(info["classes"]),
                random_state=info["seed"], tta=check_tta(info["tta"]), arch_params=info.get("arch_params") or {},
                train_params=info.get("train_params") or {}, metadata=info.get("metadata") or {},
            )
        except ValueError as error:  # e.g. an architecture this version does not know
            raise DeepModelFileError(f"{path}: {error}; this fer-bench cannot describe the model") from None
        with zipfile.ZipFile(path) as bundle, tempfile.TemporaryDirectory(prefix="fer-deep-") as scratch:
            try:
                bundle.extract(KERAS_MEMBER, scratch)
                model.model_ = keras.models.load_model(Path(scratch) / KERAS_MEMBER, compile=False)
            except KeyError:
                raise DeepModelFileError(f"{path}: the model file lacks its Keras model ({KERAS_MEMBER})") from None
            except Exception as error:  # Keras raises many types on damaged or foreign files
                raise DeepModelFileError(
                    f"{path}: its Keras model cannot be read ({type(error).__name__}: {error})"
                ) from None
        model.classes_, model.arch_, model.epochs_ = model.classes, arch, int(info["epochs"])
        model.history_ = info.get("history", {})
        model.epochs_run_ = info.get("epochs_run")
        model.best_epoch_ = info.get("best_epoch")
        model.stopped_early_ = info.get("stopped_early")
        model.training_params_ = info.get("training_params", {})
        model.n_train_ = info.get("n_train")
        model.input_shape_ = tuple(info.get("input_shape") or (48, 48, 1))
        model.saved_versions_ = info.get("versions", {})
        return model

    def __repr__(self) -> str:
        return f"DeepModel(arch={self.arch!r}, epochs={self.epochs}, batch_size={self.batch_size}, tta={self.tta})"


def is_deep_model_file(path) -> bool:
    """Whether ``path`` is a zip file holding a fer-bench deep model's metadata (no Keras needed)."""
    return _core.zip_holds(path, METADATA_MEMBER)


def read_deep_metadata(path) -> dict:
    """Open a saved DeepModel's metadata and check its format and version (no Keras needed).

    Raises
    ------
    DeepModelFileError
        The file is missing, not a fer-bench deep model, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise DeepModelFileError(f"{path}: no such model file")
    if not is_deep_model_file(path):
        raise DeepModelFileError(f"{path}: not a fer-bench deep model file; train one with `fer-bench train cnn`")
    try:
        with zipfile.ZipFile(path) as bundle:
            info = json.loads(bundle.read(METADATA_MEMBER))
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise DeepModelFileError(f"{path}: its metadata cannot be read ({error})") from None
    if not isinstance(info, dict) or info.get("format") != DEEP_MODEL_FORMAT:
        raise DeepModelFileError(f"{path}: not a fer-bench deep model file; train one with `fer-bench train cnn`")
    if info.get("format_version") != DEEP_MODEL_FORMAT_VERSION:
        raise DeepModelFileError(
            f"{path}: deep model format version {info.get('format_version')}, this fer-bench reads version "
            f"{DEEP_MODEL_FORMAT_VERSION}; retrain the model with this version"
        )
    missing = [key for key in REQUIRED_METADATA if key not in info]
    if missing:
        raise DeepModelFileError(f"{path}: its metadata lacks {', '.join(missing)}; the file is damaged")
    return info

