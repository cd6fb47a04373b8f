"""What a fold's fit is made of: the loss and the running metric (Keras ops only, so they run on JAX too), the
optimizer and its learning-rate schedule, class weights, and the compiled model.

The loss and the metric are registered with Keras under the package "kit", so a saved last.keras (model,
optimizer and compile state) loads again for ``--resume``. Example::

    model = build_and_compile(cfg, strategy.get_strategy(cfg.strategy), steps_per_epoch=100)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import keras
import numpy as np
from keras import ops

from kit.core import metrics
from kit.training import models, pipeline, schedule
from kit.data import records
from kit.training.config import Config, check_choice
from kit.core.errors import KitError


# --- losses and metrics (Keras ops only: they run on JAX too) --------------------------------------


@keras.saving.register_keras_serializable(package="kit")
class SparseCategoricalLoss(keras.losses.Loss):
    """Cross-entropy on integer targets with label smoothing; focal when ``gamma`` > 0."""

    def __init__(self, n_classes: int, label_smoothing: float = 0.0, gamma: float = 0.0,
                 name: str = "sparse_categorical_loss", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if n_classes < 2:
            raise ValueError(f"Argument `n_classes` must be >= 2. Received: n_classes={n_classes}")
        self.n_classes, self.label_smoothing, self.gamma = int(n_classes), float(label_smoothing), float(gamma)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y = ops.one_hot(ops.cast(ops.reshape(y_true, [-1]), "int32"), self.n_classes)
        y = y * (1.0 - self.label_smoothing) + self.label_smoothing / self.n_classes
        p = ops.clip(ops.cast(y_pred, "float32"), 1e-7, 1.0 - 1e-7)
        ce = -y * ops.log(p)
        if self.gamma:
            ce = ce * ops.power(1.0 - p, self.gamma)
        return ops.sum(ce, axis=-1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_classes": self.n_classes, "label_smoothing": self.label_smoothing,
                "gamma": self.gamma}


@keras.saving.register_keras_serializable(package="kit")
class BalancedAccuracy(keras.metrics.Metric):
    """Mean recall over the classes present in y_true (ISIC 2018 task 3), accumulated over every batch."""

    def __init__(self, n_classes: int, name: str = "balanced_accuracy", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.n_classes = int(n_classes)
        self.seen = self.add_variable(shape=(self.n_classes,), initializer="zeros", name="seen", dtype="float32")
        self.hits = self.add_variable(shape=(self.n_classes,), initializer="zeros", name="hits", dtype="float32")

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        y = ops.cast(ops.reshape(y_true, [-1]), "int32")
        pred = ops.cast(ops.argmax(ops.reshape(y_pred, [-1, self.n_classes]), axis=-1), "int32")
        onehot = ops.one_hot(y, self.n_classes, dtype="float32")
        self.seen.assign_add(ops.sum(onehot, axis=0))
        self.hits.assign_add(ops.sum(onehot * ops.cast(ops.expand_dims(ops.equal(pred, y), -1), "float32"), axis=0))

    def result(self) -> Any:
        present = ops.cast(self.seen > 0, "float32")
        recall = self.hits / ops.maximum(self.seen, 1.0)
        return ops.sum(recall * present) / ops.maximum(ops.sum(present), 1.0)

    def reset_state(self) -> None:
        # ops.zeros_like on a Keras Variable fails on JAX ("Could not convert <Variable ...>")
        self.seen.assign(ops.zeros(self.seen.shape, self.seen.dtype))
        self.hits.assign(ops.zeros(self.hits.shape, self.hits.dtype))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "n_classes": self.n_classes}


def make_loss(cfg: Config) -> keras.losses.Loss:
    """The loss ``cfg.loss`` names, for the config's number of classes."""
    check_choice("loss", cfg.loss)
    task = cfg.task
    kind = cfg.loss if cfg.loss != "auto" else task.default_loss
    if kind not in task.losses:
        raise KitError(f"loss: {kind} does not fit {cfg.n_classes} classes (bce is binary, cce multi-class)")
    return _LOSSES[task.name, kind](cfg)


# (task, loss kind) -> the Keras loss; kit.core.task lists the kinds that fit each task
_LOSSES: dict[tuple[str, str], Callable[[Config], keras.losses.Loss]] = {
    ("binary", "bce"): lambda cfg: keras.losses.BinaryCrossentropy(label_smoothing=cfg.label_smoothing),
    ("binary", "focal"): lambda cfg: keras.losses.BinaryFocalCrossentropy(gamma=cfg.focal_gamma,
                                                                          label_smoothing=cfg.label_smoothing),
    ("multiclass", "cce"): lambda cfg: SparseCategoricalLoss(cfg.n_classes, cfg.label_smoothing, 0.0),
    ("multiclass", "focal"): lambda cfg: SparseCategoricalLoss(cfg.n_classes, cfg.label_smoothing, cfg.focal_gamma),
}


def make_metric(cfg: Config) -> keras.metrics.Metric:
    """A running Keras figure of the competition metric on the training batches, named "metric".

    Only the training side: validation is scored exactly, on the whole fold, by :class:`_ExactValidation`
    (``keras.metrics.AUC`` buckets thresholds and logged 0.5000 for a run whose exact AUC was 0.662).
    """
    figure = cfg.task.keras_figure(metrics.TABLE.get(cfg.metric))
    return _KERAS_FIGURES[figure](cfg)


# kit.core.metrics' Keras names -> the running figure on the training batches
_KERAS_FIGURES: dict[str, Callable[[Config], keras.metrics.Metric]] = {
    "auc": lambda cfg: keras.metrics.AUC(name="metric"),
    "balanced_accuracy": lambda cfg: BalancedAccuracy(cfg.n_classes, name="metric"),
}


def _schedule_kwargs(cfg: Config, replicas: int) -> dict[str, float]:
    return dict(lr_start=cfg.lr_start, lr_max=cfg.lr_max * replicas, lr_min=cfg.lr_min,
                ramp_epochs=cfg.lr_ramp_epochs, sustain_epochs=cfg.lr_sustain_epochs, decay=cfg.lr_decay)


def lr_at(cfg: Config, replicas: int) -> Callable[[int], float]:
    """Per-epoch learning rate: the ramp/sustain/decay schedule with lr_max scaled by replicas."""
    kw = _schedule_kwargs(cfg, replicas)
    return lambda epoch: schedule.ramp_exp_decay(epoch, **kw)


def make_optimizer(cfg: Config, replicas: int, steps_per_epoch: int,
                   backbone_paths: Sequence[str] = ()) -> keras.optimizers.Optimizer:
    """Adam whose rate follows the schedule per step (``lr_per="step"``) or is set per epoch by a callback;
    its steps on ``backbone_paths`` are ``cfg.backbone_lr_mult`` times smaller when that is below 1.

    A per-step schedule counts the optimizer's own iterations, which a resumed fold's last.keras restores.
    """
    rate: Any = cfg.lr_start
    if cfg.lr_per == "step":
        rate = schedule.RampExpDecay(**_schedule_kwargs(cfg, replicas), steps_per_epoch=steps_per_epoch)
    if cfg.backbone_lr_mult != 1.0:
        return schedule.BackboneScaledAdam(backbone_paths, cfg.backbone_lr_mult, learning_rate=rate)
    return keras.optimizers.Adam(learning_rate=rate)



# --- class weights and the compiled model ------------------------------------------------------------


def _class_weights(cfg: Config, manifest: records.Manifest, train_folds: Sequence[int]) -> dict[int, float] | None:
    if cfg.class_weight == "none":
        return None
    counts = np.zeros(max(cfg.n_classes, 2))
    for k in train_folds:
        info = manifest.folds[k]
        key = cfg.task.count_key
        if getattr(info, key) is None:
            raise KitError(f"{cfg.records}: manifest.json has no {key} for fold {k}; class_weight balanced needs them")
        counts += cfg.task.class_totals(info, cfg.classes)
    n, present = counts.sum(), counts > 0
    return {i: float(n / (present.sum() * c)) for i, c in enumerate(counts) if c > 0}


def _build(cfg: Config, log: Callable[[str], None] | None = None) -> keras.Model:
    """The config's model; with ``log``, one line confirming where its pretrained weights came from."""
    model = models.build_model(
        cfg.model, n_classes=cfg.n_classes, size=cfg.size, weights=cfg.weights if cfg.pretrained else None,
        n_meta=pipeline.meta_width(cfg.meta_numeric, cfg.meta_categorical) if cfg.meta else 0,
        dropout=cfg.dropout, trainable_backbone=cfg.trainable_backbone,
    )
    if log is not None and cfg.pretrained:
        log(models.weights_line(model, cfg.model, cfg.weights))
    return model


def build_and_compile(cfg: Config, acc: Any, steps_per_epoch: int = 1) -> keras.Model:
    """The config's model (behind device augmentation when asked), compiled, inside the accelerator's scope;
    ``steps_per_epoch`` paces a per-step learning-rate schedule. The backbone starts frozen when
    ``cfg.freeze_epochs`` asks for a head-only warm-up."""
    with acc.scope():
        model = _build(cfg)
        if cfg.augment_on == "device":
            model = pipeline.with_device_augmentation(
                model, pipeline.resolve_augment(cfg.augment, cfg.augment_options), seed=cfg.seed)
    compile_phase(model, cfg, acc, steps_per_epoch, frozen=cfg.freeze_epochs > 0)
    return model


def compile_phase(model: keras.Model, cfg: Config, acc: Any, steps_per_epoch: int, *, frozen: bool,
                  done_steps: int = 0) -> None:
    """(Re)compile ``model`` with its backbone frozen or trainable, and a fresh optimizer at step ``done_steps``.

    Keras fixes the trainable variables at compile time, so the switch from the head-only warm-up to the
    whole network compiles again. A frozen Keras layer also runs its BatchNorm in inference mode: the
    pretrained statistics stay as they are. A per-step schedule continues from ``done_steps``.
    """
    backbone = models.backbone_of(model)
    backbone.trainable = cfg.trainable_backbone and not frozen
    if backbone.trainable and cfg.pretrained:
        models.freeze_batchnorm(backbone)
    with acc.scope():
        optimizer = make_optimizer(cfg, acc.replicas, steps_per_epoch, [v.path for v in backbone.weights])
        model.compile(optimizer=optimizer, loss=make_loss(cfg), metrics=[make_metric(cfg)],
                      jit_compile=getattr(acc, "jit_compile", "auto"))
        if done_steps:
            optimizer.build(model.trainable_variables)
            optimizer.iterations.assign(done_steps)
