"""The types a competition module fills in: ``Layout`` (how a download of one shape is recognised and read),
``NotebookParams`` (its Kaggle notebook's settings) and ``Competition`` (its classes, metric, leaderboard,
notebook and generator). Plain data and functions only; no TensorFlow, no pandas at import beyond the reading
toolkit's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from kit.data.competitions._draw import SynthSpec
from kit.data.competitions._read import Source
from kit.core.task import Task, task_for

# read(path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source: the train (or test) split
Reader = Callable[..., Source]
# synthesise(root, rng, spec): write a small download of the competition's exact files under root
Generator = Callable[[Path, np.random.Generator, SynthSpec], None]
Recognise = Callable[[Path], bool]


@dataclass(frozen=True)
class Layout:
    """One shape of download: how it is recognised (from a CSV file, from a folder) and read into a ``Source``."""

    name: str
    read: Reader
    recognise_file: Optional[Recognise] = None  # None: a file of it is never recognised (only --layout names it)
    recognise_folder: Optional[Recognise] = None
    train_beside_test: bool = False  # the test split's folder also holds the train split
    generic: bool = False  # tried after every competition's own layout: it matches many downloads


# The pretrained backbone a training notebook attaches by default: the keras-hub EfficientNet B0 preset that Keras
# publishes as a public Kaggle Model (owner/model/framework/variation/version).
PRETRAINED = "keras/efficientnet/keras/efficientnet_b0_ra_imagenet/2"
PRETRAINED_NAME = "EfficientNet B0, ImageNet-1k (RandAugment), the keras-hub preset by Keras"
SUBMISSIONS = ("sample", "test", "oof")  # NotebookParams.submission


@dataclass(frozen=True)
class NotebookParams:
    """A competition's Kaggle notebook: notebooks/<name>.ipynb, the settings it trains with, the kernel it is pushed as.

    notebooks/build_notebooks.py writes it from these alone (the standard template), unless it has a template of
    its own named ``name`` there.
    """

    name: str  # notebooks/<name>.ipynb
    intro: str  # the first markdown cell, before the local rehearsal's paragraph: a heading, then the task
    title: str  # the Kaggle kernel's title; its slug is the title slugified
    slug: str
    accelerator: str = "t4"  # a kit.kaggle.kernel.SESSION_HOURS key: t4, tpu or cpu
    competition: str = ""  # the Kaggle competition attached (its slug), if any
    datasets: tuple[str, ...] = ()  # Kaggle datasets attached (owner/name)
    models: tuple[str, ...] = (PRETRAINED,)  # Kaggle Models attached; the first is the pretrained backbone
    # The file or folder, under the attached download (the competition's, else the first dataset), that it is read from
    locate: str = ""
    # How submission.csv is made: "sample" (kit predict in the sample submission's order, then kit check), "test"
    # (kit predict on the labelled test split) or "oof" (no test split: the out-of-fold probabilities)
    submission: str = "sample"
    model: str = "keras_hub"
    size: int = 256
    folds: int = 5
    epochs: int = 10
    batch: int = 32
    tta: int = 8

    def __post_init__(self) -> None:
        if self.submission not in SUBMISSIONS:
            raise ValueError(f"notebook {self.name!r}: submission {self.submission!r} is not one of {SUBMISSIONS}")
        if not (self.competition or self.datasets):
            raise ValueError(f"notebook {self.name!r}: no competition and no dataset to read the download from")

    @property
    def source(self) -> tuple[str, str]:
        """The setting the download comes from and its Kaggle slug: ("COMPETITION", slug) or ("DATASET", owner/name)."""
        return ("COMPETITION", self.competition) if self.competition else ("DATASET", self.datasets[0])

    def kernel(self) -> dict:
        """The kernel settings ``kit push`` reads from the notebook's ``metadata.kit`` (empty inputs left out)."""
        inputs = {"competition": self.competition, "datasets": list(self.datasets), "models": list(self.models)}
        return {"title": self.title, "slug": self.slug, "accelerator": self.accelerator,
                **{key: value for key, value in inputs.items() if value}}


@dataclass(frozen=True)
class Competition:
    """One competition: its download, classes, scoring, leaderboard, notebook and synthetic download."""

    name: str  # also its kit.data.synth name
    title: str
    download: Layout
    classes: tuple[str, ...]  # in class-index order; class folders are recognised by these names
    metric: str  # picks checkpoints, scores CV, fits blends (a kit.core.metrics name)
    secondary: tuple[str, ...] = ()  # also reported: kit.core.metrics.TABLE names
    augment: str = "default"  # kit.training.pipeline preset
    notebook: Optional[NotebookParams] = None  # None: no Kaggle notebook
    # Rows on the public and private leaderboard (None: no leaderboard, or not known)
    leaderboard: Optional[tuple[int, int]] = None
    synthesise: Optional[Generator] = None
    synth_size: int = 64  # the default image side of its synthetic download
    synth_overlap: bool = False  # whether its generator draws overlapping classes (``overlap``)

    @property
    def layout(self) -> str:
        """The name of the layout its download is read with."""
        return self.download.name

    @property
    def task(self) -> Task:
        """Its task (binary or multi-class), from its classes."""
        return task_for(len(self.classes))

    @property
    def binary(self) -> bool:
        """Whether the task has two classes (one probability column)."""
        return self.task.name == "binary"
