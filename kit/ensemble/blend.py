"""Blends of submissions: mean, weighted mean, rank, power and geometric averages; weights fit on OOF.

Every input is aligned by id to the reference order (the first input's, or the sample's), whatever
its own row order, so blending shuffled copies gives the same file. Multi-class submissions are
blended per class and each row renormalised to sum to 1.

The methods (mean, rank, power, geomean) are kit.ensemble.blend_methods'. ``fit_and_blend`` pairs each submission
with the run that wrote it through the submission's sidecar (kit.ensemble.blend_pairing; without sidecars
``pair_by_order`` takes the order given) and fits the weights on the runs' out-of-fold predictions by
ensemble selection (kit.ensemble.blend_fit). Their names stay importable from here.

No TensorFlow here: ``kit blend`` starts fast. Large blends stream one file at a time, holding only
the reference ids and one accumulator per class.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from kit.ensemble.blend_fit import (  # noqa: F401  the weight fit's names, importable from here as before the split
    FitResult,
    Oof,
    fit_oofs,
    fit_weights,
    load_oof,
)
from kit.ensemble.blend_methods import (  # noqa: F401  the methods' names, importable from here as before the split
    GEOMEAN_FLOOR,
    METHODS,
    _check_power,
    _finish,
    _transform,
    blend_arrays,
    normalized_weights,
    rankdata,
)
from kit.ensemble.blend_pairing import pair_runs, sidecar_of  # noqa: F401  importable from here as before the split
from kit.core.errors import KitError
from kit.ensemble.submission import IdIndex, Table, read_table, write_table

PROGRESS_ROWS = 200_000  # a bar when a blend reads at least this many rows in all


# --- files ---------------------------------------------------------------------------------------


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
    from kit.data import precheck

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
