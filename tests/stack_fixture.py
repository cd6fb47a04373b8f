"""Inputs of ``kit stack`` tests: records from kit's own writer on a synthetic SIIM-ISIC download whose metadata
carries part of the signal, and image "runs" (what ``kit train`` and ``kit predict`` leave behind) written with
controlled signal: part of it visible only relative to the patient's other lesions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from kit.data import records, sources, synth


def siim_source(root: Path, *, n_train: int, n_test: int, seed: int, test: bool = False) -> sources.Source:
    """A synthetic SIIM-ISIC download read by kit.data.sources, with metadata that carries signal.

    Older patients and lesions on the head or neck are more often malignant (train), as in the real data.
    """
    if not (root / "train.csv").exists():
        synth.make_competition("siim", root, n_train=n_train, n_test=n_test, size=16, seed=seed)
    src = sources.load_source(root, layout="siim", test=test)
    if test:
        return src
    t = src.table
    rng = np.random.default_rng(seed)
    sick = t.groupby("group")["target"].transform("max").to_numpy() == 1
    t["age_approx"] = (t["age_approx"] + np.where(sick, 10.0, 0.0)).astype(np.float32)
    pos = t["target"].to_numpy() == 1
    head = pos & (rng.random(len(t)) < 0.45)
    t.loc[head, "anatom_site_general_challenge"] = "head/neck"
    return src


def write_siim_records(root: Path, out: Path, *, n_train: int = 1500, n_test: int = 150, seed: int = 3,
                       leak: bool = False, test: bool = False, blank_test: str | None = None) -> Path:
    """Train (or ``test``) records of the synthetic download; ``leak`` plants a train-only column equal to the target;
    ``blank_test`` empties that metadata column in the test split."""
    src = siim_source(root, n_train=n_train, n_test=n_test, seed=seed, test=test)
    if leak and not test:
        src.table["biopsy_result"] = src.table["target"].astype(np.float32)
        src.numeric = [*src.numeric, "biopsy_result"]
    if blank_test and test:
        src.table[blank_test] = np.float32("nan")
    records.write_from_source(src, out, n_folds=5, size=8, test=test, seed=seed, progress=False, workers=1)
    return out


def image_preds(target: np.ndarray, group: np.ndarray, *, strength: float, patient: float, noise: float,
                seed: int) -> np.ndarray:
    """A binary image model's probabilities: ``strength`` x target, plus a per-patient offset (skin, camera)
    that hides the signal unless read relative to the patient, plus noise."""
    rng = np.random.default_rng(seed)
    codes, uniq = pd.factorize(group)
    offset = np.random.default_rng(7).normal(0.0, patient, len(uniq))  # shared by every run: it is the patient's
    logit = strength * target + offset[codes] + rng.normal(0.0, noise, len(target)) - 2.0
    return 1.0 / (1.0 + np.exp(-logit))


def write_run(run: Path, table: pd.DataFrame, preds: np.ndarray, *, classes: list[str] | None = None,
              fold_column: bool = True, metric: str = "auc") -> Path:
    """The files of a finished ``kit train`` run: oof.csv, cv.json, config.toml, fold{k}/done.json."""
    run.mkdir(parents=True)
    oof = table[["image_name", "target"]].copy()
    if preds.ndim == 1:
        oof["pred"] = preds
    else:
        for i, c in enumerate(classes):
            oof[f"pred_{c}"] = preds[:, i]
    if fold_column:
        oof["fold"] = table["fold"].to_numpy()
    oof.to_csv(run / "oof.csv", index=False)
    from kit.core import metrics

    y = table["target"].to_numpy()
    folds = sorted(table["fold"].unique())
    per = {str(f): metrics.score(metric, y[table["fold"] == f], preds[table["fold"].to_numpy() == f]) for f in folds}
    (run / "cv.json").write_text(json.dumps({"metric": metric, "folds": per, "overall": metrics.score(metric, y, preds),
                                             "fold_mean": float(np.mean(list(per.values())))}))
    (run / "config.toml").write_text('model = "synthetic"\n')
    for f in folds:
        (run / f"fold{f}").mkdir()
        (run / f"fold{f}" / "done.json").write_text(json.dumps({"fold": int(f), "metric": metric, "score": per[str(f)]}))
    return run


def write_submission(path: Path, ids: pd.Series, preds: np.ndarray, columns: list[str], run: Path | None = None) -> Path:
    """A ``kit predict`` submission: the id column, then one column (binary) or one per class; with ``run``, also
    its sidecar NAME.json naming the run (what `kit blend --fit` pairs it by)."""
    frame = pd.DataFrame(np.asarray(preds).reshape(len(ids), -1), columns=columns[1:])
    frame.insert(0, columns[0], ids.to_numpy())
    frame.to_csv(path, index=False)
    if run is not None:
        path.with_suffix(".json").write_text(json.dumps({"submission": str(path), "run": str(run)}))
    return path
