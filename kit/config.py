"""The one settings object of a training run: defaults, TOML load/save, and the resolved copy a run keeps.

``kit train`` builds a :class:`Config` from ``--config FILE.toml`` and its flags, fills in what the
records decide (image size, classes, metadata columns) and writes the result to ``RUN/config.toml``;
``kit predict`` and ``kit blend`` read that file back instead of re-typing flags.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kit.task import Task, task_for
from kit.errors import KitError
from kit.strategy import KINDS as STRATEGIES

# The settings that take one of a few fixed values, and those values, declared once: `kit train`'s
# choices= and Config.check_choices read this table, so a flag and a TOML key are refused alike. The
# strategies come from kit.strategy, which owns the routes. Model names (kit.models), augment presets
# (kit.pipeline) and metrics (kit.metrics) stay with their registries, whose modules import TensorFlow or
# scikit-learn, which `kit --help` must not: the CLI takes them free-form and kit.train.resolve checks them.
CHOICES: dict[str, tuple[Any, ...]] = {
    "augment_on": ("host", "device"),
    "lr_per": ("epoch", "step"),
    "class_weight": ("none", "balanced"),
    "loss": ("auto", "bce", "cce", "focal"),
    "strategy": STRATEGIES,
    "verbose": (0, 1, 2),
}
# `kit blend --method`; here rather than in kit.blend, which imports pandas, so that `kit --help` stays fast
BLEND_METHODS = ("mean", "rank", "power", "geomean")


def one_of(allowed: tuple[Any, ...]) -> str:
    """``a, b or c``: the allowed values as an error line lists them."""
    words = [str(a) for a in allowed]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_choice(name: str, value: Any) -> None:
    """KitError ``name: expects a, b or c, got 'x'`` unless ``value`` is one of ``CHOICES[name]``."""
    if value not in CHOICES[name]:
        raise KitError(f"{name}: expects {one_of(CHOICES[name])}, got {value!r}")


@dataclass(frozen=True)
class Config:
    """Settings of a k-fold training run (every field has a default; TOML keys are the field names)."""

    # where
    records: str = ""  # folder written by `kit records`
    out: str = ""  # run folder
    folds: tuple[int, ...] = ()  # folds to train; () means every fold in the records
    # model
    model: str = ""  # "" lets kit choose (kit.defaults): EfficientNet-B0 on ImageNet weights on a GPU or TPU, else compact_cnn
    size: int = 0  # image side; 0 means the records' size (any other value must equal it)
    # "" kit's choice (an ImageNet backbone: ImageNet weights where they can be had; others: random) | "none" random
    # initialisation | a weights file (.h5, .weights.h5) | "imagenet" | a keras-hub preset
    weights: str = ""
    dropout: float = 0.2
    trainable_backbone: bool = True
    freeze_epochs: int = 0  # fine-tuning: train the head alone (backbone frozen, BatchNorm as pretrained) this long
    backbone_lr_mult: float = 1.0  # the backbone's learning rate as a fraction of the head's (e.g. 0.1)
    meta: bool = False  # feed the records' metadata columns to a metadata branch
    meta_columns: tuple[str, ...] = ()  # with meta: only these columns (); () every column the records hold
    # optimisation; None (left out) takes the value of SCHEDULE_DEFAULTS for what is trained
    epochs: int | None = None
    batch: int = 32  # per replica; the global batch is batch * replicas
    lr_start: float | None = None
    lr_max: float | None = None  # per replica; scaled by the number of replicas
    lr_min: float | None = None
    lr_ramp_epochs: int | None = None
    lr_sustain_epochs: int | None = None
    lr_decay: float | None = None
    patience: int = 0  # stop a fold after this many epochs without a better validation metric; 0 = never
    lr_per: str = "epoch"  # epoch (set at each epoch start, as the public TPU notebooks do) | step (smooth)
    loss: str = "auto"  # auto: bce for binary, cce otherwise (CHOICES lists the values of each such setting)
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    class_weight: str = "none"  # balanced: weight the loss by inverse class frequency
    # input
    augment: str = ""  # preset: none | default | pcam; "" = the competition's (kit.competitions), else default
    augment_options: dict[str, Any] = field(default_factory=dict)  # per-part overrides of the preset
    augment_on: str = "host"  # host (tf.data) | device (Keras random layers inside the training step)
    oversample: float = 0.0  # binary only: fraction of positives in the training stream; 0 = natural
    epoch_positives: float = 0.0  # with oversample: an epoch shows each positive this often on average; 0 = all images
    shuffle_buffer: int = 2048
    tta: int = 1  # views averaged for out-of-fold predictions (1 = identity only)
    # running
    strategy: str = "auto"  # auto: TPU, then every GPU, then the CPU (kit.strategy)
    seed: int = 42
    verbose: int = 2  # Keras fit verbosity: 0 silent, 1 bar, 2 one line per epoch
    metric: str = ""  # picks checkpoints and scores CV; "" = the competition's (kit.competitions)
    # resolved from the records by `kit train` (leave empty in a config file)
    competition: str = ""
    secondary_metrics: tuple[str, ...] = ()
    n_classes: int = 0
    classes: tuple[str, ...] = ()
    id_name: str = ""
    meta_numeric: tuple[str, ...] = ()
    meta_categorical: dict[str, int] = field(default_factory=dict)  # column -> number of codes
    meta_stats: dict[str, list[float]] = field(default_factory=dict)  # numeric column -> [mean, std]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every set field (tuples as lists; unset schedule fields left out), ready for TOML."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue  # TOML has no null: an unset field is an absent key
            out[f.name] = list(value) if isinstance(value, tuple) else (dict(value) if isinstance(value, dict) else value)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "Config":
        """Config from a dict; unknown keys or wrongly typed values raise KitError naming them."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise KitError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
            default = getattr(cls(), name)
            kwargs[name] = _coerce(name, value, _SCHEDULE_TYPES[name]() if default is None else default, source)
        return cls(**kwargs)

    @classmethod
    def load(cls, path: str | os.PathLike, **overrides: Any) -> "Config":
        """Read a TOML file (top-level keys, or a [train] table) and apply ``overrides`` on top."""
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise KitError(f"{path}: config file not found") from None
        except tomllib.TOMLDecodeError as exc:
            raise KitError(f"{path}: not valid TOML ({exc})") from None
        if set(data) == {"train"} and isinstance(data["train"], dict):
            data = data["train"]
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data, source=str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write this config as TOML to ``path`` atomically."""
        import tomli_w

        from kit import fsutil

        return fsutil.write_text(path, tomli_w.dumps(self.to_dict()))

    @property
    def task(self) -> Task:
        """The resolved task (binary: one sigmoid output, one pred column; multi-class: one per class)."""
        return task_for(self.n_classes)

    @property
    def pretrained(self) -> bool:
        """Whether the backbone starts from weights (fine-tuning) rather than from random initialisation."""
        return self.weights not in ("", "none")

    def with_schedule_defaults(self) -> "Config":
        """A copy whose unset epochs and learning-rate fields take SCHEDULE_DEFAULTS for what is trained."""
        table = SCHEDULE_DEFAULTS["pretrained" if self.pretrained else "scratch"]
        return dataclasses.replace(self, **{k: v for k, v in table.items() if getattr(self, k) is None})

    def check_numbers(self) -> None:
        """One KitError line naming the first setting out of its range (schedule defaults filled in first)."""
        cfg = self.with_schedule_defaults()
        rules = [
            ("epochs", cfg.epochs >= 1, "at least 1"), ("batch", cfg.batch >= 1, "at least 1"),
            ("lr_max", cfg.lr_max > 0, "> 0"), ("lr_start", cfg.lr_start >= 0, ">= 0"),
            ("lr_min", cfg.lr_min >= 0, ">= 0"), ("lr_ramp_epochs", cfg.lr_ramp_epochs >= 0, ">= 0"),
            ("lr_sustain_epochs", cfg.lr_sustain_epochs >= 0, ">= 0"), ("lr_decay", 0 < cfg.lr_decay <= 1, "in (0, 1]"),
            ("label_smoothing", 0 <= cfg.label_smoothing < 1, "in [0, 1)"), ("tta", cfg.tta >= 1, "at least 1 view"),
            ("patience", cfg.patience >= 0, ">= 0 (0: never stop early)"),
            ("oversample", 0 <= cfg.oversample < 1, "in [0, 1)"),
            ("epoch_positives", cfg.epoch_positives >= 0, ">= 0 (0: an epoch is every training image)"),
            ("freeze_epochs", 0 <= cfg.freeze_epochs < cfg.epochs, f"in [0, epochs) = [0, {cfg.epochs})"),
            ("backbone_lr_mult", 0 < cfg.backbone_lr_mult <= 1, "in (0, 1]"),
            ("seed", 0 <= cfg.seed < 2**31, "in [0, 2**31)"), ("size", cfg.size >= 0, ">= 0 (0: the records' size)"),
            ("shuffle_buffer", cfg.shuffle_buffer >= 1, "at least 1"), ("dropout", 0 <= cfg.dropout < 1, "in [0, 1)"),
            ("focal_gamma", cfg.focal_gamma >= 0, ">= 0"),
            ("folds", all(f >= 0 for f in cfg.folds), "fold numbers >= 0"),
        ]
        for name, ok, want in rules:
            if not ok:
                raise KitError(f"{name}: expects {want}, got {getattr(cfg, name)}")
        if not all(math.isfinite(float(getattr(cfg, n))) for n in ("lr_max", "lr_start", "lr_min", "lr_decay")):
            raise KitError("lr: learning-rate settings must be finite numbers")

    def check_choices(self) -> None:
        """One KitError line naming the first setting whose value is not one of its CHOICES."""
        for name in CHOICES:
            check_choice(name, getattr(self, name))

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (values coerced like ``from_dict``)."""
        data = self.to_dict()
        data.update(changes)
        return Config.from_dict(data)


# Fine-tuning pretrained weights wants small rates and a warm-up, or the first steps wreck what the
# backbone learned (the public SIIM-ISIC TPU notebooks' 1e-5 -> 5e-5 ramp); a model trained from
# random weights wants rates twenty times higher and no warm-up (an ISIC 9-class small_cnn
# run reached balanced accuracy 0.385 at 5e-5 and 0.973 at 1e-3).
SCHEDULE_DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrained": dict(epochs=10, lr_start=1e-5, lr_max=5e-5, lr_min=1e-6, lr_ramp_epochs=2, lr_sustain_epochs=0,
                       lr_decay=0.8),
    "scratch": dict(epochs=15, lr_start=1e-3, lr_max=1e-3, lr_min=5e-5, lr_ramp_epochs=0, lr_sustain_epochs=1,
                    lr_decay=0.8),
}
_SCHEDULE_TYPES = {k: type(v) for k, v in SCHEDULE_DEFAULTS["pretrained"].items()}


def coerce_setting(name: str, value: Any, default: Any, source: str) -> Any:
    """``value`` as the type of ``default`` (an int is a float too), or KitError naming ``source`` and ``name``."""
    return _coerce(name, value, default, source)


def _coerce(name: str, value: Any, default: Any, source: str) -> Any:
    bad = KitError(f"{source}: setting {name!r} expects {type(default).__name__}, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise bad
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise bad
        return tuple(value)
    if isinstance(default, dict):
        if not isinstance(value, Mapping):
            raise bad
        return dict(value)
    return value


# --- smoke rehearsals --------------------------------------------------------------------------------

SMOKE_ENV = "KIT_SMOKE"
SMOKE_SIZE, SMOKE_EPOCHS, SMOKE_BATCH, SMOKE_FOLDS, SMOKE_MODEL = 64, 6, 8, 2, "tiny_cnn"


def smoke() -> bool:
    """Whether ``KIT_SMOKE=1`` asks for a smoke rehearsal: any command line runs in seconds on a CPU."""
    return os.environ.get(SMOKE_ENV, "") not in ("", "0")


def smoke_size(size: int) -> int:
    """The records' image side under a smoke rehearsal (at most SMOKE_SIZE px), else ``size``."""
    return min(int(size), SMOKE_SIZE) if smoke() else int(size)


def smoke_config(cfg: Config, imagenet_backbone: bool) -> tuple[Config, str | None]:
    """``cfg`` shrunk for a smoke rehearsal (few epochs of small batches, an ImageNet backbone swapped for a tiny
    CNN from scratch; ``kit.train.resolve`` keeps at most SMOKE_FOLDS folds), and the line that says so;
    ``(cfg, None)`` when no rehearsal is asked.

    It checks a whole command line (records, flags, submission) before a GPU hour is spent on it; the
    model it trains is not the one asked for, so its scores say only that the plumbing holds.
    """
    if not smoke():
        return cfg, None
    changes: dict[str, Any] = {"epochs": min(cfg.epochs or SMOKE_EPOCHS, SMOKE_EPOCHS),
                               "batch": min(cfg.batch, SMOKE_BATCH)}
    if imagenet_backbone:
        changes.update(model=SMOKE_MODEL, weights="")
    shrunk = dataclasses.replace(cfg, **changes)
    return shrunk, (f"{SMOKE_ENV}=1: a smoke rehearsal, not a real run: {shrunk.epochs} epochs of batch "
                    f"{shrunk.batch}, at most {SMOKE_FOLDS} folds" + (f", {cfg.model} replaced by {SMOKE_MODEL} from scratch" if imagenet_backbone else ""))

