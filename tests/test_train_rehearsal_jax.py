"""Rehearsal of the TPU v5e-8 route on CPU (DESIGN.md 3b): `kit train` in its own process with Keras on JAX,
XLA_FLAGS=--xla_force_host_platform_device_count=8, DataParallel over the 8 devices, mixed_bfloat16."""

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
def test_jax_data_parallel_over_eight_devices_bfloat16(recs, tmp_path):
    run = tmp_path / "run"
    out = _kit_train(["--records", str(recs), "--out", str(run), "--model", "tiny_cnn", "--epochs", "1",
                      "--batch", "2", "--folds", "1", "--strategy", "tpu", "--verbose", "0"],
                     # the last two flags only make XLA's CPU compiles cheaper; the computation is the same
                     {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                      "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
                                   "--xla_llvm_disable_expensive_passes=true"})
    assert "chose tpu-jax: 8 replicas, mixed_bfloat16, Keras on jax" in out.stdout
    # 20 validation images over a global batch of 16: the padded last batch is trimmed again
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 20 and oof["pred"].between(0, 1).all() and set(oof["fold"]) == {1}
    assert oof["image_name"].tolist() == [f"img_1_{i:03d}" for i in range(20)]
