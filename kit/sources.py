"""Competition layouts: read a download (CSV + images, or class folders) into one table.

Every layout becomes a ``Source`` whose ``table`` has one row per image with the columns
``image_name`` (the id exactly as the competition writes it), ``path`` (absolute), ``target`` (class
index, -1 when unlabelled), ``group`` (patient or lesion id; the image id when the layout has none),
then metadata columns. Layouts:

    siim      train.csv / test.csv + jpeg/train/, jpeg/test/          group = patient_id
    ham10000  HAM10000_metadata.csv + HAM10000_images_part_{1,2}/     group = lesion_id
    pcam      train_labels.csv + train/<id>.tif; test/<id>.tif        group = id
    isic2024  {train,test}-metadata.csv + {train,test}-image.hdf5       group = patient_id
              (or {train,test}-image/image/<isic_id>.jpg)
    folders   [Train|train/]<class>/*.jpg, [Test|test/]<class>/*.jpg  (class names may hold spaces)
    csv       any CSV with --id-col, --label-col, [--group-col], --images DIR

``layout="auto"`` recognises the first four from their files. Problems with the input raise
``KitError`` naming the file, line or column. Only pandas is needed here (no TensorFlow).
"""

from __future__ import annotations

import csv as csvlib
import errno
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd

from kit import competitions
from kit.errors import KitError

LAYOUTS = tuple(competitions.layouts())  # the registry's readers, then the generic folders and csv
# Names kit.synth uses for the two class-folder competitions.
_ALIASES = {"isic9": "folders", "melanoma10k": "folders"}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")
HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
SIIM_CLASSES = ["benign", "malignant"]
SIIM_TRAIN_REQUIRED = ["image_name", "patient_id", "target"]
SIIM_TEST_REQUIRED = ["image_name", "patient_id"]
# Columns that restate the label (diagnosis, benign_malignant, dx_type) never become model inputs.
SIIM_NUMERIC, SIIM_CATEGORICAL = ["age_approx"], ["sex", "anatom_site_general_challenge"]
HAM_NUMERIC, HAM_CATEGORICAL = ["age"], ["sex", "localization"]
_MAX_CATEGORIES = 50


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


def detect_layout(path: str | Path) -> str:
    """The layout of the download at ``path`` (a folder, or one of its CSV files)."""
    p = Path(path)
    if not p.exists():
        raise KitError(f"{p}: no such file or folder")
    if p.is_file():
        name = p.name
        if name == "HAM10000_metadata.csv":
            return "ham10000"
        if name == "train_labels.csv":
            return "pcam"
        if name in ("train-metadata.csv", "test-metadata.csv"):
            return "isic2024"
        if name.lower().endswith(".csv"):
            cols = set(_header(p))
            if {"image_name", "patient_id"} <= cols:
                return "siim"
            return "csv"
        raise KitError(f"{p}: not a CSV file or a folder; pass the competition folder")
    if (p / "HAM10000_metadata.csv").is_file():
        return "ham10000"
    if (p / "train-metadata.csv").is_file() or (p / "test-metadata.csv").is_file():
        return "isic2024"
    if (p / "train_labels.csv").is_file() or ((p / "sample_submission.csv").is_file() and (p / "train").is_dir()
                                              and any(p.joinpath("train").glob("*.tif"))):
        return "pcam"
    if (p / "train.csv").is_file() and {"image_name", "patient_id"} <= set(_header(p / "train.csv")):
        return "siim"
    if (p / "test.csv").is_file() and {"image_name", "patient_id"} <= set(_header(p / "test.csv")):
        return "siim"
    if _class_root(p, test=False) is not None or _class_root(p, test=True) is not None:
        return "folders"
    seen = sorted(x.name for x in p.iterdir())[:12]
    raise KitError(
        f"{p}: cannot recognise the layout (files: {', '.join(seen) or 'none'}); "
        "pass --layout csv with --id-col/--label-col/--images, or --layout folders"
    )


def load_source(
    path: str | Path,
    layout: str = "auto",
    id_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    images: str | Path | None = None,
    test: bool = False,
    skip_bad: bool = False,
) -> Source:
    """Read the train (or ``test``) split of a competition download into a ``Source``.

    Example:
        >>> src = load_source("data/siim-isic-melanoma-classification")
        >>> src.table[["image_name", "target", "group"]].head()
    """
    layout = _ALIASES.get(layout, layout)
    path = _unwrap(Path(path))
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise KitError(f"--layout {layout}: unknown layout; known: auto, {', '.join(LAYOUTS)}")
    reader = {"siim": _siim, "ham10000": _ham, "pcam": _pcam, "isic2024": _isic2024, "folders": _folders,
              "csv": _csv}[layout]
    src = reader(Path(path), id_col=id_col, label_col=label_col, group_col=group_col,
                 images=Path(images) if images else None, test=test, skip_bad=skip_bad)
    if src.table.empty:
        raise KitError(f"{path}: no images found for the {'test' if test else 'train'} split")
    return src


# Layouts whose download holds a train split beside the test split, both found from ``Source.root``.
_TRAIN_BESIDE_TEST = ("siim", "pcam", "isic2024", "folders")


def train_split_of(test: Source) -> Source | None:
    """The train split of the download ``test`` was read from, or None where kit finds none.

    Only siim, pcam and folders downloads hold both splits (HAM10000 has no test split; a csv
    layout names one CSV). Missing train images are left out rather than raised: the caller only
    compares bytes, and a broken train split must not stop the test split from being written.
    """
    if test.layout not in _TRAIN_BESIDE_TEST or not test.root:
        return None
    try:
        return load_source(test.root, layout=test.layout, skip_bad=True)
    except (KitError, OSError):
        return None


# --- helpers -------------------------------------------------------------------------------------


def _unwrap(path: Path) -> Path:
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


def _header(csv: Path) -> list[str]:
    try:
        return list(pd.read_csv(csv, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise KitError(f"{csv}: not a readable CSV ({str(exc).splitlines()[0]})") from None


# pandas' own list of the texts it reads as missing ("nan", "NA", "None", "null", "N/A", "" ...)
_NA_TEXTS = sorted(pd._libs.parsers.STR_NA_VALUES)


def read_csv_ids(csv: str | os.PathLike, id_cols: list[str], **kwargs: Any) -> pd.DataFrame:
    """``pd.read_csv`` with ``id_cols`` kept as the exact strings of the file; KitError naming the file when unreadable.

    An image may be called ``nan``, ``NA``, ``None`` or ``null``: pandas reads those as missing in any
    column, so id columns get no missing-value texts at all while other columns keep pandas' defaults.
    """
    header = _header(Path(csv))
    present = [c for c in id_cols if c in header]
    na_values = {c: _NA_TEXTS for c in header if c not in present}
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


def _read_csv(csv: Path, required: list[str], id_col: str) -> pd.DataFrame:
    """A CSV with ``required`` columns and unique, non-empty ids (ids kept as strings); its index is the record
    number (0 for the first data row), which ``_line`` turns into the file line."""
    if not csv.is_file():
        raise KitError(f"{csv}: file not found")
    df = read_csv_ids(csv, [id_col])
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise KitError(f"{csv}: missing column {missing[0]!r} (columns: {', '.join(map(str, df.columns))})")
    ids = df[id_col]
    empty = ids.isna() | (ids.astype(str).str.strip() == "")
    if empty.any():
        raise KitError(f"{csv}: line {_line(csv, df, empty)}: empty {id_col!r}")
    dup = ids.duplicated(keep=False)
    if dup.any():
        first = df.index[dup][0]
        again = df.index[dup & (ids == ids[first])][1]
        lines = _file_lines(csv, [first, again])
        raise KitError(f"{csv}: line {lines[1]}: duplicate {id_col} {ids[first]!r} (also on line {lines[0]})")
    return df.reset_index(drop=True)


def _line(csv: Path, df: pd.DataFrame, mask: pd.Series) -> int:
    """File line of the first row of ``df`` (read by ``_read_csv``) where ``mask`` holds."""
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


def _labels(csv: Path, df: pd.DataFrame, col: str, classes: list[str]) -> np.ndarray:
    """Class index per row of ``df[col]``; a missing or unknown label names its line."""
    values = df[col]
    if values.isna().any():
        raise KitError(f"{csv}: line {_line(csv, df, values.isna())}: missing label in column {col!r}")
    text = values.map(_label_text)
    index = {c: i for i, c in enumerate(classes)}
    bad = ~text.isin(list(index))
    if bad.any():
        raise KitError(f"{csv}: line {_line(csv, df, bad)}: label {text[bad].iloc[0]!r} in column {col!r} "
                       f"is not one of {', '.join(classes)}")
    return text.map(index).to_numpy(dtype=np.int64)


def _label_text(value: object) -> str:
    # 1.0 and "1" are the same label: pandas reads an int column with a gap as float.
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def _find_images(df: pd.DataFrame, ids: pd.Series, folders: list[Path], csv: Path, skip_bad: bool,
                 skipped: list[dict], suffixes: tuple[str, ...] = IMAGE_EXTENSIONS) -> pd.DataFrame:
    """Attach ``path`` for each id found in ``folders`` (id, or id + a known image suffix)."""
    index: dict[str, Path] = {}
    for folder in folders:
        if folder.is_dir():
            with os.scandir(folder) as it:
                for entry in it:
                    if _file_like(entry) and not entry.name.startswith("."):
                        index.setdefault(entry.name, Path(entry.path))
                        stem, ext = os.path.splitext(entry.name)
                        if ext.lower() in suffixes:
                            index.setdefault(stem, Path(entry.path))
    def locate(i: str) -> str | None:
        if i in index:
            return _absolute(index[i])
        # Ids that carry a sub-folder ("benign/0001.jpg") are looked up below the folders directly.
        for folder in folders:
            for cand in (folder / i, *(folder / f"{i}{ext}" for ext in suffixes)):
                if _file_like(cand):
                    return _absolute(cand)
        return None

    # An id is a name below the image folder: an absolute path or ".." would read images from anywhere.
    outside = ids.astype(str).map(lambda i: Path(i).is_absolute() or ".." in Path(i).parts or i.startswith("~"))
    if outside.any():
        raise KitError(f"{csv}: line {_line(csv, df, outside)}: image {ids[outside].iloc[0]!r} is not a name below "
                       f"{folders[0]} (absolute paths and '..' are refused)")
    paths = ids.astype(str).map(locate)
    missing = paths.isna()
    if missing.any():
        where = " or ".join(str(f) for f in folders)
        if not skip_bad:
            first = ids[missing].iloc[0]
            raise KitError(f"{csv}: line {_line(csv, df, missing)}: image {first!r} not found in {where}")
        for i in ids[missing]:
            skipped.append({"path": str(folders[0] / str(i)), "reason": f"listed in {csv.name} but not found"})
    return df.assign(path=paths)[~missing]  # the index stays the record number: _line finds its file line


def _categories(frames: list[pd.DataFrame], columns: list[str]) -> dict[str, list[str]]:
    """Sorted code table per categorical column over all ``frames`` (missing values get no code)."""
    cats = {}
    for col in columns:
        values = set()
        for df in frames:
            if col in df.columns:
                values |= {str(v) for v in df[col].dropna().unique()}
        cats[col] = sorted(values)
    return cats


def _finish(df: pd.DataFrame, id_col: str, target: np.ndarray, group: pd.Series, numeric: list[str],
            categorical: list[str]) -> pd.DataFrame:
    """The Source table: kit's columns first, then metadata."""
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


# --- layouts -------------------------------------------------------------------------------------


def _siim(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    root = path.parent if path.is_file() else path
    train_csv, test_csv = root / "train.csv", root / "test.csv"
    csv = path if path.is_file() else (test_csv if test else train_csv)
    labelled = not test
    df = _read_csv(csv, SIIM_TEST_REQUIRED if test else SIIM_TRAIN_REQUIRED, "image_name")
    folders = [images] if images else [root / "jpeg" / ("test" if test else "train"), root / ("test" if test else "train")]
    skipped: list[dict] = []
    df = _find_images(df, df["image_name"], folders, csv, skip_bad, skipped)
    target = _labels(csv, df, "target", ["0", "1"]) if labelled else np.full(len(df), -1)
    # A missing patient_id must not merge strangers into one group: the image is its own group.
    group = df["patient_id"].where(df["patient_id"].notna(), df["image_name"])
    numeric = [c for c in SIIM_NUMERIC if c in df.columns]
    categorical = [c for c in SIIM_CATEGORICAL if c in df.columns]
    others = [read_csv_ids(f, ["image_name"]) for f in (train_csv, test_csv) if f.is_file() and f != csv]
    table = _finish(df, "image_name", target, group, numeric, categorical)
    return Source(table, SIIM_CLASSES, "siim", "image_name", numeric, categorical, labelled,
                  _categories([df, *others], categorical), skipped, str(root), table_file=str(csv))


def _ham(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    root = path.parent if path.is_file() else path
    if test:
        raise KitError(f"{root}: HAM10000 ships one labelled set, no test split; write it without --test")
    csv = path if path.is_file() else root / "HAM10000_metadata.csv"
    df = _read_csv(csv, ["lesion_id", "image_id", "dx"], "image_id")
    folders = [images] if images else [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2",
                                      root / "ham10000_images_part_1", root / "ham10000_images_part_2"]
    skipped: list[dict] = []
    df = _find_images(df, df["image_id"], folders, csv, skip_bad, skipped)
    target = _labels(csv, df, "dx", HAM_CLASSES)
    group = df["lesion_id"].where(df["lesion_id"].notna(), df["image_id"])
    numeric = [c for c in HAM_NUMERIC if c in df.columns]
    categorical = [c for c in HAM_CATEGORICAL if c in df.columns]
    table = _finish(df, "image_id", target, group, numeric, categorical)
    return Source(table, list(HAM_CLASSES), "ham10000", "image_id", numeric, categorical, True,
                  _categories([df], categorical), skipped, str(root), table_file=str(csv))


def _pcam(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    root = path.parent if path.is_file() else path
    skipped: list[dict] = []
    if test:
        folder = images or root / "test"
        sample = root / "sample_submission.csv"
        if sample.is_file():
            # The sample's id order is the submission's order: keep it.
            df = _read_csv(sample, ["id"], "id")
            df = _find_images(df, df["id"], [folder], sample, skip_bad, skipped, (".tif", ".tiff"))
        else:
            files = _image_files(folder)
            df = pd.DataFrame({"id": [f.stem for f in files], "path": [_absolute(f) for f in files]})
        target = np.full(len(df), -1)
        labelled = False
    else:
        csv = path if path.is_file() else root / "train_labels.csv"
        df = _read_csv(csv, ["id", "label"], "id")
        df = _find_images(df, df["id"], [images or root / "train"], csv, skip_bad, skipped, (".tif", ".tiff"))
        target = _labels(csv, df, "label", ["0", "1"])
        labelled = True
    table = _finish(df, "id", target, df["id"], [], [])
    return Source(table, ["0", "1"], "pcam", "id", [], [], labelled, {}, skipped, str(root))


# ISIC 2024: the train CSV's 55 columns less the test CSV's 44. Used when the download holds one split only.
ISIC2024_TRAIN_ONLY = ["target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
                       "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"]
ISIC2024_CATEGORICAL = ["sex", "anatom_site_general", "image_type", "tbp_tile_type", "tbp_lv_location",
                        "tbp_lv_location_simple", "attribution"]
# Identifiers and licence text: not features.
ISIC2024_NOT_FEATURES = ["isic_id", "patient_id", "copyright_license"]


def _isic2024(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    root = path.parent if path.is_file() else path
    split = "test" if test else "train"
    csv = root / f"{split}-metadata.csv"
    df = _read_csv(csv, ["isic_id", "patient_id"] + ([] if test else ["target"]), "isic_id")
    other = root / f"{'train' if test else 'test'}-metadata.csv"
    train_cols = _header(root / "train-metadata.csv") if (root / "train-metadata.csv").is_file() else list(df.columns)
    test_cols = _header(root / "test-metadata.csv") if (root / "test-metadata.csv").is_file() else None
    train_only = ([c for c in train_cols if c not in test_cols] if test_cols is not None
                  else [c for c in ISIC2024_TRAIN_ONLY if c in train_cols])
    skipped: list[dict] = []
    df = _isic2024_images(df, root, split, images, csv, skip_bad, skipped)
    target = np.full(len(df), -1) if test else _labels(csv, df, "target", ["0", "1"])
    group_by = group_col or "patient_id"
    if group_by not in df.columns:
        raise KitError(f"{csv}: no column {group_by!r} to group folds by")
    group = df[group_by].where(df[group_by].notna(), df["isic_id"])
    features = [c for c in df.columns if c not in train_only and c not in ISIC2024_NOT_FEATURES and c != "path"]
    categorical = [c for c in features if c in ISIC2024_CATEGORICAL or df[c].dtype == object]
    numeric = [c for c in features if c not in categorical]
    others = [read_csv_ids(other, ["isic_id"], usecols=lambda c: c in categorical)] if other.is_file() else []
    table = _finish(df, "isic_id", target, group, numeric, categorical)
    return Source(table, SIIM_CLASSES, "isic2024", "isic_id", numeric, categorical, not test,
                  _categories([df, *others], categorical), skipped, str(root), train_only, str(csv))


def _isic2024_images(df: pd.DataFrame, root: Path, split: str, images: Path | None, csv: Path, skip_bad: bool,
                     skipped: list[dict]) -> pd.DataFrame:
    """Attach each isic_id's image: a member of {split}-image.hdf5, else {split}-image/image/<isic_id>.jpg."""
    h5 = images if images and images.is_file() else root / f"{split}-image.hdf5"
    if not h5.is_file():
        folders = [images] if images else [root / f"{split}-image" / "image", root / f"{split}-image"]
        return _find_images(df, df["isic_id"], folders, csv, skip_bad, skipped, (".jpg", ".jpeg"))
    import h5py

    try:
        with h5py.File(h5, "r") as f:
            keys = set(f.keys())
    except OSError as exc:
        raise KitError(f"{h5}: not a readable HDF5 file ({exc})") from None
    ids = df["isic_id"].astype(str)
    missing = ~ids.isin(keys)
    if missing.any() and not skip_bad:
        raise KitError(f"{csv}: line {_line(csv, df, missing)}: isic_id {ids[missing].iloc[0]!r} has no image in {h5.name}")
    unlisted = sorted(keys - set(ids))
    if unlisted:
        raise KitError(f"{h5}: key {unlisted[0]!r} has no row in {csv.name} ({len(unlisted)} such keys)")
    for i in ids[missing]:
        skipped.append({"path": f"{h5}::{i}", "reason": f"listed in {csv.name} but not in {h5.name}"})
    from kit.imaging import hdf5_member

    resolved = str(h5.resolve())
    return df.assign(path=[hdf5_member(resolved, i) for i in ids])[~missing]


def _file_like(entry: "Path | os.DirEntry") -> bool:
    """Whether ``entry`` is a file, or a symbolic link that leads to no folder: a loop or a dangling link is an image
    that cannot be read, named (or skipped and listed with --skip-bad) as any bad image, never silently left out."""
    try:
        return entry.is_file() or (entry.is_symlink() and not entry.is_dir())
    except OSError as exc:  # os.DirEntry raises on a symbolic link loop; a name too long for the system is no file
        return exc.errno == errno.ELOOP


def _absolute(path: Path) -> str:
    """``path`` resolved, or only made absolute where it cannot be (a symbolic link loop)."""
    try:
        return str(path.resolve())
    except (OSError, RuntimeError):  # RuntimeError: pathlib's "Symlink loop" before Python 3.13
        return os.path.abspath(path)


def _image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name (hidden files and other suffixes ignored)."""
    if not folder.is_dir():
        raise KitError(f"{folder}: folder not found")
    return sorted(p for p in folder.iterdir()
                  if _file_like(p) and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS)


def _class_dirs(folder: Path) -> list[Path]:
    """Sub-folders that can be classes: not hidden, and not kit's own output (records, runs) kept inside the download."""
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".") and not is_kit_output(d))


def is_kit_output(folder: Path) -> bool:
    """Whether ``folder`` holds what kit writes (a ``manifest.json``, ``.tfrec`` shards, a run's ``config.toml``)."""
    try:
        return ((folder / "manifest.json").is_file() or (folder / "config.toml").is_file()
                or any(p.suffix == ".tfrec" for p in folder.iterdir()))
    except OSError:
        return False


def _class_images(d: Path) -> list[Path]:
    """The images of class folder ``d``, in its sub-folders too (a nested image is never silently left out)."""
    found = []
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).parts
        if (_file_like(p) and p.suffix.lower() in IMAGE_EXTENSIONS and not any(x.startswith(".") for x in rel)
                and not any(is_kit_output(d.joinpath(*rel[:k])) for k in range(1, len(rel)))):
            found.append(p)
    return found


def _class_root(root: Path, test: bool) -> Path | None:
    """The folder whose subfolders are the classes (or that holds test images), if any."""
    names = ("Test", "test") if test else ("Train", "train")
    for name in names:
        cand = root / name
        if cand.is_dir() and (_class_dirs(cand) or (test and _image_files(cand))):
            return cand
    if not test and not (root / "Test").is_dir() and not (root / "test").is_dir():
        dirs = _class_dirs(root)
        # a class folder may hold sub-folders of its own images (Benign/deeper/x.jpg), never only sub-folders
        if dirs and all(_image_files(d) or not _class_dirs(d) for d in dirs) and any(_image_files(d) for d in dirs):
            return root
    return None


def _folders(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    if not path.is_dir():
        raise KitError(f"{path}: --layout folders needs a folder of class folders")
    train_root = _class_root(path, test=False)
    split_root = _class_root(path, test=True) if test else train_root
    if split_root is None:
        split = "Test/ or test/" if test else "Train/ or train/ (or class folders)"
        raise KitError(f"{path}: no {split} folder with images")
    dirs = _class_dirs(split_root)
    labelled = bool(dirs)
    # Test labels must use the training folder's class order.
    classes = [d.name for d in _class_dirs(train_root)] if train_root is not None else [d.name for d in dirs]
    rows = []
    if labelled:
        for d in dirs:
            if d.name not in classes:
                raise KitError(f"{d}: class folder not among the training classes ({', '.join(classes)})")
            images = _class_images(d)
            if not images and not test:
                raise KitError(f"{d}: empty class folder (no {'/'.join(IMAGE_EXTENSIONS)} images); remove it or "
                               "add its images")
            rows.extend((f, classes.index(d.name)) for f in images)
        if not test and len(classes) < 2:
            raise KitError(f"{split_root}: one class folder ({classes[0]}); a classifier needs at least two")
    else:
        rows = [(f, -1) for f in _image_files(split_root)]
    if not rows:
        raise KitError(f"{split_root}: empty folder (no {'/'.join(IMAGE_EXTENSIONS)} images)")
    files = [f for f, _ in rows]
    stems = [f.stem for f in files]
    # The file stem is the id when it is unique (as in the real downloads); otherwise the path
    # below the split folder, so that two classes' "0001.jpg" stay two images.
    if len(set(stems)) == len(stems):
        ids = stems
    else:
        ids = [f.relative_to(split_root).with_suffix("").as_posix() for f in files]
    table = pd.DataFrame({
        "image_name": ids,
        "path": [_absolute(f) for f in files],
        "target": np.array([t for _, t in rows], dtype=np.int64),
        "group": ids,
    })
    return Source(table, classes, "folders", "id", [], [], labelled, {}, [], str(path))


def _csv(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    if not path.is_file():
        raise KitError(f"{path}: --layout csv needs the CSV file itself (and --images DIR)")
    if not id_col:
        raise KitError(f"{path}: --layout csv needs --id-col (columns: {', '.join(_header(path))})")
    labelled = bool(label_col) and not test
    required = [id_col] + ([label_col] if labelled else []) + ([group_col] if group_col else [])
    df = _read_csv(path, required, id_col)
    skipped: list[dict] = []
    df = _find_images(df, df[id_col], [images or path.parent], path, skip_bad, skipped)
    if labelled:
        if df[label_col].isna().any():
            raise KitError(f"{path}: line {_line(path, df, df[label_col].isna())}: missing label in column {label_col!r}")
        values = df[label_col].map(_label_text)
        classes = sorted(values.unique(), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
        target = _labels(path, df, label_col, classes)
    else:
        classes, target = [], np.full(len(df), -1)
    group = df[group_col].where(df[group_col].notna(), df[id_col]) if group_col else df[id_col]
    used = {id_col, label_col, group_col, "path"}
    numeric, categorical = [], []
    for col in df.columns:
        if col in used:
            continue
        if pd.api.types.is_numeric_dtype(df[col]):
            numeric.append(col)
        elif df[col].nunique() <= _MAX_CATEGORIES:
            categorical.append(col)
    table = _finish(df, id_col, target, group, numeric, categorical)
    return Source(table, classes, "csv", id_col, numeric, categorical, labelled,
                  _categories([df], categorical), skipped, str(path.parent), table_file=str(path))
