"""The backbone registry (kit.training.backbones' rows, each with the function that builds it) and kit's from-scratch CNNs.

kit.training.models registers the keras.applications and keras-hub builders here when it is imported, and builds
whole models from these rows: reach the registry through kit.training.models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import keras

from kit.training import backbones
from kit.core.errors import KitError


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


_BACKBONES: dict[str, Backbone] = {}  # the rows of kit.training.backbones, each with its builder


def register(name: str, *, preprocess: Callable[[], keras.layers.Layer] | None = None) -> Callable:
    """Decorator: ``fn(size[, weights=]) -> keras.Model`` builds the backbone ``name`` of kit.training.backbones' table."""
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
        raise KitError(f"model: {name} is in kit's table but has no builder in kit.training.models")
    return _BACKBONES[name]


def backbone_spec(name: str) -> Backbone:
    """The registry row of ``name`` (family, default size, parameters, builder); KitError when unknown."""
    return _backbone(name)


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
