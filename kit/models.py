"""Backbones by name, the binary / multi-class heads, the metadata branch, and local weight files.

Every model kit builds takes ``{"image": [B, S, S, 3] pixels 0..255}`` (plus ``"meta":
float32 [B, M]`` when ``n_meta > 0``) and keeps its normalisation inside, so a saved ``.keras`` file
needs no outside preprocessing. The image input is declared float32 and accepts uint8 as well: Keras
casts it on entry to the model, inside the compiled step, so kit's input pipeline hands over uint8
batches (a quarter of the bytes to move from host to accelerator) and host-augmented float32 ones
alike. Binary (``n_classes=2``) ends in one sigmoid unit, multi-class in a softmax; the head runs in
float32 under mixed precision. Only Keras 3 ops: the same model trains on
TensorFlow and on JAX (Kaggle's TPU route).

Weights come from local files only, never downloaded:

- keras.applications weight files (``efficientnetb0_notop.h5``, ``resnet50_..._notop.h5``, ...).
  V1 EfficientNet files store the ImageNet *std* where a variance belongs; ``weights="imagenet"``
  compensates with an extra Rescaling layer that a file path does not get. kit squares those values
  on load, so the model computes exactly what ``weights="imagenet"`` would.
- the ``efficientnet`` package's 'imagenet' / 'noisy-student' ``.h5`` files, after
  ``convert_efficientnet_weights`` rewrites them into the keras.applications layout (that package's
  own models call a TensorFlow-only swish and cannot train on JAX).

Example:
    model = build_model("efficientnet_b3", n_classes=2, size=384, n_meta=3,
                        weights="/kaggle/input/effnet/efficientnetb3_notop.h5")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from kit.errors import KitError
from kit.schedule import RampExpDecay  # noqa: F401  registered, so a compiled best.keras loads back

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    """One registry row: how to build the feature extractor and what input it expects."""

    name: str
    size: int  # default input size in pixels
    build: Callable[[int], keras.Model]  # size -> model mapping 0..255 pixels (after preprocess) to [B, F]
    preprocess: Callable[[], keras.layers.Layer] | None = None  # placed before the backbone
    family: str = "cnn"  # "efficientnet" (V1 keras.applications), "efficientnet_v2", "resnet", "vgg", "cnn"


_BACKBONES: dict[str, Backbone] = {}


def register(name: str, size: int, *, family: str = "cnn",
             preprocess: Callable[[], keras.layers.Layer] | None = None) -> Callable:
    """Decorator: register ``fn(size) -> keras.Model`` as the backbone ``name``."""
    def deco(fn: Callable[[int], keras.Model]) -> Callable[[int], keras.Model]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = Backbone(name, size, fn, preprocess, family)
        return fn
    return deco


def list_models() -> list[str]:
    """Sorted backbone names (what ``kit models`` prints)."""
    return sorted(_BACKBONES)


def _backbone(name: str) -> Backbone:
    if name not in _BACKBONES:
        raise KitError(f"model: unknown model {name!r}; known: {', '.join(list_models())}")
    return _BACKBONES[name]


# Families whose architecture is only worth training from ImageNet weights on a competition-sized set.
IMAGENET_FAMILIES = ("efficientnet", "efficientnet_v2", "resnet", "vgg", "convnext", "keras_hub")


def is_imagenet_family(name: str) -> bool:
    """Whether backbone ``name`` is an ImageNet architecture (fine-tuned, not trained from scratch, as a rule)."""
    return _backbone(name).family in IMAGENET_FAMILIES


def default_size(name: str) -> int:
    """The input size a backbone was designed for (EfficientNet B3: 300, ...)."""
    return _backbone(name).size


# --- layers ---------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="kit")
class CaffePreprocess(keras.layers.Layer):
    """RGB 0..255 -> BGR minus the ImageNet mean: what ResNet50 / VGG weights expect ("caffe" mode)."""

    def call(self, x):
        x = keras.ops.flip(keras.ops.cast(x, self.compute_dtype), axis=-1)
        return x - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)


# --- keras.applications backbones (dict rows) --------------------------------------------------------

_APPLICATIONS = {
    # name: (keras.applications constructor, default size, family)
    "efficientnet_b0": ("EfficientNetB0", 224, "efficientnet"),
    "efficientnet_b1": ("EfficientNetB1", 240, "efficientnet"),
    "efficientnet_b2": ("EfficientNetB2", 260, "efficientnet"),
    "efficientnet_b3": ("EfficientNetB3", 300, "efficientnet"),
    "efficientnet_b4": ("EfficientNetB4", 380, "efficientnet"),
    "efficientnet_b5": ("EfficientNetB5", 456, "efficientnet"),
    "efficientnet_b6": ("EfficientNetB6", 528, "efficientnet"),
    "efficientnet_b7": ("EfficientNetB7", 600, "efficientnet"),
    "efficientnet_v2_b0": ("EfficientNetV2B0", 224, "efficientnet_v2"),
    "efficientnet_v2_b1": ("EfficientNetV2B1", 240, "efficientnet_v2"),
    "efficientnet_v2_b2": ("EfficientNetV2B2", 260, "efficientnet_v2"),
    "efficientnet_v2_b3": ("EfficientNetV2B3", 300, "efficientnet_v2"),
    "efficientnet_v2_s": ("EfficientNetV2S", 384, "efficientnet_v2"),
    "efficientnet_v2_m": ("EfficientNetV2M", 480, "efficientnet_v2"),
    "efficientnet_v2_l": ("EfficientNetV2L", 480, "efficientnet_v2"),
    "resnet50": ("ResNet50", 224, "resnet"),
    "vgg16": ("VGG16", 224, "vgg"),
    "vgg19": ("VGG19", 224, "vgg"),
}


def _application_builder(constructor: str, family: str) -> Callable[[int], keras.Model]:
    def build(size: int) -> keras.Model:
        kwargs = dict(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
        if family == "efficientnet_v2":
            kwargs["include_preprocessing"] = True  # rescaling inside: inputs stay 0..255
        return getattr(keras.applications, constructor)(**kwargs)
    return build


for _name, (_ctor, _size, _family) in _APPLICATIONS.items():
    register(_name, _size, family=_family,
             preprocess=CaffePreprocess if _family in ("resnet", "vgg") else None)(
        _application_builder(_ctor, _family))


# --- the seeds' small CNNs ----------------------------------------------------------------------------

def _sequential_features(size: int, name: str, layers: list[keras.layers.Layer]) -> keras.Model:
    inp = keras.Input((size, size, 3), name=f"{name}_input")
    x = keras.layers.Rescaling(1.0 / 255, name=f"{name}_rescale")(inp)
    for layer in layers:
        x = layer(x)
        # Valid convolutions and pools shrink the map: too small an input must fail here, by name,
        # not later inside fit() as a negative-dimension graph error.
        if any(d is not None and d < 1 for d in x.shape[1:]):
            raise ValueError(f"layer {layer.name} leaves an empty feature map {tuple(x.shape[1:])}")
    return keras.Model(inp, x, name=name)


@register("tiny_cnn", 32)
def tiny_cnn(size: int) -> keras.Model:
    """About 6k parameters: three strided conv + BatchNorm blocks, global average pooling (CI rehearsals)."""
    L = keras.layers
    layers = []
    for i, filters in enumerate((8, 16, 32)):
        layers += [L.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"tiny_conv{i}"),
                   L.BatchNormalization(name=f"tiny_bn{i}"), L.Activation("relu", name=f"tiny_relu{i}")]
    layers.append(L.GlobalAveragePooling2D(name="tiny_pool"))
    return _sequential_features(size, "tiny_cnn", layers)


@register("small_cnn", 64)
def small_cnn(size: int) -> keras.Model:
    """The HAM10000 seed CNN: 2x(conv32) pool drop .25, 2x(conv64) pool drop .4, flatten, dense 128."""
    L = keras.layers
    return _sequential_features(size, "small_cnn", [
        L.Conv2D(32, 3, padding="same", activation="relu", name="small_conv1a"),
        L.Conv2D(32, 3, padding="same", activation="relu", name="small_conv1b"),
        L.MaxPooling2D(2, name="small_pool1"), L.Dropout(0.25, name="small_drop1"),
        L.Conv2D(64, 3, padding="same", activation="relu", name="small_conv2a"),
        L.Conv2D(64, 3, padding="same", activation="relu", name="small_conv2b"),
        L.MaxPooling2D(2, name="small_pool2"), L.Dropout(0.40, name="small_drop2"),
        L.Flatten(name="small_flatten"), L.Dense(128, activation="relu", name="small_dense"),
    ])


@register("pcam_cnn", 96)
def pcam_cnn(size: int) -> keras.Model:
    """The PCam seed CNN: 3 stages of 3x(conv3x3) + pool + dropout .3 (32/64/128 filters), dense 256."""
    L = keras.layers
    layers = []
    for stage, filters in enumerate((32, 64, 128), start=1):
        layers += [L.Conv2D(filters, 3, activation="relu", name=f"pcam_conv{stage}{c}") for c in "abc"]
        layers += [L.MaxPooling2D(2, name=f"pcam_pool{stage}"), L.Dropout(0.3, name=f"pcam_drop{stage}")]
    layers += [L.Flatten(name="pcam_flatten"), L.Dense(256, activation="relu", name="pcam_dense")]
    return _sequential_features(size, "pcam_cnn", layers)


# --- weights ------------------------------------------------------------------------------------------

def _load_backbone_weights(backbone: keras.Model, spec: Backbone, path: str | os.PathLike, size: int) -> None:
    """Load a local weights file into the backbone; KitError naming the file when it does not fit."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: weights file not found")
    try:
        backbone.load_weights(str(path))
    except (ValueError, OSError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        hint = ("; an `efficientnet` package file must first go through "
                "kit.models.convert_efficientnet_weights" if spec.family == "efficientnet" else "")
        raise KitError(f"{path}: weights do not fit {spec.name} at {size}px ({reason[:300]}){hint}") from err
    if spec.family == "efficientnet":
        _match_imagenet_preprocessing(backbone)


def _match_imagenet_preprocessing(backbone: keras.Model) -> None:
    """Make a V1 EfficientNet loaded from a file normalise as ``weights="imagenet"`` does.

    keras.applications' V1 weight files hold the ImageNet std in the Normalization layer's variance,
    so the layer divides by sqrt(std); ``weights="imagenet"`` then adds Rescaling(1/sqrt(std)) to reach
    (x - mean) / std, but a file path skips that layer. Squaring the stored values gives the layer
    itself (x - mean) / std. Files that already hold true variances (converted or kit-saved) are left
    alone, so loading is idempotent.
    """
    norm = next((layer for layer in backbone.layers
                 if isinstance(layer, keras.layers.Normalization)), None)
    if norm is None:
        return
    variance = keras.ops.convert_to_numpy(norm.adapt_variance).reshape(-1)
    if np.allclose(variance, IMAGENET_STD_RGB, atol=1e-6):
        norm.adapt_variance.assign(np.square(variance).reshape(norm.adapt_variance.shape))
        norm.finalize_state()


def freeze_batchnorm(model: keras.Model) -> int:
    """Keep BatchNormalization layers frozen while fine-tuning pretrained weights (keras-io habit)."""
    frozen = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


# --- the model ------------------------------------------------------------------------------------------

def build_model(name: str, *, n_classes: int, size: int, weights: str | os.PathLike | None = None,
                n_meta: int = 0, dropout: float = 0.2, trainable_backbone: bool = True) -> keras.Model:
    """Backbone ``name`` + optional metadata branch + binary (1 sigmoid) or softmax head.

    Args:
        name: a registry name (``list_models()``).
        n_classes: 2 gives one sigmoid unit; K > 2 gives a K-way softmax.
        size: square input size in pixels.
        weights: a local backbone weights file, or None for random initialisation.
        n_meta: width of the ``"meta"`` input (0: image only).
        dropout: dropout rate before the head.
        trainable_backbone: False freezes the backbone (train the head only). With pretrained
            weights, BatchNormalization layers stay frozen either way.

    Example:
        model = build_model("tiny_cnn", n_classes=7, size=32)
        probs = model({"image": images})  # [B, 7]
    """
    spec = _backbone(name)
    if int(n_classes) < 2:
        raise KitError(f"model: n_classes must be >= 2 (2 = binary), got {n_classes}")
    if int(n_meta) < 0:
        raise KitError(f"model: n_meta must be >= 0, got {n_meta}")
    if not 0 <= float(dropout) < 1:
        raise KitError(f"model: dropout must be in [0, 1), got {dropout}")
    try:
        backbone = spec.build(int(size))
    except ValueError as err:
        raise KitError(f"model: {name} cannot be built at size {size} ({str(err).splitlines()[0]})") from err
    if weights is not None:
        _load_backbone_weights(backbone, spec, weights, size)
    backbone.trainable = bool(trainable_backbone)
    if weights is not None and trainable_backbone:
        freeze_batchnorm(backbone)

    L = keras.layers
    image = keras.Input((size, size, 3), name="image", dtype="float32")
    inputs = {"image": image}
    x = spec.preprocess(name="preprocess")(image) if spec.preprocess else image
    features = backbone(x)
    if n_meta:
        meta = keras.Input((int(n_meta),), name="meta", dtype="float32")
        inputs["meta"] = meta
        # Raw metadata mixes scales (age 0-90, 0/1 codes): a BatchNorm first keeps the branch stable.
        m = L.BatchNormalization(name="meta_bn")(meta)
        m = L.Dense(32, activation="relu", name="meta_dense1")(m)
        m = L.Dense(16, activation="relu", name="meta_dense2")(m)
        features = L.Concatenate(name="join_meta")([features, m])
    if dropout:
        features = L.Dropout(float(dropout), name="head_dropout")(features)
    binary = int(n_classes) == 2
    out = L.Dense(1 if binary else int(n_classes), activation="sigmoid" if binary else "softmax",
                  dtype="float32", name="head")(features)
    return keras.Model(inputs, out, name=f"kit_{name}")


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone inside a model ``build_model`` made (also behind device augmentation): its one nested Model."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner) == 1 and model.name.endswith("_augmented"):
        return backbone_of(inner[0])
    if len(inner) != 1:
        raise KitError(f"model: {model.name} holds {len(inner)} nested models; expected one backbone")
    return inner[0]


# --- efficientnet package weight conversion -----------------------------------------------------------

def _h5_attr_list(group, name: str) -> list[str]:
    """Read a (possibly chunked: name0, name1, ...) string-list attribute of a Keras 2 .h5 file."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, i = [], 0
        while f"{name}{i}" in group.attrs:
            values += list(group.attrs[f"{name}{i}"])
            i += 1
    return [v.decode("utf8") if isinstance(v, bytes) else str(v) for v in values]


def convert_efficientnet_weights(src_h5: str | os.PathLike, dst: str | os.PathLike, variant: str) -> Path:
    """Rewrite an ``efficientnet`` package .h5 (imagenet / noisy-student) for keras.applications.

    The layers line up one to one by name; the package normalises outside the model (ImageNet
    mean/std on 0..1 pixels), so the Normalization layer gets that mean and the true variance
    (std squared). ``dst`` is a Keras ``.weights.h5`` file for ``build_model(variant, weights=dst)``.

    Args:
        src_h5: e.g. ``efficientnet-b3_noisy-student_notop.h5`` (with or without the top).
        dst: output path ending in ``.weights.h5``.
        variant: ``"efficientnet_b0"`` .. ``"efficientnet_b7"`` (or ``"b0"`` .. ``"b7"``).
    """
    import h5py

    src, dst = Path(src_h5), Path(dst)
    name = variant if variant.startswith("efficientnet_") else f"efficientnet_{variant.lower()}"
    spec = _backbone(name)
    if spec.family != "efficientnet":
        raise KitError(f"convert: variant {variant!r} is not an EfficientNet B0-B7")
    if not dst.name.endswith(".weights.h5"):
        raise KitError(f"{dst}: the converted weights file name must end in .weights.h5")
    if not src.is_file():
        raise KitError(f"{src}: efficientnet weights file not found")
    model = spec.build(64)  # weights do not depend on the input size; 64 px builds fast
    try:
        f = h5py.File(src, "r")
    except OSError as err:
        raise KitError(f"{src}: not an HDF5 weights file ({err})") from err
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        layer_names = _h5_attr_list(root, "layer_names")
        if not layer_names:
            raise KitError(f"{src}: not a Keras .h5 weights file (no layer_names attribute)")
        stored = {n: [np.asarray(root[n][w]) for w in _h5_attr_list(root[n], "weight_names")]
                  for n in layer_names}
    stored = {n: v for n, v in stored.items() if v}
    used = set()
    for layer in model.layers:
        if not layer.weights:
            continue
        if isinstance(layer, keras.layers.Normalization):
            layer.set_weights([np.asarray(IMAGENET_MEAN_RGB, "float32"),
                               np.square(np.asarray(IMAGENET_STD_RGB, "float32")),
                               np.asarray(0, dtype=layer.weights[2].dtype)])
            layer.finalize_state()
            continue
        if layer.name not in stored:
            raise KitError(f"{src}: no weights for layer {layer.name!r} of {name}; is it another variant?")
        values = stored[layer.name]
        expected = [tuple(w.shape) for w in layer.weights]
        got = [tuple(v.shape) for v in values]
        if expected != got:
            raise KitError(f"{src}: layer {layer.name!r} holds shapes {got}, {name} needs {expected}; "
                           "is it another variant?")
        layer.set_weights(values)
        used.add(layer.name)
    extra = sorted(set(stored) - used - {"probs"})  # "probs" is the ImageNet top, which kit drops
    if extra:
        raise KitError(f"{src}: layers {extra[:3]} have no place in {name}; is it another variant?")
    from kit import fsutil

    with fsutil.atomic_path(dst, keep_suffix=True) as tmp:
        model.save_weights(str(tmp))
    return dst
