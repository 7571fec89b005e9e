"""Hand-crafted face features: HOG, LBP histograms, dlib landmarks and (from :mod:`fer_classic.sift`) dense SIFT.

Each feature is a plain function on one 48x48 gray face (scikit-image style)
and a scikit-learn transformer over a stack of faces ``(n, 48, 48)``.  The
transformers are stateless: ``fit`` only validates, ``transform`` maps every
face to a fixed-length float32 vector, in parallel over ``n_jobs`` processes.
The dense SIFT bag of words (``sift_bovw``) is the exception: it learns a
vocabulary in ``fit``.

Combine them with :func:`make_features`, e.g. ``make_features("hog+lbp")``,
which returns a :class:`sklearn.pipeline.FeatureUnion`.  :func:`transform_faces`
runs a fitted extractor through an optional on-disk cache of plain arrays,
one verified entry per single feature, its parameters and the faces' bytes.

Over 500 lines because the three stateless features, their registry and the
cached extraction share one parallel transform and one cache key, which
saved models and feature caches name by this module's path.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import FeatureUnion

from fer_bench._core import array_digest, load_cached_arrays, save_cached_arrays, warn_once

from ._validation import check_faces as _check_faces

# --------------------------------------------------------------------------- shared


def _map_faces(function, X, n_jobs, **params) -> np.ndarray:
    """Apply ``function(face, **params)`` to every face, in chunks over ``n_jobs`` processes."""
    # Process start-up costs about a second; below a few thousand faces one
    # process is faster than several.  Decided before asking joblib for the core
    # count, which reads cgroup limits on every call (0.05-0.17 ms, more than one
    # face's OpenCV HOG).
    if n_jobs in (None, 1) or len(X) < 2000:
        return _map_chunk(function, X, params)
    from joblib import Parallel, cpu_count, delayed

    workers = cpu_count() if n_jobs == -1 else max(1, int(n_jobs))
    if workers == 1:
        return _map_chunk(function, X, params)
    chunks = np.array_split(np.arange(len(X)), workers * 4)
    parts = Parallel(n_jobs=workers)(delayed(_map_chunk)(function, X[idx], params) for idx in chunks)
    return np.concatenate(parts)


def _map_chunk(function, X, params) -> np.ndarray:
    first = function(X[0], **params)
    out = np.empty((len(X), first.size), dtype=np.float32)
    out[0] = first
    for i in range(1, len(X)):
        out[i] = function(X[i], **params)
    return out


class _FaceTransformer(TransformerMixin, BaseEstimator):
    """Base: stateless per-face feature; ``fit`` validates and records the input shape."""

    def fit(self, X, y=None):
        X = _check_faces(X)
        self._validate_params_values()
        self.face_shape_ = X.shape[1:]
        self.n_features_out_ = self._face_features(X[0]).size
        return self

    def transform(self, X):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "face_shape_")
        X = _check_faces(X)
        if X.shape[1:] != self.face_shape_:
            raise ValueError(f"faces are {X.shape[1:]}, but the transformer was fitted on {self.face_shape_}")
        return _map_faces(self._function(), X, self.n_jobs, **self._function_params())

    def _face_features(self, face):
        return self._function()(face, **self._function_params())

    def _validate_params_values(self):
        pass

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        tags.requires_fit = True
        return tags


# --------------------------------------------------------------------------- HOG


HOG_ENGINES = ("skimage", "opencv")
_HOG_DESCRIPTORS: dict = {}


def _opencv_hog(shape, orientations, pixels_per_cell, cells_per_block):
    """A cached ``cv2.HOGDescriptor`` laid out like scikit-image's HOG (blocks stride one cell)."""
    key = (tuple(shape), orientations, tuple(pixels_per_cell), tuple(cells_per_block))
    if key not in _HOG_DESCRIPTORS:
        import cv2

        cell_h, cell_w = pixels_per_cell
        block = (cells_per_block[1] * cell_w, cells_per_block[0] * cell_h)
        window = (shape[1], shape[0])
        if (window[0] - block[0]) % cell_w or (window[1] - block[1]) % cell_h:
            raise ValueError(
                f"engine='opencv' needs the face size minus the block size to be a multiple of "
                f"pixels_per_cell; {shape} with pixels_per_cell={pixels_per_cell} is not"
            )
        _HOG_DESCRIPTORS[key] = cv2.HOGDescriptor(window, block, (cell_w, cell_h), (cell_w, cell_h), orientations)
    return _HOG_DESCRIPTORS[key]


def hog_features(
    image,
    *,
    orientations: int = 12,
    pixels_per_cell=(6, 6),
    cells_per_block=(2, 2),
    block_norm: str = "L2-Hys",
    engine: str = "opencv",
) -> np.ndarray:
    """Histogram of oriented gradients of one gray face.

    ``engine="skimage"`` is ``skimage.feature.hog``; ``engine="opencv"`` is
    ``cv2.HOGDescriptor`` with the same cells, blocks and bins (L2-Hys only,
    plus OpenCV's Gaussian block window and bin interpolation), about 13 times
    faster on a 48x48 face (0.05 against 0.68 ms here), which the CPU
    deployment model needs.  The two give different vectors: a model must be
    used with the engine it was trained on (the model stores it).

    The defaults were chosen on PublicTest (10,000 Training faces, RBF SVM):
    OpenCV 51.6% against scikit-image 50.4%; 12 orientations 52.5% against 9;
    6-pixel cells against 4 (50.4%) and 8 (51.5%).
    """
    if engine == "opencv":
        descriptor = _opencv_hog(np.shape(image), orientations, pixels_per_cell, cells_per_block)
        return descriptor.compute(np.ascontiguousarray(image, dtype=np.uint8)).ravel()
    from skimage.feature import hog

    return hog(
        np.asarray(image, dtype=np.float32),
        orientations=orientations,
        pixels_per_cell=tuple(pixels_per_cell),
        cells_per_block=tuple(cells_per_block),
        block_norm=block_norm,
        feature_vector=True,
    ).astype(np.float32)


class HOGFeatures(_FaceTransformer):
    """HOG of each face; parameters as ``skimage.feature.hog`` names them.

    Parameters
    ----------
    orientations : int
        Number of orientation bins.
    pixels_per_cell : tuple of int
        Cell size in pixels; 6x6 on a 48x48 face gives an 8x8 grid.
    cells_per_block : tuple of int
        Cells per normalisation block.
    block_norm : {"L1", "L1-sqrt", "L2", "L2-Hys"}
        Block normalisation.
    engine : {"skimage", "opencv"}
        Implementation; "opencv" is ~13x faster and supports L2-Hys only.
    n_jobs : int or None
        Processes for ``transform``; -1 uses every core, None one.
    """

    def __init__(self, orientations=12, pixels_per_cell=(6, 6), cells_per_block=(2, 2), block_norm="L2-Hys",
                 engine="opencv", n_jobs=None):
        self.orientations = orientations
        self.pixels_per_cell = pixels_per_cell
        self.cells_per_block = cells_per_block
        self.block_norm = block_norm
        self.engine = engine
        self.n_jobs = n_jobs

    def _validate_params_values(self):
        if self.block_norm not in ("L1", "L1-sqrt", "L2", "L2-Hys"):
            raise ValueError(f"block_norm={self.block_norm!r}; choose L1, L1-sqrt, L2 or L2-Hys")
        if int(self.orientations) < 1:
            raise ValueError(f"orientations={self.orientations}; must be at least 1")
        if self.engine not in HOG_ENGINES:
            raise ValueError(f"engine={self.engine!r}; choose {' or '.join(HOG_ENGINES)}")
        if self.engine == "opencv" and self.block_norm != "L2-Hys":
            raise ValueError(f"engine='opencv' supports block_norm='L2-Hys' only, not {self.block_norm!r}")

    def _function(self):
        return hog_features

    def _function_params(self):
        return {
            "orientations": self.orientations,
            "pixels_per_cell": self.pixels_per_cell,
            "cells_per_block": self.cells_per_block,
            "block_norm": self.block_norm,
            "engine": self.engine,
        }


# --------------------------------------------------------------------------- LBP

LBP_METHODS = ("uniform", "nri_uniform", "default", "ror")


def lbp_bins(points: int, method: str) -> int:
    """Number of distinct codes ``local_binary_pattern`` yields for ``points`` and ``method``."""
    if method == "uniform":
        return points + 2
    if method == "nri_uniform":
        return points * (points - 1) + 3
    if method in ("default", "ror"):
        return 2**points
    raise ValueError(f"method={method!r}; choose one of {', '.join(LBP_METHODS)}")


def _as_tuple(value) -> tuple:
    return tuple(value) if isinstance(value, (list, tuple)) else (value,)


def lbp_histogram(image, *, points=8, radius=(1, 2, 3), method: str = "uniform", grid=(6, 6)) -> np.ndarray:
    """Spatial histograms of local binary patterns of one gray face.

    The face is cut into ``grid`` (rows, columns) cells; each cell's LBP codes
    are histogrammed and normalised to sum to 1, and the cells concatenated.
    ``radius`` (and ``points``) may be sequences for a multi-scale descriptor:
    one LBP map per (points, radius) pair, ``points`` repeated if a single int.
    Radii 1, 2 and 3 scored 43.6% on PublicTest against 37.6% for radius 1
    alone (10,000 Training faces, RBF SVM); an 8x8 grid scored 39.9%.
    """
    from skimage.feature import local_binary_pattern

    image = np.asarray(image)
    radii = _as_tuple(radius)
    points_list = _as_tuple(points)
    if len(points_list) == 1:
        points_list = points_list * len(radii)
    if len(points_list) != len(radii):
        raise ValueError(f"points {points_list} and radius {radii} must have the same length")
    rows = np.array_split(np.arange(image.shape[0]), grid[0])
    cols = np.array_split(np.arange(image.shape[1]), grid[1])
    parts = []
    for p, r in zip(points_list, radii):
        codes = local_binary_pattern(image, int(p), float(r), method=method).astype(np.int64)
        n_bins = lbp_bins(int(p), method)
        for row in rows:
            for col in cols:
                cell = codes[row[0] : row[-1] + 1, col[0] : col[-1] + 1]
                hist = np.bincount(cell.ravel(), minlength=n_bins).astype(np.float32)
                parts.append(hist / max(cell.size, 1))
    return np.concatenate(parts)


class LBPFeatures(_FaceTransformer):
    """Grid of LBP histograms of each face (``skimage.feature.local_binary_pattern``).

    Parameters
    ----------
    points : int or tuple of int
        Circularly symmetric neighbours (``P``); one per radius, or one for all.
    radius : float or tuple of float
        Circle radius (``R``); several give a multi-scale descriptor.
    method : {"uniform", "nri_uniform", "default", "ror"}
        Pattern method, as scikit-image names it.
    grid : tuple of int
        (rows, columns) of histogram cells.
    n_jobs : int or None
        Processes for ``transform``; -1 uses every core, None one.
    """

    def __init__(self, points=8, radius=(1, 2, 3), method="uniform", grid=(6, 6), n_jobs=None):
        self.points = points
        self.radius = radius
        self.method = method
        self.grid = grid
        self.n_jobs = n_jobs

    def _validate_params_values(self):
        lbp_bins(8, self.method)  # raises on an unknown method
        if len(_as_tuple(self.grid)) != 2:
            raise ValueError(f"grid={self.grid!r}; give (rows, columns)")

    def _function(self):
        return lbp_histogram

    def _function_params(self):
        return {"points": self.points, "radius": self.radius, "method": self.method, "grid": tuple(self.grid)}


# --------------------------------------------------------------------------- landmarks

_PREDICTORS: dict = {}
LANDMARK_MODEL = "shape_predictor_68_face_landmarks.dat"
# Indices into dlib's 68-point layout.
_JAW, _RIGHT_BROW, _LEFT_BROW = slice(0, 17), slice(17, 22), slice(22, 27)
_NOSE, _RIGHT_EYE, _LEFT_EYE = slice(27, 36), slice(36, 42), slice(42, 48)
_OUTER_LIPS, _INNER_LIPS = slice(48, 60), slice(60, 68)


class LandmarkModelError(RuntimeError):
    """dlib or its landmark model is not installed."""


def face_models_dir() -> str:
    """Folder of the dlib models shipped in the ``face_recognition_models`` package.

    Found without importing the package (its ``__init__`` needs ``pkg_resources``,
    which recent setuptools no longer ships).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise LandmarkModelError(
            "dlib's landmark and face models come from the face_recognition_models package, "
            "which is not installed: pip install face_recognition_models"
        )
    return os.path.join(list(spec.submodule_search_locations)[0], "models")


def landmark_predictor(model: str = LANDMARK_MODEL):
    """The dlib shape predictor ``model``, loaded once per process."""
    if model not in _PREDICTORS:
        try:
            import dlib
        except ImportError:
            raise LandmarkModelError("landmark features need dlib: pip install dlib-bin") from None
        path = os.path.join(face_models_dir(), model)
        if not os.path.isfile(path):
            raise LandmarkModelError(
                f"{path}: dlib model file missing; reinstall it: pip install --force-reinstall face_recognition_models"
            )
        _PREDICTORS[model] = dlib.shape_predictor(path)
    return _PREDICTORS[model]


def face_landmarks(image, *, upscale: int = 2) -> np.ndarray:
    """The 68 dlib landmarks (x, y) of a face crop, in the crop's pixel coordinates.

    The face box is the whole crop: FER-2013 faces are already detected and
    cropped, and dlib's detectors do not fire on 48-pixel faces.  The crop is
    upscaled ``upscale`` times first, because the predictor's regression trees
    sample single pixels and fit smoother on a larger face.
    """
    import cv2
    import dlib

    image = np.asarray(image, dtype=np.uint8)
    if upscale > 1:
        image = cv2.resize(image, None, fx=upscale, fy=upscale, interpolation=cv2.INTER_LINEAR)
    height, width = image.shape[:2]
    shape = landmark_predictor()(np.ascontiguousarray(image), dlib.rectangle(0, 0, width - 1, height - 1))
    points = np.array([(part.x, part.y) for part in shape.parts()], dtype=np.float32) / max(upscale, 1)
    # FER-2013 crops often cut the chin or jaw, where the predictor extrapolates a
    # few pixels past the border; such a point is put on the border it crossed.
    size = np.array(np.shape(image)[1::-1], dtype=np.float32) / max(upscale, 1)
    return np.clip(points, 0, size - 1)


def landmark_features(image, *, upscale: int = 2) -> np.ndarray:
    """Landmarks normalised for position, scale and roll, plus expression measures.

    The 68 points are moved so the eye centres' midpoint is the origin, rotated so
    the eye line is horizontal and divided by the inter-ocular distance (136
    values).  Then 14 distances, also in inter-ocular units, that carry
    expression: mouth width and opening (outer and inner), each eye's opening,
    each brow's height above its eye (inner, centre and outer), mouth-corner
    height against the mouth centre, nose-tip-to-mouth and chin-to-mouth.
    """
    return normalised_landmark_features(face_landmarks(image, upscale=upscale))


def normalised_landmark_features(points: np.ndarray) -> np.ndarray:
    """Features of :func:`landmark_features` from 68 (x, y) points."""
    points = np.asarray(points, dtype=np.float64)
    right_eye, left_eye = points[_RIGHT_EYE].mean(axis=0), points[_LEFT_EYE].mean(axis=0)
    centre = (right_eye + left_eye) / 2
    dx, dy = left_eye - right_eye
    distance = max(np.hypot(dx, dy), 1e-6)
    cos, sin = dx / distance, dy / distance
    rotation = np.array([[cos, sin], [-sin, cos]])  # rotates the eye line onto the x axis
    p = (points - centre) @ rotation.T / distance

    def dist(a, b):
        return float(np.linalg.norm(p[a] - p[b]))

    mouth_centre = p[[51, 57]].mean(axis=0)
    measures = [
        dist(48, 54),  # mouth width
        dist(51, 57),  # outer mouth opening
        dist(62, 66),  # inner mouth opening
        (dist(37, 41) + dist(38, 40)) / 2,  # right eye opening
        (dist(43, 47) + dist(44, 46)) / 2,  # left eye opening
        p[_RIGHT_EYE, 1].mean() - p[_RIGHT_BROW, 1].mean(),  # right brow height
        p[_LEFT_EYE, 1].mean() - p[_LEFT_BROW, 1].mean(),  # left brow height
        p[39, 1] - p[21, 1],  # right inner brow above inner eye corner
        p[42, 1] - p[22, 1],  # left inner brow above inner eye corner
        p[36, 1] - p[17, 1],  # right outer brow
        p[45, 1] - p[26, 1],  # left outer brow
        mouth_centre[1] - (p[48, 1] + p[54, 1]) / 2,  # corners raised (smile) or lowered
        dist(33, 51),  # nose tip to upper lip
        dist(8, 57),  # chin to lower lip
    ]
    return np.concatenate([p.ravel(), np.asarray(measures)]).astype(np.float32)


class LandmarkFeatures(_FaceTransformer):
    """dlib 68-point landmarks, normalised, plus geometric expression measures.

    The dlib predictor (from the ``face_recognition_models`` package) is loaded
    lazily, once per process, and never pickled with the transformer.

    Parameters
    ----------
    upscale : int
        Factor by which the crop is enlarged before landmarks are predicted.
    n_jobs : int or None
        Processes for ``transform``; -1 uses every core, None one.
    """

    def __init__(self, upscale=2, n_jobs=None):
        self.upscale = upscale
        self.n_jobs = n_jobs

    def _validate_params_values(self):
        if int(self.upscale) < 1:
            raise ValueError(f"upscale={self.upscale}; must be at least 1")
        landmark_predictor()  # a missing model is reported at fit, not mid-transform

    def _function(self):
        return landmark_features

    def _function_params(self):
        return {"upscale": int(self.upscale)}


# --------------------------------------------------------------------------- registry

from .sift import SiftBovwFeatures, SiftWordsFeatures  # noqa: E402  (its own module; it imports nothing of this one)

FEATURES = {
    "hog": HOGFeatures,
    "lbp": LBPFeatures,
    "landmarks": LandmarkFeatures,
    "sift_bovw": SiftBovwFeatures,
    "sift_words": SiftWordsFeatures,
}
"""Feature name -> transformer class.  Combine names with ``+``.  ``sift_bovw`` and ``sift_words`` learn a
vocabulary in ``fit`` (fit them on the training faces); the others are stateless.  ``sift_words`` gives sparse
vectors, for the ``local_mkl`` classifier."""


def parse_feature_spec(spec: str) -> list:
    """Split ``"hog+lbp"`` into known feature names; unknown names list the valid ones."""
    names = [name.strip().lower() for name in str(spec).split("+") if name.strip()]
    if not names:
        raise ValueError(f"no feature named in {spec!r}; choose from {', '.join(FEATURES)}")
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise ValueError(
            f"unknown feature {unknown[0]!r}; choose from {', '.join(FEATURES)} (combine with '+', e.g. hog+lbp)"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"feature named twice in {spec!r}")
    return names


def make_features(spec: str = "hog", params: dict | None = None, n_jobs=None):
    """Feature extractor for ``spec`` (``"hog"``, ``"hog+lbp+landmarks"``, ...).

    Parameters
    ----------
    spec : str
        Feature names joined by ``+``.
    params : dict, optional
        ``{feature name: {parameter: value}}`` overriding each transformer's defaults.
    n_jobs : int or None
        Processes for extraction.

    Returns
    -------
    transformer
        A single transformer, or a ``FeatureUnion`` of several (named as the features).
    """
    names = parse_feature_spec(spec)
    params = params or {}
    extra = set(params) - set(names)
    if extra:
        raise ValueError(f"parameters given for {sorted(extra)}, which are not in {spec!r}")
    steps = [(name, FEATURES[name](**{**params.get(name, {}), "n_jobs": n_jobs})) for name in names]
    if len(steps) == 1:
        return steps[0][1]
    return FeatureUnion(steps)


# --------------------------------------------------------------------------- the feature cache

FEATURE_CODE_VERSION = 1
"""Part of the feature cache key: raise it when a feature's computation changes."""


def resolved_feature_params(name: str, params: dict) -> str:
    """Every parameter of feature ``name`` but ``n_jobs``, defaults filled in, as canonical JSON.

    The cache key: keying on the parameters as given would hand back features
    computed under old defaults after a default changes.
    """
    full = FEATURES[name](**params).get_params(deep=False)
    full.pop("n_jobs", None)
    return json.dumps(full, sort_keys=True, default=list)


def feature_cache_entry(memory, name: str, key: str, X) -> tuple:
    """Where the cached vectors of feature ``name`` (resolved key ``key``) of faces ``X`` live, and their record.

    The record (feature, key, :data:`FEATURE_CODE_VERSION` and the faces'
    SHA-256 of shape, dtype and bytes) is stored in the entry and must match
    on load; the file name is its hash.
    """
    record = {"feature": name, "key": json.loads(key), "code_version": FEATURE_CODE_VERSION,
              "faces": array_digest(np.asarray(X))}
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:32]
    return os.path.join(os.fspath(memory), name, f"{digest}.npz"), record


def _cache_location(memory):
    """The cache folder ``memory`` names (a path, or a ``joblib.Memory`` by its location); None caches nothing."""
    location = getattr(memory, "location", memory)  # joblib.Memory, as Pipeline(memory=...) takes it
    return None if location is None else os.fspath(location)


def _extract(name: str, part, X, log=None):
    """``part.transform(X)``, telling ``log`` (if given) when it starts and how long it took."""
    if log is None:
        return part.transform(X)
    started = time.perf_counter()
    log(f"extracting {name} of {len(X):,} faces")
    features = part.transform(X)
    log(f"{name} of {len(X):,} faces extracted in {time.perf_counter() - started:.1f} s")
    return features


def _cached_features(memory, name: str, key: str, part, X, log=None):
    """``part.transform(X)``, read from or written to the cache under ``memory``.

    A sparse result (``sift_bovw`` with ``sparse=True``) is stored as its CSR arrays.
    ``log`` (a function of one message), if given, hears when an extraction
    starts and how long it took; a cache hit says nothing.
    """
    import scipy.sparse as sp

    path, record = feature_cache_entry(memory, name, key, X)
    cached = load_cached_arrays(path, record)
    if cached is not None:
        if "indptr" in cached:
            shape = tuple(int(v) for v in cached["shape"])
            dtype = cached["data"].dtype
            if shape[0] == len(X) and dtype == np.float32 and len(cached["indptr"]) == shape[0] + 1:
                return sp.csr_matrix((cached["data"], cached["indices"], cached["indptr"]), shape=shape)
        else:
            features = cached["features"]
            shape, dtype = features.shape, features.dtype
            if features.ndim == 2 and len(features) == len(X) and dtype == np.float32:
                return features
        warn_once(("entry", path), f"cache file {path}: holds {shape} {dtype} features for {len(X)} faces; "
                                   "not used, rebuilt")
    features = _extract(name, part, X, log)
    if sp.issparse(features):
        features = sp.csr_matrix(features, dtype=np.float32)
        save_cached_arrays(path, {"data": features.data, "indices": features.indices, "indptr": features.indptr,
                                  "shape": np.array(features.shape, dtype=np.int64)}, record)
    else:
        save_cached_arrays(path, {"features": features}, record)
    return features


def feature_parts(extractor) -> list:
    """The single features of an extractor from :func:`make_features`: the union's parts, or itself."""
    return [part for _, part in extractor.transformer_list] if isinstance(extractor, FeatureUnion) else [extractor]


def transform_faces(extractor, X, *, memory=None, n_jobs=None, log=None) -> np.ndarray:
    """Features of faces ``X`` from a fitted extractor, each single feature cached on disk.

    Parameters
    ----------
    extractor : fitted transformer
        One of :data:`FEATURES` or a ``FeatureUnion`` of them (what
        :func:`make_features` returns).
    X : array (n, h, w)
        Faces.
    memory : None, str, path or joblib.Memory
        Cache folder (a ``joblib.Memory`` stands for its location); None caches nothing.
        One entry per single feature: a ``.npz`` of plain arrays (read with
        ``allow_pickle=False``, so an entry can never run code) holding its
        record and its array's shape, dtype and SHA-256, all checked on load;
        an entry that does not match is rebuilt with a
        :class:`~fer_bench._core.CacheWarning`, never used.  The record is the
        feature's name, its resolved parameters
        (:func:`resolved_feature_params`; for a feature fitted on faces, also
        its ``fitted_state_digest()``: the training faces' and the vocabulary's
        digests), :data:`FEATURE_CODE_VERSION` and the faces' bytes, so a
        combined spec (``hog+lbp``) reuses the cached single features and a
        second run of a cell extracts nothing.  A folder that cannot be
        written is read, and costs speed only.
    n_jobs : int or None
        Processes for the extraction; None keeps each transformer's own setting.
    log : callable or None
        Told when a single feature is extracted (not read from the cache)
        and how long it took, as the extraction of some features runs for
        minutes.

    Returns
    -------
    array (n, n_features)
        The same values as ``extractor.transform(X)``: a CSR matrix when a
        feature gives sparse vectors (``sift_bovw`` with ``sparse=True``).
    """
    import copy

    parts = feature_parts(extractor)
    if n_jobs is not None:
        # A shallow copy keeps the fitted attributes; the extractor itself is left as it was.
        parts = [copy.copy(part).set_params(n_jobs=n_jobs) for part in parts]
    names = {cls: name for name, cls in FEATURES.items()}
    location = _cache_location(memory)
    if location is None or any(type(part) not in names for part in parts):
        blocks = [_extract(names.get(type(part), type(part).__name__), part, X, log) for part in parts]
    else:
        X = np.asarray(X)
        blocks = []
        for part in parts:
            name = names[type(part)]
            params = {key: value for key, value in part.get_params(deep=False).items() if key != "n_jobs"}
            key = resolved_feature_params(name, params)
            if hasattr(part, "fitted_state_digest"):
                # A feature that learns in fit (sift_bovw's vocabulary): its vectors also depend on the
                # faces it was fitted on and on what it learned from them.
                key = json.dumps({"params": json.loads(key), "fitted": part.fitted_state_digest()}, sort_keys=True)
            blocks.append(_cached_features(location, name, key, part, X, log=log))
    if len(blocks) == 1:
        return blocks[0]
    import scipy.sparse as sp

    if any(sp.issparse(block) for block in blocks):  # as FeatureUnion stacks them
        return sp.hstack(blocks, format="csr", dtype=np.float32)
    return np.hstack(blocks)
