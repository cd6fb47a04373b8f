"""tf.data input for training, validation and prediction, and the augmentations kit applies.

Stages (keras-io's recipe, prefetch last)::

    shards -> read + parse (parallel interleave when training; kit.records.load_dataset in order
           otherwise, and for public SIIM-ISIC TFRecords)
           -> [train: oversample, shuffle, repeat] -> decode -> batch (drop_remainder only when
           training) -> [train: augment the batch] -> prefetch

Validation and prediction are never shuffled: shards in the order given (sorted by name), records in
file order, so the i-th prediction belongs to the i-th id of :func:`record_table`.

Augmentation (:class:`Augment`) draws flips, rotation, shear, zoom and shift per image and applies them
as ONE affine transform (one resampling, so no compounding blur), then brightness, contrast,
saturation and hue. Every part is a field; presets are ``none``, ``default`` and ``pcam`` (PCam labels
describe the centre 32x32 of a 96x96 tile only, so its preset keeps that centre in view).

Two places to augment (``Config.augment_on``):

- ``host``: in tf.data on the CPU, batched and vectorised. Choose it on CPU, and on a GPU when the host
  has cores to spare.
- ``device``: the host only decodes, and Keras 3 random layers run inside the training step on the
  accelerator (:func:`with_device_augmentation`). Choose it on a TPU VM or when the host is the
  bottleneck (a slow or busy CPU feeding a fast GPU).

Model inputs are ``{"image": [B,S,S,3] pixels 0..255}`` (plus ``"meta": float32 [B,M]`` when metadata
columns are configured); targets are float32 for binary, int32 class indices otherwise. Images stay
uint8 wherever nothing changes their values (validation, prediction, training without host
augmentation) and are float32 after host augmentation; kit's models take either and cast inside the
step (see kit.models), so the host never spends a pass quadrupling the bytes and an accelerator
receives a quarter of them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from kit import records
from kit.errors import KitError
from kit.task import task_for

if TYPE_CHECKING:
    import keras

    from kit.config import Config

AUTOTUNE = tf.data.AUTOTUNE

# The eight exact views of the square's symmetry group; more views are seeded random augmentations.
TTA_VIEWS: list[str] = ["identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse"]


@dataclass(frozen=True)
class Augment:
    """Which augmentations run and how strong (0 or False switches a part off).

    rotation and shear are maximum angles in degrees; zoom is the maximum relative magnification change
    (0.1: x0.9..x1.1); shift is the maximum translation as a fraction of the side; brightness a fraction
    of 255; contrast and saturation relative factors (0.2: x0.8..x1.2); hue a fraction of the colour
    circle. fill is how pixels moved in from outside are filled: reflect | nearest | constant | wrap;
    interpolation is bilinear or nearest (about twice as fast; the public TPU notebooks' choice).
    """

    hflip: bool = False
    vflip: bool = False
    rotation: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    shift: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    hue: float = 0.0
    fill: str = "reflect"
    interpolation: str = "bilinear"

    @property
    def geometric(self) -> bool:
        """Whether any part of the affine transform is on."""
        return bool(self.hflip or self.vflip or self.rotation or self.shear or self.zoom or self.shift)

    @property
    def colour(self) -> bool:
        """Whether any colour part is on."""
        return bool(self.brightness or self.contrast or self.saturation or self.hue)

    @property
    def active(self) -> bool:
        """Whether anything at all is on."""
        return self.geometric or self.colour

    def centre_reach(self, centre_fraction: float = 1 / 3) -> float:
        """Farthest, as a fraction of the side from the image centre, that a corner of the centred square
        of side ``centre_fraction`` can land after the affine part (< 0.5: the square always stays in view)."""
        half_diag = centre_fraction / 2 * (math.sqrt(2) if self.rotation else 1.0)
        shear = math.tan(math.radians(self.shear))
        return half_diag * (1 + self.zoom) * (1 + shear) + self.shift * math.sqrt(2)


PRESETS: dict[str, Augment] = {
    "none": Augment(),
    # Skin lesions have no up, down, left or right: every flip and rotation is a valid image.
    # Nearest-neighbour sampling, as the public SIIM-ISIC TPU notebooks' transform does: the warp costs
    # a third of a bilinear one on the CPU (benchmarks/pipeline.py), at no visible loss at 128 px and up.
    "default": Augment(hflip=True, vflip=True, rotation=180.0, shear=2.0, zoom=0.1, shift=0.1,
                       brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, interpolation="nearest"),
    # PCam labels the centre 32x32 of 96x96 only: centre_reach() is 0.36 < 0.5, so it never leaves view.
    # Stain colour varies between labs, hence the colour jitter.
    "pcam": Augment(hflip=True, vflip=True, rotation=180.0, shear=3.0, zoom=0.1, shift=0.06,
                    brightness=0.1, contrast=0.15, saturation=0.15, hue=0.04, interpolation="nearest"),
}

_FILL = {"reflect": "REFLECT", "nearest": "NEAREST", "constant": "CONSTANT", "wrap": "WRAP"}


def invariant_views(aug: Augment) -> list[str]:
    """The exact TTA views (in TTA_VIEWS order) that training with ``aug`` shows the model.

    A view outside what the model was trained on is a new input, not a second opinion: a digit or a face
    flipped by TTA after training without flips is scored worse, not better. A rotation range of 90
    degrees or more covers the quarter turns, 180 the half turn; flips compose with turns.
    """
    quarter, half = aug.rotation >= 90, aug.rotation >= 180 or (aug.hflip and aug.vflip)
    flip = aug.hflip or aug.vflip
    ok = {"identity": True, "hflip": aug.hflip or (aug.vflip and half), "vflip": aug.vflip or (aug.hflip and half),
          "rot90": quarter, "rot180": half, "rot270": quarter, "transpose": quarter and flip,
          "transverse": quarter and flip}
    return [v for v in TTA_VIEWS if ok[v]]


def tta_views(n: int, aug: Augment) -> tuple[list[str | int], str | None]:
    """The first ``n`` views a run trained with ``aug`` supports, and a note when it supports fewer.

    Exact views first (:func:`invariant_views`), then seeded random draws of ``aug`` itself (indices 8,
    9, ...), which exist only when ``aug`` changes anything. Out-of-fold and test predictions both take
    their views from here, so CV measures the TTA the submission uses.
    """
    if n < 1:
        raise KitError(f"tta: must be at least 1 view, got {n}")
    exact: list[str | int] = list(invariant_views(aug))
    if n <= len(exact):
        return exact[:n], None
    if aug.active:
        return exact + list(range(len(TTA_VIEWS), len(TTA_VIEWS) + n - len(exact))), None
    note = (f"tta: {n} views asked, but the run trained without augmentation, so only the identity view shows "
            f"the model what it learned from; using 1 view")
    return exact, note


def resolve_augment(preset: str | Augment = "default", options: Mapping[str, Any] | None = None) -> Augment:
    """The preset named ``preset`` with the fields in ``options`` overriding it; KitError on unknown names.

    An empty name is a config that left the preset out: ``kit train`` fills in the competition's, and a
    config written by hand gets ``default``.
    """
    if isinstance(preset, Augment):
        base = preset
    elif not preset:
        base = PRESETS["default"]
    elif preset in PRESETS:
        base = PRESETS[preset]
    else:
        raise KitError(f"augment: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
    options = dict(options or {})
    fields = {f.name for f in dataclasses.fields(Augment)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise KitError(f"augment_options: unknown part {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    from kit.config import coerce_setting

    for name, value in options.items():
        # a TOML `rotation = "lots"` must stop here with its name, not deep inside the augmentation graph
        options[name] = coerce_setting(name, value, getattr(base, name), "augment_options")
        if isinstance(options[name], float) and not (math.isfinite(options[name]) and options[name] >= 0):
            raise KitError(f"augment_options: {name} expects a finite number >= 0, got {value!r}")
    aug = dataclasses.replace(base, **options)
    if aug.fill not in _FILL:
        raise KitError(f"augment_options: fill {aug.fill!r} is not one of {', '.join(_FILL)}")
    if aug.interpolation not in ("bilinear", "nearest"):
        raise KitError(f"augment_options: interpolation {aug.interpolation!r} is not bilinear or nearest")
    return aug


# --- augmentation (TensorFlow, vectorised over a batch) --------------------------------------------

_N_RANDOM = 11  # uniform draws per image: hflip vflip rot shear zoom dx dy bright contrast sat hue


def _sym(u: tf.Tensor, limit: float) -> tf.Tensor:
    return (2.0 * u - 1.0) * limit


def affine_transforms(u: tf.Tensor, aug: Augment, size: int) -> tf.Tensor:
    """[B,8] output->input projective transforms from [B,>=7] uniform draws (flip, rotate, shear, zoom, shift)."""
    one = tf.ones_like(u[:, 0])
    fx = tf.where(u[:, 0] < 0.5, -one, one) if aug.hflip else one
    fy = tf.where(u[:, 1] < 0.5, -one, one) if aug.vflip else one
    theta = _sym(u[:, 2], math.radians(aug.rotation))
    shear = tf.tan(_sym(u[:, 3], math.radians(aug.shear)))
    mag = 1.0 + _sym(u[:, 4], aug.zoom)
    tx = _sym(u[:, 5], aug.shift * size)
    ty = _sym(u[:, 6], aug.shift * size)
    # Forward map: out = c + t + R(theta) Sh(shear) mag F (in - c). The op wants its inverse,
    # in = c + A (out - c - t) with A = F Sh^-1 R(-theta) / mag.
    cos, sin = tf.cos(theta), tf.sin(theta)
    r00, r01, r10, r11 = cos, sin, -sin, cos  # R(-theta)
    s00, s01, s10, s11 = r00 - shear * r10, r01 - shear * r11, r10, r11  # Sh^-1 @ R(-theta)
    a00, a01 = fx * s00 / mag, fx * s01 / mag
    a10, a11 = fy * s10 / mag, fy * s11 / mag
    c = (size - 1) / 2.0
    a02 = c - a00 * (c + tx) - a01 * (c + ty)
    a12 = c - a10 * (c + tx) - a11 * (c + ty)
    zero = tf.zeros_like(a00)
    return tf.stack([a00, a01, a02, a10, a11, a12, zero, zero], axis=1)


# RGB <-> YIQ: a hue shift is a rotation of the I/Q plane (cheap next to a round trip through HSV).
_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], np.float32)
_YIQ_INV = np.linalg.inv(_YIQ).astype(np.float32)
_LUMA = _YIQ[0]


def _colour_matrices(u: tf.Tensor, aug: Augment) -> tf.Tensor:
    """[B,3,3] per-image saturation then hue change as one linear map of RGB."""
    b = tf.shape(u)[0]
    eye = tf.eye(3, batch_shape=[b])
    m = eye
    if aug.saturation:
        s = (1.0 + _sym(u[:, 9], aug.saturation))[:, None, None]
        m = s * eye + (1.0 - s) * tf.constant(np.tile(_LUMA, (3, 1)))  # blend with grey, as PIL's Color
    if aug.hue:
        a = _sym(u[:, 10], aug.hue) * 2.0 * math.pi
        c, sn, one, zero = tf.cos(a), tf.sin(a), tf.ones_like(a), tf.zeros_like(a)
        rot = tf.reshape(tf.stack([one, zero, zero, zero, c, -sn, zero, sn, c], axis=1), [-1, 3, 3])
        m = tf.constant(_YIQ_INV) @ rot @ tf.constant(_YIQ) @ m
    return m


def _colour(images: tf.Tensor, u: tf.Tensor, aug: Augment) -> tf.Tensor:
    # Saturation, hue, contrast (about the per-channel mean) and brightness are all affine in RGB, so
    # they fold into one pass: y = c M x + ((1 - c) M mean(x) + b), then a clip.
    shape = tf.shape(images)
    flat = tf.reshape(images, [shape[0], -1, 3])
    m = _colour_matrices(u, aug)  # [B,3,3]
    c = (1.0 + _sym(u[:, 8], aug.contrast)) if aug.contrast else tf.ones_like(u[:, 8])
    offset = _sym(u[:, 7], aug.brightness * 255.0)[:, None, None] if aug.brightness else 0.0
    if aug.contrast:
        mean = tf.reduce_mean(flat, axis=1, keepdims=True)  # [B,1,3]
        offset = offset + (1.0 - c)[:, None, None] * tf.linalg.matmul(mean, m, transpose_b=True)
    out = tf.linalg.matmul(flat, c[:, None, None] * m, transpose_b=True) + offset
    return tf.reshape(tf.clip_by_value(out, 0.0, 255.0), shape)


def _reflected_index(a_x: tf.Tensor, a_y: tf.Tensor, a_c: tf.Tensor, size: int) -> tf.Tensor:
    """[B,S,S] int32 nearest source index along one axis, src = a_x*x + a_y*y + a_c, reflected at the edges."""
    r = tf.range(size, dtype=tf.float32)
    # separable: a column term plus a row term, so the [B,S,S] grid costs one add instead of two mul-adds
    t = a_x[:, None, None] * r[None, None, :] + (a_y[:, None] * r[None, :] + (a_c + 0.5)[:, None])[:, :, None]
    # shifted by half a pixel the edges sit at 0 and size: reflect (d c b a | a b c d | d c b a) is a
    # triangle wave of period 2*size, and truncation of the non-negative result is round-to-nearest
    t = size - tf.abs(size - tf.math.floormod(t, 2.0 * size))
    return tf.minimum(tf.cast(t, tf.int32), size - 1)


def _warp_nearest_reflect(images: tf.Tensor, transforms: tf.Tensor) -> tf.Tensor:
    """ImageProjectiveTransformV3 for affine ``transforms``, nearest sampling and reflect fill, as one gather.

    Equal to the op except where a source coordinate falls exactly half way between two pixels, and
    about twice as fast on the CPU (benchmarks/pipeline.py measures the whole stream)."""
    size = int(images.shape[1])
    ix = _reflected_index(transforms[:, 0], transforms[:, 1], transforms[:, 2], size)
    iy = _reflected_index(transforms[:, 3], transforms[:, 4], transforms[:, 5], size)
    b = tf.shape(images)[0]
    flat = tf.reshape(iy * size + ix, [b, size * size])
    pixels = tf.gather(tf.reshape(images, [b, size * size, 3]), flat, batch_dims=1)
    return tf.reshape(pixels, tf.shape(images))


def augment_batch(images: tf.Tensor, u: tf.Tensor, aug: Augment) -> tf.Tensor:
    """Augment [B,S,S,3] images (uint8, or float32 0..255) with per-image uniform draws ``u`` [B,11];
    returns float32 0..255. The affine step runs on uint8 when given uint8 (less memory to move)."""
    if aug.geometric:
        size = int(images.shape[1])
        transforms = affine_transforms(u, aug, size)
        if aug.interpolation == "nearest" and aug.fill == "reflect":
            images = _warp_nearest_reflect(images, transforms)
        else:
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images,
                transforms=transforms,
                output_shape=tf.shape(images)[1:3],
                fill_value=0.0,
                interpolation=aug.interpolation.upper(),
                fill_mode=_FILL[aug.fill],
            )
    images = tf.cast(images, tf.float32)
    if aug.colour:
        images = _colour(images, u, aug)
    return images


def augment_seeded(images: tf.Tensor, seed: tf.Tensor, aug: Augment) -> tf.Tensor:
    """Augment a batch with draws from a stateless seed (shape [2]): the same seed, the same images."""
    u = tf.random.stateless_uniform([tf.shape(images)[0], _N_RANDOM], seed=seed)
    return augment_batch(images, u, aug)


def apply_view(images: tf.Tensor, view: str) -> tf.Tensor:
    """One of the eight exact TTA views of a [B,H,W,C] batch (rot90 turns counter-clockwise)."""
    if view == "identity":
        return images
    if view == "hflip":
        return tf.reverse(images, axis=[2])
    if view == "vflip":
        return tf.reverse(images, axis=[1])
    if view in ("rot90", "rot180", "rot270"):
        return tf.image.rot90(images, k={"rot90": 1, "rot180": 2, "rot270": 3}[view])
    if view == "transpose":
        return tf.transpose(images, [0, 2, 1, 3])
    if view == "transverse":
        return tf.reverse(tf.transpose(images, [0, 2, 1, 3]), axis=[1, 2])
    raise KitError(f"tta: unknown view {view!r} (known: {', '.join(TTA_VIEWS)}, or an index >= 8)")


def device_augmentation(aug: Augment, seed: int | None = None) -> list["keras.layers.Layer"]:
    """Keras 3 random layers equivalent to ``aug``, to run inside the training step (identity at inference)."""
    import keras

    L = keras.layers
    layers: list[keras.layers.Layer] = []
    mode = {"hflip": "horizontal", "vflip": "vertical"}
    if aug.hflip and aug.vflip:
        layers.append(L.RandomFlip("horizontal_and_vertical", seed=seed))
    elif aug.hflip or aug.vflip:
        layers.append(L.RandomFlip(mode["hflip" if aug.hflip else "vflip"], seed=seed))
    kw = dict(fill_mode=aug.fill, interpolation=aug.interpolation, seed=seed)
    if aug.rotation:
        layers.append(L.RandomRotation(aug.rotation / 360.0, **kw))
    if aug.shear:
        s = math.tan(math.radians(aug.shear))
        layers.append(L.RandomShear(x_factor=s, y_factor=s, **kw))
    if aug.zoom:
        layers.append(L.RandomZoom(aug.zoom, **kw))
    if aug.shift:
        layers.append(L.RandomTranslation(aug.shift, aug.shift, **kw))
    if aug.brightness:
        layers.append(L.RandomBrightness(aug.brightness, value_range=(0, 255), seed=seed))
    if aug.contrast:
        layers.append(L.RandomContrast(aug.contrast, value_range=(0, 255), seed=seed))
    if aug.saturation:
        layers.append(L.RandomSaturation((0.5 - aug.saturation / 2, 0.5 + aug.saturation / 2),
                                         value_range=(0, 255), seed=seed))
    if aug.hue:
        layers.append(L.RandomHue(aug.hue, value_range=(0, 255), seed=seed))
    return layers


def with_device_augmentation(model: "keras.Model", aug: Augment, seed: int | None = None) -> "keras.Model":
    """``model`` behind Keras random layers on its "image" input (a no-op at inference, so it saves as is)."""
    import keras

    layers = device_augmentation(aug, seed)
    if not layers:
        return model
    inputs = {name: keras.Input(shape=t.shape[1:], name=name, dtype=t.dtype)
              for name, t in _input_dict(model).items()}
    x = inputs["image"]
    for layer in layers:
        x = layer(x)
    outputs = model({**inputs, "image": x})
    return keras.Model(inputs, outputs, name=f"{model.name}_augmented")


def _input_dict(model: "keras.Model") -> dict[str, Any]:
    inputs = model.inputs
    return {t.name.split(":")[0].split("/")[0]: t for t in (inputs.values() if isinstance(inputs, dict) else inputs)}


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
