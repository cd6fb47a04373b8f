"""TFRecords: the parallel sharded writer, and the one name to import records' whole API from.

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
kit.data.sources, assigns leak-free folds with kit.data.folds, then decodes, resizes (policy: kit.data.imaging)
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

Where each part lives (every name is importable from here too): the schema and shard names in
kit.data.record_schema, ``Manifest`` in kit.data.manifest, the worker pool in kit.data.image_workers, ``ImageStream`` in
kit.data.imagestream, the readers in kit.data.record_readers; this module is the writer.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

import kit
from kit.data import competitions, folds as kfolds
from kit.data import imaging, sources
from kit.core.errors import KitError
from kit.core.fsutil import atomic_dir, write_json
from kit.core.task import task_for
from kit.data.image_workers import PARALLEL_MIN_IMAGES, run_chunks, worker_rows
from kit.data.imagestream import ImageStream, stream_test_split
from kit.data.manifest import (MANIFEST_KEYS, PUBLIC_FORMAT, ColumnStats, Encoding, FoldInfo, Manifest, MetadataColumns,
                          SkippedImage, TrainDuplicate)
from kit.data.record_readers import (ShardFiles, as_images, interleave_shards, list_shards, load_dataset, read_manifest,
                                read_metadata, read_once, shard_reader)
from kit.data.record_schema import (SHARD_RE, core_features, count_data_items, decode_image, feature_spec, parse_shard_name,
                               shard_name, to_example, verify_shards)

# The names callers import from kit.data.records (tests, notebooks, every kit module that reads records), kept as
# they were before the schema, manifest, stream and readers became their own modules.
__all__ = [
    "SHARD_RE", "MANIFEST_KEYS", "PUBLIC_FORMAT", "ColumnStats", "Encoding", "FoldInfo", "ImageStream", "Manifest",
    "MetadataColumns", "SkippedImage", "TrainDuplicate", "check_out_folder", "core_features", "count_data_items",
    "decode_image", "feature_spec", "format_summary", "interleave_shards", "list_shards", "load_dataset",
    "parse_shard_name", "read_manifest", "read_metadata", "shard_name", "shard_reader", "stream_test_split",
    "to_example", "verify_shards", "write_encoded", "write_from_source", "ShardFiles", "as_images", "read_once",
]


# --- writer --------------------------------------------------------------------------------------

SMOKE_SIZE = 64  # the image side cap of a smoke rehearsal: it checks a command line, not a model
_PARALLEL_MIN_IMAGES = PARALLEL_MIN_IMAGES  # the name tests read
SHARD_BYTES = 100 * 2**20  # default shard size: large enough for fast reads, small enough to stream


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
    rows = worker_rows(table, src)
    workers = workers or os.cpu_count() or 1
    n_chunks_wanted = max(1, workers * 4)
    chunk = max(1, min(32, -(-len(table) // n_chunks_wanted)))
    chunks: list[tuple[int, np.ndarray]] = []
    for shard_idx, idx in enumerate(plan):
        chunks += [(shard_idx, part) for part in np.array_split(idx, max(1, -(-len(idx) // chunk)))]
    parallel = workers > 1 and len(table) >= PARALLEL_MIN_IMAGES

    from tqdm.auto import tqdm

    skipped = list(src.skipped)
    with atomic_dir(out) as tmp:
        bar = tqdm(total=len(table), unit="img", desc=f"kit records {split}", disable=not progress,
                   file=sys.stderr, mininterval=0.5)
        results = run_chunks([[rows[i] for i in idx] for _, idx in chunks], size, resize, quality,
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
    rows = worker_rows(table, src)
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
    lines.append(f"{'fold':>5} {'images':>7} {'groups':>7}  {task_for(m.n_classes).count_label}")
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
