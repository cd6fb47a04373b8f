"""Grad-CAM: where a fold model found the evidence for a class, as a heatmap over each image (``gradcam``), on
a convolutional backbone's last feature map or a keras-hub vision transformer's patch tokens, on the
TensorFlow and JAX backends alike. Keras is imported only when a heatmap is computed."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from kit.core.errors import KitError
from kit.core.task import task_of_width


# keras-hub's transformer blocks (ViTEncoderBlock, DINOV2Layer, TransformerEncoder): the last one's input
# tokens are what Grad-CAM weighs in a vision transformer
_BLOCK_SUFFIXES = ("Block", "Layer", "TransformerEncoder")


def _reduces_a_map(op: Any) -> bool:
    """Whether a graph operation takes one 4-D feature map and gives something of lower rank (pooling, flatten)."""
    try:
        x, y = op.input, op.output
    except (AttributeError, ValueError):  # an input layer, or a layer called more than once
        return False
    one = not isinstance(x, (list, tuple, dict)) and not isinstance(y, (list, tuple, dict))
    return one and len(x.shape) == 4 and len(y.shape) < 4


def _transformer_blocks(backbone: Any) -> list[Any]:
    """The transformer blocks of the keras-hub model inside ``backbone`` (any order), or []."""
    import keras

    hubs = [layer for layer in backbone.layers
            if isinstance(layer, keras.Model) and type(layer).__module__.startswith("keras_hub.")]
    blocks = []
    for hub in hubs:
        blocks += [layer for layer in hub._flatten_layers(include_self=False)
                   if type(layer).__module__.startswith("keras_hub.") and not isinstance(layer, keras.Model)
                   and type(layer).__name__.endswith(_BLOCK_SUFFIXES)]
    return blocks


def _patch_size(backbone: Any) -> int | None:
    for layer in backbone._flatten_layers():
        size = getattr(layer, "patch_size", None)
        if size:
            return int(size[0] if isinstance(size, (tuple, list)) else size)
    return None


@contextlib.contextmanager
def _inputs_swapped(layers: Sequence[Any], swap: Callable[[Any, Any], Any]) -> Iterator[None]:
    """While inside, each of ``layers`` computes on ``swap(layer, x)`` instead of its first input ``x``.

    Grad-CAM needs the model's output as a function of one inner tensor. Swapping a layer's input in its
    ``call`` reaches that tensor in any graph (EfficientNet's skip connections, ConvNeXt's residual adds, a
    metadata branch joined after the backbone) and inside layers that are not graphs (a keras-hub
    transformer's blocks), on TensorFlow and JAX alike.
    """
    for layer in layers:
        original = layer.call

        def call(*args: Any, _original: Any = original, _layer: Any = layer, **kwargs: Any) -> Any:
            return _original(swap(_layer, args[0]), *args[1:], **kwargs)

        object.__setattr__(layer, "call", call)  # past Keras' attribute tracking: a plain instance attribute
    try:
        yield
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")


def _value_and_grad(fn: Any, x: Any) -> tuple[Any, Any]:
    """``fn(x)`` and its gradient with respect to ``x`` on the running Keras backend (the one non-ops step)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x)
    if backend == "jax":
        import jax

        return jax.value_and_grad(fn)(x)
    raise KitError(f"Grad-CAM: the {backend} backend is not supported (tensorflow or jax)")


def _model_inputs(model: Any, images: np.ndarray, meta: np.ndarray | None) -> dict[str, np.ndarray]:
    """The model's inputs: the images, and for a metadata model ``meta`` (default zeros: every column missing,
    which the pipeline feeds as the column mean for a number and no code for a category)."""
    inputs = {"image": np.asarray(images, "float32")}
    wanted = model.input if isinstance(model.input, dict) else {}
    if "meta" in wanted:
        width = int(wanted["meta"].shape[-1])
        inputs["meta"] = (np.zeros((len(images), width), "float32") if meta is None
                          else np.asarray(meta, "float32").reshape(len(images), width))
    return inputs


def gradcam(model: Any, images: np.ndarray, classes: Sequence[int] | None = None,
            meta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps [N, H, W] in [0, 1] of ``images`` [N, H, W, 3] (pixels 0..255), and the model's outputs.

    The class explained is ``classes[i]``, by default the predicted one (binary: positive when p > 0.5). The
    map weighed is the backbone's last feature map (the input of the layer that pools or flattens it), or in a
    keras-hub vision transformer the patch tokens entering its last block, laid on their grid. A metadata model
    gets ``meta`` [N, M] beside the images (see ``_model_inputs``): the heatmap explains its image branch
    with the metadata held fixed.
    """
    from keras import ops

    from kit.training import models

    try:
        backbone = models.backbone_of(model)
    except KitError:
        backbone = model  # a model without a nested backbone: its own graph
    maps = [op for op in backbone.operations if _reduces_a_map(op)]
    candidates = maps[-1:] or _transformer_blocks(backbone)
    if not candidates:
        raise KitError(f"{model.name}: no feature map or transformer block to take Grad-CAM from")
    inputs = _model_inputs(model, images, meta)
    seen: list[tuple[Any, Any]] = []
    with _inputs_swapped(candidates, lambda layer, x: seen.append((layer, x)) or x):
        out = ops.convert_to_numpy(ops.cast(model(inputs, training=False), "float32"))
    target, fmap = seen[-1]  # the last block called is the last block
    task = task_of_width(out.shape[-1])
    if classes is None:
        classes = task.labels(task.squeeze(out))
    weight = ops.convert_to_tensor(task.output_weights(np.asarray(classes, int)))

    def score(a: Any) -> Any:
        with _inputs_swapped([target], lambda layer, x: a):
            return ops.sum(ops.cast(model(inputs, training=False), "float32") * weight)

    _, grads = _value_and_grad(score, fmap)
    fmap = ops.convert_to_numpy(ops.cast(fmap, "float32"))
    grads = ops.convert_to_numpy(ops.cast(grads, "float32"))
    if fmap.ndim == 3:  # tokens [N, T, D]: the patch tokens after the class (and register) tokens, on their grid
        patch = _patch_size(backbone)
        side = images.shape[1] // patch if patch else math.isqrt(fmap.shape[1] - 1)
        first = fmap.shape[1] - side * side
        if side < 1 or first < 0:
            raise KitError(f"{model.name}: {fmap.shape[1]} tokens do not hold a {side}x{side} patch grid")
        fmap, grads = (t[:, first:].reshape(len(t), side, side, -1) for t in (fmap, grads))
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((fmap * weights).sum(axis=-1, keepdims=True), 0.0)
    cam = cam / (cam.max(axis=(1, 2), keepdims=True) + 1e-8)
    cam = ops.image.resize(cam, (images.shape[1], images.shape[2]), interpolation="bilinear")
    return np.clip(ops.convert_to_numpy(cam)[..., 0], 0.0, 1.0), out
