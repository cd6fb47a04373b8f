"""Melanoma skin cancer, 10,000 images: class folders ``train/{Benign,Malignant}/``, ``test/{Benign,Malignant}/``
(a labelled test split), scored by accuracy with ROC AUC beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.data.competitions import folders
from kit.data.competitions._base import Competition, NotebookParams
from kit.data.competitions._draw import BINARY_STYLE, SynthSpec, folder_split

CLASSES = ("Benign", "Malignant")


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """Write train/{Benign,Malignant}/*.jpg and test/{Benign,Malignant}/*.jpg (``overlap``: overlapping looks)."""
    n_train, n_test, size, overlap = spec.n_train, spec.n_test, spec.size, spec.overlap
    names = [f"melanoma_{i}" for i in range(n_train + n_test)]
    folder_split(root / "train", rng, n_train, size, CLASSES, BINARY_STYLE, names[:n_train], overlap)
    folder_split(root / "test", rng, n_test, size, CLASSES, BINARY_STYLE, names[n_train:], overlap)


NOTEBOOK = NotebookParams(
    name="melanoma10k_t4", title="Melanoma 10k benign malignant T4", slug="melanoma-10k-benign-malignant-t4",
    intro="# Melanoma 10k (benign / malignant) on two T4s\n\n"
          "Class folders `train/{Benign,Malignant}/` and a labelled `test/`: `kit predict` scores it "
          "(accuracy, AUC) and writes `id,target`.",
    datasets=("hasnainjaved/melanoma-skin-cancer-dataset-of-10000-images",), locate="train", submission="test",
    size=256, folds=5, epochs=10, batch=32, tta=8,
)
COMPETITION = Competition(
    name="melanoma10k", title="Melanoma skin cancer, 10,000 images", download=folders.LAYOUT, classes=CLASSES,
    metric="accuracy", secondary=("auc",), notebook=NOTEBOOK, synthesise=synthesise, synth_overlap=True,
)
