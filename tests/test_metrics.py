"""kit.core.metrics against scikit-learn and against the ISIC challenge's own scorer, on the same predictions."""

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from isic_challenge_scoring.classification import ClassificationMetric, ClassificationScore
from sklearn import metrics as skm

from kit.core import metrics
from kit.core.errors import KitError

HAM = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def _multiclass(n=300, k=7, seed=0):
    """Imbalanced labels and softmax predictions that are right about 60% of the time."""
    rng = np.random.default_rng(seed)
    y = rng.choice(k, size=n, p=np.linspace(1, 3, k) / np.linspace(1, 3, k).sum())
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.5
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p


def _binary(n=400, seed=1):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.1).astype(int)
    p = np.clip(0.3 * y + rng.random(n) * 0.8, 0, 1)
    return y, p


def _isic(y, p, classes, metric):
    """Score with isic-challenge-scoring from in-memory frames (what its CSV loader builds)."""
    idx = pd.Index([f"ISIC_{i:07d}" for i in range(len(y))], name="image")
    truth = pd.DataFrame(np.eye(len(classes))[y], index=idx, columns=classes)
    pred = pd.DataFrame(p, index=idx, columns=classes)
    weights = pd.DataFrame({"score_weight": 1.0, "validation_weight": 1.0}, index=idx)
    return ClassificationScore(truth, pred, weights, metric)


def test_binary_auc_accuracy_match_sklearn_and_isic():
    y, p = _binary()
    assert metrics.auc(y, p) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert metrics.auc(y, p[:, None]) == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert metrics.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p > 0.5))
    assert metrics.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, p > 0.5))
    two = np.stack([1 - p, p], axis=1)
    isic = _isic(y, two, ["benign", "malignant"], ClassificationMetric.AUC)
    assert metrics.auc(y, p) == pytest.approx(isic.per_category.loc["malignant", "auc"], abs=1e-12)
    assert metrics.auc(y, two) == pytest.approx(isic.overall, abs=1e-12)
    assert metrics.score("auc", y, p) == metrics.auc(y, p)
    assert 0.7 < metrics.auc(y, p) < 1.0  # the fixture has signal but is not perfect


def test_multiclass_matches_sklearn():
    y, p = _multiclass()
    labels = p.argmax(axis=1)
    assert metrics.accuracy(y, p) == pytest.approx(skm.accuracy_score(y, labels))
    assert metrics.balanced_accuracy(y, p) == pytest.approx(skm.balanced_accuracy_score(y, labels))
    assert metrics.auc(y, p) == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"))
    table = metrics.per_class(y, p, HAM)
    prec, rec, f1, support = skm.precision_recall_fscore_support(y, labels, labels=range(7),
                                                                 zero_division=np.nan)
    assert list(table.columns) == ["class", "support", "sensitivity", "specificity", "precision", "f1", "auc"]
    assert table["class"].tolist() == HAM
    np.testing.assert_array_equal(table["support"], support)
    np.testing.assert_allclose(table["sensitivity"], rec)
    np.testing.assert_allclose(table["precision"], prec)
    np.testing.assert_allclose(table["f1"], f1)
    cm = skm.confusion_matrix(y, labels, labels=range(7))
    spec = [(cm.sum() - cm[k].sum() - cm[:, k].sum() + cm[k, k]) / (cm.sum() - cm[k].sum()) for k in range(7)]
    np.testing.assert_allclose(table["specificity"], spec)


def test_multiclass_matches_isic_challenge_scoring():
    y, p = _multiclass(seed=3)
    isic = _isic(y, p, HAM, ClassificationMetric.BALANCED_ACCURACY)
    assert metrics.balanced_accuracy(y, p) == pytest.approx(isic.overall, abs=1e-12)
    assert metrics.score("balanced_accuracy", y, p) == pytest.approx(isic.aggregate["balanced_accuracy"])
    table = metrics.per_class(y, p, HAM).set_index("class")
    ref = isic.per_category
    np.testing.assert_allclose(table["auc"], ref.loc[HAM, "auc"])
    # ISIC thresholds each class's own probability at 0.5, kit takes the arg-max: on hard (one-hot)
    # predictions the two agree, so the per-class counts must match exactly there.
    hard = np.eye(7)[p.argmax(axis=1)]
    table = metrics.per_class(y, hard, HAM).set_index("class")
    ref = _isic(y, hard, HAM, ClassificationMetric.BALANCED_ACCURACY).per_category.loc[HAM]
    np.testing.assert_allclose(table["sensitivity"], ref["sensitivity"])
    np.testing.assert_allclose(table["specificity"], ref["specificity"])
    np.testing.assert_allclose(table["precision"], ref["ppv"])
    np.testing.assert_allclose(table["f1"], ref["dice"])
    assert metrics.auc(y, p) == pytest.approx(_isic(y, p, HAM, ClassificationMetric.AUC).overall)


def test_ties_are_undecided_like_isic():
    y = np.array([0, 1, 2, 2])
    p = np.array([[0.5, 0.5, 0.0], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6], [0.4, 0.3, 0.3]])
    # row 0 is a tie: counted wrong by ISIC (np.argmax alone would call it class 0, right)
    assert metrics.balanced_accuracy(y, p) == pytest.approx((0 + 1 + 0.5) / 3)
    isic = _isic(y, p, ["a", "b", "c"], ClassificationMetric.BALANCED_ACCURACY)
    assert metrics.balanced_accuracy(y, p) == pytest.approx(isic.overall)
    assert metrics.accuracy(y, p) == pytest.approx(0.5)


def test_absent_class_is_skipped_not_zero():
    y = np.array([0, 0, 1, 1])  # class 2 never occurs
    p = np.array([[0.9, 0.05, 0.05], [0.2, 0.7, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert metrics.balanced_accuracy(y, p) == pytest.approx((0.5 + 0.5) / 2)
    table = metrics.per_class(y, p)
    assert table["support"].tolist() == [2, 2, 0]
    assert np.isnan(table.loc[2, "sensitivity"]) and np.isnan(table.loc[2, "auc"])


def test_unknown_metric_names_the_known_ones():
    with pytest.raises(KitError, match="unknown metric 'f2'.*auc, pauc, accuracy, balanced_accuracy"):
        metrics.score("f2", [0, 1], [0.1, 0.9])


def test_bad_input_is_one_clear_line():
    with pytest.raises(KitError, match="3 predictions for 2 labels"):
        metrics.auc([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(KitError, match="row 1 is not a finite number"):
        metrics.auc([0, 1], [0.1, float("nan")])
    with pytest.raises(KitError, match="only class 0 present"):
        metrics.auc([0, 0], [0.1, 0.2])
    with pytest.raises(KitError, match="row 0 has class -1"):
        metrics.accuracy([-1, 1], [0.1, 0.2])
    with pytest.raises(KitError, match="row 1 has class 7, outside 0..6"):
        metrics.accuracy([0, 7], np.full((2, 7), 1 / 7))


def test_no_tensorflow_import():
    code = ("import sys, kit.core.metrics; "
            "print(any(m.split('.')[0] in ('tensorflow', 'keras', 'jax') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- ISIC 2024: partial AUC above 80% TPR and the top-15 sensitivity per patient ----------------------------


def _pauc_isic_scorer(y, p, min_tpr=0.80):
    """The ISIC 2024 scorer's form: roc_curve with the classes swapped and scores flipped, one point
    interpolated at FPR = 1 - min_tpr, trapezoids below it."""
    from sklearn.metrics import auc as area, roc_curve

    max_fpr = abs(1 - min_tpr)
    fpr, tpr, _ = roc_curve(np.asarray(y) == 0, -np.asarray(p))  # flip: 1 - p ranks as -p
    stop = np.searchsorted(fpr, max_fpr, "right")
    x_interp = [fpr[stop - 1], fpr[stop]]
    y_interp = [tpr[stop - 1], tpr[stop]]
    tpr = np.append(tpr[:stop], np.interp(max_fpr, x_interp, y_interp))
    fpr = np.append(fpr[:stop], max_fpr)
    return area(fpr, tpr)


def _pauc_notebook_form(y, p):
    from sklearn.metrics import roc_auc_score

    s = roc_auc_score(1 - np.asarray(y), 1 - np.asarray(p), max_fpr=0.2)
    return 0.5 * 0.2**2 + (0.2 - 0.5 * 0.2**2) / 0.5 * (s - 0.5)


@pytest.mark.parametrize("seed", range(6))
def test_pauc_matches_the_competition_scorer_and_the_notebook_form(seed):
    rng = np.random.default_rng(seed)
    n = 20000
    y = (rng.random(n) < 0.001 * (1 + seed)).astype(int)  # 0.1% .. 0.6% positives
    y[:2] = [0, 1]
    p = np.round(np.clip(0.3 * y + rng.normal(0.3, 0.2, n), 0, 1), 2)  # rounded: many ties
    ours = metrics.pauc(y, p)
    assert ours == pytest.approx(_pauc_notebook_form(y, p), abs=1e-12)
    assert ours == pytest.approx(_pauc_isic_scorer(y, p), abs=1e-9)
    assert 0.0 <= ours <= 0.2 and metrics.score("pauc", y, p) == ours


def test_pauc_of_a_perfect_and_a_constant_ranking():
    y = np.array([0] * 990 + [1] * 10)
    assert metrics.pauc(y, y.astype(float)) == pytest.approx(0.2)
    assert metrics.pauc(y, np.full(1000, 0.3)) == pytest.approx(0.02)
    assert metrics.pauc(y, y.astype(float), min_tpr=0.9) == pytest.approx(0.1)


def test_top15_sensitivity_counts_positives_among_each_patients_top_scores():
    groups = ["a"] * 20 + ["b"] * 5
    y = np.zeros(25, int)
    p = np.linspace(0, 1, 25)
    y[[0, 19, 22]] = 1  # a's lowest score (rank 20: missed), a's highest, one of b's five (always in)
    assert metrics.top_k_sensitivity(y, p, groups, k=15) == pytest.approx(2 / 3)
    assert metrics.top_k_sensitivity(y, p, groups, k=20) == pytest.approx(1.0)
    with pytest.raises(KitError, match="groups: 3 group ids for 25 rows"):
        metrics.top_k_sensitivity(y, p, ["a", "b", "c"])


@pytest.mark.parametrize("metric", metrics.METRICS)
def test_every_registered_metric_orders_perfect_over_constant_over_reversed(metric):
    """Each metric kit can pick checkpoints by: higher is better, exactly as scikit-learn-style scorers are."""
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.15).astype(int)
    perfect = np.where(y == 1, 0.9, 0.1) + rng.normal(0, 0.01, len(y))
    constant = np.full(len(y), 0.3)
    reversed_ = 1.0 - perfect
    best, flat, worst = (metrics.score(metric, y, p) for p in (perfect, constant, reversed_))
    assert best > flat >= worst
    assert best == pytest.approx(metrics.score(metric, y, np.stack([1 - perfect, perfect], axis=1)))  # [N, 2] form
