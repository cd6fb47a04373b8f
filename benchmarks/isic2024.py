"""Benchmark: ISIC 2024's HDF5 images, kit against what a public notebook writes, on the same synthetic tiles.

Two comparisons in one run, on ``--images`` tiles (default 20,000) of 60-240 px in a ``train-image.hdf5`` and
a ``test-image.hdf5`` (unique bytes each, so duplicate detection does real work):

- records: ``kit records`` from the HDF5 (layout, folds, every core preparing images) against the loop of
  public notebooks (h5py read, PIL decode, resize, JPEG re-encode, ``tf.train.Example``, ``TFRecordWriter``,
  one image after another), both at ``--size`` px;
- predict: ``kit predict`` straight from the download's test HDF5 against the two-step way (write test
  records with ``kit records --test``, then ``kit predict`` on them), with the same tiny model; and the
  images/s of reading and preparing the HDF5 alone (the limit of the direct route). Here the model and
  the image preparation share the same cores, so the CPU seconds of both routes are printed too (their
  ratio bounds the wall-clock one when every core is busy), and both routes are timed once more up to
  the model's input with no model at all: the host's share of the job when the model runs on a GPU.

Prints one JSON line; ``ratios`` are kit's speed over the alternative's (higher is better).
Usage: ``python benchmarks/isic2024.py [--images 20000] [--size 64]``
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import h5py  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image  # noqa: E402

from kit.training import pipeline, train
from kit.ensemble import predict
from kit.data import records, synth  # noqa: E402
from kit.training.config import Config  # noqa: E402


def _tiles(n: int, seed: int) -> list[bytes]:
    """``n`` JPEG tiles of 60-240 px, unique bytes: 64 drawn lesions, each copy given its own comment segment."""
    rng = np.random.default_rng(seed)
    base = []
    for _ in range(64):
        side = int(rng.integers(60, 241))
        img = synth.lesion_image(rng, side, side, synth._skin(rng), synth._BINARY_STYLE[int(rng.random() < 0.2)])
        base.append(synth._jpeg_bytes(img))
    out = []
    for i in range(n):
        jpeg = base[i % len(base)]
        comment = f"tile {i}".encode() + b" " * int(rng.integers(0, 40))  # unique bytes and varied sizes
        out.append(jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:])
    return out


def make_download(root: Path, n: int, n_test: int) -> None:
    """An ISIC 2024-shaped download: the metadata CSVs from kit.data.synth's layout, the tiles in HDF5 files."""
    synth.make_competition("isic2024", root, n_train=40, n_test=4, size=32, seed=0)  # the CSV columns
    train_meta = pd.read_csv(root / "train-metadata.csv")
    test_meta = pd.read_csv(root / "test-metadata.csv")
    rng = np.random.default_rng(1)
    for split, meta, count in (("train", train_meta, n), ("test", test_meta, n_test)):
        rows = meta.sample(count, replace=True, random_state=1).reset_index(drop=True)
        rows["isic_id"] = [f"ISIC_{split[:2].upper()}{i:07d}" for i in range(count)]
        rows["patient_id"] = [f"IP_{i // 20:07d}" for i in range(count)]
        if split == "train":
            rows["target"] = (rng.random(count) < 0.01).astype(int)
        rows.to_csv(root / f"{split}-metadata.csv", index=False, na_rep="NA")
        tiles = _tiles(count, seed=2 if split == "train" else 3)
        with h5py.File(root / f"{split}-image.hdf5", "w") as f:
            for key, jpeg in zip(rows["isic_id"], tiles):
                f.create_dataset(key, data=np.bytes_(jpeg))
        if split == "test":
            pd.DataFrame({"isic_id": rows["isic_id"], "target": 0.5}).to_csv(root / "sample_submission.csv",
                                                                               index=False)


def notebook_loop(h5: Path, meta: Path, out: Path, size: int) -> None:
    """A public notebook's records: h5py read, PIL decode, resize, re-encode, TFRecordWriter, one by one."""
    df = pd.read_csv(meta)
    with h5py.File(h5, "r") as f, tf.io.TFRecordWriter(str(out)) as writer:
        for i, (key, target) in enumerate(zip(df["isic_id"], df["target"])):
            img = Image.open(io.BytesIO(f[key][()])).convert("RGB").resize((size, size), Image.BICUBIC)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=95)
            writer.write(records.to_example(buf.getvalue(), key, target=int(target), fold=i % 5))


def batches(ds) -> int:
    """Iterate a dataset to its end; the number of batches."""
    return sum(1 for _ in ds)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the writer's and the stream's worker processes)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--test-images", type=int, default=0, help="default: the same as --images")
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    n_test = args.test_images or args.images
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = tmp / "isic-2024-challenge"
        make_download(root, args.images, n_test)
        notebook_loop(root / "train-image.hdf5", root / "train-metadata.csv", tmp / "warm.tfrec", args.size)

        t = time.perf_counter()
        notebook_loop(root / "train-image.hdf5", root / "train-metadata.csv", tmp / "loop.tfrec", args.size)
        loop_s = time.perf_counter() - t
        t = time.perf_counter()
        records.write_from_source(root, tmp / "rec", size=args.size, n_folds=5, progress=False)
        kit_records_s = time.perf_counter() - t

        cfg = Config(records=str(tmp / "rec"), out=str(tmp / "run"), model="tiny_cnn", epochs=1, batch=64,
                     folds=(0, 1), verbose=0, strategy="cpu", augment="none")
        train.train_folds(cfg, log=lambda _: None)
        sample = root / "sample_submission.csv"

        t, c = time.perf_counter(), cpu_seconds()
        records.write_from_source(root, tmp / "test", size=args.size, test=True, progress=False)
        write_test_s = time.perf_counter() - t
        predict.predict_run(tmp / "run", tmp / "test", tmp / "two_step.csv", sample_submission=sample, progress=False)
        two_step_s, two_step_cpu = time.perf_counter() - t, cpu_seconds() - c

        t, c = time.perf_counter(), cpu_seconds()
        predict.predict_run(tmp / "run", root, tmp / "direct.csv", sample_submission=sample, progress=False)
        direct_s, direct_cpu = time.perf_counter() - t, cpu_seconds() - c

        # the limit of the direct route: reading and preparing the test HDF5 with nothing predicting
        stream = records.stream_test_split(root, records.read_manifest(tmp / "rec", "train"), columns=[])  # as the run
        t = time.perf_counter()
        read = sum(len(b["image"]) for b in stream.batches())
        read_s = time.perf_counter() - t

        # Both routes up to the model's input, the model left out: what each costs the host when the model
        # runs elsewhere (the rerun's GPUs), where the CPU prepares images and nothing else
        run_cfg = predict.load_run(tmp / "run").config
        t = time.perf_counter()
        batches(pipeline.predict_dataset(records.stream_test_split(root, records.read_manifest(tmp / "rec", "train"),
                                                                   columns=[]), run_cfg))
        inputs_direct_s = time.perf_counter() - t
        t = time.perf_counter()
        records.write_from_source(root, tmp / "test2", size=args.size, test=True, progress=False)
        batches(pipeline.predict_dataset(records.list_shards(tmp / "test2", split="test"), run_cfg))
        inputs_two_step_s = time.perf_counter() - t
        same = pd.read_csv(tmp / "direct.csv")["target"].equals(pd.read_csv(tmp / "two_step.csv")["target"])

    print(json.dumps({
        "benchmark": "isic2024",
        "train_images": args.images,
        "test_images": n_test,
        "size": args.size,
        "cores": os.cpu_count(),
        "kit_records_s": round(kit_records_s, 3),
        "notebook_loop_s": round(loop_s, 3),
        "kit_records_images_per_s": round(args.images / kit_records_s, 1),
        "notebook_loop_images_per_s": round(args.images / loop_s, 1),
        "predict_direct_s": round(direct_s, 3),
        "predict_two_step_s": round(two_step_s, 3),
        "two_step_write_test_records_s": round(write_test_s, 3),  # of which: the records (hashing test and train)
        "two_step_predict_records_s": round(two_step_s - write_test_s, 3),
        # CPU seconds (all processes): with every core busy, as when the model runs on the same CPU, the
        # direct route can be at most two_step_cpu / direct_cpu faster; only spare cores (or a GPU) give more
        "predict_two_step_cpu_s": round(two_step_cpu, 3),
        "predict_direct_cpu_s": round(direct_cpu, 3),
        "hdf5_read_prepare_images_per_s": round(read / read_s, 1),
        "model_inputs_direct_s": round(inputs_direct_s, 3),  # both routes up to the model, no model
        "model_inputs_two_step_s": round(inputs_two_step_s, 3),
        "direct_equals_two_step": bool(same),
        "ratios": {
            "records_vs_notebook_loop": round(loop_s / kit_records_s, 3),
            "predict_direct_vs_records_then_predict": round(two_step_s / direct_s, 3),
            "predict_direct_vs_records_then_predict_cpu_time": round(two_step_cpu / direct_cpu, 3),
            "model_inputs_direct_vs_records_then_read": round(inputs_two_step_s / inputs_direct_s, 3),
        },
    }))


if __name__ == "__main__":
    main()
