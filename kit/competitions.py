"""The competitions kit serves, one registry row each: what a download looks like, how it is scored and
submitted, how its folds are grouped, what augments it, how kit fakes it, and its notebook.

Everything that differs between competitions is read from here (as ``kit.models`` registers backbones):
``kit records`` stores the competition's name in the records' ``manifest.json``; ``kit train`` picks
checkpoints and scores CV with its metric; ``kit predict`` writes its submission columns; the CLI's
``--layout`` choices, ``kit.synth`` and the notebook builder list its rows. A seventh competition is one
``register`` call here plus its layout reader (``kit.sources``) and its generator (``kit.synth``).

A download that is none of these (a generic CSV, other class folders) gets the generic rule: ROC AUC for
two classes, balanced accuracy for more.

No TensorFlow or pandas here: the CLI reads this table to start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kit.errors import KitError

if TYPE_CHECKING:  # kit.manifest imports this module
    from kit.manifest import Manifest


@dataclass(frozen=True)
class Competition:
    """One competition: its download, labels, scoring, submission, folds, augmentation and notebook."""

    name: str  # also its kit.synth layout name
    title: str
    slug: str  # the Kaggle competition or dataset
    layout: str  # the kit.sources reader
    id_col: str  # the id column of its CSVs and submission
    target_col: str  # the label column ("" for class folders)
    group_col: str  # what folds must not split ("" : each image its own group)
    classes: tuple[str, ...]
    metric: str  # picks checkpoints, scores CV, fits blends (a kit.metrics name)
    secondary: tuple[str, ...] = ()  # also reported: kit.metrics names, or "top15_sensitivity"
    submission: str = "probability"  # "probability": id + one column per class (binary: id + target column)
    augment: str = "default"  # kit.pipeline preset
    notebook: str = ""  # notebooks/<notebook>.ipynb
    # Rows on the public and private leaderboard (None: no leaderboard, or not known)
    leaderboard: tuple[int, int] | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def binary(self) -> bool:
        """Whether the task has two classes (one probability column)."""
        return is_binary(len(self.classes))


def is_binary(n_classes: int) -> bool:
    """Whether a task of ``n_classes`` classes is binary: one probability column, a sigmoid, AUC by default."""
    return int(n_classes) <= 2


_REGISTRY: dict[str, Competition] = {}


def register(competition: Competition) -> Competition:
    """Add ``competition`` to the registry (a name registered twice is an error)."""
    if competition.name in _REGISTRY:
        raise ValueError(f"competition {competition.name!r} registered twice")
    _REGISTRY[competition.name] = competition
    return competition


def list_competitions() -> list[str]:
    """Registered competition names, in registration order."""
    return list(_REGISTRY)


def get(name: str) -> Competition:
    """The competition registered as ``name``; KitError naming the known ones otherwise."""
    if name not in _REGISTRY:
        raise KitError(f"competition: unknown competition {name!r} (known: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


def layouts() -> list[str]:
    """The layout readers the registry's competitions use, then the generic ones (the --layout choices)."""
    named = list(dict.fromkeys(c.layout for c in _REGISTRY.values()))
    return named + [g for g in ("folders", "csv") if g not in named]


def identify(layout: str, classes: list[str] | tuple[str, ...]) -> Competition | None:
    """The competition a download of ``layout`` with ``classes`` is, or None for a generic download.

    Class folders serve two competitions, told apart by their class names (case and spaces as written).
    """
    matches = [c for c in _REGISTRY.values() if c.layout == layout
               and (layout != "folders" or [k.lower() for k in c.classes] == [str(k).lower() for k in classes])]
    return matches[0] if len(matches) == 1 else None


def of_manifest(manifest: Manifest) -> Competition | None:
    """The competition records were written from (their manifest's ``competition``, else recognised)."""
    if manifest.competition:
        return get(manifest.competition)
    return identify(manifest.layout, list(manifest.classes))


def metric_of(manifest: Manifest) -> str:
    """The metric that scores records: the competition's, else ``default_metric`` for their classes."""
    comp = of_manifest(manifest)
    return comp.metric if comp is not None else default_metric(manifest.n_classes or 2)


def default_metric(n_classes: int) -> str:
    """The metric of a download no competition claims: ROC AUC for 2 classes, balanced accuracy beyond."""
    return "auc" if is_binary(n_classes) else "balanced_accuracy"


ISIC9_CLASSES = ("actinic keratosis", "basal cell carcinoma", "dermatofibroma", "melanoma", "nevus",
                 "pigmented benign keratosis", "seborrheic keratosis", "squamous cell carcinoma", "vascular lesion")

register(Competition(
    name="siim", title="SIIM-ISIC Melanoma Classification 2020", slug="siim-isic-melanoma-classification",
    layout="siim", id_col="image_name", target_col="target", group_col="patient_id",
    classes=("benign", "malignant"), metric="auc", notebook="siim_isic_tpu",
    # 10,982 test images, 30% on the public leaderboard
    leaderboard=(3295, 7687),
))
register(Competition(
    name="ham10000", title="Skin Cancer MNIST: HAM10000", slug="kmader/skin-cancer-mnist-ham10000",
    layout="ham10000", id_col="image_id", target_col="dx", group_col="lesion_id",
    classes=("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"), metric="balanced_accuracy",
    secondary=("accuracy",), notebook="ham10000_t4",
    # no Kaggle leaderboard: ISIC 2018 task 3's test set of 1,512 images, all of it "private"
    leaderboard=(0, 1512),
))
register(Competition(
    name="pcam", title="Histopathologic Cancer Detection", slug="histopathologic-cancer-detection",
    layout="pcam", id_col="id", target_col="label", group_col="",
    classes=("0", "1"), metric="auc", augment="pcam", notebook="pcam_t4",
    # 57,458 test tiles, about half on the public leaderboard
    leaderboard=(28729, 28729),
))
register(Competition(
    name="isic9", title="Skin cancer ISIC, 9 classes", slug="nodoubttome/skin-cancer9-classesisic",
    layout="folders", id_col="id", target_col="", group_col="", classes=ISIC9_CLASSES, metric="accuracy",
    secondary=("balanced_accuracy",), notebook="isic9_t4",
))
register(Competition(
    name="melanoma10k", title="Melanoma skin cancer, 10,000 images",
    slug="hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images", layout="folders", id_col="id",
    target_col="", group_col="", classes=("Benign", "Malignant"), metric="accuracy", secondary=("auc",),
    notebook="melanoma10k_t4",
))
register(Competition(
    name="isic2024", title="ISIC 2024 - Skin Cancer Detection with 3D-TBP", slug="isic-2024-challenge",
    layout="isic2024", id_col="isic_id", target_col="target", group_col="patient_id",
    classes=("benign", "malignant"), metric="pauc", secondary=("auc", "top15_sensitivity"),
    notebook="isic2024_t4",
))
