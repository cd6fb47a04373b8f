"""The TPU v5e-8 route exactly as a Kaggle TPU kernel starts it, rehearsed on CPU: `kit train` from the
command line with ISTPUVM=1, no KERAS_BACKEND set by hand and 8 host devices; binary and multi-class."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pandas as pd
import pytest

from records_fixture import ROOT, write_records

# What Kaggle's TPU image sets (ISTPUVM) plus the 8 devices of a v5e-8; the last two XLA flags only make
# XLA's CPU compiles cheaper (the computation is the same).
KERNEL_ENV = {"ISTPUVM": "1",
              "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
                           "--xla_llvm_disable_expensive_passes=true"}
CHOSE = "found TPU VM (ISTPUVM=1), 8 JAX cpu devices; chose tpu-jax: 8 replicas, mixed_bfloat16, Keras on jax"


def _kernel_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("KERAS_BACKEND", "TF_CPP_MIN_LOG_LEVEL", "JAX_PLATFORMS", "KIT_VERBOSE")}
    return {**env, **KERNEL_ENV, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_kit_train_on_a_tpu_vm_binary_and_multiclass(tmp_path):
    cases = {"binary": (2, "auc", ["pred"]), "multiclass": (3, "balanced_accuracy", ["pred_c0", "pred_c1", "pred_c2"])}
    procs = {}
    for name, (n_classes, _, _) in cases.items():
        write_records(tmp_path / name, n_folds=2, per_fold=20, size=32, n_classes=n_classes, seed=5)
        args = ["--records", str(tmp_path / name), "--out", str(tmp_path / f"run-{name}"), "--model", "tiny_cnn",
                "--epochs", "1", "--batch", "2", "--folds", "1", "--verbose", "0"]
        # both at once: each spends most of its time importing and compiling
        procs[name] = subprocess.Popen([sys.executable, "-m", "kit", "train", *args], cwd=ROOT, env=_kernel_env(),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, (n_classes, metric, columns) in cases.items():
        out, err = procs[name].communicate(timeout=240)
        assert procs[name].returncode == 0, err[-3000:]
        assert out.splitlines()[0] == CHOSE
        assert "tensorflow/core" not in err and "oneDNN" not in err  # TensorFlow's own log lines stay hidden
        run = tmp_path / f"run-{name}"
        cv = json.loads((run / "cv.json").read_text())
        assert cv["metric"] == metric and list(cv["folds"]) == ["1"]
        assert math.isfinite(cv["overall"]) and 0.0 <= cv["overall"] <= 1.0
        assert cv["overall"] == pytest.approx(cv["folds"]["1"])
        oof = pd.read_csv(run / "oof.csv")
        assert len(oof) == 20 and list(oof.columns) == ["image_name", "target", *columns, "fold"]
        assert oof[columns].to_numpy().min() >= 0 and oof[columns].to_numpy().max() <= 1
        if n_classes > 2:
            assert oof[columns].sum(axis=1).to_numpy() == pytest.approx(1.0, abs=1e-2)


def test_the_kit_entry_picks_jax_on_a_tpu_vm_and_respects_the_users_choice():
    # import kit sets nothing; the kit command's main and a notebook's notebook_paths() call runtime.prepare
    code = ("import os, sys, kit\n"
            "plain = os.environ.get('KERAS_BACKEND')\n"
            "from kit.core import runtime\n"
            "runtime.prepare()\n"
            "print(plain, os.environ.get('KERAS_BACKEND'), 'keras' in sys.modules, 'tensorflow' in sys.modules)")

    def run(**env):
        full = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "ISTPUVM")}
        out = subprocess.run([sys.executable, "-c", code], env={**full, **env, "PYTHONPATH": str(ROOT)},
                             capture_output=True, text=True, check=True)
        return out.stdout.split()

    assert run(ISTPUVM="1") == ["None", "jax", "False", "False"]  # chosen at the entry, and nothing heavy imported
    assert run(ISTPUVM="1", KERAS_BACKEND="tensorflow") == ["tensorflow", "tensorflow", "False", "False"]
    assert run() == ["None", "None", "False", "False"]  # elsewhere Keras keeps its own default


def test_choose_backend_follows_the_strategy_until_keras_loads(monkeypatch):
    from kit.core import runtime

    monkeypatch.delenv("ISTPUVM", raising=False)
    monkeypatch.setattr(runtime, "loaded_backend", lambda: None)  # this test process already runs Keras
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert runtime.choose_backend("tpu") == "jax" and os.environ["KERAS_BACKEND"] == "jax"
    # kit's own earlier choice gives way: --strategy cpu on a TPU VM runs TensorFlow
    assert runtime.choose_backend("cpu") is None and "KERAS_BACKEND" not in os.environ
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")  # the user's: kept even for the TPU strategy
    assert runtime.choose_backend("tpu") == "tensorflow"
    monkeypatch.undo()
    import keras  # noqa: F401  (on TensorFlow in this test process)

    monkeypatch.delenv("KERAS_BACKEND")
    assert runtime.choose_backend("tpu") == "tensorflow"  # Keras is loaded: nothing changes any more
    assert "KERAS_BACKEND" not in os.environ
