"""Blend weights fit on the runs' out-of-fold predictions.

``fit_weights`` reads each run's out-of-fold predictions (kit.runs.folder.RunFolder) and fits weights by ensemble selection with
replacement (Caruana et al. 2004): start from the best member, add whichever member (again allowed)
most improves the blend's OOF score, stop when nothing improves. The blend therefore never scores
below its best member on OOF. For AUC the score is the mean of the per-fold AUCs and the members are
ranked within each fold first: every fold model scales its probabilities its own way, so a pooled AUC
mixes those scales and can rank a run below another that is worse on every fold. The pooled figure is
reported beside it.

No TensorFlow here; scikit-learn (kit.core.metrics) is imported only when weights are fit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from kit.data import competitions
from kit.runs import folder as runfolder
from kit.ensemble.blend_methods import METHODS, _check_power, _finish, _transform, rankdata
from kit.core.errors import KitError
from kit.runs.folder import RunFolder
from kit.ensemble.submission import IdIndex, read_table


@dataclass
class FitResult:
    """Weights fit on out-of-fold predictions and the OOF scores behind them."""

    metric: str
    runs: list[str]
    member_scores: list[float]
    blend_score: float
    weights: list[float]
    steps: int
    objective: str = "pooled"  # "fold mean" (AUC: mean over folds, members ranked per fold) | "pooled"
    member_pooled: list[float] = field(default_factory=list)  # each member's pooled OOF score
    blend_pooled: float | None = None  # the chosen blend's pooled OOF score


@dataclass
class Oof:
    """One run's out-of-fold predictions."""

    run: str
    ids: np.ndarray
    target: np.ndarray
    preds: np.ndarray  # [n, 1] binary, [n, K] multi-class
    fold: np.ndarray
    classes: list[str]
    metric: str | None


def load_oof(run: str | os.PathLike) -> Oof:
    """Read a run's out-of-fold predictions (``image_name,target,pred,fold`` or ``...,pred_<class>...,fold``)."""
    run = str(run)
    folder = RunFolder(run)
    if not folder.path.is_dir():
        raise KitError(f"{run}: no such run folder")
    if not folder.finished_folds():
        raise KitError(f"{run}: no finished folds (no fold*/{runfolder.DONE}); train the run first")
    path = folder.oof_path
    if not path.exists():
        raise KitError(f"{path}: missing; the run has finished folds but no out-of-fold predictions")
    table = read_table(path)
    cols = table.columns
    classes = runfolder.classes_of_columns(cols)
    pred_cols = [c for c in cols if c == "pred" or c.startswith("pred_")]
    if "target" not in cols or "fold" not in cols or classes is None:
        raise KitError(f"{path}: columns {','.join(cols)}; expected image_name,target,pred...,fold")
    if len(table) == 0:
        raise KitError(f"{path}: no rows")
    v = table.values
    pick = [cols.index(c) - 1 for c in pred_cols]
    preds = v[:, pick]
    bad = ~np.isfinite(preds)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise KitError(f"{path}: NaN or infinite prediction in column {pred_cols[c]}, e.g. id {table.id_text(r)}")
    target, fold = v[:, cols.index("target") - 1], v[:, cols.index("fold") - 1]
    if not (np.isfinite(target).all() and np.isfinite(fold).all()):
        r = int(np.flatnonzero(~(np.isfinite(target) & np.isfinite(fold)))[0])
        raise KitError(f"{path}: missing target or fold, e.g. id {table.id_text(r)}")
    metric = (folder.read_cv() or {}).get("metric")
    return Oof(run, table.ids, target.astype(np.int64), preds, fold.astype(np.int64), classes, metric)


def _rank_per_fold(p: np.ndarray, fold: np.ndarray) -> np.ndarray:
    out = np.empty_like(p)
    for f in np.unique(fold):
        rows = np.flatnonzero(fold == f)
        for c in range(p.shape[1]):
            out[rows, c] = rankdata(p[rows, c]) / len(rows)
    return out


def fit_weights(
    runs: Sequence[str | os.PathLike],
    *,
    method: str = "mean",
    power: float = 2.0,
    rank_per_fold: bool | None = None,
    max_steps: int = 100,
) -> FitResult:
    """Ensemble selection with replacement on the runs' OOF; weights never score below the best member.

    ``rank_per_fold`` None: on for a metric that blends per fold (AUC, partial AUC: the objective is then the
    mean per-fold score), off otherwise.
    """
    if method not in METHODS:
        raise KitError(f"--method: unknown blend method {method!r} (known: {', '.join(METHODS)})")
    _check_power(method, power)
    return fit_oofs([load_oof(r) for r in runs], method=method, power=power, rank_per_fold=rank_per_fold,
                    max_steps=max_steps)


def fit_oofs(oofs: Sequence[Oof], *, method: str = "mean", power: float = 2.0, rank_per_fold: bool | None = None,
             max_steps: int = 100) -> FitResult:
    """``fit_weights`` on out-of-fold predictions held in memory (``kit stack`` fits its model kinds so)."""
    runs = [o.run for o in oofs]
    ref = oofs[0]
    from kit.core import metrics  # scikit-learn: imported only when weights are fit

    metric = ref.metric or competitions.default_metric(len(ref.classes))
    if metric not in metrics.METRICS:
        raise KitError(f"{RunFolder(ref.run).cv_path}: unknown metric {metric!r}")
    per_fold = metrics.get(metric).per_fold_blend
    if rank_per_fold is None:
        rank_per_fold = per_fold
    ref_name = str(RunFolder(ref.run).oof_path)
    index = IdIndex(ref.ids, ref_name)
    members, raw = [], []  # raw: as the run wrote them, for the pooled figure that the CV summary reports
    for o in oofs:
        name = str(RunFolder(o.run).oof_path)
        if o.preds.shape[1] != ref.preds.shape[1] or o.classes != ref.classes:
            raise KitError(f"{name}: classes {','.join(o.classes)} differ from {ref_name}'s {','.join(ref.classes)}")
        src = index.align(o.ids, name)
        preds, target, fold = (o.preds, o.target, o.fold) if src is None else (o.preds[src], o.target[src], o.fold[src])
        if not np.array_equal(target, ref.target):
            r = int(np.flatnonzero(target != ref.target)[0])
            raise KitError(f"{name}: target differs from {ref_name}'s, e.g. id {ref.ids[r].decode('utf-8', 'replace')}")
        if not np.array_equal(fold, ref.fold):
            r = int(np.flatnonzero(fold != ref.fold)[0])
            raise KitError(f"{name}: folds differ from {ref_name}'s, e.g. id {ref.ids[r].decode('utf-8', 'replace')}; "
                           "runs fit together must share their records' folds")
        raw.append(_transform(preds, method, power))
        members.append(_transform(_rank_per_fold(preds, fold), method, power) if rank_per_fold else raw[-1])
    y, folds = ref.target, ref.fold
    fold_rows = [np.flatnonzero(folds == f) for f in np.unique(folds)]
    # a fold holding one class has no AUC of its own (a hand-made or tiny out-of-fold table): score pooled then
    per_fold = per_fold and all(len(np.unique(y[r])) > 1 for r in fold_rows)

    def pooled(acc: np.ndarray, total: float) -> float:
        return metrics.score(metric, y, _finish(acc / total, method, power))

    def fold_mean(acc: np.ndarray, total: float) -> float:
        blended = _finish(acc / total, method, power)
        return float(np.mean([metrics.score(metric, y[r], blended[r]) for r in fold_rows]))

    score_of = fold_mean if per_fold else pooled
    member_scores = [score_of(m, 1.0) for m in members]
    best = int(np.argmax(member_scores))
    counts = np.zeros(len(members), np.int64)
    counts[best] = 1
    acc = members[best].copy()
    current = member_scores[best]
    for _ in range(max_steps):
        total = counts.sum() + 1
        trial = [score_of(acc + m, total) for m in members]
        j = int(np.argmax(trial))
        if trial[j] <= current + 1e-12:
            break
        counts[j] += 1
        acc += members[j]
        current = trial[j]
    weights = counts / counts.sum()
    steps = int(counts.sum()) - 1
    return FitResult(metric, [str(r) for r in runs], member_scores, float(current), [float(x) for x in weights], steps,
                     objective="fold mean" if per_fold else "pooled",
                     member_pooled=[pooled(m, 1.0) for m in raw], blend_pooled=pooled(acc, float(counts.sum())))
