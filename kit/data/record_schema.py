"""The TFRecord schema of kit's records: the fields of a record, shard names, and decoding an image."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Protocol, Sequence

from kit.data import imaging
from kit.core.errors import KitError



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


class KnowsItsLength(Protocol):
    """A source of images that knows how many it serves (kit.data.imagestream.ImageStream, ShardFiles)."""

    n_images: int


def count_data_items(paths: "Iterable[str | Path] | KnowsItsLength") -> int:
    """Number of records in ``paths``, read from the shard names alone (no scan), or the images of a stream."""
    known = getattr(paths, "n_images", None)  # a source of images (kit.data.record_readers.as_images) knows its length
    if known is not None:
        return known
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
