"""The ramp-then-exponential-decay learning rate of the public TPU notebooks, per epoch and per step.

::

    lr(e) = lr_start + (lr_max - lr_start) * e / ramp_epochs          e < ramp_epochs
          = lr_max                                                     e < ramp_epochs + sustain_epochs
          = (lr_max - lr_min) * decay ** (e - ramp - sustain) + lr_min  otherwise

``e`` is the epoch: an integer for ``ramp_exp_decay`` (a ``LearningRateScheduler`` callback), and
``step / steps_per_epoch`` for ``RampExpDecay`` (an optimizer schedule, so the rate moves smoothly
inside an epoch and equals the per-epoch value at every epoch boundary). Callers scale ``lr_max``
by the number of replicas themselves: the schedule never looks at the hardware.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras

from kit.core.errors import KitError


class ScheduleArgumentError(KitError, ValueError):
    """A schedule argument out of range (a KitError for the CLI, a ValueError for Keras habits)."""


def _check(*, lr_start: float, lr_max: float, lr_min: float, ramp_epochs: float,
           sustain_epochs: float, decay: float, steps_per_epoch: int | None = None) -> None:
    """Raise ScheduleArgumentError naming the first bad argument and echoing its value."""
    checks = [
        ("lr_start", lr_start, lr_start >= 0, ">= 0"),
        ("lr_max", lr_max, lr_max > 0, "> 0"),
        ("lr_min", lr_min, 0 <= lr_min <= lr_max, f">= 0 and <= lr_max ({lr_max})"),
        ("ramp_epochs", ramp_epochs, ramp_epochs >= 0, ">= 0"),
        ("sustain_epochs", sustain_epochs, sustain_epochs >= 0, ">= 0"),
        ("decay", decay, 0 < decay <= 1, "in (0, 1]"),
    ]
    if steps_per_epoch is not None:
        checks.append(("steps_per_epoch", steps_per_epoch,
                       isinstance(steps_per_epoch, int) and steps_per_epoch >= 1, "an integer >= 1"))
    for name, value, ok, rule in checks:
        if not ok:
            raise ScheduleArgumentError(f"Argument `{name}` must be {rule}. Received: {name}={value!r}")


def ramp_exp_decay(epoch: float, *, lr_start: float, lr_max: float, lr_min: float,
                   ramp_epochs: float, sustain_epochs: float, decay: float) -> float:
    """Learning rate at ``epoch`` (0-based): linear ramp, flat sustain, exponential decay to lr_min.

    Example:
        >>> ramp_exp_decay(0, lr_start=1e-5, lr_max=4e-4, lr_min=1e-6, ramp_epochs=5,
        ...                sustain_epochs=0, decay=0.8)
        1e-05
    """
    _check(lr_start=lr_start, lr_max=lr_max, lr_min=lr_min, ramp_epochs=ramp_epochs,
           sustain_epochs=sustain_epochs, decay=decay)
    if epoch < ramp_epochs:
        return float(lr_start + (lr_max - lr_start) * epoch / ramp_epochs)
    if epoch < ramp_epochs + sustain_epochs:
        return float(lr_max)
    return float((lr_max - lr_min) * decay ** (epoch - ramp_epochs - sustain_epochs) + lr_min)


@keras.saving.register_keras_serializable(package="kit")
class RampExpDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Per-step ramp_exp_decay: the epoch is ``step / steps_per_epoch`` (Keras ops only; runs on JAX).

    Args:
        lr_start, lr_max, lr_min: rates at step 0, at the end of the ramp, and the floor of the decay.
        ramp_epochs, sustain_epochs: lengths (in epochs, may be fractional) of the ramp and the plateau.
        decay: factor applied per epoch after the plateau, in (0, 1].
        steps_per_epoch: optimizer steps in one epoch (training images // global batch).

    Example:
        >>> sched = RampExpDecay(lr_start=1e-5, lr_max=4e-4, lr_min=1e-6, ramp_epochs=5,
        ...                      sustain_epochs=0, decay=0.8, steps_per_epoch=100)
        >>> optimizer = keras.optimizers.Adam(learning_rate=sched)
    """

    def __init__(self, lr_start: float, lr_max: float, lr_min: float, ramp_epochs: float,
                 sustain_epochs: float, decay: float, steps_per_epoch: int, name: str = "RampExpDecay"):
        super().__init__()
        _check(lr_start=lr_start, lr_max=lr_max, lr_min=lr_min, ramp_epochs=ramp_epochs,
               sustain_epochs=sustain_epochs, decay=decay, steps_per_epoch=steps_per_epoch)
        self.lr_start = float(lr_start)
        self.lr_max = float(lr_max)
        self.lr_min = float(lr_min)
        self.ramp_epochs = float(ramp_epochs)
        self.sustain_epochs = float(sustain_epochs)
        self.decay = float(decay)
        self.steps_per_epoch = int(steps_per_epoch)
        self.name = name

    def __call__(self, step):
        ops = keras.ops
        epoch = ops.cast(step, "float32") / float(self.steps_per_epoch)
        # ramp_epochs == 0 never takes the ramp branch; the max() only avoids a 0/0 in the unused one.
        ramp = self.lr_start + (self.lr_max - self.lr_start) * epoch / max(self.ramp_epochs, 1e-12)
        plateau_end = self.ramp_epochs + self.sustain_epochs
        # Clamp the exponent so the (discarded) decay branch stays finite during the ramp.
        exponent = ops.maximum(epoch - plateau_end, 0.0)
        decayed = (self.lr_max - self.lr_min) * ops.power(self.decay, exponent) + self.lr_min
        lr = ops.where(epoch < self.ramp_epochs, ramp,
                       ops.where(epoch < plateau_end, ops.cast(self.lr_max, "float32"), decayed))
        return ops.cast(lr, "float32")

    def get_config(self) -> dict:
        """Constructor arguments (``from_config`` is ``cls(**config)``)."""
        return {
            "lr_start": self.lr_start, "lr_max": self.lr_max, "lr_min": self.lr_min,
            "ramp_epochs": self.ramp_epochs, "sustain_epochs": self.sustain_epochs,
            "decay": self.decay, "steps_per_epoch": self.steps_per_epoch, "name": self.name,
        }


@keras.saving.register_keras_serializable(package="kit")
class BackboneScaledAdam(keras.optimizers.Adam):
    """Adam whose steps on the backbone's variables are ``backbone_lr_mult`` times the head's.

    Fine-tuning moves pretrained features less than a fresh head: a lower backbone rate keeps what
    ImageNet taught while the head learns at full rate. The variables are named by path, so the
    optimizer saves into ``last.keras`` and resumes with the same split.
    """

    def __init__(self, backbone_paths: tuple[str, ...] | list[str] = (), backbone_lr_mult: float = 1.0,
                 **kwargs: object) -> None:
        super().__init__(**kwargs)
        if not 0 <= float(backbone_lr_mult):
            raise ScheduleArgumentError(f"Argument `backbone_lr_mult` must be >= 0. Received: {backbone_lr_mult!r}")
        self.backbone_paths = tuple(str(p) for p in backbone_paths)
        self.backbone_lr_mult = float(backbone_lr_mult)
        self._scaled: set = set()

    def build(self, var_list: list) -> None:
        """Adam's slots, and the keys of the backbone's variables among ``var_list``."""
        super().build(var_list)
        # update_step receives the backend's variable (a tf.Variable on TensorFlow): match by the
        # optimizer's own variable key, which maps both to one identity, also under a distribution
        paths = set(self.backbone_paths)
        self._scaled = {self._var_key(v) for v in var_list if v.path in paths}

    def update_step(self, gradient: object, variable: object, learning_rate: object) -> None:
        """Adam's step, at ``backbone_lr_mult`` times the rate for a backbone variable."""
        if self._var_key(variable) in self._scaled:
            learning_rate = learning_rate * self.backbone_lr_mult
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        """Adam's config plus the backbone's variable paths and its rate multiplier."""
        return {**super().get_config(), "backbone_paths": list(self.backbone_paths),
                "backbone_lr_mult": self.backbone_lr_mult}


def backbone_rate(epoch: float, head_rate: float, *, freeze_epochs: int = 0, backbone_lr_mult: float = 1.0) -> float:
    """The backbone's learning rate at ``epoch`` given the head's: 0 while frozen, then ``backbone_lr_mult`` x."""
    return 0.0 if epoch < freeze_epochs else head_rate * backbone_lr_mult


def plot_schedule(path: str | os.PathLike, *, epochs: int, lr_start: float, lr_max: float,
                  lr_min: float, ramp_epochs: float, sustain_epochs: float, decay: float,
                  steps_per_epoch: int = 20, freeze_epochs: int = 0, backbone_lr_mult: float = 1.0) -> Path:
    """Write a PNG of the per-step curve with the per-epoch values marked; return the path.

    With a frozen warm-up or a backbone multiplier, a second curve shows the backbone's own rate.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from kit.core.fsutil import atomic_path

    if int(epochs) < 1:
        raise ScheduleArgumentError(f"Argument `epochs` must be >= 1. Received: epochs={epochs!r}")
    kw = dict(lr_start=lr_start, lr_max=lr_max, lr_min=lr_min, ramp_epochs=ramp_epochs,
              sustain_epochs=sustain_epochs, decay=decay)
    _check(**kw, steps_per_epoch=steps_per_epoch)
    x = np.arange(int(epochs) * steps_per_epoch + 1) / steps_per_epoch
    # The same formula as RampExpDecay, evaluated in numpy: plotting needs no Keras graph.
    y = [ramp_exp_decay(e, **kw) for e in x]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(x, y, label="per step")
    ep = np.arange(int(epochs))
    ax.plot(ep, [ramp_exp_decay(e, **kw) for e in ep], "o", ms=3, label="per epoch")
    if freeze_epochs or backbone_lr_mult != 1.0:
        ax.lines[0].set_label("head, per step")
        ax.plot(x, [backbone_rate(e, r, freeze_epochs=freeze_epochs, backbone_lr_mult=backbone_lr_mult)
                    for e, r in zip(x, y)], "--", label=f"backbone (frozen {freeze_epochs} epochs, x{backbone_lr_mult:g})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("learning rate")
    ax.set_title(f"ramp {ramp_epochs}, sustain {sustain_epochs}, decay {decay}; max {lr_max:.2e}")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
