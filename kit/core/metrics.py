"""The competitions' metrics: ROC AUC, partial AUC above a true-positive rate (ISIC 2024), accuracy, balanced
accuracy (ISIC 2018 task 3), the top-15 sensitivity per patient (ISIC 2024's secondary), per-class figures;
and ``TABLE``, one ``Metric`` each: which way is better, how blends fit it, its names in Keras and in the tree
libraries ``kit stack`` uses (docs/metrics.md).

Pure numpy / scikit-learn (no TensorFlow), so ``kit blend`` and ``kit check`` stay fast.

Conventions shared by every function here:

- ``y_true``: integer class indices, shape [N] (a one-hot [N, K] array is accepted too).
- ``y_pred``: probabilities. Binary: [N] or [N, 1] (probability of class 1) or [N, 2]. Multi-class:
  [N, K], one column per class in the order of the records' ``classes``.
- Binary predictions become labels by ``p > 0.5``; multi-class ones by the arg-max, where a row with
  several equal maxima counts as "undecided" (always wrong), exactly as the ISIC challenge scorer does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from kit.core.errors import KitError

PAUC_MIN_TPR = 0.80  # ISIC 2024: the area under the ROC curve above 80% true-positive rate, in [0, 0.2]

_UNDECIDED = -1


def _arrays(y_true: object, y_pred: object) -> tuple[np.ndarray, np.ndarray]:
    """Check and shape inputs: y_true -> int [N]; y_pred -> float [N] (binary) or [N, K]."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred, dtype=np.float64)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    if t.ndim != 1:
        raise KitError(f"y_true: expected class indices of shape [N], got shape {t.shape}")
    if p.ndim == 2 and p.shape[1] == 1:
        p = p[:, 0]
    if p.ndim not in (1, 2):
        raise KitError(f"y_pred: expected shape [N] or [N, K], got shape {p.shape}")
    if len(t) != len(p):
        raise KitError(f"y_pred: {len(p)} predictions for {len(t)} labels")
    if len(t) == 0:
        raise KitError("y_true: no rows to score")
    if not np.all(np.isfinite(p)):
        bad = int(np.flatnonzero(~np.isfinite(p).reshape(len(p), -1).all(axis=1))[0])
        raise KitError(f"y_pred: row {bad} is not a finite number ({p[bad]})")
    if not np.issubdtype(t.dtype, np.integer):
        if not np.all(np.equal(np.mod(t.astype(np.float64), 1), 0)):
            raise KitError(f"y_true: expected integer class indices, got {t[:5]}")
        t = t.astype(np.int64)
    n_classes = 2 if p.ndim == 1 else p.shape[1]
    out = (t < 0) | (t >= n_classes)
    if out.any():
        row = int(np.flatnonzero(out)[0])
        raise KitError(f"y_true: row {row} has class {t[row]}, outside 0..{n_classes - 1} "
                       "(unlabelled rows, target -1, cannot be scored)")
    return t.astype(np.int64), p


def _n_classes(p: np.ndarray) -> int:
    return 2 if p.ndim == 1 else p.shape[1]


def _labels(p: np.ndarray) -> np.ndarray:
    """Predicted class per row; ties between maxima give -1 ("undecided", as the ISIC scorer)."""
    if p.ndim == 1:
        return (p > 0.5).astype(np.int64)
    labels = p.argmax(axis=1)
    ties = (p == p.max(axis=1, keepdims=True)).sum(axis=1) > 1
    labels[ties] = _UNDECIDED
    return labels


def _positive_scores(p: np.ndarray) -> np.ndarray:
    """[N, K] class-probability matrix (binary [N] becomes [N, 2])."""
    return np.stack([1.0 - p, p], axis=1) if p.ndim == 1 else p


def auc(y_true: object, y_pred: object) -> float:
    """ROC AUC: binary, or the macro mean of one-vs-rest AUCs over classes present in y_true."""
    t, p = _arrays(y_true, y_pred)
    if p.ndim == 1 or p.shape[1] == 2:
        pos = p if p.ndim == 1 else p[:, 1]
        if len(np.unique(t)) < 2:
            raise KitError(f"y_true: only class {t[0]} present; ROC AUC needs both classes")
        return float(roc_auc_score(t, pos))
    scores = [_class_auc(t, p, k) for k in range(p.shape[1])]
    scores = [s for s in scores if not np.isnan(s)]
    if not scores:
        raise KitError("y_true: a single class present; ROC AUC needs at least two")
    return float(np.mean(scores))


def pauc(y_true: object, y_pred: object, min_tpr: float = PAUC_MIN_TPR) -> float:
    """Partial ROC AUC above ``min_tpr`` true-positive rate, in [0, 1 - min_tpr] (ISIC 2024's metric).

    The competition's scorer swaps the classes and flips the scores, so the region above a TPR becomes
    the region below an FPR of ``1 - min_tpr``, and takes scikit-learn's McClish-standardised partial AUC
    back to the raw area: a perfect ranking scores ``1 - min_tpr`` (0.2), a constant half of its square.
    """
    t, p = _arrays(y_true, y_pred)
    if p.ndim == 2:
        p = p[:, -1]
    if not 0 < float(min_tpr) < 1:
        raise KitError(f"min_tpr: must be in (0, 1), got {min_tpr}")
    if len(np.unique(t)) < 2:
        raise KitError(f"y_true: only class {t[0]} present; partial AUC needs both classes")
    max_fpr = 1.0 - float(min_tpr)
    standardised = roc_auc_score(1 - t, 1.0 - p, max_fpr=max_fpr)
    return float(0.5 * max_fpr**2 + (max_fpr - 0.5 * max_fpr**2) / 0.5 * (standardised - 0.5))


def top_k_sensitivity(y_true: object, y_pred: object, groups: Sequence[object], k: int = 15) -> float:
    """Share of the positives found among the ``k`` highest scores of their own group (ISIC 2024's secondary:
    a dermatologist looks at a patient's 15 most suspicious lesions)."""
    t, p = _arrays(y_true, y_pred)
    if p.ndim == 2:
        p = p[:, -1]
    g = np.asarray(groups)
    if len(g) != len(t):
        raise KitError(f"groups: {len(g)} group ids for {len(t)} rows")
    if not t.any():
        raise KitError("y_true: no positives; top-k sensitivity needs some")
    frame = pd.DataFrame({"g": g, "p": p, "t": t})
    # ties broken by row order, so a run repeats exactly
    rank = frame.groupby("g", sort=False)["p"].rank(method="first", ascending=False)
    return float(frame.loc[rank <= k, "t"].sum() / t.sum())


def _class_auc(t: np.ndarray, p: np.ndarray, k: int) -> float:
    """One-vs-rest AUC of class k, NaN when class k is absent (or alone) in t."""
    hit = t == k
    if hit.all() or not hit.any():
        return float("nan")
    return float(roc_auc_score(hit, p[:, k]))


def accuracy(y_true: object, y_pred: object) -> float:
    """Fraction of rows whose predicted class (p > 0.5, or the arg-max) is the true class."""
    t, p = _arrays(y_true, y_pred)
    return float(np.mean(_labels(p) == t))


def balanced_accuracy(y_true: object, y_pred: object) -> float:
    """Mean per-class recall over the classes present in y_true (ISIC 2018 task 3's metric)."""
    t, p = _arrays(y_true, y_pred)
    labels = _labels(p)
    recalls = [np.mean(labels[t == k] == k) for k in range(_n_classes(p)) if np.any(t == k)]
    return float(np.mean(recalls))


def per_class(y_true: object, y_pred: object, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per class: support, sensitivity (recall), specificity, precision, f1, one-vs-rest auc.

    Predicted labels come from the arg-max (p > 0.5 for binary), as for accuracy; the ISIC scorer's
    per-category table instead thresholds each class's own probability at 0.5, so the two agree on
    hard predictions only. Undefined figures (no positives, no predictions) are NaN, not 0 or 1.
    """
    t, p = _arrays(y_true, y_pred)
    k_all = _n_classes(p)
    if classes is None:
        classes = [str(k) for k in range(k_all)]
    if len(classes) != k_all:
        raise KitError(f"classes: {len(classes)} names for {k_all} prediction columns")
    labels = _labels(p)
    scores = _positive_scores(p)
    rows = []
    for k, name in enumerate(classes):
        tp = int(np.sum((labels == k) & (t == k)))
        fn = int(np.sum((labels != k) & (t == k)))
        fp = int(np.sum((labels == k) & (t != k)))
        tn = int(np.sum((labels != k) & (t != k)))
        rows.append({
            "class": str(name),
            "support": tp + fn,
            "sensitivity": _ratio(tp, tp + fn),
            "specificity": _ratio(tn, tn + fp),
            "precision": _ratio(tp, tp + fp),
            "f1": _ratio(2 * tp, 2 * tp + fp + fn),
            "auc": _class_auc(t, scores, k),
        })
    return pd.DataFrame(rows, columns=["class", "support", "sensitivity", "specificity", "precision",
                                       "f1", "auc"])


def _ratio(num: int, den: int) -> float:
    return num / den if den else float("nan")


@dataclass(frozen=True)
class Metric:
    """A metric and what the rest of kit needs to know about it, so that nothing there asks for it by name."""

    name: str
    scorer: Callable[..., float]  # (y_true, y_pred) -> float, or (y_true, y_pred, groups) when needs_groups
    higher_is_better: bool = True
    per_fold_blend: bool = False  # a ranking metric: blends fit it per fold on ranks (each fold model's own scale)
    needs_groups: bool = False  # scored per group (patient); such a metric is reported, never picks checkpoints
    keras: str = ""  # the running Keras figure that follows it on training batches ("" : the task's own)
    trees: Mapping[str, str] = field(default_factory=dict)  # built-in name per tree library, binary tasks;
    # a library left out early-stops on kit's exact score of the metric

    def score(self, y_true: object, y_pred: object, groups: Sequence[object] | None = None) -> float:
        """The metric of ``y_pred`` against ``y_true`` (``groups``: one group id per row, where it needs them)."""
        if self.needs_groups:
            return self.scorer(y_true, y_pred, groups)
        return self.scorer(y_true, y_pred)


def _top15_sensitivity(y_true: object, y_pred: object, groups: Sequence[object]) -> float:
    return top_k_sensitivity(y_true, y_pred, groups, k=15)


# Every metric kit scores. A new one is a function above and a row here; tests/test_metrics.py then checks
# it on every case and docs/metrics.md lists it.
TABLE: dict[str, Metric] = {m.name: m for m in (
    Metric("auc", auc, per_fold_blend=True, keras="auc", trees={"lightgbm": "auc", "catboost": "AUC"}),
    # no tree library has a partial AUC above a true-positive rate; Keras's whole AUC follows it in training
    Metric("pauc", pauc, per_fold_blend=True, keras="auc"),
    Metric("accuracy", accuracy),
    Metric("balanced_accuracy", balanced_accuracy, keras="balanced_accuracy"),
    Metric("top15_sensitivity", _top15_sensitivity, needs_groups=True),
)}

# The metrics a run can pick checkpoints and score CV by, each (y_true, y_pred) -> float, higher is better.
SCORERS: dict[str, Callable[[object, object], float]] = {
    name: m.scorer for name, m in TABLE.items() if not m.needs_groups
}
METRICS = tuple(SCORERS)


def get(metric: str) -> Metric:
    """The metric named ``metric`` (one of TABLE); KitError naming the known ones otherwise."""
    if metric not in TABLE:
        raise KitError(f"metric: unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return TABLE[metric]


def score(metric: str, y_true: object, y_pred: object) -> float:
    """Score predictions with the metric named ``metric`` (one of METRICS)."""
    if metric not in SCORERS:
        raise KitError(f"metric: unknown metric {metric!r}; known: {', '.join(METRICS)}")
    return SCORERS[metric](y_true, y_pred)
