"""The two types a competition module fills in: ``Layout`` (how a download of one shape is recognised and read)
and ``Competition`` (its classes, metric, leaderboard, notebook and generator). Plain data and functions only;
no TensorFlow, no pandas at import beyond the reading toolkit's."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from kit.competitions._draw import SynthSpec
from kit.competitions._read import Source
from kit.task import Task, task_for

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


@dataclass(frozen=True)
class Competition:
    """One competition: its download, classes, scoring, leaderboard, notebook and synthetic download."""

    name: str  # also its kit.synth name
    title: str
    download: Layout
    classes: tuple[str, ...]  # in class-index order; class folders are recognised by these names
    metric: str  # picks checkpoints, scores CV, fits blends (a kit.metrics name)
    secondary: tuple[str, ...] = ()  # also reported: kit.metrics.TABLE names
    augment: str = "default"  # kit.pipeline preset
    notebook: str = ""  # notebooks/<notebook>.ipynb
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
