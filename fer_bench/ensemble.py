"""Ensembles: one model that averages the probabilities of saved models of either family.

An :class:`EnsembleModel` holds fitted members (CNNs, classical models, or
both: a *fusion*) that share one class list, and weighs their probabilities
with weights chosen on the validation split (PublicTest for FER-2013) alone.
It offers the interface every fer-bench model shares (``predict``,
``predict_proba``, ``classes_``, ``save``/``load``, ``metadata``), and its
``predict`` is the argmax of its ``predict_proba``, so the label a user gets
is the one the scores count.

A saved ensemble is one zip file: ``fer-bench-ensemble.json`` (format,
classes, member names and files, weights, metadata) and each member's own
saved file under ``members/``.  A shipped ensemble may instead name members
that are shipped models (``shipped:svm``) with their SHA-256, checked on
loading.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ._core import encode_labels, file_sha256, json_default, zip_holds

ENSEMBLE_FORMAT = "fer-bench-ensemble"
ENSEMBLE_FORMAT_VERSION = 1
METADATA_MEMBER = "fer-bench-ensemble.json"
SHIPPED_PREFIX = "shipped:"
"""How a saved ensemble names a member that is a shipped model's file rather than a copy inside it."""
WEIGHT_STEP = 0.05
"""Spacing of the grid of weights searched on the validation split (weights sum to 1)."""


class EnsembleFileError(ValueError):
    """An ensemble file could not be loaded; the message says why."""


def weight_grid(n_members: int, step: float = WEIGHT_STEP) -> np.ndarray:
    """Every weight vector on the simplex whose entries are multiples of ``step`` (rows sum to 1)."""
    units = int(round(1 / step))
    rows = [combo for combo in itertools.product(range(units + 1), repeat=n_members - 1) if sum(combo) <= units]
    grid = np.array([(*combo, units - sum(combo)) for combo in rows], dtype=np.float64)
    return grid / units


CRITERIA = ("accuracy", "log_loss")
"""What :func:`choose_weights` optimises on the validation faces."""


def choose_weights(probabilities, y, *, step: float = WEIGHT_STEP, criterion: str = "accuracy") -> np.ndarray:
    """Member weights that maximise accuracy on ``y``; ties go to the lower log loss, then to equal weights.

    With ``criterion="log_loss"`` the lowest log loss wins, ties going to the higher accuracy.

    Parameters
    ----------
    probabilities : sequence of array (n, k)
        Each member's probabilities on the validation faces.
    y : array (n,)
        Integer validation labels.
    step : float
        Grid spacing; with more than four members the grid is too large, and
        equal weights are returned.
    criterion : {"accuracy", "log_loss"}
        What is optimised first (see :data:`CRITERIA`).

    Returns
    -------
    array (m,)
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown weight criterion {criterion!r}; choose from {', '.join(CRITERIA)}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in probabilities])  # (m, n, k)
    m = len(stacked)
    equal = np.full(m, 1.0 / m)
    if m == 1 or m > 4:
        return equal
    grid = weight_grid(m, step)
    rows = np.arange(len(y))
    best, best_key = equal, None
    for weights in grid:
        mixed = np.tensordot(weights, stacked, axes=1)
        accuracy = float(np.mean(np.argmax(mixed, axis=1) == y))
        log_loss = float(-np.mean(np.log(np.clip(mixed[rows, y], 1e-12, None))))
        key = (accuracy, -log_loss) if criterion == "accuracy" else (-log_loss, accuracy)
        key = (*key, -float(np.abs(weights - equal).sum()))
        if best_key is None or key > best_key:
            best, best_key = weights, key
    return best


class EnsembleModel:
    """The weighted average of several fitted models' probabilities.

    Parameters
    ----------
    members : sequence of fitted models
        Models with ``predict_proba`` and the same ``classes_`` (in the same order).
    names : sequence of str, optional
        A name per member (the run cell it came from); default ``member0`` ...
    weights : array-like or None
        Fixed weights (normalised to sum to 1); ``None`` until :meth:`fit`
        chooses them on validation faces.
    metadata : dict, optional
        Free-form provenance (dataset, split, scores); saved with the model.
    shipped : dict, optional
        ``{member name: (shipped model name, its file)}``: members that are
        shipped models; :meth:`save` stores them as references (see there).
        A loaded ensemble knows the shipped members it refers to.
    """

    family = "ensemble"

    def __init__(self, members, names=None, weights=None, metadata=None, shipped=None):
        self.members = list(members)
        self.names = list(names) if names is not None else [f"member{i}" for i in range(len(self.members))]
        self.weights = weights
        self.metadata = dict(metadata or {})
        self.shipped = dict(shipped or {})
        if len(self.members) < 2:
            raise ValueError("an ensemble needs at least two models")
        if len(self.names) != len(self.members):
            raise ValueError(f"{len(self.names)} names for {len(self.members)} models")
        unknown = sorted(set(self.shipped) - set(self.names))
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a member of this ensemble (members: {', '.join(self.names)})")
        first = tuple(self.members[0].classes_)
        for name, member in zip(self.names, self.members):
            if tuple(member.classes_) != first:
                raise ValueError(f"model {name!r} predicts classes {', '.join(member.classes_)}, the first model "
                                 f"{', '.join(first)}; ensemble members must share one class list in one order")
        self.classes_ = first
        if weights is not None:
            self.weights_ = self._normalise(weights)

    def _normalise(self, weights) -> np.ndarray:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (len(self.members),) or np.any(weights < 0) or weights.sum() <= 0:
            raise ValueError(f"weights must be {len(self.members)} non-negative numbers with a positive sum")
        return weights / weights.sum()

    def member_probabilities(self, X) -> list:
        """Each member's ``predict_proba(X)``."""
        return [np.asarray(member.predict_proba(X), dtype=np.float64) for member in self.members]

    def fit(self, X, y, *, probabilities=None):
        """Choose the weights on validation faces ``X`` with labels ``y`` (never the test split).

        Parameters
        ----------
        X : array (n, 48, 48) or None
            Validation faces (unused when ``probabilities`` are given).
        y : array (n,)
            Labels, as names or integer indices.
        probabilities : sequence of array (n, k), optional
            The members' probabilities on ``X``, when already computed.

        Returns
        -------
        EnsembleModel
        """
        y = encode_labels(y, self.classes_)
        if probabilities is None:
            probabilities = self.member_probabilities(X)
        self.weights_ = self._normalise(self.weights) if self.weights is not None else choose_weights(
            probabilities, y)
        mixed = np.tensordot(self.weights_, np.stack(probabilities), axes=1)
        self.validation_accuracy_ = float(np.mean(np.argmax(mixed, axis=1) == y))
        return self

    def _check_fitted(self):
        if not hasattr(self, "weights_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this EnsembleModel has no weights yet; call fit(X_val, y_val) or give weights")

    def combine(self, probabilities) -> np.ndarray:
        """The weighted average of members' probabilities ``[(n, k), ...]``."""
        self._check_fitted()
        return np.tensordot(self.weights_, np.stack([np.asarray(p, dtype=np.float64) for p in probabilities]),
                            axes=1)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, k)``: the weighted average of the members'."""
        self._check_fitted()
        return self.combine(self.member_probabilities(X))

    def predict(self, X) -> np.ndarray:
        """Label names: the most probable class of :meth:`predict_proba`."""
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(X), axis=1)]

    # ------------------------------------------------------------------ persistence

    def save(self, path, *, shipped_members=None) -> Path:
        """Write the ensemble (members' files, weights, metadata) as one zip file, atomically.

        Parameters
        ----------
        path : path
            The zip file to write.
        shipped_members : dict, optional
            ``{member name: (shipped model name, its file)}``: members that are
            shipped models, stored as a reference to the shipped model and its
            file's SHA-256 instead of a copy (a shipped ensemble costs no second
            copy of its parts).  Loading checks the digest.  The members the
            ensemble was built with as shipped models (``shipped``) are always
            stored so.
        """
        self._check_fitted()
        path = Path(path)
        shipped_members = {**self.shipped, **dict(shipped_members or {})}
        unknown = sorted(set(shipped_members) - set(self.names))
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a member of this ensemble (members: {', '.join(self.names)})")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent, prefix=".tmp-ensemble-") as scratch:
            files, digests = [], {}
            for index, (name, member) in enumerate(zip(self.names, self.members)):
                if name in shipped_members:
                    shipped_name, shipped_path = shipped_members[name]
                    reference = SHIPPED_PREFIX + shipped_name
                    digests[reference] = file_sha256(shipped_path)
                    files.append((reference, None))
                    continue
                suffix = _member_suffix(member)
                saved = member.save(Path(scratch) / f"{index}{suffix}")
                files.append((f"members/{index}-{_file_safe(name)}{suffix}", saved))
            description = {
                "format": ENSEMBLE_FORMAT, "format_version": ENSEMBLE_FORMAT_VERSION, "family": self.family,
                "classes": list(self.classes_), "names": self.names, "files": [member for member, _ in files],
                "families": [member.family for member in self.members], "weights": self.weights_.tolist(),
                "validation_accuracy": getattr(self, "validation_accuracy_", None), "metadata": self.metadata,
                "shipped_digests": digests,
            }
            archive = Path(scratch) / "ensemble.zip"
            with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as bundle:
                bundle.writestr(METADATA_MEMBER, json.dumps(description, indent=1, default=json_default))
                for member_name, saved in files:
                    if saved is not None:
                        bundle.write(saved, member_name)
            os.replace(archive, path)
        return path

    @classmethod
    def load(cls, path, *, load_member, shipped_file=None) -> "EnsembleModel":
        """Load an ensemble written by :meth:`save`, each member with ``load_member(path)``.

        ``shipped_file(name)`` gives the file of a shipped model that the
        ensemble refers to (a ``ValueError`` if there is none).
        :func:`fer_bench.models.load_model` is the usual entry point; it passes both here.
        """
        path = Path(path)
        info = read_ensemble_metadata(path)
        members, shipped = [], {}
        with zipfile.ZipFile(path) as bundle, tempfile.TemporaryDirectory(prefix="fer-ensemble-") as scratch:
            for name, member_name in zip(info["names"], info["files"]):
                if member_name.startswith(SHIPPED_PREFIX):
                    member_path = _checked_shipped_member(path, member_name, info, shipped_file)
                    shipped[name] = (member_name[len(SHIPPED_PREFIX):], member_path)
                    members.append(load_member(member_path))
                    continue
                if member_name not in bundle.namelist():
                    raise EnsembleFileError(f"{path}: the ensemble lacks its member {member_name}; the file is damaged")
                target = Path(scratch) / Path(member_name).name
                target.write_bytes(bundle.read(member_name))
                members.append(load_member(target))
        try:
            model = cls(members, names=info["names"], weights=info["weights"], metadata=info.get("metadata"),
                        shipped=shipped)
        except ValueError as error:
            raise EnsembleFileError(f"{path}: {error}") from None
        model.validation_accuracy_ = info.get("validation_accuracy")
        return model

    def __repr__(self) -> str:
        weights = getattr(self, "weights_", None)
        shown = ", ".join(f"{name}: {w:.2f}" for name, w in zip(self.names, weights)) if weights is not None else \
            ", ".join(self.names)
        return f"EnsembleModel({shown})"


def _checked_shipped_member(path: Path, reference: str, info: dict, shipped_file) -> Path:
    """The shipped file an ensemble refers to, if it is still the file the ensemble was made with."""
    name = reference[len(SHIPPED_PREFIX):]
    if shipped_file is None:
        raise EnsembleFileError(f"{path}: it is built on the shipped model {name!r}; load it with "
                                f"fer_bench.models.load_model")
    try:
        member = Path(shipped_file(name))
    except ValueError as error:
        raise EnsembleFileError(f"{path}: it is built on the shipped model {name!r}: {error}") from None
    expected = (info.get("shipped_digests") or {}).get(reference)
    if expected != file_sha256(member):
        raise EnsembleFileError(f"{path}: the shipped model {name!r} it is built on has changed since it was made "
                                f"(SHA-256 differs); ship the ensemble again with `python -m fer_bench.shipping`")
    return member


def _member_suffix(member) -> str:
    """The file suffix a member's own ``save`` writes (``load_model`` tells the formats apart by it)."""
    if getattr(member, "runtime", None) == "onnxruntime":
        return ".onnx"
    return ".zip" if member.family in ("deep", "ensemble") else ".skops"


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "+-_." else "_" for c in str(name))[:80]


def is_ensemble_file(path) -> bool:
    """Whether ``path`` is a zip file holding a fer-bench ensemble's metadata."""
    return zip_holds(path, METADATA_MEMBER)


def read_ensemble_metadata(path) -> dict:
    """Open a saved ensemble's metadata and check its format and version."""
    path = Path(path)
    if not is_ensemble_file(path):
        raise EnsembleFileError(f"{path}: not a fer-bench ensemble file")
    try:
        with zipfile.ZipFile(path) as bundle:
            info = json.loads(bundle.read(METADATA_MEMBER))
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise EnsembleFileError(f"{path}: its metadata cannot be read ({error})") from None
    if not isinstance(info, dict) or info.get("format") != ENSEMBLE_FORMAT:
        raise EnsembleFileError(f"{path}: not a fer-bench ensemble file")
    if info.get("format_version") != ENSEMBLE_FORMAT_VERSION:
        raise EnsembleFileError(f"{path}: ensemble format version {info.get('format_version')}, this fer-bench "
                                f"reads version {ENSEMBLE_FORMAT_VERSION}")
    for key in ("classes", "names", "files", "weights"):
        if not isinstance(info.get(key), list):
            raise EnsembleFileError(f"{path}: its metadata lacks {key}; the file is damaged")
    if len(info["names"]) != len(info["files"]):
        raise EnsembleFileError(f"{path}: its metadata names {len(info['names'])} members and {len(info['files'])} "
                                f"files; the file is damaged")
    return info
