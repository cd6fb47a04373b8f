"""The stack's features: the metadata columns both splits hold, the image runs' predictions, and per group
(patient or lesion) its size and each numeric column's z-score, ratio to the group mean and rank within the
group (``group_features``); and the checks on what may become a feature (``--drop``, constant or
test-missing columns). Plain numpy and pandas: no tree library."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from kit.core.errors import KitError

if TYPE_CHECKING:  # kit.data.records is imported where the records are read
    from kit.data import records

GROUP_STATS = ("z", "ratio", "rank")


def train_only_columns(train_metadata: "records.MetadataColumns", test_metadata: "records.MetadataColumns") -> list[str]:
    """Metadata columns of the train records that the test records lack: never features (ISIC 2024 ships 11)."""
    test = set(test_metadata.columns)
    return [c for c in train_metadata.columns if c not in test]


def _group_order(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """A stable order of ``codes``: numpy's radix sort on 16-bit keys, twice above 65,536 groups (LSD)."""
    if n_groups <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    low = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((codes[low] >> 16).astype(np.uint16), kind="stable")]


def group_features(values: np.ndarray, group: Sequence[Any] | np.ndarray,
                   names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-group features of ``values`` [n, c]: ``group_size``, then per column ``<name>__z`` (z-score in the
    group, population std, 0 where the group does not vary), ``__ratio`` (to the group mean; NaN when that
    mean is 0) and ``__rank`` (average rank / non-missing count in the group, as pandas' rank(pct=True)).

    Missing values (NaN) stay missing and are left out of the group's statistics. One factorisation and
    one bincount per statistic; each rank is one float sort plus a 16-bit radix sort by group.
    """
    x = np.asarray(values, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    # column-major in and out: every step below reads or writes one column, contiguous this way (row-major
    # strides each element onto its own cache line: 3x slower on 400,000 x 43)
    x = np.asfortranarray(x)
    n, c = x.shape
    codes, uniques = pd.factorize(np.asarray(group), sort=False)
    g = len(uniques)
    size = np.bincount(codes, minlength=g)
    out = np.empty((n, 1 + 3 * c), np.float64, order="F")
    out[:, 0] = size[codes]
    first = np.concatenate([[0], np.cumsum(size)[:-1]])  # start of each group in the group order
    new = np.empty(n, bool)
    for j in range(c):
        v = x[:, j]
        ok = ~np.isnan(v)
        count = np.bincount(codes, weights=ok, minlength=g)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(codes, weights=np.where(ok, v, 0.0), minlength=g) / count
            centred = v - mean[codes]  # NaN where v is missing, and so are z and ratio below
            sq = np.nan_to_num(centred * centred, copy=False, nan=0.0)
            std = np.sqrt(np.bincount(codes, weights=sq, minlength=g) / count)
            # statistics per group (few), then one gather and one product per row: a group whose values agree
            # to rounding has no spread, and its members are "usual" (z 0)
            flat = std <= 1e-12 * np.maximum(np.abs(mean), 1.0)
            inv_std = np.where(flat, 0.0, 1.0 / np.where(flat, 1.0, std))
            inv_mean = np.where(mean != 0, 1.0 / np.where(mean != 0, mean, 1.0), np.nan)
        np.multiply(centred, inv_std[codes], out=out[:, 1 + 3 * j])
        np.multiply(v, inv_mean[codes], out=out[:, 2 + 3 * j])
        # rank: sort by value (missing last), then stably by group, so each group's values come in order.
        # numpy sorts NaN 4x slower than numbers: missing becomes +inf first, unless +inf is a real value there
        key = v if ok.all() or np.isposinf(v).any() else np.where(ok, v, np.inf)
        order = np.argsort(key)
        order = order[_group_order(codes[order], g)]
        vs, cs = v[order], codes[order]
        if n:
            new[0] = True
            np.not_equal(vs[1:], vs[:-1], out=new[1:])
            new[1:] |= cs[1:] != cs[:-1]
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n)
        avg = np.repeat((starts + ends + 1) / 2.0, ends - starts) - first[cs]
        with np.errstate(invalid="ignore", divide="ignore"):
            avg /= count[cs]
        avg[~ok[order]] = np.nan
        out[order, 3 + 3 * j] = avg
    feature_names = ["group_size"] + [f"{name}__{s}" for name in names for s in GROUP_STATS]
    return out, feature_names


def _categories(column: str, train: pd.DataFrame, test: pd.DataFrame | None) -> pd.Index:
    """One category list for both splits (train's first), so that a code means the same in train and test."""
    values = []
    for t in (train, test):
        if t is None:
            continue
        v = t[column]
        values += list(v.cat.categories) if isinstance(v.dtype, pd.CategoricalDtype) else list(v.dropna().unique())
    return pd.Index(list(dict.fromkeys(values)))


def _safe(name: str) -> str:
    """A feature name every tree library accepts (LightGBM refuses JSON punctuation)."""
    return re.sub(r"[^0-9A-Za-z_.\-]+", "_", name).strip("_") or "f"


@dataclass
class Features:
    """The feature tables of the stack: train rows (records order), test rows (or None), and what each is."""

    train: pd.DataFrame
    test: pd.DataFrame | None
    source: dict[str, str]  # feature -> "metadata" | run folder | "group"
    kind: dict[str, str]  # feature -> "numeric" | "categorical" | "image" | "group_size" | "z" | "ratio" | "rank"

    @property
    def categorical(self) -> list[str]:
        """Names of the categorical features."""
        return [f for f, k in self.kind.items() if k == "categorical"]


def build_features(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    numeric: Sequence[str],
    categorical: Sequence[str],
    image: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    groups: bool = True,
    image_source: Mapping[str, str] | None = None,
) -> Features:
    """Feature tables for train (and test): metadata columns, image predictions, per-group features.

    ``train``/``test`` hold ``group`` and the metadata columns; ``image`` maps a feature name to its
    (train values, test values). Group features are computed within each split's own groups.
    """
    source: dict[str, str] = {}
    kind: dict[str, str] = {}
    frames = []
    cats = {c: _categories(c, train, test) for c in categorical}
    for split, table in (("train", train), ("test", test)):
        if table is None:
            frames.append(None)
            continue
        cols: dict[str, Any] = {}
        for c in numeric:
            cols[_safe(c)] = table[c].to_numpy(np.float64)
            source[_safe(c)], kind[_safe(c)] = "metadata", "numeric"
        for c in categorical:
            cols[_safe(c)] = pd.Categorical(np.asarray(table[c].astype(object)), categories=cats[c])
            source[_safe(c)], kind[_safe(c)] = "metadata", "categorical"
        for name, (tr, te) in image.items():
            cols[name] = tr if split == "train" else te
            source[name], kind[name] = (image_source or {}).get(name, "image"), "image"
        frame = pd.DataFrame(cols, index=pd.RangeIndex(len(table)))
        if groups:
            base = [_safe(c) for c in numeric] + list(image)
            values = frame[base].to_numpy(np.float64) if base else np.empty((len(frame), 0))
            g, names = group_features(values, table["group"].to_numpy(), base)
            frame = pd.concat([frame, pd.DataFrame(g, columns=names, index=frame.index)], axis=1)
            for name in names:
                source[name] = "group"
                kind[name] = "group_size" if name == "group_size" else name.rsplit("__", 1)[1]
        frames.append(frame)
    return Features(frames[0], frames[1], source, kind)


def _check_drop(drop: Sequence[str], metadata: Sequence[str], numeric: Sequence[str], image: Sequence[str]) -> None:
    """KitError naming the first ``--drop`` name that is no metadata column, image prediction or per-group feature
    this stack could have, and listing those (metadata last: ISIC 2024 has 41 columns)."""
    bases = [*(_safe(c) for c in numeric), *image]
    known = {*metadata, *(_safe(c) for c in metadata), *image, "group_size",
             *(f"{b}__{stat}" for b in bases for stat in GROUP_STATS)}
    unknown = [d for d in drop if d not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise KitError(f"--drop {unknown[0]!r}{more}: no such column or feature; there are image predictions: "
                       f"{', '.join(image) or 'none'}; per group: group_size, COLUMN__{', COLUMN__'.join(GROUP_STATS)}; "
                       f"metadata columns: {', '.join(metadata) or 'none'}")


def _metadata_columns(train_manifest: "records.Manifest", test_manifest: "records.Manifest | None",
                      drop: Sequence[str], log: Callable[[str], None]) -> tuple[list[str], list[str]]:
    meta = train_manifest.metadata
    numeric, categorical = list(meta.numeric), list(meta.categorical)
    if test_manifest is not None:
        gone = train_only_columns(meta, test_manifest.metadata)
        if gone:
            log(f"train-only columns, never features: {', '.join(gone)}")
        numeric = [c for c in numeric if c not in gone]
        categorical = [c for c in categorical if c not in gone]
    return [c for c in numeric if c not in drop], [c for c in categorical if c not in drop]


def _constant(values: pd.Series | np.ndarray) -> bool:
    """One value in every row (missing counts as a value, as in ``nunique(dropna=False)``), without hashing."""
    v = values.cat.codes.to_numpy() if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype) else values
    v = np.asarray(v, np.float64)
    if len(v) == 0:
        return True
    missing = np.isnan(v)
    if missing.all():
        return True
    return not missing.any() and v.min() == v.max()


def _check_columns(train: pd.DataFrame, test: pd.DataFrame | None, columns: Sequence[str], what: Mapping[str, str]) -> None:
    """Refuse a feature constant in train, or a metadata column whose test values are all missing."""
    for c in columns:
        v = train[c]
        if _constant(v):
            first = v.iloc[0] if len(v) else None
            raise KitError(f"{what.get(c, 'feature')} {c!r} is constant in the training records ({first}), so no tree "
                           f"can split on it; leave it out with --drop {c}")
        if test is not None and c in test.columns and test[c].isna().all():
            raise KitError(f"metadata column {c!r}: every test value is missing, so the trees would score the test set "
                           f"on a column they never see there; leave it out with --drop {c}")
