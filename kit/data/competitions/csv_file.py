"""A generic CSV: any CSV with ``--id-col``, ``--label-col``, ``[--group-col]`` and ``--images DIR``. Classes are
the label's values (numbers in numeric order, then text); other columns become metadata (numbers, or text with
at most 50 values). Scored by ROC AUC for two classes, balanced accuracy for more.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.data.competitions._base import Layout
from kit.data.competitions._read import (Source, category_tables, class_labels, csv_header, csv_line, find_images,
                                    label_text, read_csv, source_table)
from kit.core.errors import KitError

_MAX_CATEGORIES = 50


def recognise_file(path: Path) -> bool:
    """Whether ``path`` is a CSV file (the last guess: every other layout is tried first)."""
    return path.name.lower().endswith(".csv")


def read(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    """The rows of the CSV ``path`` with ``id_col`` (``label_col`` unless ``test``) and images below ``images``."""
    import pandas as pd
    if not path.is_file():
        raise KitError(f"{path}: --layout csv needs the CSV file itself (and --images DIR)")
    if not id_col:
        raise KitError(f"{path}: --layout csv needs --id-col (columns: {', '.join(csv_header(path))})")
    labelled = bool(label_col) and not test
    required = [id_col] + ([label_col] if labelled else []) + ([group_col] if group_col else [])
    df = read_csv(path, required, id_col)
    skipped: list[dict] = []
    df = find_images(df, df[id_col], [images or path.parent], path, skip_bad, skipped)
    if labelled:
        if df[label_col].isna().any():
            raise KitError(f"{path}: line {csv_line(path, df, df[label_col].isna())}: missing label in column {label_col!r}")
        values = df[label_col].map(label_text)
        classes = sorted(values.unique(), key=lambda v: (not v.lstrip("-").isdigit(), int(v) if v.lstrip("-").isdigit() else 0, v))
        target = class_labels(path, df, label_col, classes)
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
    table = source_table(df, id_col, target, group, numeric, categorical)
    return Source(table, classes, "csv", id_col, numeric, categorical, labelled,
                  category_tables([df], categorical), skipped, str(path.parent), table_file=str(path))


LAYOUT = Layout("csv", read, recognise_file, None, generic=True)
