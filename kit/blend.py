"""Blends of submissions: mean, weighted mean, rank, power and geometric averages; weights fit on OOF.

Every input is aligned by id to the reference order (the first input's, or the sample's), whatever
its own row order, so blending shuffled copies gives the same file. Multi-class submissions are
blended per class and each row renormalised to sum to 1.

Methods, with weights ``w`` summing to 1 and ``p_i`` the inputs' probabilities:

    mean      sum w_i p_i
    rank      sum w_i rank(p_i) / n         average ranks for ties, so row order never matters
    power     (sum w_i p_i^k)^(1/k)         the root keeps a probability scale; it does not change
                                            the order, so AUC equals the root-less Kaggle variant
    geomean   exp(sum w_i log max(p_i, 1e-15))

``fit_and_blend`` pairs each submission with the run that wrote it through the submission's sidecar
(``NAME.json`` beside ``NAME.csv``, whose ``"run"`` names the run folder; ``kit predict`` and ``kit stack``
write it): weights fit on the runs in one order and applied to the files in another would blend the wrong
files with each weight. Without sidecars ``pair_by_order`` takes the order given.

``fit_weights`` reads each run's out-of-fold predictions (kit.runfolder.RunFolder) and fits weights by ensemble selection with
replacement (Caruana et al. 2004): start from the best member, add whichever member (again allowed)
most improves the blend's OOF score, stop when nothing improves. The blend therefore never scores
below its best member on OOF. For AUC the score is the mean of the per-fold AUCs and the members are
ranked within each fold first: every fold model scales its probabilities its own way, so a pooled AUC
mixes those scales and can rank a run below another that is worse on every fold. The pooled figure is
reported beside it.

No TensorFlow here: ``kit blend`` starts fast. Large blends stream one file at a time, holding only
the reference ids and one accumulator per class.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kit import competitions, runfolder
from kit.config import BLEND_METHODS as METHODS
from kit.errors import KitError
from kit.runfolder import RunFolder
from kit.submission import IdIndex, Table, read_table, write_table

GEOMEAN_FLOOR = 1e-15  # log(0) would make one confident zero veto every other model
PROGRESS_ROWS = 200_000  # a bar when a blend reads at least this many rows in all


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks 1..n of a float vector (ties share their mean rank), like scipy's rankdata."""
    n = len(x)
    order = np.argsort(x, kind="quicksort")
    xs = x[order]
    ranks = np.empty(n, np.float64)
    if n == 0:
        return ranks
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    if new.all():
        ranks[order] = np.arange(1, n + 1, dtype=np.float64)
        return ranks
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _transform(p: np.ndarray, method: str, power: float) -> np.ndarray:
    """What each method averages, per column of ``p`` ``[n, k]``."""
    if method == "mean":
        return p
    if method == "rank":
        out = np.empty_like(p, dtype=np.float64)
        for c in range(p.shape[1]):
            out[:, c] = rankdata(p[:, c]) / len(p)
        return out
    if method == "power":
        return np.power(p, power)
    if method == "geomean":
        return np.log(np.maximum(p, GEOMEAN_FLOOR))
    raise KitError(f"--method: unknown blend method {method!r} (known: {', '.join(METHODS)})")


def _finish(acc: np.ndarray, method: str, power: float) -> np.ndarray:
    """Undo the transform of the weighted average and renormalise multi-class rows."""
    if method == "power":
        acc = np.power(acc, 1.0 / power)
    elif method == "geomean":
        acc = np.exp(acc)
    if acc.shape[1] > 1:
        acc = acc / acc.sum(axis=1, keepdims=True)
    return acc


def normalized_weights(weights: Sequence[float] | None, n: int, *, option: str = "--weights",
                       what: str = "inputs") -> np.ndarray:
    """``n`` weights summing to 1 (equal when ``weights`` is None); KitError naming ``option`` when unusable.

    One rule for blending submissions and for averaging a run's fold models."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, np.float64)
    if len(w) != n:
        raise KitError(f"{option}: {len(w)} weights for {n} {what}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise KitError(f"{option}: weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return w / w.sum()


def blend_arrays(
    preds: Sequence[np.ndarray], method: str = "mean", weights: Sequence[float] | None = None, power: float = 2.0
) -> np.ndarray:
    """Blend aligned predictions (each ``[n]`` or ``[n, k]``); returns the same shape."""
    if not preds:
        raise KitError("blend: nothing to blend")
    w = normalized_weights(weights, len(preds))
    squeeze = np.asarray(preds[0]).ndim == 1
    acc = None
    for wi, p in zip(w, preds):
        p = np.asarray(p, np.float64)
        p = p[:, None] if p.ndim == 1 else p
        term = wi * _transform(p, method, power)
        acc = term if acc is None else acc + term
    out = _finish(acc, method, power)
    return out[:, 0] if squeeze else out


# --- files ---------------------------------------------------------------------------------------


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
class BlendReport:
    """What ``blend_files`` wrote."""

    out: str
    inputs: list[str]
    method: str
    weights: list[float]
    rows: int
    columns: list[str]
    seconds: float
    fit: FitResult | None = None
    extra: dict = field(default_factory=dict)
    pairing: str | None = None  # the line saying the --oof runs were reordered to the submissions' order


def _check_power(method: str, power: float) -> None:
    """The exponent of ``--method power``: finite and > 0 (inf makes every row 1, nan every row nan)."""
    if method == "power" and not (math.isfinite(power) and power > 0):
        raise KitError(f"--power: must be a finite number > 0, got {power}")


def _refuse_oof(table: Table) -> None:
    """A run's out-of-fold table (label and fold columns beside the predictions) is not a submission: one line, pointing to --oof."""
    named = [c for c in table.columns[1:] if c == "fold" or c == "pred" or c.startswith("pred_")]
    if named:
        raise KitError(f"{table.path}: has column {named[0]!r}, so it is out-of-fold predictions, not a submission; "
                       "blend the submissions `kit predict` wrote and give the run folders to --oof RUN ... --fit")


def _refuse_overwriting_an_input(inputs: Sequence[str | os.PathLike], out: str | os.PathLike) -> None:
    for p in inputs:
        if _same_file(p, out):
            raise KitError(f"{out}: is an input of the blend; write the blend to another file")


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()


def _check_values(table: Table, scores: bool = False, method: str = "mean") -> None:
    """Refuse NaN and infinite values, and, unless ``scores``, values outside [0, 1], naming file, row and value.

    Every method checks: a rank blend would hide a 1.7 in its ranks. Scores (logits, margins) may be any
    finite number, but a power or geometric mean of a negative value has no real result.
    """
    v = table.values
    bad = ~np.isfinite(v)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(v[r, c]) else "an infinite value"
        raise KitError(f"{table.path}: {what} in column {table.columns[c + 1]}, e.g. id {table.id_text(r)}")
    low = 0.0 if (not scores or method in ("power", "geomean")) else -np.inf
    high = np.inf if scores else 1.0
    bad = (v < low) | (v > high)
    if bad.any():
        r, c = (int(x) for x in np.argwhere(bad)[0])
        if scores:
            why = f"--method {method} needs values >= 0; blend scores with --method mean or rank"
        else:
            why = "probabilities lie in [0, 1]; pass --scores if the inputs are scores, not probabilities"
        raise KitError(f"{table.path}: row {r + 1} (id {table.id_text(r)}), column {table.columns[c + 1]}: "
                       f"{v[r, c]:g} ({why})")


def _check_blended(blended: np.ndarray, ids: np.ndarray, columns: list[str]) -> None:
    """The blend is finite everywhere (a multi-class row of zeros in every input cannot be renormalised)."""
    bad = ~np.isfinite(blended)
    if bad.any():
        r = int(np.argwhere(bad)[0][0])
        raise KitError(f"blend: row {r + 1} (id {ids[r].decode('utf-8', 'replace')}) has no finite blend: its "
                       f"{', '.join(columns[1:])} are 0 in every input, so it cannot be renormalised to sum to 1")


def _column_order(table: Table, columns: list[str], ref_name: str) -> list[int] | None:
    """Positions of ``columns``' value columns in ``table`` (None if already the same order)."""
    if table.columns == columns:
        return None
    if table.columns[0] != columns[0] or sorted(table.columns[1:]) != sorted(columns[1:]):
        raise KitError(
            f"{table.path}: columns {','.join(table.columns)} differ from {ref_name}'s {','.join(columns)}"
        )
    return [table.columns.index(c) - 1 for c in columns[1:]]


def blend_files(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    method: str = "mean",
    weights: Sequence[float] | None = None,
    power: float = 2.0,
    sample: str | os.PathLike | None = None,
    progress: bool | None = None,
    scores: bool = False,
) -> BlendReport:
    """Blend submission CSVs into ``out`` (ids and order of the first input, or of ``sample``); values must be
    probabilities in [0, 1] unless ``scores``."""
    t0 = time.perf_counter()
    if method not in METHODS:
        raise KitError(f"--method: unknown blend method {method!r} (known: {', '.join(METHODS)})")
    _check_power(method, power)
    inputs = [str(p) for p in inputs]
    if not inputs:
        raise KitError("blend: no input files")
    _refuse_overwriting_an_input(inputs + ([str(sample)] if sample else []), out)
    w = normalized_weights(weights, len(inputs))
    ref_name = str(sample) if sample else inputs[0]
    # One file is read ahead in a thread while the previous one is aligned and ranked: pandas'
    # parser and numpy's sorts release the GIL, so two cores overlap; at most two files in memory.
    pool = ThreadPoolExecutor(max_workers=1)
    todo = [p for i, p in enumerate(inputs) if i or sample]
    ahead = pool.submit(read_table, todo[0]) if todo else None
    bar = None
    try:
        first = read_table(ref_name)
        columns = first.columns
        _refuse_oof(first)
        if len(columns) < 2:
            raise KitError(f"{ref_name}: no prediction columns (only {columns[0]})")
        if len(first) == 0:
            raise KitError(f"{ref_name}: no rows")
        index = IdIndex(first.ids, ref_name)
        acc = np.zeros((len(first), len(columns) - 1))
        if progress is not False and len(first) * len(inputs) >= PROGRESS_ROWS:
            from tqdm.auto import tqdm

            disable = None if progress is None else False  # None: a bar on terminals only
            bar = tqdm(total=len(inputs), desc=f"blend {method}", unit="file", disable=disable)
        for i, (path, wi) in enumerate(zip(inputs, w)):
            if i == 0 and not sample:
                table = first
            else:
                table = ahead.result()
                todo.pop(0)
                ahead = pool.submit(read_table, todo[0]) if todo else None
            if len(table) == 0:
                raise KitError(f"{path}: no rows")
            _refuse_oof(table)
            cols = _column_order(table, columns, ref_name)
            _check_values(table, scores, method)
            src = index.align(table.ids, path)
            values = table.values if cols is None else table.values[:, cols]
            term = _transform(values, method, power)
            del table, values
            if src is None:
                acc += wi * term
            else:
                acc += wi * term[src]
            del term
            if bar is not None:
                bar.update(1)
    finally:
        if ahead is not None:
            ahead.cancel()
        pool.shutdown(wait=True)
        if bar is not None:
            bar.close()
    with np.errstate(divide="ignore", invalid="ignore"):
        blended = _finish(acc, method, power)
    _check_blended(blended, first.ids, columns)
    write_table(out, columns, first.ids, blended)
    return BlendReport(
        out=str(out), inputs=inputs, method=method, weights=[float(x) for x in w], rows=len(first),
        columns=list(columns), seconds=time.perf_counter() - t0,
    )


# --- weights fit on out-of-fold predictions ------------------------------------------------------


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
    from kit import metrics  # scikit-learn: imported only when weights are fit

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


def sidecar_of(submission: str | os.PathLike) -> Path:
    """The JSON sidecar ``kit predict`` writes beside a submission: ``NAME.json`` for ``NAME.csv``."""
    return Path(submission).with_suffix(".json")


def _run_key(run: str | os.PathLike) -> str:
    """A run folder compared by its resolved path (a relative path as seen from the working folder)."""
    return os.path.realpath(os.fspath(run))


def _sidecar_run(submission: str, run_at_position: str) -> str:
    """The run folder a submission's sidecar names; KitError naming the submission and the --oof run beside it."""
    side = sidecar_of(submission)
    how = "pass --pair-by-order if --oof lists the runs in the order of the submissions"
    if not side.is_file():
        raise KitError(f"{submission}: no sidecar {side} to say which run wrote it, so it cannot be paired with "
                       f"--oof {run_at_position}; {how}")
    try:
        run = json.loads(side.read_text()).get("run")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        run = None
    if not isinstance(run, str) or not run:
        raise KitError(f"{side}: unreadable or names no \"run\", so {submission} cannot be paired with "
                       f"--oof {run_at_position}; {how}")
    return run


def pair_runs(inputs: Sequence[str | os.PathLike], runs: Sequence[str | os.PathLike]) -> list[str]:
    """The ``runs`` in the order of the submissions ``inputs``, each paired through the submission's sidecar.

    Refuses (one line naming the submission and the run) a missing or unreadable sidecar, a sidecar naming a run
    that is not among ``runs``, and two submissions naming the same run."""
    inputs, runs = [str(p) for p in inputs], [str(r) for r in runs]
    by_key = {}
    for r in runs:
        by_key.setdefault(_run_key(r), r)
    owner: dict[str, str] = {}
    paired = []
    for sub, beside in zip(inputs, runs):
        named = _sidecar_run(sub, beside)
        key = _run_key(named)
        if key not in by_key:
            raise KitError(f"{sub}: its sidecar {sidecar_of(sub)} names run {named}, which is not among the --oof "
                           "run folders")
        if key in owner:
            raise KitError(f"{sub}: its sidecar names run {named}, as {owner[key]}'s does; each submission needs "
                           "a run of its own in --oof")
        owner[key] = sub
        paired.append(by_key[key])
    return paired


def fit_and_blend(
    inputs: Sequence[str | os.PathLike],
    runs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    method: str = "mean",
    power: float = 2.0,
    rank_per_fold: bool | None = None,
    sample: str | os.PathLike | None = None,
    progress: bool | None = None,
    scores: bool = False,
    pair_by_order: bool = False,
) -> BlendReport:
    """Fit weights on the runs' out-of-fold predictions (one run per input, paired through the inputs' sidecars
    unless ``pair_by_order``), then blend the inputs with them."""
    if len(runs) != len(inputs):
        raise KitError(f"--oof: {len(runs)} run folders for {len(inputs)} submissions (one per submission)")
    _refuse_overwriting_an_input([*inputs, *([sample] if sample else [])], out)  # before the fit's work
    given = [str(r) for r in runs]
    paired = given if pair_by_order else pair_runs(inputs, given)
    fit = fit_weights(paired, method=method, power=power, rank_per_fold=rank_per_fold)
    report = blend_files(inputs, out, method=method, weights=fit.weights, power=power, sample=sample,
                         progress=progress, scores=scores)
    report.fit = fit
    if paired != given:
        report.pairing = (f"--oof: runs taken in the submissions' order, as their sidecars name them: "
                          f"{' '.join(paired)}")
    return report


def blend_submissions(
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    method: str = "mean",
    weights: Sequence[float] | None = None,
    power: float = 2.0,
    oof: Sequence[str | os.PathLike] | None = None,
    fit: bool = False,
    rank_per_fold: bool | None = None,
    sample: str | os.PathLike | None = None,
    scores: bool = False,
    force: bool = False,
    pair_by_order: bool = False,
) -> BlendReport:
    """``kit blend``: refuse an ``out`` that is an input (or exists, unless ``force``), then blend ``inputs``,
    with weights fit on the ``oof`` runs when ``fit`` (paired through the sidecars unless ``pair_by_order``)."""
    from kit import precheck

    _refuse_overwriting_an_input([*inputs, *([sample] if sample else [])], out)
    precheck.fresh_output(out, "--out", force)
    # fit and oof travel together: either alone is a half-given request, not a plain blend
    if fit and not oof:
        raise KitError("--fit: give the run folders to fit on with --oof RUN_A RUN_B ...")
    if rank_per_fold is not None and not fit:
        raise KitError("--rank-per-fold: only with --fit (it ranks the OOF predictions the weights are fit on)")
    if oof and not fit:
        raise KitError("--oof: add --fit to fit the weights on these runs (or drop --oof)")
    if pair_by_order and not fit:
        raise KitError("--pair-by-order: only with --fit (it pairs the submissions with the --oof runs)")
    if fit:
        if weights is not None:
            raise KitError("--weights: not with --fit (the fit chooses the weights)")
        return fit_and_blend(inputs, oof, out, method=method, power=power, rank_per_fold=rank_per_fold, sample=sample,
                             scores=scores, pair_by_order=pair_by_order)
    return blend_files(inputs, out, method=method, weights=weights, power=power, sample=sample, scores=scores)


def format_report(report: BlendReport) -> str:
    """Lines ``kit blend`` prints: the OOF fit (members, blend, weights) and what was written."""
    lines = [report.pairing] if report.pairing else []
    if report.fit is not None:
        f = report.fit
        width = max(len(r) for r in f.runs + ["blend"])
        head = f"oof {f.metric}" + (" (fold mean)" if f.objective == "fold mean" else "")
        lines.append(f"{'run':<{width}}  {head:<22}  {'pooled':<10}  weight")
        pooled = f.member_pooled or [float("nan")] * len(f.runs)
        for run, s, p, w in zip(f.runs, f.member_scores, pooled, f.weights):
            lines.append(f"{run:<{width}}  {s:<22.6f}  {p:<10.6f}  {w:.4f}")
        blend_pooled = f.blend_pooled if f.blend_pooled is not None else float("nan")
        lines.append(f"{'blend':<{width}}  {f.blend_score:<22.6f}  {blend_pooled:<10.6f}  ({f.steps} selection steps)")
    weights = ", ".join(f"{w:.4f}" for w in report.weights)
    lines.append(
        f"{report.out}: {report.method} blend of {len(report.inputs)} files, {report.rows:,} rows "
        f"(weights {weights}) in {report.seconds:.2f} s"
    )
    return "\n".join(lines)
