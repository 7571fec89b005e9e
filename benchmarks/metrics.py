"""Metrics computed from predictions alone (labels as integer indices into ``classes``)."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


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
