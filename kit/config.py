"""The one settings object of a training run: defaults, TOML load/save, and the resolved copy a run keeps.

``kit train`` builds a :class:`Config` from ``--config FILE.toml`` and its flags, fills in what the
records decide (image size, classes, metadata columns) and writes the result to ``RUN/config.toml``;
``kit predict`` and ``kit blend`` read that file back instead of re-typing flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from kit.errors import KitError


@dataclass(frozen=True)
class Config:
    """Settings of a k-fold training run (every field has a default; TOML keys are the field names)."""

    # where
    records: str = ""  # folder written by `kit records`
    out: str = ""  # run folder
    folds: tuple[int, ...] = ()  # folds to train; () means every fold in the records
    # model
    model: str = "efficientnet_b0"
    size: int = 0  # image side; 0 means the records' size (any other value must equal it)
    # "" random initialisation | a weights file (.h5, .weights.h5) | "imagenet" | a keras-hub preset folder or name
    weights: str = ""
    dropout: float = 0.2
    trainable_backbone: bool = True
    meta: bool = False  # feed the records' metadata columns to a metadata branch
    # optimisation
    epochs: int = 10
    batch: int = 32  # per replica; the global batch is batch * replicas
    lr_start: float = 1e-5
    lr_max: float = 5e-5  # per replica; scaled by the number of replicas
    lr_min: float = 1e-6
    lr_ramp_epochs: int = 2
    lr_sustain_epochs: int = 0
    lr_decay: float = 0.8
    lr_per: str = "epoch"  # epoch (set at each epoch start, as the public TPU notebooks do) | step (smooth)
    loss: str = "auto"  # auto (bce for binary, cce otherwise) | bce | cce | focal
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    class_weight: str = "none"  # none | balanced
    # input
    augment: str = "default"  # preset: none | default | pcam
    augment_options: dict[str, Any] = field(default_factory=dict)  # per-part overrides of the preset
    augment_on: str = "host"  # host (tf.data) | device (Keras random layers inside the training step)
    oversample: float = 0.0  # binary only: fraction of positives in the training stream; 0 = natural
    shuffle_buffer: int = 2048
    tta: int = 1  # views averaged for out-of-fold predictions (1 = identity only)
    # running
    strategy: str = "auto"  # auto | tpu | mirrored | gpu | cpu
    seed: int = 42
    verbose: int = 2  # Keras fit verbosity: 0 silent, 1 bar, 2 one line per epoch
    # resolved from the records by `kit train` (leave empty in a config file)
    n_classes: int = 0
    classes: tuple[str, ...] = ()
    id_name: str = ""
    meta_numeric: tuple[str, ...] = ()
    meta_categorical: dict[str, int] = field(default_factory=dict)  # column -> number of codes
    meta_stats: dict[str, list[float]] = field(default_factory=dict)  # numeric column -> [mean, std]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of every field (tuples as lists), ready for TOML."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
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
            kwargs[name] = _coerce(name, value, getattr(cls(), name), source)
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

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (values coerced like ``from_dict``)."""
        data = self.to_dict()
        data.update(changes)
        return Config.from_dict(data)


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
