"""What ``kit train`` chooses for the settings a user leaves out, and the one line that says so.

Most users run ``kit train --records R --out RUN`` and nothing else, so these choices decide whether a first run
beats a LogisticRegression on raw pixels (it did not, while the default was EfficientNet-B0 from random weights
with the skin-lesion augmentation on every download):

- **model**: on a GPU or TPU with ImageNet weights at hand, EfficientNet-B0 fine-tuned from them; otherwise
  ``compact_cnn`` from scratch, sized to the records' images. Fine-tuning an ImageNet backbone takes hours on a
  CPU, and from random weights it needs far more images than a competition has.
- **weights** of an ImageNet backbone named without ``--weights``: ImageNet weights where they can be had (Keras'
  cache, a file under a Kaggle input, Keras' download when online); where none can be had kit refuses at once,
  saying how to get them and what to run instead. ``--weights none`` trains it from random weights on purpose.
- **augment**: the competition's preset (lesions and slides have no up or down); a download no competition claims
  gets none, since a flip or a turn changes the label of a digit, a letter or a chest X-ray.
- **metric**: the competition's; otherwise ROC AUC for two classes and balanced accuracy for more.

Nothing here imports TensorFlow or Keras: ``kit train`` checks the model and its weights before they load, so a
typo or a missing weights file fails in a fraction of a second.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

from kit.training import backbones
from kit.core.errors import KitError
from kit.core.task import task_for

PRETRAINED_MODEL = "efficientnet_b0"  # the default where an accelerator and ImageNet weights are at hand
SCRATCH_MODEL = "compact_cnn"  # the default everywhere else
NO_WEIGHTS = "none"  # --weights none: random initialisation, asked for on purpose
KAGGLE_INPUT = Path("/kaggle/input")
_WEIGHTS_HOST = ("storage.googleapis.com", 443)  # where Keras downloads ImageNet weights from


@dataclass(frozen=True)
class WeightsSource:
    """Where an ImageNet backbone's weights come from: the ``--weights`` value and, in words, where that is."""

    value: str  # "imagenet" (Keras loads its cache or downloads) or a file path
    where: str


def keras_cache() -> Path:
    """The folder where Keras keeps downloaded weights (``$KERAS_HOME/models``, else ``~/.keras/models``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "models"


def online(host: tuple[str, int] = _WEIGHTS_HOST, timeout: float = 1.0) -> bool:
    """Whether a connection to Keras' download host opens within ``timeout`` seconds (nothing is downloaded)."""
    try:
        with socket.create_connection(host, timeout=timeout):
            return True
    except OSError:
        return False


def _kaggle_file(name: str, root: Path, depth: int = 5) -> Path | None:
    """A file called ``name`` at most ``depth`` folders under an attached Kaggle input, if any."""
    for level in range(1, depth + 1):
        found = sorted(root.glob("/".join(["*"] * level) + f"/{name}")) if root.is_dir() else []
        if found:
            return found[0]
    return None


def imagenet_weights(model: str, *, kaggle_input: Path | None = None, can_download: bool | None = None
                     ) -> WeightsSource | None:
    """Where ImageNet weights for ``model`` can be had: Keras' cache, a Kaggle input, or a download; None if nowhere.

    ``can_download`` None: ask the network (at most a second)."""
    file = backbones.imagenet_file(model)
    cached = keras_cache() / file
    if cached.is_file():
        return WeightsSource("imagenet", f"Keras' cache, {cached}")
    attached = _kaggle_file(file, KAGGLE_INPUT if kaggle_input is None else kaggle_input)
    if attached is not None:
        return WeightsSource(str(attached), f"the Kaggle input {attached}")
    if online() if can_download is None else can_download:
        return WeightsSource("imagenet", f"Keras' download of {file} (online)")
    return None


def no_weights_error(model: str) -> KitError:
    """The one line for an ImageNet backbone asked for without weights on a machine where none can be had."""
    file = backbones.imagenet_file(model)
    return KitError(
        f"weights: {model} fine-tunes ImageNet weights and none are here (not in {keras_cache()}, no Kaggle input "
        f"holds {file}, and the machine is offline); pass --weights with {file} (save it once on a machine that is "
        f"online: keras.applications.{backbones.info(model).constructor}(include_top=False)), or --weights none to "
        f"train it from random weights, or leave --model out to train {SCRATCH_MODEL} from scratch")


def check_model_and_weights(model: str, weights: str) -> None:
    """Refuse at once (before TensorFlow loads) an unknown model, a missing weights file, or an ImageNet backbone
    named without weights where none can be had."""
    w = weights.strip()
    if w and w not in ("imagenet", NO_WEIGHTS) and _looks_like_file(w) and not Path(w).is_file():
        raise KitError(f"{w}: weights file not found (--weights)")
    if not model:
        return
    backbones.info(model)  # unknown: one line naming the known ones
    if not w and needs_weights(model) and imagenet_weights(model) is None:
        raise no_weights_error(model)


def _looks_like_file(weights: str) -> bool:
    return weights.endswith(".h5") or ("/" in weights and not weights.startswith(("kaggle://", "hf://", "gs://",
                                                                                    "modelscope://"))
                                       and not Path(weights).is_dir())


def needs_weights(model: str) -> bool:
    """Whether ``model`` is an ImageNet backbone whose weights kit finds by itself (keras-hub presets are given)."""
    row = backbones.info(model)
    return backbones.is_imagenet_family(model) and bool(row.constructor)


@dataclass
class Choices:
    """The settings kit filled in, and why, for the line ``kit train`` prints."""

    model: str = ""
    weights: str = ""
    augment: str = ""
    metric: str = ""
    why: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        """``chose: model ... (why); augment ... (why); metric ... (why)``, or "" when the user chose everything."""
        parts = [f"{name} {value} ({self.why[name]})" for name, value in
                 (("model", self.model), ("weights", self.weights), ("augment", self.augment),
                  ("metric", self.metric)) if name in self.why]
        return "chose: " + "; ".join(parts) if parts else ""


def choose_model(model: str, weights: str, *, accelerated: bool, choices: Choices) -> tuple[str, str]:
    """(model, weights) for what the user gave; records the reason of anything filled in on ``choices``."""
    if model:
        if weights or not needs_weights(model):
            return model, weights
        found = imagenet_weights(model)
        if found is None:
            raise no_weights_error(model)
        choices.weights, choices.why["weights"] = found.value, f"ImageNet, from {found.where}"
        return model, found.value
    if weights and weights != NO_WEIGHTS:
        # weights without a model: a preset (a folder, a handle, a name) is a keras-hub backbone, a file or
        # "imagenet" fits the default pretrained one
        hub = not (weights == "imagenet" or weights.endswith(".h5"))
        choices.model = "keras_hub" if hub else PRETRAINED_MODEL
        choices.why["model"] = "the backbone of --weights"
        return choices.model, weights
    found = imagenet_weights(PRETRAINED_MODEL) if accelerated else None
    if found is not None:
        choices.model, choices.why["model"] = PRETRAINED_MODEL, f"fine-tuned from ImageNet weights in {found.where}"
        return PRETRAINED_MODEL, found.value
    why = ("no GPU or TPU here, where fine-tuning an ImageNet backbone takes hours" if not accelerated else
           "no ImageNet weights here (offline, none cached or attached)")
    choices.model = SCRATCH_MODEL
    choices.why["model"] = (f"from scratch, sized to the images: {why}; --model {PRETRAINED_MODEL} --weights FILE "
                            "fine-tunes instead")
    return SCRATCH_MODEL, weights


def choose_augment(augment: str, competition: str | None, competition_augment: str | None,
                   choices: Choices) -> str:
    """The augmentation preset: the user's, else the competition's, else none for a download no competition claims."""
    if augment:
        return augment
    if competition:
        choices.augment = competition_augment or "default"
        choices.why["augment"] = f"{competition}'s preset"
        return choices.augment
    choices.augment = "none"
    choices.why["augment"] = ("a download no competition claims: no flip or turn that could change a label; "
                              "--augment default for images with no up or down, such as lesions or slides")
    return "none"


def choose_metric(metric: str, competition: str | None, competition_metric: str | None, n_classes: int,
                  choices: Choices) -> str:
    """The metric: the user's, else the competition's, else ROC AUC for two classes, balanced accuracy for more."""
    if metric:
        return metric
    if competition and competition_metric:
        choices.metric, choices.why["metric"] = competition_metric, f"{competition}'s"
        return competition_metric
    task = task_for(n_classes)
    choices.metric = task.default_metric
    choices.why["metric"] = f"{task.describe()} and no competition; set metric in --config to choose"
    return choices.metric
