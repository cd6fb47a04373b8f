"""The Keras callbacks of a fold's fit: the learning rate per epoch, the exact validation score, the random seeds
per epoch, the NaN guard, the time limit (TimeBudget) and the checkpoints (best.keras, last.keras, state.json).

Their order in the fit matters: the exact score first (history and checkpoints read it), the checkpoints
before the deadline (whose save it may complete); kit.training.train.train_fold lists them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import keras
import numpy as np
from keras import ops

from kit.core import fsutil, metrics
from kit.training import pipeline
from kit.data import records
from kit.training.config import Config
from kit.core.errors import KitError
from kit.training.fit_parts import make_loss
from kit.runs.folder import BEST, LAST, STATE


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
    ``keras.saving.load_model`` needs nothing beyond ``import kit.training.models``."""
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
