"""Small kit records folders written on the fly for pipeline and training tests, through kit's own writer."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.data import imaging, records, sources


def make_image(rng: np.random.Generator, size: int, target: int, n_classes: int, signal: float) -> np.ndarray:
    """A noisy image whose class shows as a coloured square in one of the corners (strength ``signal``)."""
    img = rng.normal(110, 25, size=(size, size, 3))
    if signal:
        q = size // 2
        corner = target % 4
        y, x = (corner // 2) * q, (corner % 2) * q
        channel = target % 3
        img[y:y + q, x:x + q, channel] += signal * 120
    return np.clip(img, 0, 255).astype(np.uint8)


def write_records(
    folder: Path,
    *,
    n_folds: int = 3,
    per_fold: int = 12,
    size: int = 32,
    n_classes: int = 2,
    positives: float = 0.5,
    signal: float = 1.0,
    seed: int = 0,
    meta: bool = False,
    fmt: str = "png",
) -> records.Manifest:
    """Records of planted-signal images, ``per_fold`` per fold (one shard each), written by kit's writer
    (``records.write_encoded``: its serializer, shard writer and manifest); returns the manifest.

    PNG by default: lossless, so the planted square reaches the model exactly as drawn.
    """
    rng = np.random.default_rng(seed)
    rows, images = [], []
    for k in range(n_folds):
        for i in range(per_fold):
            t = int(rng.random() < positives) if n_classes == 2 else int(rng.integers(n_classes))
            img = make_image(rng, size, t, n_classes, signal)
            images.append(_encode(img, fmt))
            row = {"image_name": f"img_{k}_{i:03d}", "target": t, "fold": k, "group": f"g{k}_{i // 2}"}
            if meta:
                row.update(age=float(30 + 10 * t + rng.integers(5)), sex=SEXES[int(rng.integers(2))])
            rows.append(row)
    classes = ["benign", "malignant"] if n_classes == 2 else [f"c{i}" for i in range(n_classes)]
    src = sources.Source(table=pd.DataFrame(rows), classes=classes, layout="csv", id_name="image_name",
                         numeric=["age"] if meta else [], categorical=["sex"] if meta else [],
                         categories={"sex": SEXES} if meta else {}, root="synthetic")
    return records.write_encoded(src, images, folder, size=size, n_folds=n_folds, seed=seed, fmt=fmt)


SEXES = ["female", "male"]


def _encode(img: np.ndarray, fmt: str) -> bytes:
    """``img`` as PNG, or as JPEG at kit's quality."""
    out = io.BytesIO()
    Image.fromarray(img).save(out, format="PNG" if fmt == "png" else "JPEG", quality=imaging.JPEG_QUALITY)
    return out.getvalue()


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rehearsal_records(tmp_path_factory) -> Path:
    """Two folds of 20 learnable 32 px records, shared by the rehearsals of one test module."""
    folder = tmp_path_factory.mktemp("rehearsal")
    write_records(folder, n_folds=2, per_fold=20, size=32, seed=5)
    return folder


def kit_train_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `kit train ARGS` in a fresh process (backend and devices are process-global); assert it succeeded."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **env}
    if "XLA_FLAGS" not in env:
        full_env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-m", "kit", "train", *args], cwd=ROOT, env=full_env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return out
