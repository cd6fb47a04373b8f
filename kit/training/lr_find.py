"""The learning-rate range test (``kit train --find-lr``): a short fit on fold 0's training folds with the rate
rising every step, the smoothed loss at each rate, and the suggested lr_max. Example::

    finding = find_lr(Config(records="records/siim256", out="runs/lr"))
    print(format_lr_finding(finding))
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, NamedTuple

import keras
import numpy as np
import pandas as pd

from kit.core import fsutil
from kit.training import pipeline, strategy
from kit.data import records
from kit.training.config import Config
from kit.core.errors import KitError
from kit.training.fit_parts import _class_weights, build_and_compile
from kit.training.resolve import resolve


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
