# Over 500 lines on purpose: saved models name these classes by this module path (fer_classic.model.TRUSTED_TYPES).
"""Estimators of fer-bench's own: fast prediction of a classical model on a CPU, and local learning.

:class:`FixedSizeLSSVM` (registry name ``ls_svm``)
    A fixed-size least-squares SVM (Suykens et al., 2002): an RBF kernel
    machine restricted to ``n_components`` training faces used as kernel centres (the Nystroem
    approximation), fitted in closed form by kernel ridge regression on one-hot
    targets.  Prediction costs a fixed ``n_components x pca_components``
    multiply-adds whatever the training set size, which is what makes one face
    at a time fast; standardising, PCA and global scaling are folded into one
    affine map at fit time.  The deployment model is trained with::

        fer-bench run --features hog --classifier ls_svm --flip --data data/fer2013 --out runs/deploy

    and then converted with ``fer-bench deploy
    runs/deploy/models/hog__ls_svm__flip.joblib deploy.joblib``.

:class:`VectorizedSVC`
    An :class:`sklearn.svm.SVC` (RBF kernel) whose ``predict`` and
    ``decision_function`` compute the kernel against the support vectors by
    matrix multiplication instead of libsvm's per-pair scalar loop.  The
    one-vs-one decision, the votes and libsvm's tie-breaking are reproduced,
    so the predictions are those of ``SVC.predict``; it pays off batched
    (one face at a time still reads every support vector once).

Both pickle inside :meth:`fer_classic.model.ClassicModel.save`;
:func:`fer_classic.model.prepare_for_deployment` (``fer-bench deploy MODEL
OUT``) converts a saved model's RBF ``SVC`` into a :class:`VectorizedSVC`
without retraining.

:class:`LocalSVM` (registry name ``local_svm``)
    Local learning (Ionescu, Popescu and Grozea, 2013): for each face to
    classify, an RBF (or linear) SVM fitted on its nearest training faces.
"""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.svm import SVC


# SVC's own default for ``probability`` (scikit-learn 1.9 turned it into a
# deprecation marker); repeating it keeps VectorizedSVC() as quiet as SVC().
_SVC_PROBABILITY_DEFAULT = inspect.signature(SVC.__init__).parameters["probability"].default

# --------------------------------------------------------------------------- exact one-vs-one SVC


def _pair_indices(n_classes: int) -> list:
    """libsvm's order of class pairs: (0, 1), (0, 2), ..., (1, 2), ..."""
    return [(i, j) for i in range(n_classes) for j in range(i + 1, n_classes)]


def ovo_weights(dual_coef: np.ndarray, n_support: np.ndarray) -> np.ndarray:
    """Support-vector weights of every class pair: ``(n_support_vectors, n_pairs)``.

    libsvm's decision for the pair (i, j) sums, over the support vectors of
    class i, ``dual_coef[j - 1] * K`` and, over those of class j,
    ``dual_coef[i] * K``.  Laying these weights out as one matrix turns all
    pairwise decisions into one product ``K @ W``.

    Parameters
    ----------
    dual_coef : array (n_classes - 1, n_support_vectors)
        libsvm's coefficients as stored in ``SVC._dual_coef_`` (``dual_coef_``
        for more than two classes; its negation for two).
    n_support : array (n_classes,)
        Support vectors per class, in class order (``SVC.n_support_``).
    """
    n_classes = len(n_support)
    starts = np.concatenate([[0], np.cumsum(n_support)])
    pairs = _pair_indices(n_classes)
    weights = np.zeros((dual_coef.shape[1], len(pairs)), dtype=np.float64)
    for p, (i, j) in enumerate(pairs):
        weights[starts[i] : starts[i + 1], p] = dual_coef[j - 1, starts[i] : starts[i + 1]]
        weights[starts[j] : starts[j + 1], p] = dual_coef[i, starts[j] : starts[j + 1]]
    return weights


def rbf_kernel_rows(X: np.ndarray, centres: np.ndarray, centre_norms: np.ndarray, gamma: float) -> np.ndarray:
    """``exp(-gamma * ||x - c||^2)`` for every row of ``X`` and every centre, in ``X``'s dtype.

    The squared distance is expanded as ``|x|^2 + |c|^2 - 2 x.c`` so the bulk
    of the work is one BLAS matrix product; rounding can make it slightly
    negative for a centre equal to ``x``, hence the clip at zero.
    """
    sq = np.einsum("ij,ij->i", X, X)[:, None] + centre_norms[None, :]
    sq -= 2 * (X @ centres.T)
    np.maximum(sq, 0, out=sq)
    sq *= -gamma
    return np.exp(sq, out=sq)


class VectorizedSVC(SVC):
    """``SVC`` whose RBF prediction runs on BLAS; same fit, same predictions.

    ``predict`` reproduces libsvm's one-vs-one vote: pairwise decision values
    ``K @ W + intercept``, a vote for class i where the value is positive and
    for class j otherwise, and the lowest class index winning a tie in votes.
    The kernel is computed in float64 from the float64 support vectors, as
    libsvm does; only the order of summation differs (decision values agree to
    about 1e-12), so a prediction can differ only for a face lying on a pair's
    boundary to that precision.

    Measured on the full sweep's ``hog+lbp+centres__svm`` model (25,285
    support vectors of 200 PCA components; one thread on a busy 2-core
    machine, features excluded): ``SVC.predict`` 14.8 ms per face, this class
    2.2 ms batched, with identical predictions on all 3,589 PrivateTest faces
    and probabilities within 2e-13.  One face at a time there is no real gain
    (11.7 against 12.8 ms): the product then reads all support vectors (40 MB
    in float64) for a single row, as libsvm does.

    The kernel stays in float64 on purpose: on the FER-2013 HOG model the
    pairwise decision values (median 0.67) are differences of sums whose
    absolute terms add up to about 1,000, so float32's rounding cannot be
    bounded tightly enough to certify the sign: a rigorous per-row error bound
    sent 3,545 of 3,589 PrivateTest faces back to float64.

    Parameters are those of :class:`sklearn.svm.SVC`, plus:

    batch_size : int
        Faces per kernel block; bounds the memory of the block
        ``(batch_size, n_support_vectors)``.
    """

    def __init__(self, *, C=1.0, kernel="rbf", degree=3, gamma="scale", coef0=0.0, shrinking=True,
                 probability=_SVC_PROBABILITY_DEFAULT, tol=1e-3, cache_size=200, class_weight=None, verbose=False,
                 max_iter=-1, decision_function_shape="ovr", break_ties=False, random_state=None, batch_size=256):
        super().__init__(C=C, kernel=kernel, degree=degree, gamma=gamma, coef0=coef0, shrinking=shrinking,
                         probability=probability, tol=tol, cache_size=cache_size, class_weight=class_weight,
                         verbose=verbose, max_iter=max_iter, decision_function_shape=decision_function_shape,
                         break_ties=break_ties, random_state=random_state)
        self.batch_size = batch_size

    @classmethod
    def from_svc(cls, svc: SVC, *, batch_size: int = 256) -> "VectorizedSVC":
        """A ``VectorizedSVC`` holding the fitted state of ``svc`` (not copied: shared arrays)."""
        if not isinstance(svc, SVC):
            raise TypeError(f"expected a fitted sklearn.svm.SVC, got {type(svc).__name__}")
        if not hasattr(svc, "support_vectors_"):
            raise ValueError("the SVC is not fitted yet")
        # From a VectorizedSVC too: its own batch_size is replaced.
        params = {k: v for k, v in svc.get_params().items() if k != "batch_size"}
        new = cls(**params, batch_size=batch_size)
        # Fitted state, public and private (libsvm's raw _dual_coef_, _intercept_, _n_support, _gamma ...).
        new.__dict__.update({k: v for k, v in svc.__dict__.items() if k not in new.get_params()})
        new._prepare()
        return new

    def fit(self, X, y, sample_weight=None):
        if self.kernel != "rbf":
            raise ValueError(f"VectorizedSVC computes the RBF kernel only, not kernel={self.kernel!r}")
        super().fit(X, y, sample_weight=sample_weight)
        self._prepare()
        return self

    def _prepare(self):
        """Cache the pair-weight matrix and the support vectors' squared norms."""
        if self.kernel != "rbf":
            raise ValueError(f"VectorizedSVC computes the RBF kernel only, not kernel={self.kernel!r}")
        self._pair_weights = ovo_weights(self._dual_coef_, self._n_support)
        self._sv_norms = np.einsum("ij,ij->i", self.support_vectors_, self.support_vectors_)
        pairs = _pair_indices(len(self.classes_))
        self._pair_first = np.array([i for i, _ in pairs])
        self._pair_second = np.array([j for _, j in pairs])

    def _ovo_decision(self, X) -> np.ndarray:
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "support_vectors_")
        if not hasattr(self, "_pair_weights"):
            self._prepare()
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.support_vectors_.shape[1]:
            raise ValueError(f"expected an array (n, {self.support_vectors_.shape[1]}), got shape {X.shape}")
        out = np.empty((len(X), self._pair_weights.shape[1]), dtype=np.float64)
        step = max(1, int(self.batch_size))
        for start in range(0, len(X), step):
            block = rbf_kernel_rows(X[start : start + step], self.support_vectors_, self._sv_norms, self._gamma)
            out[start : start + step] = block @ self._pair_weights
        out += self._intercept_  # libsvm's -rho per pair, as sklearn stores it privately
        return out

    def _votes(self, decision: np.ndarray) -> np.ndarray:
        n_classes = len(self.classes_)
        votes = np.zeros((len(decision), n_classes), dtype=np.int64)
        positive = decision > 0  # libsvm: dec_value > 0 votes for the first class of the pair
        rows = np.arange(len(decision))[:, None]
        np.add.at(votes, (rows, np.where(positive, self._pair_first, self._pair_second)), 1)
        return votes

    def predict(self, X):
        """Class labels of rows ``X``, as ``SVC.predict`` gives them."""
        if self.break_ties and self.decision_function_shape == "ovr" and len(self.classes_) > 2:
            return self.classes_.take(np.argmax(self.decision_function(X), axis=1))
        # np.argmax returns the first maximum: libsvm's tie-break towards the lowest class index.
        winner = np.argmax(self._votes(self._ovo_decision(X)), axis=1)
        return self.classes_.take(winner)

    def decision_function(self, X):
        """Decision values as ``SVC.decision_function`` gives them (shape per ``decision_function_shape``)."""
        from sklearn.utils.multiclass import _ovr_decision_function

        dec = self._ovo_decision(X)
        if len(self.classes_) == 2:
            return -dec[:, 0]  # sklearn's sign convention for binary SVC
        if self.decision_function_shape == "ovr":
            return _ovr_decision_function(dec < 0, -dec, len(self.classes_))
        return dec


# --------------------------------------------------------------------------- fixed-size LS-SVM


def _softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores - scores.max(axis=1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=1, keepdims=True)
    return scores


def kernel_ridge_equations(Z, y_index, n_classes, centres, gamma, *, chunk=4096, seed=0):
    """Normal equations of kernel ridge regression on one-hot targets, restricted to ``centres``.

    Returns ``(gram, rhs, k_mean, t_mean, K_mm)``: the centred ``K' K`` and
    ``K' Y`` (float64) of the kernel block ``K = K(Z, centres)``, the column
    means of ``K`` and of the targets, and the centres' own kernel matrix.

    ``K`` is built in float32 chunks of ``chunk`` rows (the full block of
    57,000 faces x 6,000 centres would take 2.7 GB in float64) and each
    chunk is centred on a mean estimated from a sample before its product is
    accumulated in float64: accumulating uncentred float32 products and
    subtracting ``n * mean mean'`` afterwards cancels catastrophically
    (the solve then reported a singular matrix for small ``gamma``).
    """
    Z32 = np.asarray(Z, dtype=np.float32)
    L32 = np.asarray(centres, dtype=np.float32)
    norms32 = np.einsum("ij,ij->i", L32, L32)
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(Z32), min(len(Z32), 2000), replace=False)
    shift = rbf_kernel_rows(Z32[sample], L32, norms32, gamma).mean(axis=0, dtype=np.float64).astype(np.float32)
    m = len(L32)
    gram = np.zeros((m, m))
    cross = np.zeros((m, n_classes))
    total = np.zeros(m)
    counts = np.bincount(y_index, minlength=n_classes).astype(np.float64)
    for start in range(0, len(Z32), chunk):
        K = rbf_kernel_rows(Z32[start : start + chunk], L32, norms32, gamma)
        K -= shift
        gram += K.T @ K
        total += K.sum(axis=0, dtype=np.float64)
        # K' Y with one-hot Y: per class, the sum of its rows.
        labels = y_index[start : start + chunk]
        for c in range(n_classes):
            cross[:, c] += K[labels == c].sum(axis=0, dtype=np.float64)
    n = len(Z32)
    delta = total / n  # mean of the shifted block
    t_mean = counts / n
    gram -= n * np.outer(delta, delta)
    rhs = cross - np.outer(total, t_mean)
    k_mean = delta + shift
    centres64 = np.asarray(centres, dtype=np.float64)
    K_mm = rbf_kernel_rows(centres64, centres64, np.einsum("ij,ij->i", centres64, centres64), gamma)
    return gram, rhs, k_mean, t_mean, K_mm


def solve_kernel_ridge(gram, rhs, k_mean, t_mean, K_mm, alpha):
    """Coefficients ``A`` (m, k) and intercept ``b`` (k,) of ``(gram + alpha K_mm) A = rhs``.

    A tiny ridge on the identity keeps the system positive definite when
    centres nearly coincide (``K_mm`` is then singular).
    """
    from scipy.linalg import LinAlgError, solve

    m = len(gram)
    jitter = 1e-8 * np.trace(gram) / m
    system = gram + float(alpha) * K_mm + jitter * np.eye(m)
    try:
        coef = solve(system, rhs, assume_a="pos")
    except LinAlgError:
        coef = solve(system, rhs)
    return coef, t_mean - k_mean @ coef


class FixedSizeLSSVM(ClassifierMixin, BaseEstimator):
    """Least-squares RBF SVM on a fixed set of kernel centres, for fast prediction.

    Fitting: features are standardised, reduced by PCA to ``pca_components``
    and divided by their overall standard deviation, so that ``gamma =
    gamma_scale / pca_components`` is ``SVC``'s ``gamma="scale"`` times
    ``gamma_scale``.  ``n_components`` training samples are drawn as
    kernel centres; the scores are ``K(x, centres) @ A + b`` with ``A`` the
    kernel ridge solution ``(Kc' Kc + alpha K_mm) A = Kc' Yc`` on centred
    one-hot targets (the Nystroem form of kernel ridge, solved exactly in
    ``n_components`` unknowns per class).  Probabilities are a softmax of the
    scores with one temperature fitted on the training scores.

    Prediction: one affine map (standardising, PCA and scaling folded together
    at fit time), one kernel block against the centres, one small product.
    It skips scikit-learn's per-call input validation and checks only the
    shape: on one face (2,352 HOG values) ``check_array`` alone took 0.22 ms
    and ``StandardScaler.transform`` 0.54 ms here (busy 2-core machine), more
    than this whole prediction.

    Parameters
    ----------
    n_components : int
        Kernel centres (Nystroem landmarks); prediction cost grows linearly with it.
    pca_components : int or None
        PCA dimensions before the kernel; None keeps every feature.
    gamma_scale : float
        Multiplier of ``gamma="scale"``.
    alpha : float
        Ridge penalty (in the kernel's norm); larger is smoother.
    dtype : {"float32", "float64"}
        Precision of prediction (fitting is in float64 where it matters).
    random_state : int
        Random state of the centres' draw and of PCA.
    """

    def __init__(self, n_components=6000, pca_components=200, gamma_scale=1.0, alpha=0.01, dtype="float32",
                 random_state=0):
        self.n_components = n_components
        self.pca_components = pca_components
        self.gamma_scale = gamma_scale
        self.alpha = alpha
        self.dtype = dtype
        self.random_state = random_state

    # ------------------------------------------------------------------ fitting

    def _validate_params_values(self):
        if int(self.n_components) < 1:
            raise ValueError(f"n_components={self.n_components}; must be at least 1")
        if float(self.gamma_scale) <= 0:
            raise ValueError(f"gamma_scale={self.gamma_scale}; must be positive")
        if float(self.alpha) < 0:
            raise ValueError(f"alpha={self.alpha}; must be zero or positive")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype={self.dtype!r}; choose 'float32' or 'float64'")

    def fit(self, X, y):
        """Fit on feature rows ``X`` (n, d) and labels ``y`` (n,)."""
        from sklearn.decomposition import PCA
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_X_y

        X, y = check_X_y(X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        self._validate_params_values()
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("FixedSizeLSSVM needs samples of at least two classes; got one class")
        self.n_features_in_ = X.shape[1]
        rng = np.random.default_rng(self.random_state)

        # Kept in the input's dtype (float32 features: 57,000 flipped FER-2013
        # faces x 2,352 HOG values are 0.5 GB, a float64 copy twice that).
        mean = X.mean(axis=0, dtype=np.float64)
        std = X.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0  # constant features: as StandardScaler, leave them at zero
        standard = (X - mean.astype(X.dtype)) / std.astype(X.dtype)
        if self.pca_components is None:
            projection = np.eye(X.shape[1])
            pca_mean = np.zeros(X.shape[1])
        else:
            # PCA cannot have more components than samples or features (small data sets).
            k = min(int(self.pca_components), X.shape[0], X.shape[1])
            pca = PCA(n_components=k, random_state=self.random_state).fit(standard)
            projection, pca_mean = pca.components_.T.astype(np.float64), pca.mean_.astype(np.float64)
        Z = (standard @ projection.astype(X.dtype)).astype(np.float64) - pca_mean @ projection
        del standard
        scale = float(Z.std()) or 1.0
        # One affine map x -> x @ W + c replaces standardise -> PCA -> global scale.
        self.weights_ = projection / std[:, None] / scale
        self.offset_ = -((mean / std + pca_mean) @ projection) / scale
        Z /= scale
        self.gamma_ = float(self.gamma_scale) / Z.shape[1]

        m = min(int(self.n_components), len(Z))
        self.centres_ = Z[np.sort(rng.choice(len(Z), m, replace=False))]
        gram, rhs, k_mean, t_mean, K_mm = kernel_ridge_equations(Z, y_index, len(self.classes_), self.centres_,
                                                                 self.gamma_, seed=self.random_state)
        self.dual_coef_, self.intercept_ = solve_kernel_ridge(gram, rhs, k_mean, t_mean, K_mm, self.alpha)
        sample = rng.choice(len(Z), min(len(Z), 5000), replace=False)
        K = rbf_kernel_rows(Z[sample], self.centres_, np.einsum("ij,ij->i", self.centres_, self.centres_),
                            self.gamma_)
        self.temperature_ = _fit_temperature(K @ self.dual_coef_ + self.intercept_, y_index[sample])
        self._cast()
        return self

    def _cast(self):
        """Prediction arrays in ``dtype``, laid out for BLAS.

        The kernel's exponent ``-gamma |z - l|^2`` is computed as
        ``z . (2 gamma l) - gamma |l|^2 - gamma |z|^2``: one product with
        prescaled centres and two in-place additions, fewer passes over the
        (n, n_components) block than expanding the distance first.  One face
        costs about 0.2 ms in all (HOG included), most of it reading the
        centres (4.8 MB at 6,000 x 200 in float32) once.
        """
        dtype = np.dtype(self.dtype)
        self._W = np.ascontiguousarray(self.weights_, dtype=dtype)
        self._c = self.offset_.astype(dtype)
        self._L2g = np.ascontiguousarray(2 * self.gamma_ * self.centres_, dtype=dtype)
        self._L_bias = (-self.gamma_ * np.einsum("ij,ij->i", self.centres_, self.centres_)).astype(dtype)
        self._A = np.ascontiguousarray(self.dual_coef_, dtype=dtype)
        # One face: A' k is a matrix-vector product, 2.5x faster than k @ A on a (1, m) row (4 against 11 us).
        self._At = np.ascontiguousarray(self.dual_coef_.T, dtype=dtype)
        self._b = self.intercept_.astype(dtype)

    _CAST = ("_W", "_c", "_L2g", "_L_bias", "_A", "_At", "_b")

    def __getstate__(self):
        # The cast copies are rebuilt on load: the model file holds each array once.
        return {k: v for k, v in self.__dict__.items() if k not in self._CAST}

    def __setstate__(self, state):
        state = dict(state)
        if "seed" in state:  # files saved before the parameter took scikit-learn's name
            state.setdefault("random_state", state.pop("seed"))
        self.__dict__.update(state)
        if "dual_coef_" in state:
            self._cast()

    # ------------------------------------------------------------------ predicting

    def decision_function(self, X) -> np.ndarray:
        """Scores (n, n_classes); the largest is the predicted class."""
        if not hasattr(self, "dual_coef_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this FixedSizeLSSVM is not fitted yet; call fit(X, y) first")
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"expected an array (n, {self.n_features_in_}), got shape {X.shape}"
                             + ("; Reshape your data: one sample is X[None]" if X.ndim == 1 else ""))
        Z = X.astype(self._W.dtype, copy=False) @ self._W
        Z += self._c
        z_terms = np.einsum("ij,ij->i", Z, Z)[:, None] * -self.gamma_
        if len(Z) == 1:
            exponent = self._L2g @ Z[0]
            exponent += self._L_bias
            exponent += z_terms[0]
            np.minimum(exponent, 0, out=exponent)  # a distance is never negative; rounding can say so
            return (self._At @ np.exp(exponent, out=exponent) + self._b)[None, :]
        scores = np.empty((len(Z), len(self._b)), dtype=self._W.dtype)
        # Blocks of 256 rows bound the kernel block's memory (6,000 centres:
        # 6 MB in float32) whatever the batch size.
        for start in range(0, len(Z), 256):
            exponent = Z[start : start + 256] @ self._L2g.T
            exponent += self._L_bias
            exponent += z_terms[start : start + 256]
            np.minimum(exponent, 0, out=exponent)
            scores[start : start + 256] = np.exp(exponent, out=exponent) @ self._A
        scores += self._b
        return scores

    def predict(self, X) -> np.ndarray:
        """Class labels of rows ``X``."""
        scores = self.decision_function(X)
        return self.classes_.take(np.argmax(scores, axis=1))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, n_classes): softmax of the scores at the fitted temperature."""
        return _softmax(self.decision_function(X).astype(np.float64) * self.temperature_)


def _fit_temperature(scores: np.ndarray, y_index: np.ndarray) -> float:
    """Temperature ``t`` minimising the log loss of ``softmax(t * scores)`` (golden-section on log t)."""
    def loss(log_t):
        p = _softmax(scores * np.exp(log_t))
        return -np.mean(np.log(np.maximum(p[np.arange(len(y_index)), y_index], 1e-12)))

    low, high = np.log(0.1), np.log(1000.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = loss(a), loss(b)
    for _ in range(40):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = loss(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = loss(b)
    return float(np.exp((low + high) / 2))


class SoftmaxCalibrator(ClassifierMixin, BaseEstimator):
    """Probabilities ``softmax(t * decision_function)`` of a fitted classifier, ``t`` fitted for log loss.

    A single positive temperature keeps each row's order, so the most
    probable class is the one the classifier's decision values rank first:
    ``argmax(predict_proba)`` equals the classifier's own ``predict`` for
    classifiers whose ``predict`` is the argmax of ``decision_function``
    (one-vs-rest linear SVMs, and RBF SVMs with ``break_ties=True``).
    Per-class sigmoid calibration (Platt scaling) does not keep that order,
    and its argmax is a worse rule: 2 points less accurate for the RBF SVM on
    FER-2013 HOG + LBP + landmarks.

    Parameters
    ----------
    estimator : fitted classifier
        Has ``decision_function`` (shape ``(n, n_classes)``) and ``classes_``.
    """

    def __init__(self, estimator):
        self.estimator = estimator

    def fit(self, X, y):
        """Fit the temperature on held-out rows ``X`` with labels ``y`` (values of ``estimator.classes_``)."""
        return self.fit_decisions(self.estimator.decision_function(X), y)

    def fit_decisions(self, scores, y):
        """Fit the temperature on the estimator's decision values ``scores`` of held-out rows with labels ``y``.

        For a caller that has the decision values already (a local SVM takes
        minutes to compute them).
        """
        self.classes_ = np.asarray(self.estimator.classes_)
        scores = np.asarray(scores, dtype=np.float64)
        y_index = np.searchsorted(self.classes_, np.asarray(y))
        if scores.shape != (len(y_index), len(self.classes_)):
            raise ValueError(f"decision values of shape {scores.shape} for {len(y_index)} rows and "
                             f"{len(self.classes_)} classes")
        self.temperature_ = _fit_temperature(scores, y_index)
        # The accuracy of the decisions on these rows, which predict() repeats: a caller that
        # fitted on held-out rows need not score them again.
        self.accuracy_ = float(np.mean(np.argmax(scores, axis=1) == y_index))
        return self

    def proba_from_decisions(self, scores) -> np.ndarray:
        """:meth:`predict_proba` of rows whose decision values ``scores`` are computed already."""
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "temperature_")
        return _softmax(np.asarray(scores, dtype=np.float64) * self.temperature_)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities ``(n, n_classes)``."""
        return self.proba_from_decisions(self.estimator.decision_function(X))

    def predict(self, X) -> np.ndarray:
        """The most probable class of each row."""
        return self.classes_.take(np.argmax(self.predict_proba(X), axis=1))


def make_ls_svm(*, n_components=6000, pca_components=200, gamma_scale=1.0, alpha=0.01, seed=0):
    """Registry builder for :class:`FixedSizeLSSVM` (standardising and PCA are inside it).

    Defaults from PublicTest (HOG, Training + mirrored copies, 57,418 faces):
    3,000 centres 51.7%, 6,000 53.4%; ``gamma_scale`` 0.75 lost 0.5 point
    and 0.5 lost 2; 100 PCA components instead of 200 lost 0.5 point at 3,000
    centres.  ``alpha`` from 1e-4 to 0.1 moved it by less than 0.1 point, 1
    cost 0.9.  Prediction cost is proportional to ``n_components *
    pca_components``.
    """
    return FixedSizeLSSVM(n_components=n_components, pca_components=pca_components, gamma_scale=gamma_scale,
                          alpha=alpha, random_state=seed)


# --------------------------------------------------------------------------- local learning


def _check_local_params(estimator) -> None:
    """The checks of ``n_neighbors``, ``C`` and ``gamma`` that every local SVM makes."""
    if int(estimator.n_neighbors) < 2:
        raise ValueError(f"n_neighbors={estimator.n_neighbors}; must be at least 2")
    _check_svm_params(estimator)


def _check_svm_params(estimator) -> None:
    """The checks of ``C`` and ``gamma`` of an RBF SVM's parameters."""
    if float(estimator.C) <= 0:
        raise ValueError(f"C={estimator.C}; must be positive")
    if not (estimator.gamma == "scale" or (isinstance(estimator.gamma, (int, float)) and estimator.gamma > 0)):
        raise ValueError(f"gamma={estimator.gamma!r}; give 'scale' or a positive number")


def _fit_precomputed(gram, labels: np.ndarray, C: float, random_state):
    """``(SVC on the precomputed kernel gram(), the label indices present)``; one label: ``(None, it)``.

    ``gram`` is called only when an SVM is needed.
    """
    present = np.unique(labels)
    if len(present) == 1:
        return None, present
    svm = SVC(kernel="precomputed", C=C, break_ties=True, decision_function_shape="ovr", random_state=random_state)
    return svm.fit(gram(), labels), present


def _precomputed_scores(model, present: np.ndarray, kernel, n_rows: int, n_classes: int) -> np.ndarray:
    """Decision values ``(n_rows, n_classes)`` of a :func:`_fit_precomputed` model on the rows of ``kernel()``.

    A class absent from the model scores 1 below the lowest score of the
    classes present (and at most -2); a model of one label scores it 1 and the
    rest -1.
    """
    scores = np.full((n_rows, n_classes), -1.0)
    if model is None:
        scores[:, present[0]] = 1.0
        return scores
    values = np.asarray(model.decision_function(kernel()), dtype=np.float64)
    if len(present) == 2:  # one value per row: positive for the second class
        values = np.column_stack([-values, values])
    scores[:] = (np.minimum(values.min(axis=1), -1.0) - 1.0)[:, None]
    scores[:, present] = values
    return scores


class LocalSVM(ClassifierMixin, BaseEstimator):
    """Local learning: for each sample, an SVM fitted on its ``n_neighbors`` nearest training samples.

    Ionescu, Popescu and Grozea (2013) gained about 2 points on FER-2013 with
    it over a global SVM.  ``fit`` only stores the training rows; every call
    of ``decision_function`` finds each row's nearest training rows
    (Euclidean, by BLAS in blocks of ``batch_size`` rows) and fits a
    one-vs-rest ``SVC`` (``break_ties=True``) on them.  The kernel block of
    the neighbours is computed by BLAS and given to libsvm precomputed, which
    is what makes a fit take milliseconds: on a busy 2-core machine, 500
    neighbours of 200 values, 45 ms against 79 ms for ``SVC(kernel="rbf")``
    and 250 ms or more for ``LinearSVC``.  The neighbours are given to the SVM
    in training order, so with ``n_neighbors`` at least the training set's
    size the local SVM is the global ``SVC`` (fitted once for all rows).  If
    all neighbours share one label, no SVM is fitted: that label scores 1 and
    the others -1.

    The decision values have one column per class of ``classes_``.  A class
    absent from a row's neighbourhood scores below every class present (1
    below the lowest of them, and at most -2), so ``predict``, the argmax of
    the decision values, is the local SVM's own prediction, and
    :class:`SoftmaxCalibrator` can turn the values into probabilities.

    Parameters
    ----------
    n_neighbors : int
        Training samples each local SVM is fitted on.
    kernel : {"rbf", "linear"}
        Kernel of the local SVMs.
    C : float
        Regularisation of the local SVMs.
    gamma : "scale" or float
        RBF width; "scale" is ``1 / (n_features * X.var())`` of the whole training set.
    batch_size : int
        Rows whose neighbours are searched at once (memory ``batch_size x n_train``).
    random_state : int
        Random state of ``SVC`` (unused by its deterministic solver; kept for the registry's seed).
    """

    def __init__(self, n_neighbors=500, kernel="rbf", C=10.0, gamma="scale", batch_size=256, random_state=0):
        self.n_neighbors = n_neighbors
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.batch_size = batch_size
        self.random_state = random_state

    def _validate_params_values(self):
        _check_local_params(self)
        if self.kernel not in ("rbf", "linear"):
            raise ValueError(f"kernel={self.kernel!r}; choose 'rbf' or 'linear'")

    def fit(self, X, y):
        """Store training rows ``X`` (n, d) and labels ``y`` (n,)."""
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_X_y

        X, y = check_X_y(X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self._validate_params_values()
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError("LocalSVM needs samples of at least two classes; got one class")
        self.n_features_in_ = X.shape[1]
        # float32 halves the model file (the whole training set in the classifier's space); the kernels are
        # computed in float64 from these values.
        self.X_fit_ = np.ascontiguousarray(X, dtype=np.float32)
        self.y_fit_ = y_index.astype(np.int64)
        variance = float(np.asarray(X, dtype=np.float64).var())
        self.gamma_ = (1.0 / (X.shape[1] * variance) if variance > 0 else 1.0) if self.gamma == "scale" \
            else float(self.gamma)
        return self

    def _neighbours(self, rows: np.ndarray, k: int) -> np.ndarray:
        """Indices (sorted) of the ``k`` nearest training rows of each row: ``(n, k)``."""
        train = self.X_fit_
        # |x - t|^2 = |x|^2 - 2 x.t + |t|^2; |x|^2 does not change the order.
        distances = rows.astype(train.dtype, copy=False) @ train.T
        distances *= -2
        distances += np.einsum("ij,ij->i", train, train)[None, :]
        nearest = np.argpartition(distances, k - 1, axis=1)[:, :k]
        return np.sort(nearest, axis=1)

    def _kernel(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Kernel matrix between two sets of rows, in float64 (as libsvm computes it)."""
        rows, columns = np.asarray(rows, dtype=np.float64), np.asarray(columns, dtype=np.float64)
        if self.kernel == "linear":
            return rows @ columns.T
        return rbf_kernel_rows(rows, columns, np.einsum("ij,ij->i", columns, columns), self.gamma_)

    def _local_model(self, neighbours: np.ndarray):
        """The SVM fitted on training rows ``neighbours`` and the label indices it knows; one label: (None, it)."""
        train = self.X_fit_[neighbours]
        return _fit_precomputed(lambda: self._kernel(train, train), self.y_fit_[neighbours], self.C,
                                self.random_state) + (neighbours,)

    def _scores(self, model, present: np.ndarray, neighbours: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Decision values ``(n, n_classes)`` of a local model (see the class notes for absent classes)."""
        return _precomputed_scores(model, present, lambda: self._kernel(rows, self.X_fit_[neighbours]),
                                   len(rows), len(self.classes_))

    def decision_function(self, X) -> np.ndarray:
        """Local SVM scores ``(n, n_classes)``; the largest is the predicted class."""
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self, "X_fit_")
        X = check_array(X, dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but LocalSVM was fitted on {self.n_features_in_}")
        X = X.astype(self.X_fit_.dtype, copy=False)
        k = min(int(self.n_neighbors), len(self.X_fit_))
        if k == len(self.X_fit_):  # every row's neighbourhood is the whole training set: one fit serves all
            return self._scores(*self._local_model(np.arange(k)), X)
        scores = np.empty((len(X), len(self.classes_)))
        with _row_progress(len(X)) as bar:
            for start in range(0, len(X), int(self.batch_size)):
                rows = X[start : start + int(self.batch_size)]
                for i, chosen in enumerate(self._neighbours(rows, k)):
                    scores[start + i] = self._scores(*self._local_model(chosen), rows[i : i + 1])[0]
                bar.update(len(rows))
        return scores

    def predict(self, X) -> np.ndarray:
        """Class labels of rows ``X``: the argmax of :meth:`decision_function`."""
        return self.classes_.take(np.argmax(self.decision_function(X), axis=1))


class _SumKernelFactors:
    """The kernel factors of :class:`SumKernelLocalSVM` and :class:`SumKernelLinearSVM`.

    A row's factors are its ``linear_columns`` block divided by its Euclidean
    norm (the cosine's factor) and its other columns standardised and reduced
    by PCA (the RBF kernel's input).  The estimator sets ``linear_columns``,
    ``linear_weight``, ``pca_components``, ``gamma`` and ``random_state``.
    """

    def _check_factor_params(self):
        if not 0 <= float(self.linear_weight) <= 1:
            raise ValueError(f"linear_weight={self.linear_weight}; give a weight from 0 to 1")
        if self.pca_components is not None and int(self.pca_components) < 1:
            raise ValueError(f"pca_components={self.pca_components}; give a positive number or None")

    def _split(self, X):
        """``(linear block as CSR float32 or None, other columns as a dense float64 array or None)``."""
        import scipy.sparse as sp

        n_features = X.shape[1]
        start, stop = (0, 0) if self.linear_columns is None else (int(c) for c in self.linear_columns)
        if not 0 <= start <= stop <= n_features:
            raise ValueError(f"linear_columns={self.linear_columns!r} do not fit in {n_features} features")
        linear = sp.csr_matrix(X[:, start:stop], dtype=np.float32) if stop > start else None
        rest = np.r_[0:start, stop:n_features]
        if len(rest) == 0:
            return linear, None
        other = X[:, rest]
        other = other.toarray() if sp.issparse(other) else np.asarray(other)
        return linear, other.astype(np.float64, copy=False)

    @staticmethod
    def _unit_rows(linear):
        """Rows of ``linear`` divided by their Euclidean norms (zero rows stay zero): the cosine's factors."""
        import scipy.sparse as sp

        norms = np.sqrt(np.asarray(linear.multiply(linear).sum(axis=1), dtype=np.float64).ravel())
        return sp.csr_matrix(sp.diags(np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0)) @ linear,
                             dtype=np.float32)

    def _fit_factors(self, X, y):
        """Check ``X, y``, fit the scaler, PCA and RBF width; set ``classes_`` and ``weights_``; return the
        training rows' factors and labels ``(unit linear block or None, RBF components or None, label indices)``."""
        from sklearn.decomposition import PCA
        from sklearn.preprocessing import StandardScaler
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import check_X_y

        X, y = check_X_y(X, y, accept_sparse="csr", dtype=[np.float64, np.float32])
        check_classification_targets(y)
        self._validate_params_values()
        self.classes_, y_index = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least two classes; got one class")
        self.n_features_in_ = X.shape[1]
        linear, other = self._split(X)
        unit = None if linear is None else self._unit_rows(linear)
        self.scaler_ = self.pca_ = Z = None
        if other is not None:
            self.scaler_ = StandardScaler().fit(other)
            Z = self.scaler_.transform(other)
            if self.pca_components is not None:
                components = min(int(self.pca_components), *Z.shape)
                self.pca_ = PCA(n_components=components, random_state=self.random_state).fit(Z)
                Z = self.pca_.transform(Z)
            variance = float(Z.var())
            self.gamma_ = (1.0 / (Z.shape[1] * variance) if variance > 0 else 1.0) if self.gamma == "scale" \
                else float(self.gamma)
            Z = np.ascontiguousarray(Z, dtype=np.float32)
        self.weights_ = (float(self.linear_weight) if other is not None else 1.0) if linear is not None else 0.0
        return unit, Z, y_index.astype(np.int64)

    def _factors(self, X):
        """The kernel factors of rows ``X``, as ``fit`` stores them for the training rows."""
        linear, other = self._split(X)
        unit = None if linear is None else self._unit_rows(linear)
        if other is None:
            return unit, None
        Z = self.scaler_.transform(other)
        if self.pca_ is not None:
            Z = self.pca_.transform(Z)
        return unit, np.asarray(Z, dtype=np.float32)


class SumKernelLocalSVM(_SumKernelFactors, LocalSVM):
    """Local learning on a weighted sum of a linear kernel on bag-of-words columns and an RBF kernel on the rest.

    The multiple-kernel setting of Ionescu, Popescu and Grozea (2013) with
    fer-bench's other features beside the words.  For columns ``l`` (the
    ``linear_columns`` block, sparse or dense: normalised bag-of-words vectors)
    and ``z`` (the other columns, standardised and reduced by PCA, as the
    ``svm`` classifier sees them), the kernel is::

        K(x, t) = w * cos(l_x, l_t) + (1 - w) * exp(-gamma * |z_x - z_t|^2)

    with ``w = linear_weight``; without a linear block it is the RBF term
    alone, without other columns the cosine alone.  Both terms are 1 on the
    diagonal, so the training rows of largest ``K`` are the nearest in the
    kernel's feature space: each row's ``n_neighbors`` of them are its
    neighbourhood, and an ``SVC`` on the precomputed kernel is fitted on them
    (decision values, absent classes and one-label neighbourhoods as
    :class:`LocalSVM`).  With ``n_neighbors`` at least the training set's
    size it is the global ``SVC`` on the same kernel.

    ``fer_classic.model.ClassicModel`` sets ``linear_columns`` to the
    ``sift_bovw`` block of its features.

    Parameters
    ----------
    n_neighbors : int
        Training rows each local SVM is fitted on.
    linear_columns : (start, stop) or None
        Columns of the linear (cosine) term; None: no linear term.
    linear_weight : float
        Weight ``w`` of the linear term, 0..1.
    pca_components : int or None
        PCA components of the standardised other columns (at most their
        number and the training rows'); None keeps them all.
    C : float
        Regularisation of the local SVMs.
    gamma : "scale" or float
        RBF width; "scale" is ``1 / (n_components * Z.var())`` of the training rows' components.
    batch_size : int
        Rows whose kernel against the whole training set is computed at once.
    n_jobs : int or None
        Threads scoring batches of rows side by side (-1: every core; None: one).
    random_state : int
        Random state of PCA and ``SVC``.
    """

    def __init__(self, n_neighbors=500, linear_columns=None, linear_weight=0.5, pca_components=200, C=10.0,
                 gamma="scale", batch_size=64, n_jobs=None, random_state=0):
        self.n_neighbors = n_neighbors
        self.linear_columns = linear_columns
        self.linear_weight = linear_weight
        self.pca_components = pca_components
        self.C = C
        self.gamma = gamma
        self.batch_size = batch_size
        self.n_jobs = n_jobs
        self.random_state = random_state

    def _validate_params_values(self):
        _check_local_params(self)
        self._check_factor_params()

    def fit(self, X, y):
        """Store the training rows' kernel factors: the unit linear block and the RBF components."""
        self.linear_fit_, self.Z_fit_, self.y_fit_ = self._fit_factors(X, y)
        self.n_fit_ = len(self.y_fit_)
        return self

    def _sum_kernel(self, a, b, b_columns=None) -> np.ndarray:
        """``K`` between the rows of factors ``a`` and ``b`` (pairs of linear block, components), float64.

        ``b_columns``: ``b``'s linear block transposed, as CSR, when at hand.
        """
        w = self.weights_
        out = 0.0
        if w > 0:
            out = w * np.asarray((a[0] @ (b[0].T if b_columns is None else b_columns)).toarray(), dtype=np.float64)
        if w < 1:
            za, zb = np.asarray(a[1], dtype=np.float64), np.asarray(b[1], dtype=np.float64)
            out = out + (1 - w) * rbf_kernel_rows(za, zb, np.einsum("ij,ij->i", zb, zb), self.gamma_)
        return out

    def _training_columns(self):
        """The training rows' linear block transposed, as CSR; computed once and kept in memory, not saved.

        ``rows @ block.T`` would have SciPy convert the whole transposed block
        to CSR on every call: 4.9 s for one face against 57,418 training rows.
        """
        if self.linear_fit_ is None:
            return None
        if self.__dict__.get("_columns") is None:
            self.__dict__["_columns"] = self.linear_fit_.T.tocsr()
        return self.__dict__["_columns"]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_columns", None)
        return state

    def _train_factors(self, index):
        linear = None if self.linear_fit_ is None else self.linear_fit_[index]
        return linear, None if self.Z_fit_ is None else self.Z_fit_[index]

    def decision_function(self, X) -> np.ndarray:
        """Local SVM scores ``(n, n_classes)``; the largest is the predicted class."""
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self, "y_fit_")
        X = check_array(X, accept_sparse="csr", dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but SumKernelLocalSVM was fitted on {self.n_features_in_}")
        rows = self._factors(X)
        n_classes = len(self.classes_)
        everything = np.arange(self.n_fit_)
        k = min(int(self.n_neighbors), self.n_fit_)
        if k == self.n_fit_:  # every row's neighbourhood is the whole training set: one fit serves all
            train = self._train_factors(everything)
            model, present = _fit_precomputed(lambda: self._sum_kernel(train, train), self.y_fit_, self.C,
                                              self.random_state)
            return _precomputed_scores(model, present, lambda: self._sum_kernel(rows, train), X.shape[0], n_classes)
        from joblib import Parallel, delayed
        from threadpoolctl import threadpool_limits

        batches = [slice(start, start + int(self.batch_size)) for start in range(0, X.shape[0], int(self.batch_size))]
        workers = _worker_count(self.n_jobs, len(batches))
        self._training_columns()  # once, before the threads need it
        # Threads: libsvm, SciPy's sparse products and BLAS release the GIL; one BLAS thread each keeps the
        # workers from competing for the cores.
        # Two batches a worker at a time, so the progress bar moves as they finish (every joblib backend
        # returns a list; not all of them a generator).
        parts = []
        with threadpool_limits(1 if workers > 1 else None), _row_progress(X.shape[0]) as bar, \
                Parallel(n_jobs=workers, prefer="threads") as parallel:
            for start in range(0, len(batches), 2 * workers):
                scores = parallel(
                    delayed(self._batch_scores)(tuple(None if part is None else part[block] for part in rows), k)
                    for block in batches[start : start + 2 * workers])
                parts.extend(scores)
                bar.update(sum(len(block) for block in scores))
        return np.vstack(parts) if parts else np.empty((0, n_classes))

    def _batch_scores(self, batch, k: int) -> np.ndarray:
        """Local SVM scores of a batch of rows' kernel factors."""
        similarity = self._sum_kernel(batch, (self.linear_fit_, self.Z_fit_), self._training_columns())
        nearest = np.sort(np.argpartition(-similarity, k - 1, axis=1)[:, :k], axis=1)
        scores = np.empty((len(nearest), len(self.classes_)))
        for i, chosen in enumerate(nearest):
            train = self._train_factors(chosen)
            model, present = _fit_precomputed(lambda: self._sum_kernel(train, train), self.y_fit_[chosen], self.C,
                                              self.random_state)
            scores[i] = _precomputed_scores(model, present, lambda: similarity[i : i + 1, chosen], 1,
                                            len(self.classes_))[0]
        return scores


class SumKernelLinearSVM(_SumKernelFactors, ClassifierMixin, BaseEstimator):
    """The global counterpart of :class:`SumKernelLocalSVM`: one linear SVM on an explicit map of its kernel.

    The rows are mapped to ``[sqrt(w) * l / |l|, sqrt(1 - w) * phi(z)]``, with
    ``l``, ``z`` and ``w`` as in :class:`SumKernelLocalSVM` and ``phi``
    scikit-learn's ``Nystroem`` map of the RBF kernel on ``n_components``
    training rows, so that the inner product of two mapped rows approximates
    the summed kernel ``w * cos(l_x, l_t) + (1 - w) * exp(-gamma |z_x - z_t|^2)``;
    a one-vs-rest ``LinearSVC`` is fitted on all training rows.  Unlike the
    local SVM it keeps no training rows, and predicts in milliseconds.

    On its own it is the weaker model (the cell
    ``sift_words+hog+lbp+landmarks__global_mkl__flip``: see the README); its
    errors differ from the local SVM's, which is what an ensemble of the two
    gains from.

    Parameters
    ----------
    linear_columns : (start, stop) or None
        Columns of the linear (cosine) term; None: no linear term.
    linear_weight : float
        Weight ``w`` of the linear term, 0..1.
    pca_components : int or None
        PCA components of the standardised other columns; None keeps them all.
    n_components : int
        Training rows of the Nystroem map (at most the training rows).
    C : float
        Regularisation of the linear SVM.
    gamma : "scale" or float
        RBF width, as :class:`SumKernelLocalSVM`'s.
    max_iter : int
        Iterations of ``LinearSVC``.
    random_state : int
        Random state of PCA, the Nystroem rows and ``LinearSVC``.
    """

    def __init__(self, linear_columns=None, linear_weight=0.5, pca_components=200, n_components=2000, C=1.0,
                 gamma="scale", max_iter=3000, random_state=0):
        self.linear_columns = linear_columns
        self.linear_weight = linear_weight
        self.pca_components = pca_components
        self.n_components = n_components
        self.C = C
        self.gamma = gamma
        self.max_iter = max_iter
        self.random_state = random_state

    def _validate_params_values(self):
        _check_svm_params(self)
        self._check_factor_params()
        if int(self.n_components) < 1:
            raise ValueError(f"n_components={self.n_components}; give a positive number")

    def _design(self, unit, Z):
        """The mapped rows, as CSR float32: the weighted unit linear block beside the weighted Nystroem map."""
        import scipy.sparse as sp

        parts = []
        if unit is not None and self.weights_ > 0:
            parts.append(np.float32(np.sqrt(self.weights_)) * unit)
        if Z is not None and self.weights_ < 1:
            mapped = np.asarray(self.nystroem_.transform(Z), dtype=np.float32)
            parts.append(sp.csr_matrix(np.float32(np.sqrt(1 - self.weights_)) * mapped))
        return sp.hstack(parts, format="csr", dtype=np.float32)

    def fit(self, X, y):
        """Fit the factors, the Nystroem map on ``n_components`` training rows, and the linear SVM."""
        from sklearn.kernel_approximation import Nystroem
        from sklearn.svm import LinearSVC

        unit, Z, y_index = self._fit_factors(X, y)
        self.nystroem_ = None
        if Z is not None and self.weights_ < 1:
            self.nystroem_ = Nystroem(kernel="rbf", gamma=self.gamma_, n_components=min(int(self.n_components), len(Z)),
                                      random_state=self.random_state).fit(Z)
            # float32 halves the file; the map's values are kept in float32 anyway.
            self.nystroem_.normalization_ = self.nystroem_.normalization_.astype(np.float32)
        self.svm_ = LinearSVC(C=self.C, dual=True, max_iter=int(self.max_iter),
                              random_state=self.random_state).fit(self._design(unit, Z), y_index)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Linear SVM scores ``(n, n_classes)``; the largest is the predicted class."""
        from sklearn.utils.validation import check_array, check_is_fitted

        check_is_fitted(self, "svm_")
        X = check_array(X, accept_sparse="csr", dtype=[np.float64, np.float32])
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but SumKernelLinearSVM was fitted on {self.n_features_in_}")
        scores = np.asarray(self.svm_.decision_function(self._design(*self._factors(X))), dtype=np.float64)
        return np.column_stack([-scores, scores]) if scores.ndim == 1 else scores

    def predict(self, X) -> np.ndarray:
        """Class labels of rows ``X``: the argmax of :meth:`decision_function`."""
        return self.classes_.take(np.argmax(self.decision_function(X), axis=1))


PROGRESS_ROWS = 500
"""Rows from which a local-learning pass shows a progress bar (about two minutes of ``local_mkl``)."""


def _row_progress(n_rows: int):
    """A tqdm bar on stderr counting the faces a local-learning pass has scored (one SVM fit each).

    Hidden for fewer than :data:`PROGRESS_ROWS` rows and when stderr is not a terminal.
    """
    from tqdm import tqdm

    return tqdm(total=n_rows, desc="local SVMs", unit="face", leave=False,
                disable=None if n_rows >= PROGRESS_ROWS else True)


def _worker_count(n_jobs, n_tasks: int) -> int:
    """Workers for ``n_tasks`` tasks: ``n_jobs`` (-1 every core, None one), at most one a task."""
    from joblib import cpu_count

    wanted = cpu_count() if n_jobs == -1 else 1 if n_jobs is None else max(1, int(n_jobs))
    return max(1, min(wanted, n_tasks))
