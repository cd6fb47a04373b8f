"""A test split served straight from its download, with no records written: :class:`ImageStream`."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from kit.data import imaging, sources
from kit.core.errors import KitError
from kit.data.image_workers import PARALLEL_MIN_IMAGES, run_chunks, worker_rows
from kit.data.manifest import Encoding, Manifest, MetadataColumns, test_manifest
from kit.data.record_schema import tf


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

    @property
    def n_images(self) -> int:
        """Images in the stream (the name every source of images answers to; kit.data.record_readers.ShardFiles)."""
        return len(self.rows)

    def records(self, training: bool = False) -> tf.data.Dataset:
        """The images as ``ShardFiles.records`` gives records: a stream is always in table order."""
        return self.dataset()

    def ids(self) -> pd.DataFrame:
        """image_name, target, fold, group of each image, in stream order, without preparing a single image."""
        fields = [f for _, f in self.rows]
        return pd.DataFrame({k: [f[k] for f in fields] for k in ("image_name", "target", "fold", "group")})

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
        parallel = self.workers > 1 and len(self.rows) >= PARALLEL_MIN_IMAGES
        results = run_chunks(chunks, size, enc.resize, enc.quality, self.workers if parallel else 1,
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
    manifest = test_manifest(train_manifest, str(source), len(table), kept)
    return ImageStream(worker_rows(table, src), manifest, workers or os.cpu_count() or 1)
