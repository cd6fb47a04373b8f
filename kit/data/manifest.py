"""manifest.json as one typed definition: :class:`Manifest` and its parts, written and read through it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from kit.data import imaging
from kit.core.errors import KitError
from kit.core.task import Task, task_for

PUBLIC_FORMAT = "siim-isic-public"  # the encoding format of public SIIM-ISIC shards read as they are


# --- the manifest ---------------------------------------------------------------------------------
# One definition of manifest.json for both directions: the writer builds a Manifest and writes its to_json(),
# every reader gets Manifest.from_json() of the file and reads attributes. Fields only ever get added
# (docs/data.md, "The record schema"): a manifest written before a field existed reads with the field's default.

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
    competition: str | None = None  # kit.data.competitions' name: the metric, submission and notebook
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
        return self.task.name == "binary"

    @property
    def task(self) -> Task:
        """The records' task (binary or multi-class), from their classes."""
        return task_for(self.n_classes or 2)

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



def test_manifest(train: Manifest, source: str, count: int, metadata: MetadataColumns) -> Manifest:
    """A test split's manifest for a download read without records: the train records' size, classes, id and
    competition, with the test split's own count and metadata columns."""
    return Manifest(image_size=train.image_size, shards=(), split="test", layout=train.layout,
                    competition=train.competition, source=source, classes=train.classes, n_classes=train.n_classes,
                    id_name=train.id_name, labelled=False, count=count, metadata=metadata,
                    encoding=train.encoding or Encoding())
