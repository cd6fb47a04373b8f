"""Submission CSVs: fast exact reading, writing, building from predictions, and checking.

kit owns three promises about a submission here:

- ids are kept exactly as the competition writes them (PCam's hex ids, SIIM's ``ISIC_0052060``,
  leading zeros): they are read as raw bytes, never through a number or a guessed dtype;
- a submission built by :func:`make_submission` copies the sample's ids, order and column names;
- :func:`check_submission` lists every problem a Kaggle upload would trip on, one line each.

Reading (:class:`Table`, :func:`read_table`, :func:`read_submission`) is kit.ensemble.submission_read's; its names
stay importable from here. This module never imports TensorFlow or Keras, and imports pandas only for
unusual files and for building submission frames: ``kit check`` and ``kit blend`` on plain files start
without it (~0.2 s).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from kit.core import fsutil
from kit.core.errors import KitError
from kit.ensemble.submission_read import (  # noqa: F401  the reading names, importable from here as before the split
    NA_TEXT,
    Table,
    _decode,
    quoted_id,
    read_submission,
    read_table,
    shown_id,
)
from kit.core.task import task_for

if TYPE_CHECKING:
    import pandas as pd

# Rows of a multi-class submission must sum to 1 within this (probabilities are written rounded).
SUM_TOLERANCE = 1e-3
FLOAT_DIGITS = 12  # significant digits kit writes: distinct for float32 probabilities and rank means


# --- alignment by id -----------------------------------------------------------------------------


def _words(ids: np.ndarray) -> np.ndarray:
    """The ids as rows of 64-bit words (zero padded), a cheap view when the width allows."""
    width = ids.dtype.itemsize
    padded = -(-width // 8) * 8
    if padded != width:
        ids = ids.astype(f"S{padded}")
    return np.ascontiguousarray(ids).view("<u8").reshape(len(ids), padded // 8)


def _hash_ids(ids: np.ndarray) -> np.ndarray:
    """A uint64 key per id (collisions are possible and are caught by comparing the ids themselves).

    Zero words (past an id's end) leave the key unchanged, so the key of an id does not depend on
    the width of the array holding it.
    """
    words = _words(ids)
    key = words[:, 0].copy()
    mult = np.uint64(0x9E3779B97F4A7C15)
    for c in range(1, words.shape[1]):
        w = words[:, c]
        key = np.where(w != 0, (key * mult) ^ w, key)
    return key


def _same_ids(a: np.ndarray, b: np.ndarray) -> bool:
    if len(a) != len(b):
        return False
    if a.dtype.itemsize == b.dtype.itemsize and a.dtype.itemsize % 8 == 0:
        return np.array_equal(_words(a), _words(b))
    return bool(np.array_equal(a, b))


class IdIndex:
    """The ids of a reference file, sorted once, to align other files' rows to the reference's order."""

    def __init__(self, ids: np.ndarray, name: str):
        self.ids = ids
        self.name = name
        self._keys = _hash_ids(ids)
        self._order = np.argsort(self._keys)
        self._sorted = self._keys[self._order]
        dup = _first_duplicate(ids, self._order, self._sorted)
        if dup is not None:
            raise KitError(f"{name}: duplicate id {dup[0]} (rows {dup[1]} and {dup[2]})")

    def align(self, ids: np.ndarray, name: str) -> np.ndarray | None:
        """Row indices ``src`` with ``ids[src] == reference ids`` (None when already in the same order)."""
        if _same_ids(ids, self.ids):
            return None
        if len(ids) == len(self.ids):
            keys = _hash_ids(ids)
            order = np.argsort(keys)
            if np.array_equal(keys[order], self._sorted):
                src = np.empty(len(ids), np.int64)
                src[self._order] = order
                if _same_ids(ids[src], self.ids):
                    return src
            # Equal hashes of different ids (or a real mismatch): decide on the ids themselves.
            src = _align_exact(self.ids, ids)
            if src is not None:
                return src
        raise KitError(_mismatch(self.ids, self.name, ids, name))


def _first_duplicate(ids: np.ndarray, order: np.ndarray, sorted_keys: np.ndarray) -> tuple[str, int, int] | None:
    same = np.flatnonzero(sorted_keys[1:] == sorted_keys[:-1])
    if len(same) == 0:
        return None
    a, b = order[same], order[same + 1]
    hit = np.flatnonzero(ids[a] == ids[b])
    if len(hit) == 0:
        # Only hash collisions; look for true duplicates among exact-sorted ids.
        exact = np.argsort(ids, kind="stable")
        s = ids[exact]
        eq = np.flatnonzero(s[1:] == s[:-1])
        if len(eq) == 0:
            return None
        a, b, hit = exact[eq], exact[eq + 1], np.array([0])
    i, j = sorted((int(a[hit[0]]), int(b[hit[0]])))
    return shown_id(ids[i]), i + 1, j + 1


def _align_exact(ref: np.ndarray, ids: np.ndarray) -> np.ndarray | None:
    o_ref = np.argsort(ref, kind="stable")
    o_ids = np.argsort(ids, kind="stable")
    if not np.array_equal(ref[o_ref], ids[o_ids]):
        return None
    src = np.empty(len(ids), np.int64)
    src[o_ref] = o_ids
    return src


def _mismatch(ref: np.ndarray, ref_name: str, ids: np.ndarray, name: str) -> str:
    """One line saying how the id set of ``name`` differs from ``ref_name``'s, with an example id."""
    sorted_ids = np.sort(ids)
    dup = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(dup):
        d = sorted_ids[dup[0]]
        rows = np.flatnonzero(ids == d)[:2] + 1
        return f"{name}: duplicate id {shown_id(d)} (rows {rows[0]} and {rows[1]})"
    extra = ~np.isin(ids, ref)
    if extra.any():
        i = int(np.flatnonzero(extra)[0])
        return (f"{name}: {_plural(int(extra.sum()), 'id is', 'ids are')} not in {ref_name}, "
                f"e.g. {shown_id(ids[i])} (row {i + 1})")
    missing = ~np.isin(ref, ids)
    i = int(np.flatnonzero(missing)[0]) if missing.any() else 0
    return (f"{name}: {_plural(int(missing.sum()), 'id', 'ids')} of {ref_name} "
            f"{'is' if missing.sum() == 1 else 'are'} missing, e.g. {shown_id(ref[i])}")


# --- writing -------------------------------------------------------------------------------------


def _format_python(values: np.ndarray) -> np.ndarray:
    text = [("%.*g" % (FLOAT_DIGITS, v)).encode() for v in values.tolist()]
    return np.array(text, dtype="S") if text else np.zeros(0, "S1")


def format_floats(values: np.ndarray) -> np.ndarray:
    """Numbers as ``%.12g`` text in a numpy bytes array; vectorised for probabilities in [1e-4, 1].

    The vectorised path may differ from C's correctly rounded ``%.12g`` in the twelfth digit when a
    value lies within a rounding error of a half; it never changes the order of distinct float32s.
    Other numbers (tiny, negative, above 1, NaN) are formatted by Python.
    """
    v = np.asarray(values, np.float64).ravel()
    n = len(v)
    nd = FLOAT_DIGITS
    width = 2 + 3 + nd  # "0." + up to three zeros + the digits
    out = np.zeros((n, width), np.uint8)
    fast = (v >= 1e-4) & (v < 1.0)
    if fast.any():
        rows = np.flatnonzero(fast)
        vf = v[rows]
        e = np.floor(np.log10(vf)).astype(np.int64)
        m = np.rint(vf * 10.0 ** (nd - 1 - e)).astype(np.int64)
        hi, lo = m >= 10**nd, m < 10 ** (nd - 1)  # log10 can be one off next to a power of ten
        if (hi | lo).any():
            e = e + hi - lo
            m = np.rint(vf * 10.0 ** (nd - 1 - e)).astype(np.int64)
        digits = np.empty((len(rows), nd), np.uint8)
        rest = m
        for j in range(nd - 1, -1, -1):
            rest, d = np.divmod(rest, 10)
            digits[:, j] = d
        sig = np.full(len(rows), nd, np.int64)  # digits left after dropping trailing zeros
        trailing = np.ones(len(rows), bool)
        for j in range(nd - 1, 0, -1):
            trailing &= digits[:, j] == 0
            sig -= trailing
        digits += 48
        block = np.zeros((len(rows), width), np.uint8)
        block[:, 0], block[:, 1] = 48, 46  # "0."
        ones = e >= 0  # rounded up to exactly 1
        zeros = np.where(ones, 0, -e - 1)  # zeros after "0." (0..3)
        for z in np.unique(zeros):
            sel = zeros == z
            block[np.ix_(sel, range(2, 2 + z))] = 48
            block[sel, 2 + z : 2 + z + nd] = digits[sel]
        block[np.arange(width)[None, :] >= (2 + zeros + sig)[:, None]] = 0
        block[ones] = 0
        block[ones, 0] = 49
        out[rows] = block
    out[v == 0.0, 0] = 48
    out[v == 1.0, 0] = 49
    slow = np.flatnonzero(~fast & (v != 0.0) & (v != 1.0))
    if len(slow):
        text = _format_python(v[slow])
        w = max(width, text.dtype.itemsize)
        if w > width:
            out = np.concatenate([out, np.zeros((n, w - width), np.uint8)], axis=1)
        out[slow] = text.astype(f"S{w}").view(np.uint8).reshape(len(slow), w)
        width = w
    return out.view(f"S{width}").reshape(n)


def write_table(path: str | os.PathLike, columns: Sequence[str], ids: np.ndarray, values: np.ndarray) -> Path:
    """Write ``ids`` (bytes) and ``values`` ``[n, k]`` under ``columns`` as CSV, atomically and fast."""
    values = np.asarray(values, np.float64).reshape(len(ids), -1)
    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow(list(columns))
    id_grid = np.ascontiguousarray(ids).view(np.uint8).reshape(len(ids), ids.dtype.itemsize)
    if np.isin(id_grid, (10, 13, 34, 44)).any():  # an id needing CSV quoting: let pandas quote it
        import pandas as pd

        frame = pd.DataFrame({columns[0]: _decode(ids)})
        for j, col in enumerate(columns[1:]):
            frame[col] = values[:, j]
        return fsutil.write_csv(path, frame, float_format=f"%.{FLOAT_DIGITS}g")
    n = len(ids)
    parts = [id_grid]
    for j in range(values.shape[1]):
        text = format_floats(values[:, j])
        parts.append(np.full((n, 1), 44, np.uint8))
        parts.append(text.view(np.uint8).reshape(n, text.dtype.itemsize))
    parts.append(np.full((n, 1), 10, np.uint8))
    grid = np.concatenate(parts, axis=1).ravel()
    del parts
    body = grid[grid != 0]
    with fsutil.atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(head.getvalue().encode("utf-8"))
            fh.write(memoryview(body))
    return Path(path)


# --- building and checking -----------------------------------------------------------------------


def make_submission(
    ids: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    sample: pd.DataFrame | None,
    id_name: str,
) -> pd.DataFrame:
    """A submission frame: the sample's ids, order and columns (or ``id_name`` + target/classes).

    Binary (``len(classes) == 2``) fills one column with the positive class probability; multi-class
    writes one probability column per class, matched to the sample's columns by class name.
    """
    import pandas as pd

    ids = [str(i) for i in ids]
    probs = np.asarray(probs, np.float64)
    if probs.ndim == 1:
        probs = probs[:, None]
    if len(probs) != len(ids):
        raise KitError(f"predictions: {len(probs)} rows for {len(ids)} ids")
    task = task_for(len(classes))
    probs = task.submission_probs(probs, classes)
    index = pd.Index(ids)
    if index.has_duplicates:
        raise KitError(f"predictions: duplicate id {index[index.duplicated()][0]}")
    if sample is None:
        cols = task.submission_columns(classes)
        out = pd.DataFrame({id_name: pd.Series(ids, dtype=object)})
        for j, c in enumerate(cols):
            out[c] = probs[:, j]
        return out
    sample_ids = sample.iloc[:, 0].astype(str).tolist()
    sample_index = pd.Index(sample_ids)
    if sample_index.has_duplicates:
        rows = np.flatnonzero(sample_index == sample_index[sample_index.duplicated()][0])
        raise KitError(f"sample submission: id {sample_ids[rows[0]]!r} is on rows {rows[0] + 1} and {rows[1] + 1}; "
                       "each id must appear once")
    pos = index.get_indexer(sample_ids)
    if (pos < 0).any():
        miss = sample_ids[int(np.flatnonzero(pos < 0)[0])]
        n_miss = int((pos < 0).sum())
        raise KitError(f"sample submission: {_plural(n_miss, 'id has', 'ids have')} no prediction, e.g. {miss}")
    if len(ids) != len(sample_ids):
        extra = index.difference(pd.Index(sample_ids))
        raise KitError(
            f"predictions: {_plural(len(extra), 'id is', 'ids are')} not in the sample submission, e.g. {extra[0]}"
        )
    value_cols = list(sample.columns[1:])
    out = pd.DataFrame({sample.columns[0]: pd.Series(sample_ids, dtype=object)})
    for col, j in zip(value_cols, task.value_order(value_cols, classes, "sample submission")):
        out[col] = probs[pos, j]
    return out


def write_submission(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a submission frame (id column first, then numbers) as CSV atomically, through the same
    writer and number format as ``kit blend``'s output (ids untouched, no index)."""
    import pandas as pd  # a frame is given: pandas is loaded already

    values = frame.iloc[:, 1:]
    if not len(frame) or not all(pd.api.types.is_numeric_dtype(t) for t in values.dtypes):
        return fsutil.write_csv(path, frame)
    ids = np.array([str(x).encode("utf-8") for x in frame.iloc[:, 0]], dtype=bytes)
    return write_table(path, [str(c) for c in frame.columns], ids, values.to_numpy(np.float64))


def _example(table: Table, rows: np.ndarray) -> str:
    return table.id_quoted(int(rows[0]))


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {plural or word + 's'}"


def _id_problems(sub: Table, sample: Table, name: str, sname: str) -> list[str]:
    """Row count, duplicate, foreign and missing ids of ``sub`` against ``sample``."""
    try:
        index = IdIndex(sample.ids, sname)
    except KitError as exc:  # the reference itself repeats an id: no submission can match it
        return [str(exc)]
    try:
        index.align(sub.ids, name)
        return []  # the same id set, no duplicates: the usual case, decided by hashing alone
    except KitError:
        pass
    problems = []
    n, ns = len(sub), len(sample)
    in_sample = np.isin(sub.ids, sample.ids)
    sample_found = np.isin(sample.ids, sub.ids)
    order = np.argsort(sub.ids, kind="stable")
    s = sub.ids[order]
    dup = np.flatnonzero(s[1:] == s[:-1])
    if n != ns:
        example = ""
        if n < ns and (~sample_found).any():
            example = f" (e.g. {sample.id_quoted(int(np.flatnonzero(~sample_found)[0]))} is missing)"
        elif n > ns and ((~in_sample).any() or len(dup)):
            row = int(np.flatnonzero(~in_sample)[0]) if (~in_sample).any() else int(order[dup[0] + 1])
            example = f" (e.g. {sub.id_quoted(row)} is extra)"
        problems.append(f"{name}: {n} rows; {sname} has {ns}{example}")
    if len(dup):
        first = s[dup[0]]
        rows = np.flatnonzero(sub.ids == first)[:2] + 1
        n_dup = len(np.unique(s[dup + 1]))
        problems.append(
            f"{name}: {_plural(n_dup, 'duplicate id')}, e.g. {quoted_id(first)} "
            f"(rows {rows[0]} and {rows[1]})"
        )
    if (~in_sample).any():
        rows = np.flatnonzero(~in_sample)
        problems.append(
            f"{name}: {_plural(len(rows), 'id')} not in {sname}, e.g. {_example(sub, rows)} (row {rows[0] + 1})"
        )
    if (~sample_found).any():
        rows = np.flatnonzero(~sample_found)
        problems.append(f"{name}: {_plural(len(rows), 'id')} of {sname} missing, e.g. {_example(sample, rows)}")
    return problems


def check_submission(path: str | os.PathLike, sample_path: str | os.PathLike) -> list[str]:
    """Every problem of ``path`` against the sample submission, one line each with an example id."""
    name, sname = str(path), str(sample_path)
    sample = read_table(sample_path, lenient=True)  # the reference itself must be readable
    try:
        sub = read_table(path, lenient=True)
    except KitError as exc:
        return [str(exc)]
    problems: list[str] = []
    if sub.columns != sample.columns:
        problems.append(f"{name}: columns are {','.join(sub.columns)}; {sname} has {','.join(sample.columns)}")
    problems += _id_problems(sub, sample, name, sname)
    value_cols = sub.columns[1:]
    if not value_cols:
        problems.append(f"{name}: no prediction columns")
        return problems
    v = sub.values
    nan = np.isnan(v)
    if sub.text is not None:
        row, col, text = sub.text_example
        problems.append(
            f"{name}: {_plural(int(sub.text.sum()), 'value')} not a number, e.g. {sub.id_quoted(row)} {col}={text!r}"
        )
        nan &= ~sub.text
    for mask, what in ((nan, "NaN"), (np.isinf(v), "infinite")):
        if mask.any():
            r, c = np.argwhere(mask)[0]
            problems.append(
                f"{name}: {_plural(int(mask.sum()), what + ' value')}, e.g. {sub.id_quoted(r)} {value_cols[c]}"
            )
    finite = np.isfinite(v)
    outside = finite & ((v < 0) | (v > 1))
    if outside.any():
        r, c = np.argwhere(outside)[0]
        problems.append(
            f"{name}: {_plural(int(outside.sum()), 'probability', 'probabilities')} outside [0, 1], "
            f"e.g. {sub.id_quoted(r)} {value_cols[c]}={v[r, c]:g}"
        )
    if len(sample.columns) > 2 and v.shape[1] > 1:
        ok_rows = finite.all(axis=1)
        sums = v.sum(axis=1)
        off = ok_rows & (np.abs(sums - 1.0) > SUM_TOLERANCE)
        if off.any():
            r = int(np.flatnonzero(off)[0])
            problems.append(
                f"{name}: {_plural(int(off.sum()), 'row does', 'rows do')} not sum to 1, "
                f"e.g. {sub.id_quoted(r)} sums to {sums[r]:.6g}"
            )
    return problems

