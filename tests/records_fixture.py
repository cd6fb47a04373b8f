"""Small kit records folders written on the fly for pipeline and training tests (kit's schema and shard names)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kit import records


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
) -> dict:
    """Write ``train{NN}-{count}.tfrec`` (one fold per shard) and a manifest.json; returns the manifest."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shards, folds = [], {}
    for k in range(n_folds):
        name = records.shard_name("train", k, per_fold)
        targets = []
        with tf.io.TFRecordWriter(str(folder / name)) as w:
            for i in range(per_fold):
                if n_classes == 2:
                    t = int(rng.random() < positives)
                else:
                    t = int(rng.integers(n_classes))
                targets.append(t)
                img = make_image(rng, size, t, n_classes, signal)
                enc = tf.io.encode_png(img) if fmt == "png" else tf.io.encode_jpeg(img, quality=95)
                numeric = {"age": float(30 + 10 * t + rng.integers(5))} if meta else None
                categorical = {"sex": int(rng.integers(2))} if meta else None
                w.write(records.to_example(enc.numpy(), f"img_{k}_{i:03d}", target=t, fold=k, group=f"g{k}_{i // 2}",
                                           numeric=numeric, categorical=categorical))
        shards.append(name)
        counts = np.bincount(targets, minlength=n_classes).tolist()
        folds[str(k)] = {"images": per_fold, "groups": per_fold // 2, "shards": [name],
                         **({"positives": counts[1]} if n_classes == 2 else {"class_counts": counts})}
    classes = ["benign", "malignant"] if n_classes == 2 else [f"c{i}" for i in range(n_classes)]
    manifest = {
        "layout": "csv", "source": "synthetic", "split": "train", "image_size": size, "classes": classes,
        "n_classes": n_classes, "id_name": "image_name", "labelled": True, "n_folds": n_folds, "fold_seed": seed,
        "folds": folds, "shards": shards, "count": n_folds * per_fold,
        "metadata": {"numeric": ["age"] if meta else [], "categorical": {"sex": ["female", "male"]} if meta else {}},
        "encoding": {"format": fmt}, "skipped": [],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return manifest


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
