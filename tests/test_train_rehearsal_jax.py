"""Rehearsal of the TPU v5e-8 route on CPU (docs/training.md, "Where kit trains"): `kit train` in its own process with Keras on JAX,
XLA_FLAGS=--xla_force_host_platform_device_count=8, DataParallel over the 8 devices, mixed_bfloat16."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from records_fixture import kit_train_process, rehearsal_records  # noqa: F401 (a fixture)


@pytest.mark.slow
def test_jax_data_parallel_over_eight_devices_bfloat16(rehearsal_records, tmp_path):
    run = tmp_path / "run"
    schedule = tmp_path / "schedule.toml"  # the fine-tuning ramp, spelled out: tiny_cnn alone would train from scratch
    schedule.write_text("lr_start = 1e-5\nlr_max = 5e-5\nlr_ramp_epochs = 2\n")
    out = kit_train_process(["--records", str(rehearsal_records), "--out", str(run), "--model", "tiny_cnn",
                             "--epochs", "1", "--batch", "2", "--folds", "1", "--strategy", "tpu", "--verbose", "0",
                             "--lr-per", "step", "--config", str(schedule)],
                            # the last two flags only make XLA's CPU compiles cheaper; the computation is the same
                            {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
                             "XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0 "
                                          "--xla_llvm_disable_expensive_passes=true"})
    assert "chose tpu-jax: 8 replicas, mixed_bfloat16, Keras on jax" in out.stdout
    # 20 validation images over a global batch of 16: the padded last batch is trimmed again
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 20 and oof["pred"].between(0, 1).all() and set(oof["fold"]) == {1}
    assert oof["image_name"].tolist() == [f"img_1_{i:03d}" for i in range(20)]
    # the per-step schedule runs inside the jitted step: after one epoch, half way up the 2-epoch ramp
    # from 1e-5 to 8 replicas x 5e-5 (per epoch, the rate logged would still be 1e-5)
    lr = pd.read_csv(run / "fold1" / "history.csv")["lr"].tolist()
    assert lr == pytest.approx([1e-5 + (8 * 5e-5 - 1e-5) / 2], rel=1e-5)
