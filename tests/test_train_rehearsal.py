"""Rehearsals on CPU, each `kit train` in its own process: the TF route (MirroredStrategy over two logical
CPU devices, docs/training.md, "Where kit trains") and a short run that must learn (CV AUC >= 0.9). The JAX route is in
test_train_rehearsal_jax.py."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from records_fixture import kit_train_process, rehearsal_records, write_records  # noqa: F401 (a fixture)


@pytest.mark.slow
def test_tf_mirrored_over_two_logical_cpus(rehearsal_records, tmp_path):
    run = tmp_path / "run"
    out = kit_train_process(["--records", str(rehearsal_records), "--out", str(run), "--model", "tiny_cnn",
                             "--epochs", "1", "--batch", "4", "--folds", "0", "--strategy", "mirrored", "--verbose", "0"],
                            {"KERAS_BACKEND": "tensorflow"})
    assert "chose mirrored: 2 replicas" in out.stdout
    # 20 validation images over a global batch of 8: the padded last batch is trimmed again
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 20 and oof["pred"].between(0, 1).all() and set(oof["fold"]) == {0}
    assert json.loads((run / "cv.json").read_text())["metric"] == "auc"
    # validation during training scored those same 20 images (none dropped). Not to the last digit: while
    # training, each replica normalises with its own BatchNorm moving statistics; best.keras holds their mean
    from sklearn.metrics import roc_auc_score

    hist = pd.read_csv(run / "fold0" / "history.csv")
    assert hist["val_metric"].iloc[0] == pytest.approx(roc_auc_score(oof["target"], oof["pred"]), abs=0.05)


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
    kit_train_process(["--records", str(recs), "--out", str(run), "--config", str(config)],
                      {"KERAS_BACKEND": "tensorflow"})
    cv = json.loads((run / "cv.json").read_text())
    assert cv["metric"] == "auc" and cv["overall"] >= 0.9, cv
    assert min(cv["folds"].values()) >= 0.9, cv
