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
from typing import Any, Callable, Mapping

from kit.core.task import Task, task_for
from kit.core.errors import KitError

# where to train (kit.training.strategy picks the accelerator for each); here, so the settings load without TensorFlow
STRATEGIES = ("auto", "tpu", "mirrored", "gpu", "cpu")

# `kit blend --method`; here rather than in kit.ensemble.blend, which imports pandas, so that `kit --help` stays fast
BLEND_METHODS = ("mean", "rank", "power", "geomean")


def csv_ints(text: str) -> list[int]:
    """``0,1,2`` as ``[0, 1, 2]``; ValueError (argparse's usage error) on anything else."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def one_of(allowed: tuple[Any, ...]) -> str:
    """``a, b or c``: the allowed values as an error line lists them."""
    words = [str(a) for a in allowed]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def check_choice(name: str, value: Any, cls: type | None = None) -> None:
    """KitError ``name: expects a, b or c, got 'x'`` unless ``value`` is one of the choices declared for ``name``."""
    allowed = choices_of(cls or Config)[name]
    if value not in allowed:
        raise KitError(f"{name}: expects {one_of(allowed)}, got {value!r}")


@dataclass(frozen=True)
class Setting:
    """How one Config field is asked for, declared once beside the field: ``kit train`` generates its flag from
    this (help, default, choices), and ``Config.check_choices`` refuses a TOML value outside ``choices`` alike."""

    help: str = ""
    flag: bool = True  # False: a config-file setting only (no `kit train` flag)
    names: tuple[str, ...] = ()  # the flag's spellings; () is --the-field-name
    choices: tuple[Any, ...] = ()  # the allowed values, () any
    parse: Callable[[str], Any] | None = None  # the flag's text to a value; None: the field's type
    default_help: str = ""  # what leaving it out means, where the default value alone does not say
    required: bool = False  # `kit train` refuses to start without it
    metavar: str | None = None
    resolved: bool = False  # filled in from the records by `kit train` (kit.training.train.resolve); never a flag


def setting(default: Any = None, *, factory: Callable[[], Any] | None = None, **declaration: Any) -> Any:
    """A Config field with its :class:`Setting` declaration (``factory`` for a mutable default)."""
    meta = {"kit": Setting(**declaration)}
    return field(default_factory=factory, metadata=meta) if factory else field(default=default, metadata=meta)


def resolved(default: Any = None, *, factory: Callable[[], Any] | None = None, help: str = "") -> Any:
    """A Config field that the run resolves from its records (leave it out of a config file)."""
    return setting(default, factory=factory, help=help, flag=False, resolved=True)


def declaration(f: dataclasses.Field) -> Setting:
    """The Setting declared for a Config field (a field declared without one is a config-file setting)."""
    return f.metadata.get("kit") or Setting(flag=False)


@dataclass(frozen=True)
class Config:
    """Settings of a k-fold training run (every field has a default; TOML keys are the field names).

    Each field is declared once, with :func:`setting` (what the user asks for: flag, help, choices) or
    :func:`resolved` (what ``kit train`` fills in from the records). A requested setting left at its "kit
    chooses" value (model, weights, augment, metric "", size 0, schedule None) is filled in by kit.training.train.resolve
    with kit.training.defaults; the run's config.toml holds the resolved copy, which ``--resume``, ``kit predict`` and
    ``kit blend`` read back.
    """

    # where
    records: str = setting("", help="folder written by `kit records`", required=True)
    out: str = setting("", help="run folder (with --find-lr: where the plot and table go)", required=True)
    folds: tuple[int, ...] = setting((), parse=csv_ints, help="folds to train, e.g. 0,1,2",
                                     default_help="every fold in the records")
    # model
    model: str = setting("", help="backbone name, see `kit models`", default_help=(
        "kit's choice, said in one line: efficientnet_b0 on ImageNet weights on a GPU or TPU where the weights can "
        "be had, else compact_cnn from scratch, sized to the images"))
    size: int = setting(0, help="image side; must match the records", default_help="the records' size")
    weights: str = setting("", help=(
        "pretrained backbone weights: a .h5 / .weights.h5 file, imagenet (Keras' download), or a keras-hub preset "
        "folder or name for the keras_hub models; none trains from random weights; `kit models` lists each "
        "backbone's routes"), default_help=(
        "an ImageNet backbone takes ImageNet weights from Keras' cache, a Kaggle input or a download, and is "
        "refused at once where none can be had; other models start from random weights"))
    dropout: float = setting(0.2, flag=False, help="dropout before the classification head")
    trainable_backbone: bool = setting(True, flag=False, help="train the backbone's weights too")
    freeze_epochs: int = setting(0, help=(
        "fine-tuning: train the head alone for this many epochs, the backbone frozen with its pretrained BatchNorm "
        "statistics, then the whole network"))
    backbone_lr_mult: float = setting(1.0, help=(
        "the backbone's learning rate as a fraction of the head's, in (0, 1], e.g. 0.1"))
    meta: bool = setting(False, help="feed the records' metadata columns to the model")
    meta_columns: tuple[str, ...] = setting((), metavar="COLUMN", help="with --meta: only these metadata columns",
                                            default_help=("every column the records hold; columns of the train "
                                                          "download only are refused"))
    # optimisation; None (left out) takes the value of SCHEDULE_DEFAULTS for what is trained
    epochs: int | None = setting(None, help="epochs per fold")
    batch: int = setting(32, help="batch size per replica")  # the global batch is batch * replicas
    lr_start: float | None = setting(None, flag=False, help="learning rate of the first epoch")
    lr_max: float | None = setting(None, help="peak learning rate per replica")  # scaled by the replicas
    lr_min: float | None = setting(None, flag=False, help="learning rate the decay ends at")
    lr_ramp_epochs: int | None = setting(None, flag=False, help="epochs of warm-up from lr_start to lr_max")
    lr_sustain_epochs: int | None = setting(None, flag=False, help="epochs at lr_max before the decay")
    lr_decay: float | None = setting(None, flag=False, help="the learning rate's factor per epoch of decay")
    patience: int = setting(0, help="stop a fold after this many epochs without a better validation metric; 0 never "
                                    "stops early")
    # epoch: set at each epoch start, as the public TPU notebooks do; step: smooth
    lr_per: str = setting("epoch", choices=("epoch", "step"),
                          help="change the learning rate at each epoch start or every step")
    loss: str = setting("auto", choices=("auto", "bce", "cce", "focal"),
                        help="auto: bce for binary, cce for multi-class")
    label_smoothing: float = setting(0.0, help="in [0, 1)")
    focal_gamma: float = setting(2.0, flag=False, help="the focal loss' gamma")
    class_weight: str = setting("none", choices=("none", "balanced"), help="weight the loss by inverse class frequency")
    # input
    augment: str = setting("", help=(
        "augmentation preset: none | default (flips, any rotation, slight shear, zoom, shift and colour: skin "
        "lesions have no up or down) | pcam (the same, keeping the centre 32x32 in view); TTA uses only the views "
        "this preset makes the model invariant to"), default_help=(
        "the competition's, pcam for PCam; none for a download no competition claims"))
    augment_options: dict[str, Any] = setting(factory=dict, flag=False, help="per-part overrides of the preset")
    augment_on: str = setting("host", choices=("host", "device"),
                              help="augment in tf.data (host) or in the training step (device)")
    oversample: float = setting(0.0, help="binary: fraction of positives in the training stream, in [0, 1); 0 keeps "
                                          "the natural rate")
    epoch_positives: float = setting(0.0, help=(
        "with --oversample: a balanced epoch that shows each positive this often on average, the negatives fresh "
        "draws at the --oversample share (ISIC 2024: 2 with --oversample 0.2); 0 passes over every training image"))
    shuffle_buffer: int = setting(2048, flag=False, help="images in tf.data's shuffle buffer")
    tta: int = setting(1, help="views averaged for the out-of-fold predictions, from those the augmentation supports")
    # running
    strategy: str = setting("auto", choices=STRATEGIES,
                            help="where to train; auto: TPU, then every GPU, then the CPU")
    seed: int = setting(42, help="seeds weights, shuffling and augmentation")
    verbose: int = setting(2, choices=(0, 1, 2), help="Keras progress: 0 silent, 1 bar, 2 a line per epoch")
    metric: str = setting("", flag=False, help="picks checkpoints and scores CV; \"\" = the competition's")
    # resolved from the records by `kit train` (leave them out of a config file)
    competition: str = resolved("")
    secondary_metrics: tuple[str, ...] = resolved(())
    n_classes: int = resolved(0)
    classes: tuple[str, ...] = resolved(())
    id_name: str = resolved("")
    meta_numeric: tuple[str, ...] = resolved(())
    meta_categorical: dict[str, int] = resolved(factory=dict, help="column -> number of codes")
    meta_stats: dict[str, list[float]] = resolved(factory=dict, help="numeric column -> [mean, std]")

    @classmethod
    def requested_names(cls) -> tuple[str, ...]:
        """The settings a user asks for (flags, a config file); the rest the run resolves from its records."""
        return tuple(f.name for f in dataclasses.fields(cls) if not declaration(f).resolved)

    @classmethod
    def resolved_names(cls) -> tuple[str, ...]:
        """The settings ``kit train`` fills in from the records."""
        return tuple(f.name for f in dataclasses.fields(cls) if declaration(f).resolved)

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

        from kit.core import fsutil

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
        """One KitError line naming the first setting whose value is not one of its declared choices."""
        for name in choices_of(type(self)):
            check_choice(name, getattr(self, name), type(self))

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (values coerced like ``from_dict``)."""
        data = self.to_dict()
        data.update(changes)
        return Config.from_dict(data)


def choices_of(cls: type) -> dict[str, tuple[Any, ...]]:
    """The settings of ``cls`` (Config or a subclass) that take one of a few fixed values, and those values."""
    return {f.name: declaration(f).choices for f in dataclasses.fields(cls) if declaration(f).choices}


# The strategies come from kit.training.strategy, which owns the routes. Model names (kit.training.models), augment presets
# (kit.training.pipeline) and metrics (kit.core.metrics) stay with their registries, whose modules import TensorFlow or
# scikit-learn, which `kit --help` must not: the CLI takes them free-form and kit.training.train.resolve checks them.
CHOICES: dict[str, tuple[Any, ...]] = choices_of(Config)


@dataclass(frozen=True)
class Flag:
    """One ``kit train`` flag generated from a setting's declaration: its spellings and argparse's keywords."""

    dest: str
    names: tuple[str, ...]
    options: dict[str, Any]


def train_flags(cls: type = Config) -> list[Flag]:
    """The ``kit train`` flag of every setting of ``cls`` that declares one, in field order.

    A flag left out parses to None, so a config file's value stands unless the flag is given (its default is
    the field's, said in the help)."""
    return [_flag(f, cls) for f in dataclasses.fields(cls) if declaration(f).flag and not declaration(f).resolved]


def _flag(f: dataclasses.Field, cls: type) -> Flag:
    decl = declaration(f)
    default = _default_of(f)
    options: dict[str, Any] = {"dest": f.name}
    if decl.required:
        options["required"] = True
    if isinstance(default, bool):
        options.update(action="store_true", default=None)
    elif isinstance(default, tuple) and decl.parse is None:
        options["nargs"] = "+"
    else:
        options["type"] = decl.parse or type(_SCHEDULE_TYPES[f.name]() if default is None else default)
    if decl.choices:
        options["choices"] = decl.choices
    if decl.metavar:
        options["metavar"] = decl.metavar
    options["help"] = decl.help + _default_words(f.name, default, decl)
    return Flag(f.name, decl.names or ("--" + f.name.replace("_", "-"),), options)


def _default_of(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]


def _default_words(name: str, default: Any, decl: Setting) -> str:
    """`` (default ...)`` for a flag's help: the declared words, else the value; nothing for a switch or a must."""
    if decl.required or isinstance(default, bool):
        return ""
    if decl.default_help:
        return f" (default: {decl.default_help})"
    if default is None:
        tuned, scratch = SCHEDULE_DEFAULTS["pretrained"][name], SCHEDULE_DEFAULTS["scratch"][name]
        return f" (default {tuned:g} with --weights, {scratch:g} from scratch)"
    return f" (default {default:g})" if isinstance(default, float) else f" (default {default})"


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

SMOKE_ENV = "KIT_SMOKE"  # read once, by the `kit` command (kit.cli.app's main); the library takes smoke=True
SMOKE_EPOCHS, SMOKE_BATCH, SMOKE_FOLDS, SMOKE_MODEL = 6, 8, 2, "tiny_cnn"  # the image cap: kit.data.records


def smoke_requested(environ: Mapping[str, str]) -> bool:
    """Whether ``environ`` asks for a smoke rehearsal (``KIT_SMOKE=1``): any command line runs in seconds on a CPU."""
    return environ.get(SMOKE_ENV, "") not in ("", "0")


def smoke_config(cfg: Config, imagenet_backbone: bool, smoke: bool) -> tuple[Config, str | None]:
    """``cfg`` shrunk for a smoke rehearsal (few epochs of small batches, an ImageNet backbone swapped for a tiny
    CNN from scratch; ``kit.training.train.resolve`` keeps at most SMOKE_FOLDS folds), and the line that says so;
    ``(cfg, None)`` when ``smoke`` is False.

    It checks a whole command line (records, flags, submission) before a GPU hour is spent on it; the
    model it trains is not the one asked for, so its scores say only that the plumbing holds.
    """
    if not smoke:
        return cfg, None
    changes: dict[str, Any] = {"epochs": min(cfg.epochs or SMOKE_EPOCHS, SMOKE_EPOCHS),
                               "batch": min(cfg.batch, SMOKE_BATCH)}
    if imagenet_backbone:
        changes.update(model=SMOKE_MODEL, weights="")
    shrunk = dataclasses.replace(cfg, **changes)
    return shrunk, (f"{SMOKE_ENV}=1: a smoke rehearsal, not a real run: {shrunk.epochs} epochs of batch "
                    f"{shrunk.batch}, at most {SMOKE_FOLDS} folds" + (f", {cfg.model} replaced by {SMOKE_MODEL} from scratch" if imagenet_backbone else ""))

