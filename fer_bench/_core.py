"""What every part of fer-bench shares, defined once.

The FER-2013 class list, label encoding, JSON and atomic file writes, the
library-versions record, the seeded stratified subset, the image file
extensions and pixel limit, and the verified array files and private folders
of the on-disk caches (decoded datasets, extracted features).  This module
imports nothing else of the project, so both model packages
(:mod:`fer_classic`, :mod:`fer_deep`) may import it without importing the
application or each other.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

FER2013_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
"""FER-2013 label order: label ``i`` of the dataset is ``FER2013_CLASSES[i]``."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".dib", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pbm", ".pnm", ".jp2"}
)
"""File extensions (lower case) read as images, by the datasets and by ``fer-bench predict``: what OpenCV decodes."""

MAX_IMAGE_PIXELS = 150_000_000
"""Largest image decoded, by the datasets, ``fer-bench predict`` and the server (150 megapixels: 450 MB as BGR).

Its header is read first; a larger image is refused with a message instead of decoded."""


def flip_faces(X: np.ndarray) -> np.ndarray:
    """Horizontal mirror images of faces ``(n, h, w)``."""
    return np.ascontiguousarray(X[:, :, ::-1])


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


# --------------------------------------------------------------------------- cache files

CACHE_FILE_FORMAT = 1
"""Version of :func:`save_cached_arrays`' file layout (its ``_meta`` record)."""

_META = "_meta"
_warned: set = set()


class CacheWarning(UserWarning):
    """A cache entry did not match its record and is rebuilt, or a cache folder cannot be written (slower)."""


class CacheEntryError(ValueError):
    """A cache file is not what its record says (not an array archive, other inputs, other shape, dtype or bytes)."""


def array_digest(array) -> str:
    """SHA-256 of an array's shape, dtype and bytes."""
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.shape}{array.dtype.str}".encode())
    digest.update(array.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def file_sha256(path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def warn_once(key, message: str) -> None:
    """One :class:`CacheWarning` per ``key`` and process: a cache problem is said once, not once per file."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, CacheWarning, stacklevel=3)


def _unwritable_root(path: Path) -> Path:
    """The folder that makes ``path`` unwritable: its nearest existing folder, or the highest unwritable one above."""
    while not path.exists() and path != path.parent:
        path = path.parent
    while path != path.parent and path.parent.exists() and not os.access(path.parent, os.W_OK):
        path = path.parent
    return path


def writable_cache_folder(folder) -> bool:
    """Create ``folder`` (and missing parents) private to the user (0700); whether files can be written in it.

    A folder that cannot be created or written costs speed, not correctness:
    the answer is False, with one :class:`CacheWarning` per unwritable folder
    (a read-only cache root and its read-only or missing sub-folders warn once
    together).
    """
    folder = Path(folder)
    missing = []
    path = folder
    while not path.is_dir() and path != path.parent:
        missing.append(path)
        path = path.parent
    try:
        for path in reversed(missing):
            path.mkdir(mode=0o700, exist_ok=True)  # mkdir(parents=True) would give the parents default modes
        with tempfile.TemporaryFile(dir=folder):  # os.access cannot see a read-only file system
            pass
        return True
    except OSError as error:
        warn_once(("folder", str(_unwritable_root(folder))),
                  f"cache folder {folder} cannot be written ({error.strerror or error}); "
                  "working without saving to the cache, which is slower")
        return False


def save_cached_arrays(path, arrays: dict, record: dict) -> bool:
    """Write ``arrays`` to the ``.npz`` file ``path`` with ``record`` and each array's shape, dtype and SHA-256.

    Only plain arrays: an object array (which NumPy would pickle) is refused.
    The file appears whole or not at all.  Returns whether it was written; a
    folder that cannot be written gives one :class:`CacheWarning` and False.
    """
    path = Path(path)
    arrays = {name: np.asarray(value) for name, value in arrays.items()}
    for name, array in arrays.items():
        if array.dtype.hasobject:
            raise TypeError(f"cache array {name!r} holds Python objects; a cache holds plain arrays only")
    meta = {"format": CACHE_FILE_FORMAT, "record": record,
            "arrays": {name: {"shape": list(array.shape), "dtype": array.dtype.str, "sha256": array_digest(array)}
                       for name, array in arrays.items()}}
    if not writable_cache_folder(path.parent):
        return False
    try:
        with replacing(path, suffix=".tmp.npz") as tmp:
            np.savez(tmp, **arrays, **{_META: np.array(json.dumps(meta, sort_keys=True))})
        return True
    except OSError as error:  # a full disk: the work is done, only the cache misses it
        warn_once(("save", str(path.parent)), f"could not save cache file {path} ({error.strerror or error}); "
                                              "working without saving to the cache, which is slower")
        return False


def _member_header(archive, name: str):
    """Shape and dtype of member ``name`` of an open ``.npz``, read from its header without reading its data."""
    with archive.zip.open(f"{name}.npy") as stream:
        version = np.lib.format.read_magic(stream)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(stream)
    return list(shape), dtype.str


def read_cached_arrays(path, record: dict) -> dict:
    """The arrays of a file :func:`save_cached_arrays` wrote for ``record``, each checked against its digest.

    Nothing in the file is unpickled (``allow_pickle=False``).  The record
    must equal ``record``, the members must be those the record lists, and
    every array's shape and dtype (read from its header before its data) and
    SHA-256 must match.

    Raises
    ------
    FileNotFoundError
        There is no file at ``path``.
    CacheEntryError
        Anything else: what does not match, in words.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        with zipfile.ZipFile(path) as _:
            pass
    except zipfile.BadZipFile:
        raise CacheEntryError("not an array archive (a pickle or another kind of file)") from None
    except OSError as error:
        raise CacheEntryError(f"unreadable ({error.strerror or error})") from None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if _META not in archive.files:
                raise CacheEntryError("no record of its arrays (written by another program or version)")
            meta = json.loads(str(archive[_META]))
            if meta.get("format") != CACHE_FILE_FORMAT:
                raise CacheEntryError(f"file format {meta.get('format')!r}, expected {CACHE_FILE_FORMAT}")
            if meta.get("record") != json.loads(json.dumps(record)):
                raise CacheEntryError("made for other inputs")
            listed = meta.get("arrays") or {}
            members = set(archive.files) - {_META}
            if members != set(listed):
                raise CacheEntryError(f"holds arrays {sorted(members)}, its record lists {sorted(listed)}")
            arrays = {}
            for name, expected in sorted(listed.items()):
                shape, dtype = _member_header(archive, name)
                if [shape, dtype] != [expected.get("shape"), expected.get("dtype")]:
                    raise CacheEntryError(f"{name} is {tuple(shape)} {dtype}, its record says "
                                          f"{tuple(expected.get('shape') or ())} {expected.get('dtype')}")
                array = archive[name]
                if array_digest(array) != expected.get("sha256"):
                    raise CacheEntryError(f"the bytes of {name} do not match its SHA-256")
                arrays[name] = array
            return arrays
    except CacheEntryError:
        raise
    except Exception as error:  # noqa: BLE001  (any damage means: rebuild)
        raise CacheEntryError(f"unreadable ({type(error).__name__}: {error})") from None


def load_cached_arrays(path, record: dict) -> dict | None:
    """:func:`read_cached_arrays`, or None when there is no usable file: a mismatch warns once and is rebuilt."""
    try:
        arrays = read_cached_arrays(path, record)
    except FileNotFoundError:
        return None
    except CacheEntryError as error:
        warn_once(("entry", str(path)), f"cache file {path}: {error}; not used, rebuilt")
        return None
    with contextlib.suppress(OSError):  # its time of last use, for `fer-bench cache clear --older-than`
        os.utime(path)
    return arrays
