"""ISIC 2024 - Skin Cancer Detection with 3D-TBP: binary, about 0.1% positives, scored by the partial AUC above
80% true-positive rate; folds grouped by patient. A code competition: Kaggle reruns the notebook on the hidden test.

Download: ``train-metadata.csv`` (55 columns) and ``test-metadata.csv`` (44), ``sample_submission.csv``, and the
images as ``{train,test}-image.hdf5`` (one encoded JPEG per isic_id) or ``{train,test}-image/image/<isic_id>.jpg``.
The 11 train-only columns restate or leak the label and never become metadata inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.data.competitions._base import Competition, Layout, NotebookParams
from kit.data.competitions._draw import SynthSpec, binary_lesion, group_sizes, isic_ids, jpeg_bytes, n_positive, skin_tone
from kit.data.competitions._read import (Source, category_tables, class_labels, csv_header, csv_line, find_images,
                                    read_csv, read_csv_ids, source_table)
from kit.core.errors import KitError
from kit.data.imaging import hdf5_member

if TYPE_CHECKING:  # pandas is imported where a table is read or written: the CLI starts without it
    import pandas as pd

CLASSES = ("benign", "malignant")
# ISIC 2024: the train CSV's 55 columns less the test CSV's 44. Used when the download holds one split only.
ISIC2024_TRAIN_ONLY = ["target", "lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
                       "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"]
ISIC2024_CATEGORICAL = ["sex", "anatom_site_general", "image_type", "tbp_tile_type", "tbp_lv_location",
                        "tbp_lv_location_simple", "attribution"]
# Identifiers and licence text: not features.
ISIC2024_NOT_FEATURES = ["isic_id", "patient_id", "copyright_license"]


def recognise_file(path: Path) -> bool:
    """Whether ``path`` is one of ISIC 2024's metadata CSVs."""
    return path.name in ("train-metadata.csv", "test-metadata.csv")


def recognise_folder(path: Path) -> bool:
    """Whether ``path`` holds ISIC 2024's train or test metadata CSV."""
    return (path / "train-metadata.csv").is_file() or (path / "test-metadata.csv").is_file()


def read(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    """The train (or ``test``) split of an ISIC 2024 download, grouped by patient (or ``group_col``)."""
    root = path.parent if path.is_file() else path
    split = "test" if test else "train"
    csv = root / f"{split}-metadata.csv"
    df = read_csv(csv, ["isic_id", "patient_id"] + ([] if test else ["target"]), "isic_id")
    other = root / f"{'train' if test else 'test'}-metadata.csv"
    train_cols = csv_header(root / "train-metadata.csv") if (root / "train-metadata.csv").is_file() else list(df.columns)
    test_cols = csv_header(root / "test-metadata.csv") if (root / "test-metadata.csv").is_file() else None
    train_only = ([c for c in train_cols if c not in test_cols] if test_cols is not None
                  else [c for c in ISIC2024_TRAIN_ONLY if c in train_cols])
    skipped: list[dict] = []
    df = _isic2024_images(df, root, split, images, csv, skip_bad, skipped)
    target = np.full(len(df), -1) if test else class_labels(csv, df, "target", ["0", "1"])
    group_by = group_col or "patient_id"
    if group_by not in df.columns:
        raise KitError(f"{csv}: no column {group_by!r} to group folds by")
    group = df[group_by].where(df[group_by].notna(), df["isic_id"])
    features = [c for c in df.columns if c not in train_only and c not in ISIC2024_NOT_FEATURES and c != "path"]
    categorical = [c for c in features if c in ISIC2024_CATEGORICAL or df[c].dtype == object]
    numeric = [c for c in features if c not in categorical]
    others = [read_csv_ids(other, ["isic_id"], usecols=lambda c: c in categorical)] if other.is_file() else []
    table = source_table(df, "isic_id", target, group, numeric, categorical)
    return Source(table, list(CLASSES), "isic2024", "isic_id", numeric, categorical, not test,
                  category_tables([df, *others], categorical), skipped, str(root), train_only, str(csv))


def _isic2024_images(df: pd.DataFrame, root: Path, split: str, images: Path | None, csv: Path, skip_bad: bool,
                     skipped: list[dict]) -> pd.DataFrame:
    """Attach each isic_id's image: a member of {split}-image.hdf5, else {split}-image/image/<isic_id>.jpg."""
    h5 = images if images and images.is_file() else root / f"{split}-image.hdf5"
    if not h5.is_file():
        folders = [images] if images else [root / f"{split}-image" / "image", root / f"{split}-image"]
        return find_images(df, df["isic_id"], folders, csv, skip_bad, skipped, (".jpg", ".jpeg"))
    import h5py

    try:
        with h5py.File(h5, "r") as f:
            keys = set(f.keys())
    except OSError as exc:
        raise KitError(f"{h5}: not a readable HDF5 file ({exc})") from None
    ids = df["isic_id"].astype(str)
    missing = ~ids.isin(keys)
    if missing.any() and not skip_bad:
        raise KitError(f"{csv}: line {csv_line(csv, df, missing)}: isic_id {ids[missing].iloc[0]!r} has no image in {h5.name}")
    unlisted = sorted(keys - set(ids))
    if unlisted:
        raise KitError(f"{h5}: key {unlisted[0]!r} has no row in {csv.name} ({len(unlisted)} such keys)")
    for i in ids[missing]:
        skipped.append({"path": f"{h5}::{i}", "reason": f"listed in {csv.name} but not in {h5.name}"})
    resolved = str(h5.resolve())
    return df.assign(path=[hdf5_member(resolved, i) for i in ids])[~missing]


ISIC2024_TBP = [
    "tbp_lv_A", "tbp_lv_Aext", "tbp_lv_B", "tbp_lv_Bext", "tbp_lv_C", "tbp_lv_Cext", "tbp_lv_H", "tbp_lv_Hext",
    "tbp_lv_L", "tbp_lv_Lext", "tbp_lv_areaMM2", "tbp_lv_area_perim_ratio", "tbp_lv_color_std_mean",
    "tbp_lv_deltaA", "tbp_lv_deltaB", "tbp_lv_deltaL", "tbp_lv_deltaLB", "tbp_lv_deltaLBnorm",
    "tbp_lv_eccentricity", "tbp_lv_minorAxisMM", "tbp_lv_nevi_confidence", "tbp_lv_norm_border",
    "tbp_lv_norm_color", "tbp_lv_perimeterMM", "tbp_lv_radial_color_std_max", "tbp_lv_stdL", "tbp_lv_stdLExt",
    "tbp_lv_symm_2axis", "tbp_lv_symm_2axis_angle", "tbp_lv_x", "tbp_lv_y", "tbp_lv_z",
]
ISIC2024_TEST_COLUMNS = [
    "isic_id", "patient_id", "age_approx", "sex", "anatom_site_general", "clin_size_long_diam_mm", "image_type",
    "tbp_tile_type", *ISIC2024_TBP[:18], "tbp_lv_eccentricity", "tbp_lv_location", "tbp_lv_location_simple",
    *ISIC2024_TBP[19:], "attribution", "copyright_license",
]
ISIC2024_TRAIN_COLUMNS = ISIC2024_TEST_COLUMNS[:2] + ["target"] + ISIC2024_TEST_COLUMNS[2:] + ISIC2024_TRAIN_ONLY[1:]
_ISIC2024_SITES = ["posterior torso", "lower extremity", "anterior torso", "upper extremity", "head/neck"]
_ISIC2024_ATTRIBUTION = ["Memorial Sloan Kettering Cancer Center", "ACEMID MIA", "Department of Dermatology, "
                         "University of Athens", "Frazer Institute, The University of Queensland"]


def _isic2024_rows(rng: np.random.Generator, ids: list[str], n_pos: int, labelled: bool) -> list[dict]:
    """Metadata rows: patients of 3-12 lesions; a malignant lesion is larger and, above all, unlike the
    patient's other lesions in colour (the "ugly duckling" that only shows relative to the patient)."""
    sizes = group_sizes(rng, len(ids), 3, 12)
    starts = np.cumsum([0] + sizes[:-1])
    positives = set(int(starts[g] + rng.integers(sizes[g])) for g in rng.permutation(len(sizes))[:n_pos])
    rows, i = [], 0
    for g, n_img in enumerate(sizes):
        patient = f"IP_{int(rng.integers(1_000_000, 9_999_999)):07d}"
        sex, age = str(rng.choice(["male", "female"])), float(rng.integers(6, 17) * 5)
        hospital, colour = str(rng.choice(_ISIC2024_ATTRIBUTION)), rng.normal(0, 1)
        age = np.nan if rng.random() < 0.15 else age  # some patients' age is unknown: written as the literal NA
        for _ in range(n_img):
            target = int(i in positives)
            tbp = {c: float(np.round(rng.normal(10, 3), 4)) for c in ISIC2024_TBP}
            tbp["tbp_lv_color_std_mean"] = float(np.round(colour + rng.normal(0, 0.3) + 2.5 * target, 4))
            tbp["tbp_lv_areaMM2"] = float(np.round(rng.gamma(2, 4) * (1.6 if target else 1.0), 4))
            row = {"isic_id": ids[i], "patient_id": patient,
                   "age_approx": age,
                   "sex": sex, "anatom_site_general": str(rng.choice(_ISIC2024_SITES)),
                   "clin_size_long_diam_mm": float(np.round(rng.gamma(3, 1.3) * (1.3 if target else 1.0), 2)),
                   "image_type": "TBP tile: close-up", "tbp_tile_type": str(rng.choice(["3D: white", "3D: XP"])),
                   **tbp, "tbp_lv_location": str(rng.choice(["Torso Back Top Third", "Left Leg", "Right Arm"])),
                   "tbp_lv_location_simple": str(rng.choice(["Torso Back", "Left Leg", "Right Arm"])),
                   "attribution": hospital, "copyright_license": "CC-BY"}
            if labelled:
                # planted leaks that exist in train only: a model that used them would look perfect in CV
                diagnosis = "Malignant" if target else "Benign"
                row.update(target=target, lesion_id=f"IL_{int(rng.integers(1e6, 9e6)):07d}" if target else np.nan,
                           iddx_full=diagnosis, iddx_1=diagnosis, iddx_2=np.nan, iddx_3=np.nan, iddx_4=np.nan,
                           iddx_5=np.nan, mel_mitotic_index=np.nan, mel_thick_mm=0.4 if target else np.nan,
                           tbp_lv_dnn_lesion_confidence=float(np.round(rng.uniform(0, 100), 3)))
            rows.append(row)
            i += 1
    return rows


def _isic2024_split(root: Path, rng: np.random.Generator, split: str, rows: list[dict], size: int,
                    overlap: float, image_store: str) -> None:
    import h5py
    import pandas as pd

    columns = ISIC2024_TRAIN_COLUMNS if split == "train" else ISIC2024_TEST_COLUMNS
    pd.DataFrame(rows, columns=columns).to_csv(root / f"{split}-metadata.csv", index=False, na_rep="NA")
    folder = root / f"{split}-image" / "image"
    h5 = h5py.File(root / f"{split}-image.hdf5", "w") if image_store in ("hdf5", "both") else None
    try:
        skins: dict[str, np.ndarray] = {}
        for row in rows:
            side = int(rng.integers(max(24, size * 3 // 4), size * 2))  # tiles of varied sides, as the real ones
            skin = skins.setdefault(row["patient_id"], skin_tone(rng))
            target = int(row.get("target", rng.random() < 0.01))
            jpeg = jpeg_bytes(binary_lesion(rng, side, skin, target, overlap))
            if h5 is not None:
                h5.create_dataset(row["isic_id"], data=np.bytes_(jpeg))  # one scalar of encoded bytes per id
            if image_store in ("jpg", "both"):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{row['isic_id']}.jpg").write_bytes(jpeg)
    finally:
        if h5 is not None:
            h5.close()


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """Write both metadata CSVs, sample_submission.csv and the images (``spec.image_store``: hdf5, jpg or both)."""
    import pandas as pd
    n_train, n_test, size, image_store = spec.n_train, spec.n_test, spec.size, spec.image_store
    overlap = spec.overlap or 0.6
    ids = isic_ids(rng, n_train + n_test)
    train = _isic2024_rows(rng, ids[:n_train], n_positive(n_train), labelled=True)
    _isic2024_split(root, rng, "train", train, size, overlap, image_store)
    test = _isic2024_rows(rng, ids[n_train:], 0, labelled=False) if n_test else []
    _isic2024_split(root, rng, "test", test, size, overlap, image_store)
    pd.DataFrame({"isic_id": [r["isic_id"] for r in test], "target": 0.3}).to_csv(
        root / "sample_submission.csv", index=False)


LAYOUT = Layout("isic2024", read, recognise_file, recognise_folder, train_beside_test=True)
# The code-competition notebook trains nothing on Kaggle: it predicts the hidden test set with a run attached as a
# dataset (no backbone to attach) and stacks on it; its own template in notebooks/build_notebooks.py.
NOTEBOOK = NotebookParams(
    name="isic2024_t4", title="ISIC 2024 submission T4", slug="isic-2024-submission-t4",
    intro="# ISIC 2024 (3D-TBP) on two T4s: the code-competition submission\n\n"
          "Binary, 0.1% positives, scored by the partial AUC above 80% true-positive rate. This is a code "
          "competition: Kaggle reruns this notebook offline on about 500,000 hidden test images, within 12 hours. "
          "The notebook trains nothing there: it predicts the test HDF5 straight from its file (no records "
          "written) with the fold models of a run you trained beforehand (`kit train ... --oversample 0.2 "
          "--epoch-positives 2 --meta`) and attached as a dataset, then stacks gradient-boosted trees on the "
          "metadata and those predictions (`kit stack`), writes `submission.csv` and checks it. "
          "Before the long part it times a sample and stops if the whole rerun would not fit.",
    competition="isic-2024-challenge", datasets=("you/isic2024-run",), models=(), locate="test-metadata.csv",
    batch=128, tta=1,
)
COMPETITION = Competition(
    name="isic2024", title="ISIC 2024 - Skin Cancer Detection with 3D-TBP", download=LAYOUT, classes=CLASSES,
    metric="pauc", secondary=("auc", "top15_sensitivity"), notebook=NOTEBOOK,
    synthesise=synthesise, synth_overlap=True,
)
