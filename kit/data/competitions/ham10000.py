"""Skin Cancer MNIST: HAM10000: seven classes scored by balanced accuracy (ISIC 2018 task 3), folds grouped by lesion.

Download: ``HAM10000_metadata.csv`` (lesion_id, image_id, dx, dx_type, age, sex, localization) and the images
in ``HAM10000_images_part_1/`` and ``HAM10000_images_part_2/``. One labelled set: there is no test split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.data.competitions._base import Competition, Layout, NotebookParams
from kit.data.competitions._draw import SynthSpec, class_plan, group_sizes, isic_ids, lesion_image, save_jpeg, skin_tone
from kit.data.competitions._read import (Source, category_tables, class_labels, find_images, read_csv, source_table)
from kit.core.errors import KitError

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM_NUMERIC, HAM_CATEGORICAL = ["age"], ["sex", "localization"]
HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
HAM_SITES = ["back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "scalp"]
HAM_STYLE = {
    "akiec": ((215, 60, 60), 0.30, 0.10, 0.04),  # red, scaly-edged
    "bcc": ((235, 150, 210), 0.22, 0.05, 0.02),  # pearly pink
    "bkl": ((150, 150, 40), 0.34, 0.06, 0.03),  # olive, large
    "df": ((120, 60, 20), 0.15, 0.02, 0.00),  # brown, small and firm
    "mel": ((30, 20, 60), 0.36, 0.20, 0.10),  # blue-black, large, irregular
    "nv": ((160, 100, 65), 0.26, 0.03, 0.00),  # medium brown, round
    "vasc": ((140, 0, 90), 0.20, 0.04, 0.00),  # purple-red
}
# HAM10000's real class mix (nv about two thirds), floored so tiny sets still hold every class.
HAM_WEIGHTS = [0.08, 0.10, 0.13, 0.06, 0.13, 0.42, 0.08]
METADATA = "HAM10000_metadata.csv"


def recognise(path: Path) -> bool:
    """Whether ``path`` is HAM10000's metadata CSV or a folder holding it."""
    return path.name == METADATA if path.is_file() else (path / METADATA).is_file()


def read(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    """The labelled set of a HAM10000 download, grouped by lesion (``test`` is refused: there is none)."""
    root = path.parent if path.is_file() else path
    if test:
        raise KitError(f"{root}: HAM10000 ships one labelled set, no test split; write it without --test")
    csv = path if path.is_file() else root / METADATA
    df = read_csv(csv, ["lesion_id", "image_id", "dx"], "image_id")
    folders = [images] if images else [root / "HAM10000_images_part_1", root / "HAM10000_images_part_2",
                                      root / "ham10000_images_part_1", root / "ham10000_images_part_2"]
    skipped: list[dict] = []
    df = find_images(df, df["image_id"], folders, csv, skip_bad, skipped)
    target = class_labels(csv, df, "dx", CLASSES)
    group = df["lesion_id"].where(df["lesion_id"].notna(), df["image_id"])
    numeric = [c for c in HAM_NUMERIC if c in df.columns]
    categorical = [c for c in HAM_CATEGORICAL if c in df.columns]
    table = source_table(df, "image_id", target, group, numeric, categorical)
    return Source(table, list(CLASSES), "ham10000", "image_id", numeric, categorical, True,
                  category_tables([df], categorical), skipped, str(root), table_file=str(csv))


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """Write HAM10000_metadata.csv and 4:3 images in HAM10000_images_part_{1,2}/ (no test split: n_test unused)."""
    import pandas as pd
    n_train, size = spec.n_train, spec.size
    sizes = group_sizes(rng, n_train, 1, 4)
    classes = class_plan(rng, len(sizes), HAM_WEIGHTS)
    ids = isic_ids(rng, n_train)
    lesion_nums = rng.choice(np.arange(1, 8000), size=len(sizes), replace=False)
    rows, i = [], 0
    width = size * 4 // 3
    for g, n_img in enumerate(sizes):
        dx = CLASSES[classes[g]]
        dx_type = "histo" if dx in ("mel", "bcc", "akiec") else str(rng.choice(["follow_up", "consensus", "histo", "confocal"]))
        age, sex = float(rng.integers(4, 17) * 5), str(rng.choice(["male", "female", "unknown"], p=[0.5, 0.45, 0.05]))
        site, skin = str(rng.choice(HAM_SITES)), skin_tone(rng)
        for _ in range(n_img):
            part = 1 if i < (n_train + 1) // 2 else 2
            save_jpeg(lesion_image(rng, size, width, skin, HAM_STYLE[dx]), root / f"HAM10000_images_part_{part}" / f"{ids[i]}.jpg")
            rows.append([f"HAM_{int(lesion_nums[g]):07d}", ids[i], dx, dx_type, age, sex, site])
            i += 1
    # The real metadata file is sorted by lesion, not by image: keep that shape.
    pd.DataFrame(rows, columns=HAM_COLUMNS).to_csv(root / METADATA, index=False)


LAYOUT = Layout("ham10000", read, recognise, recognise)
NOTEBOOK = NotebookParams(
    name="ham10000_t4", title="HAM10000 skin lesions T4", slug="ham10000-skin-lesions-t4",
    intro="# HAM10000 (skin-cancer-mnist) on two T4s\n\n"
          "Seven classes (akiec bcc bkl df mel nv vasc), scored by balanced accuracy as in ISIC 2018 "
          "task 3; folds are grouped by lesion. The dataset has no test split, so `submission.csv` holds "
          "the out-of-fold probabilities: one column per class, every image predicted by the fold model "
          "that never saw it.",
    datasets=("kmader/skin-cancer-mnist-ham10000",), locate="HAM10000_metadata.csv", submission="oof",
    size=256, folds=5, epochs=15, batch=32, tta=1,
)
COMPETITION = Competition(
    name="ham10000", title="Skin Cancer MNIST: HAM10000", download=LAYOUT, classes=CLASSES,
    metric="balanced_accuracy", secondary=("accuracy",), notebook=NOTEBOOK,
    # no Kaggle leaderboard: ISIC 2018 task 3's test set of 1,512 images, all of it "private"
    leaderboard=(0, 1512), synthesise=synthesise,
)
