"""Rehearsals on CPU, each `kit train` in its own process: the TF route (MirroredStrategy over two logical
CPU devices, DESIGN.md 3b) and a short run that must learn (CV AUC >= 0.9). The JAX route is in
test_train_rehearsal_jax.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from records_fixture import write_records

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("rehearsal")
    write_records(folder, n_folds=2, per_fold=20, size=32, seed=5)
    return folder


def _kit_train(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **env}
    if "XLA_FLAGS" not in env:
        full_env.pop("XLA_FLAGS", None)
    out = subprocess.run([sys.executable, "-m", "kit", "train", *args], cwd=ROOT, env=full_env,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_tf_mirrored_over_two_logical_cpus(recs, tmp_path):
    run = tmp_path / "run"
    out = _kit_train(["--records", str(recs), "--out", str(run), "--model", "tiny_cnn", "--epochs", "1",
                      "--batch", "4", "--folds", "0", "--strategy", "mirrored", "--verbose", "0"],
                     {"KERAS_BACKEND": "tensorflow"})
    assert "chose mirrored: 2 replicas" in out.stdout
    # 20 validation images over a global batch of 8: the padded last batch is trimmed again
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 20 and oof["pred"].between(0, 1).all() and set(oof["fold"]) == {0}
    assert json.loads((run / "cv.json").read_text())["metric"] == "auc"


@pytest.mark.slow
def test_it_learns_a_clear_signal(tmp_path):
    recs = tmp_path / "recs"
    # enough steps (5 epochs of 16) for BatchNorm's moving statistics to settle: the pooled
    # out-of-fold AUC needs the two folds' models calibrated alike, not just each ranking well
    write_records(recs, n_folds=2, per_fold=128, size=32, seed=11)
    config = tmp_path / "short.toml"
    config.write_text('model = "tiny_cnn"\nepochs = 5\nbatch = 8\nlr_start = 0.005\nlr_max = 0.005\n'
                      'lr_ramp_epochs = 1\naugment = "none"\nstrategy = "cpu"\nseed = 3\nverbose = 0\n')
    run = tmp_path / "run"
    _kit_train(["--records", str(recs), "--out", str(run), "--config", str(config)], {"KERAS_BACKEND": "tensorflow"})
    cv = json.loads((run / "cv.json").read_text())
    assert cv["metric"] == "auc" and cv["overall"] >= 0.9, cv
    assert min(cv["folds"].values()) >= 0.9, cv
