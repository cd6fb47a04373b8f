"""tf.data input for training, validation and prediction.

Stages (keras-io's recipe, prefetch last)::

    shards -> read + parse (parallel interleave when training; kit.data.records.load_dataset in order
           otherwise, and for public SIIM-ISIC TFRecords)
           -> [train: oversample, shuffle, repeat] -> decode -> batch (drop_remainder only when
           training) -> [train: augment the batch] -> prefetch

Validation and prediction are never shuffled: shards in the order given (sorted by name), records in
file order, so the i-th prediction belongs to the i-th id of :func:`record_table`.

Augmentation (the presets, the batch ops, the TTA views, Keras' random layers) is kit.training.augment's; its
names stay importable from here.

Model inputs are ``{"image": [B,S,S,3] pixels 0..255}`` (plus ``"meta": float32 [B,M]`` when metadata
columns are configured); targets are float32 for binary, int32 class indices otherwise. Images stay
uint8 wherever nothing changes their values (validation, prediction, training without host
augmentation) and are float32 after host augmentation; kit's models take either and cast inside the
step (see kit.training.models), so the host never spends a pass quadrupling the bytes and an accelerator
receives a quarter of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from kit.data import records
from kit.training.augment import (  # noqa: F401  the augmentation names, importable from here as before the split
    PRESETS,
    TTA_VIEWS,
    Augment,
    affine_transforms,
    apply_view,
    augment_batch,
    augment_seeded,
    device_augmentation,
    invariant_views,
    resolve_augment,
    tta_views,
    with_device_augmentation,
)
from kit.core.errors import KitError
from kit.core.task import task_for

if TYPE_CHECKING:
    from kit.training.config import Config

AUTOTUNE = tf.data.AUTOTUNE


# --- records -> examples ---------------------------------------------------------------------------


def _oversampled(ds: tf.data.Dataset, is_positive: Callable[[Any], tf.Tensor], share: float,
                 seed: int) -> tf.data.Dataset:
    """An endless stream with positives drawn at ``share`` and negatives at the rest, each class repeated."""
    pos = ds.filter(is_positive).repeat()
    neg = ds.filter(lambda x: tf.logical_not(is_positive(x))).repeat()
    return tf.data.Dataset.sample_from_datasets([neg, pos], [1.0 - share, share], seed=seed)


def meta_width(meta_numeric: Sequence[str] = (), meta_categorical: Mapping[str, int] | None = None) -> int:
    """Width of the "meta" input: one value per numeric column, one-hot codes per categorical one."""
    return len(meta_numeric) + sum((meta_categorical or {}).values())


def _is_jpeg(manifest: "records.Manifest | None") -> bool:
    # decode_jpeg costs a quarter less than the format-sniffing decode_image at 128 px
    if manifest is None:
        return False
    return manifest.public or (manifest.encoding is not None and manifest.encoding.format == "jpeg")


def meta_vector(meta_numeric: Sequence[str], meta_categorical: Mapping[str, int],
                meta_stats: Mapping[str, Sequence[float]] | None = None) -> Callable[[dict[str, tf.Tensor]], tf.Tensor]:
    """A parsed record -> the model's "meta" input [M]: numeric columns standardised (missing: the column mean,
    0), categorical ones one-hot (missing, -1: all zeros)."""
    stats = {c: (float(m), float(sd) if sd else 1.0) for c, (m, sd) in (meta_stats or {}).items()}

    def numeric(ex: dict[str, tf.Tensor], c: str) -> tf.Tensor:
        mean, std = stats.get(c, (0.0, 1.0))
        x = (tf.cast(ex[c], tf.float32) - mean) / std
        return tf.where(tf.math.is_nan(x), 0.0, x)[None]  # missing -> the column mean

    def vector(ex: dict[str, tf.Tensor]) -> tf.Tensor:
        parts = [numeric(ex, c) for c in meta_numeric]
        parts += [tf.one_hot(ex[c], n, dtype=tf.float32) for c, n in meta_categorical.items()]
        return tf.concat(parts, axis=0)

    return vector


def _prepare(size: int, n_classes: int, meta_numeric: Sequence[str], meta_categorical: Mapping[str, int],
             meta_stats: Mapping[str, Sequence[float]] | None = None, jpeg: bool = False):
    target_dtype = task_for(n_classes).target_dtype
    meta = meta_vector(meta_numeric, meta_categorical, meta_stats) if meta_numeric or meta_categorical else None

    def prepare(ex: dict[str, tf.Tensor]) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
        # uint8 all the way to the model, which casts inside its step: a float32 cast here made the
        # un-augmented stream 0.76x of decode-only, uint8 runs at 0.96x (benchmarks/pipeline.py)
        image = records.decode_image(ex["image"], jpeg=jpeg)
        image = tf.ensure_shape(image, [size, size, 3])
        inputs = {"image": image}
        if meta is not None:
            inputs["meta"] = meta(ex)
        target = tf.cast(ex["target"], target_dtype)
        return inputs, target

    return prepare


def make_dataset(
    paths: Sequence[str | Path],
    *,
    size: int,
    batch: int,
    training: bool,
    n_classes: int = 2,
    augment: Augment | None = None,
    oversample: float = 0.0,
    shuffle_buffer: int = 2048,
    seed: int = 0,
    meta_numeric: Sequence[str] = (),
    meta_categorical: Mapping[str, int] | None = None,
    meta_stats: Mapping[str, Sequence[float]] | None = None,
    drop_remainder: bool | None = None,
) -> tf.data.Dataset:
    """Batches of (inputs, target) from shards; training repeats forever, shuffles and augments.

    ``oversample`` (binary only) is the fraction of positives the training stream should hold.
    ``drop_remainder`` defaults to ``training``.
    """
    meta_categorical = dict(meta_categorical or {})
    if size <= 0:
        raise KitError(f"size: expects the records' image side in pixels, got {size}")
    paths = records.as_images(paths)
    manifest = paths.manifest
    augmenting = training and augment is not None and augment.active
    prepare = _prepare(size, n_classes, meta_numeric, meta_categorical, meta_stats, jpeg=_is_jpeg(manifest))
    if training and oversample:
        if task_for(n_classes).name != "binary":
            raise KitError("oversample: only binary competitions oversample the positive class")
        if not 0.0 < oversample < 1.0:
            raise KitError(f"oversample: expects a fraction in (0, 1), got {oversample}")
    if training and not (manifest is not None and manifest.public):
        # kit's own records: shuffle the serialized records (small in memory), then parse, decode and
        # cast in one parallel map; a second map stage costs as much as the cast.
        # Parse only what training feeds the model: the id, fold and group strings cost parse time per image.
        full = records.feature_spec(list(meta_numeric), list(meta_categorical))
        spec = {k: full[k] for k in ("image", "target", *meta_numeric, *meta_categorical)}
        files = tf.data.Dataset.from_tensor_slices(list(paths)).shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
        ds = records.interleave_shards(files, records.shard_reader, len(paths))
        if oversample:
            target = {"target": records.core_features()["target"]}
            ds = _oversampled(ds, lambda raw: tf.io.parse_single_example(raw, target)["target"] == 1, oversample, seed)
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.map(lambda raw: prepare(tf.io.parse_single_example(raw, spec)), num_parallel_calls=AUTOTUNE)
    else:
        ds = paths.records(training)
        if training:
            if oversample:
                ds = _oversampled(ds, lambda ex: ex["target"] == 1, oversample, seed)
            # Shuffling parsed records (still JPEG bytes) keeps the buffer small in memory.
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.map(prepare, num_parallel_calls=AUTOTUNE)
    ds = ds.batch(batch, drop_remainder=training if drop_remainder is None else drop_remainder,
                  num_parallel_calls=AUTOTUNE)
    if augmenting:
        seed_t = tf.constant(seed, tf.int64)

        def aug_batch(i: tf.Tensor, item: tuple) -> tuple:
            inputs, target = item
            inputs = dict(inputs, image=augment_seeded(inputs["image"], tf.stack([seed_t, i]), augment))
            return inputs, target

        ds = ds.enumerate().map(aug_batch, num_parallel_calls=AUTOTUNE)
    ds = ds.prefetch(AUTOTUNE)
    return ds if training else records.read_once(ds)


def _meta_kwargs(cfg: "Config") -> dict[str, Any]:
    on = cfg.meta
    return dict(size=cfg.size, n_classes=cfg.n_classes or 2, meta_numeric=tuple(cfg.meta_numeric) if on else (),
                meta_categorical=dict(cfg.meta_categorical) if on else {}, meta_stats=dict(cfg.meta_stats) if on else {})


def train_dataset(paths: Sequence[str | Path], cfg: "Config", batch: int | None = None, seed: int | None = None) -> tf.data.Dataset:
    """Endless shuffled, augmented (unless ``cfg.augment_on == "device"``) training batches."""
    aug = resolve_augment(cfg.augment, cfg.augment_options)
    return make_dataset(
        paths, batch=batch or cfg.batch, training=True, augment=aug if cfg.augment_on == "host" else None,
        oversample=cfg.oversample, shuffle_buffer=cfg.shuffle_buffer, seed=cfg.seed if seed is None else seed,
        **_meta_kwargs(cfg),
    )


def valid_dataset(paths: Sequence[str | Path], cfg: "Config", batch: int | None = None,
                  drop_remainder: bool = False) -> tf.data.Dataset:
    """Validation batches in record order (no shuffle, no augmentation, last batch kept unless dropped)."""
    return make_dataset(paths, batch=batch or cfg.batch, training=False, drop_remainder=drop_remainder,
                        **_meta_kwargs(cfg))


def predict_dataset(paths: Sequence[str | Path], cfg_or_size: "Config | int", view: str | int = "identity",
                    batch: int = 64, *, pad_to_batch: bool = False) -> tf.data.Dataset:
    """Model inputs (no targets) in record order, seen through one TTA view.

    ``view`` is a name in TTA_VIEWS or an index; indices from 8 on are random augmentations (the
    config's preset, ``default`` given a bare size) seeded by the view index and each image's id, so a
    view is the same whatever the batch size or the order of the shards. ``pad_to_batch`` repeats the
    first record until the last batch is full (several replicas cannot split a partial batch, on JAX
    nor under MirroredStrategy): keep the first ``count_data_items(paths)`` predictions.
    """
    if isinstance(cfg_or_size, int):
        kw: dict[str, Any] = dict(size=cfg_or_size, n_classes=2, meta_numeric=(), meta_categorical={}, meta_stats={})
        aug = PRESETS["default"]
    else:
        kw = _meta_kwargs(cfg_or_size)
        aug = resolve_augment(cfg_or_size.augment, cfg_or_size.augment_options)
    if isinstance(view, (int, np.integer)) and 0 <= view < len(TTA_VIEWS):
        view = TTA_VIEWS[int(view)]
    random_view = not isinstance(view, str)
    if random_view and int(view) < 0:
        raise KitError(f"tta: view index must be >= 0, got {view}")
    if isinstance(view, str) and view not in TTA_VIEWS:
        raise KitError(f"tta: unknown view {view!r} (known: {', '.join(TTA_VIEWS)}, or an index >= 8)")

    if kw["size"] <= 0:
        raise KitError(f"size: expects the records' image side in pixels, got {kw['size']}")
    paths = records.as_images(paths)
    prepare = _prepare(kw["size"], kw["n_classes"], kw["meta_numeric"], kw["meta_categorical"], kw["meta_stats"],
                       jpeg=_is_jpeg(paths.manifest))
    ds = paths.records()
    if random_view:
        view_seed = tf.constant(int(view), tf.int64)

        def one(ex: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            inputs, _ = prepare(ex)
            seed = tf.stack([view_seed, tf.strings.to_hash_bucket_fast(ex["image_name"], 2**62)])
            inputs["image"] = augment_seeded(inputs["image"][None], seed, aug)[0]
            return inputs

        ds = _padded(ds.map(one, num_parallel_calls=AUTOTUNE), paths, batch, pad_to_batch).batch(batch)
    else:
        ds = ds.map(lambda ex: prepare(ex)[0], num_parallel_calls=AUTOTUNE)
        ds = _padded(ds, paths, batch, pad_to_batch).batch(batch)
        if view != "identity":
            ds = ds.map(lambda inputs: dict(inputs, image=apply_view(inputs["image"], view)),
                        num_parallel_calls=AUTOTUNE)
    return records.read_once(ds.prefetch(AUTOTUNE))


def _padded(ds: tf.data.Dataset, paths: Sequence[str | Path], batch: int, pad: bool) -> tf.data.Dataset:
    if not pad:
        return ds
    n = records.count_data_items(paths)
    extra = -n % batch
    return ds.concatenate(ds.take(1).repeat(extra)) if extra else ds


def record_table(paths: "Sequence[str | Path] | records.ImageStream") -> "Any":
    """DataFrame of image_name, target, fold, group in record order (the order of predict/valid datasets)."""
    return records.as_images(paths).ids()
