"""Histopathologic Cancer Detection (PCam): 96x96 H&E tiles, binary, scored by ROC AUC; each tile its own group.

Download: ``train_labels.csv`` (id, label), ``train/<id>.tif``, ``test/<id>.tif`` and ``sample_submission.csv``
(whose id order is the submission's). The label concerns the centre 32x32 only: the ``pcam`` augmentation
preset keeps the centre in view.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from kit.data.competitions._base import Competition, Layout, NotebookParams
from kit.data.competitions._draw import SynthSpec, histology_tile
from kit.data.competitions._read import Source, absolute, class_labels, find_images, image_files, read_csv, source_table

CLASSES = ("0", "1")


def recognise_file(path: Path) -> bool:
    """Whether ``path`` is PCam's train_labels.csv."""
    return path.name == "train_labels.csv"


def recognise_folder(path: Path) -> bool:
    """Whether ``path`` holds train_labels.csv, or a sample submission beside a train/ folder of .tif tiles."""
    return (path / "train_labels.csv").is_file() or ((path / "sample_submission.csv").is_file() and (path / "train").is_dir()
                                                    and any(path.joinpath("train").glob("*.tif")))


def read(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    """The train (or ``test``) split of a PCam download: one row per tile, each its own group."""
    import pandas as pd
    root = path.parent if path.is_file() else path
    skipped: list[dict] = []
    if test:
        folder = images or root / "test"
        sample = root / "sample_submission.csv"
        if sample.is_file():
            # The sample's id order is the submission's order: keep it.
            df = read_csv(sample, ["id"], "id")
            df = find_images(df, df["id"], [folder], sample, skip_bad, skipped, (".tif", ".tiff"))
        else:
            files = image_files(folder)
            df = pd.DataFrame({"id": [f.stem for f in files], "path": [absolute(f) for f in files]})
        target = np.full(len(df), -1)
        labelled = False
    else:
        csv = path if path.is_file() else root / "train_labels.csv"
        df = read_csv(csv, ["id", "label"], "id")
        df = find_images(df, df["id"], [images or root / "train"], csv, skip_bad, skipped, (".tif", ".tiff"))
        target = class_labels(csv, df, "label", list(CLASSES))
        labelled = True
    table = source_table(df, "id", target, df["id"], [], [])
    return Source(table, list(CLASSES), "pcam", "id", [], [], labelled, {}, skipped, str(root))


# ISIC 2024: the train CSV's 55 columns less the test CSV's 44. Used when the download holds one split only.
ISIC2024_TRAIN_ONLY = ["target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
                       "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"]
ISIC2024_CATEGORICAL = ["sex", "anatom_site_general", "image_type", "tbp_tile_type", "tbp_lv_location",
                        "tbp_lv_location_simple", "attribution"]
# Identifiers and licence text: not features.


def _hex_id(rng: np.random.Generator) -> str:
    return hashlib.sha1(rng.bytes(16)).hexdigest()


def _save_tif(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="TIFF")


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """Write train_labels.csv, train/<hex id>.tif, test/<hex id>.tif and sample_submission.csv (40% positive)."""
    import pandas as pd
    n_train, n_test, size = spec.n_train, spec.n_test, spec.size
    labels = rng.permutation(np.arange(n_train) % 5 < 2).astype(int)  # 40% positive, as the real set
    ids = [_hex_id(rng) for _ in range(n_train)]
    for pid, label in zip(ids, labels):
        _save_tif(histology_tile(rng, size, bool(label)), root / "train" / f"{pid}.tif")
    pd.DataFrame({"id": ids, "label": labels}).to_csv(root / "train_labels.csv", index=False)
    test_ids = [_hex_id(rng) for _ in range(n_test)]
    (root / "test").mkdir(parents=True, exist_ok=True)
    for pid in test_ids:
        _save_tif(histology_tile(rng, size, bool(rng.uniform() < 0.4)), root / "test" / f"{pid}.tif")
    pd.DataFrame({"id": test_ids, "label": 0}).to_csv(root / "sample_submission.csv", index=False)


LAYOUT = Layout("pcam", read, recognise_file, recognise_folder, train_beside_test=True)
NOTEBOOK = NotebookParams(
    name="pcam_t4", title="Histopathologic Cancer Detection T4", slug="histopathologic-cancer-detection-t4",
    intro="# Histopathologic Cancer Detection (PCam) on two T4s\n\n"
          "96x96 tiles, binary, scored by ROC AUC. The label concerns the centre 32x32 only, so the `pcam` "
          "augmentation preset keeps the centre in view.",
    competition="histopathologic-cancer-detection", locate="train_labels.csv",
    size=96, folds=5, epochs=10, batch=64, tta=8,
)
COMPETITION = Competition(
    name="pcam", title="Histopathologic Cancer Detection", download=LAYOUT, classes=CLASSES, metric="auc",
    augment="pcam", notebook=NOTEBOOK,
    # 57,458 test tiles, about half on the public leaderboard
    leaderboard=(28729, 28729), synthesise=synthesise, synth_size=96,
)
