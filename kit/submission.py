"""Submission CSVs: fast exact reading, writing, building from predictions, and checking.

kit owns three promises about a submission here:

- ids are kept exactly as the competition writes them (PCam's hex ids, SIIM's ``ISIC_0052060``,
  leading zeros): they are read as raw bytes, never through a number or a guessed dtype;
- a submission built by :func:`make_submission` copies the sample's ids, order and column names;
- :func:`check_submission` lists every problem a Kaggle upload would trip on, one line each.

Large files (blends of millions of rows) go through a numpy byte scan for the ids and numpy's
correctly rounded conversion for plain decimal numbers, which avoids a Python string per id. Numbers
written otherwise (``NaN``, blanks, spaces) go to pandas' C parser, and anything unusual (quoted fields,
ragged rows, text in a number column) to a careful pandas read that names the problem. This module
never imports TensorFlow or Keras, and imports pandas only for those files and for building
submission frames: ``kit check`` and ``kit blend`` on plain files start without it (~0.2 s).
"""

from __future__ import annotations

import csv
import io
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from kit import fsutil
from kit.errors import KitError
from kit.task import task_for

if TYPE_CHECKING:
    import pandas as pd

# pandas' default NA spellings: the fast and the careful reader must agree on what counts as NaN.
NA_TEXT = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)
# Rows of a multi-class submission must sum to 1 within this (probabilities are written rounded).
SUM_TOLERANCE = 1e-3
FLOAT_DIGITS = 12  # significant digits kit writes: distinct for float32 probabilities and rank means


@dataclass
class Table:
    """A submission-shaped CSV: the id column first, then numeric columns.

    ``ids`` is a numpy bytes array (``dtype S``) holding each id exactly as written;
    ``values`` is float64 ``[n, len(columns) - 1]`` (NaN where the file has an NA spelling);
    ``text`` marks cells holding text that is not a number (lenient reads only; None when there
    are none) and ``text_example`` is the first of them as ``(row, column, text)``.
    """

    path: str
    columns: list[str]
    ids: np.ndarray
    values: np.ndarray
    text: np.ndarray | None = None
    text_example: tuple[int, str, str] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def id_text(self, row: int) -> str:
        """The id of ``row`` (0-based) as text."""
        return self.ids[row].decode("utf-8", "replace")

    def id_quoted(self, row: int) -> str:
        """The id of ``row`` as ``kit check`` shows it (``quoted_id``)."""
        return quoted_id(self.ids[row])


def quoted_id(raw: bytes) -> str:
    """An id quoted as Python's repr quotes text, as ``kit check`` shows ids: a space at either end, an empty id or an
    invisible character is seen, not lost."""
    return repr(raw.decode("utf-8", "replace"))


def shown_id(raw: bytes) -> str:
    """An id in a message every verb shares: as it is when plain, quoted (``quoted_id``) when an edge space, an
    empty id or an invisible character would otherwise hide."""
    text = raw.decode("utf-8", "replace")
    return text if text and text == text.strip() and text.isprintable() else repr(text)


# --- reading -------------------------------------------------------------------------------------


def _not_csv(path: str, why: str) -> KitError:
    return KitError(f"{path}: not a CSV file ({why})")


def _header(buf: bytes, path: str) -> tuple[list[str], int]:
    """Column names and the offset where the data rows start."""
    if b"\x00" in buf[:65536]:
        raise _not_csv(path, "binary data")
    end = buf.find(b"\n")
    line = buf if end < 0 else buf[:end]
    if b"\r" in line.rstrip(b"\r"):
        raise KitError(f"{path}: lines end in a carriage return alone (old Mac text); save it with \\n or \\r\\n "
                       "line ends")
    try:
        text = line.decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError:
        raise _not_csv(path, "not UTF-8 text") from None
    if not text.strip():
        raise KitError(f"{path}: no header line (the first line is blank)")
    columns = next(csv.reader([text]))
    return columns, (len(buf) if end < 0 else end + 1)


def read_table(path: str | os.PathLike, *, lenient: bool = False) -> Table:
    """Read a submission-shaped CSV with ids as exact bytes; non-numeric cells raise unless ``lenient``."""
    name = str(path)
    try:
        buf = Path(path).read_bytes()
    except FileNotFoundError:
        raise KitError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise KitError(f"{name}: is a folder, not a CSV file") from None
    if not buf or (len(buf) < 65536 and not buf.strip()):
        raise KitError(f"{name}: empty file")
    columns, start = _header(buf, name)
    table = _read_fast(buf, start, columns, name)
    if table is None:
        table = _read_careful(name, columns)
    if table.text_example is not None and not lenient:
        row, col, text = table.text_example
        raise KitError(f"{name}: column {col} holds text that is not a number, e.g. id {shown_id(table.ids[row])}: {text!r}")
    return table


_BOOLEAN_TAILS = (b"rue", b"RUE", b"alse", b"ALSE")


def _read_fast(buf: bytes, start: int, columns: list[str], name: str) -> Table | None:
    """Byte-scan the ids and let pandas' C parser read only the numbers; None if the file is unusual."""
    k = len(columns)
    if buf.find(b'"', start) >= 0:
        return None
    # pandas' C parser reads True/False as 1/0 in a float column; the careful reader calls them text, and
    # both readers must give one answer: a file that might hold a boolean is read carefully
    if any(buf.find(word, start) >= 0 for word in _BOOLEAN_TAILS):
        return None
    whole = np.frombuffer(buf, np.uint8)
    body = whole[start:]
    if len(body) == 0:
        return Table(name, columns, np.zeros(0, "S8"), np.zeros((0, k - 1)))
    nl = np.flatnonzero(body == 10)
    starts = np.empty(len(nl) + 1, np.int64)
    starts[0] = 0
    starts[1:] = nl + 1
    ends = np.empty(len(nl) + 1, np.int64)
    ends[:-1] = nl
    ends[-1] = len(body)
    del nl
    if buf.find(b"\r", start) >= 0:  # CRLF line ends
        ends -= (ends > starts) & (body[np.maximum(ends - 1, 0)] == 13)
    keep = ends > starts  # pandas skips blank lines; so do we
    if not keep.all():
        starts, ends = starts[keep], ends[keep]
    n = len(starts)
    if k > 1:
        commas = np.flatnonzero(body == 44)
        if len(commas) != n * (k - 1):
            return None
        commas = commas.reshape(n, k - 1)
        if n and not ((commas[:, 0] >= starts).all() and (commas[:, -1] < ends).all()):
            return None
        id_ends = commas[:, 0].copy()
    else:
        id_ends = ends
    ids = _gather_words(buf, starts + start, id_ends - starts)
    if k == 1:
        return Table(name, columns, ids, np.zeros((n, 0)))
    values = _plain_numbers(buf, start + commas + 1, start + np.column_stack([commas[:, 1:], ends]))
    del commas
    if values is not None:
        return Table(name, columns, ids, values)
    import pandas as pd  # numbers written otherwise (NaN, blanks, spaces): pandas' C parser reads them

    try:
        frame = pd.read_csv(
            name, usecols=list(range(1, k)), dtype=np.float64, engine="c", encoding="utf-8", header=0
        )
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError):
        return None  # text in a number column, or something pandas reads differently: read carefully
    if len(frame) != n:
        return None
    return Table(name, columns, ids, frame.to_numpy(np.float64))


# Bytes of a plain decimal number (digits, sign, point, exponent), and 0: _gather_words' padding
_PLAIN = b"0123456789+-.eE\x00"


def _plain_numbers(buf: bytes, begins: np.ndarray, ends: np.ndarray) -> np.ndarray | None:
    """The fields ``buf[begins:ends]`` (``[n, k]``) as float64 when every one is a plain decimal number; else None.

    numpy rounds them correctly (pandas' C parser gives the same values; tests compare); anything else (empty, NaN,
    inf, spaces, a digit separator that Python's float() would accept) is left to pandas by returning None.
    """
    lengths = ends - begins
    if lengths.size and int(lengths.min()) <= 0:
        return None
    values = np.empty(begins.shape, np.float64)
    for j in range(begins.shape[1]):
        text = _gather_words(buf, begins[:, j], lengths[:, j])
        if text.tobytes().translate(None, _PLAIN):  # a byte left over: not plain (bytes.translate: ~5 ms per MB)
            return None
        try:
            values[:, j] = text.astype(np.float64)
        except ValueError:  # "1e", "+-1", "1.2.3": not a number after all
            return None
    return values


def _gather_words(buf: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Fields ``buf[starts:starts+lengths]`` as a bytes array (``S8``, ``S16``...), zero padded.

    Each id is read as whole little-endian 64-bit words through an overlapping view of the file
    (a word may start at any byte), then the bytes past the id's end are masked off: two gathers
    for a 12-byte SIIM id instead of twelve.
    """
    n = len(starts)
    if n == 0:
        return np.zeros(0, "S8")
    n_words = max(1, -(-int(lengths.max()) // 8))
    words = np.zeros((n, n_words), "<u8")
    if len(buf) < 8:
        buf = buf.ljust(8, b"\0")
    view = np.ndarray(shape=(len(buf) - 7,), dtype="<u8", buffer=buf, strides=(1,))
    full = np.uint64(0xFFFFFFFFFFFFFFFF)
    for c in range(n_words):
        left = lengths - 8 * c
        if int(left.max()) <= 0:
            break
        at = starts + 8 * c
        tail = at > len(buf) - 8  # words that would run past the end of the file: the last rows
        if tail.any():
            w = view[np.where(tail, 0, at)]
            for i in np.flatnonzero(tail):
                w[i] = int.from_bytes(buf[at[i] : at[i] + 8].ljust(8, b"\0"), "little")
        else:
            w = view[at]
        lo, hi = int(left.min()), int(left.max())
        if lo == hi and lo < 8:  # ids of one length (the usual case): one mask for every row
            w &= np.uint64((1 << (8 * lo)) - 1)
        elif lo < 8:
            nbytes = np.clip(left, 0, 7).astype(np.uint64)
            w &= np.where(left >= 8, full, (np.uint64(1) << (nbytes * np.uint64(8))) - np.uint64(1))
        words[:, c] = w
    return words.view(f"S{8 * n_words}").reshape(n)


_FIELDS_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


def _long_row(name: str, n_header: int) -> str:
    """One line naming the file line of the first row with more fields than the header (pandas' own count of
    lines leaves out the line breaks inside quoted fields)."""
    from kit.sources import csv_records

    for line, row in itertools.islice(csv_records(Path(name)), 1, None):
        if len(row) > n_header:
            return f"{name}: line {line} has {len(row)} fields, the header has {n_header}"
    return f"{name}: a row has more fields than the header's {n_header}"


def _read_careful(name: str, columns: list[str]) -> Table:
    """Read every cell as text with pandas, then convert; names the cell that is wrong."""
    import pandas as pd  # only unusual files come here

    try:
        frame = pd.read_csv(name, dtype=str, keep_default_na=False, na_filter=False, header=0, encoding="utf-8")
    except UnicodeDecodeError:
        raise _not_csv(name, "not UTF-8 text") from None
    except pd.errors.ParserError as exc:
        if _FIELDS_RE.search(str(exc)):
            raise KitError(_long_row(name, len(columns))) from None
        raise _not_csv(name, str(exc).strip().splitlines()[0]) from None
    except pd.errors.EmptyDataError:
        raise KitError(f"{name}: empty file") from None
    if not isinstance(frame.index, pd.RangeIndex):  # pandas' reading of one more field on every row
        from kit.sources import ragged_rows

        raise KitError(ragged_rows(Path(name), len(columns)))
    if frame.shape[1] != len(columns):
        raise _not_csv(name, f"the header has {len(columns)} fields, pandas read {frame.shape[1]}")
    raw = frame.iloc[:, 0].tolist()
    ids = np.array([s.encode("utf-8") for s in raw], dtype="S") if raw else np.zeros(0, "S1")
    values = np.empty((len(frame), len(columns) - 1))
    wrong = np.zeros(values.shape, bool)
    for j in range(1, len(columns)):
        text = frame.iloc[:, j].str.strip()
        values[:, j - 1] = pd.to_numeric(text, errors="coerce").to_numpy(np.float64)
        wrong[:, j - 1] = np.isnan(values[:, j - 1]) & ~text.isin(NA_TEXT).to_numpy()
    if not wrong.any():
        return Table(name, columns, ids, values)
    row, col = (int(x) for x in np.argwhere(wrong)[0])
    return Table(name, columns, ids, values, wrong, (row, columns[col + 1], frame.iloc[row, col + 1]))


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """A submission CSV as a DataFrame: the id column as exact strings, the other columns as floats."""
    import pandas as pd

    table = read_table(path)
    data = {table.columns[0]: _decode(table.ids)}
    for j, col in enumerate(table.columns[1:]):
        data[col] = table.values[:, j]
    return pd.DataFrame(data)


def _decode(ids: np.ndarray) -> np.ndarray:
    return np.array([b.decode("utf-8") for b in ids.tolist()], dtype=object)


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

