"""Metrics against scikit-learn and hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from fer_bench.metrics import (
    VALENCE_GROUPS,
    bootstrap_intervals,
    classification_metrics,
    confusion,
    evaluate_predictions,
    group_labels,
    mcnemar_from_counts,
    mcnemar_test,
    roc_curves,
)

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


def noisy_predictions(n=600, k=7, accuracy=0.6, seed=0):
    """Labels, predictions right with probability ``accuracy``, and probabilities peaked at the prediction."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < accuracy, y_true, rng.integers(0, k, n))
    proba = rng.random((n, k))
    proba[np.arange(n), y_pred] += 2
    proba /= proba.sum(axis=1, keepdims=True)
    return y_true, y_pred, proba


def test_classification_metrics_match_sklearn():
    y_true, y_pred, _ = noisy_predictions()
    got = classification_metrics(y_true, y_pred, CLASSES)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    for average in ("macro", "weighted"):
        assert got[f"f1_{average}"] == pytest.approx(skm.f1_score(y_true, y_pred, average=average))
        assert got[f"precision_{average}"] == pytest.approx(skm.precision_score(y_true, y_pred, average=average))
        assert got[f"recall_{average}"] == pytest.approx(skm.recall_score(y_true, y_pred, average=average))
    f1 = skm.f1_score(y_true, y_pred, average=None)
    assert [got["per_class"][c]["f1"] for c in CLASSES] == pytest.approx(f1)
    assert [got["per_class"][c]["support"] for c in CLASSES] == np.bincount(y_true, minlength=7).tolist()


def test_classification_metrics_by_hand():
    # 3 classes: true 0 0 1 1 2 2, predicted 0 1 1 1 2 0
    got = classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ("a", "b", "c"))
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert got["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert got["per_class"]["b"]["recall"] == 1.0
    assert got["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert got["f1_macro"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert got["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_confusion_counts_and_row_normalised():
    got = confusion([0, 0, 0, 1, 1], [0, 0, 1, 1, 1], 3)
    assert got["counts"] == [[2, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert got["normalised"][0] == pytest.approx([2 / 3, 1 / 3, 0])
    assert got["normalised"][1] == pytest.approx([0, 1, 0])
    assert got["normalised"][2] == [0.0, 0.0, 0.0]  # no faces of class 2: zeros, not NaN


def test_roc_curves_match_sklearn():
    y_true, _, proba = noisy_predictions()
    got = roc_curves(y_true, proba, CLASSES)
    assert got["auc_macro"] == pytest.approx(skm.roc_auc_score(y_true, proba, multi_class="ovr", average="macro"))
    fpr, tpr, _ = skm.roc_curve(y_true == 3, proba[:, 3])
    assert got["per_class"]["happy"]["fpr"] == pytest.approx(fpr.tolist())
    assert got["per_class"]["happy"]["tpr"] == pytest.approx(tpr.tolist())


def test_roc_curves_by_hand_and_missing_class():
    # class "a": scores 0.9, 0.8 for its two faces, 0.85 and 0.1 for the others -> 3 of 4 pairs ranked right
    y_true = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.85, 0.15, 0.0], [0.1, 0.9, 0.0]])
    got = roc_curves(y_true, proba, ("a", "b", "c"))
    assert got["per_class"]["a"]["auc"] == pytest.approx(0.75)
    assert got["per_class"]["c"] == {"fpr": None, "tpr": None, "auc": None}
    assert got["auc_macro"] == pytest.approx((0.75 + got["per_class"]["b"]["auc"]) / 2)


def test_roc_curves_reject_wrong_shape():
    with pytest.raises(ValueError, match=r"probabilities of shape \(4, 2\) do not match 4 faces and 3 classes"):
        roc_curves([0, 1, 2, 0], np.zeros((4, 2)), ("a", "b", "c"))


def test_mcnemar_exact_small_counts():
    # b=10, c=2: p = 2 * P(X <= 2), X ~ Binomial(12, 1/2) = 2 * (1 + 12 + 66) / 4096
    got = mcnemar_from_counts(10, 2)
    assert got["method"] == "exact binomial"
    assert got["p_value"] == pytest.approx(2 * 79 / 4096)
    assert got["p_value"] == pytest.approx(0.0386, abs=1e-4)
    assert mcnemar_from_counts(2, 10)["p_value"] == got["p_value"]
    assert mcnemar_from_counts(5, 5)["p_value"] == 1.0


def test_mcnemar_chi_square_with_continuity_correction():
    # b=30, c=15: (|30 - 15| - 1)^2 / 45 = 196 / 45; chi-square(1) survival of 4.3556 is 0.03689
    got = mcnemar_from_counts(30, 15)
    assert got["method"] == "chi-square with continuity correction"
    assert got["statistic"] == pytest.approx(196 / 45)
    assert got["p_value"] == pytest.approx(0.03689, abs=1e-5)


def test_mcnemar_no_discordant_pairs_and_bad_counts():
    assert mcnemar_from_counts(0, 0)["p_value"] == 1.0
    with pytest.raises(ValueError, match="discordant counts must be non-negative"):
        mcnemar_from_counts(-1, 3)


def test_mcnemar_test_counts_discordant_faces():
    y_true = np.zeros(20, dtype=int)
    pred_a = np.zeros(20, dtype=int)
    pred_b = np.zeros(20, dtype=int)
    pred_b[:10] = 1  # A right, B wrong on 10 faces
    pred_a[10:12] = 1  # A wrong, B right on 2 faces
    got = mcnemar_test(y_true, pred_a, pred_b)
    assert (got["b"], got["c"], got["n"]) == (10, 2, 20)
    assert got["p_value"] == pytest.approx(2 * 79 / 4096)
    with pytest.raises(ValueError, match="needs predictions on the same faces"):
        mcnemar_test(y_true, pred_a, pred_b[:5])


def test_bootstrap_without_errors_has_zero_width():
    y = np.arange(50) % 7
    got = bootstrap_intervals(y, y, 7, n_resamples=200)
    assert got["accuracy"] == [1.0, 1.0]
    # macro F1 of a perfect resample is 1 unless a class drops out of it entirely (then it scores 0)
    assert got["f1_macro"][1] == 1.0


def test_bootstrap_accuracy_interval_matches_the_normal_approximation():
    # 7,000 of 10,000 faces right: the bootstrap distribution of accuracy is close to
    # Normal(0.7, sqrt(0.7 * 0.3 / 10000)), so the 95% interval is 0.7 +- 1.96 * 0.00458
    n = 10_000
    y_true = np.zeros(n, dtype=int)
    y_pred = np.where(np.arange(n) < 7000, 0, 1)
    got = bootstrap_intervals(y_true, y_pred, 2, n_resamples=2000, seed=1)
    half = 1.96 * np.sqrt(0.7 * 0.3 / n)
    assert got["accuracy"][0] == pytest.approx(0.7 - half, abs=0.0015)
    assert got["accuracy"][1] == pytest.approx(0.7 + half, abs=0.0015)


def test_bootstrap_f1_matches_sklearn_on_each_resample():
    # with one resample, the interval collapses to that resample's macro F1; recompute it with sklearn
    y_true, y_pred, _ = noisy_predictions(n=300)
    got = bootstrap_intervals(y_true, y_pred, 7, n_resamples=1, seed=5)
    index = np.random.default_rng(5).integers(0, 300, size=(1, 300))[0]
    expected = skm.f1_score(y_true[index], y_pred[index], labels=np.arange(7), average="macro", zero_division=0)
    assert got["f1_macro"] == pytest.approx([expected, expected])
    assert got["accuracy"] == pytest.approx([np.mean(y_true[index] == y_pred[index])] * 2)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    y_true, y_pred, _ = noisy_predictions()
    a = bootstrap_intervals(y_true, y_pred, 7, seed=3)
    assert a == bootstrap_intervals(y_true, y_pred, 7, seed=3)
    assert a != bootstrap_intervals(y_true, y_pred, 7, seed=4)
    accuracy = np.mean(y_true == y_pred)
    assert a["accuracy"][0] < accuracy < a["accuracy"][1]
    f1 = skm.f1_score(y_true, y_pred, average="macro")
    assert a["f1_macro"][0] < f1 < a["f1_macro"][1]


def test_bootstrap_rejects_bad_input():
    with pytest.raises(ValueError, match="3 labels but 2 predictions"):
        bootstrap_intervals([0, 1, 0], [0, 1], 2)
    with pytest.raises(ValueError, match="cannot bootstrap an empty test set"):
        bootstrap_intervals([], [], 2)
    with pytest.raises(ValueError, match="confidence must lie strictly between 0 and 1"):
        bootstrap_intervals([0], [0], 2, confidence=95)


def test_group_labels_valence():
    mapping, names = group_labels(CLASSES)
    assert names == ("negative", "neutral", "positive")
    assert [names[g] for g in mapping] == ["negative", "negative", "negative", "positive", "negative",
                                           "positive", "neutral"]
    assert group_labels(("cat", "dog")) is None


def test_evaluate_predictions_grouped_by_valence():
    # true: angry, fear, happy, neutral; predicted: sad, happy, surprise, neutral
    y_true = np.array([0, 2, 3, 6])
    y_pred = np.array([4, 3, 5, 6])
    proba = np.eye(7)[y_pred]
    got = evaluate_predictions(y_true, y_pred, proba, CLASSES, n_resamples=50)
    assert got["accuracy"] == 0.25
    grouped = got["grouped"]
    # in valence terms: negative->negative, negative->positive, positive->positive, neutral->neutral
    assert grouped["accuracy"] == 0.75
    assert grouped["confusion_matrix"] == [[1, 0, 1], [0, 1, 0], [0, 0, 1]]
    assert grouped["groups"] == {name: list(members) for name, members in VALENCE_GROUPS.items()}
    assert grouped["grouped"] is None
    # grouped probabilities sum the member classes: the angry face's "sad" mass counts as negative
    assert grouped["roc"]["per_class"]["neutral"]["auc"] == 1.0
    assert set(got) >= {"confusion", "roc", "ci", "per_class", "f1_macro"}


def test_evaluate_predictions_without_probabilities_or_groups():
    got = evaluate_predictions([0, 1, 1], [0, 1, 0], None, ("cat", "dog"), n_resamples=20)
    assert got["roc"] is None
    assert got["grouped"] is None
    assert got["accuracy"] == pytest.approx(2 / 3)
