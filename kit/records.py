"""TFRecord schema, shard naming and reading (the writer is added beside them).

One schema serves writing and reading. A record holds:

    image        bytes   JPEG, already resized to the manifest's image size
    image_name   bytes   the competition's id, exactly as the competition writes it
    target       int64   class index; -1 when unlabelled
    fold         int64   fold index; -1 for test records
    group        bytes   patient or lesion id (the unit folds never split)
    <metadata>   float32 numeric columns, int64 codes for categorical ones (tables in manifest.json)

Shards are named ``{split}{NN}-{count}.tfrec`` (``train03-412.tfrec``) so that
``count_data_items`` knows how many images a set of shards holds without reading them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import tensorflow as tf

CORE_FEATURES: dict[str, tf.io.FixedLenFeature] = {
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


def count_data_items(paths: Iterable[str | Path]) -> int:
    """Number of records in ``paths``, read from the shard names alone (no scan)."""
    return sum(parse_shard_name(p)[2] for p in paths)


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int(value: int) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(value)]))


def _float(value: float) -> tf.train.Feature:
    return tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))


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
    feature = {
        "image": _bytes(image),
        "image_name": _bytes(str(image_name).encode()),
        "target": _int(target),
        "fold": _int(fold),
        "group": _bytes(str(group).encode()),
    }
    for name, value in (numeric or {}).items():
        feature[name] = _float(value)
    for name, value in (categorical or {}).items():
        feature[name] = _int(value)
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def feature_spec(
    numeric: Sequence[str] = (), categorical: Sequence[str] = ()
) -> dict[str, tf.io.FixedLenFeature]:
    """The parse spec for kit's records with the given metadata columns."""
    spec = dict(CORE_FEATURES)
    for name in numeric:
        spec[name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
    for name in categorical:
        spec[name] = tf.io.FixedLenFeature([], tf.int64, default_value=-1)
    return spec


def decode_image(data: tf.Tensor, channels: int = 3) -> tf.Tensor:
    """Decode JPEG/PNG bytes to a uint8 HxWxC tensor."""
    return tf.io.decode_image(data, channels=channels, expand_animations=False)
