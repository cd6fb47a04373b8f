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

The registry and kit's from-scratch CNNs are kit.training.builders', the weights files (routes, loading, conversion,
export) kit.training.weights'; their names stay importable from here. kit's layers stay in this module: a saved
``.keras`` file records the module of each of them.

Example:
    model = build_model("efficientnet_b3", n_classes=2, size=384, n_meta=3,
                        weights="/kaggle/input/effnet/efficientnetb3_notop.h5")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable

import keras

from kit.training import backbones
from kit.training.builders import (  # noqa: F401  the registry and kit's own CNNs, importable from here as before the split
    _BACKBONES,
    COMPACT_WIDTHS,
    Backbone,
    _backbone,
    backbone_spec,
    compact_cnn,
    compact_stages,
    pcam_cnn,
    register,
    small_cnn,
    tiny_cnn,
)
from kit.core.errors import KitError
from kit.training.schedule import RampExpDecay  # noqa: F401  registered, so a compiled best.keras loads back
from kit.core.task import task_for
from kit.training.weights import (  # noqa: F401  the weights files' names, importable from here as before the split
    IMAGENET_MEAN_RGB,
    IMAGENET_STD_RGB,
    _load_backbone_weights,
    backbone_of,
    convert_efficientnet_weights,
    export_backbone,
    freeze_batchnorm,
    weights_route,
    write_image_converter,
)

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


# --- layers ---------------------------------------------------------------------------------------

@keras.saving.register_keras_serializable(package="kit")
class CaffePreprocess(keras.layers.Layer):
    """RGB 0..255 -> BGR minus the ImageNet mean: what ResNet50 / VGG weights expect ("caffe" mode)."""

    def call(self, x):
        x = keras.ops.flip(keras.ops.cast(x, self.compute_dtype), axis=-1)
        return x - keras.ops.convert_to_tensor(CAFFE_MEAN_BGR, dtype=self.compute_dtype)


# --- keras.applications backbones (dict rows) --------------------------------------------------------

imagenet_file = backbones.imagenet_file  # the file name is table data: kit.training.backbones owns it


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


# --- keras-hub presets ------------------------------------------------------------------------------

# keras-hub installs with --no-deps: its tensorflow-text requirement would pull a second TensorFlow.
KERAS_HUB_HINT = "pip install --no-deps keras-hub==0.26.* regex kagglehub (Kaggle's GPU image ships it)"


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
            "kit.training.models.write_image_converter" if file == "image_converter.json" else ""))
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


for _row in backbones.BACKBONES.values():
    if _row.family == "keras_hub":
        register(_row.name)(_hub_builder(_row.name))


# --- weights routes ---------------------------------------------------------------------------------

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


# --- the model ------------------------------------------------------------------------------------------

def build_model(name: str, *, n_classes: int, size: int, weights: str | os.PathLike | None = None,
                n_meta: int = 0, dropout: float = 0.2, trainable_backbone: bool = True) -> keras.Model:
    """Backbone ``name`` + optional metadata branch + binary (1 sigmoid) or softmax head.

    Args:
        name: a registry name (``kit.training.backbones.list_models()``).
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


