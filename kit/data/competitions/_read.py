"""The reading toolkit every competition's reader uses: the ``Source`` table, CSV reading with exact ids and
file-line messages, finding images by id, and scanning class folders.

A ``Source`` has one row per image with the columns ``image_name`` (the id exactly as the competition writes
it), ``path`` (absolute), ``target`` (class index, -1 when unlabelled), ``group`` (patient or lesion id; the
image id when the download has none), then metadata columns. Problems with the input raise ``KitError``
naming the file, line or column. Only pandas is needed here (no TensorFlow); nothing here knows a competition.
"""

from __future__ import annotations

import csv as csvlib
import errno
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from kit.core.layout import RUN_CONFIG
from kit.core.errors import KitError

if TYPE_CHECKING:  # pandas is imported where a table is read or written: the CLI starts without it
    import pandas as pd

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass
class Source:
    """One competition split as a table of images, with the facts the writer and trainer need."""

    table: pd.DataFrame
    classes: list[str]
    layout: str
    id_name: str
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    labelled: bool = True
    # Code tables of the categorical columns, built from train and test together when both are
    # known, so that train and test records share codes.
    categories: dict[str, list[str]] = field(default_factory=dict)
    # Rows dropped because their image file is missing (only with skip_bad): {"path", "reason"}.
    skipped: list[dict] = field(default_factory=list)
    root: str = ""
    # Columns of the train CSV that the test CSV lacks (ISIC 2024: diagnosis, biopsy, lesion id). They
    # restate or leak the label and cannot exist at prediction time: never metadata inputs.
    train_only: list[str] = field(default_factory=list)
    # The CSV the table was read from ("" for class folders), for messages about its columns.
    table_file: str = ""

# --- helpers -------------------------------------------------------------------------------------


def unwrap(path: Path) -> Path:
    """Step into a folder that holds nothing but one sub-folder (how many Kaggle zips unpack)."""
    while path.is_dir():
        entries = [e for e in path.iterdir() if not e.name.startswith(".")]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        inner = entries[0]
        # Stop at a class-folder tree's own split folder (Train/, train/) or at a class folder.
        if inner.name.lower() in ("train", "test") or not any(x.is_dir() for x in inner.iterdir()):
            break
        path = inner
    return path


def csv_header(csv: Path) -> list[str]:
    """The column names of ``csv``; KitError naming the file when it cannot be read."""
    import pandas as pd
    try:
        return list(pd.read_csv(csv, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise KitError(f"{csv}: not a readable CSV ({str(exc).splitlines()[0]})") from None


def read_csv_ids(csv: str | os.PathLike, id_cols: list[str], **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` with ``id_cols`` kept as the exact strings of the file; KitError naming the file when unreadable.

    An image may be called ``nan``, ``NA``, ``None`` or ``null``: pandas reads those as missing in any
    column, so id columns get no missing-value texts at all while other columns keep pandas' defaults.
    """
    import pandas as pd
    header = csv_header(Path(csv))
    present = [c for c in id_cols if c in header]
    # pandas' own list of the texts it reads as missing ("nan", "NA", "None", "null", "N/A", "" ...)
    na_texts = sorted(pd._libs.parsers.STR_NA_VALUES)
    na_values = {c: na_texts for c in header if c not in present}
    try:
        df = pd.read_csv(csv, dtype={c: str for c in present}, keep_default_na=False, na_values=na_values,
                         **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise KitError(f"{csv}: not a readable CSV ({str(exc).strip().splitlines()[0]})") from None
    if not isinstance(df.index, pd.RangeIndex) and "index_col" not in kwargs:
        # pandas reads rows one field longer than the header (a comma at each row's end) as index + columns,
        # every column then one to the left of its name
        raise KitError(ragged_rows(Path(csv), len(header)))
    return df


def csv_records(csv: Path) -> Iterator[tuple[int, list[str]]]:
    """(file line where it starts, fields) of each record of ``csv`` as pandas counts them: the header first,
    blank lines skipped, a quoted field free to span lines."""
    with open(csv, newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csvlib.reader(fh)
        end = 0
        for row in reader:
            start, end = end + 1, reader.line_num
            if row and not (len(row) == 1 and not row[0].strip()):
                yield start, row


def ragged_rows(csv: Path, n_header: int) -> str:
    """One line naming the rows of ``csv`` that have more fields than its header's ``n_header``."""
    lines = [(line, len(row)) for line, row in itertools.islice(csv_records(csv), 1, None) if len(row) > n_header]
    if not lines:
        return f"{csv}: rows have more fields than the header's {n_header}"
    shown = ", ".join(str(line) for line, _ in lines[:5]) + (f" and {len(lines) - 5} more" if len(lines) > 5 else "")
    counts = sorted({n for _, n in lines})
    return (f"{csv}: {len(lines)} row{'s' if len(lines) > 1 else ''} with {' or '.join(map(str, counts))} fields, "
            f"the header has {n_header} (a comma at the end of the row?): line{'s' if len(lines) > 1 else ''} {shown}")


def read_csv(csv: Path, required: list[str], id_col: str) -> pd.DataFrame:
    """A CSV with ``required`` columns and unique, non-empty ids (ids kept as strings); its index is the record
    number (0 for the first data row), which ``csv_line`` turns into the file line."""
    if not csv.is_file():
        raise KitError(f"{csv}: file not found")
    df = read_csv_ids(csv, [id_col])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise KitError(f"{csv}: missing column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
    ids = df[id_col]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise KitError(f"{csv}: line {csv_line(csv, df, empty)}: empty {id_col!r}")
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = df.index[dup][0]
        again = df.index[dup & (ids == ids[first])][1]
        lines = _file_lines(csv, [first, again])
        raise KitError(f"{csv}: line {lines[1]}: duplicate {id_col} {ids[first]!r} (also on line {lines[0]})")
    return df.reset_index(drop=True)


def csv_line(csv: Path, df: pd.DataFrame, mask: pd.Series) -> int:
    """File line of the first row of ``df`` (read by ``read_csv``) where ``mask`` holds."""
    return _file_lines(csv, [int(df.index[np.asarray(mask)][0])])[0]


def _file_lines(csv: Path, records: list[int]) -> list[int]:
    """The file line where each data record (0 for the first) starts: blank lines and quoted line breaks
    make it more than record + 2, and it is read only when a message needs it."""
    wanted = {r + 1 for r in records}  # csv_records counts the header as record 0
    found = {}
    for k, (line, _) in enumerate(csv_records(csv)):
        if k in wanted:
            found[k] = line
            if len(found) == len(wanted):
                break
    return [found.get(r + 1, r + 2) for r in records]


def class_labels(csv: Path, df: pd.DataFrame, col: str, classes: list[str]) -> np.ndarray:
    """Class index per row of ``df[col]``; a missing or unknown label names its line."""
    values = df[col]
    if values.isna().any():
        raise KitError(f"{csv}: line {csv_line(csv, df, values.isna())}: missing label in column {col!r}")
    text = values.map(label_text)
    index = {c: i for i, c in enumerate(classes)}
    bad = ~text.isin(list(index))
    if bad.any():
        raise KitError(f"{csv}: line {csv_line(csv, df, bad)}: label {text[bad].iloc[0]!r} in column {col!r} "
                       f"is not one of {', '.join(classes)}")
    return text.map(index).to_numpy(dtype=np.int64)


def label_text(value: object) -> str:
    """A label as the text kit compares with class names."""
    # 1.0 and "1" are the same label: pandas reads an int column with a gap as float.
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def find_images(df: pd.DataFrame, ids: pd.Series, folders: list[Path], csv: Path, skip_bad: bool,
                 skipped: list[dict], suffixes: tuple[str, ...] = IMAGE_EXTENSIONS) -> pd.DataFrame:
    """Attach ``path`` for each id found in ``folders`` (id, or id + a known image suffix)."""
    index: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            with os.scandir(folder) as it:
                for entry in it:
                    if file_like(entry) and not entry.name.startswith("."):
                        index.setdefault(entry.name, Path(entry.path))
                        stem, ext = os.path.splitext(entry.name)
                        if ext.lower() in suffixes:
                            index.setdefault(stem, Path(entry.path))
    def locate(i: str) -> str | None:
        if i in index:
            return absolute(index[i])
        # Ids that carry a sub-folder ("benign/0001.jpg") are looked up below the folders directly.
        for folder in folders:
            for cand in (folder / i, *(folder / f"{i}{ext}" for ext in suffixes)):
                if file_like(cand):
                    return absolute(cand)
        return None

    # An id is a name below the image folder: an absolute path or ".." would read images from anywhere.
    outside = ids.astype(str).map(lambda i: Path(i).is_absolute() or ".." in Path(i).parts or i.startswith("~"))
    if outside.any():
        raise KitError(f"{csv}: line {csv_line(csv, df, outside)}: image {ids[outside].iloc[0]!r} is not a name below "
                       f"{folders[0]} (absolute paths and '..' are refused)")
    paths = ids.astype(str).map(locate)
    missing = paths.isna()
    if missing.any():
        where = " or ".join(str(f) for f in folders)
        if not skip_bad:
            first = ids[missing].iloc[0]
            raise KitError(f"{csv}: line {csv_line(csv, df, missing)}: image {first!r} not found in {where}")
        for i in ids[missing]:
            skipped.append({"path": str(folders[0] / str(i)), "reason": f"listed in {csv.name} but not found"})
    return df.assign(path=paths)[~missing]  # the index stays the record number: csv_line finds its file line


def category_tables(frames: list[pd.DataFrame], columns: list[str]) -> dict[str, list[str]]:
    """Sorted code table per categorical column over all ``frames`` (missing values get no code)."""
    cats = {}
    for col in columns:
        values = set()
        for df in frames:
            if col in df.columns:
                values |= {str(v) for v in df[col].dropna().unique()}
        cats[col] = sorted(values)
    return cats


def source_table(df: pd.DataFrame, id_col: str, target: np.ndarray, group: pd.Series, numeric: list[str],
            categorical: list[str]) -> pd.DataFrame:
    """The Source table: kit's columns first, then metadata."""
    import pandas as pd
    table = pd.DataFrame({
        "image_name": df[id_col].astype(str).to_numpy(),
        "path": df["path"].astype(str).to_numpy(),
        "target": np.asarray(target, dtype=np.int64),
        "group": group.astype(str).to_numpy(),
    })
    for col in numeric:
        table[col] = pd.to_numeric(df[col], errors="coerce").astype(np.float32).to_numpy()
    for col in categorical:
        table[col] = df[col].map(lambda v: None if pd.isna(v) else str(v)).to_numpy(dtype=object)
    return table


def file_like(entry: "Path | os.DirEntry") -> bool:
    """Whether ``entry`` is a file, or a symbolic link that leads to no folder: a loop or a dangling link is an image
    that cannot be read, named (or skipped and listed with --skip-bad) as any bad image, never silently left out."""
    try:
        return entry.is_file() or (entry.is_symlink() and not entry.is_dir())
    except OSError as exc:  # os.DirEntry raises on a symbolic link loop; a name too long for the system is no file
        return exc.errno == errno.ELOOP


def absolute(path: Path) -> str:
    """``path`` resolved, or only made absolute where it cannot be (a symbolic link loop)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # RuntimeError: pathlib's "Symlink loop" before Python 3.13
        return os.path.abspath(path)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files and other suffixes ignored)."""
    if not folder.is_dir():
        raise KitError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir()
                  if file_like(p) and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def class_dirs(folder: Path) -> list[Path]:
    """Sub-folders that can be classes: not hidden, and not kit's own output (records, runs) kept inside the download."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and not is_kit_output(d))


def is_kit_output(folder: Path) -> bool:
    """Whether ``folder`` holds what kit writes (a ``manifest.json``, ``.tfrec`` shards, a run's ``config.toml``)."""
    try:
        return ((folder / "manifest.json").is_file() or (folder / RUN_CONFIG).is_file()
                or any(p.suffix == ".tfrec" for p in folder.iterdir()))
    except OSError:
        return False


def class_images(d: Path) -> list[Path]:
    """The images of class folder ``d``, in its sub-folders too (a nested image is never silently left out)."""
    found = []
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).parts
        if (file_like(p) and p.suffix.lower() in IMAGE_EXTENSIONS and not any(x.startswith(".") for x in rel)
                and not any(is_kit_output(d.joinpath(*rel[:k])) for k in range(1, len(rel)))):
            found.append(p)
    return found


def class_root(root: Path, test: bool) -> Path | None:
    """The folder whose subfolders are the classes (or that holds test images), if any."""
    names = ("Test", "test") if test else ("Train", "train")
    for name in names:
        cand = root / name
        if cand.is_dir() and (class_dirs(cand) or (test and image_files(cand))):
            return cand
    if not test and not (root / "Test").is_dir() and not (root / "test").is_dir():
        dirs = class_dirs(root)
        # a class folder may hold sub-folders of its own images (Benign/deeper/x.jpg), never only sub-folders
        if dirs and all(image_files(d) or not class_dirs(d) for d in dirs) and any(image_files(d) for d in dirs):
            return root
    return None

