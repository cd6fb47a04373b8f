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

The writer (``write_from_source`` / ``write_records``) reads a competition download through
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

The reader (``read_manifest``, ``list_shards``, ``load_dataset``) also reads a folder of public
SIIM-ISIC TFRecords as they are: no manifest, no ``fold`` field; the shard number is the fold.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import itertools
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

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


def count_data_items(paths: Iterable[str | Path]) -> int:
    """Number of records in ``paths``, read from the shard names alone (no scan)."""
    return sum(parse_shard_name(p)[2] for p in paths)


def verify_shards(paths: Iterable[str | Path]) -> None:
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
            raise KitError(f"{p}: damaged shard ({exc}); write the records again") from None
        if found != expected:
            raise KitError(f"{p}: holds {found} records, its name says {expected}; write the records again")


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


def decode_image(data: tf.Tensor, channels: int = 3) -> tf.Tensor:
    """Decode JPEG/PNG bytes to a uint8 HxWxC tensor."""
    return tf.io.decode_image(data, channels=channels, expand_animations=False)


# --- writer --------------------------------------------------------------------------------------

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
    source: str | Path,
    out: str | Path,
    *,
    layout: str = "auto",
    id_col: str | None = None,
    label_col: str | None = None,
    group_col: str | None = None,
    images: str | Path | None = None,
    n_folds: int = 5,
    size: int = 256,
    n_shards: int | None = None,
    test: bool = False,
    seed: int = 42,
    skip_bad: bool = False,
    workers: int | None = None,
    resize: str = "crop",
    quality: int = imaging.JPEG_QUALITY,
    progress: bool = True,
) -> dict:
    """Read a competition download and write its train (or ``test``) split as records; returns the manifest.

    Example:
        >>> m = write_from_source("data/siim", "records/siim-256", size=256, n_folds=5)
        >>> print(format_summary(m))
    """
    check_out_folder(out)
    from kit.config import smoke_size

    size = smoke_size(size)  # KIT_SMOKE=1: a smoke rehearsal writes small images
    src = sources.load_source(source, layout=layout, id_col=id_col, label_col=label_col, group_col=group_col,
                              images=images, test=test, skip_bad=skip_bad)
    train = sources.train_split_of(src) if test else None
    return write_records(src, out, n_folds=n_folds, size=size, n_shards=n_shards, test=test, seed=seed,
                         skip_bad=skip_bad, workers=workers, resize=resize, quality=quality, progress=progress,
                         source_path=str(Path(source).resolve()), train=train)


def write_records(
    src: sources.Source,
    out: str | Path,
    *,
    n_folds: int = 5,
    size: int = 256,
    n_shards: int | None = None,
    test: bool = False,
    seed: int = 42,
    skip_bad: bool = False,
    workers: int | None = None,
    resize: str = "crop",
    quality: int = imaging.JPEG_QUALITY,
    progress: bool = True,
    source_path: str | None = None,
    train: sources.Source | None = None,
) -> dict:
    """Write ``src`` as sharded records with folds (fold -1 when ``test``) into ``out``; returns the manifest.

    With ``test`` and the competition's ``train`` split, test images byte-identical to a training
    image are listed in the manifest (``train_duplicates``); they are written all the same, since
    a submission needs a prediction for every test id.
    """
    out = Path(out)
    check_out_folder(out)
    if size < 8:
        raise KitError(f"--size {size}: images must be at least 8 pixels")
    for flag, value, low in (("--seed", seed, 0), ("--folds", n_folds, 2), ("--shards", n_shards, 1),
                             ("--workers", workers, 1)):
        if value is not None and value < low and not (flag == "--folds" and test):
            raise KitError(f"{flag} {value}: must be at least {low}")
    if resize not in imaging.RESIZE_POLICIES:
        raise KitError(f"resize {resize!r}: must be one of {', '.join(imaging.RESIZE_POLICIES)}")
    split = "test" if test else "train"
    table = src.table.reset_index(drop=True).copy()
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
    bad_rows: list[int] = []
    shard_names: list[str] = []
    shard_of_row = np.full(len(table), -1)
    with atomic_dir(out) as tmp:
        bar = tqdm(total=len(table), unit="img", desc=f"kit records {split}", disable=not progress,
                   file=sys.stderr, mininterval=0.5)
        current, writer, part, count = -1, None, None, 0
        results = _run_chunks([[rows[i] for i in idx] for _, idx in chunks], size, resize, quality,
                              workers if parallel else 1)

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
                        path = table.at[i, "path"]
                        if not skip_bad:
                            raise KitError(f"{path}: {reason} (pass --skip-bad to leave it out)")
                        skipped.append({"path": path, "reason": reason})
                        bad_rows.append(int(i))
                        continue
                    writer.write(blob)
                    shard_of_row[i] = len(shard_names)
                    count += 1
                bar.update(len(idx))
            close_shard()
            writer = None
        finally:
            results.close()  # stops the workers at once on an error or Ctrl-C
            if writer is not None:
                writer.close()
            bar.close()
        written = table.drop(index=bad_rows)
        if written.empty:
            raise KitError(f"{src.root}: every image was bad; nothing to write")
        if train_dups is not None:
            kept = set(written["image_name"].astype(str))
            train_dups = [d for d in train_dups if d["image_name"] in kept]
        manifest = _manifest(src, written, table, split, size, n_folds if not test else 0, seed, shard_names,
                             shard_of_row, skipped, digests, resize, quality, source_path, train_dups)
        write_json(tmp / "manifest.json", manifest)
    return manifest


def _plan_shards(table: pd.DataFrame, split: str, n_folds: int, n_shards: int | None, size: int, quality: int,
                 seed: int) -> list[np.ndarray]:
    """Row indices per shard, in shard order: folds in order, one fold per shard, rows shuffled in a fold."""
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
        idx = rng.permutation(np.flatnonzero(folds == f))
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


def _run_chunks(chunks: list[list], size: int, policy: str, quality: int, workers: int) -> Iterator[list]:
    """Prepared records per chunk, in chunk order, from ``workers`` processes (or this one)."""
    if workers <= 1:
        for c in chunks:
            yield imaging.make_records(c, size, policy, quality)
        return
    pool = imaging.worker_pool(workers)
    try:
        # A bounded window of chunks in flight, not all of them: results wait in memory only until read,
        # which matters when a slow reader (a model predicting 500,000 images) consumes them
        pending: deque = deque()
        todo = iter(chunks)
        for c in itertools.islice(todo, workers * 4):
            pending.append(pool.submit(imaging.make_records, c, size, policy, quality))
        while pending:
            done = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(imaging.make_records, nxt, size, policy, quality))
            yield done
    finally:
        # On an error or Ctrl-C, drop the queued work instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)


_STREAM_CHUNK = 64  # images per worker task when streaming a test split


@dataclass
class ExampleStream:
    """A test split served straight from its download: serialized Examples prepared exactly as ``kit records``
    prepares them (the same workers, resize and JPEG), in table order, with nothing written to disk.

    ``kit predict`` reads ISIC 2024's ~500,000 hidden test images this way on the rerun, instead of
    writing records first. ``manifest`` mirrors a test records manifest (size, classes, metadata codes).
    """

    rows: list[tuple[str, dict]]
    manifest: dict
    workers: int

    @property
    def count(self) -> int:
        """Images in the stream."""
        return len(self.rows)

    def chunks(self) -> Iterator[list[bytes]]:
        """The serialized Examples in order, a worker's chunk at a time; KitError naming the image when one
        cannot be read."""
        enc = self.manifest["encoding"]
        chunks = [self.rows[i:i + _STREAM_CHUNK] for i in range(0, len(self.rows), _STREAM_CHUNK)]
        parallel = self.workers > 1 and len(self.rows) >= _PARALLEL_MIN_IMAGES
        results = _run_chunks(chunks, int(self.manifest["image_size"]), enc["resize"], int(enc["quality"]),
                              self.workers if parallel else 1)
        try:
            for chunk, res in zip(chunks, results):
                for (path, _), (blob, reason) in zip(chunk, res):
                    if blob is None:
                        raise KitError(f"{path}: {reason}; every test image is needed for a submission")
                yield [blob for blob, _ in res]
        finally:
            results.close()

    def examples(self) -> Iterator[bytes]:
        """The serialized Examples in order, one by one."""
        for chunk in self.chunks():
            yield from chunk

    def dataset(self) -> tf.data.Dataset:
        """The stream as a tf.data dataset of serialized Examples (of known length)."""
        # whole chunks cross from Python into tf.data: from_generator costs about 0.5 ms per element it
        # hands over (the generator runs under the GIL, beside the thread feeding the model), which one
        # element per image made the limit of predicting straight from a download
        ds = tf.data.Dataset.from_generator(self.chunks, output_signature=tf.TensorSpec((None,), tf.string))
        return ds.unbatch().apply(tf.data.experimental.assert_cardinality(self.count))


def stream_test_split(source: str | Path, train_manifest: Mapping, *, workers: int | None = None,
                      columns: Sequence[str] | None = None) -> ExampleStream:
    """The test split of the download ``source`` as an ExampleStream matching the train records of
    ``train_manifest``: their image size, resize and JPEG settings, and their categorical code tables.

    ``columns`` keeps only those metadata columns (a run's model inputs; ``None``: all of the records'):
    unlike records written for any later run, a stream serves one run, and ISIC 2024's 41 columns cost
    about as much to serialize and parse as a small image does to prepare."""
    src = sources.load_source(source, test=True)
    if src.layout != train_manifest.get("layout"):
        raise KitError(f"{source}: a {src.layout} download, but the run trained on {train_manifest.get('layout')} "
                       "records")
    meta = train_manifest.get("metadata") or {}
    # codes as in training: a category's index must mean the same thing in train and test
    src.categories = {c: list(codes) for c, codes in (meta.get("categorical") or {}).items()}
    wanted = set(src.table.columns) if columns is None else set(columns) & set(src.table.columns)
    src.numeric = [c for c in meta.get("numeric", []) if c in wanted]
    src.categorical = [c for c in src.categories if c in wanted]
    table = src.table.reset_index(drop=True).assign(fold=-1)
    keep = ("image_size", "classes", "n_classes", "id_name", "layout", "competition")
    manifest = {**{k: train_manifest[k] for k in keep if k in train_manifest},
                "split": "test", "labelled": False, "count": len(table), "folds": {}, "source": str(source),
                "metadata": {"numeric": src.numeric, "categorical": {c: src.categories[c] for c in src.categorical}},
                "encoding": train_manifest.get("encoding") or {"resize": "crop", "quality": imaging.JPEG_QUALITY}}
    return ExampleStream(_worker_rows(table, src), manifest, workers or os.cpu_count() or 1)


def _manifest(src, written, table, split, size, n_folds, seed, shard_names, shard_of_row, skipped, digests,
              resize, quality, source_path, train_dups) -> dict:
    folds_info = kfolds.fold_summary(written, src.classes)
    for key, info in folds_info.items():
        rows = written.index[written["fold"] == int(key)]
        info["shards"] = sorted({shard_names[int(s)] for s in shard_of_row[rows]})
    by_digest: dict[str, list[str]] = {}
    for d, name in zip(digests, table["image_name"]):
        if d:
            by_digest.setdefault(d, []).append(str(name))
    duplicates = [names for names in by_digest.values() if len(names) > 1]
    stats = {}
    for c in src.numeric:
        v = written[c].to_numpy(dtype=np.float64)
        ok = v[~np.isnan(v)]
        stats[c] = {"mean": float(ok.mean()) if ok.size else 0.0, "std": float(ok.std()) if ok.size else 0.0,
                    "missing": int(np.isnan(v).sum())}
    # Only a test split can hold images of the train split; null there means nothing to compare with.
    test_only = {"train_duplicates": train_dups} if split == "test" else {}
    comp = competitions.identify(src.layout, src.classes)
    return {
        "competition": comp.name if comp else None,  # kit.competitions: the metric, submission, notebook
        "layout": src.layout,
        "train_only_columns": list(src.train_only),  # in train, not in test: never metadata inputs
        "source": source_path or src.root,
        "split": split,
        "image_size": int(size),
        "classes": list(src.classes),
        "n_classes": len(src.classes),
        "id_name": src.id_name,
        "labelled": bool(src.labelled),
        "n_folds": int(n_folds),
        "fold_seed": int(seed) if n_folds else None,
        "folds": folds_info,
        "shards": list(shard_names),
        "count": int(len(written)),
        "metadata": {
            "numeric": list(src.numeric),
            "categorical": {c: list(src.categories.get(c, [])) for c in src.categorical},
            "numeric_stats": stats,
        },
        "encoding": {"format": "jpeg", "quality": int(quality), "resize": resize, "resample": "bicubic",
                     "channels": 3},
        "duplicates": duplicates,
        **test_only,
        "skipped": skipped,
        "kit_version": kit.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def format_summary(manifest: Mapping) -> str:
    """Per-fold table of a manifest: images, groups, and positives or class counts."""
    m = manifest
    lines = [f"{m['split']}: {m['count']} images, {len(m['shards'])} shards, {m['image_size']}x{m['image_size']} px, "
             f"layout {m['layout']}, classes {', '.join(m['classes']) or '-'}"
             + (f", {m['n_folds']} folds (seed {m['fold_seed']})" if m.get("n_folds") else "")]
    binary = m.get("n_classes") == 2
    lines.append(f"{'fold':>5} {'images':>7} {'groups':>7}  {'positives' if binary else 'class counts'}")
    for key, f in m["folds"].items():
        if "positives" in f:
            label = f"{f['positives']} ({f['positives'] / max(1, f['images']):.1%})"
        elif "class_counts" in f:
            label = " ".join(f"{c}:{n}" for c, n in f["class_counts"].items())
        else:
            label = "-"
        lines.append(f"{key:>5} {f['images']:>7} {f.get('groups', '-'):>7}  {label}")
    if m.get("duplicates"):
        where = "within the test split" if m.get("split") == "test" else "kept in one fold each"
        lines.append(f"{len(m['duplicates'])} set(s) of byte-identical images {where}")
    if m.get("skipped"):
        lines.append(f"skipped {len(m['skipped'])} bad image(s), listed in manifest.json; first: "
                     f"{m['skipped'][0]['path']}: {m['skipped'][0]['reason']}")
    if m.get("train_only_columns"):
        cols = m["train_only_columns"]
        lines.append(f"{len(cols)} train-only column(s) left out of the metadata (not in the test CSV): "
                     + ", ".join(cols))
    line = _train_duplicates_line(m)
    if line:
        lines.append(line)
    return "\n".join(lines)


def _train_duplicates_line(m: Mapping) -> str:
    """The summary's line on test images byte-identical to training images ("" when there is nothing to say)."""
    if m.get("split") != "test" or "train_duplicates" not in m:
        return ""
    dups = m["train_duplicates"]
    if dups is None:
        return "note: no train split found beside this test split; test images not compared with training images"
    if not dups:
        return ""
    first = dups[0]
    n = len(dups)
    what = ("scores on this labelled test split overstate the model (kit predict also scores without them)"
            if m.get("labelled") else "leaderboard scores on them overstate the model")
    return (f"warning: {n} test image{'s are' if n != 1 else ' is'} byte-identical to training images "
            f"(first: test {first['image_name']} = train {first['train_image_name']}); {what}")


# --- reader --------------------------------------------------------------------------------------

_PUBLIC_META_NUMERIC = ["age_approx"]
_PUBLIC_META_CATEGORICAL = ["sex", "anatom_site_general_challenge"]


MANIFEST_KEYS = ("image_size", "shards")  # what every reader of a manifest needs


def read_manifest(folder: str | Path, split: str | None = None) -> dict:
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
            manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise KitError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict):
            raise KitError(f"{path}: not a kit manifest (a JSON {type(manifest).__name__}, not an object)")
        missing = [k for k in MANIFEST_KEYS if k not in manifest]
        if missing:
            raise KitError(f"{path}: not a kit manifest (no {missing[0]!r}); write the records again")
        return manifest
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


def _public_manifest(folder: Path, split: str, shards: list[Path]) -> dict:
    first = next(iter(tf.data.TFRecordDataset(str(shards[0])).take(1)), None)
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
        folds = {str(parse_shard_name(n)[1]): {"images": parse_shard_name(n)[2], "shards": [n]} for n in names}
        n_folds = len(folds)
    else:
        folds = {"-1": {"images": count_data_items(names), "shards": names}}
        n_folds = 0
    return {
        "format": PUBLIC_FORMAT,
        "public_fields": fields,
        "layout": "siim",
        "source": str(folder.resolve()),
        "split": split,
        "image_size": int(shape[0]),
        "classes": ["benign", "malignant"],
        "n_classes": 2,
        "id_name": "image_name",
        "labelled": labelled,
        "n_folds": n_folds,
        "fold_seed": None,
        "folds": folds,
        "shards": names,
        "count": count_data_items(names),
        # Codes are the public set's own label encodings; their value tables are not in the files.
        "metadata": {
            "numeric": [c for c in _PUBLIC_META_NUMERIC if c in fields],
            "categorical": {c: [] for c in _PUBLIC_META_CATEGORICAL if c in fields},
            "numeric_stats": {},
        },
        "encoding": {"format": "jpeg"},
        "duplicates": [],
        "skipped": [],
    }


def list_shards(folder: str | Path, folds: Iterable[int] | None = None, split: str | None = None) -> list[Path]:
    """Shard paths of a records folder (optionally only ``folds``), sorted by name."""
    folder = Path(folder)
    manifest = read_manifest(folder, split)
    if folds is None:
        names = list(manifest["shards"])
    else:
        names = []
        for f in folds:
            info = manifest["folds"].get(str(int(f)))
            if info is None:
                known = ", ".join(manifest["folds"])
                raise KitError(f"{folder}: no fold {f} in the records (folds: {known})")
            names += info["shards"]
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
    manifest: Mapping | None = None,
) -> tf.data.Dataset:
    """A dataset of dicts (image, image_name, target, fold, group, metadata) from record shards.

    ``ordered=True`` reads the shards one after another in the order given (predictions line up
    with ids); ``ordered=False`` interleaves up to 16 shards read in parallel, in an order that is
    still the same run after run (so a seeded training run repeats).
    ``decode=False`` leaves ``image`` as the JPEG bytes. Works on kit's records and on public
    SIIM-ISIC TFRecords (fold = shard number, group = patient_id).
    """
    stream = paths if isinstance(paths, ExampleStream) else None
    if stream is not None:
        manifest = stream.manifest
    else:
        paths = [str(p) for p in paths]
        if not paths:
            raise KitError("load_dataset: no shards given")
    if manifest is None:
        manifest = read_manifest(Path(paths[0]).parent, parse_shard_name(paths[0])[0])
    public = manifest.get("format") == PUBLIC_FORMAT
    size = manifest.get("image_size")
    numeric = list(manifest.get("metadata", {}).get("numeric", []))
    categorical = list(manifest.get("metadata", {}).get("categorical", {}))
    if public:
        types = {"bytes": tf.string, "int64": tf.int64, "float": tf.float32}
        spec = {k: tf.io.FixedLenFeature([], types[v]) for k, v in manifest["public_fields"].items()}
        folds = [parse_shard_name(p)[1] if parse_shard_name(p)[0] == "train" else -1 for p in paths]
    else:
        spec = feature_spec(numeric, categorical)
        folds = [-1] * (0 if stream is not None else len(paths))

    def parse(record: tf.Tensor, fold: tf.Tensor) -> dict:
        ex = tf.io.parse_single_example(record, spec)
        image = ex["image"]
        if decode:
            image = tf.io.decode_jpeg(image, channels=3)
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

    if stream is not None:
        ds = stream.dataset().map(lambda r: (r, tf.constant(-1, tf.int64)))
        return ds.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
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
                  train_manifest: Mapping | None = None) -> tuple[pd.DataFrame, dict]:
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
    paths = list_shards(folder, split=manifest.get("split"))
    meta = manifest.get("metadata", {})
    numeric = list(meta.get("numeric", []))
    categorical = dict(meta.get("categorical", {}))
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


def _download_metadata(source: Path, train_manifest: Mapping) -> tuple[pd.DataFrame, dict]:
    """The test split of a download as ``read_metadata`` returns records: only the train records' metadata
    columns that the test split has, categories coded by the train records' tables."""
    src = sources.load_source(source, test=True)
    if src.layout != train_manifest.get("layout"):
        raise KitError(f"{source}: a {src.layout} download, but the train records are {train_manifest.get('layout')}")
    meta = train_manifest.get("metadata") or {}
    t = src.table.reset_index(drop=True)
    table = pd.DataFrame({"image_name": t["image_name"].astype(str), "target": np.full(len(t), -1, np.int64),
                          "fold": np.full(len(t), -1, np.int64), "group": t["group"].astype(str)})
    numeric = [c for c in meta.get("numeric", []) if c in t.columns]
    categorical = {c: list(codes) for c, codes in (meta.get("categorical") or {}).items() if c in t.columns}
    for c in numeric:
        table[c] = t[c].to_numpy(np.float64)
    for c, codes in categorical.items():
        table[c] = pd.Categorical(t[c].to_numpy(dtype=object), categories=codes)
    keep = ("image_size", "classes", "n_classes", "id_name", "layout", "competition")
    manifest = {**{k: train_manifest[k] for k in keep if k in train_manifest}, "split": "test", "count": len(t),
                "source": str(source), "metadata": {"numeric": numeric, "categorical": categorical}}
    return table, manifest
