"""Read a competition download (CSV + images, or class folders) into one table, through the competition registry.

Every layout becomes a ``Source`` whose ``table`` has one row per image with the columns
``image_name`` (the id exactly as the competition writes it), ``path`` (absolute), ``target`` (class
index, -1 when unlabelled), ``group`` (patient or lesion id; the image id when the layout has none),
then metadata columns. Layouts (each owned by its module in ``kit.data.competitions``):

    siim      train.csv / test.csv + jpeg/train/, jpeg/test/          group = patient_id
    ham10000  HAM10000_metadata.csv + HAM10000_images_part_{1,2}/     group = lesion_id
    pcam      train_labels.csv + train/<id>.tif; test/<id>.tif        group = id
    isic2024  {train,test}-metadata.csv + {train,test}-image.hdf5       group = patient_id
              (or {train,test}-image/image/<isic_id>.jpg)
    folders   [Train|train/]<class>/*.jpg, [Test|test/]<class>/*.jpg  (class names may hold spaces)
    csv       any CSV with --id-col, --label-col, [--group-col], --images DIR

``layout="auto"`` recognises the competitions' layouts and class folders from their files. Problems with the
input raise ``KitError`` naming the file, line or column. Only pandas is needed here (no TensorFlow). The CSV
helpers other modules use (``read_csv_ids``, ``csv_records``, ``ragged_rows``) live in the reading toolkit and
are named here too.
"""

from __future__ import annotations

from pathlib import Path

from kit.data import competitions
from kit.data.competitions._read import (IMAGE_EXTENSIONS, Source, csv_records, is_kit_output, ragged_rows,
                                    read_csv_ids, unwrap)
from kit.core.errors import KitError

__all__ = ["IMAGE_EXTENSIONS", "LAYOUTS", "Source", "csv_records", "detect_layout", "is_kit_output",
           "load_source", "ragged_rows", "read_csv_ids", "train_split_of"]

LAYOUTS = tuple(competitions.layouts())  # the registry's readers, then the generic folders and csv


def detect_layout(path: str | Path) -> str:
    """The layout of the download at ``path`` (a folder, or one of its CSV files)."""
    p = Path(path)
    if not p.exists():
        raise KitError(f"{p}: no such file or folder")
    found = competitions.recognise(p)
    if found is not None:
        return found.name
    if p.is_file():
        raise KitError(f"{p}: not a CSV file or a folder; pass the competition folder")
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

    ``layout`` is a layout name, a competition's name (its layout) or ``auto``. Example:
        >>> src = load_source("data/siim-isic-melanoma-classification")
        >>> src.table[["image_name", "target", "group"]].head()
    """
    path = unwrap(Path(path))
    if layout == "auto":
        layout = detect_layout(path)
    reader = competitions.layout(layout)
    if reader is None:
        raise KitError(f"--layout {layout}: unknown layout; known: auto, {', '.join(competitions.layouts())}")
    src = reader.read(Path(path), id_col=id_col, label_col=label_col, group_col=group_col,
                      images=Path(images) if images else None, test=test, skip_bad=skip_bad)
    if src.table.empty:
        raise KitError(f"{path}: no images found for the {'test' if test else 'train'} split")
    return src


def train_split_of(test: Source) -> Source | None:
    """The train split of the download ``test`` was read from, or None where kit finds none.

    Only downloads whose layout keeps both splits together (siim, pcam, isic2024, folders) hold one
    (HAM10000 has no test split; a csv layout names one CSV). Missing train images are left out rather
    than raised: the caller only compares bytes, and a broken train split must not stop the test split
    from being written.
    """
    lay = competitions.layout(test.layout)
    if lay is None or not lay.train_beside_test or not test.root:
        return None
    try:
        return load_source(test.root, layout=test.layout, skip_bad=True)
    except (KitError, OSError):
        return None
