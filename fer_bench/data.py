# Over 500 lines: the loaders, decoding and array cache share DatasetError and cache keys; split, they import each other.
"""Datasets: FER-2013 (Kaggle folders or the original CSV), generic class folders, and split folders.

Every loader returns a :class:`Dataset` holding three :class:`Split` objects
(fit, model selection, reported score) of ``uint8`` faces shaped ``(n, 48, 48)``
with integer labels indexing ``Dataset.classes``.  What cannot be loaded as it
is -- an image that does not decode or has more pixels than ``fer-bench
predict`` accepts, a CSV line that is not UTF-8 text or not a FER-2013 row, a
link, a folder that cannot be read -- is a :class:`DatasetError` naming the
file (and the line).  Links inside the dataset folder are never followed.

FER-2013 keeps its canonical split: Training for fitting, PublicTest for model
selection, PrivateTest for the reported numbers.  The Kaggle folder layout
records the usage in the file-name prefix, the CSV in its ``Usage`` column;
both load to the same split.  Where no usage is recorded, a seeded stratified
split is made and stated in ``Dataset.split_method`` (its seed and fractions
in ``Dataset.split_settings``); a dataset that ships ``train/``, ``val/`` and
``test/`` folders keeps that split.

Decoded arrays are cached on disk, keyed by the files' names, sizes and
modification times (or the CSV's bytes), so a second load skips decoding.
A cache file holds plain arrays with their shapes, dtypes and SHA-256, all
checked on load (and a few image files decoded again against it); one that
does not match is rebuilt with a warning.
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from ._core import FER2013_CLASSES, IMAGE_EXTENSIONS, load_cached_arrays, save_cached_arrays, warn_once

FACE_SIZE = 48
FER2013_USAGES = ("Training", "PublicTest", "PrivateTest")
CSV_HEADER = ["emotion", "pixels", "Usage"]
CACHE_FORMAT = 2  # 2: each file records its arrays' shapes, dtypes and SHA-256 (1 did not)
DATA_ENV = "FER_BENCH_DATA"
CACHE_ENV = "FER_BENCH_CACHE"


class DatasetError(ValueError):
    """A dataset could not be loaded; the message names the path and the remedy."""


@dataclass(frozen=True)
class Split:
    """One split of a dataset: faces ``X`` (n, 48, 48) uint8 and labels ``y`` (n,) int64.

    ``files`` names the image file of each face where the dataset is a folder
    of images (empty for the CSV), so a face can be found again in the full
    picture (``fer-bench evaluate --detect``) and named in messages.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    files: tuple = ()

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, index) -> "Split":
        """The faces at ``index`` (integer indices or a boolean mask), with their labels and files."""
        index = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index, dtype=np.int64)
        files = tuple(self.files[i] for i in index) if self.files else ()
        return Split(self.name, self.X[index], self.y[index], files)

    def class_counts(self, n_classes: int) -> np.ndarray:
        return np.bincount(self.y, minlength=n_classes)


@dataclass(frozen=True)
class Dataset:
    """A dataset with its three splits.

    Attributes
    ----------
    name : str
        ``"fer2013"`` or the folder name for generic class folders.
    source : str
        The path it was loaded from.
    classes : tuple of str
        Label names; ``y`` values index this tuple.
    train, val, test : Split
        Fitting, model selection and reported-score splits.
    split_method : str
        How the split was made, in words (canonical usage or seeded stratified).
    content_key : str
        Hash of the dataset's content; identifies it in records and caches.
    split_settings : dict
        What reproduces a seeded split (``seed``, ``fractions``); empty where
        the dataset's own split was kept.
    """

    name: str
    source: str
    classes: tuple
    train: Split
    val: Split
    test: Split
    split_method: str
    content_key: str
    notes: tuple = field(default_factory=tuple)
    split_settings: dict = field(default_factory=dict)

    @property
    def splits(self) -> tuple:
        return (self.train, self.val, self.test)

    def describe(self) -> dict:
        """Split sizes and per-class counts, as plain data."""
        return {
            "dataset": self.name,
            "source": self.source,
            "split_method": self.split_method,
            "split_settings": dict(self.split_settings),
            "classes": list(self.classes),
            "splits": {
                split.name: {
                    "n": len(split),
                    "per_class": dict(zip(self.classes, split.class_counts(len(self.classes)).tolist())),
                }
                for split in self.splits
            },
        }


MIN_FACES_A_CLASS = 10
"""Faces a class needs for a seeded split (80/10/10, or train/ cut 90/10) to put at least one in every part."""


def check_splits(dataset: Dataset) -> None:
    """Raise :class:`DatasetError` unless every split can do its job; the message states the minimum.

    Training needs faces of two classes or more.  The validation split selects
    the hyperparameters and fits the probability calibration, one softmax
    temperature (:class:`fer_classic.estimators.SoftmaxCalibrator`), which
    any number of faces fits: no cross-validation folds that a small split
    could run short of.  It needs one face at least, and so does the test
    split, which is scored.
    """
    problems = []
    train_classes = len(np.unique(dataset.train.y))
    if train_classes < 2:
        held = "no faces" if not len(dataset.train) else "faces of one class only"
        problems.append(f"the {dataset.train.name} split holds {held}; training needs two classes or more")
    for split, job in ((dataset.val, "model selection and probability calibration need"),
                       (dataset.test, "the scores need")):
        if not len(split):
            problems.append(f"the {split.name} split has no faces; {job} one at least")
    if not problems:
        return
    sizes = ", ".join(f"{split.name} {len(split)}" for split in dataset.splits)
    hint = ""
    if dataset.split_settings:  # a seeded split: more faces a class fill every part
        counts = sum(split.class_counts(len(dataset.classes)) for split in dataset.splits)
        smallest = int(counts[counts > 0].min()) if counts.any() else 0
        hint = (f" A seeded split puts faces of a class in every part from {MIN_FACES_A_CLASS} faces a class on "
                f"(the smallest class here has {smallest}); add faces.")
    raise DatasetError(f"{dataset.source}: {'; '.join(problems)} (faces: {sizes}).{hint}")


# --------------------------------------------------------------------------- paths


def default_data_path() -> Path:
    """``$FER_BENCH_DATA`` if set, else ``data/fer2013`` under the working directory."""
    return Path(os.environ.get(DATA_ENV, "data/fer2013"))


def default_cache_dir() -> Path:
    """``$FER_BENCH_CACHE`` if set, else ``~/.cache/fer-bench``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fer-bench"


# --------------------------------------------------------------------------- images


def to_face(image: np.ndarray) -> np.ndarray:
    """Convert any decoded image (gray, BGR or BGRA, any size) to a 48x48 uint8 gray face."""
    import cv2

    if image.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        image = cv2.cvtColor(image, code)
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.shape != (FACE_SIZE, FACE_SIZE):
        interpolation = cv2.INTER_AREA if min(image.shape) > FACE_SIZE else cv2.INTER_LINEAR
        image = cv2.resize(image, (FACE_SIZE, FACE_SIZE), interpolation=interpolation)
    return image


def read_face(path) -> np.ndarray:
    """Decode an image file to a 48x48 gray face; :class:`DatasetError` naming the file and the fault otherwise.

    Decoded as ``fer-bench predict`` decodes a photo
    (:func:`fer_bench.media.decode_image`): the header is checked against the
    one pixel limit (:data:`fer_bench._core.MAX_IMAGE_PIXELS`) first, and a
    truncated JPEG is refused, which OpenCV would decode with the missing
    part filled with gray, silently.
    """
    import cv2

    from .media import InputError, decode_image, read_bytes

    try:
        data = read_bytes(Path(path))
        image = decode_image(data, str(path), flags=cv2.IMREAD_UNCHANGED)
        return to_face(image)
    except InputError as error:
        raise DatasetError(str(error)) from None
    except cv2.error as error:  # a decoded image OpenCV cannot convert (an unusual channel count or depth)
        raise DatasetError(f"{path}: cannot be converted to a gray face ({str(error).strip().splitlines()[-1]})") \
            from None


def _decode_all(paths: list) -> np.ndarray:
    """Decode every path; one error naming every file that could not be read and why."""
    X = np.empty((len(paths), FACE_SIZE, FACE_SIZE), dtype=np.uint8)
    bad = []
    for i, path in enumerate(_progress(paths, "decoding images")):
        try:
            X[i] = read_face(path)
        except DatasetError as error:
            bad.append(str(error))
    if len(bad) == 1:
        raise DatasetError(f"1 image file(s) could not be decoded: {bad[0]}; remove or replace it and load again.")
    if bad:
        shown = "\n  ".join(bad[:10])
        more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise DatasetError(f"{len(bad)} image file(s) could not be decoded; remove or replace them and load "
                           f"again:\n  {shown}{more}")
    return X


def _progress(items, description: str):
    """A tqdm bar on stderr for long loops; silent for short ones."""
    if len(items) < 2000:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit="img", leave=False, disable=None)  # hidden when not a terminal


# --------------------------------------------------------------------------- cache


def _cache_path(cache_dir, key: str) -> Path | None:
    if cache_dir is False:
        return None
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return directory / f"arrays-v{CACHE_FORMAT}-{key}.npz"


def _cache_load(path: Path | None):
    """The arrays cached at ``path``, verified, or None.

    Nothing is unpickled; the file must hold the record it was saved with (its
    own name) and every array must have its recorded shape, dtype and SHA-256,
    faces ``X`` must be ``(n, 48, 48)`` uint8 and any labels ``y`` and
    ``usage`` one per face.  A file that does not match is rebuilt, with one
    :class:`~fer_bench._core.CacheWarning`, never trusted.
    """
    if path is None:
        return None
    arrays = load_cached_arrays(path, {"dataset_arrays": path.name})
    if arrays is None:
        return None
    X = arrays.get("X")
    problem = None
    if X is None or X.dtype != np.uint8 or X.ndim != 3 or X.shape[1:] != (FACE_SIZE, FACE_SIZE):
        problem = "no faces X of shape (n, 48, 48) uint8"
    elif any(name in arrays and arrays[name].shape != (len(X),) for name in ("y", "usage")):
        problem = f"labels and faces differ in number ({len(X)} faces)"
    if problem:
        warn_once(("entry", str(path)), f"cache file {path}: {problem}; not used, rebuilt")
        return None
    return arrays


def _cache_save(path: Path | None, **arrays) -> None:
    """Save ``arrays`` with their record (see :func:`_cache_load`); a folder that cannot be written costs speed."""
    if path is not None:
        save_cached_arrays(path, arrays, {"dataset_arrays": path.name})


def _relative_names(root: Path, files: list) -> list:
    """``files`` (strings under ``root``) relative to it, with "/" separators."""
    skip = len(str(root)) + 1
    return [path[skip:].replace(os.sep, "/") for path in files]


def _files_key(root: Path, files: list, stats: list, extra: str) -> str:
    """Hash of relative file names, sizes and mtimes: changes when any file does (the cache's key)."""
    digest = hashlib.sha256(extra.encode())
    names = _relative_names(root, files)
    digest.update("".join(f"{name}\0{size}\0{mtime}\n" for name, (size, mtime) in zip(names, stats)).encode())
    return digest.hexdigest()[:20]


def _content_key(root: Path, files: list, X: np.ndarray, extra: str) -> str:
    """Hash of relative file names (which carry class and usage) and decoded pixels.

    Unlike the cache key it ignores modification times, so the same images
    copied anew (a fresh checkout, another machine) keep the key that records
    and finished sweep cells are matched on.
    """
    digest = hashlib.sha256(extra.encode())
    digest.update("\n".join(_relative_names(root, files)).encode())
    digest.update(np.ascontiguousarray(X, dtype=np.uint8).tobytes())
    return digest.hexdigest()[:20]


SPOT_CHECKED_FILES = 8
"""Files decoded again on every cached load and compared with their cached faces."""


def _matches_files(files: list, X: np.ndarray) -> bool:
    """Whether a random few of ``files`` decode to their rows of ``X`` (cached faces stand for the real ones)."""
    rows = np.random.default_rng().choice(len(files), size=min(SPOT_CHECKED_FILES, len(files)), replace=False)
    return all(np.array_equal(read_face(Path(files[row])), X[row]) for row in rows)


def _decode_cached(root: Path, files: list, stats: list, extra: str, cache_dir):
    """The content key of ``files`` and their decoded faces, from the cache when it holds them.

    Cached faces are used only when there is one per file and a few files,
    chosen at random, decode to their cached rows; the content key is always
    computed from the faces returned, so a record's ``dataset_key`` names the
    data it was measured on.
    """
    path = _cache_path(cache_dir, _files_key(root, files, stats, extra))
    cached = _cache_load(path)
    X = None if cached is None else cached["X"]
    if X is not None and len(X) != len(files):
        warn_once(("entry", str(path)), f"cache file {path}: holds {len(X)} faces for {len(files)} files; "
                                        "not used, rebuilt")
        X = None
    if X is not None and not _matches_files(files, X):
        warn_once(("entry", str(path)), f"cache file {path}: its faces differ from the image files; "
                                        "not used, rebuilt")
        X = None
    if X is None:
        X = _decode_all(files)
        _cache_save(path, X=X)
    return _content_key(root, files, X, extra), X


# --------------------------------------------------------------------------- splitting


def stratified_split(y: np.ndarray, fractions=(0.8, 0.1, 0.1), seed: int = 0):
    """Indices of a seeded stratified split into len(fractions) parts.

    Every class is shuffled with ``seed`` and cut by ``fractions``, so each part
    keeps the class proportions (classes with few images may leave a part empty).
    """
    rng = np.random.default_rng(seed)
    parts = [[] for _ in fractions]
    bounds = np.cumsum(fractions) / np.sum(fractions)
    for label in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == label))
        cuts = np.round(bounds * len(members)).astype(int)
        start = 0
        for part, stop in zip(parts, cuts):
            part.extend(members[start:stop].tolist())
            start = stop
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def _split_from_usage(X, y, usage, names=FER2013_USAGES, files=()):
    whole = Split("", X, y, tuple(files))
    return tuple(replace(whole.subset(usage == name), name=name) for name in names)


# --------------------------------------------------------------------------- FER-2013


def _resolve_class(name: str, root: Path, classes) -> int:
    try:
        return list(classes).index(name.lower())
    except ValueError:
        raise DatasetError(
            f"{root / name}: unknown class folder {name!r}; FER-2013 class folders are "
            f"{', '.join(classes)}. Rename or remove it."
        ) from None


def _usage_of(filename: str) -> str | None:
    for usage in FER2013_USAGES:
        if filename.startswith(usage + "_"):
            return usage
    return None


def _shown(path) -> str:
    """A path as text that can be printed: bytes that are not UTF-8 shown as escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _check_entry(path: str) -> None:
    """Refuse a file or folder name that is not UTF-8 (records and caches store names as text)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise DatasetError(f"{_shown(path)}: the name is not valid UTF-8; rename it.") from None


def _link_error(path) -> DatasetError:
    try:
        target = f" (to {_shown(os.readlink(path))})"
    except OSError:
        target = ""
    return DatasetError(
        f"{_shown(path)}: a symbolic link{target}; the dataset loader follows no links inside the dataset folder "
        "(they can lead out of it or back into it). Put the file or folder itself there."
    )


def _unreadable(path, error: OSError) -> DatasetError:
    return DatasetError(f"{_shown(path)}: cannot be read ({error.strerror or error}).")


def _subfolders(folder: Path, *, link_allowed: bool = False) -> list:
    """The folders directly in ``folder``, sorted by name.

    Links are not followed: a link to a folder is an error, and so is
    ``folder`` itself being a link unless ``link_allowed`` (the dataset path a
    user gives may be a link; what is inside it may not).
    """
    if not link_allowed and folder.is_symlink():
        raise _link_error(folder)
    try:
        with os.scandir(folder) as entries:
            entries = sorted(entries, key=lambda entry: entry.name)
        folders = []
        for entry in entries:
            if entry.is_symlink():
                if os.path.isdir(entry.path):
                    raise _link_error(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                _check_entry(entry.path)
                folders.append(Path(entry.path))
    except OSError as error:
        raise _unreadable(folder, error) from None
    return folders


def _list_images(folder: Path):
    """Image files below ``folder`` (sorted) and their (size, mtime_ns).

    ``os.scandir`` stats each file once; ``Path.rglob`` plus ``stat`` took most of
    a cached FER-2013 load (35,887 files).  No link is followed (a link that
    is an image file or a folder is an error, :func:`_subfolders`), so the
    files are all inside the dataset folder, each once.
    """
    found = []
    stack = [str(folder)]
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for entry in entries:
                    is_image = os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
                    if entry.is_symlink():
                        if is_image or os.path.isdir(entry.path):
                            raise _link_error(entry.path)
                    elif entry.is_dir(follow_symlinks=False):
                        _check_entry(entry.path)
                        stack.append(entry.path)
                    elif is_image and entry.is_file(follow_symlinks=False):
                        _check_entry(entry.path)
                        stat = entry.stat(follow_symlinks=False)
                        found.append((entry.path, stat.st_size, stat.st_mtime_ns))
        except OSError as error:
            raise _unreadable(current, error) from None
    found.sort()
    return [p for p, _, _ in found], [(size, mtime) for _, size, mtime in found]


def load_fer2013_folders(path, *, cache_dir=None, seed: int = 0) -> Dataset:
    """Load FER-2013 in the Kaggle folder layout ``train/<class>/``, ``test/<class>/``.

    File-name prefixes (``Training_``, ``PublicTest_``, ``PrivateTest_``) give the
    canonical split.  Without them, ``train/`` is split 90/10 (seeded, stratified)
    into fit and validation sets and ``test/`` is the test set.
    """
    root = Path(path)
    _check_folder(root)
    subsets = [root / "train", root / "test"]
    missing = [s.name for s in subsets if not s.is_dir()]
    if missing:
        raise DatasetError(
            f"{root}: no {' or '.join(m + '/' for m in missing)} folder; the Kaggle FER-2013 layout is "
            "train/<class>/*.jpg and test/<class>/*.jpg (or pass the original fer2013.csv)."
        )
    files, stats, labels, subset_of = [], [], [], []
    for subset in subsets:
        class_dirs = _subfolders(subset)
        if not class_dirs:
            raise DatasetError(f"{subset}: no class folders; expected {', '.join(FER2013_CLASSES)}.")
        for class_dir in class_dirs:
            label = _resolve_class(class_dir.name, subset, FER2013_CLASSES)
            images, image_stats = _list_images(class_dir)
            files.extend(images)
            stats.extend(image_stats)
            labels.extend([label] * len(images))
            subset_of.extend([subset.name] * len(images))
    if not files:
        raise DatasetError(f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")

    usage = np.array([_usage_of(os.path.basename(p)) or "" for p in files])
    canonical = bool(np.all(usage != ""))
    # The canonical split does not depend on the seed, so neither do its faces' key and cache: every seed
    # gets seed 0's, the key its records have always carried (models of several seeds can then be compared
    # and averaged).  A seeded split's key names its seed.
    key, X = _decode_cached(root, files, stats, f"fer2013-folders-seed{0 if canonical else seed}", cache_dir)
    y = np.asarray(labels, dtype=np.int64)

    settings = {}
    if canonical:
        train, val, test = _split_from_usage(X, y, usage, files=files)
        method = "canonical FER-2013 split from file-name prefixes (Training / PublicTest / PrivateTest)"
    else:
        in_train = np.array([s == "train" for s in subset_of])
        train, val, test = _carve_validation(Split("train", X, y, tuple(files)), in_train, seed)
        settings = {"seed": seed, "fractions": [0.9, 0.1], "fractions_of": "train/"}
        method = (
            f"file names carry no usage prefix: train/ split 90/10 into train/validation "
            f"(stratified, seed={seed}); test/ is the test set"
        )
    return Dataset("fer2013", str(root), FER2013_CLASSES, train, val, test, method, key, split_settings=settings)


def _carve_validation(whole: Split, in_train: np.ndarray, seed: int) -> tuple:
    """Train and validation cut 90/10 (stratified, seeded) from the faces ``in_train``; the rest is the test split."""
    pool = whole.subset(in_train)
    fit_idx, val_idx = stratified_split(pool.y, (0.9, 0.1), seed=seed)
    return (replace(pool.subset(fit_idx), name="train"), replace(pool.subset(val_idx), name="validation"),
            replace(whole.subset(~in_train), name="test"))


def load_fer2013_csv(path, *, cache_dir=None, seed: int = 0) -> Dataset:
    """Load the original FER-2013 CSV (``emotion,pixels,Usage``).

    The ``Usage`` column gives the canonical split; a CSV without it (header
    ``emotion,pixels``) gets a seeded stratified 80/10/10 split.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such CSV file.")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: the file is empty; expected a header emotion,pixels,Usage.")
    # The file's faces and labels do not depend on the seed: they are cached under seed 0's key, which
    # is also the key of the canonical split (the Usage column's); a seeded split's key names its seed.
    digest, seeded_digest = hashlib.sha256(b"fer2013-csv-seed0"), hashlib.sha256(f"fer2013-csv-seed{seed}".encode())
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                seeded_digest.update(block)
    except OSError as error:
        raise _unreadable(path, error) from None
    key = digest.hexdigest()[:20]
    cached = _cache_load(_cache_path(cache_dir, key))
    if cached is not None:
        X, y, usage = cached["X"], cached["y"], cached["usage"]
    else:
        X, y, usage = _parse_fer_csv(path)
        _cache_save(_cache_path(cache_dir, key), X=X, y=y, usage=usage)

    # A Usage column had a known value on every row (checked, line by line, when the file was parsed).
    canonical = bool(np.any(usage != ""))
    if canonical:
        unknown = sorted(set(usage.tolist()) - set(FER2013_USAGES))
        if unknown:
            raise DatasetError(
                f"{path}: unknown Usage value(s) {unknown}; expected {', '.join(FER2013_USAGES)}."
            )
        train, val, test = _split_from_usage(X, y, usage)
        method = "canonical FER-2013 split from the CSV Usage column (Training / PublicTest / PrivateTest)"
    else:
        idx = stratified_split(y, (0.8, 0.1, 0.1), seed=seed)
        train, val, test = (Split(n, X[i], y[i]) for n, i in zip(("train", "validation", "test"), idx))
        method = f"CSV has no Usage column: stratified 80/10/10 train/validation/test split, seed={seed}"
        settings = {"seed": seed, "fractions": [0.8, 0.1, 0.1]}
    return Dataset("fer2013", str(path), FER2013_CLASSES, train, val, test, method,
                   key if canonical else seeded_digest.hexdigest()[:20], split_settings=settings if not canonical else {})


MAX_CSV_LINE = 1 << 16
"""Longest CSV line read, in bytes (a FER-2013 row is at most about 9,300)."""


def _csv_lines(path: Path, handle):
    """The lines of the binary ``handle`` as text: UTF-8, a byte-order mark before the header allowed.

    A line that is not UTF-8, or longer than :data:`MAX_CSV_LINE`, is a
    :class:`DatasetError` naming its number.
    """
    import codecs

    for number, raw in enumerate(iter(lambda: handle.readline(MAX_CSV_LINE + 1), b""), start=1):
        if len(raw) > MAX_CSV_LINE:
            raise DatasetError(f"{path}, line {number}: longer than {MAX_CSV_LINE:,} bytes; not a FER-2013 CSV "
                               "(a row is an emotion, 2,304 pixel values and a Usage).")
        if number == 1 and raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            raise DatasetError(f"{path}: UTF-16 text; save the CSV as UTF-8.")
        try:
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as error:
            raise DatasetError(f"{path}, line {number}: not UTF-8 text (byte {raw[error.start]:#04x} at column "
                               f"{error.start + 1}); save the CSV as UTF-8.") from None


def _parse_fer_csv(path: Path):
    """Faces, labels and usages of a FER-2013 CSV; every fault a :class:`DatasetError` naming the line.

    Read as UTF-8 with an optional byte-order mark (``utf-8-sig``, as
    spreadsheet programs save).  With a ``Usage`` column, every row must hold
    Training, PublicTest or PrivateTest: a blank or other value would change
    the split, so it is refused rather than dropped.
    """
    n_pixels = FACE_SIZE * FACE_SIZE
    faces, labels, usages = [], [], []
    try:
        with open(path, "rb") as handle:
            reader = csv.reader(_csv_lines(path, handle))
            try:
                header = [h.strip() for h in next(reader, [])]
                if header not in (CSV_HEADER, CSV_HEADER[:2]):
                    raise DatasetError(
                        f"{path}: wrong CSV header {','.join(header)[:200]!r}; expected 'emotion,pixels,Usage' "
                        "(the original FER-2013 fer2013.csv)."
                    )
                has_usage = len(header) == 3
                for row in reader:
                    line_number = reader.line_num
                    if not row:
                        continue
                    if len(row) != len(header):
                        raise DatasetError(f"{path}, line {line_number}: {len(row)} fields, expected {len(header)}.")
                    try:
                        label = int(row[0])
                        pixels = np.array(row[1].split(), dtype=np.int64)
                    except (ValueError, OverflowError):
                        raise DatasetError(f"{path}, line {line_number}: emotion must be an integer and pixels "
                                           "space-separated integers.") from None
                    if not 0 <= label < len(FER2013_CLASSES):
                        raise DatasetError(f"{path}, line {line_number}: emotion {label} is outside 0..6.")
                    if pixels.size != n_pixels:
                        raise DatasetError(
                            f"{path}, line {line_number}: {pixels.size} pixels, expected {n_pixels} (48x48)."
                        )
                    if pixels.min() < 0 or pixels.max() > 255:
                        raise DatasetError(f"{path}, line {line_number}: pixel values must lie in 0..255.")
                    usage = row[2].strip() if has_usage else ""
                    if has_usage and usage not in FER2013_USAGES:
                        shown = f"{usage[:40]!r}" if usage else "blank"
                        raise DatasetError(
                            f"{path}, line {line_number}: Usage is {shown}; every row needs "
                            f"{', '.join(FER2013_USAGES)} (or remove the Usage column for a seeded split)."
                        )
                    faces.append(pixels.astype(np.uint8).reshape(FACE_SIZE, FACE_SIZE))
                    labels.append(label)
                    usages.append(usage)
            except csv.Error as error:
                raise DatasetError(f"{path}, line {reader.line_num}: not a readable CSV row ({error}).") from None
    except OSError as error:
        raise _unreadable(path, error) from None
    if not faces:
        raise DatasetError(f"{path}: the CSV has a header but no rows.")
    return np.stack(faces), np.asarray(labels, dtype=np.int64), np.asarray(usages)


def write_fer2013_csv(dataset: Dataset, path) -> None:
    """Write a dataset in the original FER-2013 CSV format (``emotion,pixels,Usage``)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_HEADER)
        for split in dataset.splits:
            for face, label in zip(split.X, split.y):
                writer.writerow([int(label), " ".join(map(str, face.ravel().tolist())), split.name])


# --------------------------------------------------------------------------- generic folders


def load_class_folders(path, *, classes=None, cache_dir=None, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> Dataset:
    """Load any ``<class>/`` tree of images (any size, colour or gray) as 48x48 gray faces.

    Parameters
    ----------
    path : path-like
        Folder whose sub-folders are classes; images may sit at any depth below them.
    classes : sequence of str, optional
        The allowed class names, in label order.  A folder not in it is an error.
        By default the FER-2013 names that are present come first, in FER-2013
        order, then any other folder names in alphabetical order.
    seed : int
        Seed of the stratified train/validation/test split.
    """
    root = Path(path)
    _check_folder(root)
    class_dirs = _subfolders(root, link_allowed=True)
    if not class_dirs:
        raise DatasetError(f"{root}: no class folders; expected one sub-folder of images per class.")
    names = [d.name.lower() for d in class_dirs]
    classes = _default_classes(names) if classes is None else tuple(c.lower() for c in classes)
    files, stats, labels = [], [], []
    for class_dir in class_dirs:
        label = _resolve_class(class_dir.name, root, classes)
        images, image_stats = _list_images(class_dir)
        files.extend(images)
        stats.extend(image_stats)
        labels.extend([label] * len(images))
    if not files:
        raise DatasetError(f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    key, X = _decode_cached(root, files, stats, f"class-folders-{','.join(classes)}", cache_dir)
    whole = Split("", X, np.asarray(labels, dtype=np.int64), tuple(files))
    # Reproducible: the files are listed sorted and every class is shuffled by ``seed`` alone.
    idx = stratified_split(whole.y, fractions, seed=seed)
    train, val, test = (replace(whole.subset(i), name=n) for n, i in zip(("train", "validation", "test"), idx))
    percent = "/".join(str(round(100 * f / sum(fractions))) for f in fractions)
    method = f"stratified {percent} train/validation/test split, seed={seed}"
    settings = {"seed": seed, "fractions": [float(f) for f in fractions]}
    return Dataset(root.name, str(root), classes, train, val, test, method, key, split_settings=settings)


def _default_classes(names) -> tuple:
    """Class folder names in label order: the FER-2013 names present, in FER-2013 order, then the others sorted."""
    names = {name.lower() for name in names}
    return tuple([c for c in FER2013_CLASSES if c in names] + sorted(names - set(FER2013_CLASSES)))


SPLIT_FOLDERS = {"train": ("train",), "validation": ("val", "validation"), "test": ("test",)}
"""The folders of a dataset that ships its own split, by role (the first of the names that exists)."""


def _split_folders(root: Path) -> dict:
    """Role -> the split folder of ``root`` that exists (or None)."""
    return {role: next((root / name for name in names if (root / name).is_dir()), None)
            for role, names in SPLIT_FOLDERS.items()}


def has_own_split(root) -> bool:
    """Whether ``root`` is a dataset with its own split folders rather than FER-2013's Kaggle layout.

    It is when it holds a ``val/`` (or ``validation/``) folder, or ``train/``
    and ``test/`` folders whose class folders are not all FER-2013's.
    """
    folders = _split_folders(Path(root))
    if folders["validation"] is not None:
        return True
    if folders["train"] is None or folders["test"] is None:
        return False
    names = {d.name.lower() for folder in (folders["train"], folders["test"]) for d in _subfolders(folder)}
    return bool(names - set(FER2013_CLASSES))


def load_split_folders(path, *, classes=None, cache_dir=None, seed: int = 0) -> Dataset:
    """Load a class-folder dataset that ships its own split: ``train/<class>/``, ``val/<class>/``, ``test/<class>/``.

    The split is kept as the folders give it, under the folders' names
    (``val/`` may be called ``validation/``).  Without a validation folder,
    ``train/`` is split 90/10 (stratified, seeded) into train and validation.
    Class names and their order follow :func:`load_class_folders`.
    """
    root = Path(path)
    _check_folder(root)
    folders = _split_folders(root)
    missing = [role for role in ("train", "test") if folders[role] is None]
    if missing:
        raise DatasetError(
            f"{root}: no {' or '.join(m + '/' for m in missing)} folder; a dataset with its own split holds "
            "train/<class>/, val/<class>/ (optional) and test/<class>/."
        )
    folders = {role: folder for role, folder in folders.items() if folder is not None}
    class_dirs = {role: _subfolders(folder) for role, folder in folders.items()}
    for role, dirs in class_dirs.items():
        if not dirs:
            raise DatasetError(f"{folders[role]}: no class folders; expected one sub-folder of images per class.")
    names = [d.name for dirs in class_dirs.values() for d in dirs]
    classes = _default_classes(names) if classes is None else tuple(c.lower() for c in classes)
    files, stats, labels, roles = [], [], [], []
    for role, dirs in class_dirs.items():
        for class_dir in dirs:
            label = _resolve_class(class_dir.name, folders[role], classes)
            images, image_stats = _list_images(class_dir)
            files.extend(images)
            stats.extend(image_stats)
            labels.extend([label] * len(images))
            roles.extend([role] * len(images))
    if not files:
        raise DatasetError(f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_EXTENSIONS))}).")
    key, X = _decode_cached(root, files, stats, f"split-folders-{','.join(classes)}", cache_dir)
    whole = Split("", X, np.asarray(labels, dtype=np.int64), tuple(files))
    roles = np.asarray(roles)
    if "validation" in folders:
        train, val, test = (replace(whole.subset(roles == role), name=folders[role].name)
                            for role in ("train", "validation", "test"))
        method = f"the dataset's own split folders ({train.name}/, {val.name}/, {test.name}/)"
        settings = {}
    else:
        train, val, test = _carve_validation(whole, roles == "train", seed)
        method = (f"the dataset's own train/ and test/ folders; train/ split 90/10 into train/validation "
                  f"(stratified, seed={seed})")
        settings = {"seed": seed, "fractions": [0.9, 0.1], "fractions_of": "train/"}
    return Dataset(root.name, str(root), classes, train, val, test, method, key, split_settings=settings)


def _check_folder(root: Path) -> None:
    if not root.exists():
        raise DatasetError(
            f"{root}: no such folder. Put FER-2013 there (see data/README.md), "
            f"pass --data PATH, or set {DATA_ENV}."
        )
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder.")
    try:
        empty = not any(root.iterdir())
    except OSError as error:
        raise _unreadable(root, error) from None
    if empty:
        raise DatasetError(f"{root}: the folder is empty; put the dataset's class folders in it.")


def load_dataset(path=None, *, cache_dir=None, seed: int = 0) -> Dataset:
    """Load whatever ``path`` holds: a FER-2013 CSV, the Kaggle layout, split folders or class folders.

    ``path`` defaults to :func:`default_data_path`.  A folder holding
    ``fer2013.csv`` loads that CSV; one holding its own split folders
    (:func:`has_own_split`) keeps that split (:func:`load_split_folders`).
    """
    root = Path(path) if path is not None else default_data_path()
    if root.is_file():
        if root.suffix.lower() != ".csv":
            raise DatasetError(f"{root}: a file that is not a CSV; pass a dataset folder or fer2013.csv.")
        return load_fer2013_csv(root, cache_dir=cache_dir, seed=seed)
    _check_folder(root)
    if (root / "fer2013.csv").is_file():
        return load_fer2013_csv(root / "fer2013.csv", cache_dir=cache_dir, seed=seed)
    if has_own_split(root):
        return load_split_folders(root, cache_dir=cache_dir, seed=seed)
    if (root / "train").is_dir() or (root / "test").is_dir():
        return load_fer2013_folders(root, cache_dir=cache_dir, seed=seed)
    return load_class_folders(root, cache_dir=cache_dir, seed=seed)
