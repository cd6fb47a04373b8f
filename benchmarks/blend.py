"""Benchmark: `kit blend --method rank` against a straightforward pandas loop, same files, same run.

Writes 10 submissions of 1,000,000 rows (SIIM-like ids ``ISIC_%07d``, each file in its own random
row order) to a temporary folder once, then times each side in its own child process, start to
finish (interpreter start, imports, reading, blending, writing the CSV), and reads that child's
peak resident memory from ``os.wait4`` (tracemalloc would miss numpy's and pandas' C allocations).
Prints one JSON line (wall and CPU seconds, peak MiB); ``ratios`` are higher-is-better
(pandas time / kit time, pandas memory / kit memory). The outputs of both sides are compared by id.

    python benchmarks/blend.py [--files 10] [--rows 1000000] [--repeats 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

PANDAS_LOOP = """
import sys
import pandas as pd
paths, out = sys.argv[1:-1], sys.argv[-1]
merged = None
for i, path in enumerate(paths):
    frame = pd.read_csv(path).rename(columns={"target": f"p{i}"})
    merged = frame if merged is None else merged.merge(frame, on="image_name")
cols = [f"p{i}" for i in range(len(paths))]
ranks = merged[cols].rank() / len(merged)
merged["target"] = ranks.mean(axis=1)
merged[["image_name", "target"]].to_csv(out, index=False)
"""

KIT = """
import sys
from kit.cli.app import main
raise SystemExit(main(["blend", *sys.argv[1:-1], "--method", "rank", "--out", sys.argv[-1], "--force"]))
"""


def make_files(folder: Path, n_files: int, rows: int, seed: int = 0) -> list[Path]:
    """Submissions as a user's pandas code writes them: float32 probabilities, own row order each."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"ISIC_{i:07d}" for i in range(rows)], dtype=object)
    paths = []
    for k in range(n_files):
        perm = rng.permutation(rows)
        frame = pd.DataFrame({"image_name": ids[perm], "target": rng.random(rows, dtype=np.float32)})
        path = folder / f"sub{k:02d}.csv"
        frame.to_csv(path, index=False)
        paths.append(path)
    return paths


def run_child(code: str, args: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS MiB, CPU seconds) of ``python -c code args`` in a fresh child process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({proc.returncode}): {err.strip()}")
    peak = usage.ru_maxrss / 1024 if sys.platform != "darwin" else usage.ru_maxrss / 2**20
    return wall, peak, usage.ru_utime + usage.ru_stime


def main() -> None:
    """Generate the files, time both sides, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=2, help="runs per side, alternating; the best time is kept")
    ap.add_argument("--keep", help="folder to generate into and keep (default: a temporary folder)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="kit-blend-bench-") as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        paths = sorted(folder.glob("sub*.csv"))
        if len(paths) != args.files:
            paths = make_files(folder, args.files, args.rows)
        generate_s = time.perf_counter() - t0
        files = [str(p) for p in paths]
        kit_out, pandas_out = str(folder / "kit_blend.csv"), str(folder / "pandas_blend.csv")
        kit_runs, pandas_runs = [], []
        for _ in range(args.repeats):
            kit_runs.append(run_child(KIT, files + [kit_out]))
            pandas_runs.append(run_child(PANDAS_LOOP, files + [pandas_out]))
        a = pd.read_csv(kit_out, dtype={"image_name": str})
        b = pd.read_csv(pandas_out, dtype={"image_name": str})
        both = a.merge(b, on="image_name")
        same_ids = len(both) == len(a) == len(b)
        max_diff = float(np.abs(both["target_x"] - both["target_y"]).max())
        kit_s, kit_mb = min(r[0] for r in kit_runs), max(r[1] for r in kit_runs)
        pd_s, pd_mb = min(r[0] for r in pandas_runs), max(r[1] for r in pandas_runs)
        line = {
            "benchmark": "blend_rank",
            "files": args.files,
            "rows": args.rows,
            "kit_s": round(kit_s, 3),
            "pandas_merge_loop_s": round(pd_s, 3),
            "kit_peak_mib": round(kit_mb, 1),
            "pandas_merge_loop_peak_mib": round(pd_mb, 1),
            "ratios": {
                "vs_pandas_merge_loop": round(pd_s / kit_s, 2),
                "memory_vs_pandas_merge_loop": round(pd_mb / kit_mb, 2),
            },
            # CPU time (user + system, all threads) is less sensitive than wall time to other work
            # sharing the machine; kit reads the next file in a thread, so its CPU can exceed its wall.
            "kit_cpu_s": round(min(r[2] for r in kit_runs), 3),
            "pandas_merge_loop_cpu_s": round(min(r[2] for r in pandas_runs), 3),
            "kit_runs_s": [round(r[0], 3) for r in kit_runs],
            "pandas_runs_s": [round(r[0], 3) for r in pandas_runs],
            "same_ids": same_ids,
            "max_abs_diff": max_diff,
            "generate_s": round(generate_s, 1),
            "cpus": os.cpu_count(),
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
            "pandas": pd.__version__,
            "numpy": np.__version__,
        }
        print(json.dumps(line))


if __name__ == "__main__":
    main()
