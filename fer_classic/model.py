"""ClassicModel: a feature extractor, a classifier, the label names and metadata.

It offers the interface every fer-bench model shares::

    fit(X, y) -> self          predict(X) -> (n,) label names
    predict_proba(X) -> (n, k) classes_ (label names, in a fixed order)
    save(path) / load(path)    metadata: dataset, split, params, versions, scores

``X`` is always a stack of ``uint8`` gray faces shaped ``(n, 48, 48)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import sys
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from fer_bench import _core
from fer_bench._core import FER2013_CLASSES, encode_labels, flip_faces

from .classifiers import check_classifier_name, make_classifier
from .estimators import SoftmaxCalibrator, VectorizedSVC
from .features import feature_parts, make_features, parse_feature_spec, transform_faces

MODEL_FORMAT = "fer-bench-model"
MODEL_FORMAT_VERSION = 2
"""Version 2: a skops file (no code runs on loading).  Version 1: a joblib pickle, loaded only when trusted."""
PICKLE_FORMAT_VERSION = 1
MODEL_SUFFIX = ".skops"

TRUSTED_TYPES = frozenset({
    "fer_classic.model.ClassicModel",
    "fer_classic.features.HOGFeatures",
    "fer_classic.features.LBPFeatures",
    "fer_classic.features.LandmarkFeatures",
    "fer_classic.sift.SiftBovwFeatures",
    "fer_classic.sift.SiftWordsFeatures",
    "fer_classic.estimators.FixedSizeLSSVM",
    "fer_classic.estimators.VectorizedSVC",
    "fer_classic.estimators.SoftmaxCalibrator",
    "fer_classic.estimators.LocalSVM",
    "fer_classic.estimators.SumKernelLocalSVM",
    "fer_classic.estimators.SumKernelLinearSVM",
    "sklearn.tree._tree.Tree",
    # The sparse bag-of-words rows of a local_mkl model; skops writes and reads them with SciPy's save_npz /
    # load_npz, which refuse pickled objects.
    "scipy.sparse._csr.csr_matrix",
    # Per-class sigmoid calibration, as models of format version 1 hold it (re-saved as skops files).
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
})
"""Types a classical model file may hold beyond those skops trusts itself (NumPy, SciPy, scikit-learn
estimators).  Each is a plain data holder: rebuilding it sets attributes and runs none of its methods."""

TTA_MODES = ("none", "flip")
"""Test-time augmentation of a classical model: none, or each face averaged with its mirror image."""


def check_tta(tta) -> str:
    """A classical model's test-time augmentation as a name of :data:`TTA_MODES`; anything else is an error."""
    if tta in (None, False):
        return "none"
    if tta is True:
        return "flip"
    if tta not in TTA_MODES:
        raise ValueError(f"unknown test-time augmentation {tta!r}; choose from {', '.join(TTA_MODES)}")
    return tta


LEGACY_MODULES = {"fer_classic.deploy": "fer_classic.estimators"}
"""Module paths that model files saved by earlier layouts name -> the module that holds those classes now."""


class ModelFileError(ValueError):
    """A model file could not be loaded; the message says why and what to do."""


CLASSIC_LIBRARIES = ("fer-bench", "numpy", "scikit-learn", "scikit-image", "opencv-python-headless", "dlib-bin", "joblib")
"""The distributions whose versions a saved classical model records."""


def library_versions() -> dict:
    """Versions of the libraries a saved model depends on."""
    return _core.library_versions(CLASSIC_LIBRARIES)


class ClassicModel(ClassifierMixin, BaseEstimator):
    """Hand-crafted features + a scikit-learn classifier.

    A scikit-learn estimator: ``__init__`` stores the parameters as given and
    ``fit`` validates them, so ``get_params``, ``set_params``, ``clone`` and
    ``GridSearchCV`` work; an unfitted model raises ``NotFittedError``.

    Parameters
    ----------
    features : str
        Feature spec, e.g. ``"hog"`` or ``"hog+lbp+landmarks"``.
    classifier : str
        Registry name: ``svm``, ``linear_svm``, ``rf``, ``dt``, ``knn``, ``ls_svm``.
    feature_params : dict, optional
        ``{feature: {param: value}}``.
    classifier_params : dict, optional
        Parameters of the registry entry (``C``, ``pca_components``, ``class_weight`` ...).
    classes : sequence of str
        Label names in label order; ``fit`` sets ``classes_`` from it.
    random_state : int
        Random state of the classifier.
    n_jobs : int or None
        Processes for feature extraction (-1: every core).  Read when features are
        extracted, so it may be changed on a fitted model.
    memory : None, str, path or joblib.Memory
        Where extracted features are cached (see
        :func:`fer_classic.features.transform_faces`); None caches nothing.  Read
        when features are extracted, like ``n_jobs``; a saved model keeps None.
    tta : {"none", "flip"}
        Test-time augmentation: ``"flip"`` averages each face's probabilities
        with its mirror image's, at twice the cost of a prediction.
    metadata : dict, optional
        Free-form provenance (dataset, split, selection, scores); saved with the model.
    """

    family = "classic"

    def __init__(self, features="hog", classifier="svm", *, feature_params=None, classifier_params=None,
                 classes=FER2013_CLASSES, tta="none", random_state=0, n_jobs=None, memory=None, metadata=None):
        self.features = features
        self.classifier = classifier
        self.feature_params = feature_params
        self.classifier_params = classifier_params
        self.classes = classes
        self.tta = tta
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.memory = memory
        self.metadata = metadata

    def __setstate__(self, state):
        # Files saved before the scikit-learn conventions hold ``seed`` for ``random_state``,
        # ``classes_`` without ``classes``, and no ``memory``; files saved before test-time
        # augmentation hold no ``tta``.
        state = dict(state)
        if "seed" in state:
            state.setdefault("random_state", state.pop("seed"))
        if "classes_" in state:
            state.setdefault("classes", state["classes_"])
        state.setdefault("memory", None)
        state.setdefault("tta", "none")
        super().__setstate__(state)

    # ------------------------------------------------------------------ fitting

    def make_extractor(self):
        """The unfitted feature extractor this model uses (one transformer or a ``FeatureUnion``)."""
        return make_features(self.features, self.feature_params)

    def fit(self, X, y, *, validation=None):
        """Fit the extractor and the classifier on faces ``X`` with labels ``y`` (names or indices).

        Parameters
        ----------
        X : array (n, 48, 48)
            Training faces.
        y : array (n,)
            Labels, as names in ``classes`` or integer indices.
        validation : tuple (X_val, y_val), optional
            Held-out faces used to calibrate probabilities of classifiers that
            have no ``predict_proba`` of their own (SVMs); with ``tta="flip"``,
            their mirror images too.  Without it they are calibrated on the
            training faces.  Such a classifier's accuracy on the validation
            faces (as :meth:`predict` labels them, test-time augmentation
            included) is kept as ``validation_accuracy_`` (None for the others,
            and without ``validation``), and :meth:`score` of those faces and
            labels returns it without a second pass.
        """
        check_features_for_classifier(self.features, self.feature_params, self.classifier)
        tta = check_tta(self.tta)
        classes = tuple(self.classes)
        X = np.asarray(X)
        y = encode_labels(y, classes)
        if len(X) != len(y):
            raise ValueError(f"{len(X)} faces but {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise ValueError("training needs faces of at least two classes")
        self.classes_ = classes
        self.extractor_ = self.make_extractor().fit(X)
        F = self._features(X)
        self.estimator_ = make_classifier(self.classifier, self.classifier_params, seed=self.random_state)
        _fit_pca_to_data(self.estimator_, *F.shape)
        _fit_linear_block_to_features(self.estimator_, self.extractor_, X[:1])
        self.estimator_.fit(F, y)
        self.calibrator_ = None
        self.validation_accuracy_ = None
        if not hasattr(self.estimator_, "predict_proba"):
            # Probabilities from the decision values at one fitted temperature: their argmax is
            # the classifier's own decision.  Fitted on the validation faces when given (the
            # training faces' decision values are overconfident).
            # With test-time augmentation, one temperature is fitted on the faces and their mirror images.
            if validation is not None:
                X_cal, y_cal = np.asarray(validation[0]), encode_labels(validation[1], classes)
                blocks = [self._features(view) for view in self._views(X_cal, tta)]
            else:
                blocks, y_cal = [F], y
            scores = [np.asarray(self.estimator_.decision_function(block), dtype=np.float64) for block in blocks]
            self.calibrator_ = SoftmaxCalibrator(self.estimator_).fit_decisions(np.concatenate(scores),
                                                                                np.tile(y_cal, len(scores)))
            if validation is not None:
                proba = sum(self.calibrator_.proba_from_decisions(block) for block in scores) / len(scores)
                predicted = self.calibrator_.classes_[np.argmax(proba, axis=1)]
                self.validation_accuracy_ = float(np.mean(predicted == y_cal))
                self.validation_digest_ = _scored_digest(validation[0], y_cal, tta)
        self.n_train_ = len(y)
        return self

    def _check_fitted(self):
        check_is_fitted(self, "estimator_", msg="this %(name)s is not fitted yet; call fit(X, y) first")

    def _features(self, X) -> np.ndarray:
        return transform_faces(self.extractor_, X, memory=getattr(self, "memory", None), n_jobs=self.n_jobs)

    @staticmethod
    def _views(X, tta: str):
        """The views of faces ``X`` a prediction averages: the faces, and with ``"flip"`` their mirror images."""
        yield X
        if tta == "flip":
            yield flip_faces(X)

    # ------------------------------------------------------------------ predicting

    def transform(self, X) -> np.ndarray:
        """Feature vectors of faces ``X``."""
        self._check_fitted()
        return self._features(np.asarray(X))

    def predict(self, X) -> np.ndarray:
        """Label names of faces ``X``: the most probable class of :meth:`predict_proba`.

        Without test-time augmentation that is the classifier's own decision
        too (see :class:`fer_classic.estimators.SoftmaxCalibrator`).  Models
        saved in format version 1 calibrated SVMs per class, whose argmax
        differs from the SVM's decision; for them the SVM's decision is
        returned, as when they were scored.
        """
        self._check_fitted()
        calibrator = getattr(self, "calibrator_", None)
        if check_tta(self.tta) == "none" and calibrator is not None and not isinstance(calibrator, SoftmaxCalibrator):
            return np.asarray(self.classes_)[self.estimator_.predict(self.transform(X))]
        return np.asarray(self.classes_)[np.argmax(self.predict_proba(X), axis=1)]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, k), columns in ``classes_`` order.

        With ``tta="flip"``, the average of each face's and its mirror image's.
        """
        self._check_fitted()
        X = np.asarray(X)
        tta = check_tta(self.tta)
        probabilities = [self._proba(self._features(view)) for view in self._views(X, tta)]
        return sum(probabilities) / len(probabilities)

    def _proba(self, F) -> np.ndarray:
        source = self.calibrator_ if self.calibrator_ is not None else self.estimator_
        proba = source.predict_proba(F)
        full = np.zeros((F.shape[0], len(self.classes_)), dtype=np.float64)
        full[:, source.classes_.astype(int)] = proba  # classes missing in training get 0
        return full

    def score(self, X, y, sample_weight=None) -> float:
        """Accuracy on faces ``X`` with labels ``y`` (names or indices, as ``fit`` takes them)."""
        from sklearn.metrics import accuracy_score

        self._check_fitted()
        y = encode_labels(y, self.classes_)
        kept = getattr(self, "validation_accuracy_", None)
        # The validation faces of fit were scored by its calibration pass (selection scores them again:
        # for a local SVM that is minutes a candidate).
        if (kept is not None and sample_weight is None
                and _scored_digest(X, y, check_tta(self.tta)) == self.validation_digest_):
            return kept
        predicted = encode_labels(self.predict(X), self.classes_)
        return float(accuracy_score(y, predicted, sample_weight=sample_weight))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags

    # ------------------------------------------------------------------ persistence

    def save(self, path) -> Path:
        """Write the model as one skops file (loading it runs no code), atomically; returns the path.

        The file keeps ``memory=None``: a cache folder belongs to the machine that trained the model.
        """
        import copy
        import zipfile

        import skops.io

        self._check_fitted()
        path = Path(path)
        saved = copy.copy(self)
        saved.memory = None
        payload = {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "family": self.family,
            "versions": library_versions(),
            "model": saved,
        }
        with _core.replacing(path, suffix=".tmp") as tmp:
            skops.io.dump(payload, tmp, compression=zipfile.ZIP_DEFLATED, compresslevel=6)
        return path

    @classmethod
    def load(cls, path, *, trust: bool = False) -> "ClassicModel":
        """Load a model written by :meth:`save`; a wrong file or version is a clear error.

        Parameters
        ----------
        path : path
            A skops model file, or (with ``trust``) a joblib file of format version 1.
        trust : bool
            Allow a joblib (pickle) file.  Unpickling runs whatever code the
            file holds, so pass it only for files from a source you trust.
        """
        payload = read_model_payload(path, trust=trust)
        if payload["family"] != cls.family:
            raise ModelFileError(f"{path}: a {payload['family']} model, not a classical one")
        return payload["model"]

    def __repr__(self, N_CHAR_MAX=700) -> str:
        tta = "" if check_tta(self.tta) == "none" else f", tta={self.tta!r}"
        return f"ClassicModel(features={self.features!r}, classifier={self.classifier!r}{tta})"


def _fit_pca_to_data(estimator, n_samples: int, n_features: int) -> None:
    """Lower a PCA step's component count to what ``n_samples`` x ``n_features`` data allows.

    The registry's defaults (a few hundred components) suit FER-2013; a small
    dataset has fewer faces than that, where PCA would refuse to fit.
    """
    from sklearn.decomposition import PCA

    limit = min(n_samples, n_features)
    for step in getattr(estimator, "named_steps", {}).values():
        if isinstance(step, PCA) and isinstance(step.n_components, int) and step.n_components > limit:
            step.set_params(n_components=limit)


def _scored_digest(X, y_index, tta: str = "none") -> str:
    """SHA-256 of faces ``X`` and their label indices, and the test-time augmentation: how a kept accuracy was
    measured."""
    from .sift import faces_digest

    labels = np.ascontiguousarray(y_index, dtype=np.int64)
    digest = faces_digest(X) + hashlib.sha256(memoryview(labels).cast("B")).hexdigest()
    return digest if tta == "none" else f"{digest}:{tta}"


def check_features_for_classifier(features: str, feature_params, classifier: str) -> None:
    """Refuse, before any extraction, features ``classifier`` cannot take or that lack what it needs.

    ``local_mkl`` needs sparse bag-of-words features (``sift_words``); the
    other classifiers standardise or split dense vectors, and cannot take them.
    """
    from .sift import SiftBovwFeatures

    parse_feature_spec(features)
    sparse = any(isinstance(part, SiftBovwFeatures) and part.sparse
                 for part in feature_parts(make_features(features, feature_params)))
    needs_words = check_classifier_name(classifier).needs_words
    if needs_words and not sparse:
        raise ValueError(f"classifier {classifier!r} sums a linear kernel on sparse bag-of-words features with an "
                         f"RBF kernel on the rest, and {features!r} has none: add sift_words (e.g. "
                         f"--features sift_words+hog+lbp+landmarks), or use local_svm")
    if sparse and not needs_words:
        raise ValueError(f"{features!r} holds sparse bag-of-words vectors (sift_words), which only local_mkl "
                         f"takes; use --classifier local_mkl, or sift_bovw with {classifier!r}")


def _fit_linear_block_to_features(estimator, extractor, face) -> None:
    """Point a classifier's ``linear_columns`` at the columns of the sparse bag-of-words features.

    :class:`~fer_classic.estimators.SumKernelLocalSVM` (``local_mkl``) sums a
    linear kernel on those columns (``sift_words``, or ``sift_bovw`` with
    ``sparse=True``) with an RBF kernel on the rest; ``face`` (one face)
    measures the width of the features that do not state theirs.
    """
    from .sift import SiftBovwFeatures

    if "linear_columns" not in estimator.get_params(deep=True):
        return
    start, block = 0, []
    for part in feature_parts(extractor):
        words = isinstance(part, SiftBovwFeatures) and part.sparse
        width = part.n_features_out_ if isinstance(part, SiftBovwFeatures) else part.transform(face).shape[1]
        if words:
            if block and block[-1][1] != start:
                raise ValueError("list the sparse bag-of-words features next to each other (e.g. "
                                 "sift_words+hog+lbp+landmarks): the linear kernel takes one block of columns")
            block.append((start, start + width))
        start += width
    estimator.set_params(linear_columns=(block[0][0], block[-1][1]) if block else None)


@contextlib.contextmanager
def legacy_module_names():
    """While the block runs, the module names of :data:`LEGACY_MODULES` import their successors.

    A pickle names each class by module path (``fer_classic.deploy.FixedSizeLSSVM``
    in files saved before the estimators moved); the aliases are removed again
    afterwards, so nothing else can import the old names.
    """
    added = []
    for old, new in LEGACY_MODULES.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)
            added.append(old)
    try:
        yield
    finally:
        for old in added:
            sys.modules.pop(old, None)


def read_model_payload(path, *, trust: bool = False) -> dict:
    """Open a fer-bench classical model file and check its format and library versions.

    A skops file is read only if every type it holds is one skops trusts or
    one of :data:`TRUSTED_TYPES`; a joblib (pickle) file only with ``trust``,
    and then with a warning.
    """
    import warnings
    import zipfile

    import sklearn

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if zipfile.is_zipfile(path):
        payload = _read_skops(path)
    elif not _looks_like_pickle(path):
        raise ModelFileError(f"{path}: not a fer-bench model file; train one with `fer-bench run`")
    elif not trust:
        raise ModelFileError(
            f"{path}: a pickle (joblib) model file; loading one runs any code it holds, so fer-bench loads it only "
            f"when you trust its source: pass --trust (trust=True in Python), or re-save it with `fer-bench deploy "
            f"{path} OUT.skops --trust`"
        )
    else:
        warnings.warn(f"{path}: loading a pickle (joblib) model file because it is trusted; unpickling runs any "
                      f"code the file holds", stacklevel=3)
        payload = _read_pickle(path)
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelFileError(f"{path}: not a fer-bench model file; train one with `fer-bench run`")
    if payload.get("format_version") not in (PICKLE_FORMAT_VERSION, MODEL_FORMAT_VERSION):
        raise ModelFileError(
            f"{path}: model format version {payload.get('format_version')}, this fer-bench reads versions "
            f"{PICKLE_FORMAT_VERSION} and {MODEL_FORMAT_VERSION}; retrain the model with this version"
        )
    saved = payload.get("versions", {}).get("scikit-learn", "")
    if saved.split(".")[:2] != sklearn.__version__.split(".")[:2]:
        raise ModelFileError(
            f"{path}: saved with scikit-learn {saved}, but {sklearn.__version__} is installed; "
            f"install scikit-learn=={saved} or retrain the model"
        )
    return payload


PICKLE_MAGIC = (b"\x80", b"\x78", b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x5d\x00\x00")
"""First bytes of a pickle (protocol 2 and later) and of the compressed streams joblib writes (zlib, gzip,
bz2, xz, lzma)."""


def _looks_like_pickle(path: Path) -> bool:
    with open(path, "rb") as stream:
        head = stream.read(6)
    return head.startswith(PICKLE_MAGIC)


def _read_skops(path: Path) -> dict:
    import warnings

    import skops.io

    try:
        untrusted = sorted(set(skops.io.get_untrusted_types(file=path)) - TRUSTED_TYPES)
    except Exception as error:  # skops raises many types on damaged or foreign zip files
        raise ModelFileError(f"{path}: not a fer-bench model file ({type(error).__name__}); train one with "
                             f"`fer-bench run`") from None
    if untrusted:
        raise ModelFileError(f"{path}: the file holds types fer-bench does not load: {', '.join(untrusted)}; "
                             f"it was not loaded")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # version mismatches are reported by the caller, in words
            return skops.io.load(path, trusted=sorted(TRUSTED_TYPES))
    except Exception as error:
        raise ModelFileError(f"{path}: the model cannot be read ({type(error).__name__}: {error})") from None


def _read_pickle(path: Path) -> dict:
    import warnings

    import joblib

    try:
        with warnings.catch_warnings(), legacy_module_names():
            warnings.simplefilter("ignore")
            return joblib.load(path)
    except ModuleNotFoundError as error:
        raise ModelFileError(f"{path}: the model needs the module {error.name!r}, which is not installed") from None
    except Exception as error:  # joblib raises many types on foreign bytes
        raise ModelFileError(
            f"{path}: not a fer-bench model file ({type(error).__name__}); train one with `fer-bench run`"
        ) from None


# --------------------------------------------------------------------------- converting saved models


def vectorize_svm_model(model):
    """A copy of a fitted ``ClassicModel`` whose RBF ``SVC`` is replaced by :class:`VectorizedSVC`.

    No retraining: the support vectors, coefficients and the probability
    calibrator are kept, so predictions and probabilities are unchanged
    (up to ~1e-12 in the decision values) while batched prediction runs on BLAS.

    Parameters
    ----------
    model : ClassicModel
        A fitted model whose estimator is an ``SVC`` or a ``Pipeline`` ending in one.

    Returns
    -------
    ClassicModel
        The converted copy; ``model`` itself is left as it was.
    """
    import copy

    from sklearn.pipeline import Pipeline
    from sklearn.svm import SVC

    check_is_fitted(model, "estimator_", msg="the model is not fitted yet")
    # One deepcopy of the whole model keeps the calibrator pointing at the same
    # (copied) estimator, so replacing the step below updates both.
    converted = copy.deepcopy(model)
    estimator = converted.estimator_
    if isinstance(estimator, Pipeline):
        name, last = estimator.steps[-1]
        if not isinstance(last, SVC) or last.kernel != "rbf":
            raise ValueError(f"the model's classifier is {type(last).__name__}, not an RBF SVC")
        estimator.steps[-1] = (name, VectorizedSVC.from_svc(last))
    elif isinstance(estimator, SVC) and estimator.kernel == "rbf":
        converted.estimator_ = VectorizedSVC.from_svc(estimator)
        calibrator = getattr(converted, "calibrator_", None)
        if isinstance(calibrator, SoftmaxCalibrator):
            calibrator.estimator = converted.estimator_
        elif calibrator is not None:  # per-class sigmoid calibration (format version 1)
            for calibrated in calibrator.calibrated_classifiers_:
                calibrated.estimator.estimator = converted.estimator_
    else:
        raise ValueError(f"the model's classifier is {type(estimator).__name__}, not an RBF SVC")
    return converted


def prepare_for_deployment(model):
    """A copy of a fitted ``ClassicModel`` with the fast prediction paths of this module.

    - an RBF ``SVC`` becomes a :class:`VectorizedSVC` (same predictions).

    Anything else is kept as it is; the copy's metadata records what changed.

    Parameters
    ----------
    model : ClassicModel
        A fitted model.

    Returns
    -------
    ClassicModel
    """
    import copy

    check_is_fitted(model, "estimator_", msg="the model is not fitted yet")
    changes = []
    try:
        converted = vectorize_svm_model(model)
        changes.append("SVC -> VectorizedSVC")
    except ValueError:
        converted = copy.deepcopy(model)
    converted.metadata = {**(converted.metadata or {}), "deployment": changes}
    return converted
