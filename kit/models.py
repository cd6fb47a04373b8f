"""Backbones by name, the binary / multi-class heads, the metadata branch, and the weights routes.

Every model kit builds takes ``{"image": [B, S, S, 3] pixels 0..255}`` (plus ``"meta":
float32 [B, M]`` when ``n_meta > 0``) and keeps its normalisation inside, so a saved ``.keras`` file
needs no outside preprocessing. The image input is declared float32 and accepts uint8 as well: Keras
casts it on entry to the model, inside the compiled step, so kit's input pipeline hands over uint8
batches (a quarter of the bytes to move from host to accelerator) and host-augmented float32 ones
alike. Binary (``n_classes=2``) ends in one sigmoid unit, multi-class in a softmax; the head runs in
float32 under mixed precision. Only Keras 3 ops: the same model trains on
TensorFlow and on JAX (Kaggle's TPU route).

``weights`` (``--weights``, ``Config.weights``) takes four routes, ``weights_route`` decides which:

- ``""``: random initialisation.
- a local file (``.h5`` / ``.weights.h5``): keras.applications weight files (``efficientnetb0_notop.h5``,
  ``resnet50_..._notop.h5``, ...), a kit run's backbone (``export_backbone``), or the ``efficientnet``
  package's 'imagenet' / 'noisy-student' files after ``convert_efficientnet_weights`` rewrites them
  into the keras.applications layout (that package's own models call a TensorFlow-only swish and
  cannot train on JAX). V1 EfficientNet files store the ImageNet *std* where a variance belongs;
  ``weights="imagenet"`` compensates with an extra Rescaling layer that a file path does not get. kit
  squares those values on load, so the model computes exactly what ``weights="imagenet"`` would.
- ``"imagenet"``: Keras' own download, cached in ``~/.keras/models``; offline, one line naming the file
  to attach instead.
- a keras-hub preset (a folder as a Kaggle Model mounts it, a preset name, a ``kaggle://`` / ``hf://``
  handle) for the ``keras_hub`` models, whose architecture comes from the preset. The preset's image
  converter (scale and offset: its mean, std and 0..1 or -1..1 scaling) becomes kit's ``ScaleOffset``
  layer inside the model, and the features are pooled (average for CNNs, class token for ViT / DINOv2).

Whatever the route, the feature extractor is one nested model named ``backbone``: freeze or export it as
``model.get_layer("backbone")``. With pretrained weights its BatchNormalization layers stay frozen.

Example:
    model = build_model("efficientnet_b3", n_classes=2, size=384, n_meta=3,
                        weights="/kaggle/input/effnet/efficientnetb3_notop.h5")
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import keras
import numpy as np

from kit import backbones, fsutil
from kit.errors import KitError
from kit.schedule import RampExpDecay  # noqa: F401  registered, so a compiled best.keras loads back
from kit.task import task_for

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Backbone:
    """One registry row: how to build the feature extractor and what input it expects."""

    name: str
    size: int  # default input size in pixels
    build: Callable[..., keras.Model]  # (size[, weights=]) -> model mapping 0..255 pixels (after preprocess) to [B, F]
    preprocess: Callable[[], keras.layers.Layer] | None = None  # placed before the backbone
    # "efficientnet" (V1 keras.applications), "efficientnet_v2", "resnet", "vgg", "convnext", "cnn", "keras_hub"
    family: str = "cnn"
    params: int | None = None  # backbone parameters (no head) at the default size; None: decided by the preset
    hub_class: str = ""  # keras_hub family: the preset's backbone class this name expects ("" = any)


_BACKBONES: dict[str, Backbone] = {}  # the rows of kit.backbones, each with its builder


def register(name: str, *, preprocess: Callable[[], keras.layers.Layer] | None = None) -> Callable:
    """Decorator: ``fn(size[, weights=]) -> keras.Model`` builds the backbone ``name`` of kit.backbones' table."""
    row = backbones.info(name)  # a builder without a row would be a model `kit models` never lists

    def deco(fn: Callable[..., keras.Model]) -> Callable[..., keras.Model]:
        if name in _BACKBONES:
            raise ValueError(f"backbone {name!r} registered twice")
        _BACKBONES[name] = Backbone(name, row.size, fn, preprocess, row.family, row.params, row.hub_class)
        return fn
    return deco


def _backbone(name: str) -> Backbone:
    backbones.info(name)  # unknown: the one line naming the known models
    if name not in _BACKBONES:
        raise KitError(f"model: {name} is in kit's table but has no builder in kit.models")
    return _BACKBONES[name]


def backbone_spec(name: str) -> Backbone:
    """The registry row of ``name`` (family, default size, parameters, builder); KitError when unknown."""
    return _backbone(name)


# --- layers ---------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="kit")
class CaffePreprocess(keras.layers.Layer):
    """RGB 0..255 -> BGR minus the ImageNet mean: what ResNet50 / VGG weights expect ("caffe" mode)."""

    def call(self, x):
        x = keras.ops.flip(keras.ops.cast(x, self.compute_dtype), axis=-1)
        return x - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)


# --- keras.applications backbones (dict rows) --------------------------------------------------------

imagenet_file = backbones.imagenet_file  # the file name is table data: kit.backbones owns it


def _imagenet_offline(name: str, err: Exception) -> KitError:
    file = imagenet_file(name)
    # get_file says "URL fetch failure on <url>: <errno> -- <reason>": the reason is the part a user needs
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0].rsplit(" -- ", 1)[-1]
    return KitError(
        f"imagenet: {name} needs Keras' {file} and the download failed ({reason[:160]}); "
        f"offline (a Kaggle kernel with internet off), attach {file} as a dataset or Kaggle Model and pass "
        f"--weights /kaggle/input/<dataset>/{file}, or copy it into ~/.keras/models/")


def _application_builder(constructor: str, family: str) -> Callable[..., keras.Model]:
    def build(size: int, weights: str | None = None) -> keras.Model:
        kwargs = dict(include_top=False, weights=weights, input_shape=(size, size, 3), pooling="avg")
        if family in ("efficientnet_v2", "convnext"):
            kwargs["include_preprocessing"] = True  # rescaling / normalisation inside: inputs stay 0..255
        return getattr(keras.applications, constructor)(**kwargs)
    return build


for _row in backbones.BACKBONES.values():
    if _row.constructor:
        register(_row.name, preprocess=CaffePreprocess if _row.family in ("resnet", "vgg") else None)(
            _application_builder(_row.constructor, _row.family))


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


@register("tiny_cnn")
def tiny_cnn(size: int) -> keras.Model:
    """About 6k parameters: three strided conv + BatchNorm blocks, global average pooling (CI rehearsals)."""
    L = keras.layers
    layers = []
    for i, filters in enumerate((8, 16, 32)):
        layers += [L.Conv2D(filters, 3, strides=2, padding="same", use_bias=False, name=f"tiny_conv{i}"),
                   L.BatchNormalization(name=f"tiny_bn{i}"), L.Activation("relu", name=f"tiny_relu{i}")]
    layers.append(L.GlobalAveragePooling2D(name="tiny_pool"))
    return _sequential_features(size, "tiny_cnn", layers)


@register("small_cnn")
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


@register("pcam_cnn")
def pcam_cnn(size: int) -> keras.Model:
    """The PCam seed CNN: 3 stages of 3x(conv3x3) + pool + dropout .3 (32/64/128 filters), dense 256."""
    L = keras.layers
    layers = []
    for stage, filters in enumerate((32, 64, 128), start=1):
        layers += [L.Conv2D(filters, 3, activation="relu", name=f"pcam_conv{stage}{c}") for c in "abc"]
        layers += [L.MaxPooling2D(2, name=f"pcam_pool{stage}"), L.Dropout(0.3, name=f"pcam_drop{stage}")]
    layers += [L.Flatten(name="pcam_flatten"), L.Dense(256, activation="relu", name="pcam_dense")]
    return _sequential_features(size, "pcam_cnn", layers)


COMPACT_WIDTHS = (32, 64, 128, 128, 256)


def compact_stages(size: int) -> int:
    """How many conv-pool stages compact_cnn stacks for ``size`` px images: two, and more until the last map is at
    most 24 px (96 px tiles: 2, 256 px images: 4)."""
    return max(2, min(len(COMPACT_WIDTHS), math.ceil(math.log2(size / 24))))


@register("compact_cnn")
def compact_cnn(size: int) -> keras.Model:
    """kit's from-scratch default, sized to the images: stages of conv3x3 + BatchNorm + ReLU + max-pool (32, 64, 128
    ... filters; ``compact_stages``), flattened so the head keeps where things are in the image.

    Chosen on real images against the alternatives a user would write: on 8 px digits, 32 px turned digits in
    SIIM-ISIC's layout and 96 px slide tiles in PCam's it beat a LogisticRegression on raw pixels and keras-io's
    MNIST convnet every time, where tiny_cnn, small_cnn and pcam_cnn did not (tests/test_defaults_real.py).
    """
    L = keras.layers
    layers = []
    for i in range(compact_stages(size)):
        layers += [L.Conv2D(COMPACT_WIDTHS[i], 3, padding="same", use_bias=False, name=f"compact_conv{i}"),
                   L.BatchNormalization(momentum=0.9, name=f"compact_bn{i}"), L.Activation("relu", name=f"compact_relu{i}"),
                   L.MaxPooling2D(2, name=f"compact_pool{i}")]
    return _sequential_features(size, "compact_cnn", [*layers, L.Flatten(name="compact_flatten")])


# --- keras-hub presets ------------------------------------------------------------------------------

# keras-hub installs with --no-deps: its tensorflow-text requirement would pull a second TensorFlow.
KERAS_HUB_HINT = "pip install --no-deps keras-hub==0.26.* regex kagglehub (Kaggle's GPU image ships it)"
_PRESET_SCHEMES = ("kaggle://", "hf://", "modelscope://", "gs://")


@keras.saving.register_keras_serializable(package="kit")
class ScaleOffset(keras.layers.Layer):
    """``x * scale + offset`` per channel: a keras-hub preset's image converter (mean, std, 0..1 or -1..1
    scaling) as a layer of kit's own, so a saved model needs neither keras-hub's preprocessing (which wants
    tensorflow-text) nor any outside normalisation."""

    def __init__(self, scale: float | list[float] = 1.0, offset: float | list[float] = 0.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        scale = keras.ops.convert_to_tensor(self.scale, dtype=self.compute_dtype)
        return x * scale + keras.ops.convert_to_tensor(self.offset, dtype=self.compute_dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}


@keras.saving.register_keras_serializable(package="kit")
class FirstToken(keras.layers.Layer):
    """[B, T, D] -> [B, D]: the class token a ViT / DINOv2 backbone puts first in its sequence."""

    def call(self, x):
        return x[:, 0]


def _keras_hub():
    try:
        import keras_hub
    except ImportError as err:
        raise KitError(f"the keras-hub preset route needs keras-hub, which is not installed here: "
                       f"{KERAS_HUB_HINT}") from err
    return keras_hub


def _preset_json(preset: str, file: str) -> dict:
    """One JSON file of a preset: read from a local folder, or fetched (and cached) by keras-hub for a name."""
    local = Path(preset) / file
    if local.is_file():
        return json.loads(local.read_text())
    if Path(preset).is_dir():
        raise KitError(f"{preset}: the keras-hub preset has no {file}" + (
            "; kit needs the preset's image converter (its mean, std and scaling): write one with "
            "kit.models.write_image_converter" if file == "image_converter.json" else ""))
    from keras_hub.src.utils import preset_utils  # only reached for names and kaggle:// / hf:// handles

    try:
        return preset_utils.load_json(preset, file)
    # kagglehub / huggingface_hub raise their own HTTP and connection errors: each means "cannot fetch"
    except Exception as err:  # noqa: BLE001
        raise KitError(f"{preset}: cannot fetch the keras-hub preset's {file} ({str(err).splitlines()[0][:200]}); "
                       f"offline, attach the preset as a Kaggle Model and pass its folder, "
                       f"--weights /kaggle/input/<model>/keras/<variation>/<version>") from err


def _find_preset_below(folder: Path) -> Path | None:
    """A preset one to four levels below ``folder`` (the mount point of a Kaggle Model), for the error's hint."""
    for depth in range(1, 5):
        found = sorted(folder.glob("/".join(["*"] * depth) + "/config.json"))
        if found:
            return found[0].parent
    return None


def _check_preset(spec: Backbone, preset: str) -> None:
    if Path(preset).is_dir() and not (Path(preset) / "config.json").is_file():
        below = _find_preset_below(Path(preset))
        hint = f"; did you mean {below}?" if below else " (a keras-hub preset folder holds config.json)"
        raise KitError(f"{preset}: not a keras-hub preset folder{hint}")
    _keras_hub()
    if Path(preset).is_dir():  # a name or handle is checked when it is fetched, in _hub_backbone
        _check_class(preset, json.loads((Path(preset) / "config.json").read_text()), spec)


def _check_class(preset: str, config: dict, spec: Backbone) -> None:
    found = config.get("class_name", "?")
    if spec.hub_class and found != spec.hub_class:
        raise KitError(f"{preset}: the preset holds a {found}, but model {spec.name} expects {spec.hub_class}; "
                       f"pass --model keras_hub to take whatever the preset holds")


def _hub_builder(name: str) -> Callable[..., keras.Model]:
    def build(size: int, weights: str | None = None) -> keras.Model:
        if not weights:
            raise KitError(f"model: {name} takes its architecture from a keras-hub preset; pass --weights")
        return _hub_backbone(str(weights), size, _BACKBONES[name])
    return build


def _hub_backbone(preset: str, size: int, spec: Backbone) -> keras.Model:
    """The preset's backbone at ``size`` px behind its image converter, pooled to [B, F], as one model."""
    keras_hub = _keras_hub()
    config = _preset_json(preset, "config.json")
    _check_class(preset, config, spec)
    found = config.get("class_name", "?")
    converter = _preset_json(preset, "image_converter.json").get("config", {})
    # The input size is the records' size: ViT-style configs name it image_shape, CNNs input_shape.
    inner = config.get("config", {})
    shape = {key: (size, size, 3) for key in ("image_shape", "input_shape") if key in inner}
    try:
        hub = keras_hub.models.Backbone.from_preset(preset, **shape)
    except (ValueError, OSError, KeyError, TypeError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        saved = inner.get("image_shape") or inner.get("input_shape") or (None,)
        hint = f"; it was saved at {saved[0]} px: write records at that size" if saved[0] not in (None, size) else ""
        raise KitError(f"{preset}: the preset's {found} does not load at {size}px ({reason[:300]}){hint}") from err
    image = keras.Input((size, size, 3), name="backbone_input")
    scale, offset = converter.get("scale"), converter.get("offset")  # null in the JSON: no scaling / offset
    x = ScaleOffset(1.0 if scale is None else scale, 0.0 if offset is None else offset, name="image_converter")(image)
    # DINOv2 names its one input ("images"): feed it by name, as its functional graph expects
    names = list(hub.input) if isinstance(hub.input, dict) else []
    features = hub({names[0]: x} if len(names) == 1 else x)
    rank = len(features.shape)
    if rank == 4:
        # a layer of this graph holding the feature map: Grad-CAM (kit report) cuts the model there, and the
        # nested keras-hub model's own .output belongs to its inner graph, not to this one
        features = keras.layers.Identity(name="backbone_features")(features)
        features = keras.layers.GlobalAveragePooling2D(name="backbone_pool")(features)
    elif rank == 3:
        features = FirstToken(name="backbone_token")(features)
    return keras.Model(image, features, name="backbone")


def write_image_converter(folder: str | os.PathLike, scale: float | list[float],
                          offset: float | list[float]) -> Path:
    """Write a preset's ``image_converter.json`` as keras-hub does (its ImageConverter class, no resizing)."""
    path = Path(folder) / "image_converter.json"
    config = {"name": "image_converter", "trainable": True, "image_size": None, "scale": scale, "offset": offset,
              "interpolation": "bilinear", "antialias": False, "crop_to_aspect_ratio": True,
              "pad_to_aspect_ratio": False, "bounding_box_format": "yxyx"}
    fsutil.write_json(path, {"module": "keras_hub.src.layers.preprocessing.image_converter",
                             "class_name": "ImageConverter", "config": config,
                             "registered_name": "keras_hub>ImageConverter"})
    return path


for _row in backbones.BACKBONES.values():
    if _row.family == "keras_hub":
        register(_row.name)(_hub_builder(_row.name))


# --- weights routes ---------------------------------------------------------------------------------

def weights_route(weights: str | os.PathLike | None) -> str:
    """What ``--weights`` means: "none" (""), "file" (.h5 / .weights.h5), "imagenet", or "preset" (keras-hub).

    A folder, a ``kaggle://`` / ``hf://`` handle or a bare name without a suffix (``efficientnet_b0_ra_imagenet``)
    is a keras-hub preset; anything else is a weights file.
    """
    w = str(weights or "").strip()
    if not w or w == "none":  # "none": random initialisation asked for by name
        return "none"
    if w == "imagenet":
        return "imagenet"
    path = Path(w)
    if w.startswith(_PRESET_SCHEMES) or path.is_dir():
        return "preset"
    if path.is_file() or path.suffix or "/" in w or os.sep in w:
        return "file"
    return "preset"


def check_weights(name: str, weights: str | os.PathLike | None) -> str:
    """The route of ``weights`` for model ``name``, or KitError (one line) when it cannot work; downloads nothing."""
    spec, route = _backbone(name), weights_route(weights)
    w = str(weights or "").strip()
    if route not in backbones.weights_routes(name):
        if spec.family == "keras_hub":
            raise KitError(f"model {name} takes its architecture from a keras-hub preset: pass --weights with a "
                           f"preset folder (what a Kaggle Model mounts) or a preset name (e.g. "
                           f"efficientnet_b0_ra_imagenet), not {w or 'nothing'}")
        if route == "imagenet":
            raise KitError(f"imagenet: {name} has no ImageNet weights; pass a weights file or leave --weights out")
        files = sorted(Path(w).glob("*.h5")) if Path(w).is_dir() else []  # a dataset folder holding the file
        hint = f"; did you mean {files[0]}?" if len(files) == 1 else ""
        raise KitError(f"{w}: a keras-hub preset needs --model keras_hub (or hub_efficientnet, hub_vit, hub_dinov2); "
                       f"model {name} takes a weights file (.h5 / .weights.h5){hint}")
    if route == "file" and not Path(w).is_file():
        raise KitError(f"{w}: weights file not found")
    if route == "preset":
        _check_preset(spec, w)
    return route


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
    # recursive: a keras-hub backbone nests its BatchNormalization layers inside blocks
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            frozen += 1
    return frozen


# --- the model ------------------------------------------------------------------------------------------

def build_model(name: str, *, n_classes: int, size: int, weights: str | os.PathLike | None = None,
                n_meta: int = 0, dropout: float = 0.2, trainable_backbone: bool = True) -> keras.Model:
    """Backbone ``name`` + optional metadata branch + binary (1 sigmoid) or softmax head.

    Args:
        name: a registry name (``kit.backbones.list_models()``).
        n_classes: 2 gives one sigmoid unit; K > 2 gives a K-way softmax.
        size: square input size in pixels.
        weights: None / "" (random initialisation), a local weights file (.h5, .weights.h5), "imagenet"
            (Keras' download; one clear line when offline) or, for the keras-hub models, a preset folder or
            name (``weights_route`` decides).
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
    route = check_weights(name, weights)
    try:
        if route in ("imagenet", "preset"):
            backbone = spec.build(int(size), weights=str(weights))
        else:
            backbone = spec.build(int(size))
    except ValueError as err:
        raise KitError(f"model: {name} cannot be built at size {size} ({str(err).splitlines()[0]})") from err
    except KitError:
        raise
    except Exception as err:  # keras' get_file raises a bare Exception when the download fails
        if route != "imagenet":
            raise
        raise _imagenet_offline(name, err) from err
    # One name for every backbone, so that callers freeze or export it as model.get_layer("backbone").
    backbone.name = "backbone"
    if route == "file":
        _load_backbone_weights(backbone, spec, weights, size)
    pretrained = route != "none"
    backbone.trainable = bool(trainable_backbone)
    if pretrained and trainable_backbone:
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
    task = task_for(n_classes)
    out = L.Dense(task.head_units, activation=task.head_activation, dtype="float32", name="head")(features)
    return keras.Model(inputs, out, name=f"kit_{name}")


def weights_line(model: keras.Model, name: str, weights: str) -> str:
    """``weights: 81 layers (213 tensors) of efficientnet_b0 loaded from ...``: what a pretrained build loaded, and
    from where, so a user sees the weights were taken."""
    backbone = backbone_of(model)
    layers = [layer for layer in backbone._flatten_layers(include_self=False) if layer.weights
              and not isinstance(layer, keras.Model)]
    route = weights_route(weights)
    where = {"imagenet": f"Keras' ImageNet file {backbones.imagenet_file(name)}" if route == "imagenet" else "",
             "file": f"{weights}", "preset": f"the keras-hub preset {weights}"}.get(route, weights)
    return f"weights: {len(layers)} layers ({len(backbone.weights)} tensors) of {name} loaded from {where}"


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
    return _save_weights_atomic(model, dst)


# --- a run's backbone as weights for the next run ----------------------------------------------------------

def _hub_model(backbone: keras.Model) -> keras.Model | None:
    return next((layer for layer in backbone.layers
                 if type(layer).__module__.startswith("keras_hub.")), None)


def export_backbone(model_path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Save the backbone of a run's ``best.keras`` as ``--weights`` for the next run.

    A keras-hub backbone becomes a preset folder (keras-hub's ``save_to_preset`` plus the image converter
    kit kept inside the model); any other backbone a ``.weights.h5`` file. BatchNorm statistics travel too.

    Example:
        export_backbone("runs/isic2019_b0/fold0/best.keras", "weights/isic2019_b0.weights.h5")
        # then: kit train --model efficientnet_b0 --weights weights/isic2019_b0.weights.h5 ...
    """
    src, out = Path(model_path), Path(out)
    if not src.is_file():
        raise KitError(f"{src}: saved model not found (a run's fold folder holds best.keras)")
    try:
        model = keras.saving.load_model(src, compile=False)
    except (ValueError, OSError, TypeError) as err:
        raise KitError(f"{src}: not a model kit can read ({str(err).splitlines()[0][:200]})") from err
    backbone = backbone_of(model)
    hub = _hub_model(backbone)
    if hub is not None:
        if out.exists():
            raise KitError(f"{out}: already exists; choose a new folder for the preset")
        converter = backbone.get_layer("image_converter")
        with fsutil.atomic_dir(out) as tmp:
            hub.save_to_preset(str(tmp))
            write_image_converter(tmp, converter.scale, converter.offset)
        return out
    if out.exists():
        raise KitError(f"{out}: already exists; choose another name")
    return _save_weights_atomic(backbone, out)


def _save_weights_atomic(model: keras.Model, dst: Path) -> Path:
    """``model.save_weights(dst)``, atomically; Keras reads a weights file by its ``.weights.h5`` suffix."""
    if not dst.name.endswith(".weights.h5"):
        raise KitError(f"{dst}: the weights file name must end in .weights.h5")
    with fsutil.atomic_path(dst, keep_suffix=True) as tmp:
        model.save_weights(str(tmp))
    return dst
