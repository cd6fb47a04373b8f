"""Melanoma skin cancer, 10,000 images: class folders ``train/{Benign,Malignant}/``, ``test/{Benign,Malignant}/``
(a labelled test split), scored by accuracy with ROC AUC beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.competitions import folders
from kit.competitions._base import Competition
from kit.competitions._draw import BINARY_STYLE, SynthSpec, folder_split

CLASSES = ("Benign", "Malignant")


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """Write train/{Benign,Malignant}/*.jpg and test/{Benign,Malignant}/*.jpg (``overlap``: overlapping looks)."""
    n_train, n_test, size, overlap = spec.n_train, spec.n_test, spec.size, spec.overlap
    names = [f"melanoma_{i}" for i in range(n_train + n_test)]
    folder_split(root / "train", rng, n_train, size, CLASSES, BINARY_STYLE, names[:n_train], overlap)
    folder_split(root / "test", rng, n_test, size, CLASSES, BINARY_STYLE, names[n_train:], overlap)


COMPETITION = Competition(
    name="melanoma10k", title="Melanoma skin cancer, 10,000 images", download=folders.LAYOUT, classes=CLASSES,
    metric="accuracy", secondary=("auc",), notebook="melanoma10k_t4", synthesise=synthesise, synth_overlap=True,
)
