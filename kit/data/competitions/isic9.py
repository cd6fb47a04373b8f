"""Skin cancer ISIC, 9 classes: class folders ``Train/<class name>/``, ``Test/<class name>/`` (the names hold
spaces), scored by accuracy as its competition is. The real download holds byte-identical copies of some images
under new names: kit's folds group them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.data.competitions import folders
from kit.data.competitions._base import Competition, NotebookParams
from kit.data.competitions._draw import SynthSpec, folder_split, isic_ids

CLASSES = ("actinic keratosis", "basal cell carcinoma", "dermatofibroma", "melanoma", "nevus",
           "pigmented benign keratosis", "seborrheic keratosis", "squamous cell carcinoma", "vascular lesion")
# Lesion look per class (colour, radius, border irregularity, asymmetry), in CLASSES order.
STYLES = [
    ((215, 60, 60), 0.30, 0.10, 0.04),  # actinic keratosis: red
    ((235, 150, 210), 0.22, 0.05, 0.02),  # basal cell carcinoma: pearly pink
    ((120, 60, 20), 0.15, 0.02, 0.00),  # dermatofibroma: brown, small
    ((30, 20, 60), 0.36, 0.20, 0.10),  # melanoma: blue-black, large, irregular
    ((160, 100, 65), 0.26, 0.03, 0.00),  # nevus: medium brown, round
    ((80, 80, 20), 0.32, 0.08, 0.05),  # pigmented benign keratosis: dark olive
    ((205, 195, 60), 0.30, 0.06, 0.03),  # seborrheic keratosis: waxy yellow
    ((245, 245, 235), 0.28, 0.14, 0.06),  # squamous cell carcinoma: white keratin
    ((140, 0, 90), 0.20, 0.04, 0.00),  # vascular lesion: purple-red
]


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """Write Train/<class name>/*.jpg and Test/<class name>/*.jpg, one training image planted twice."""
    n_train, n_test, size = spec.n_train, spec.n_test, spec.size
    ids = isic_ids(rng, n_train + n_test)
    train = folder_split(root / "Train", rng, n_train, size, CLASSES, STYLES, ids[:n_train])
    folder_split(root / "Test", rng, n_test, size, CLASSES, STYLES, ids[n_train:])
    # The real download holds byte-identical copies under new names: plant one so folds must group it.
    if len(train) >= 2:
        src = train[0]
        (src.parent / f"{src.stem}_copy.jpg").write_bytes(src.read_bytes())


NOTEBOOK = NotebookParams(
    name="isic9_t4", title="Skin cancer ISIC 9 classes T4", slug="skin-cancer-isic-9-classes-t4",
    intro="# Skin cancer ISIC, 9 classes, on two T4s\n\n"
          "Class folders (`Train/<class name>/`, `Test/<class name>/`; the names hold spaces). The test "
          "folder is labelled: `kit predict` scores it and writes one probability column per class.",
    datasets=("nodoubttome/skin-cancer9-classesisic",), locate="Train", submission="test",
    size=256, folds=5, epochs=15, batch=32, tta=8,
)
COMPETITION = Competition(
    name="isic9", title="Skin cancer ISIC, 9 classes", download=folders.LAYOUT, classes=CLASSES,
    metric="accuracy", secondary=("balanced_accuracy",), notebook=NOTEBOOK, synthesise=synthesise,
)
