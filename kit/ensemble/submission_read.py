"""Reading submission-shaped CSVs exactly: ids as the raw bytes the file holds, numbers as float64.

Large files (blends of millions of rows) go through a numpy byte scan for the ids and numpy's
correctly rounded conversion for plain decimal numbers, which avoids a Python string per id. Numbers
written otherwise (``NaN``, blanks, spaces) go to pandas' C parser, and anything unusual (quoted fields,
ragged rows, text in a number column) to a careful pandas read that names the problem. This module
never imports TensorFlow or Keras, and imports pandas only for those files: ``kit check`` and
``kit blend`` on plain files start without it.
"""

from __future__ import annotations

import csv
import itertools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.core.errors import KitError

if TYPE_CHECKING:
    import pandas as pd

# pandas' default NA spellings: the fast and the careful reader must agree on what counts as NaN.
NA_TEXT = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
     "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)


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
    from kit.data.sources import csv_records

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
        from kit.data.sources import ragged_rows

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
