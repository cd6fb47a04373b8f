"""The run folders of ``kit stack``: the image runs it reads (each one's out-of-fold predictions and test
submission, checked against the records' ids, folds and targets) and the run folders it writes, its own and
one per model kind under ``models/`` (kit.runs.folder.RunFolder's files)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from kit.core import metrics
from kit.runs import folder as runfolder
from kit.ensemble.blend import Oof, load_oof
from kit.core.errors import KitError
from kit.runs.folder import RunFolder
from kit.ensemble.stack_features import _safe
from kit.ensemble.submission import IdIndex, read_table
from kit.core.task import task_for, task_of_width


# --- inputs ------------------------------------------------------------------------------------------


def _run_label(run: str, taken: set[str]) -> str:
    base = _safe(Path(run).resolve().name) or "run"
    label, k = base, 2
    while label in taken:
        label, k = f"{base}_{k}", k + 1
    taken.add(label)
    return label


def _check_finished(run: str, folds: Sequence[int]) -> None:
    """KitError naming the folds of ``run`` not done: a run still training, stopped, or trained on some folds only
    has no out-of-fold prediction for their rows."""
    unfinished = [k for k in folds if not RunFolder(run).is_done(k)]
    if unfinished:
        listed = ", ".join(map(str, unfinished))
        raise KitError(f"{run}: fold{'s' if len(unfinished) > 1 else ''} {listed} of {len(folds)} unfinished (no "
                       f"fold{unfinished[0]}/{runfolder.DONE}); the stack needs every fold's out-of-fold predictions: finish "
                       f"it (`kit train --resume --out {run}`) or leave it out of --runs")


def _load_run(run: str, train: pd.DataFrame, index: IdIndex, classes: list[str], records: str) -> np.ndarray:
    """A run's OOF predictions in records order, after checking it was trained on these records and folds."""
    _check_finished(run, sorted(np.unique(train["fold"]).tolist()))
    header = RunFolder(run).oof_header()
    path = RunFolder(run).oof_path
    if header and "fold" not in header:
        raise KitError(f"{path}: no fold column, so which fold model predicted each row is unknown; the stack needs "
                       "out-of-fold predictions from the records' folds (a `kit train` run)")
    oof = load_oof(run)
    if task_of_width(oof.preds.shape[1]).pred_columns(oof.classes) != task_for(len(classes)).pred_columns(classes):
        raise KitError(f"{path}: classes {','.join(oof.classes)} differ from the records' {','.join(classes)}")
    try:
        src = index.align(oof.ids, str(path))
    except KitError as exc:
        raise KitError(f"{exc} (was the run trained on {records}?)") from None
    fold = oof.fold if src is None else oof.fold[src]
    target = oof.target if src is None else oof.target[src]
    want = train["fold"].to_numpy()
    if not np.array_equal(fold, want):
        r = int(np.flatnonzero(fold != want)[0])
        raise KitError(f"{path}: folds differ from the records' (id {train['image_name'].iat[r]}: fold {fold[r]} in the "
                       f"run, {want[r]} in {records}); the stack uses the records' folds, retrain the run on them")
    if not np.array_equal(target, train["target"].to_numpy()):
        r = int(np.flatnonzero(target != train["target"].to_numpy())[0])
        raise KitError(f"{path}: target differs from the records' for id {train['image_name'].iat[r]} "
                       f"(was the run trained on {records}?)")
    return oof.preds if src is None else oof.preds[src]


def _load_test_predictions(path: str, test: pd.DataFrame, index: IdIndex, classes: list[str]) -> np.ndarray:
    """A run's test submission in test-records order; every test id must have a prediction."""
    table = read_table(path)
    order = task_for(len(classes)).value_order(table.columns[1:], classes, path)
    ids = set(table.ids.tolist())
    missing = [i for i in test["image_name"] if i.encode() not in ids]
    if missing:
        raise KitError(f"{path}: no prediction for {len(missing)} of the {len(test)} test ids, e.g. {missing[0]}; "
                       "predict the test records given to --test-records")
    try:
        src = index.align(table.ids, path)
    except KitError as exc:
        raise KitError(f"{exc} (predict the test records given to --test-records)") from None
    values = table.values if src is None else table.values[src]
    values = values[:, np.argsort(order)]
    if not np.isfinite(values).all():
        r = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise KitError(f"{path}: NaN or infinite prediction for id {test['image_name'].iat[r]}")
    return values


def _oof_frame(ids: pd.Series, y: np.ndarray, pred: np.ndarray, folds: np.ndarray, classes: list[str]) -> pd.DataFrame:
    return runfolder.oof_table(ids.to_numpy(), y, pred, folds, classes if pred.ndim > 1 else ())


def _member_oof(name: str, ids: pd.Series, y: np.ndarray, pred: np.ndarray, folds: np.ndarray, classes: list[str],
                metric: str) -> Oof:
    """A model kind's out-of-fold predictions as ``load_oof`` would read them back from its run folder."""
    preds = pred.reshape(len(y), -1).astype(np.float64)
    return Oof(name, ids.to_numpy().astype(bytes), y.astype(np.int64), preds, folds.astype(np.int64),
               ["0", "1"] if pred.ndim == 1 else list(classes), metric)


def _scores(metric: str, y: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> tuple[dict[str, float], float]:
    per = {str(f): float(metrics.score(metric, y[folds == f], pred[folds == f])) for f in sorted(np.unique(folds))}
    return per, float(metrics.score(metric, y, pred))


def _write_run(folder: RunFolder, oof: pd.DataFrame, metric: str, per: dict[str, float], overall: float,
               done_extra: Mapping[str, dict], extra: Mapping[str, Any]) -> None:
    """The run-folder contract: out-of-fold predictions, the CV summary, each fold's done marker."""
    vals = np.asarray(list(per.values()), float)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_oof(oof)
    folder.write_cv({
        "metric": metric, "folds": per, "overall": overall, "fold_mean": float(vals.mean()),
        "fold_std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, **extra})
    for f, score in per.items():
        folder.write_done(int(f), {"fold": int(f), "metric": metric, "score": score, **done_extra.get(f, {})})
