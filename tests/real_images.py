"""Real images that ship with scikit-learn and scikit-image, written in three download layouts kit reads, with
the test labels kept aside; and the two plain ways a user would otherwise classify them.

- ``digits_folders``: scikit-learn's handwritten digits (8x8, 10 classes) as ``train/<digit>/*.png`` class
  folders and an unlabelled ``test/*.png`` folder: a generic download no competition claims.
- ``digits_siim``: the same digits in SIIM-ISIC's layout (``train.csv``, ``test.csv``, ``jpeg/``,
  ``sample_submission.csv``), several images per patient, target "the digit is an 8" (about 10% positives),
  and metadata columns that carry no signal, as most of a real download's do. Each digit is turned by a
  random angle and mirrored at random, as a lesion is photographed whichever way up: the layout's premise, which
  SIIM-ISIC's augmentation preset is built on.
- ``ihc_pcam``: 96x96 tiles of scikit-image's immunohistochemistry slide in PCam's layout (``train/<hex>.tif``,
  ``train_labels.csv``, ``test/``, ``sample_submission.csv``), labelled as PCam is, by the tile's centre only:
  positive when a stained (DAB) nucleus lies within 12 px of the centre, negative when none lies within 20 px
  (tiles with a nucleus in between are not drawn: a label no one could agree on). The slide is cut into 128 px
  blocks, alternately train and test like a chessboard, and a tile never crosses a block: overlapping tiles
  never leak from train to test.

Each returns a ``RealSet``: where the download is, and the test ids with their labels in the download's
order. ``logistic_regression`` and ``plain_cnn`` are the baselines: scikit-learn on raw pixels, and the
keras-io MNIST convnet trained with ``model.fit`` on the same training images.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


@dataclass
class RealSet:
    """A download written from real images, and what kit must not see: the test labels."""

    root: Path
    test_ids: list[str]
    test_labels: np.ndarray
    classes: list[str]
    metric: str  # how the test predictions are scored: "auc" or "balanced_accuracy"


def _digits(n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    order = np.random.default_rng(seed).permutation(len(d.target))[:n]
    # 0..16 ink levels to 0..255 grey, as a scanner would store them
    return np.round(d.images[order] * (255 / 16)).astype(np.uint8), d.target[order]


def digits_folders(root: Path, *, n: int | None = None, test_share: float = 0.25, seed: int = 0) -> RealSet:
    """Class folders ``train/<digit>/d<i>.png`` and an unlabelled ``test/d<i>.png`` (8x8 grey PNGs)."""
    images, labels = _digits(n, seed)
    n_test = int(len(labels) * test_share)
    ids = [f"d{i:04d}" for i in range(len(labels))]
    for i, (img, y) in enumerate(zip(images, labels)):
        folder = root / "test" if i < n_test else root / "train" / str(y)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").save(folder / f"{ids[i]}.png")
    test_ids = sorted(ids[:n_test])  # kit reads an unlabelled folder in file-name order
    test_labels = np.array([labels[ids.index(i)] for i in test_ids])
    return RealSet(root, test_ids, test_labels, [str(k) for k in range(10)], "balanced_accuracy")


def digits_siim(root: Path, *, n: int | None = None, positive: int = 8, test_share: float = 0.25, size: int = 32,
                seed: int = 0) -> RealSet:
    """SIIM-ISIC's layout around the digits (``size`` px JPEGs, 1 to 6 images per patient); target: digit == positive."""
    rng = np.random.default_rng(seed)
    images, labels = _digits(n, seed)
    target = (labels == positive).astype(int)
    patients, i = [], 0
    while i < len(labels):
        k = int(rng.integers(1, 7))
        patients += [f"IP_{len(set(patients)):05d}"] * k
        i += k
    patients = patients[: len(labels)]
    names = [f"ISIC_{1000000 + i}" for i in range(len(labels))]
    unique = sorted(set(patients))
    test_patients = set(rng.choice(unique, int(len(unique) * test_share), replace=False))
    is_test = np.array([p in test_patients for p in patients])
    sites = ["torso", "lower extremity", "upper extremity", "head/neck"]
    rows = pd.DataFrame({
        "image_name": names, "patient_id": patients,
        "sex": rng.choice(["male", "female"], len(names)), "age_approx": rng.choice(np.arange(20, 90, 5), len(names)),
        "anatom_site_general_challenge": rng.choice(sites, len(names)),
        "diagnosis": np.where(target == 1, "melanoma", "nevus"),
        "benign_malignant": np.where(target == 1, "malignant", "benign"), "target": target,
    })
    for split in ("train", "test"):
        (root / "jpeg" / split).mkdir(parents=True, exist_ok=True)
    for name, img, test in zip(names, images, is_test):
        big = Image.fromarray(img, "L").resize((size, size), Image.NEAREST)
        big = big.rotate(float(rng.uniform(0, 360)), Image.BILINEAR)  # corners fill with the paper's white (0)
        big = (big.transpose(Image.FLIP_LEFT_RIGHT) if rng.integers(2) else big).convert("RGB")
        big.save(root / "jpeg" / ("test" if test else "train") / f"{name}.jpg", quality=95)
    rows[~is_test].to_csv(root / "train.csv", index=False)
    test = rows[is_test]
    test[["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]].to_csv(
        root / "test.csv", index=False)
    pd.DataFrame({"image_name": test["image_name"], "target": 0}).to_csv(root / "sample_submission.csv", index=False)
    return RealSet(root, test["image_name"].tolist(), test["target"].to_numpy(), ["benign", "malignant"], "auc")


def ihc_pcam(root: Path, *, n_train: int = 600, n_test: int = 600, seed: int = 0) -> RealSet:
    """PCam's layout from the immunohistochemistry slide: 96x96 RGB TIFF tiles labelled by a stained nucleus at the centre."""
    from skimage import data
    from skimage.color import rgb2hed
    from skimage.measure import label, regionprops

    rng = np.random.default_rng(seed)
    slide = data.immunohistochemistry()  # 512x512 RGB
    dab = rgb2hed(slide)[..., 2]
    # stained (DAB-positive) nuclei: blobs of at least 20 px above the 85th percentile of the DAB channel
    centres = np.array([p.centroid for p in regionprops(label(dab > np.percentile(dab, 85))) if p.area >= 20])
    blocks = [(by, bx) for by in range(0, 512, 128) for bx in range(0, 512, 128)]
    train_blocks = [b for b in blocks if (b[0] + b[1]) // 128 % 2 == 0]
    test_blocks = [b for b in blocks if (b[0] + b[1]) // 128 % 2 == 1]

    def tiles(n: int, where: list[tuple[int, int]]) -> tuple[list[np.ndarray], np.ndarray]:
        out, labels = [], []
        while len(out) < n:
            by, bx = where[int(rng.integers(len(where)))]
            y, x = by + int(rng.integers(0, 128 - 96 + 1)), bx + int(rng.integers(0, 128 - 96 + 1))
            reach = np.hypot(*(centres - [y + 48, x + 48]).T).min()  # the nearest nucleus to the tile's centre
            if 12 <= reach < 20:
                continue
            positive = reach < 12  # a stained nucleus within 12 px of the centre, or none within 20 px
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))  # slides have no up or down
            tile = np.rot90(slide[y:y + 96, x:x + 96], turns)
            out.append(np.ascontiguousarray(tile[:, ::-1] if flip else tile))
            labels.append(positive)
        return out, np.asarray(labels, int)

    train_tiles, train_label = tiles(n_train, train_blocks)
    test_tiles, test_label = tiles(n_test, test_blocks)
    ids = [f"{int(v):016x}" for v in rng.integers(0, 2**62, n_train + n_test)]
    for split in ("train", "test"):
        (root / split).mkdir(parents=True, exist_ok=True)
    for name, tile in zip(ids, train_tiles + test_tiles):
        split = "train" if name in ids[:n_train] else "test"
        Image.fromarray(tile).save(root / split / f"{name}.tif")
    pd.DataFrame({"id": ids[:n_train], "label": train_label}).to_csv(
        root / "train_labels.csv", index=False)
    pd.DataFrame({"id": ids[n_train:], "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return RealSet(root, ids[n_train:], test_label, ["0", "1"], "auc")


# --- what a user would otherwise do -----------------------------------------------------------------------


def load_split(real: RealSet) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train images uint8 [N,H,W,C], train labels, test images in ``real.test_ids`` order), read from the download."""
    root = real.root
    if (root / "train_labels.csv").is_file():  # PCam
        labels = pd.read_csv(root / "train_labels.csv", dtype={"id": str})
        x = [np.asarray(Image.open(root / "train" / f"{i}.tif").convert("RGB")) for i in labels["id"]]
        test = [np.asarray(Image.open(root / "test" / f"{i}.tif").convert("RGB")) for i in real.test_ids]
        return np.stack(x), labels["label"].to_numpy(), np.stack(test)
    if (root / "train.csv").is_file():  # SIIM
        train = pd.read_csv(root / "train.csv")
        x = [np.asarray(Image.open(root / "jpeg" / "train" / f"{i}.jpg").convert("RGB")) for i in train["image_name"]]
        test = [np.asarray(Image.open(root / "jpeg" / "test" / f"{i}.jpg").convert("RGB")) for i in real.test_ids]
        return np.stack(x), train["target"].to_numpy(), np.stack(test)
    x, y = [], []
    for k, name in enumerate(real.classes):
        for p in sorted((root / "train" / name).glob("*.png")):
            x.append(np.asarray(Image.open(p).convert("RGB")))
            y.append(k)
    test = [np.asarray(Image.open(root / "test" / f"{i}.png").convert("RGB")) for i in real.test_ids]
    return np.stack(x), np.asarray(y), np.stack(test)


def score(real: RealSet, probs: np.ndarray) -> float:
    """The test score of ``probs`` ([N] positive-class or [N, K]) in ``real.test_ids`` order."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    if real.metric == "auc":
        return float(roc_auc_score(real.test_labels, probs if probs.ndim == 1 else probs[:, -1]))
    return float(balanced_accuracy_score(real.test_labels, np.asarray(probs).argmax(1)))


def logistic_regression(real: RealSet) -> tuple[float, float]:
    """(test score, seconds) of a standardised LogisticRegression on the raw pixels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, test = load_split(real)
    t0 = time.perf_counter()
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    model.fit(x.reshape(len(x), -1) / 255.0, y)
    probs = model.predict_proba(test.reshape(len(test), -1) / 255.0)
    seconds = time.perf_counter() - t0
    return score(real, probs[:, 1] if probs.shape[1] == 2 else probs), seconds


def plain_cnn(real: RealSet, *, epochs: int = 15, seed: int = 0) -> tuple[float, float]:
    """(test score, seconds) of keras-io's MNIST convnet (same-padded, to take 8 px digits) trained with
    ``model.fit`` on the training images in memory: Adam, batch 128, 10% held out for validation."""
    import keras

    x, y, test = load_split(real)
    keras.utils.set_random_seed(seed)
    binary = len(real.classes) == 2
    L = keras.layers
    t0 = time.perf_counter()
    model = keras.Sequential([
        keras.Input(x.shape[1:]), L.Rescaling(1 / 255),
        L.Conv2D(32, 3, activation="relu", padding="same"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu", padding="same"), L.MaxPooling2D(2),
        L.Flatten(), L.Dropout(0.5), L.Dense(1 if binary else len(real.classes), activation="sigmoid" if binary else "softmax"),
    ])
    model.compile("adam", "binary_crossentropy" if binary else "sparse_categorical_crossentropy")
    model.fit(x.astype("float32"), y.astype("float32") if binary else y, batch_size=128, epochs=epochs,
              validation_split=0.1, verbose=0)
    probs = model.predict(test.astype("float32"), verbose=0)
    seconds = time.perf_counter() - t0
    return score(real, probs[:, 0] if binary else probs), seconds
