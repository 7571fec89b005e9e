"""Metrics computed from predictions alone (labels as integer indices into ``classes``).

Everything here takes the test labels, a model's predicted labels and, where
needed, its class probabilities, so a report can be rebuilt from the saved
predictions without the models.  The functions return plain, JSON-ready values.

- :func:`classification_metrics`: accuracy, macro/weighted precision, recall
  and F1, per-class figures, the confusion matrix.
- :func:`confusion`: the confusion matrix as counts and row-normalised.
- :func:`roc_curves`: one-vs-rest ROC curves and AUC from probabilities.
- :func:`bootstrap_intervals`: percentile bootstrap intervals for accuracy and
  macro F1.
- :func:`mcnemar_test`: are two models' errors on the same faces different?
- :func:`group_labels`: FER-2013 classes -> valence (negative, neutral, positive).
- :func:`evaluate_predictions`: all of the above for one model.
"""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

VALENCE_GROUPS = {
    "negative": ("angry", "disgust", "fear", "sad"),
    "neutral": ("neutral",),
    "positive": ("happy", "surprise"),
}
"""Valence group -> the FER-2013 classes it pools."""

MCNEMAR_EXACT_BELOW = 25
"""Discordant pairs below which McNemar's test uses the exact binomial: the
chi-square approximation needs about 25 discordant pairs to be trustworthy."""


def classification_metrics(y_true, y_pred, classes) -> dict:
    """Accuracy, macro/weighted precision-recall-F1, per-class figures and the confusion matrix.

    Parameters
    ----------
    y_true, y_pred : array (n,)
        Integer labels indexing ``classes``.
    classes : sequence of str
        Label names.

    Returns
    -------
    dict
        Plain JSON-ready values; the confusion matrix rows are true classes.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(y_pred)
    labels = np.arange(len(classes))
    out = {"accuracy": float(skm.accuracy_score(y_true, y_pred))}
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, average=average, zero_division=0
        )
        out[f"precision_{average}"] = float(p)
        out[f"recall_{average}"] = float(r)
        out[f"f1_{average}"] = float(f)
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    out["per_class"] = {
        name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
        for i, name in enumerate(classes)
    }
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=labels).tolist()
    return out


def confusion(y_true, y_pred, n_classes: int) -> dict:
    """Confusion matrix as counts and row-normalised (each true class's row sums to 1).

    Parameters
    ----------
    y_true, y_pred : array (n,)
        Integer labels in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes (the matrix is square even if a class never occurs).

    Returns
    -------
    dict
        ``counts`` (list of lists of int) and ``normalised`` (list of lists of
        float); a true class with no faces has a row of zeros.
    """
    counts = skm.confusion_matrix(y_true, y_pred, labels=np.arange(n_classes))
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    return {"counts": counts.tolist(), "normalised": normalised.tolist()}


def roc_curves(y_true, proba, classes) -> dict:
    """One-vs-rest ROC curves and AUC of every class.

    Parameters
    ----------
    y_true : array (n,)
        Integer labels indexing ``classes``.
    proba : array (n, k)
        Class probabilities (or any scores), columns in ``classes`` order.
    classes : sequence of str
        Label names.

    Returns
    -------
    dict
        ``per_class``: name -> ``{"fpr", "tpr", "auc"}`` (``None`` where the
        class has no positive or no negative face, so its curve is undefined);
        ``auc_macro``: the mean AUC over the classes where it is defined (what
        ``roc_auc_score(..., multi_class="ovr", average="macro")`` gives when
        every class occurs).
    """
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape != (len(y_true), len(classes)):
        raise ValueError(f"probabilities of shape {proba.shape} do not match {len(y_true)} faces "
                         f"and {len(classes)} classes")
    per_class, aucs = {}, []
    for k, name in enumerate(classes):
        positive = y_true == k
        if positive.all() or not positive.any():
            per_class[name] = {"fpr": None, "tpr": None, "auc": None}
            continue
        fpr, tpr, _ = skm.roc_curve(positive, proba[:, k])
        auc = float(skm.roc_auc_score(positive, proba[:, k]))
        per_class[name] = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": auc}
        aucs.append(auc)
    return {"per_class": per_class, "auc_macro": float(np.mean(aucs)) if aucs else None}


def _macro_f1_from_counts(counts: np.ndarray) -> np.ndarray:
    """Macro F1 of confusion matrices ``(..., k, k)``; a class with no true and no predicted faces scores 0.

    That matches ``f1_score(..., labels=range(k), average="macro", zero_division=0)``.
    """
    tp = np.diagonal(counts, axis1=-2, axis2=-1).astype(float)
    fp = counts.sum(axis=-2) - tp
    fn = counts.sum(axis=-1) - tp
    denominator = 2 * tp + fp + fn
    f1 = np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)
    return f1.mean(axis=-1)


def bootstrap_intervals(y_true, y_pred, n_classes: int, *, n_resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> dict:
    """Percentile bootstrap confidence intervals for accuracy and macro F1.

    The test faces are resampled with replacement ``n_resamples`` times; the
    same resamples serve both metrics.  Seeded, so a report is reproducible.

    Parameters
    ----------
    y_true, y_pred : array (n,)
        Integer labels in ``0 .. n_classes - 1``.
    n_classes : int
        Number of classes (for macro F1).
    n_resamples : int
        Bootstrap resamples.
    confidence : float
        Coverage of the interval, e.g. 0.95.
    seed : int
        Seed of the resampling.

    Returns
    -------
    dict
        ``{"accuracy": [low, high], "f1_macro": [low, high], "n_resamples": ..., "confidence": ...}``.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if len(y_true) == 0:
        raise ValueError("cannot bootstrap an empty test set")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    n = len(y_true)
    correct = (y_true == y_pred).astype(float)
    codes = y_true * n_classes + y_pred
    accuracy = np.empty(n_resamples)
    f1_macro = np.empty(n_resamples)
    # Resample in chunks so memory stays small on large test sets.
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_resamples, chunk):
        stop = min(n_resamples, start + chunk)
        index = rng.integers(0, n, size=(stop - start, n))
        accuracy[start:stop] = correct[index].mean(axis=1)
        offsets = np.arange(stop - start)[:, None] * n_classes * n_classes
        counts = np.bincount((codes[index] + offsets).ravel(), minlength=(stop - start) * n_classes * n_classes)
        f1_macro[start:stop] = _macro_f1_from_counts(counts.reshape(stop - start, n_classes, n_classes))
    tail = (1 - confidence) / 2 * 100
    return {
        "accuracy": np.percentile(accuracy, [tail, 100 - tail]).tolist(),
        "f1_macro": np.percentile(f1_macro, [tail, 100 - tail]).tolist(),
        "n_resamples": int(n_resamples),
        "confidence": float(confidence),
    }


def mcnemar_from_counts(b: int, c: int, *, exact_below: int = MCNEMAR_EXACT_BELOW) -> dict:
    """McNemar's test from the two discordant counts.

    Parameters
    ----------
    b : int
        Faces model A got right and model B got wrong.
    c : int
        Faces model A got wrong and model B got right.
    exact_below : int
        Below this many discordant pairs (``b + c``) the exact two-sided
        binomial test is used; from it on, the chi-square statistic with
        Edwards' continuity correction, ``(|b - c| - 1)^2 / (b + c)``.

    Returns
    -------
    dict
        ``b``, ``c``, ``method``, ``statistic`` (None for the exact test) and ``p_value``.
    """
    from scipy import stats

    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise ValueError(f"discordant counts must be non-negative, got b={b}, c={c}")
    n = b + c
    if n == 0:  # the models agree on every face: no evidence of a difference
        return {"b": b, "c": c, "method": "no discordant pairs", "statistic": None, "p_value": 1.0}
    if n < exact_below:
        p = min(1.0, 2 * stats.binom.cdf(min(b, c), n, 0.5))
        return {"b": b, "c": c, "method": "exact binomial", "statistic": None, "p_value": float(p)}
    statistic = (abs(b - c) - 1) ** 2 / n
    return {"b": b, "c": c, "method": "chi-square with continuity correction", "statistic": float(statistic),
            "p_value": float(stats.chi2.sf(statistic, df=1))}


def mcnemar_test(y_true, pred_a, pred_b, *, exact_below: int = MCNEMAR_EXACT_BELOW) -> dict:
    """McNemar's test between two models' predictions on the same faces.

    Parameters
    ----------
    y_true : array (n,)
        True labels.
    pred_a, pred_b : array (n,)
        The two models' predicted labels for the same faces, in the same order.
    exact_below : int
        See :func:`mcnemar_from_counts`.

    Returns
    -------
    dict
        As :func:`mcnemar_from_counts`, plus ``n`` (faces compared).
    """
    y_true, pred_a, pred_b = (np.asarray(a) for a in (y_true, pred_a, pred_b))
    if not len(y_true) == len(pred_a) == len(pred_b):
        raise ValueError(f"McNemar's test needs predictions on the same faces: got {len(y_true)} labels, "
                         f"{len(pred_a)} and {len(pred_b)} predictions")
    right_a, right_b = pred_a == y_true, pred_b == y_true
    result = mcnemar_from_counts(np.sum(right_a & ~right_b), np.sum(~right_a & right_b), exact_below=exact_below)
    return {**result, "n": int(len(y_true))}


def group_labels(classes, groups=VALENCE_GROUPS):
    """Map each class to a group, e.g. FER-2013's seven classes to valence.

    Parameters
    ----------
    classes : sequence of str
        Label names.
    groups : dict
        Group name -> class names it pools.

    Returns
    -------
    (numpy.ndarray, tuple) or None
        ``mapping`` with ``mapping[label] = group index`` and the group names;
        None when some class belongs to no group (the dataset is not FER-2013-like).
    """
    names = tuple(groups)
    lookup = {cls: g for g, members in enumerate(groups.values()) for cls in members}
    if not all(cls in lookup for cls in classes):
        return None
    return np.array([lookup[cls] for cls in classes], dtype=np.int64), names


def evaluate_predictions(y_true, y_pred, proba, classes, *, n_resamples: int = 1000, seed: int = 0,
                         groups=VALENCE_GROUPS) -> dict:
    """Every metric of one model, from its test predictions.

    Parameters
    ----------
    y_true, y_pred : array (n,)
        Integer labels indexing ``classes``.
    proba : array (n, k) or None
        Class probabilities; without them there are no ROC curves.
    classes : sequence of str
        Label names.
    n_resamples, seed : int
        Bootstrap settings (see :func:`bootstrap_intervals`).
    groups : dict
        Class grouping for the grouped metrics (default: valence).

    Returns
    -------
    dict
        :func:`classification_metrics` plus ``confusion`` (counts and
        normalised), ``roc`` (or None), ``ci`` (bootstrap intervals) and
        ``grouped`` (the same metrics on the groups; None when the classes do
        not all belong to a group).
    """
    classes = tuple(str(c) for c in classes)
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    out = classification_metrics(y_true, y_pred, classes)
    out["confusion"] = confusion(y_true, y_pred, len(classes))
    out["roc"] = roc_curves(y_true, proba, classes) if proba is not None else None
    out["ci"] = bootstrap_intervals(y_true, y_pred, len(classes), n_resamples=n_resamples, seed=seed)
    grouping = group_labels(classes, groups)
    out["grouped"] = None
    if grouping is not None:
        mapping, names = grouping
        grouped_proba = None
        if proba is not None:
            proba = np.asarray(proba, dtype=float)
            grouped_proba = np.stack([proba[:, mapping == g].sum(axis=1) for g in range(len(names))], axis=1)
        out["grouped"] = evaluate_predictions(mapping[y_true], mapping[y_pred], grouped_proba, names,
                                              n_resamples=n_resamples, seed=seed, groups={})
        out["grouped"]["groups"] = {name: list(groups[name]) for name in names}
    return out
