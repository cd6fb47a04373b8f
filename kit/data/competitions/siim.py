"""SIIM-ISIC Melanoma Classification 2020: binary melanoma detection scored by ROC AUC, folds grouped by patient.

Download: ``train.csv`` (image_name, patient_id, sex, age_approx, anatom_site_general_challenge, diagnosis,
benign_malignant, target), ``test.csv`` (the first five), ``sample_submission.csv``, ``jpeg/train/*.jpg``,
``jpeg/test/*.jpg``. Also the public TFRecords in its schema (``write_public_siim_tfrecords``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kit.data.competitions._base import Competition, Layout, NotebookParams
from kit.data.competitions._draw import (BINARY_STYLE, SynthSpec, binary_lesion, group_sizes, isic_ids, jpeg_bytes,
                                    lesion_image, n_positive, save_jpeg, skin_tone)
from kit.data.competitions._read import (Source, category_tables, class_labels, csv_header, find_images, read_csv,
                                    read_csv_ids, source_table)
from kit.data.imaging import example_bytes, write_tfrecord

CLASSES = ("benign", "malignant")
SIIM_TRAIN_REQUIRED = ["image_name", "patient_id", "target"]
SIIM_TEST_REQUIRED = ["image_name", "patient_id"]
# Columns that restate the label (diagnosis, benign_malignant, dx_type) never become model inputs.
SIIM_NUMERIC, SIIM_CATEGORICAL = ["age_approx"], ["sex", "anatom_site_general_challenge"]
SIIM_TRAIN_COLUMNS = [
    "image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
    "diagnosis", "benign_malignant", "target",
]
SIIM_TEST_COLUMNS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]
SIIM_SITES = ["torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital"]


def _has_siim_columns(csv: Path) -> bool:
    return {"image_name", "patient_id"} <= set(csv_header(csv))


def recognise_file(path: Path) -> bool:
    """Whether ``path`` is a SIIM CSV: any CSV with image_name and patient_id columns."""
    return path.name.lower().endswith(".csv") and _has_siim_columns(path)


def recognise_folder(path: Path) -> bool:
    """Whether ``path`` holds a SIIM train.csv or test.csv."""
    return any((path / name).is_file() and _has_siim_columns(path / name) for name in ("train.csv", "test.csv"))


def read(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    """The train (or ``test``) split of a SIIM download: one row per JPEG, grouped by patient."""
    root = path.parent if path.is_file() else path
    train_csv, test_csv = root / "train.csv", root / "test.csv"
    csv = path if path.is_file() else (test_csv if test else train_csv)
    labelled = not test
    df = read_csv(csv, SIIM_TEST_REQUIRED if test else SIIM_TRAIN_REQUIRED, "image_name")
    folders = [images] if images else [root / "jpeg" / ("test" if test else "train"), root / ("test" if test else "train")]
    skipped: list[dict] = []
    df = find_images(df, df["image_name"], folders, csv, skip_bad, skipped)
    target = class_labels(csv, df, "target", ["0", "1"]) if labelled else np.full(len(df), -1)
    # A missing patient_id must not merge strangers into one group: the image is its own group.
    group = df["patient_id"].where(df["patient_id"].notna(), df["image_name"])
    numeric = [c for c in SIIM_NUMERIC if c in df.columns]
    categorical = [c for c in SIIM_CATEGORICAL if c in df.columns]
    others = [read_csv_ids(f, ["image_name"]) for f in (train_csv, test_csv) if f.is_file() and f != csv]
    table = source_table(df, "image_name", target, group, numeric, categorical)
    return Source(table, list(CLASSES), "siim", "image_name", numeric, categorical, labelled,
                  category_tables([df, *others], categorical), skipped, str(root), table_file=str(csv))


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """Write train.csv (8 columns), test.csv, sample_submission.csv, jpeg/train/*.jpg and jpeg/test/*.jpg."""
    import pandas as pd
    n_train, n_test, size, overlap = spec.n_train, spec.n_test, spec.size, spec.overlap
    names = isic_ids(rng, n_train + n_test)
    rows = []
    sizes = group_sizes(rng, n_train, 2, 6)
    n_pos = n_positive(n_train)
    # Positives go to distinct patients first (a melanoma is usually one lesion among a patient's
    # many benign ones), so stratified group folds can spread them.
    starts = np.cumsum([0] + sizes[:-1])
    order = rng.permutation(len(sizes))
    pos_idx: set[int] = set()
    while len(pos_idx) < n_pos:
        for g in order:
            if len(pos_idx) >= n_pos:
                break
            free = [starts[g] + k for k in range(sizes[g]) if starts[g] + k not in pos_idx]
            if free:
                pos_idx.add(int(rng.choice(free)))
    i = 0
    for g, n_img in enumerate(sizes):
        patient = f"IP_{int(rng.integers(1_000_000, 9_999_999)):07d}"
        sex = str(rng.choice(["male", "female"]))
        age = float(rng.integers(6, 17) * 5)
        skin = skin_tone(rng)
        for _ in range(n_img):
            target = int(i in pos_idx)
            diagnosis = "melanoma" if target else str(rng.choice(["unknown", "unknown", "nevus", "seborrheic keratosis", "lentigo NOS"]))
            site = str(rng.choice(SIIM_SITES, p=[0.5, 0.25, 0.15, 0.06, 0.02, 0.02]))
            rows.append([names[i], patient, sex, age, site, diagnosis, CLASSES[target], target])
            save_jpeg(binary_lesion(rng, size, skin, target, overlap), root / "jpeg" / "train" / f"{names[i]}.jpg")
            i += 1
    pd.DataFrame(rows, columns=SIIM_TRAIN_COLUMNS).to_csv(root / "train.csv", index=False)

    test_rows = []
    sizes = group_sizes(rng, n_test, 2, 6) if n_test else []
    for n_img in sizes:
        patient = f"IP_{int(rng.integers(1_000_000, 9_999_999)):07d}"
        sex, age, skin = str(rng.choice(["male", "female"])), float(rng.integers(6, 17) * 5), skin_tone(rng)
        for _ in range(n_img):
            target = int(rng.uniform() < 0.15)
            site = str(rng.choice(SIIM_SITES, p=[0.5, 0.25, 0.15, 0.06, 0.02, 0.02]))
            test_rows.append([names[i], patient, sex, age, site])
            save_jpeg(binary_lesion(rng, size, skin, target, overlap), root / "jpeg" / "test" / f"{names[i]}.jpg")
            i += 1
    (root / "jpeg" / "test").mkdir(parents=True, exist_ok=True)
    test = pd.DataFrame(test_rows, columns=SIIM_TEST_COLUMNS)
    test.to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image_name": test["image_name"], "target": 0}).to_csv(root / "sample_submission.csv", index=False)


# --- public SIIM-ISIC TFRecords ------------------------------------------------------------------

# Field types of the public SIIM-ISIC TFRecords (the "triple stratified" 2020 sets): metadata is
# label-encoded to int64; there is no fold field, the shard number is the fold.
PUBLIC_SIIM_FIELDS = {
    "image": "bytes",
    "image_name": "bytes",
    "patient_id": "int64",
    "sex": "int64",
    "age_approx": "int64",
    "anatom_site_general_challenge": "int64",
    "diagnosis": "int64",
    "target": "int64",
}


def write_public_siim_tfrecords(
    folder: str | Path,
    *,
    n_images: int = 60,
    n_shards: int = 3,
    size: int = 64,
    seed: int = 0,
    split: str = "train",
) -> list[Path]:
    """Write ``n_shards`` shards named like the public SIIM-ISIC set (``train00-20.tfrec``); returns them.

    Train shards carry the public schema's eight fields; ``split="test"`` writes the public test
    schema (no ``target`` or ``diagnosis``). Patients never span two shards (the shard is the fold).
    """
    if n_shards < 1 or n_images < n_shards:
        raise ValueError(f"need 1 <= n_shards <= n_images. Received: n_shards={n_shards}, n_images={n_images}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 99])
    names = isic_ids(rng, n_images)
    sizes = group_sizes(rng, n_images, 2, 5)
    # Deal whole patients to shards, largest shard deficit first.
    shard_of_group = []
    fill = [0] * n_shards
    for n_img in sizes:
        s = int(np.argmin(fill))
        shard_of_group.append(s)
        fill[s] += n_img
    per_shard: list[list[bytes]] = [[] for _ in range(n_shards)]
    n_pos = n_positive(n_images)
    pos = set(rng.choice(n_images, size=n_pos, replace=False).tolist())
    i = 0
    for g, n_img in enumerate(sizes):
        sex, age, skin = int(rng.integers(0, 2)), int(rng.integers(6, 17) * 5), skin_tone(rng)
        for _ in range(n_img):
            target = int(i in pos)
            img = lesion_image(rng, size, size, skin, BINARY_STYLE[target])
            feats: dict[str, bytes | int] = {
                "image": jpeg_bytes(img),
                "image_name": names[i].encode(),
                "patient_id": g,
                "sex": sex,
                "age_approx": age,
                "anatom_site_general_challenge": int(rng.integers(0, len(SIIM_SITES))),
            }
            if split == "train":
                feats["diagnosis"] = 4 if target else int(rng.integers(0, 4))
                feats["target"] = target
            per_shard[shard_of_group[g]].append(example_bytes(feats))
            i += 1
    paths = []
    for s, recs in enumerate(per_shard):
        path = folder / f"{split}{s:02d}-{len(recs)}.tfrec"
        write_tfrecord(path, recs)
        paths.append(path)
    return paths


LAYOUT = Layout("siim", read, recognise_file, recognise_folder, train_beside_test=True)
NOTEBOOK = NotebookParams(
    name="siim_isic_tpu", title="SIIM-ISIC Melanoma TPU", slug="siim-isic-melanoma-tpu", accelerator="tpu",
    intro="# SIIM-ISIC Melanoma Classification on a TPU v5e-8\n\n"
          "Binary melanoma detection scored by ROC AUC. On Kaggle the notebook trains on the public "
          "SIIM-ISIC TFRecords (`cdeotte/melanoma-256x256`: folds already grouped by patient, fold = shard "
          "number); locally it writes kit's own records from the competition download.\n\n"
          "Kaggle's TPU VM ships tensorflow-cpu: `notebook_paths()` sees `ISTPUVM=1` and starts Keras on JAX, "
          "which trains over the 8 TPU cores (tf.data still feeds them from the host).",
    # the public TFRecords are 256 px: the image size must stay 256 to train on them
    competition="siim-isic-melanoma-classification", datasets=("cdeotte/melanoma-256x256",), locate="train.csv",
    size=256, folds=5, epochs=12, batch=32, tta=8,
)
COMPETITION = Competition(
    name="siim", title="SIIM-ISIC Melanoma Classification 2020", download=LAYOUT,
    classes=CLASSES, metric="auc", notebook=NOTEBOOK,
    # 10,982 test images, 30% on the public leaderboard
    leaderboard=(3295, 7687), synthesise=synthesise, synth_overlap=True,
)
