"""Benchmark: `kit stack`'s per-group features against the straightforward pandas way, and the whole `kit stack`
(LightGBM) against `lightgbm.train` alone on the finished feature matrix, on an ISIC-2024-sized table.

The table: 400,000 rows, about 1,000 patients (as ISIC 2024's 401,059 images of 1,042 patients), 40 numeric
metadata columns (5% missing) and 3 image runs' out-of-fold predictions, 0.1% positives, 5 folds.

1. Features: ``kit.ensemble.stack.group_features`` on the 43 columns against, per column, pandas'
   ``groupby().transform("mean")``, ``transform("std", ddof=0)`` and ``groupby().rank(pct=True)`` (the z-score,
   ratio to the mean and rank kit computes; the two outputs are compared). Each side runs in its own child
   process, which loads the table from a .npz file and times only the features; its peak resident memory comes
   from ``os.wait4`` (tracemalloc misses C allocations). ``load_only_peak_mib`` is a child that only loads.
2. Stack: ``kit.ensemble.stack.stack`` (reads the 3 runs' oof.csv, checks them, builds every feature, fits 5 folds x
   (an inner fit with early stopping + a refit), writes the run folder and plots) against the same
   ``lightgbm.train`` calls, same parameters, on the feature matrix kit built (built outside the timing).
   The records' table is handed over in memory (``tables=``): reading 400,000 TFRecords is the records
   reader's cost, not the stack's. kit bins each fold's training rows once and gives every fit of the fold
   a subset of them; the bare fits build each fit's Dataset from its rows, as a user's loop would.

Prints one JSON line; ``ratios`` are higher-is-better (alternative's time / kit's time).

    python benchmarks/stack.py [--rows 400000] [--meta 40] [--runs 3] [--rounds 50] [--folds 5] [--threads 1] [--repeats 2]
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
sys.path.insert(0, str(ROOT))

KIT_FEATURES = """
import sys, time, numpy as np
from kit.ensemble.stack import group_features
d = np.load(sys.argv[1], allow_pickle=False)
x, g = d["values"], d["group"]
t0 = time.perf_counter()
out, names = group_features(x, g, [f"c{j}" for j in range(x.shape[1])])
print(time.perf_counter() - t0)
np.save(sys.argv[2], out)
"""

PANDAS_FEATURES = """
import sys, time, numpy as np, pandas as pd
d = np.load(sys.argv[1], allow_pickle=False)
df = pd.DataFrame(d["values"], columns=[f"c{j}" for j in range(d["values"].shape[1])])
df["patient_id"] = d["group"]
t0 = time.perf_counter()
out = {"group_size": df.groupby("patient_id")["patient_id"].transform("size")}
for c in df.columns[:-1]:
    mean = df.groupby("patient_id")[c].transform("mean")
    std = df.groupby("patient_id")[c].transform("std", ddof=0)
    out[c + "__z"] = ((df[c] - mean) / std).where(std > 0, 0.0).where(df[c].notna())
    out[c + "__ratio"] = (df[c] / mean).where(mean != 0)
    out[c + "__rank"] = df.groupby("patient_id")[c].rank(pct=True)
feats = pd.DataFrame(out)
print(time.perf_counter() - t0)
np.save(sys.argv[2], feats.to_numpy(np.float64))
"""

LOAD_ONLY = """
import sys, numpy as np, pandas as pd
d = np.load(sys.argv[1], allow_pickle=False)
x, g = d["values"], d["group"]
print(0.0)
np.save(sys.argv[2], x[:1])
"""


def make_table(rows: int, n_meta: int, n_runs: int, n_folds: int, seed: int = 0) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """The records' table (image_name, target, fold, group, metadata) and each run's OOF predictions."""
    rng = np.random.default_rng(seed)
    n_patients = max(1, rows // 385)
    patient = np.sort(rng.integers(0, n_patients, rows))
    y = (rng.random(rows) < 0.001).astype(np.int64)
    pfold = rng.integers(0, n_folds, n_patients)  # folds never split a patient
    table = pd.DataFrame({"image_name": [f"ISIC_{i:07d}" for i in range(rows)], "target": y,
                          "fold": pfold[patient], "group": [f"IP_{p:07d}" for p in patient]})
    offset = rng.normal(0, 1, n_patients)[patient]
    for j in range(n_meta):
        v = rng.normal(0, 1, rows) + (0.3 * y if j < 5 else 0) + (0.5 * offset if j % 3 == 0 else 0)
        v[rng.random(rows) < 0.05] = np.nan
        table[f"m{j:02d}"] = v
    preds = [1 / (1 + np.exp(-(2 * y + offset + rng.normal(0, 1, rows) - 4))) for _ in range(n_runs)]
    return table, preds


def write_run(run: Path, table: pd.DataFrame, pred: np.ndarray) -> None:
    """What `kit train` leaves: oof.csv, cv.json, fold{k}/done.json."""
    run.mkdir(parents=True)
    pd.DataFrame({"image_name": table["image_name"], "target": table["target"], "pred": pred,
                  "fold": table["fold"]}).to_csv(run / "oof.csv", index=False)
    (run / "cv.json").write_text(json.dumps({"metric": "auc"}))
    for f in sorted(table["fold"].unique()):
        (run / f"fold{f}").mkdir()
        (run / f"fold{f}" / "done.json").write_text(json.dumps({"fold": int(f)}))


def run_child(code: str, args: list[str]) -> tuple[float, float]:
    """(seconds the child reports, peak RSS MiB) of ``python -c code args`` in a fresh child process."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child failed: {err.strip()[-2000:]}")
    return float(out.strip().splitlines()[-1]), usage.ru_maxrss / 1024


def bare_fits(X: pd.DataFrame, y: np.ndarray, folds: np.ndarray, cfg) -> float:
    """The fits kit stack makes, as lightgbm.train calls on the finished matrix; returns seconds."""
    import lightgbm as lgb

    params = {"objective": "binary", "learning_rate": cfg.learning_rate, "num_leaves": cfg.num_leaves,
              "min_child_samples": cfg.min_child_samples, "feature_fraction": cfg.colsample,
              "bagging_fraction": cfg.subsample, "bagging_freq": 1, "seed": cfg.seed, "deterministic": True,
              "force_col_wise": True, "verbosity": -1, "num_threads": cfg.threads or os.cpu_count(), "metric": "auc"}
    t0 = time.perf_counter()
    order = sorted(np.unique(folds).tolist())
    for k in order:
        others = [f for f in order if f != k]
        inner = next((f for f in others if f > k), others[0])
        fit, stop, full = (folds != k) & (folds != inner), folds == inner, folds != k
        dfit = lgb.Dataset(X[fit], y[fit])
        model = lgb.train({**params, "seed": cfg.seed + k}, dfit, cfg.rounds,
                          valid_sets=[lgb.Dataset(X[stop], y[stop], reference=dfit)],
                          callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
        refit = lgb.train({**params, "seed": cfg.seed + k}, lgb.Dataset(X[full], y[full]),
                          max(1, model.best_iteration or cfg.rounds))
        refit.predict(X[folds == k])
    return time.perf_counter() - t0


def main() -> None:
    """Build the table, time both comparisons, print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--meta", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=2, help="runs of each feature builder (best time kept)")
    ap.add_argument("--threads", type=int, default=1,
                    help="LightGBM threads, both sides (default 1: OpenMP threads spin badly on a shared machine)")
    args = ap.parse_args()
    from kit.data import records
    from kit.ensemble import stack

    with tempfile.TemporaryDirectory(prefix="kit-stack-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        table, preds = make_table(args.rows, args.meta, args.runs, args.folds)
        values = np.column_stack([table[[c for c in table.columns if c.startswith("m")]].to_numpy(), *preds])
        np.savez(tmp / "table.npz", values=values, group=table["group"].to_numpy().astype(str))
        runs = []
        for i, p in enumerate(preds):
            write_run(tmp / f"run{i}", table, p)
            runs.append(str(tmp / f"run{i}"))
        generate_s = time.perf_counter() - t0

        kit_runs, pd_runs = [], []
        for _ in range(args.repeats):  # alternating, the best time kept: the machine may be shared
            kit_runs.append(run_child(KIT_FEATURES, [str(tmp / "table.npz"), str(tmp / "kit.npy")]))
            pd_runs.append(run_child(PANDAS_FEATURES, [str(tmp / "table.npz"), str(tmp / "pd.npy")]))
        kit_s, kit_mb = min(r[0] for r in kit_runs), max(r[1] for r in kit_runs)
        pd_s, pd_mb = min(r[0] for r in pd_runs), max(r[1] for r in pd_runs)
        _, load_mb = run_child(LOAD_ONLY, [str(tmp / "table.npz"), str(tmp / "load.npy")])
        a, b = np.load(tmp / "kit.npy"), np.load(tmp / "pd.npy")
        same = bool(np.allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True))

        numeric = tuple(c for c in table.columns if c.startswith("m"))
        # a table without images or shards: the stack reads only the classes, the id and the metadata columns
        manifest = records.Manifest(image_size=0, shards=(), classes=("benign", "malignant"), id_name="isic_id",
                                    metadata=records.MetadataColumns(numeric))
        cfg = stack.StackConfig(records="(in memory)", runs=tuple(runs), out=str(tmp / "stack"), rounds=args.rounds,
                                early_stopping=20, learning_rate=0.1, subsample=0.8, threads=args.threads)
        t0 = time.perf_counter()
        res = stack.stack(cfg, log=lambda _: None, tables=(table, manifest, None, None))
        stack_s = time.perf_counter() - t0

        feats = stack.build_features(table, None, list(numeric), [],
                                     {f"run{i}_pred": (p, None) for i, p in enumerate(preds)})
        X = feats.train[res.features]
        bare_s = bare_fits(X, table["target"].to_numpy(), table["fold"].to_numpy(), cfg)

        line = {
            "benchmark": "stack",
            "rows": args.rows, "metadata_columns": args.meta, "image_runs": args.runs, "folds": args.folds,
            "features": len(res.features), "rounds": args.rounds, "threads": args.threads,
            "kit_features_s": round(kit_s, 3), "pandas_transform_features_s": round(pd_s, 3),
            "kit_features_runs_s": [round(r[0], 3) for r in kit_runs],
            "pandas_features_runs_s": [round(r[0], 3) for r in pd_runs],
            "kit_features_peak_mib": round(kit_mb, 1), "pandas_transform_features_peak_mib": round(pd_mb, 1),
            "load_only_peak_mib": round(load_mb, 1), "features_equal": same,
            "kit_stack_s": round(stack_s, 2), "lightgbm_train_alone_s": round(bare_s, 2),
            "kit_stack_overhead": round(stack_s / bare_s, 3), "stack_oof_auc": round(res.scores[-1], 4),
            "ratios": {
                "vs_pandas_transform": round(pd_s / kit_s, 2),
                "memory_vs_pandas_transform": round(pd_mb / kit_mb, 2),
                "vs_lightgbm_train_alone": round(bare_s / stack_s, 3),
            },
            "generate_s": round(generate_s, 1), "cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
            "python": platform.python_version(), "pandas": pd.__version__, "numpy": np.__version__,
        }
        import lightgbm

        line["lightgbm"] = lightgbm.__version__
        print(json.dumps(line))


if __name__ == "__main__":
    main()
