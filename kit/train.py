"""k-fold training: per fold a model trained on the other folds, the best epoch by the competition metric,
history, out-of-fold predictions; the run folder that ``kit predict`` and ``kit blend`` read.

The run folder (``cfg.out``) and its files are kit.runfolder's (see RunFolder): the resolved config, per
fold the best and latest models, the history (val_metric is the competition's exact metric over every image
of the fold; metric is Keras' running figure on the training batches), the fold's out-of-fold predictions
and its done marker (written last); the run's out-of-fold predictions and CV summary, plots, and an error
note after a fold raised.

The out-of-fold predictions and the CV summary are rewritten after every finished fold, so a run that stops
(a NaN loss, a killed kernel) keeps what finished; the plots are drawn at the end. Example::

    res = train_folds(Config(records="records/siim256", out="runs/b0", model="efficientnet_b0"))
    res.scores[-1]   # the overall out-of-fold metric
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import keras
import numpy as np
import pandas as pd
from keras import ops

from kit import (backbones, competitions, defaults, fsutil, metrics, models, pipeline, plots, records, schedule,
                 strategy)
from kit.config import SMOKE_FOLDS, Config, check_choice, smoke_config
from kit.errors import KitError
from kit.runfolder import (BEST, CONFIG, FOLD_TEMPORARY_FILES, FOLD_TRAINING_FILES, LAST, STATE, RunFolder, cv_summary,
                           oof_table)


class FoldResult(NamedTuple):
    """What train_folds returns: OOF predictions, per-fold scores then the overall score last."""

    oof: pd.DataFrame
    scores: list[float]
    folds: list[int]
    metric: str
    run: Path
    stopped: "StopPoint | None" = None  # set when a time limit stopped the run before its end


class StopPoint(NamedTuple):
    """Where a time limit stopped a run: the fold left unfinished and the epochs it holds (0: not started)."""

    fold: int
    epochs_done: int
    epochs: int


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


# (task, loss kind) -> the Keras loss; kit.task lists the kinds that fit each task
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


# kit.metrics' Keras names -> the running figure on the training batches
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


# --- callbacks -------------------------------------------------------------------------------------


class _EpochLR(keras.callbacks.Callback):
    """Sets the learning rate at each epoch start (unless ``fn`` is None: a per-step schedule owns it) and
    logs the rate in force at the epoch's end as ``lr``."""

    def __init__(self, fn: Callable[[int], float] | None) -> None:
        super().__init__()
        self.fn = fn

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.fn is not None:
            self.model.optimizer.learning_rate = self.fn(epoch)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["lr"] = float(ops.convert_to_numpy(self.model.optimizer.learning_rate))


# The validation fold's decoded pixels are kept in memory between epochs up to this size (a 6,600-image fold at
# 256 px is 1.3 GB: read again each epoch instead).
VALIDATION_CACHE_BYTES = 512 * 2**20


class _ExactValidation(keras.callbacks.Callback):
    """After each epoch, predicts every image of the validation fold and logs ``val_metric`` (the competition's
    exact metric, scikit-learn's definition) and ``val_loss`` (the training loss, without class weights).

    Several replicas cannot split a partial batch: the last batch is padded and the padding dropped, so no
    image is ever left out (Keras' own validation drops the remainder instead). Runs before the history and
    checkpoint callbacks, which read what it writes into ``logs``.
    """

    def __init__(self, paths: Sequence[Path], cfg: Config, batch: int, replicas: int, target: np.ndarray) -> None:
        super().__init__()
        self.paths, self.cfg, self.batch, self.replicas, self.target = paths, cfg, batch, replicas, target
        self.metric, self.loss = cfg.metric, make_loss(cfg)
        self._dataset: Any = None
        self.seconds = 0.0  # the last epoch's validation pass, the time budget's measure of one prediction pass

    def dataset(self) -> Any:
        """The fold's identity view, built once: the same images every epoch, decoded once when they fit in memory
        (a fresh dataset and decode per epoch cost a 270-image fold 0.25 s each time, the cached one 0.04 s)."""
        if self._dataset is None:
            ds = pipeline.predict_dataset(self.paths, self.cfg, "identity", self.batch, pad_to_batch=self.replicas > 1)
            n = records.count_data_items(self.paths)
            self._dataset = ds.cache() if n * self.cfg.size ** 2 * 3 <= VALIDATION_CACHE_BYTES else ds
        return self._dataset

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        started = time.monotonic()
        n = records.count_data_items(self.paths)
        pred = np.asarray(self.model.predict(self.dataset(), verbose=0), np.float64)[:n]
        self.seconds = time.monotonic() - started
        pred = self.cfg.task.squeeze(pred)
        logs["val_loss"] = validation_loss(self.loss, self.target, pred)
        try:
            logs["val_metric"] = float(metrics.score(self.metric, self.target, pred))
        except KitError:
            logs["val_metric"] = float("nan")  # NaN predictions, or one class in the fold: no best epoch from it


def validation_loss(loss: keras.losses.Loss, target: np.ndarray, pred: np.ndarray) -> float:
    """The training loss of ``pred`` ([N] binary or [N, K]) against integer ``target``, averaged over rows."""
    y = np.asarray(target, "float32").reshape(-1, 1)
    p = np.asarray(pred, "float32").reshape(len(y), -1)
    return float(ops.convert_to_numpy(loss(y, p)))


class _EpochSeeds(keras.callbacks.Callback):
    """Sets the state of every random-number generator of the model (dropout, device augmentation) at each epoch start
    from the fold's seed and the epoch: a resumed fold draws what an uninterrupted one would have (a saved model does
    not carry its generators' states)."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        generators = [g for layer in self.model._flatten_layers() for g in getattr(layer, "_seed_generators", [])]
        for i, gen in enumerate(generators):
            gen.state.assign(np.asarray([self.seed * 1_000_003 + epoch, i], gen.state.dtype))


class _NanGuard(keras.callbacks.Callback):
    """Stops training when the epoch's loss is not finite (checked per epoch: no per-batch sync)."""

    def __init__(self) -> None:
        super().__init__()
        self.bad_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_epoch = epoch
            self.model.stop_training = True


class TimeBudget:
    """A wall-clock deadline (``time.monotonic()`` seconds) and what this process measured of a fold's work: its
    first epoch (which also builds the model and traces the graphs), its later epochs (training, validation and
    checkpoint writes), a validation pass and a save, each the longest seen.

    Predictions are padded: an epoch may run longer than the longest seen (a slower disk, a busier machine), so
    the next one is counted at ``SAFETY`` times that, and a fold's end (its out-of-fold predictions over every
    TTA view, loading best.keras, the writes) is counted at ``SAFETY`` times its measured parts plus ``END_S``.
    """

    SAFETY = 1.5
    END_S = 5.0

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.first_s = 0.0
        self.epoch_s = 0.0
        self.predict_s = 0.0
        self.save_s = 0.0

    def left(self) -> float:
        """Seconds until the deadline."""
        return self.deadline - time.monotonic()

    def fold_end_s(self, views: int) -> float:
        """What finishing a fold takes after its last epoch: ``views`` prediction passes, loading and writing."""
        return self.SAFETY * (views * self.predict_s + 2 * self.save_s) + self.END_S

    def fits(self, views: int, *, first: bool, then_ends: bool) -> bool:
        """Whether one more epoch (a fold's ``first``, or a later one) fits before the deadline, followed by the
        fold's end (``then_ends``) or by the write that saves the fold's state for ``--resume``. True while nothing
        is measured yet: a process's first epoch always runs."""
        epoch = self.first_s if first else self.epoch_s or self.first_s
        if not epoch:
            return True
        after = self.fold_end_s(views) if then_ends else self.SAFETY * self.save_s + self.END_S
        return self.SAFETY * epoch + after <= self.left()


class _Deadline(keras.callbacks.Callback):
    """Measures each epoch into a :class:`TimeBudget`; after an epoch, stops the fit when the next epoch (and, were it
    the fold's last, the fold's end) would not finish in time, saving last.keras for ``--resume`` first. Runs after
    the checkpoints, whose save it may complete."""

    def __init__(self, budget: TimeBudget, ckpt: _Checkpoints, validation: _ExactValidation, last_epoch: int,
                 views: int) -> None:
        super().__init__()
        self.budget, self.ckpt, self.validation = budget, ckpt, validation
        self.last_epoch, self.views = last_epoch, views
        self.stopped_after: int | None = None
        self._began = 0.0
        self._first = True

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._first = True  # each fit traces its graphs again in its first epoch

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._began = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        budget, took = self.budget, time.monotonic() - self._began
        if self._first:
            budget.first_s, self._first = max(budget.first_s, took), False
        else:
            budget.epoch_s = max(budget.epoch_s, took)
        budget.predict_s = max(budget.predict_s, self.validation.seconds)
        budget.save_s = max(budget.save_s, self.ckpt.save_seconds)
        if epoch >= self.last_epoch or self.model.stop_training:
            return  # the fold ends now (its last epoch, early stopping, a NaN loss): nothing left to fit
        if not budget.fits(self.views, first=False, then_ends=epoch + 1 >= self.last_epoch):
            self.ckpt.save_last(epoch)
            self.stopped_after = epoch
            self.model.stop_training = True


class TimeLimitReached(Exception):
    """A fold stopped at an epoch boundary before the time limit; its state is saved for ``--resume``."""

    def __init__(self, fold: int, epochs_done: int) -> None:
        super().__init__(f"fold {fold}: stopped after epoch {epochs_done} before the time limit")
        self.fold, self.epochs_done = fold, epochs_done


def inference_model(model: keras.Model) -> keras.Model:
    """The model to ship: without device-augmentation layers and without compile state, so that
    ``keras.saving.load_model`` needs nothing beyond ``import kit.models``."""
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if model.name.endswith("_augmented") and len(inner) == 1:
        model = inner[0]
    return keras.Model(model.input, model.output, name=model.name)


def _save_atomic(model: keras.Model, path: Path) -> None:
    with fsutil.atomic_path(path, keep_suffix=True) as tmp:
        model.save(tmp)


# last.keras (model + optimizer) is written after the first epoch, then at most this often: a kill loses
# at most about a minute of training, and short epochs do not pay a full save each (for a tiny CNN on
# 2,048 images at 64 px the save took a fifth of the epoch).
LAST_EVERY_S = 60.0


class _Checkpoints(keras.callbacks.Callback):
    """The best epoch by val_metric (higher is better) as best.keras, last.keras (model and optimizer) after the
    first epoch and then every ``last_every_s`` seconds, and state.json (the epoch last.keras holds and the best so
    far), so that an interrupted fold restarts near where it stopped. Writes are atomic.

    An improvement is kept in memory and written with last.keras and at the end of the fit, never more often: a
    save per improvement cost a small CNN's fold a tenth of its time. The three files on disk always agree, and a
    fold killed before they are written replays the same epochs and finds the same best on ``--resume``.

    The loss never outranks the metric; it only breaks ties. A saturated metric (a validation AUC of 1.0
    from the first epoch on) would otherwise keep the first, barely trained epoch, whose probabilities do
    not pool with other folds' into a sound out-of-fold score.
    """

    def __init__(self, folder: Path, best: float = -math.inf, best_epoch: int = -1,
                 best_loss: float = math.inf, last_every_s: float = LAST_EVERY_S, patience: int = 0) -> None:
        super().__init__()
        self.folder, self.best, self.best_epoch, self.best_loss = folder, best, best_epoch, best_loss
        self.patience = patience
        self.last_every_s = last_every_s
        self.last_epoch: int | None = None
        self._last_saved_at: float | None = None
        self._best_weights: list | None = None  # an improvement not yet written to best.keras
        self.save_seconds = 0.0  # the longest write of last.keras, best.keras and state.json so far

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        value = float(logs.get("val_metric", float("nan")))
        val_loss = float(logs.get("val_loss", float("nan")))
        if not math.isfinite(float(logs.get("loss", 0.0))):
            return  # a NaN epoch must not overwrite the last good state
        tie = math.isclose(value, self.best, rel_tol=0.0, abs_tol=1e-9)
        improved = math.isfinite(value) and (value > self.best and not tie or tie and val_loss < self.best_loss)
        if improved:
            self.best, self.best_epoch, self.best_loss = value, epoch, val_loss
            self._best_weights = self.model.get_weights()
        if self._last_saved_at is None or time.monotonic() - self._last_saved_at >= self.last_every_s:
            self.save_last(epoch)
        if self.patience and self.best_epoch >= 0 and epoch - self.best_epoch >= self.patience:
            self.model.stop_training = True  # early stopping on the exact metric, never on the loss

    def save_last(self, epoch: int) -> None:
        """last.keras (model and optimizer) after ``epoch``, then best.keras and state.json to agree with it."""
        if self.last_epoch == epoch:
            return
        started = time.monotonic()
        _save_atomic(self.model, self.folder / LAST)
        self.last_epoch, self._last_saved_at = epoch, time.monotonic()
        self._write_best()
        self.save_seconds = max(self.save_seconds, self._last_saved_at - started)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._write_best()

    def _write_best(self) -> None:
        """best.keras from the improvement held in memory (if any), then state.json for the files on disk."""
        if self._best_weights is not None:
            current = self.model.get_weights()
            self.model.set_weights(self._best_weights)
            _save_atomic(inference_model(self.model), self.folder / BEST)
            self.model.set_weights(current)
            self._best_weights = None
        # a resumed fold restarts after last.keras's epoch and keeps a later best.keras as the best
        fsutil.write_json(self.folder / STATE, {"epoch": self.last_epoch, "best": self.best,
                                                       "best_epoch": self.best_epoch, "best_loss": self.best_loss})


# --- resolving the config against the records ------------------------------------------------------


def chosen_meta_columns(names: Sequence[str], numeric: Sequence[str], categorical: Mapping[str, int],
                        manifest: records.Manifest, where: str) -> tuple[tuple[str, ...], dict[str, int]]:
    """The metadata inputs a user named, in the records' order; KitError naming a column that is not one.

    A column in the train download but not the test one (ISIC 2024's diagnosis, biopsy results, lesion
    id) is refused with its reason: it would score well in CV and be missing when predicting."""
    train_only = set(manifest.train_only_columns)
    known = [*numeric, *categorical]
    for name in names:
        if name in train_only:
            raise KitError(f"meta_columns: {name!r} is in the train download only (not in the test one), so it "
                           "can never be a model input")
        if name not in known:
            raise KitError(f"meta_columns: {name!r} is not a metadata column of {where} (columns: "
                           f"{', '.join(known) or 'none'})")
    wanted = set(names)
    return tuple(c for c in numeric if c in wanted), {c: n for c, n in categorical.items() if c in wanted}


def resolve(cfg: Config, *, accelerated: bool = False, log: Callable[[str], None] | None = None,
            smoke: bool = False) -> tuple[Config, records.Manifest]:
    """Check ``cfg`` against its records and fill in size, folds, classes, id_name and metadata columns, and what the
    user left out (model, weights, augmentation, metric: kit.defaults), saying so in one line to ``log``.

    ``accelerated``: a GPU or TPU trains this run (an ImageNet backbone is then worth fine-tuning by default);
    ``smoke``: a smoke rehearsal (kit.config.smoke_config) of at most SMOKE_FOLDS folds."""
    if not cfg.records:
        raise KitError("records: no records folder given (--records DIR)")
    cfg, _ = smoke_config(cfg, _smoke_swaps(cfg.model), smoke)
    if not cfg.out:
        raise KitError("out: no run folder given (--out RUN)")
    folder = Path(cfg.records)
    if not folder.is_dir():
        raise KitError(f"{folder}: records folder not found")
    manifest = records.read_manifest(folder, "train")
    where = f"{folder / 'manifest.json'}"
    if not manifest.labelled or manifest.split == "test":
        raise KitError(f"{where}: these are test records (unlabelled); train on the train split")
    size = manifest.image_size
    if cfg.size and cfg.size != size:
        raise KitError(f"{where}: image_size is {size} but size {cfg.size} was asked; write records at "
                       f"{cfg.size} px (kit records --size {cfg.size}) or leave size out")
    available = manifest.fold_ids
    if len(available) < 2:
        raise KitError(f"{where}: {len(available)} fold(s); k-fold training needs at least 2")
    folds = tuple(cfg.folds) or tuple(available)
    if smoke:
        folds = folds[:SMOKE_FOLDS]
    missing = [k for k in folds if k not in available]
    if missing:
        raise KitError(f"folds: fold {missing[0]} is not in {where} (folds there: "
                       f"{','.join(map(str, available))})")
    for k in folds:
        info = manifest.folds[k]
        if manifest.task.single_class(info):
            raise KitError(f"{where}: fold {k} holds one class only, so its AUC is undefined; write the records "
                           f"with fewer folds")
    if cfg.model:
        backbones.info(cfg.model)  # unknown: one line naming the known ones
    comp = competitions.of_manifest(manifest)
    choices = defaults.Choices()
    model, weights = defaults.choose_model(cfg.model, cfg.weights, accelerated=accelerated, choices=choices)
    models.check_weights(model, weights)  # a missing file, a preset of another architecture: one line
    cfg = cfg.replace(model=model, weights=weights)
    cfg.check_choices()
    augment = defaults.choose_augment(cfg.augment, comp.name if comp else None, comp.augment if comp else None, choices)
    cfg = cfg.with_schedule_defaults().replace(augment=augment)
    cfg.check_numbers()
    pipeline.resolve_augment(cfg.augment, cfg.augment_options)
    if cfg.epoch_positives and not cfg.oversample:
        raise KitError("epoch_positives: needs oversample, the positives' share of each epoch (e.g. 0.2 for 1:4)")
    meta = manifest.metadata
    numeric = meta.numeric
    # public SIIM records carry codes without their tables: those columns cannot be one-hot encoded
    categorical = {c: len(codes) for c, codes in meta.categorical.items() if codes}
    if cfg.meta_columns:
        cfg = cfg.replace(meta=True)  # naming the columns asks for them
        numeric, categorical = chosen_meta_columns(cfg.meta_columns, numeric, categorical, manifest, where)
    if cfg.meta and not (numeric or categorical):
        raise KitError(f"{where}: meta was asked but the records hold no metadata columns")
    stats = {c: [v.mean, v.std] for c, v in meta.numeric_stats.items() if c in numeric}
    classes = manifest.classes
    metric = defaults.choose_metric(cfg.metric, comp.name if comp else None, comp.metric if comp else None,
                                    manifest.n_classes or 2, choices)
    if metric not in metrics.METRICS:
        raise KitError(f"metric: unknown metric {metric!r} (known: {', '.join(metrics.METRICS)})")
    resolved = cfg.replace(
        metric=metric, competition=comp.name if comp else "",
        secondary_metrics=list(comp.secondary) if comp and not cfg.metric else list(cfg.secondary_metrics),
        size=size, folds=list(folds), n_classes=manifest.n_classes, classes=list(classes), id_name=manifest.id_name,
        meta_numeric=list(numeric) if cfg.meta else [], meta_categorical=categorical if cfg.meta else {},
        meta_stats=stats if cfg.meta else {},
    )
    make_loss(resolved)  # unknown or unfitting loss: fail before anything is written
    if log is not None and choices.line():
        log(choices.line())
    return resolved, manifest


def _imagenet(model: str) -> bool:
    return model in backbones.BACKBONES and backbones.is_imagenet_family(model)


def _smoke_swaps(model: str) -> bool:
    """Whether a smoke rehearsal trains its tiny CNN instead: for an ImageNet backbone, and for kit's own choice."""
    return not model or _imagenet(model)


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


# --- one fold --------------------------------------------------------------------------------------


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


def _load(path: Path, acc: Any) -> keras.Model:
    with acc.scope():
        return keras.saving.load_model(path)


def run_tta_views(cfg: Config) -> tuple[list[str | int], str | None]:
    """The run's first ``cfg.tta`` views, from its own augmentation (see kit.pipeline.tta_views)."""
    return pipeline.tta_views(cfg.tta, pipeline.resolve_augment(cfg.augment, cfg.augment_options))


def predict_oof(model: keras.Model, paths: Sequence[Path], cfg: Config, batch: int, replicas: int = 1,
                views: Sequence[str | int] | None = None) -> np.ndarray:
    """Predictions for ``paths`` in record order, averaged over ``views`` (default: the run's TTA views); [N] or [N,K].

    The last batch is padded to full size when several replicas share it, and the padding dropped.
    """
    views = run_tta_views(cfg)[0] if views is None else views
    n = records.count_data_items(paths)
    total = None
    for view in views:
        ds = pipeline.predict_dataset(paths, cfg, view, batch, pad_to_batch=replicas > 1)
        p = np.asarray(model.predict(ds, verbose=0), np.float64)[:n]
        total = p if total is None else total + p
    return cfg.task.squeeze(total / len(views))


def _oof_frame(table: pd.DataFrame, pred: np.ndarray, cfg: Config, fold: int) -> pd.DataFrame:
    return oof_table(table["image_name"].to_numpy(), table["target"].to_numpy(), pred, fold, cfg.classes)


def _pred_matrix(df: pd.DataFrame, cfg: Config) -> np.ndarray:
    return cfg.task.pred_matrix(df, cfg.classes)


def _or(value: Any, missing: float) -> float:
    return missing if value is None else float(value)


def _resume_point(fdir: Path, acc: Any, fold: int,
                  log: Callable[[str], None]) -> tuple[tuple[int, float, int, float], keras.Model] | None:
    """(epoch to start, best, best epoch, best loss) and the model of an interrupted fold, or None (with one
    warning line) when its state.json or last.keras is missing or damaged: the fold then restarts from scratch."""
    try:
        state = json.loads((fdir / STATE).read_text())
        # strict JSON stores a best of -inf (no finite metric yet) as null
        point = (int(state["epoch"]) + 1, _or(state["best"], -math.inf), int(state["best_epoch"]),
                 _or(state.get("best_loss"), math.inf))
        if not (fdir / LAST).is_file():
            raise FileNotFoundError(f"{LAST} is missing")
        return point, _load(fdir / LAST, acc)
    except Exception as exc:  # noqa: BLE001 - a damaged file (truncated zip, bad JSON) fails in many ways; all mean restart
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        log(f"warning: fold {fold}: cannot resume from {fdir} ({type(exc).__name__}: {reason}); training this fold "
            "again from its start")
        return None


def train_fold(cfg: Config, fold: int, run: Path, manifest: records.Manifest, acc: Any, *, resume: bool = False,
               log: Callable[[str], None] = print, budget: TimeBudget | None = None) -> tuple[pd.DataFrame, float]:
    """Train on every other fold, validate on ``fold``; returns its OOF frame and score (files in run/fold{k}).

    With ``budget``, stops at the first epoch boundary after which the rest would not fit, saves the fold's state
    and raises :class:`TimeLimitReached`."""
    folder, fdir, rf = Path(cfg.records), RunFolder(run).fold_dir(fold), RunFolder(run)
    fdir.mkdir(parents=True, exist_ok=True)
    others = [k for k in manifest.fold_ids if k != fold]
    train_paths = records.list_shards(folder, others, split="train")
    valid_paths = records.list_shards(folder, [fold], split="train")
    batch = acc.global_batch(cfg.batch)
    n_train, n_valid = records.count_data_items(train_paths), records.count_data_items(valid_paths)
    steps = epoch_steps(cfg, n_train, sum(manifest.folds[k].positives or 0 for k in others), batch)
    keras.utils.set_random_seed(cfg.seed + fold)

    initial_epoch, best, best_epoch, best_loss = 0, -math.inf, -1, math.inf
    resumed = _resume_point(fdir, acc, fold, log) if resume and rf.state_path(fold).is_file() else None
    if resumed is not None:
        (initial_epoch, best, best_epoch, best_loss), model = resumed
        _truncate_history(rf.history_path(fold), initial_epoch)
        log(f"fold {fold}: resuming after epoch {initial_epoch} (best val {best:.4f})")
    else:
        rf.remove_fold_files(fold, FOLD_TRAINING_FILES)
        model = build_and_compile(cfg, acc, steps)
    log(f"fold {fold}: training on folds {','.join(map(str, others))} ({n_train} images, {steps} steps of "
        f"{batch}), validating on {n_valid} images")

    table = pipeline.record_table(valid_paths)
    target = table["target"].to_numpy()
    guard, ckpt = _NanGuard(), _Checkpoints(fdir, best, best_epoch, best_loss, patience=cfg.patience)
    validation = _ExactValidation(valid_paths, cfg, batch, acc.replicas, target)
    # the exact score first (history and checkpoints read it); history before checkpoints: a run killed
    # between the two repeats the epoch and drops its row
    callbacks = [_EpochSeeds(cfg.seed + fold), _EpochLR(lr_at(cfg, acc.replicas) if cfg.lr_per == "epoch" else None),
                 guard, validation,
                 keras.callbacks.CSVLogger(str(rf.history_path(fold)), append=initial_epoch > 0), ckpt]
    deadline = None
    if budget is not None:
        deadline = _Deadline(budget, ckpt, validation, cfg.epochs - 1, len(run_tta_views(cfg)[0]))
        callbacks.append(deadline)
    t0 = time.time()
    for start, stop, frozen in training_phases(cfg, initial_epoch):
        if not frozen and not models.backbone_of(model).trainable and cfg.trainable_backbone:
            log(f"fold {fold}: epoch {start + 1} on, the whole network (head-only warm-up done)")
            compile_phase(model, cfg, acc, steps, frozen=False, done_steps=start * steps)
        model.fit(
            epoch_stream(train_paths, cfg, batch, cfg.seed + fold, range(start, stop), steps),
            steps_per_epoch=steps, epochs=stop, initial_epoch=start,
            callbacks=callbacks, class_weight=_class_weights(cfg, manifest, others), verbose=cfg.verbose,
        )
        if model.stop_training:
            break  # NaN loss, early stopping or the time limit: no later phase
    if deadline is not None and deadline.stopped_after is not None:
        raise TimeLimitReached(fold, deadline.stopped_after + 1)
    if guard.bad_epoch is not None:
        raise KitError(f"fold {fold}: the training loss became NaN in epoch {guard.bad_epoch + 1}; lower lr_max "
                       f"or check the records (finished folds are kept in {run})")
    if not rf.best_model(fold).is_file():
        # every validation metric was NaN (e.g. one class only in the fold): keep the last epoch
        _save_atomic(inference_model(model), rf.best_model(fold))
    best_model = _load(rf.best_model(fold), acc)
    pred = predict_oof(best_model, valid_paths, cfg, batch, acc.replicas)
    metric = cfg.metric
    score = float(metrics.score(metric, target, pred))
    secondary = secondary_scores(cfg, target, pred, table["group"].to_numpy())
    oof = _oof_frame(table, pred, cfg, fold)
    rf.write_fold_oof(fold, oof)
    rf.remove_fold_files(fold, FOLD_TEMPORARY_FILES)
    rf.write_done(fold, {"fold": fold, "metric": metric, "score": score, "secondary": secondary,
                         "best_epoch": ckpt.best_epoch + 1, "best_val_metric": ckpt.best,
                         "epochs": cfg.epochs, "seconds": round(time.time() - t0, 1)})
    log(f"fold {fold}: {metric} {score:.4f} (best epoch {ckpt.best_epoch + 1})")
    return oof, score


def epoch_stream(paths: Sequence[Path], cfg: Config, batch: int, seed: int, epochs: range, steps: int) -> Any:
    """The training batches of ``epochs``, each epoch its own ``steps`` batches of a stream seeded by ``seed`` plus
    the epoch: an epoch sees the same images in the same order whether the fold ran straight through or was
    stopped and resumed before it (one endless stream would continue where the stopped process left it)."""
    streams = [pipeline.train_dataset(paths, cfg, batch=batch, seed=seed + epoch).take(steps) for epoch in epochs]
    out = streams[0]
    for more in streams[1:]:
        out = out.concatenate(more)
    return out


def epoch_steps(cfg: Config, n_train: int, n_positives: int, batch: int) -> int:
    """Optimizer steps per epoch: a pass over the training images, or with ``epoch_positives`` k a balanced
    epoch of k x the positives at the ``oversample`` share, the rest fresh negatives each epoch.

    At 0.1% positives (ISIC 2024: 400 among 400,000) a pass over every negative takes hours and shows each
    positive once; a balanced epoch of 2 x 400 positives at 1:4 is 4,000 images.
    """
    if not cfg.epoch_positives:
        return max(1, n_train // batch)
    if n_positives < 1:
        raise KitError("epoch_positives: the training folds hold no positives")
    return max(1, math.ceil(cfg.epoch_positives * n_positives / cfg.oversample / batch))


def training_phases(cfg: Config, initial_epoch: int = 0) -> list[tuple[int, int, bool]]:
    """``(first epoch, end epoch, backbone frozen)`` for each fit still to run: a head-only warm-up of
    ``cfg.freeze_epochs`` epochs, then the whole network; phases already finished are left out."""
    bounds = [(0, cfg.freeze_epochs, True), (cfg.freeze_epochs, cfg.epochs, False)] if cfg.freeze_epochs else \
        [(0, cfg.epochs, False)]
    return [(max(a, initial_epoch), b, frozen) for a, b, frozen in bounds if b > initial_epoch and b > a]


def _truncate_history(path: Path, keep_epochs: int) -> None:
    if path.is_file() and path.stat().st_size:
        hist = pd.read_csv(path)
        fsutil.write_csv(path, hist[hist["epoch"] < keep_epochs])


# --- the k-fold loop -------------------------------------------------------------------------------


# Settings a resumed run may take anew: where things are, how much is printed, and folds to add to the run.
_RESUME_FREE = ("records", "out", "verbose", "folds")


def resume_mismatch(given: Config, saved: Config, names: Sequence[str] = ()) -> str | None:
    """The first setting of ``given`` (those in ``names``, and any that differs from the default) that differs
    from the saved run's, as one line; None when ``--resume`` can go on with the saved settings."""
    default = Config()
    for name in dict.fromkeys([*names, *(f for f in default.to_dict() if getattr(given, f) != getattr(default, f))]):
        if name in _RESUME_FREE or getattr(given, name, None) is None:
            continue
        mine, theirs = getattr(given, name), getattr(saved, name)
        if mine != theirs:
            return (f"--resume: {name} is {theirs!r} in the run's {CONFIG}, {mine!r} was given; resume with the "
                    f"run's own settings, or train the new ones into another --out")
    return None


def train_folds(cfg: Config, *, resume: bool = False, log: Callable[[str], None] = print,
                given: Sequence[str] = (), deadline: float | None = None, smoke: bool = False) -> FoldResult:
    """Train every requested fold of ``cfg`` into the run folder ``cfg.out``; returns OOF and scores.

    A run folder that already holds a run is refused unless ``resume``; resuming uses the run's saved
    config.toml, skips folds with done.json, restarts an unfinished fold from its last epoch and trains folds
    given now that the run has not trained yet (they join its folds). A setting in ``given`` (the flags the user
    typed), or any non-default one, that differs from the saved run's is refused: a resumed run never silently
    trains something other than what was asked.

    ``deadline`` (a ``time.monotonic()`` time) stops the run at the last epoch boundary from which the next epoch
    (and a fold's end) is predicted to finish before it: the fold's state is saved, the stopped marker written, and the
    result's ``stopped`` says where; ``--resume`` goes on to the same result as a run never stopped.
    """
    run = Path(cfg.out)
    folder = RunFolder(run)
    saved = folder.config_path
    if saved.is_file() and not resume:
        raise KitError(f"{run}: already holds a run ({saved.name}); pass --resume to continue it or choose another --out")
    if resume and saved.is_file():
        # the folder may have moved since: where it is now wins, and so do records given now
        asked = cfg
        cfg = Config.load(saved, out=str(run), **({"records": cfg.records} if cfg.records else {}))
        if not cfg.weights:  # a saved run trained from random weights (before "none" said so): it still does
            cfg = cfg.replace(weights=defaults.NO_WEIGHTS)
        mismatch = resume_mismatch(asked, cfg, given)
        if mismatch:
            raise KitError(mismatch)
        if asked.folds and cfg.folds:  # folds asked now that the run lacks are trained into it
            cfg = cfg.replace(folds=sorted({*cfg.folds, *asked.folds}))
    smoke_note = smoke_config(cfg, _smoke_swaps(cfg.model), smoke)[1]
    acc = strategy.get_strategy(cfg.strategy)
    log(acc.describe())
    if smoke_note:
        log(f"note: {smoke_note}")
    cfg, manifest = resolve(cfg, accelerated=acc.accelerated, log=log, smoke=smoke)
    records.verify_shards(records.list_shards(cfg.records, split="train"))  # a damaged shard fails now, not mid-fold
    check_batch(cfg, manifest, acc.global_batch(cfg.batch))
    for line in advice(cfg):
        log(f"warning: {line}")
    if cfg.pretrained:
        _build(cfg, log=log)  # a weights file that does not fit fails here, before anything is written
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(saved)
    folder.write_records_identity(manifest)

    metric = cfg.metric
    folder.clear_error()  # `kit runs` shows a run with error.txt as stopped by an error
    folder.clear_stopped()
    budget = TimeBudget(deadline) if deadline is not None else None
    done: dict[int, tuple[pd.DataFrame, float]] = {}
    trained: list[float] = []  # seconds of each fold trained in this call: the time left is estimated from them
    stopped: StopPoint | None = None
    for fold in cfg.folds:
        if resume and folder.is_done(fold) and folder.fold_oof_path(fold).is_file():
            done[fold] = (folder.read_fold_oof(fold), folder.fold_score(fold))
            log(f"fold {fold}: finished earlier ({metric} {done[fold][1]:.4f}), skipped")
            continue
        if budget is not None and not budget.fits(len(run_tta_views(cfg)[0]), first=True, then_ends=cfg.epochs <= 1):
            stopped = StopPoint(fold, 0, cfg.epochs)  # not even one epoch of the next fold would fit
            break
        started = time.monotonic()
        try:
            done[fold] = train_fold(cfg, fold, run, manifest, acc, resume=resume, log=log, budget=budget)
        except TimeLimitReached as stop:
            stopped = StopPoint(fold, stop.epochs_done, cfg.epochs)
            break
        except Exception as exc:  # an interrupt (KeyboardInterrupt, a killed kernel) leaves the run resumable
            folder.write_error(fold, exc)
            raise
        trained.append(time.monotonic() - started)
        _write_summary(run, cfg, metric, done)
        log(progress_line(len(done), len(cfg.folds), trained))
    if stopped is not None:
        RunFolder(run).write_stopped(stopped._asdict())
        if done:
            _write_summary(run, cfg, metric, done)
        return FoldResult(pd.DataFrame(), [done[k][1] for k in sorted(done)], sorted(done), metric, run, stopped)
    oof, scores = _write_summary(run, cfg, metric, done)
    _plots(run, cfg, oof, sorted(done), acc.replicas)
    return FoldResult(oof, scores, sorted(done), metric, run)


def check_batch(cfg: Config, manifest: records.Manifest, batch: int) -> None:
    """KitError when one step's ``batch`` (all replicas) is more than a fold's training images: such a run would
    work for minutes on batches the data cannot fill before its first line of progress."""
    for fold in cfg.folds:
        n = sum(manifest.folds[k].images for k in manifest.fold_ids if k != fold)
        if batch > n:
            per_replica = max(1, n * cfg.batch // batch)
            raise KitError(f"batch: {batch} images per step is more than the {n} training images of fold {fold}; "
                           f"pass --batch {per_replica} or less")


def progress_line(finished: int, planned: int, seconds: Sequence[float]) -> str:
    """``progress: 2 of 5 folds finished; this session 1 min 24 s, about 2 min 6 s left``."""
    left = planned - finished
    text = f"progress: {finished} of {planned} folds finished; this session {_duration(sum(seconds))}"
    if left and seconds:
        text += f", about {_duration(left * sum(seconds) / len(seconds))} left"
    return text


def _duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``42 s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def advice(cfg: Config) -> list[str]:
    """Plain-words warnings about a resolved config that will train a poor model (printed, never fatal)."""
    lines = []
    if not cfg.pretrained and backbones.is_imagenet_family(cfg.model):
        lines.append(f"{cfg.model} is an ImageNet backbone trained from random weights (--weights none), so it needs "
                     f"far more data and epochs; pass --weights (see `kit models`), or leave --model and --weights "
                     f"out for kit's choice")
    if cfg.freeze_epochs and not cfg.pretrained:
        lines.append(f"freeze_epochs {cfg.freeze_epochs}: the backbone starts from random weights, so freezing it "
                     "trains the head on random features; the warm-up is meant for --weights")
    note = run_tta_views(cfg)[1]
    if note:
        lines.append(note.replace("tta: ", "tta (out of fold): ", 1))
    return lines


def secondary_scores(cfg: Config, target: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[str, float | None]:
    """The competition's secondary metrics on one fold (None where a fold cannot be scored, e.g. no positives)."""
    out = {}
    for name in cfg.secondary_metrics:
        try:
            out[name] = float(metrics.get(name).score(target, pred, groups))
        except KitError:
            out[name] = None
    return out


def _write_summary(run: Path, cfg: Config, metric: str, done: dict) -> tuple[pd.DataFrame, list[float]]:
    folder = RunFolder(run)
    oof = pd.concat([done[k][0] for k in sorted(done)], ignore_index=True)
    cv = cv_summary(metric, oof, cfg.classes, {k: done[k][1] for k in done},
                    {k: folder.fold_secondary(k) for k in done}, cfg.secondary_metrics, run_tta_views(cfg)[0])
    folder.write_oof(oof)
    folder.write_cv(cv)
    return oof, [done[k][1] for k in sorted(done)] + [cv["overall"]]


def _roc_plot(plt: Any, out: Path, cfg: Config, oof: pd.DataFrame, folds: list[int]) -> None:
    from sklearn.metrics import roc_curve

    y = oof["target"].to_numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    for k in folds:
        part = oof[oof["fold"] == k]
        if part["target"].nunique() == 2:
            fpr, tpr, _ = roc_curve(part["target"], part["pred"])
            ax.plot(fpr, tpr, lw=1, label=f"fold {k}")
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, oof["pred"])
        ax.plot(fpr, tpr, "k", lw=2, label="all folds")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (out of fold)")
    ax.legend(fontsize="small")
    fsutil.write_figure(fig, out / "roc.png")


def _confusion_plot(plt: Any, out: Path, cfg: Config, oof: pd.DataFrame, folds: list[int]) -> None:
    from sklearn.metrics import confusion_matrix

    y = oof["target"].to_numpy()
    cm = confusion_matrix(y, _pred_matrix(oof, cfg).argmax(1), labels=range(cfg.n_classes)).astype(float)
    cm /= np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * cfg.n_classes, 1 + 0.6 * cfg.n_classes))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(cfg.n_classes), cfg.classes, rotation=90)
    ax.set_yticks(range(cfg.n_classes), cfg.classes)
    for i in range(cfg.n_classes):
        for j in range(cfg.n_classes):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (out of fold, row-normalised)")
    fsutil.write_figure(fig, out / "confusion.png")


# the task's own out-of-fold plot: ROC for a binary run, the confusion matrix for a multi-class one
_CLASS_PLOTS: dict[str, Callable[..., None]] = {"binary": _roc_plot, "multiclass": _confusion_plot}


def _plots(run: Path, cfg: Config, oof: pd.DataFrame, folds: list[int], replicas: int) -> None:
    plt = plots.pyplot()

    out = RunFolder(run).plots
    out.mkdir(exist_ok=True)
    histories = RunFolder(run).histories(folds)
    fig = plots.learning_curves(histories, cfg.metric)
    fsutil.write_figure(fig, out / "learning_curves.png")

    _CLASS_PLOTS[cfg.task.name](plt, out, cfg, oof, folds)

    schedule.plot_schedule(out / "lr.png", epochs=max(cfg.epochs, 1), **_schedule_kwargs(cfg, replicas),
                           freeze_epochs=cfg.freeze_epochs, backbone_lr_mult=cfg.backbone_lr_mult)


# --- learning-rate range test ----------------------------------------------------------------------


class LrFinding(NamedTuple):
    """What find_lr measured: the rates tried, the smoothed loss at each, the suggestion and the files written."""

    lrs: np.ndarray
    losses: np.ndarray
    suggestion: float
    plot: Path
    table: Path


class _LrSweep(keras.callbacks.Callback):
    """Raises the learning rate geometrically every step and records each step's own loss.

    Keras logs the epoch's running mean after a batch; the step's own loss is recovered from two
    consecutive means. Stops once the smoothed loss has grown to four times its minimum (diverged).
    """

    def __init__(self, lrs: np.ndarray, beta: float = 0.9) -> None:
        super().__init__()
        self.lrs, self.beta = lrs, beta
        self.seen: list[float] = []
        self._mean, self._avg = 0.0, 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self.model.optimizer.learning_rate = float(self.lrs[batch])

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        mean = float((logs or {}).get("loss", float("nan")))
        step_loss = (batch + 1) * mean - batch * self._mean
        self._mean = mean
        self._avg = self.beta * self._avg + (1 - self.beta) * step_loss
        smoothed = self._avg / (1 - self.beta ** (batch + 1))
        self.seen.append(smoothed)
        if not math.isfinite(smoothed) or batch > 10 and smoothed > 4 * min(self.seen):
            self.model.stop_training = True


def find_lr(cfg: Config, *, steps: int = 200, lr_low: float = 1e-7, lr_high: float = 1.0,
            log: Callable[[str], None] = print, smoke: bool = False) -> LrFinding:
    """Learning-rate range test on fold 0's training folds: suggests ``lr_max`` and writes OUT/lr_find.png and .csv.

    The suggestion is a tenth of the rate at the lowest smoothed loss (the usual rule: the minimum itself is
    already at the edge of divergence), never above the rate where the loss falls fastest times three.
    """
    acc = strategy.get_strategy(cfg.strategy)
    cfg, manifest = resolve(cfg, accelerated=acc.accelerated, log=log, smoke=smoke)
    records.verify_shards(records.list_shards(cfg.records, split="train"))  # a damaged shard fails now, not mid-fold
    folder, out = Path(cfg.records), Path(cfg.out)
    fold = cfg.folds[0]
    others = [k for k in manifest.fold_ids if k != fold]
    paths = records.list_shards(folder, others, split="train")
    batch = acc.global_batch(cfg.batch)
    lrs = np.geomspace(lr_low, lr_high, steps)
    keras.utils.set_random_seed(cfg.seed)
    model = build_and_compile(cfg.replace(lr_per="epoch"), acc, steps)
    sweep = _LrSweep(lrs)
    log(f"lr range test: {steps} steps of {batch} images from {lr_low:g} to {lr_high:g}")
    model.fit(pipeline.train_dataset(paths, cfg, batch=batch, seed=cfg.seed), steps_per_epoch=steps, epochs=1,
              callbacks=[sweep], class_weight=_class_weights(cfg, manifest, others), verbose=0)
    losses = np.asarray(sweep.seen, float)
    tried = lrs[: len(losses)]
    suggestion = _suggest_lr(tried, losses)
    out.mkdir(parents=True, exist_ok=True)
    table = fsutil.write_csv(out / "lr_find.csv", pd.DataFrame({"lr": tried, "loss": losses}))
    plot = out / "lr_find.png"
    _plot_lr_finding(plot, tried, losses, suggestion)
    return LrFinding(tried, losses, suggestion, plot, Path(table))


def _suggest_lr(lrs: np.ndarray, losses: np.ndarray) -> float:
    """A tenth of the rate at the lowest finite smoothed loss, capped at thrice the steepest-descent rate."""
    finite = np.isfinite(losses)
    if finite.sum() < 3:
        raise KitError("find-lr: the loss was not finite from the first steps; check the records")
    lrs, losses = lrs[finite], losses[finite]
    at_min = float(lrs[int(np.argmin(losses))])
    slope = np.gradient(losses, np.log(lrs))
    steepest = float(lrs[int(np.argmin(slope[: int(np.argmin(losses)) + 1]))])
    return min(at_min / 10, steepest * 3)


def _plot_lr_finding(path: Path, lrs: np.ndarray, losses: np.ndarray, suggestion: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.axvline(suggestion, color="k", ls="--", label=f"suggested lr_max {suggestion:.2g}")
    ax.set(xscale="log", xlabel="learning rate", ylabel="training loss (smoothed)", title="learning-rate range test")
    finite = losses[np.isfinite(losses)]
    if len(finite):
        ax.set_ylim(finite.min() * 0.95, min(finite.max(), finite[0] * 2.0) * 1.05)
    ax.legend()
    fsutil.write_figure(fig, path)


def format_lr_finding(finding: LrFinding) -> str:
    """Lines ``kit train --find-lr`` prints."""
    return (f"suggested lr_max: {finding.suggestion:.2g} (per replica; --lr-max {finding.suggestion:.2g})\n"
            f"swept {len(finding.lrs)} steps from {finding.lrs[0]:.1g} to {finding.lrs[-1]:.2g}; "
            f"plot {finding.plot}, table {finding.table}")


def format_stopped(result: FoldResult, resume_command: str) -> str:
    """The lines ``kit train`` prints for a run a time limit stopped: its finished folds, then one line saying where it
    stopped and the command that resumes it."""
    stop = result.stopped
    if stop is None:
        return format_result(result)
    lines = [f"fold {k}: {result.metric} {s:.4f}" for k, s in zip(result.folds, result.scores)]
    where = (f"fold {stop.fold} after epoch {stop.epochs_done} of {stop.epochs}" if stop.epochs_done
             else f"the start of fold {stop.fold}")
    lines.append(f"stopped before the time limit at {where} (state saved in {result.run}); resume with: "
                 f"{resume_command}")
    return "\n".join(lines)


def format_result(result: FoldResult) -> str:
    """Lines for the terminal: one per fold, the overall score and the run folder."""
    folds = np.asarray(result.scores[:-1], float)
    lines = [f"fold {k}: {result.metric} {s:.4f}" for k, s in zip(result.folds, result.scores)]
    spread = f" +- {folds.std(ddof=1):.4f}" if len(folds) > 1 else ""
    lines.append(f"folds: {result.metric} {folds.mean():.4f}{spread} (mean +- std over folds)")
    lines.append(f"overall (out of fold, pooled): {result.metric} {result.scores[-1]:.4f}")
    lines.append(f"run: {result.run}")
    return "\n".join(lines)
