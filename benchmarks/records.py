"""Benchmark: `kit records` against the serial tf.io.TFRecordWriter loop of public notebooks.

Both write the same 2,000 synthetic 256 px JPEGs as records of 128 px JPEGs (quality 95):

- kit: ``kit.data.records.write_from_source`` end to end (read the layout, hash for duplicates, assign
  folds, prepare images on every core, write shards, manifest); also on one process, to show how
  much of the gain is the cores and how much the per-image work;
- serial: for each image, ``tf.io.read_file`` + ``decode_jpeg`` + ``tf.image.resize`` +
  ``encode_jpeg`` + ``tf.train.Example`` + ``TFRecordWriter.write``, one image after another.

Both are also timed as whole commands, each in a fresh interpreter, start-up and imports included:
``kit records`` against the same loop as a script (which imports TensorFlow; kit's writer does not).

Prints one JSON line; ``ratios.vs_serial_tfrecordwriter`` is kit's images/s over the loop's (in this
process, imports done), ``ratios.vs_serial_script_whole_command`` the script's seconds over ``kit records``'.
Usage: ``python benchmarks/records.py [--images 2000] [--source-px 256] [--size 128]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tensorflow as tf  # noqa: E402

from kit.data import records, synth  # noqa: E402


def serial_loop(files: list[Path], out: Path, size: int) -> None:
    """The public notebooks' way: one image at a time, TensorFlow ops, one writer."""
    with tf.io.TFRecordWriter(str(out)) as writer:
        for i, f in enumerate(files):
            img = tf.io.decode_jpeg(tf.io.read_file(str(f)), channels=3)
            img = tf.cast(tf.image.resize(img, [size, size]), tf.uint8)
            jpeg = tf.io.encode_jpeg(img, quality=95).numpy()
            writer.write(records.to_example(jpeg, f.stem, target=int(f.parent.name == "Malignant"), fold=i % 5))


# What a user would otherwise run from a terminal: the same loop as a script of its own.
SERIAL_SCRIPT = """
import sys
from pathlib import Path
import tensorflow as tf
src, out, size = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
def feature(v):
    if isinstance(v, bytes):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
with tf.io.TFRecordWriter(out) as writer:
    for i, f in enumerate(sorted(src.glob("train/*/*.jpg"))):
        img = tf.io.decode_jpeg(tf.io.read_file(str(f)), channels=3)
        img = tf.cast(tf.image.resize(img, [size, size]), tf.uint8)
        jpeg = tf.io.encode_jpeg(img, quality=95).numpy()
        example = {"image": feature(jpeg), "image_name": feature(f.stem.encode()),
                   "target": feature(int(f.parent.name == "Malignant")), "fold": feature(i % 5)}
        writer.write(tf.train.Example(features=tf.train.Features(feature=example)).SerializeToString())
"""


def timed_command(cmd: list[str]) -> float:
    """Wall seconds of ``cmd`` in a fresh interpreter, start-up and imports included."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--source-px", type=int, default=256)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root = synth.make_competition("melanoma10k", tmp / "data", n_train=args.images, n_test=0,
                                      size=args.source_px, seed=0)
        files = sorted((root / "train").glob("*/*.jpg"))
        # Warm both paths (TensorFlow kernels, file cache) outside the timings.
        serial_loop(files[:20], tmp / "warm.tfrec", args.size)
        for f in files:
            f.read_bytes()

        t = time.perf_counter()
        serial_loop(files, tmp / "serial.tfrec", args.size)
        serial_s = time.perf_counter() - t

        t = time.perf_counter()
        manifest = records.write_from_source(root, tmp / "kit", layout="folders", size=args.size, n_folds=5,
                                             progress=False)
        kit_s = time.perf_counter() - t
        assert manifest.count == len(files)

        # The same writer on one process: how much comes from the cores, how much from the
        # per-image work (DCT-scaled decode, no TensorFlow op dispatch).
        t = time.perf_counter()
        records.write_from_source(root, tmp / "kit1", layout="folders", size=args.size, n_folds=5, workers=1,
                                  progress=False)
        kit1_s = time.perf_counter() - t

        # Whole commands, as typed in a terminal: interpreter start, imports, the work.
        kit_cmd_s = timed_command([sys.executable, "-m", "kit", "records", str(root), "--out", str(tmp / "kit_cmd"),
                                   "--layout", "folders", "--size", str(args.size), "--folds", "5"])
        serial_cmd_s = timed_command([sys.executable, "-c", SERIAL_SCRIPT, str(root), str(tmp / "serial_cmd.tfrec"),
                                      str(args.size)])

    kit_rate, serial_rate = len(files) / kit_s, len(files) / serial_s
    print(json.dumps({
        "benchmark": "records",
        "images": len(files),
        "source_px": args.source_px,
        "size": args.size,
        "cores": os.cpu_count(),
        "kit_s": round(kit_s, 3),
        "serial_tfrecordwriter_s": round(serial_s, 3),
        "kit_images_per_s": round(kit_rate, 1),
        "kit_one_process_images_per_s": round(len(files) / kit1_s, 1),
        "serial_tfrecordwriter_images_per_s": round(serial_rate, 1),
        "kit_records_command_s": round(kit_cmd_s, 3),
        "serial_script_command_s": round(serial_cmd_s, 3),
        "ratios": {"vs_serial_tfrecordwriter": round(kit_rate / serial_rate, 3),
                   "vs_serial_script_whole_command": round(serial_cmd_s / kit_cmd_s, 3)},
    }))


if __name__ == "__main__":
    main()
