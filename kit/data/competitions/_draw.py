"""The drawing toolkit every competition's generator uses: dermoscopy-like lesions, H&E-like tiles, ids,
patient groups, class plans and image files, all deterministic from one ``numpy`` generator.

By default each class has one fixed look that a small CNN separates perfectly; ``overlap > 0`` (binary
lesion competitions) draws every image's malignancy cues (asymmetry, border irregularity, colour variety,
size) from class-conditional distributions that overlap, as on real dermoscopy. Only numpy and Pillow are
used (TensorFlow is not imported); nothing here knows a competition's files.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


@dataclass(frozen=True)
class SynthSpec:
    """What a synthetic download is asked for: image counts, image side, class overlap and image store."""

    n_train: int
    n_test: int
    size: int
    overlap: float = 0.0
    image_store: str = "hdf5"


# Lesion appearance per class: RGB colour, radius as a fraction of the image side, border
# irregularity (amplitude of lobes) and asymmetry (offset of a second blob). The classes differ in
# colour first (what a few-epoch CNN picks up), then size and shape (what a dermatologist looks at).
BINARY_STYLE = [
    ((200, 150, 110), 0.13, 0.02, 0.00),  # benign: small, round, light tan
    ((35, 25, 60), 0.36, 0.20, 0.10),  # malignant: large, blue-black, lobed, asymmetric
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


def skin_tone(rng: np.random.Generator) -> np.ndarray:
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


def binary_lesion(rng: np.random.Generator, size: int, skin: np.ndarray, target: int, overlap: float) -> np.ndarray:
    """A binary-class lesion: the fixed class look when ``overlap`` is 0, overlapping cues otherwise."""
    if not overlap:
        return lesion_image(rng, size, size, skin, BINARY_STYLE[target])
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


def save_jpeg(img: np.ndarray, path: Path) -> None:
    """Write ``img`` as a JPEG (quality 92) at ``path``, making its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path, format="JPEG", quality=92)


def jpeg_bytes(img: np.ndarray) -> bytes:
    """``img`` encoded as a JPEG (quality 92)."""
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


# --- ids and groups ------------------------------------------------------------------------------


def isic_ids(rng: np.random.Generator, n: int, offset: int = 0) -> list[str]:
    """``n`` distinct ISIC_XXXXXXX ids (deterministic)."""
    nums = rng.choice(np.arange(10_000, 9_999_999), size=n, replace=False) + offset
    return [f"ISIC_{int(v) % 10_000_000:07d}" for v in nums]


def group_sizes(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[int]:
    """Split ``n`` images into groups of ``lo``..``hi`` images (the last one takes the rest)."""
    sizes: list[int] = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(lo, hi + 1), n - sum(sizes))))
    return sizes


def n_positive(n: int) -> int:
    """Rare positives, but enough that every fold of a tiny set has some (AUC needs both classes)."""
    return int(min(max(round(0.1 * n), 10), max(1, n // 3)))


def class_plan(rng: np.random.Generator, n: int, weights: list[float]) -> np.ndarray:
    """Class per item: every class at least ``min(2, n // k)`` times, the rest drawn by ``weights``."""
    k = len(weights)
    floor = min(2, n // k)
    plan = list(np.repeat(np.arange(k), floor))
    plan += list(rng.choice(k, size=n - len(plan), p=np.asarray(weights) / sum(weights)))
    return rng.permutation(np.asarray(plan))


def folder_split(root: Path, rng: np.random.Generator, n: int, size: int, classes: list[str], styles: list,
                 names: list[str], overlap: float = 0.0) -> list[Path]:
    """Write ``root/<class>/<name>.jpg`` for ``names`` (classes planned evenly); returns the paths in order."""
    plan = class_plan(rng, n, [1.0] * len(classes))
    paths = []
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
    for name, k in zip(names, plan):
        path = root / classes[k] / f"{name}.jpg"
        skin = skin_tone(rng)
        if overlap:
            img = binary_lesion(rng, size, skin, int(k), overlap)
        else:
            img = lesion_image(rng, size, size, skin, styles[k])
        save_jpeg(img, path)
        paths.append(path)
    return paths
