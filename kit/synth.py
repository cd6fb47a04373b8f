"""Synthetic competitions: small, deterministic downloads in each competition's exact layout.

``make_competition(layout, root, ...)`` writes a folder that looks like the real Kaggle download
(file names, folder names, CSV columns) of one of the competitions kit serves, filled with small
dermoscopy-like (or, for PCam, histology-like) images whose class is visible to a tiny CNN:

    siim         train.csv (8 columns), test.csv, sample_submission.csv, jpeg/train/*.jpg, jpeg/test/*.jpg
    ham10000     HAM10000_metadata.csv, HAM10000_images_part_1/*.jpg, HAM10000_images_part_2/*.jpg
    pcam         train_labels.csv, train/<hex id>.tif, test/<hex id>.tif, sample_submission.csv
    isic9        Train/<class name>/*.jpg, Test/<class name>/*.jpg (9 class names with spaces)
    melanoma10k  train/{Benign,Malignant}/*.jpg, test/{Benign,Malignant}/*.jpg

Each patient (SIIM) or lesion (HAM10000) has several images that share its skin tone, so a split
that ignores groups leaks. By default each class has one fixed look that a small CNN separates
perfectly; ``overlap > 0`` (binary lesion layouts) draws every image's malignancy cues (asymmetry,
border irregularity, colour variety, size) from class-conditional distributions that overlap, as on
real dermoscopy: some naevi are large and irregular, some melanomas small and round.

``isic9`` plants one byte-identical copy of a training image under a second name, as the real folder
download does. ``write_public_siim_tfrecords`` writes shards in the public SIIM-ISIC TFRecord schema.
Only numpy and Pillow are used (TensorFlow is not imported), so tests and notebooks can make data
quickly.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from kit.imaging import example_bytes, write_tfrecord

LAYOUTS = ("siim", "ham10000", "pcam", "isic9", "melanoma10k", "isic2024")  # the registry's competitions

HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
ISIC9_CLASSES = [
    "actinic keratosis",
    "basal cell carcinoma",
    "dermatofibroma",
    "melanoma",
    "nevus",
    "pigmented benign keratosis",
    "seborrheic keratosis",
    "squamous cell carcinoma",
    "vascular lesion",
]
MELANOMA10K_CLASSES = ["Benign", "Malignant"]

SIIM_TRAIN_COLUMNS = [
    "image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge",
    "diagnosis", "benign_malignant", "target",
]
SIIM_TEST_COLUMNS = ["image_name", "patient_id", "sex", "age_approx", "anatom_site_general_challenge"]
HAM_COLUMNS = ["lesion_id", "image_id", "dx", "dx_type", "age", "sex", "localization"]
SIIM_SITES = ["torso", "lower extremity", "upper extremity", "head/neck", "palms/soles", "oral/genital"]
HAM_SITES = ["back", "lower extremity", "trunk", "upper extremity", "abdomen", "face", "chest", "scalp"]

# Lesion appearance per class: RGB colour, radius as a fraction of the image side, border
# irregularity (amplitude of lobes) and asymmetry (offset of a second blob). The classes differ in
# colour first (what a few-epoch CNN picks up), then size and shape (what a dermatologist looks at).
_BINARY_STYLE = [
    ((200, 150, 110), 0.13, 0.02, 0.00),  # benign: small, round, light tan
    ((35, 25, 60), 0.36, 0.20, 0.10),  # malignant: large, blue-black, lobed, asymmetric
]
_HAM_STYLE = {
    "akiec": ((215, 60, 60), 0.30, 0.10, 0.04),  # red, scaly-edged
    "bcc": ((235, 150, 210), 0.22, 0.05, 0.02),  # pearly pink
    "bkl": ((150, 150, 40), 0.34, 0.06, 0.03),  # olive, large
    "df": ((120, 60, 20), 0.15, 0.02, 0.00),  # brown, small and firm
    "mel": ((30, 20, 60), 0.36, 0.20, 0.10),  # blue-black, large, irregular
    "nv": ((160, 100, 65), 0.26, 0.03, 0.00),  # medium brown, round
    "vasc": ((140, 0, 90), 0.20, 0.04, 0.00),  # purple-red
}
_ISIC9_STYLE = [
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
# Malignancy cues for ``overlap > 0``: each cue's latent value is drawn from N(target, overlap), so the
# benign and malignant means are 0 and 1 and ``overlap`` is the spread in units of that gap. A latent
# value maps linearly onto the cue's range below (0 -> benign end, 1 -> malignant end), clipped a little
# beyond both ends so the tails stay plausible lesions.
_CUE_CLIP = (-0.25, 1.25)
_CUE_RANGES = {
    "asymmetry": (0.0, 0.08),  # offset of a second blob, as a fraction of the side
    "border": (0.02, 0.16),  # amplitude of the lobes
    "colour": (0.0, 0.9),  # colour variety: weight of blue-grey, black and red-brown patches
    "size": (0.15, 0.30),  # radius as a fraction of the side
}
# Base colours by the colour cue: light tan (benign end) to dark brown (malignant end).
_TAN, _DARK_BROWN = np.array([180.0, 120.0, 85.0]), np.array([95.0, 60.0, 45.0])
# Patches that make a lesion multi-coloured (blue-grey veil, black dots, red-brown regression).
_VARIEGATION = np.array([[105.0, 115.0, 145.0], [25.0, 20.0, 25.0], [150.0, 60.0, 45.0]], np.float32)
# HAM10000's real class mix (nv about two thirds), floored so tiny sets still hold every class.
_HAM_WEIGHTS = [0.08, 0.10, 0.13, 0.06, 0.13, 0.42, 0.08]


def make_competition(
    layout: str,
    root: str | Path,
    *,
    n_train: int = 60,
    n_test: int = 20,
    size: int | None = None,
    seed: int = 0,
    overlap: float = 0.0,
    image_store: str = "hdf5",
) -> Path:
    """Write a synthetic competition download of ``layout`` under ``root``; returns ``root``.

    ``size`` is the image side (default 64; 96 for PCam, as the real tiles). HAM10000 images are
    4:3 like the real ones (``size`` high), so writers must resize non-square images. ``overlap``
    (siim and melanoma10k only) is the spread of each malignancy cue around its class mean, in units
    of the gap between the benign and malignant means: 0 keeps one fixed look per class (perfectly
    separable, the same bytes as always), about 0.5-1 makes a small CNN's AUC fall short of 1.
    ``image_store`` (isic2024 only): the images in ``{split}-image.hdf5``, as ``{split}-image/image/*.jpg``
    files, or both, as the real downloads come.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown synthetic layout {layout!r}; known: {', '.join(LAYOUTS)}")
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0. Received: n_train={n_train}, n_test={n_test}")
    if not (overlap >= 0 and np.isfinite(overlap)):
        raise ValueError(f"need a finite overlap >= 0. Received: overlap={overlap}")
    if overlap and layout not in ("siim", "melanoma10k", "isic2024"):
        raise ValueError(f"overlap applies to the binary lesion layouts siim, melanoma10k and isic2024, not {layout!r}")
    if image_store not in ("hdf5", "jpg", "both"):
        raise ValueError(f"image_store must be hdf5, jpg or both. Received: image_store={image_store!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    size = size or (96 if layout == "pcam" else 64)
    rng = np.random.default_rng([seed, LAYOUTS.index(layout)])
    if layout == "isic2024":
        _isic2024(root, rng, n_train, n_test, size, overlap or 0.6, image_store)
    elif layout in ("siim", "melanoma10k"):
        {"siim": _siim, "melanoma10k": _melanoma10k}[layout](root, rng, n_train, n_test, size, overlap)
    else:
        {"ham10000": _ham, "pcam": _pcam, "isic9": _isic9}[layout](root, rng, n_train, n_test, size)
    return root


# --- images --------------------------------------------------------------------------------------


def _skin(rng: np.random.Generator) -> np.ndarray:
    """A skin tone (RGB) from light to medium."""
    t = rng.uniform(0, 0.5)
    light, medium = np.array([238.0, 205.0, 180.0]), np.array([196.0, 150.0, 115.0])
    return light * (1 - t) + medium * t


def lesion_image(
    rng: np.random.Generator,
    height: int,
    width: int,
    skin: np.ndarray,
    style: tuple[tuple[int, int, int], float, float, float],
    variety: float = 0.0,
) -> np.ndarray:
    """A uint8 HxWx3 dermoscopy-like image: one lesion of ``style`` on a ``skin`` background.

    ``variety`` (0..1) blends blue-grey, black and red-brown patches into the lesion (colour variety);
    0 draws nothing extra from ``rng``, so images without it stay as they always were.
    """
    colour, radius, irregular, asym = style
    side = min(height, width)
    # float32 and broadcast 1-D axes throughout: tests and benchmarks make thousands of these.
    y = np.arange(height, dtype=np.float32)[:, None]
    x = np.arange(width, dtype=np.float32)[None, :]
    cy = height / 2 + rng.uniform(-0.08, 0.08) * side
    cx = width / 2 + rng.uniform(-0.08, 0.08) * side
    r = radius * side * rng.uniform(0.85, 1.15)
    theta = np.arctan2(y - cy, x - cx)
    lobes = rng.integers(4, 8)
    rim = r * (1 + irregular * np.sin(lobes * theta + np.float32(rng.uniform(0, 2 * np.pi)))
               + 0.5 * irregular * np.sin((lobes + 3) * theta + np.float32(rng.uniform(0, 2 * np.pi))))
    dist = np.hypot(y - cy, x - cx)
    soft = np.float32(max(1.0, 0.06 * side))
    mask = np.clip((rim - dist) / soft + 0.5, 0, 1)
    if asym > 0:
        a = rng.uniform(0, 2 * np.pi)
        cy2, cx2 = cy + np.sin(a) * asym * 2 * side, cx + np.cos(a) * asym * 2 * side
        dist2 = np.hypot(y - cy2, x - cx2)
        mask = np.maximum(mask, np.clip((np.float32(0.6 * r) - dist2) / soft + 0.5, 0, 1))
    # A darker core, as pigment network concentrates towards the centre.
    core = np.clip(1 - dist / np.float32(max(r, 1.0)), 0, 1)[..., None] * np.float32(0.25)
    lesion = (np.asarray(colour, np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)) * (1 - core)
    if variety > 0:
        lesion = _variegate(rng, lesion, y, x, cy, cx, r, variety)
    shade = 1 + 0.04 * np.sin(x / side * rng.uniform(2, 5) + rng.uniform(0, 6)).astype(np.float32)
    background = skin.astype(np.float32) * shade[..., None]
    m = mask[..., None]
    img = background * (1 - m) + lesion * m
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(5)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    # A hair or two in some images: realistic clutter that says nothing about the class.
    draw = ImageDraw.Draw(pil)
    for _ in range(rng.integers(0, 3)):
        x0, y0, x1, y1 = rng.uniform(0, 1, 4) * [width, height, width, height]
        draw.line([(x0, y0), (x1, y1)], fill=(60, 45, 35), width=max(1, side // 64))
    return np.asarray(pil)


def _variegate(rng: np.random.Generator, lesion: np.ndarray, y: np.ndarray, x: np.ndarray, cy: float,
               cx: float, r: float, variety: float) -> np.ndarray:
    """``lesion`` with three soft patches of the variegation colours, each weighted up to ``variety``."""
    lesion = np.broadcast_to(lesion, (y.shape[0], x.shape[1], 3)).copy()
    for colour in _VARIEGATION[rng.permutation(len(_VARIEGATION))]:
        a, d = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.7) * r
        py, px = cy + np.sin(a) * d, cx + np.cos(a) * d
        sigma = np.float32(rng.uniform(0.25, 0.45) * max(r, 1.0))
        w = np.exp(-((y - py) ** 2 + (x - px) ** 2) / (2 * sigma * sigma))[..., None] * np.float32(variety)
        lesion = lesion * (1 - w) + colour * w
    return lesion


def binary_cue_style(rng: np.random.Generator, target: int, overlap: float) -> tuple[tuple, float]:
    """A lesion style and colour variety whose four malignancy cues are drawn around ``target``'s means."""
    latent = np.clip(rng.normal(float(target), overlap, len(_CUE_RANGES)), *_CUE_CLIP)
    cue = {name: lo + (hi - lo) * float(u) for (name, (lo, hi)), u in zip(_CUE_RANGES.items(), latent)}
    t = float(np.clip(latent[2], 0, 1))  # darker as well as more varied towards the malignant end
    colour = tuple(int(v) for v in _TAN * (1 - t) + _DARK_BROWN * t)
    style = (colour, cue["size"], max(cue["border"], 0.0), max(cue["asymmetry"], 0.0))
    return style, float(np.clip(cue["colour"], 0.0, 1.0))


def _binary_lesion(rng: np.random.Generator, size: int, skin: np.ndarray, target: int, overlap: float) -> np.ndarray:
    """A binary-class lesion: the fixed class look when ``overlap`` is 0, overlapping cues otherwise."""
    if not overlap:
        return lesion_image(rng, size, size, skin, _BINARY_STYLE[target])
    style, variety = binary_cue_style(rng, target, overlap)
    return lesion_image(rng, size, size, skin, style, variety)


def histology_tile(rng: np.random.Generator, size: int, tumour: bool) -> np.ndarray:
    """A uint8 HxWx3 H&E-like tile; tumour cells (large dark nuclei) only in the centre third."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = np.array([236.0, 190.0, 215.0]) * rng.uniform(0.92, 1.05)
    img += rng.normal(0, 6, img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    # Normal tissue everywhere: small, sparse nuclei (the same statistics for both labels).
    for _ in range(int(size * size / 110)):
        x, y = rng.uniform(0, size, 2)
        rad = rng.uniform(0.6, 1.4) * size / 96
        shade = tuple(int(v) for v in rng.uniform([140, 90, 170], [175, 125, 200]))
        draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=shade)
    if tumour:
        lo, hi = size / 3, 2 * size / 3
        for _ in range(int(size * size / 120)):
            x, y = rng.uniform(lo, hi, 2)
            rad = rng.uniform(2.0, 3.2) * size / 96
            shade = tuple(int(v) for v in rng.uniform([30, 5, 60], [60, 25, 95]))
            draw.ellipse([x - rad, y - rad, x + rad, y + rad], fill=shade)
    return np.asarray(pil)


def _save_jpeg(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=92)


def _jpeg_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


# --- ids and groups ------------------------------------------------------------------------------


def _isic_ids(rng: np.random.Generator, n: int, offset: int = 0) -> list[str]:
    """``n`` distinct ISIC_XXXXXXX ids (deterministic)."""
    nums = rng.choice(np.arange(10_000, 9_999_999), size=n, replace=False) + offset
    return [f"ISIC_{int(v) % 10_000_000:07d}" for v in nums]


def _group_sizes(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    """Split ``n`` images into groups of ``lo``..``hi`` images (the last one takes the rest)."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(lo, hi + 1), n - sum(sizes))))
    return sizes


def _n_positive(n: int) -> int:
    """Rare positives, but enough that every fold of a tiny set has some (AUC needs both classes)."""
    return int(min(max(round(0.1 * n), 10), max(1, n // 3)))


# --- layouts -------------------------------------------------------------------------------------


def _siim(root: Path, rng: np.random.Generator, n_train: int, n_test: int, size: int, overlap: float) -> None:
    names = _isic_ids(rng, n_train + n_test)
    rows = []
    sizes = _group_sizes(rng, n_train, 2, 6)
    n_pos = _n_positive(n_train)
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
        skin = _skin(rng)
        for _ in range(n_img):
            target = int(i in pos_idx)
            diagnosis = "melanoma" if target else str(rng.choice(["unknown", "unknown", "nevus", "seborrheic keratosis", "lentigo NOS"]))
            site = str(rng.choice(SIIM_SITES, p=[0.5, 0.25, 0.15, 0.06, 0.02, 0.02]))
            rows.append([names[i], patient, sex, age, site, diagnosis, ["benign", "malignant"][target], target])
            _save_jpeg(_binary_lesion(rng, size, skin, target, overlap), root / "jpeg" / "train" / f"{names[i]}.jpg")
            i += 1
    pd.DataFrame(rows, columns=SIIM_TRAIN_COLUMNS).to_csv(root / "train.csv", index=False)

    test_rows = []
    sizes = _group_sizes(rng, n_test, 2, 6) if n_test else []
    for n_img in sizes:
        patient = f"IP_{int(rng.integers(1_000_000, 9_999_999)):07d}"
        sex, age, skin = str(rng.choice(["male", "female"])), float(rng.integers(6, 17) * 5), _skin(rng)
        for _ in range(n_img):
            target = int(rng.uniform() < 0.15)
            site = str(rng.choice(SIIM_SITES, p=[0.5, 0.25, 0.15, 0.06, 0.02, 0.02]))
            test_rows.append([names[i], patient, sex, age, site])
            _save_jpeg(_binary_lesion(rng, size, skin, target, overlap), root / "jpeg" / "test" / f"{names[i]}.jpg")
            i += 1
    (root / "jpeg" / "test").mkdir(parents=True, exist_ok=True)
    test = pd.DataFrame(test_rows, columns=SIIM_TEST_COLUMNS)
    test.to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image_name": test["image_name"], "target": 0}).to_csv(root / "sample_submission.csv", index=False)


def _class_plan(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    """Class per item: every class at least ``min(2, n // k)`` times, the rest drawn by ``weights``."""
    k = len(weights)
    floor = min(2, n // k)
    plan = list(np.repeat(np.arange(k), floor))
    plan += list(rng.choice(k, size=n - len(plan), p=np.asarray(weights) / sum(weights)))
    return rng.permutation(np.asarray(plan))


def _ham(root: Path, rng: np.random.Generator, n_train: int, n_test: int, size: int) -> None:
    # HAM10000 ships one labelled set (no test split); n_test is not used.
    sizes = _group_sizes(rng, n_train, 1, 4)
    classes = _class_plan(rng, len(sizes), _HAM_WEIGHTS)
    ids = _isic_ids(rng, n_train)
    lesion_nums = rng.choice(np.arange(1, 8000), size=len(sizes), replace=False)
    rows, i = [], 0
    width = size * 4 // 3
    for g, n_img in enumerate(sizes):
        dx = HAM_CLASSES[classes[g]]
        dx_type = "histo" if dx in ("mel", "bcc", "akiec") else str(rng.choice(["follow_up", "consensus", "histo", "confocal"]))
        age, sex = float(rng.integers(4, 17) * 5), str(rng.choice(["male", "female", "unknown"], p=[0.5, 0.45, 0.05]))
        site, skin = str(rng.choice(HAM_SITES)), _skin(rng)
        for _ in range(n_img):
            part = 1 if i < (n_train + 1) // 2 else 2
            _save_jpeg(lesion_image(rng, size, width, skin, _HAM_STYLE[dx]), root / f"HAM10000_images_part_{part}" / f"{ids[i]}.jpg")
            rows.append([f"HAM_{int(lesion_nums[g]):07d}", ids[i], dx, dx_type, age, sex, site])
            i += 1
    # The real metadata file is sorted by lesion, not by image: keep that shape.
    pd.DataFrame(rows, columns=HAM_COLUMNS).to_csv(root / "HAM10000_metadata.csv", index=False)


def _hex_id(rng: np.random.Generator) -> str:
    return hashlib.sha1(rng.bytes(16)).hexdigest()


def _save_tif(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="TIFF")


def _pcam(root: Path, rng: np.random.Generator, n_train: int, n_test: int, size: int) -> None:
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


def _folder_split(root: Path, rng: np.random.Generator, n: int, size: int, classes: list[str], styles: list,
                  names: list[str], overlap: float = 0.0) -> list[Path]:
    plan = _class_plan(rng, n, [1.0] * len(classes))
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for name, k in zip(names, plan):
        path = root / classes[k] / f"{name}.jpg"
        skin = _skin(rng)
        if overlap:
            img = _binary_lesion(rng, size, skin, int(k), overlap)
        else:
            img = lesion_image(rng, size, size, skin, styles[k])
        _save_jpeg(img, path)
        paths.append(path)
    return paths


def _isic9(root: Path, rng: np.random.Generator, n_train: int, n_test: int, size: int) -> None:
    ids = _isic_ids(rng, n_train + n_test)
    train = _folder_split(root / "Train", rng, n_train, size, ISIC9_CLASSES, _ISIC9_STYLE, ids[:n_train])
    _folder_split(root / "Test", rng, n_test, size, ISIC9_CLASSES, _ISIC9_STYLE, ids[n_train:])
    # The real download holds byte-identical copies under new names: plant one so folds must group it.
    if len(train) >= 2:
        src = train[0]
        (src.parent / f"{src.stem}_copy.jpg").write_bytes(src.read_bytes())


def _melanoma10k(root: Path, rng: np.random.Generator, n_train: int, n_test: int, size: int, overlap: float) -> None:
    names = [f"melanoma_{i}" for i in range(n_train + n_test)]
    _folder_split(root / "train", rng, n_train, size, MELANOMA10K_CLASSES, _BINARY_STYLE, names[:n_train], overlap)
    _folder_split(root / "test", rng, n_test, size, MELANOMA10K_CLASSES, _BINARY_STYLE, names[n_train:], overlap)


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
    names = _isic_ids(rng, n_images)
    sizes = _group_sizes(rng, n_images, 2, 5)
    # Deal whole patients to shards, largest shard deficit first.
    shard_of_group = []
    fill = [0] * n_shards
    for n_img in sizes:
        s = int(np.argmin(fill))
        shard_of_group.append(s)
        fill[s] += n_img
    per_shard: list[list[bytes]] = [[] for _ in range(n_shards)]
    n_pos = _n_positive(n_images)
    pos = set(rng.choice(n_images, size=n_pos, replace=False).tolist())
    i = 0
    for g, n_img in enumerate(sizes):
        sex, age, skin = int(rng.integers(0, 2)), int(rng.integers(6, 17) * 5), _skin(rng)
        for _ in range(n_img):
            target = int(i in pos)
            img = lesion_image(rng, size, size, skin, _BINARY_STYLE[target])
            feats: dict[str, bytes | int] = {
                "image": _jpeg_bytes(img),
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


# --- ISIC 2024 (3D-TBP) ------------------------------------------------------------------------------

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
ISIC2024_TRAIN_ONLY = ["lesion_id", "iddx_full", "iddx_1", "iddx_2", "iddx_3", "iddx_4", "iddx_5",
                       "mel_mitotic_index", "mel_thick_mm", "tbp_lv_dnn_lesion_confidence"]
ISIC2024_TRAIN_COLUMNS = ISIC2024_TEST_COLUMNS[:2] + ["target"] + ISIC2024_TEST_COLUMNS[2:] + ISIC2024_TRAIN_ONLY
_ISIC2024_SITES = ["posterior torso", "lower extremity", "anterior torso", "upper extremity", "head/neck"]
_ISIC2024_ATTRIBUTION = ["Memorial Sloan Kettering Cancer Center", "ACEMID MIA", "Department of Dermatology, "
                         "University of Athens", "Frazer Institute, The University of Queensland"]


def _isic2024_rows(rng: np.random.Generator, ids: list[str], n_pos: int, labelled: bool) -> list[dict]:
    """Metadata rows: patients of 3-12 lesions; a malignant lesion is larger and, above all, unlike the
    patient's other lesions in colour (the "ugly duckling" that only shows relative to the patient)."""
    sizes = _group_sizes(rng, len(ids), 3, 12)
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

    columns = ISIC2024_TRAIN_COLUMNS if split == "train" else ISIC2024_TEST_COLUMNS
    pd.DataFrame(rows, columns=columns).to_csv(root / f"{split}-metadata.csv", index=False, na_rep="NA")
    folder = root / f"{split}-image" / "image"
    h5 = h5py.File(root / f"{split}-image.hdf5", "w") if image_store in ("hdf5", "both") else None
    try:
        skins: dict[str, np.ndarray] = {}
        for row in rows:
            side = int(rng.integers(max(24, size * 3 // 4), size * 2))  # tiles of varied sides, as the real ones
            skin = skins.setdefault(row["patient_id"], _skin(rng))
            target = int(row.get("target", rng.random() < 0.01))
            jpeg = _jpeg_bytes(_binary_lesion(rng, side, skin, target, overlap))
            if h5 is not None:
                h5.create_dataset(row["isic_id"], data=np.bytes_(jpeg))  # one scalar of encoded bytes per id
            if image_store in ("jpg", "both"):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{row['isic_id']}.jpg").write_bytes(jpeg)
    finally:
        if h5 is not None:
            h5.close()


def _isic2024(root: Path, rng: np.random.Generator, n_train: int, n_test: int, size: int, overlap: float,
              image_store: str) -> None:
    ids = _isic_ids(rng, n_train + n_test)
    train = _isic2024_rows(rng, ids[:n_train], _n_positive(n_train), labelled=True)
    _isic2024_split(root, rng, "train", train, size, overlap, image_store)
    test = _isic2024_rows(rng, ids[n_train:], 0, labelled=False) if n_test else []
    _isic2024_split(root, rng, "test", test, size, overlap, image_store)
    pd.DataFrame({"isic_id": [r["isic_id"] for r in test], "target": 0.3}).to_csv(
        root / "sample_submission.csv", index=False)

