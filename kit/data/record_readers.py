"""Reading records: the manifest of a folder (kit's own, or public SIIM-ISIC shards), its shards, a tf.data
dataset of them, and their metadata table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from kit.data import imaging, sources
from kit.core.errors import KitError
from kit.data.imagestream import ImageStream
from kit.data.manifest import PUBLIC_FORMAT, Encoding, FoldInfo, Manifest, MetadataColumns, test_manifest
from kit.data.record_schema import count_data_items, decode_image, feature_spec, parse_shard_name, tf, verify_shards


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
    manifest = test_manifest(train_manifest, str(source), len(t), MetadataColumns(numeric, categorical))
    return table, manifest


# --- a source of images ---------------------------------------------------------------------------
# The pipeline and `kit predict` read images from shard files or, for a test split read straight from its
# download, from an ImageStream. Both answer the same five questions (n_images, manifest, head, records, ids),
# so a reader asks the source instead of asking which kind it holds; as_images is the one place that tells.


def as_images(paths: "Iterable[str | Path] | ImageStream | ShardFiles") -> "ImageStream | ShardFiles":
    """``paths`` as a source of images: an ImageStream or ShardFiles as it is, else shard paths checked to exist."""
    return paths if isinstance(paths, (ImageStream, ShardFiles)) else ShardFiles.checked(paths)


class ShardFiles(list):
    """Shard paths (``str``) as a source of images, with ImageStream's interface: n_images, manifest, head,
    records, ids."""

    @classmethod
    def checked(cls, paths: Iterable[str | Path]) -> "ShardFiles":
        """The shards of ``paths``; KitError when there are none or one is missing."""
        files = cls(str(p) for p in paths)
        if not files:
            raise KitError("records: no shards to read")
        missing = [p for p in files if not Path(p).is_file()]
        if missing:
            raise KitError(f"{missing[0]}: shard not found")
        return files

    @property
    def n_images(self) -> int:
        """Records in the shards, from their names (ValueError for a shard named otherwise)."""
        return sum(parse_shard_name(p)[2] for p in self)

    @property
    def manifest(self) -> Manifest | None:
        """The manifest of the records the shards come from; None for shards without one (named otherwise)."""
        first = Path(self[0])
        try:
            return read_manifest(first.parent, parse_shard_name(first)[0])
        except (KitError, ValueError):
            return None

    def head(self, n: int) -> "ShardFiles":
        """The same shards: a reader takes the first ``n`` images as it goes (nothing is prepared ahead)."""
        return self

    def records(self, training: bool = False) -> tf.data.Dataset:
        """Parsed records, image still encoded: in the order of the shards and of each file unless training."""
        ds = load_dataset(list(self), ordered=not training, decode=False)
        if training:
            return ds
        try:
            n = self.n_images
        except ValueError:  # shards named otherwise: length unknown until read
            return ds
        # Known length from the shard names: Keras sizes its progress and steps without a first pass.
        return ds.apply(tf.data.experimental.assert_cardinality(n))

    def ids(self) -> pd.DataFrame:
        """image_name, target, fold, group of each record, in record order (the order of ``records()``)."""
        keys = ["image_name", "target", "fold", "group"]
        manifest = self.manifest
        if manifest is not None and not manifest.public:  # kit's own schema: parsed here, no dataset to trace
            return pd.DataFrame(_own_record_columns(self), columns=keys)
        ds = read_once(self.records().map(lambda ex: {k: ex[k] for k in keys}).batch(4096))
        cols: dict[str, list] = {k: [] for k in keys}
        for b in ds.as_numpy_iterator():
            cols["image_name"] += [x.decode() for x in b["image_name"]]
            cols["target"] += b["target"].tolist()
            cols["fold"] += b["fold"].tolist()
            cols["group"] += [x.decode() for x in b["group"]]
        return pd.DataFrame(cols)


def _own_record_columns(paths: Sequence[str | Path]) -> list[tuple[str, int, int, str]]:
    """(image_name, target, fold, group) of each record of kit's own shards, in record order."""
    def text(f: Any, key: str) -> str:
        return f[key].bytes_list.value[0].decode() if key in f and f[key].bytes_list.value else ""

    def number(f: Any, key: str) -> int:  # the parse spec's default, -1, for a record without the field
        return int(f[key].int64_list.value[0]) if key in f and f[key].int64_list.value else -1

    rows = []
    for path in paths:
        for payload in imaging.read_tfrecords(path):
            f = tf.train.Example.FromString(payload).features.feature
            rows.append((text(f, "image_name"), number(f, "target"), number(f, "fold"), text(f, "group")))
    return rows


def read_once(ds: tf.data.Dataset) -> tf.data.Dataset:
    """A dataset read once from start to end (validation, prediction): deterministic order, and no autotuning.

    TensorFlow's autotuner sleeps between its rounds for a period that doubles as the iteration goes on, and
    deleting an iterator can wait for the round in progress to end: measured here, predicting 20,000 images
    straight from an HDF5 took 6.3 s or 10.5 s at random, every slow run ending in that wait (the
    ``~RootDataset::Iterator`` destructor). With it off the stall is gone, and the fixed parallelism it leaves
    read 20,000 test records 1.08-1.13 s against 1.19-1.25 s with it on."""
    opts = tf.data.Options()
    opts.deterministic = True
    opts.autotune.enabled = False
    return ds.with_options(opts)
