"""Weights files: what ``--weights`` names, loading a file into a backbone, converting the ``efficientnet``
package's files, and exporting a run's backbone for the next run.

These work on models kit.training.models builds and reads (its registry rows and its layers): reach them through
kit.training.models.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np

from kit.core import fsutil
from kit.training.builders import Backbone, _backbone
from kit.core.errors import KitError

IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


# --- weights routes ---------------------------------------------------------------------------------

_PRESET_SCHEMES = ("kaggle://", "hf://", "modelscope://", "gs://")


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
                "kit.training.models.convert_efficientnet_weights" if spec.family == "efficientnet" else "")
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


def backbone_of(model: keras.Model) -> keras.Model:
    """The backbone inside a model ``build_model`` made (also behind device augmentation): its one nested Model."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner) == 1 and model.name.endswith("_augmented"):
        return backbone_of(inner[0])
    if len(inner) != 1:
        raise KitError(f"model: {model.name} holds {len(inner)} nested models; expected one backbone")
    return inner[0]


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
