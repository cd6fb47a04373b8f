"""Augmentation: the presets, the affine and colour ops on a batch, the exact TTA views, and Keras' random layers.

Augmentation (:class:`Augment`) draws flips, rotation, shear, zoom and shift per image and applies them
as ONE affine transform (one resampling, so no compounding blur), then brightness, contrast,
saturation and hue. Every part is a field; presets are ``none``, ``default`` and ``pcam`` (PCam labels
describe the centre 32x32 of a 96x96 tile only, so its preset keeps that centre in view).

Two places to augment (``Config.augment_on``):

- ``host``: in tf.data on the CPU, batched and vectorised (kit.training.pipeline). Choose it on CPU, and on a GPU
  when the host has cores to spare.
- ``device``: the host only decodes, and Keras 3 random layers run inside the training step on the
  accelerator (:func:`with_device_augmentation`). Choose it on a TPU VM or when the host is the
  bottleneck (a slow or busy CPU feeding a fast GPU).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import tensorflow as tf

from kit.core.errors import KitError

if TYPE_CHECKING:
    import keras

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
    from kit.training.config import coerce_setting

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
