"""What every part of fer-bench shares, defined once.

The FER-2013 class list, label encoding, JSON and atomic file writes, the
library-versions record, the seeded stratified subset and the image file
extensions.  This module imports nothing else of the project, so both model
packages (:mod:`fer_classic`, :mod:`fer_deep`) may import it without
importing the application or each other.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER-2013 label order: label ``i`` of the dataset is ``FER2013_CLASSES[i]``."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm", ".jp2"}
)
"""File extensions (lower case) read as images, by the datasets and by ``fer-bench predict``: what OpenCV decodes."""


def encode_labels(y, classes) -> np.ndarray:
    """Labels given as names or as integer indices -> integer indices into ``classes``.

    Raises
    ------
    ValueError
        Labels that are not one-dimensional, integers outside ``0..len(classes) - 1``
        or names not in ``classes``.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    if np.issubdtype(y.dtype, np.integer):
        if y.size and (y.min() < 0 or y.max() >= len(classes)):
            raise ValueError(f"integer labels must lie in 0..{len(classes) - 1}")
        return y.astype(np.int64)
    lookup = {name: i for i, name in enumerate(classes)}
    try:
        return np.array([lookup[str(label)] for label in y], dtype=np.int64)
    except KeyError as error:
        raise ValueError(f"unknown label {error.args[0]!r}; classes are {', '.join(classes)}") from None


def json_default(value):
    """``json.dump``'s ``default``: NumPy scalars and arrays, tuples and sets as JSON; anything else as its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set)):
        return list(value)
    return str(value)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def replacing(path, *, suffix: str | None = None):
    """Yield a temporary file name beside ``path``; when the block ends without error, rename it over ``path``.

    A reader never sees half a file: it finds the old file or the new one.  The
    temporary file gets the permissions of an ordinary new file (``mkstemp``
    makes it 0600) and is removed if the block raises.  Its name ends in
    ``suffix`` (default ``.tmp`` plus ``path``'s own extension, so writers that
    append an extension, like ``numpy.savez``, keep the name they are given).

    Examples
    --------
    >>> with replacing("model.joblib") as tmp:  # doctest: +SKIP
    ...     joblib.dump(model, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = ".tmp" + path.suffix
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=suffix)
    os.close(handle)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def zip_holds(path, member: str) -> bool:
    """Whether ``path`` is a zip file with an entry named ``member`` (how saved model bundles are told apart)."""
    import zipfile

    path = Path(path)
    if not path.is_file() or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as bundle:
        return member in bundle.namelist()


def write_json_atomic(path, data, *, indent: int = 2) -> None:
    """Write ``data`` as JSON to ``path`` so that a reader never sees half a file."""
    with replacing(path) as tmp, open(tmp, "w") as stream:
        json.dump(data, stream, indent=indent, default=json_default)


def library_versions(packages) -> dict:
    """``{"python": version, package: version, ...}`` for the installed distributions among ``packages``."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return versions


def stratified_subset(y, size: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded subsample of about ``size`` labels keeping the class proportions.

    Every class contributes ``round(size * share)`` faces (at least one), so
    the total can differ from ``size`` by a few faces; ``None`` or a size not
    below ``len(y)`` keeps everything.

    Raises
    ------
    ValueError
        ``size`` below 1.
    """
    y = np.asarray(y)
    if size is None or size >= len(y):
        return np.arange(len(y))
    if size < 1:
        raise ValueError(f"a subset needs at least one face, got size {size}")
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        take = max(1, int(round(size * len(members) / len(y))))
        chosen.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(chosen))
