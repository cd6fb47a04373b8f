"""TFRecords: the schema, a parallel sharded writer, and the reader.

One schema serves writing and reading. A record holds:

    image        bytes   JPEG, already resized to the manifest's image size
    image_name   bytes   the competition's id, exactly as the competition writes it
    target       int64   class index; -1 when unlabelled
    fold         int64   fold index; -1 for test records
    group        bytes   patient or lesion id (the unit folds never split)
    <metadata>   float32 numeric columns, int64 codes for categorical ones (tables in manifest.json)

Shards are named ``{split}{NN}-{count}.tfrec`` (``train03-412.tfrec``) so that
``count_data_items`` knows how many images a set of shards holds without reading them. One shard
never mixes folds.

The writer (``write_from_source``) reads a competition download through
kit.sources, assigns leak-free folds with kit.folds, then decodes, resizes (policy: kit.imaging)
and re-encodes images on every core, one process per core, while this process writes the shards
one after another (one ``TFRecordWriter`` per shard). Everything is written into a hidden
temporary folder beside ``--out`` and renamed onto it only when complete, ``manifest.json`` last:

    OUT/train00-412.tfrec ... train04-409.tfrec
    OUT/manifest.json   layout, source, split, image_size, classes, n_classes, id_name, labelled,
                        n_folds, fold_seed, folds {k: images, groups, positives|class_counts,
                        shards}, shards, count, metadata {numeric, categorical code tables,
                        numeric_stats}, encoding, skipped [{path, reason}], duplicates,
                        train_duplicates (test only: [{image_name, train_image_name}], or null
                        when the download has no train split to compare with)

``manifest.json`` is one typed definition, ``Manifest`` (with ``FoldInfo``, ``MetadataColumns``, ``Encoding``):
the writer writes ``Manifest.to_json()``, ``read_manifest`` returns ``Manifest.from_json()`` of the file, and
every reader in kit reads its attributes. ``write_encoded`` writes images a caller encoded itself (tests,
benchmarks) through the same shard writer and manifest.

The reader (``read_manifest``, ``list_shards``, ``load_dataset``) also reads a folder of public
SIIM-ISIC TFRecords as they are: no manifest, no ``fold`` field; the shard number is the fold.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
import itertools
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

import kit
from kit import competitions, folds as kfolds
from kit import imaging, sources
from kit.errors import KitError
from kit.fsutil import atomic_dir, write_json


class _Lazy:
    """A module imported on first use: writing records needs no TensorFlow (its import alone takes seconds),
    reading them does."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        import importlib

        return getattr(importlib.import_module(self._name), attr)


tf = _Lazy("tensorflow")


def core_features() -> dict[str, "tf.io.FixedLenFeature"]:
    """The parse spec of the fields every record of kit's schema holds."""
    return {
        "image": tf.io.FixedLenFeature([], tf.string),
        "image_name": tf.io.FixedLenFeature([], tf.string),
        "target": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "fold": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
        "group": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }


SHARD_RE = re.compile(r"^(?P<split>[A-Za-z_]+?)(?P<index>\d+)-(?P<count>\d+)\.tfrec$")


def shard_name(split: str, index: int, count: int) -> str:
    """Name of shard ``index`` of ``split`` holding ``count`` records: ``train03-412.tfrec``."""
    return f"{split}{index:02d}-{count}.tfrec"


def parse_shard_name(path: str | Path) -> tuple[str, int, int]:
    """(split, index, count) from a shard's file name; raises ValueError on another name."""
    m = SHARD_RE.match(Path(path).name)
    if not m:
        raise ValueError(f"{path}: not a shard name of the form {{split}}{{NN}}-{{count}}.tfrec")
    return m["split"], int(m["index"]), int(m["count"])


def count_data_items(paths: "Iterable[str | Path] | ImageStream") -> int:
    """Number of records in ``paths``, read from the shard names alone (no scan), or the images of a stream."""
    if isinstance(paths, ImageStream):
        return paths.count
    return sum(parse_shard_name(p)[2] for p in paths)


def verify_shards(paths: Iterable[str | Path], remedy: str = "write the records again") -> None:
    """Check that each shard holds the number of records its name says (a cheap read of the framing only), so a
    truncated or corrupt shard stops a run in seconds with its name instead of mid-epoch; KitError otherwise."""
    for p in paths:
        try:
            expected = parse_shard_name(p)[2]
        except ValueError:
            continue  # a name that carries no count has nothing to check against
        try:
            found = imaging.count_tfrecords(p)
        except ValueError as exc:
            raise KitError(f"{p}: damaged shard ({exc}); {remedy}") from None
        if found != expected:
            raise KitError(f"{p}: holds {found} records, its name says {expected}; {remedy}")


def to_example(
    image: bytes,
    image_name: str,
    target: int = -1,
    fold: int = -1,
    group: str = "",
    numeric: Mapping[str, float] | None = None,
    categorical: Mapping[str, int] | None = None,
) -> bytes:
    """Serialize one record of kit's schema (metadata: float for numeric, int codes otherwise)."""
    fields: dict[str, Any] = {"image": bytes(image), "image_name": str(image_name), "target": int(target),
                              "fold": int(fold), "group": str(group)}
    fields.update({name: float(value) for name, value in (numeric or {}).items()})
    fields.update({name: int(value) for name, value in (categorical or {}).items()})
    return imaging.example_bytes(fields)


def feature_spec(
    numeric: Sequence[str] = (), categorical: Sequence[str] = ()
) -> dict[str, tf.io.FixedLenFeature]:
    """The parse spec for kit's records with the given metadata columns."""
    spec = core_features()
    for name in numeric:
        spec[name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
    for name in categorical:
        spec[name] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    return spec


def decode_image(data: tf.Tensor, channels: int = 3, *, jpeg: bool = False) -> tf.Tensor:
    """Decode JPEG/PNG bytes (``jpeg``: known to be JPEG) to a uint8 HxWxC tensor.

    JPEGs go through libjpeg's accurate integer IDCT, the one Pillow uses, so TensorFlow sees the very pixels
    kit's writer made and an ImageStream serves. TensorFlow's default fast IDCT is off by up to 5 levels
    and measured no faster here (33-130 us per image at 64-256 px either way)."""
    def accurate() -> tf.Tensor:
        return tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE")

    if jpeg:
        return accurate()
    is_jpeg = tf.strings.substr(data, 0, 2) == b"\xff\xd8"
    return tf.cond(is_jpeg, accurate, lambda: tf.io.decode_image(data, channels=channels, expand_animations=False))


# --- the manifest ---------------------------------------------------------------------------------
# One definition of manifest.json for both directions: the writer builds a Manifest and writes its to_json(),
# every reader gets Manifest.from_json() of the file and reads attributes. Fields only ever get added
# (DESIGN.md section 4): a manifest written before a field existed reads with the field's default.

MANIFEST_KEYS = ("image_size", "shards")  # what every reader of a manifest needs


def _bad_manifest(where: str, why: str) -> KitError:
    return KitError(f"{where}: not a kit manifest ({why}); write the records again")


def _kind(value: Any) -> str:
    return "null" if value is None else f"{type(value).__name__} {json.dumps(value)[:40]}"


def _as_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("an integer")
    return value


def _as_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError("a number")
    return float(value)


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a string")
    return value


def _as_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _as_strs(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("a list of strings")
    return tuple(value)


def _as_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in value):
        raise TypeError("a list of class names")
    return tuple(str(v) for v in value)


def _as_object(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise TypeError("an object")
    return value


class _Fields:
    """Typed reads of one JSON object of a manifest: a missing key or a wrong type is one KitError naming the
    file and the field (``folds.3.images``), never a KeyError or TypeError deep inside a reader."""

    _REQUIRED = object()

    def __init__(self, data: Any, where: str, prefix: str = "") -> None:
        self.where, self.prefix = where, prefix
        if not isinstance(data, dict):
            if not prefix:
                raise _bad_manifest(where, f"a JSON {type(data).__name__}, not an object")
            raise _bad_manifest(where, f"field {prefix.rstrip('.')!r} is {_kind(data)}, expected an object")
        self.data = data

    def get(self, name: str, convert: Callable[[Any], Any], default: Any = _REQUIRED) -> Any:
        """``convert(data[name])``; ``default`` when the key is absent (required when no default is given)."""
        if name not in self.data:
            if default is _Fields._REQUIRED:
                raise _bad_manifest(self.where, f"no {self.prefix + name!r}")
            return default
        value = self.data[name]
        try:
            return convert(value)
        except (TypeError, ValueError) as exc:
            raise _bad_manifest(self.where, f"field {self.prefix + name!r} is {_kind(value)}, expected {exc}") from None

    def optional(self, name: str, convert: Callable[[Any], Any]) -> Any:
        """Like ``get``, but JSON null (or an absent key) reads as None."""
        return self.get(name, lambda v: None if v is None else convert(v), None)

    def inner(self, name: str) -> "_Fields | None":
        """The nested object ``name`` (None when absent or null)."""
        if self.data.get(name) is None:
            return None
        return _Fields(self.data[name], self.where, f"{self.prefix}{name}.")


@dataclass(frozen=True)
class ColumnStats:
    """A numeric metadata column's mean, standard deviation and missing count over the written records."""

    mean: float = 0.0
    std: float = 1.0
    missing: int = 0

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form."""
        return {"mean": self.mean, "std": self.std, "missing": self.missing}

    @classmethod
    def from_json(cls, f: _Fields) -> "ColumnStats":
        """Read from the manifest's JSON object ``f``."""
        return cls(f.get("mean", _as_float, 0.0), f.get("std", _as_float, 1.0), f.get("missing", _as_int, 0))


@dataclass(frozen=True)
class MetadataColumns:
    """The metadata columns the records carry: numeric (float32) and categorical (int64 codes into a table)."""

    numeric: tuple[str, ...] = ()
    # column -> its code table; empty when the codes come without one (public SIIM-ISIC shards)
    categorical: dict[str, tuple[str, ...]] = field(default_factory=dict)
    numeric_stats: dict[str, ColumnStats] = field(default_factory=dict)

    @property
    def columns(self) -> tuple[str, ...]:
        """Every metadata column, numeric first."""
        return (*self.numeric, *self.categorical)

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form."""
        return {"numeric": list(self.numeric), "categorical": {c: list(t) for c, t in self.categorical.items()},
                "numeric_stats": {c: s.to_json() for c, s in self.numeric_stats.items()}}

    @classmethod
    def from_json(cls, f: _Fields | None) -> "MetadataColumns":
        """Read from the manifest's ``metadata`` object (None: no metadata)."""
        if f is None:
            return cls()
        categorical = f.inner("categorical")
        stats = f.inner("numeric_stats")
        return cls(
            numeric=f.get("numeric", _as_strs, ()),
            categorical={c: categorical.get(c, _as_strs) for c in categorical.data} if categorical else {},
            numeric_stats={c: ColumnStats.from_json(stats.inner(c)) for c in stats.data} if stats else {},
        )


@dataclass(frozen=True)
class FoldInfo:
    """One fold of the records (fold -1: a test split): its images, groups, label counts and shards."""

    images: int
    shards: tuple[str, ...] = ()
    groups: int | None = None
    positives: int | None = None  # binary records
    class_counts: dict[str, int] | None = None  # multi-class records: {class name: images}

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form."""
        out: dict[str, Any] = {"images": self.images}
        if self.groups is not None:
            out["groups"] = self.groups
        if self.positives is not None:
            out["positives"] = self.positives
        if self.class_counts is not None:
            out["class_counts"] = dict(self.class_counts)
        return {**out, "shards": list(self.shards)}

    @classmethod
    def from_json(cls, f: _Fields, classes: Sequence[str]) -> "FoldInfo":
        """Read one entry of the manifest's ``folds``; class counts stored as a list are keyed by ``classes``."""

        def counts(value: Any) -> dict[str, int]:
            if isinstance(value, list):  # an older form: one count per class, in class order
                if len(value) != len(classes):
                    raise TypeError(f"one count per class ({len(classes)})")
                value = dict(zip(classes, value))
            return {str(c): _as_int(n) for c, n in _as_object(value).items()}

        return cls(images=f.get("images", _as_int), shards=f.get("shards", _as_strs, ()),
                   groups=f.optional("groups", _as_int), positives=f.optional("positives", _as_int),
                   class_counts=f.optional("class_counts", counts))


@dataclass(frozen=True)
class Encoding:
    """How the records store their images."""

    format: str = "jpeg"
    quality: int = imaging.JPEG_QUALITY
    resize: str = "crop"
    resample: str = "bicubic"
    channels: int = 3

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON form."""
        return {"format": self.format, "quality": self.quality, "resize": self.resize, "resample": self.resample,
                "channels": self.channels}

    @classmethod
    def from_json(cls, f: _Fields) -> "Encoding":
        """Read from the manifest's ``encoding`` object; what it leaves out takes kit's defaults."""
        d = cls()
        return cls(f.get("format", _as_str, d.format), f.get("quality", _as_int, d.quality),
                   f.get("resize", _as_str, d.resize), f.get("resample", _as_str, d.resample),
                   f.get("channels", _as_int, d.channels))


@dataclass(frozen=True)
class TrainDuplicate:
    """A test image byte-identical to a training image."""

    image_name: str
    train_image_name: str


@dataclass(frozen=True)
class SkippedImage:
    """An image the writer left out (``--skip-bad``), and why."""

    path: str
    reason: str


def _as_train_duplicates(value: Any) -> tuple[TrainDuplicate, ...]:
    if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
        raise TypeError("a list of {image_name, train_image_name}")
    try:
        return tuple(TrainDuplicate(str(d["image_name"]), str(d["train_image_name"])) for d in value)
    except KeyError:
        raise TypeError("a list of {image_name, train_image_name}") from None


def _as_skipped(value: Any) -> tuple[SkippedImage, ...]:
    if not isinstance(value, list) or not all(isinstance(d, dict) for d in value):
        raise TypeError("a list of {path, reason}")
    return tuple(SkippedImage(str(d.get("path", "")), str(d.get("reason", ""))) for d in value)


def _as_duplicates(value: Any) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list):
        raise TypeError("a list of lists of image names")
    try:
        return tuple(_as_strs(names) for names in value)
    except TypeError:
        raise TypeError("a list of lists of image names") from None


@dataclass(frozen=True)
class Manifest:
    """``manifest.json`` of a records folder: what the shards hold, how they were written, and their folds.

    Example:
        >>> m = read_manifest("records/siim-256")
        >>> m.image_size, m.classes, m.folds[0].positives, m.metadata.numeric
    """

    image_size: int
    shards: tuple[str, ...]
    split: str = "train"
    layout: str = ""
    competition: str | None = None  # kit.competitions' name: the metric, submission and notebook
    source: str = ""
    classes: tuple[str, ...] = ()
    n_classes: int = 0  # 0: as many as ``classes``
    id_name: str = "image_name"
    labelled: bool = True
    n_folds: int = 0
    fold_seed: int | None = None
    folds: dict[int, FoldInfo] = field(default_factory=dict)
    count: int = 0
    metadata: MetadataColumns = field(default_factory=MetadataColumns)
    encoding: Encoding | None = None  # None: an older manifest that does not say (readers sniff the format)
    train_only_columns: tuple[str, ...] = ()  # in train, not in test: never metadata inputs
    duplicates: tuple[tuple[str, ...], ...] = ()  # sets of byte-identical images
    # test splits only: test images byte-identical to training images; None when not compared
    train_duplicates: tuple[TrainDuplicate, ...] | None = None
    skipped: tuple[SkippedImage, ...] = ()
    format: str | None = None  # PUBLIC_FORMAT for public SIIM-ISIC TFRecords read as they are
    public_fields: dict[str, str] = field(default_factory=dict)  # their fields and kinds (bytes, int64, float)
    kit_version: str | None = None
    created: str | None = None

    def __post_init__(self) -> None:
        if not self.n_classes:
            object.__setattr__(self, "n_classes", len(self.classes))

    @property
    def public(self) -> bool:
        """Whether these are public SIIM-ISIC TFRecords (no manifest on disk, fold = shard number)."""
        return self.format == PUBLIC_FORMAT

    @property
    def binary(self) -> bool:
        """Whether the records hold a binary target."""
        return competitions.is_binary(self.n_classes or 2)

    @property
    def fold_ids(self) -> list[int]:
        """The folds of the records, in order."""
        return sorted(self.folds)

    def to_json(self) -> dict[str, Any]:
        """The JSON object ``manifest.json`` holds (the writer writes exactly this)."""
        out: dict[str, Any] = {"format": self.format, "public_fields": dict(self.public_fields)} if self.public else {}
        out.update({
            "competition": self.competition, "layout": self.layout, "train_only_columns": list(self.train_only_columns),
            "source": self.source, "split": self.split, "image_size": self.image_size, "classes": list(self.classes),
            "n_classes": self.n_classes, "id_name": self.id_name, "labelled": self.labelled, "n_folds": self.n_folds,
            "fold_seed": self.fold_seed, "folds": {str(k): f.to_json() for k, f in self.folds.items()},
            "shards": list(self.shards), "count": self.count, "metadata": self.metadata.to_json(),
        })
        if self.encoding is not None:
            out["encoding"] = self.encoding.to_json()
        out["duplicates"] = [list(names) for names in self.duplicates]
        if self.split == "test":  # only a test split can hold images of the train split
            out["train_duplicates"] = (None if self.train_duplicates is None
                                       else [vars(d) for d in self.train_duplicates])
        out["skipped"] = [vars(s) for s in self.skipped]
        if self.kit_version is not None:
            out["kit_version"] = self.kit_version
        if self.created is not None:
            out["created"] = self.created
        return out

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> "Manifest":
        """The manifest in the JSON object ``data`` read from ``where``; KitError naming the file and the field."""
        f = _Fields(data, str(where))
        for key in MANIFEST_KEYS:
            f.get(key, lambda v: v)  # the keys every reader needs, checked first: "no 'image_size'"
        classes = f.get("classes", _as_names, ())
        folds = f.inner("folds")

        def fold_key(k: str) -> int:
            try:
                return int(k)
            except ValueError:
                raise _bad_manifest(str(where), f"field 'folds' has key {k!r}, expected fold numbers") from None

        enc = f.inner("encoding")
        return cls(
            image_size=f.get("image_size", _as_int), shards=f.get("shards", _as_strs),
            split=f.get("split", _as_str, "train"), layout=f.get("layout", _as_str, ""),
            competition=f.optional("competition", _as_str), source=f.get("source", _as_str, ""),
            classes=classes, n_classes=f.get("n_classes", _as_int, len(classes)),
            id_name=f.get("id_name", _as_str, "image_name"), labelled=f.get("labelled", _as_bool, True),
            n_folds=f.get("n_folds", _as_int, 0), fold_seed=f.optional("fold_seed", _as_int),
            folds={fold_key(k): FoldInfo.from_json(folds.inner(k), classes) for k in folds.data} if folds else {},
            count=f.get("count", _as_int, 0), metadata=MetadataColumns.from_json(f.inner("metadata")),
            encoding=Encoding.from_json(enc) if enc else None,
            train_only_columns=f.get("train_only_columns", _as_strs, ()),
            duplicates=f.get("duplicates", _as_duplicates, ()),
            train_duplicates=f.optional("train_duplicates", _as_train_duplicates),
            skipped=f.get("skipped", _as_skipped, ()),
            format=f.optional("format", _as_str),
            public_fields=dict(f.get("public_fields", lambda v: {k: _as_str(x) for k, x in _as_object(v).items()},
                                     {})),
            kit_version=f.optional("kit_version", _as_str), created=f.optional("created", _as_str),
        )

    def fold(self, k: int, where: str | Path = "") -> FoldInfo:
        """Fold ``k``; KitError naming the folds there when the records have no such fold."""
        if int(k) not in self.folds:
            known = ", ".join(map(str, self.fold_ids))
            raise KitError(f"{where or 'records'}: no fold {k} in the records (folds: {known})")
        return self.folds[int(k)]


# --- writer --------------------------------------------------------------------------------------

SMOKE_SIZE = 64  # the image side cap of a smoke rehearsal: it checks a command line, not a model
SHARD_BYTES = 100 * 2**20  # default shard size: large enough for fast reads, small enough to stream
PUBLIC_FORMAT = "siim-isic-public"
# Above this many images the writer fans out to worker processes; below it, starting them costs
# more than it saves.
_PARALLEL_MIN_IMAGES = 96


def check_out_folder(out: str | Path) -> None:
    """Refuse an ``--out`` folder that holds records (or anything else): kit never overwrites."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise KitError(f"{out}: exists and is not a folder")
    shards = sorted(out.glob("*.tfrec"))
    if shards or (out / "manifest.json").exists():
        what = f"{len(shards)} .tfrec shards" if shards else "manifest.json"
        raise KitError(f"{out}: already holds records ({what}); choose a new --out or remove it")
    if any(out.iterdir()):
        raise KitError(f"{out}: folder is not empty; choose a new --out")


def write_from_source(
    source: str | Path | sources.Source,
    out: str | Path,
    *,
    layout: str = "auto",
    id_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    images: str | Path | None = None,
    n_folds: int = 5,
    size: int | None = None,
    n_shards: int | None = None,
    test: bool = False,
    seed: int = 42,
    skip_bad: bool = False,
    workers: int | None = None,
    resize: str = "crop",
    quality: int = imaging.JPEG_QUALITY,
    progress: bool = True,
    smoke: bool = False,
) -> Manifest:
    """Read a competition download (or take a ``sources.Source`` already read) and write its train (or ``test``)
    split as records; returns the manifest.

    ``size`` None: the median shorter side of the (train split's) images, at most 256 px (imaging.typical_size).
    ``smoke``: a smoke rehearsal (``KIT_SMOKE=1`` on the command line) writes images of at most SMOKE_SIZE px.

    Example:
        >>> m = write_from_source("data/siim", "records/siim-256", size=256, n_folds=5)
        >>> print(format_summary(m))

    A test split is compared with the download's train split: test images byte-identical to a training
    image are listed in the manifest (``train_duplicates``) and written all the same, since a submission
    needs a prediction for every test id.
    """
    out = Path(out)
    check_out_folder(out)
    _check_write_settings(size or imaging.MIN_SIZE, n_folds, n_shards, seed, workers, resize, test)
    if isinstance(source, sources.Source):  # a download already read (and perhaps changed) by the caller
        src, source_path = source, None
    else:
        src = sources.load_source(source, layout=layout, id_col=id_col, label_col=label_col, group_col=group_col,
                                  images=images, test=test, skip_bad=skip_bad)
        source_path = str(Path(source).resolve())
    split = "test" if test else "train"
    table = src.table.reset_index(drop=True).copy()
    train = sources.train_split_of(src) if test else None
    if size is None:  # from the train split's images, so that test records written alone get the same size
        size = imaging.typical_size((train or src).table["path"].tolist())
    size = min(size, SMOKE_SIZE) if smoke else size
    digests, train_dups = _digests_and_folds(table, train, n_folds, seed, test)
    plan = _plan_shards(table, split, n_folds if not test else 0, n_shards, size, quality, seed)
    rows = _worker_rows(table, src)
    workers = workers or os.cpu_count() or 1
    n_chunks_wanted = max(1, workers * 4)
    chunk = max(1, min(32, -(-len(table) // n_chunks_wanted)))
    chunks: list[tuple[int, np.ndarray]] = []
    for shard_idx, idx in enumerate(plan):
        chunks += [(shard_idx, part) for part in np.array_split(idx, max(1, -(-len(idx) // chunk)))]
    parallel = workers > 1 and len(table) >= _PARALLEL_MIN_IMAGES

    from tqdm.auto import tqdm

    skipped = list(src.skipped)
    with atomic_dir(out) as tmp:
        bar = tqdm(total=len(table), unit="img", desc=f"kit records {split}", disable=not progress,
                   file=sys.stderr, mininterval=0.5)
        results = _run_chunks([[rows[i] for i in idx] for _, idx in chunks], size, resize, quality,
                              workers if parallel else 1)
        try:
            shard_names, shard_of_row, bad = _write_shards(tmp, split, table, chunks, results, skip_bad, bar.update,
                                                           warn=lambda line: bar.write(f"warning: {line}", file=sys.stderr))
        finally:
            results.close()  # stops the workers at once on an error or Ctrl-C
            bar.close()
        skipped += [{"path": table.at[i, "path"], "reason": reason} for i, reason in bad]
        written = table.drop(index=[i for i, _ in bad])
        if written.empty:
            raise KitError(f"{src.root}: every image was bad; nothing to write")
        if train_dups is not None:
            kept = set(written["image_name"].astype(str))
            train_dups = [d for d in train_dups if d["image_name"] in kept]
        manifest = _manifest(src, written, table, split, size, n_folds if not test else 0, seed, shard_names,
                             shard_of_row, skipped, digests, Encoding(quality=int(quality), resize=resize),
                             source_path, train_dups)
        write_json(tmp / "manifest.json", manifest.to_json())
    return manifest


def _check_write_settings(size: int, n_folds: int, n_shards: int | None, seed: int, workers: int | None,
                          resize: str, test: bool) -> None:
    """KitError naming the first setting of ``kit records`` out of its range (before any file is read)."""
    if size < 8:
        raise KitError(f"--size {size}: images must be at least 8 pixels")
    for flag, value, low in (("--seed", seed, 0), ("--folds", n_folds, 2), ("--shards", n_shards, 1),
                             ("--workers", workers, 1)):
        if value is not None and value < low and not (flag == "--folds" and test):
            raise KitError(f"{flag} {value}: must be at least {low}")
    if resize not in imaging.RESIZE_POLICIES:
        raise KitError(f"resize {resize!r}: must be one of {', '.join(imaging.RESIZE_POLICIES)}")


def _digests_and_folds(table: pd.DataFrame, train: sources.Source | None, n_folds: int, seed: int,
                       test: bool) -> tuple[list[str], list[dict] | None]:
    """Fill ``table["fold"]`` (-1 for a test split; grouped, stratified and leak-checked otherwise); return the
    images' digests and, for a test split beside its train split, its images byte-identical to a training one."""
    train_dups = None
    if test and train is not None:
        digests, train_digests = kfolds.paired_digests(table["path"], train.table["path"])
        train_dups = kfolds.train_duplicates(table["image_name"], digests, train.table["image_name"], train_digests)
    else:
        digests = kfolds.file_digests(table["path"])
    if test:
        table["fold"] = -1
    else:
        table["fold"] = kfolds.assign_folds(table, n_folds, seed, digests=digests)
        kfolds.check_leakage(table, digests=digests)
    return digests, train_dups


def write_encoded(
    src: sources.Source,
    images: Sequence[bytes],
    out: str | Path,
    *,
    size: int,
    n_folds: int,
    test: bool = False,
    n_shards: int | None = None,
    seed: int = 0,
    fmt: str = "jpeg",
    train_duplicates: Sequence[Mapping[str, str]] | None = None,
) -> Manifest:
    """Write images already encoded at ``size`` x ``size`` (``images[i]`` for row i of ``src.table``, stored as
    they are, in table order within each fold) with the folds the table's ``fold`` column gives (-1 when
    ``test``); returns the manifest.

    The same shard plan, serializer, shard writer, leakage check and manifest as ``write_from_source``, for callers
    that make their own images: tests that plant a signal or need lossless PNG, benchmarks that time the reader.
    """
    out = Path(out)
    check_out_folder(out)
    table = src.table.reset_index(drop=True).copy()
    if len(images) != len(table):
        raise KitError(f"write_encoded: {len(images)} images for {len(table)} rows")
    if "path" not in table:
        table["path"] = table["image_name"].astype(str)  # where a bad image would be reported
    digests = [hashlib.sha1(bytes(b)).hexdigest() for b in images]
    split = "test" if test else "train"
    if test:
        table["fold"] = -1
    else:
        kfolds.check_leakage(table, digests=digests)
    # the caller's order within each fold: a test can compare what it reads with what it wrote, row for row
    plan = _plan_shards(table, split, 0 if test else n_folds, n_shards, size, imaging.JPEG_QUALITY, seed,
                        shuffle=False)
    rows = _worker_rows(table, src)
    chunks = [(shard_idx, idx) for shard_idx, idx in enumerate(plan)]
    results = ([(imaging.example_bytes({"image": bytes(images[i]), **rows[i][1]}), "") for i in idx]
               for _, idx in chunks)
    with atomic_dir(out) as tmp:
        shard_names, shard_of_row, _ = _write_shards(tmp, split, table, chunks, results, False, lambda _: None)
        manifest = _manifest(src, table, table, split, size, 0 if test else n_folds, seed, shard_names,
                             shard_of_row, list(src.skipped), digests, Encoding(format=fmt), None,
                             None if train_duplicates is None else [dict(d) for d in train_duplicates])
        write_json(tmp / "manifest.json", manifest.to_json())
    return manifest


def _write_shards(
    tmp: Path,
    split: str,
    table: pd.DataFrame,
    chunks: Sequence[tuple[int, np.ndarray]],
    results: Iterable[list[tuple[bytes | None, str]]],
    skip_bad: bool,
    advance: Callable[[int], Any],
    warn: Callable[[str], Any] = print,
) -> tuple[list[str], np.ndarray, list[tuple[int, str]]]:
    """Write each chunk's serialized records into its shard (one ``TFRecordFile`` per shard, renamed to its final
    ``{split}{NN}-{count}.tfrec`` once complete); returns (shard names, shard index per row, (row, reason) of
    each bad image left out). ``warn`` gets one line per image written with a warning, naming it."""
    shard_names: list[str] = []
    shard_of_row = np.full(len(table), -1)
    bad: list[tuple[int, str]] = []
    current, writer, part, count = -1, None, None, 0

    def close_shard() -> None:
        if writer is None:
            return
        writer.close()
        if count:
            name = shard_name(split, len(shard_names), count)
            os.replace(part, tmp / name)
            shard_names.append(name)
        else:
            part.unlink()

    try:
        for (shard_idx, idx), res in zip(chunks, results):
            if shard_idx != current:
                close_shard()
                current, count = shard_idx, 0
                part = tmp / f".{split}{shard_idx:02d}.part"
                writer = imaging.TFRecordFile(part)
            for i, (blob, reason) in zip(idx, res):
                if blob is None:
                    if not skip_bad:
                        raise KitError(f"{table.at[i, 'path']}: {reason} (pass --skip-bad to leave it out)")
                    bad.append((int(i), reason))
                    continue
                if reason:
                    warn(f"{table.at[i, 'path']}: {reason}")
                writer.write(blob)
                shard_of_row[i] = len(shard_names)
                count += 1
            advance(len(idx))
        close_shard()
        writer = None
    finally:
        if writer is not None:
            writer.close()
    return shard_names, shard_of_row, bad


def _plan_shards(table: pd.DataFrame, split: str, n_folds: int, n_shards: int | None, size: int, quality: int,
                 seed: int, shuffle: bool = True) -> list[np.ndarray]:
    """Row indices per shard, in shard order: folds in order, one fold per shard, rows shuffled in a fold
    (unless not ``shuffle``: then in table order)."""
    per_image = imaging.jpeg_size_estimate(size, quality)
    if split == "test":
        k = n_shards or max(1, -(-len(table) * per_image // SHARD_BYTES))
        k = max(1, min(k, len(table)))
        # Test shards keep the source's order (e.g. sample_submission.csv's).
        return [part for part in np.array_split(np.arange(len(table)), k)]
    sizes = table.groupby("fold").size().reindex(range(n_folds), fill_value=0).to_numpy()
    if n_shards is None:
        per_fold = [max(1, -(-int(n) * per_image // SHARD_BYTES)) for n in sizes]
    else:
        if n_shards < n_folds:
            raise KitError(f"--shards {n_shards}: need at least one shard per fold (--folds {n_folds})")
        # One shard per fold, the rest shared out by fold size (largest remainder).
        extra = n_shards - n_folds
        share = sizes / sizes.sum() * extra
        per_fold = np.floor(share).astype(int)
        for f in np.argsort(-(share - per_fold), kind="stable")[: extra - per_fold.sum()]:
            per_fold[f] += 1
        per_fold = [int(min(1 + p, max(1, n))) for p, n in zip(per_fold, sizes)]
    rng = np.random.default_rng(seed)
    plan = []
    folds = table["fold"].to_numpy()
    for f in range(n_folds):
        idx = np.flatnonzero(folds == f)
        idx = rng.permutation(idx) if shuffle else idx
        plan += [part for part in np.array_split(idx, per_fold[f])]
    return plan


def _worker_rows(table: pd.DataFrame, src: sources.Source) -> list[tuple[str, dict]]:
    """(path, features other than the image) per row, as plain Python values for the workers."""
    codes = {c: {v: i for i, v in enumerate(src.categories.get(c, []))} for c in src.categorical}
    # column by column, not DataFrame.to_dict("records"): ISIC 2024's 41 columns made that a serial
    # 23 us per image in this process before any worker started
    columns: dict[str, list] = {
        "image_name": table["image_name"].tolist(),
        "target": [int(t) for t in table["target"].tolist()],
        "fold": [int(f) for f in table["fold"].tolist()],
        "group": table["group"].tolist(),
    }
    for c in src.numeric:
        columns[c] = [float(v) for v in table[c].tolist()]  # NaN stays NaN: readers decide how to fill
    for c in src.categorical:
        columns[c] = [codes[c].get(v, -1) if v is not None else -1 for v in table[c].tolist()]
    names = list(columns)
    return [(path, dict(zip(names, values))) for path, *values in zip(table["path"].tolist(), *columns.values())]


def _run_chunks(chunks: list[list], size: int, policy: str, quality: int, workers: int,
                task: Callable[..., list] | None = None) -> Iterator[list]:
    """``task(chunk, size, policy, quality)`` per chunk (``imaging.make_records``, or ``imaging.make_jpegs`` for a
    stream), in chunk order, from ``workers`` processes (or this one)."""
    task = task or imaging.make_records
    if workers <= 1:
        for c in chunks:
            yield task(c, size, policy, quality)
        return
    pool = imaging.worker_pool(workers)
    try:
        # A bounded window of chunks in flight, not all of them: results wait in memory only until read,
        # which matters when a slow reader (a model predicting 500,000 images) consumes them
        pending: deque = deque()
        todo = iter(chunks)
        for c in itertools.islice(todo, workers * 4):
            pending.append(pool.submit(task, c, size, policy, quality))
        while pending:
            done = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(task, nxt, size, policy, quality))
            yield done
    finally:
        # On an error or Ctrl-C, drop the queued work instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)


_STREAM_CHUNK = 64  # images per worker task when streaming a test split


@dataclass
class ImageStream:
    """A test split served straight from its download: the JPEG bytes, ids and metadata its records would
    hold (the same workers, resize and JPEG), in table order, with nothing written to disk and no record
    to serialize or parse.

    ``kit predict`` reads ISIC 2024's ~500,000 hidden test images this way on the rerun, instead of
    writing records first. ``manifest`` mirrors a test records manifest (size, classes, metadata codes).
    """

    rows: list[tuple[str, dict]]
    manifest: Manifest
    workers: int
    # the KitError that stopped ``batches``: tf.data reports it inside its own error text, the caller raises it
    failure: KitError | None = field(default=None, compare=False, repr=False)

    @property
    def count(self) -> int:
        """Images in the stream."""
        return len(self.rows)

    def head(self, n: int) -> "ImageStream":
        """The stream of the first ``n`` images."""
        return ImageStream(self.rows[:n], self.manifest, self.workers)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        """The columns a worker's chunk at a time: ``image`` (JPEG bytes), ``image_name``, ``target``, ``fold``,
        ``group`` and the metadata columns, as ``load_dataset(..., decode=False)`` parses them from records;
        KitError naming the image when one cannot be read."""
        enc = self.manifest.encoding or Encoding()
        size = self.manifest.image_size
        chunks = [self.rows[i:i + _STREAM_CHUNK] for i in range(0, len(self.rows), _STREAM_CHUNK)]
        parallel = self.workers > 1 and len(self.rows) >= _PARALLEL_MIN_IMAGES
        results = _run_chunks(chunks, size, enc.resize, enc.quality, self.workers if parallel else 1,
                              task=imaging.make_jpegs)
        try:
            for chunk, res in zip(chunks, results):
                for (path, _), (jpeg, reason) in zip(chunk, res):
                    if jpeg is None:
                        self.failure = KitError(f"{path}: {reason}; every test image is needed for a submission")
                        raise self.failure
                    if reason:
                        print(f"warning: {path}: {reason}", file=sys.stderr)
                yield self._columns([f for _, f in chunk], [j for j, _ in res])
        finally:
            results.close()

    def _columns(self, fields: list[dict], jpegs: list[bytes]) -> dict[str, np.ndarray]:
        meta = self.manifest.metadata
        out = {"image": np.array(jpegs, dtype=object)}
        for key in ("image_name", "group"):
            out[key] = np.array([str(f[key]) for f in fields], dtype=object)
        for key in ("target", "fold", *meta.categorical):
            out[key] = np.array([f[key] for f in fields], dtype=np.int64)
        for key in meta.numeric:
            out[key] = np.array([f[key] for f in fields], dtype=np.float32)
        return out

    def dataset(self) -> tf.data.Dataset:
        """The stream as a tf.data dataset of dicts, one per image (of known length), as
        ``load_dataset(..., decode=False)`` gives records."""
        meta = self.manifest.metadata
        spec = {k: tf.TensorSpec((None,), tf.string) for k in ("image", "image_name", "group")}
        spec.update({k: tf.TensorSpec((None,), tf.int64) for k in ("target", "fold", *meta.categorical)})
        spec.update({k: tf.TensorSpec((None,), tf.float32) for k in meta.numeric})
        # Whole chunks cross from Python into tf.data (from_generator costs a Python call per element), as
        # columns, not records: no Example to serialize or parse; the pipeline decodes the JPEGs in parallel
        ds = tf.data.Dataset.from_generator(self.batches, output_signature=spec)
        return ds.unbatch().apply(tf.data.experimental.assert_cardinality(self.count))


def stream_test_split(source: str | Path, train_manifest: Manifest, *, workers: int | None = None,
                      columns: Sequence[str] | None = None) -> ImageStream:
    """The test split of the download ``source`` as an ImageStream matching the train records of
    ``train_manifest``: their image size, resize and JPEG settings, and their categorical code tables.

    ``columns`` keeps only those metadata columns (a run's model inputs; ``None``: all of the records'):
    unlike records written for any later run, a stream serves one run, and each of ISIC 2024's 41 columns
    is otherwise carried and prepared for every image."""
    src = sources.load_source(source, test=True)
    if src.layout != train_manifest.layout:
        raise KitError(f"{source}: a {src.layout} download, but the run trained on {train_manifest.layout} records")
    meta = train_manifest.metadata
    # codes as in training: a category's index must mean the same thing in train and test
    src.categories = {c: list(codes) for c, codes in meta.categorical.items()}
    absent = [c for c in columns or () if c not in src.table.columns]
    if absent:
        raise KitError(f"{src.table_file or source}: no column {absent[0]!r}, which the run's model takes as input "
                       "(--meta); predict test records that hold it")
    wanted = set(src.table.columns) if columns is None else set(columns)
    src.numeric = [c for c in meta.numeric if c in wanted]
    src.categorical = [c for c in src.categories if c in wanted]
    table = src.table.reset_index(drop=True).assign(fold=-1)
    kept = MetadataColumns(tuple(src.numeric), {c: meta.categorical[c] for c in src.categorical})
    manifest = _test_manifest(train_manifest, str(source), len(table), kept)
    return ImageStream(_worker_rows(table, src), manifest, workers or os.cpu_count() or 1)


def _manifest(src: sources.Source, written: pd.DataFrame, table: pd.DataFrame, split: str, size: int, n_folds: int,
              seed: int, shard_names: list[str], shard_of_row: np.ndarray, skipped: list[dict], digests: Sequence[str],
              encoding: Encoding, source_path: str | None, train_dups: list[dict] | None) -> Manifest:
    folds: dict[int, FoldInfo] = {}
    for key, info in kfolds.fold_summary(written, src.classes).items():
        rows = written.index[written["fold"] == int(key)]
        folds[int(key)] = FoldInfo(images=info["images"], groups=info["groups"], positives=info.get("positives"),
                                   class_counts=info.get("class_counts"),
                                   shards=tuple(sorted({shard_names[int(s)] for s in shard_of_row[rows]})))
    by_digest: dict[str, list[str]] = {}
    for d, name in zip(digests, table["image_name"]):
        if d:
            by_digest.setdefault(d, []).append(str(name))
    stats = {}
    for c in src.numeric:
        v = written[c].to_numpy(dtype=np.float64)
        ok = v[~np.isnan(v)]
        stats[c] = ColumnStats(mean=float(ok.mean()) if ok.size else 0.0, std=float(ok.std()) if ok.size else 0.0,
                               missing=int(np.isnan(v).sum()))
    comp = competitions.identify(src.layout, src.classes)
    return Manifest(
        competition=comp.name if comp else None,
        layout=src.layout,
        train_only_columns=tuple(src.train_only),
        source=source_path or src.root,
        split=split,
        image_size=int(size),
        classes=tuple(src.classes),
        n_classes=len(src.classes),
        id_name=src.id_name,
        labelled=bool(src.labelled),
        n_folds=int(n_folds),
        fold_seed=int(seed) if n_folds else None,
        folds=folds,
        shards=tuple(shard_names),
        count=int(len(written)),
        metadata=MetadataColumns(numeric=tuple(src.numeric),
                                 categorical={c: tuple(src.categories.get(c, [])) for c in src.categorical},
                                 numeric_stats=stats),
        encoding=encoding,
        duplicates=tuple(tuple(names) for names in by_digest.values() if len(names) > 1),
        # null in a test split's manifest: no train split to compare with
        train_duplicates=None if train_dups is None else tuple(TrainDuplicate(**d) for d in train_dups),
        skipped=tuple(SkippedImage(str(s["path"]), str(s["reason"])) for s in skipped),
        kit_version=kit.__version__,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def format_summary(manifest: Manifest) -> str:
    """Per-fold table of a manifest: images, groups, and positives or class counts."""
    m = manifest
    lines = [f"{m.split}: {m.count} images, {len(m.shards)} shards, {m.image_size}x{m.image_size} px, "
             f"layout {m.layout}, classes {', '.join(m.classes) or '-'}"
             + (f", {m.n_folds} folds (seed {m.fold_seed})" if m.n_folds else "")]
    lines.append(f"{'fold':>5} {'images':>7} {'groups':>7}  {'positives' if competitions.is_binary(m.n_classes) else 'class counts'}")
    for key, f in m.folds.items():
        if f.positives is not None:
            label = f"{f.positives} ({f.positives / max(1, f.images):.1%})"
        elif f.class_counts is not None:
            label = " ".join(f"{c}:{n}" for c, n in f.class_counts.items())
        else:
            label = "-"
        groups = "-" if f.groups is None else f.groups
        lines.append(f"{key:>5} {f.images:>7} {groups:>7}  {label}")
    if m.duplicates:
        where = "within the test split" if m.split == "test" else "kept in one fold each"
        lines.append(f"{len(m.duplicates)} set(s) of byte-identical images {where}")
    if m.skipped:
        lines.append(f"skipped {len(m.skipped)} bad image(s), listed in manifest.json; first: "
                     f"{m.skipped[0].path}: {m.skipped[0].reason}")
    if m.train_only_columns:
        cols = m.train_only_columns
        lines.append(f"{len(cols)} train-only column(s) left out of the metadata (not in the test CSV): "
                     + ", ".join(cols))
    line = _train_duplicates_line(m)
    if line:
        lines.append(line)
    return "\n".join(lines)


def _train_duplicates_line(m: Manifest) -> str:
    """The summary's line on test images byte-identical to training images ("" when there is nothing to say)."""
    if m.split != "test":
        return ""
    dups = m.train_duplicates
    if dups is None:
        return "note: no train split found beside this test split; test images not compared with training images"
    if not dups:
        return ""
    first = dups[0]
    n = len(dups)
    what = ("scores on this labelled test split overstate the model (kit predict also scores without them)"
            if m.labelled else "leaderboard scores on them overstate the model")
    return (f"warning: {n} test image{'s are' if n != 1 else ' is'} byte-identical to training images "
            f"(first: test {first.image_name} = train {first.train_image_name}); {what}")


# --- reader --------------------------------------------------------------------------------------

_PUBLIC_META_NUMERIC = ["age_approx"]
_PUBLIC_META_CATEGORICAL = ["sex", "anatom_site_general_challenge"]


def read_manifest(folder: str | Path, split: str | None = None) -> Manifest:
    """The manifest of a records folder; for public SIIM-ISIC TFRecords, one built from shard names.

    A public folder can hold ``train*.tfrec`` and ``test*.tfrec`` together: ``split`` picks one
    (default train).
    """
    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    path = folder / "manifest.json"
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KitError(f"{path}: not valid JSON ({exc})") from None
        return Manifest.from_json(data, path)
    if not folder.is_dir():
        raise KitError(f"{folder}: no such records folder")
    by_split: dict[str, list[Path]] = {}
    for p in sorted(folder.glob("*.tfrec")):
        try:
            by_split.setdefault(parse_shard_name(p)[0], []).append(p)
        except ValueError:
            continue
    if not by_split:
        raise KitError(f"{folder}: no manifest.json and no {{split}}NN-{{count}}.tfrec shards")
    split = split or ("train" if "train" in by_split else sorted(by_split)[0])
    if split not in by_split:
        raise KitError(f"{folder}: no {split}NN-count.tfrec shards (found: {', '.join(sorted(by_split))})")
    return _public_manifest(folder, split, by_split[split])


def _public_manifest(folder: Path, split: str, shards: list[Path]) -> Manifest:
    # bytes that are no TFRecord file under a shard's name: named here, not "corrupted record at 0" from TensorFlow
    verify_shards(shards[:1], remedy="download it again")
    try:
        first = next(iter(tf.data.TFRecordDataset(str(shards[0])).take(1)), None)
    except tf.errors.DataLossError:  # the framing is sound, a record's own checksum is not
        raise KitError(f"{shards[0]}: damaged shard (its first record fails its checksum); download it again") from None
    if first is None:
        raise KitError(f"{shards[0]}: empty shard")
    try:
        example = tf.train.Example.FromString(first.numpy())
    except Exception as exc:  # protobuf's DecodeError is not importable by a stable path
        raise KitError(f"{shards[0]}: not a tf.train.Example record ({exc})") from None
    kinds = {"bytes_list": "bytes", "int64_list": "int64", "float_list": "float"}
    fields = {k: kinds[v.WhichOneof("kind")] for k, v in example.features.feature.items() if v.WhichOneof("kind")}
    for need in ("image", "image_name"):
        if need not in fields:
            raise KitError(f"{shards[0]}: no {need!r} field (fields: {', '.join(sorted(fields))})")
    shape = tf.io.extract_jpeg_shape(example.features.feature["image"].bytes_list.value[0]).numpy()
    labelled = "target" in fields
    names = [p.name for p in shards]
    if split == "train":
        folds = {parse_shard_name(n)[1]: FoldInfo(images=parse_shard_name(n)[2], shards=(n,)) for n in names}
        n_folds = len(folds)
    else:
        folds = {-1: FoldInfo(images=count_data_items(names), shards=tuple(names))}
        n_folds = 0
    return Manifest(
        format=PUBLIC_FORMAT, public_fields=fields, layout="siim", source=str(folder.resolve()), split=split,
        image_size=int(shape[0]), classes=("benign", "malignant"), n_classes=2, id_name="image_name",
        labelled=labelled, n_folds=n_folds, folds=folds, shards=tuple(names), count=count_data_items(names),
        # Codes are the public set's own label encodings; their value tables are not in the files.
        metadata=MetadataColumns(numeric=tuple(c for c in _PUBLIC_META_NUMERIC if c in fields),
                                 categorical={c: () for c in _PUBLIC_META_CATEGORICAL if c in fields}),
        encoding=Encoding(),
    )


def list_shards(folder: str | Path, folds: Iterable[int] | None = None, split: str | None = None) -> list[Path]:
    """Shard paths of a records folder (optionally only ``folds``), sorted by name."""
    folder = Path(folder)
    manifest = read_manifest(folder, split)
    if folds is None:
        names = list(manifest.shards)
    else:
        names = [name for f in folds for name in manifest.fold(f, folder).shards]
    paths = sorted((folder / n for n in set(names)), key=lambda p: p.name)
    for p in paths:
        if not p.is_file():
            raise KitError(f"{p}: listed in manifest.json but missing")
    return paths


def load_dataset(
    paths: Sequence[str | Path],
    *,
    ordered: bool = True,
    decode: bool = True,
    manifest: Manifest | None = None,
) -> tf.data.Dataset:
    """A dataset of dicts (image, image_name, target, fold, group, metadata) from record shards.

    ``ordered=True`` reads the shards one after another in the order given (predictions line up
    with ids); ``ordered=False`` interleaves up to 16 shards read in parallel, in an order that is
    still the same run after run (so a seeded training run repeats).
    ``decode=False`` leaves ``image`` as the JPEG bytes. Works on kit's records and on public
    SIIM-ISIC TFRecords (fold = shard number, group = patient_id).
    """
    paths = [str(p) for p in paths]
    if not paths:
        raise KitError("load_dataset: no shards given")
    if manifest is None:
        manifest = read_manifest(Path(paths[0]).parent, parse_shard_name(paths[0])[0])
    public = manifest.public
    size = manifest.image_size
    numeric = list(manifest.metadata.numeric)
    categorical = list(manifest.metadata.categorical)
    if public:
        types = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}
        spec = {k: tf.io.FixedLenFeature([], types[v]) for k, v in manifest.public_fields.items()}
        folds = [parse_shard_name(p)[1] if parse_shard_name(p)[0] == "train" else -1 for p in paths]
    else:
        spec = feature_spec(numeric, categorical)
        folds = [-1] * len(paths)

    def parse(record: tf.Tensor, fold: tf.Tensor) -> dict:
        ex = tf.io.parse_single_example(record, spec)
        image = ex["image"]
        if decode:
            image = decode_image(image, jpeg=True)
            if size:
                image = tf.ensure_shape(image, [size, size, 3])
        out = {"image": image, "image_name": ex["image_name"]}
        if public:
            out["target"] = ex["target"] if "target" in ex else tf.constant(-1, tf.int64)
            out["fold"] = fold
            pid = ex.get("patient_id", ex["image_name"])
            out["group"] = pid if pid.dtype == tf.string else tf.strings.as_string(pid)
        else:
            out["target"], out["fold"], out["group"] = ex["target"], ex["fold"], ex["group"]
        for c in numeric:
            out[c] = tf.cast(ex[c], tf.float32)
        for c in categorical:
            out[c] = ex[c] if ex[c].dtype == tf.int64 else tf.cast(ex[c], tf.int64)
        return out

    files = tf.data.Dataset.from_tensor_slices((paths, tf.constant(folds, tf.int64)))

    def read(path: tf.Tensor, fold: tf.Tensor) -> tf.data.Dataset:
        return shard_reader(path).map(lambda r: (r, fold))

    ds = files.flat_map(read) if ordered else interleave_shards(files, read, len(paths))
    return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def shard_reader(path: tf.Tensor) -> tf.data.Dataset:
    """The raw records of one shard, read in 8 MiB blocks."""
    return tf.data.TFRecordDataset(path, buffer_size=8 * 2**20)


def interleave_shards(files: tf.data.Dataset, read: Any, n_files: int) -> tf.data.Dataset:
    """``read(file)`` of up to 16 shards at once, in parallel, interleaved in a fixed order.

    Deterministic, so a seeded CPU run repeats bit for bit; measured no slower here than
    deterministic=False (benchmarks/pipeline.py, augmentation off: 0.86-1.0x of decode-only)."""
    return files.interleave(read, cycle_length=min(n_files, 16), num_parallel_calls=tf.data.AUTOTUNE,
                            deterministic=True)


def read_metadata(folder: str | Path, split: str | None = None, *,
                  train_manifest: Manifest | None = None) -> tuple[pd.DataFrame, Manifest]:
    """(table, manifest) of a records folder without its images: image_name, target, fold, group, then metadata.

    Rows are in record order (shards by name). Numeric metadata is float64 with NaN for missing;
    categorical metadata is a pandas ``Categorical`` over the manifest's code table (the codes
    themselves when the table is unknown, as for public SIIM-ISIC shards), missing (-1) as NaN.
    With ``train_manifest``, ``folder`` may also be a competition download: its test split's table, read
    as ``stream_test_split`` reads it (ISIC 2024's hidden test set has no records).
    """
    folder = Path(folder)
    if (train_manifest is not None and folder.is_dir() and not (folder / "manifest.json").is_file()
            and not any(folder.glob("*.tfrec"))):
        return _download_metadata(folder, train_manifest)
    manifest = read_manifest(folder, split)
    paths = list_shards(folder, split=manifest.split)
    numeric = list(manifest.metadata.numeric)
    categorical = dict(manifest.metadata.categorical)
    keep = ("image_name", "target", "fold", "group", *numeric, *categorical)
    ds = load_dataset(paths, decode=False, manifest=manifest).map(lambda ex: {k: ex[k] for k in keep}).batch(8192)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in keep}
    for batch in ds.as_numpy_iterator():
        for k in keep:
            parts[k].append(batch[k])
    cols = {k: (np.concatenate(v) if v else np.array([])) for k, v in parts.items()}
    table = pd.DataFrame({
        "image_name": [x.decode() for x in cols["image_name"]],
        "target": cols["target"].astype(np.int64),
        "fold": cols["fold"].astype(np.int64),
        "group": [x.decode() for x in cols["group"]],
    })
    for c in numeric:
        table[c] = cols[c].astype(np.float64)
    for c, names in categorical.items():
        codes = cols[c].astype(np.int64)
        if names:
            labels = list(names)
        else:  # public shards: the label encodings without their tables
            labels = sorted({int(x) for x in codes if x >= 0})
            codes = np.searchsorted(np.asarray(labels, np.int64), codes) if labels else codes
            codes[cols[c] < 0] = -1
        table[c] = pd.Categorical.from_codes(np.where(codes < len(labels), codes, -1), categories=labels)
    return table, manifest


def _download_metadata(source: Path, train_manifest: Manifest) -> tuple[pd.DataFrame, Manifest]:
    """The test split of a download as ``read_metadata`` returns records: only the train records' metadata
    columns that the test split has, categories coded by the train records' tables."""
    src = sources.load_source(source, test=True)
    if src.layout != train_manifest.layout:
        raise KitError(f"{source}: a {src.layout} download, but the train records are {train_manifest.layout}")
    meta = train_manifest.metadata
    t = src.table.reset_index(drop=True)
    table = pd.DataFrame({"image_name": t["image_name"].astype(str), "target": np.full(len(t), -1, np.int64),
                          "fold": np.full(len(t), -1, np.int64), "group": t["group"].astype(str)})
    numeric = tuple(c for c in meta.numeric if c in t.columns)
    categorical = {c: codes for c, codes in meta.categorical.items() if c in t.columns}
    for c in numeric:
        table[c] = t[c].to_numpy(np.float64)
    for c, codes in categorical.items():
        table[c] = pd.Categorical(t[c].to_numpy(dtype=object), categories=list(codes))
    manifest = _test_manifest(train_manifest, str(source), len(t), MetadataColumns(numeric, categorical))
    return table, manifest


def _test_manifest(train: Manifest, source: str, count: int, metadata: MetadataColumns) -> Manifest:
    """A test split's manifest for a download read without records: the train records' size, classes, id and
    competition, with the test split's own count and metadata columns."""
    return Manifest(image_size=train.image_size, shards=(), split="test", layout=train.layout,
                    competition=train.competition, source=source, classes=train.classes, n_classes=train.n_classes,
                    id_name=train.id_name, labelled=False, count=count, metadata=metadata,
                    encoding=train.encoding or Encoding())
