"""kit.training.train: the run folder contract, metric-chosen checkpoints, resume, NaN stop, bad input."""

from __future__ import annotations

import json
import math
import re

import keras
import numpy as np
import pandas as pd
import pytest

from kit.core import metrics
from kit.training import train
from kit.training.config import Config
from kit.core.errors import KitError
from records_fixture import write_records


def _cfg(recs, run, **kw) -> Config:
    base = dict(records=str(recs), out=str(run), model="tiny_cnn", epochs=2, batch=8, lr_start=1e-3, lr_max=3e-3,
                lr_min=1e-6, lr_ramp_epochs=1, lr_sustain_epochs=0, lr_decay=0.8, augment="default", verbose=0,
                strategy="cpu", seed=1)
    base.update(kw)
    return Config(**base)


@pytest.fixture(scope="module")
def binary_recs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bin")
    write_records(folder, n_folds=3, per_fold=16, size=32)
    return folder


def test_binary_run_writes_the_whole_run_folder(binary_recs, tmp_path):
    run = tmp_path / "run"
    res = train.train_folds(_cfg(binary_recs, run, tta=2, folds=(0, 2)), log=lambda _: None)
    assert res.folds == [0, 2] and res.metric == "auc" and len(res.scores) == 3
    saved = Config.load(run / "config.toml")
    assert (saved.size, saved.n_classes, saved.classes, saved.id_name, saved.folds, saved.records) == \
        (32, 2, ("benign", "malignant"), "image_name", (0, 2), str(binary_recs))
    for k, score in zip(res.folds, res.scores):
        fold = run / f"fold{k}"
        assert {p.name for p in fold.iterdir()} == {"best.keras", "history.csv", "oof.csv", "done.json"}
        hist = pd.read_csv(fold / "history.csv")
        assert list(hist.columns) == ["epoch", "loss", "lr", "metric", "val_loss", "val_metric"]
        assert hist["epoch"].tolist() == [0, 1]
        assert hist["lr"].tolist() == pytest.approx([1e-3, 3e-3])
        done = json.loads((fold / "done.json").read_text())
        assert done["fold"] == k and done["metric"] == "auc" and done["score"] == pytest.approx(score)
        assert done["best_val_metric"] == pytest.approx(hist["val_metric"].max())
    oof = pd.read_csv(run / "oof.csv")
    assert list(oof.columns) == ["image_name", "target", "pred", "fold"]
    assert len(oof) == 32 and oof["image_name"].is_unique and oof["pred"].between(0, 1).all()
    assert oof.groupby("fold").size().to_dict() == {0: 16, 2: 16}
    assert (oof["image_name"].str.slice(4, 5).astype(int) == oof["fold"]).all()  # img_{fold}_{i}
    cv = json.loads((run / "cv.json").read_text())
    assert cv["metric"] == "auc" and set(cv["folds"]) == {"0", "2"}
    assert cv["overall"] == pytest.approx(metrics.score("auc", oof["target"], oof["pred"]))
    assert cv["overall"] == pytest.approx(res.scores[-1])
    assert {p.name for p in (run / "plots").iterdir()} == {"learning_curves.png", "roc.png", "lr.png"}
    # best.keras loads with kit.training.models alone (no compile state), input 0..255 dict in, [B,1] out
    model = keras.saving.load_model(run / "fold0" / "best.keras")
    assert model.output_shape == (None, 1)
    with pytest.raises(KitError, match="already holds a run"):
        train.train_folds(_cfg(binary_recs, run), log=lambda _: None)


def test_multiclass_run_oof_columns_and_confusion(tmp_path):
    write_records(tmp_path / "recs", n_folds=2, per_fold=15, size=32, n_classes=3)
    run = tmp_path / "run"
    res = train.train_folds(_cfg(tmp_path / "recs", run, epochs=1, folds=(1,), loss="focal", label_smoothing=0.1,
                                 class_weight="balanced", augment_on="device"), log=lambda _: None)
    oof = pd.read_csv(run / "oof.csv")
    assert list(oof.columns) == ["image_name", "target", "pred_c0", "pred_c1", "pred_c2", "fold"]
    assert len(oof) == 15 and (oof["fold"] == 1).all()
    np.testing.assert_allclose(oof[["pred_c0", "pred_c1", "pred_c2"]].sum(axis=1), 1.0, atol=1e-4)
    cv = json.loads((run / "cv.json").read_text())
    assert cv["metric"] == "balanced_accuracy" and list(cv["folds"]) == ["1"]
    assert res.scores[-1] == pytest.approx(metrics.balanced_accuracy(oof["target"], oof[["pred_c0", "pred_c1", "pred_c2"]].to_numpy()))
    assert (run / "plots" / "confusion.png").is_file()
    # device augmentation is not shipped inside best.keras
    names = [layer.__class__.__name__ for layer in keras.saving.load_model(run / "fold1" / "best.keras").layers]
    assert not any(n.startswith("Random") for n in names)


def test_checkpoint_follows_the_metric_not_the_loss(tmp_path):
    inp = {"image": keras.Input((4,), name="image")}
    model = keras.Model(inp, keras.layers.Dense(1, name="d")(inp["image"]))
    cb = train._Checkpoints(tmp_path, last_every_s=0)  # last.keras after every epoch
    cb.set_model(model)
    # val_loss is best at epoch 0 and explodes later (the seed notebook's 1e5 jump); val_metric peaks at epoch 2
    history = [(0.30, 0.70), (5.0, 0.72), (1e5, 0.91), (0.40, 0.80)]
    for epoch, (val_loss, val_metric) in enumerate(history):
        model.get_layer("d").set_weights([np.full((4, 1), float(epoch), "float32"), np.zeros(1, "float32")])
        cb.on_epoch_end(epoch, {"loss": 0.5, "val_loss": val_loss, "val_metric": val_metric})
    assert cb.best_epoch == 2 and cb.best == pytest.approx(0.91)
    best = keras.saving.load_model(tmp_path / "best.keras")
    assert best.get_layer("d").get_weights()[0][0, 0] == 2.0
    assert json.loads((tmp_path / "state.json").read_text()) == {"epoch": 3, "best": pytest.approx(0.91), "best_epoch": 2,
                                                                  "best_loss": 1e5}
    # a tie on the metric goes to the lower validation loss (a saturated AUC of 1.0 keeps improving in loss)
    cb = train._Checkpoints(tmp_path)
    cb.set_model(model)
    for epoch, (val_loss, val_metric) in enumerate([(0.6, 1.0), (0.2, 1.0), (0.4, 1.0), (0.01, 0.99)]):
        cb.on_epoch_end(epoch, {"loss": 0.5, "val_loss": val_loss, "val_metric": val_metric})
    assert (cb.best_epoch, cb.best_loss) == (1, 0.2)


def test_last_checkpoint_is_written_first_then_at_most_every_interval(tmp_path):
    inp = {"image": keras.Input((4,), name="image")}
    model = keras.Model(inp, keras.layers.Dense(1, name="d")(inp["image"]))
    cb = train._Checkpoints(tmp_path)  # the default interval, a minute: these epochs take milliseconds
    cb.set_model(model)
    for epoch, val_metric in enumerate([0.7, 0.8, 0.75]):
        model.get_layer("d").set_weights([np.full((4, 1), float(epoch), "float32"), np.zeros(1, "float32")])
        cb.on_epoch_end(epoch, {"loss": 0.5, "val_loss": 0.3, "val_metric": val_metric})
        if epoch == 1:  # epoch 1's improvement waits in memory: the files on disk still agree with each other
            assert json.loads((tmp_path / "state.json").read_text())["best_epoch"] == 0
            best = keras.saving.load_model(tmp_path / "best.keras")
            assert best.get_layer("d").get_weights()[0][0, 0] == 0.0
    cb.on_train_end()
    last = keras.saving.load_model(tmp_path / "last.keras")
    assert last.get_layer("d").get_weights()[0][0, 0] == 0.0  # the first epoch's, not re-saved since
    best = keras.saving.load_model(tmp_path / "best.keras")
    assert best.get_layer("d").get_weights()[0][0, 0] == 1.0  # the best epoch's, written at the end of the fit
    assert model.get_layer("d").get_weights()[0][0, 0] == 2.0  # the model itself goes on from its last epoch
    # a resume restarts after epoch 0 and knows epoch 1's best.keras is the one to beat
    assert json.loads((tmp_path / "state.json").read_text()) == {"epoch": 0, "best": pytest.approx(0.8),
                                                                  "best_epoch": 1, "best_loss": 0.3}


def test_resume_skips_finished_fold_and_continues_unfinished(binary_recs, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = _cfg(binary_recs, run, folds=(0, 1), epochs=2)
    original = train._Checkpoints.on_epoch_end

    def killed_in_fold1(self, epoch, logs=None):
        original(self, epoch, logs)
        if self.folder.name == "fold1" and epoch == 0:
            raise KeyboardInterrupt  # the kernel dies after fold 1's first epoch was saved

    monkeypatch.setattr(train._Checkpoints, "on_epoch_end", killed_in_fold1)
    with pytest.raises(KeyboardInterrupt):
        train.train_folds(cfg, log=lambda _: None)
    monkeypatch.setattr(train._Checkpoints, "on_epoch_end", original)
    assert (run / "fold0" / "done.json").is_file() and not (run / "fold1" / "done.json").exists()
    assert json.loads((run / "fold1" / "state.json").read_text())["epoch"] == 0
    fold0_mtime = (run / "fold0" / "best.keras").stat().st_mtime_ns

    lines: list[str] = []
    res = train.train_folds(Config(out=str(run)), resume=True, log=lines.append)
    assert any(line.startswith("fold 0: finished earlier") for line in lines)
    assert any(line.startswith("fold 1: resuming after epoch 1") for line in lines)
    assert (run / "fold0" / "best.keras").stat().st_mtime_ns == fold0_mtime
    assert pd.read_csv(run / "fold1" / "history.csv")["epoch"].tolist() == [0, 1]
    assert res.folds == [0, 1] and len(pd.read_csv(run / "oof.csv")) == 32
    assert not (run / "fold1" / "last.keras").exists()


def test_per_step_schedule_moves_every_step_and_survives_resume(binary_recs, tmp_path, monkeypatch):
    # 2 training folds x 16 images / batch 8 = 4 steps per epoch; lr is logged at each epoch's end
    run = tmp_path / "run"
    cfg = _cfg(binary_recs, run, folds=(0,), epochs=3, lr_ramp_epochs=2, lr_per="step")
    original = train._Checkpoints.on_epoch_end

    def killed_after_first_epoch(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(train._Checkpoints, "on_epoch_end", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train.train_folds(cfg, log=lambda _: None)
    monkeypatch.setattr(train._Checkpoints, "on_epoch_end", original)
    train.train_folds(Config(out=str(run)), resume=True, log=lambda _: None)
    lr = pd.read_csv(run / "fold0" / "history.csv")["lr"].tolist()
    # after 4 steps: half way up the 2-epoch ramp; after 8: the peak; after 12: one epoch of decay.
    # Per epoch the log would read [1e-3, 2e-3, 3e-3]; the resumed fold kept the optimizer's step count.
    assert lr == pytest.approx([2e-3, 3e-3, (3e-3 - 1e-6) * 0.8 + 1e-6], rel=1e-5)
    assert Config.load(run / "config.toml").lr_per == "step"


def test_a_seeded_run_repeats_bit_for_bit(binary_recs, tmp_path):
    def oof(name, seed):
        train.train_folds(_cfg(binary_recs, tmp_path / name, folds=(1,), epochs=1, seed=seed), log=lambda _: None)
        return pd.read_csv(tmp_path / name / "oof.csv")["pred"].to_numpy()

    first = oof("a", 1)
    np.testing.assert_array_equal(oof("b", 1), first)
    assert not np.array_equal(oof("c", 2), first)  # the seed matters: the check above is not vacuous


def test_nan_loss_stops_with_one_line_and_keeps_finished_folds(binary_recs, tmp_path, monkeypatch):
    run = tmp_path / "run"
    built = []
    original = train.build_and_compile

    def nan_in_second_fold(cfg, acc, *args):
        model = original(cfg, acc, *args)
        built.append(model)
        if len(built) == 2:
            model.compile(optimizer="adam", loss=lambda y, p: keras.ops.mean(p) * float("nan"),
                          metrics=[train.make_metric(cfg)])
        return model

    monkeypatch.setattr(train, "build_and_compile", nan_in_second_fold)
    with pytest.raises(KitError) as exc:
        train.train_folds(_cfg(binary_recs, run, folds=(0, 1), epochs=1), log=lambda _: None)
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("fold 1: the training loss became NaN in epoch 1")
    assert (run / "fold0" / "done.json").is_file() and not (run / "fold1" / "done.json").exists()
    assert json.loads((run / "cv.json").read_text())["folds"].keys() == {"0"}
    assert set(pd.read_csv(run / "oof.csv")["fold"]) == {0}


@pytest.mark.parametrize("change, message", [
    ({"model": "no_such_net"}, "model: unknown model 'no_such_net'"),
    ({"folds": (0, 7)}, "folds: fold 7 is not in .*manifest.json \\(folds there: 0,1,2\\)"),
    ({"size": 48}, "manifest.json: image_size is 32 but size 48 was asked"),
    ({"loss": "cce"}, "loss: cce does not fit 2 classes"),
    ({"augment": "wild"}, "augment: unknown preset 'wild'"),
    ({"lr_per": "batch"}, "lr_per: expects epoch or step, got 'batch'"),
    ({"weights": "/nonexistent/w.weights.h5"}, "/nonexistent/w.weights.h5: weights file not found"),
])
def test_bad_input_is_one_line_and_writes_nothing(binary_recs, tmp_path, change, message):
    run = tmp_path / "run"
    with pytest.raises(KitError, match=message):
        train.train_folds(_cfg(binary_recs, run, **change), log=lambda _: None)
    assert not run.exists()


def test_weights_that_do_not_fit_are_refused_before_the_run_starts(binary_recs, tmp_path):
    from kit.training import models

    wrong = tmp_path / "small_cnn.weights.h5"
    models.build_model("small_cnn", n_classes=2, size=32).save_weights(wrong)
    run = tmp_path / "run"
    with pytest.raises(KitError, match="small_cnn.weights.h5"):
        train.train_folds(_cfg(binary_recs, run, weights=str(wrong)), log=lambda _: None)
    assert not (run / "config.toml").exists()


def test_balanced_accuracy_metric_and_sparse_loss_match_references():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 50)
    y[y == 3] = 0  # class 3 absent from y_true: it must not count
    p = rng.dirichlet(np.ones(4), 50).astype("float32")
    m = train.BalancedAccuracy(4)
    m.update_state(y[:20], p[:20])
    m.update_state(y[20:], p[20:])
    assert float(m.result()) == pytest.approx(metrics.balanced_accuracy(y, p), abs=1e-6)
    loss = train.SparseCategoricalLoss(4)
    ref = keras.losses.SparseCategoricalCrossentropy()
    assert float(loss(y, p)) == pytest.approx(float(ref(y, p)), rel=1e-5)
    smooth = train.SparseCategoricalLoss(4, label_smoothing=0.2)
    ref = keras.losses.CategoricalCrossentropy(label_smoothing=0.2)
    assert float(smooth(y, p)) == pytest.approx(float(ref(np.eye(4)[y], p)), rel=1e-5)
    focal = train.SparseCategoricalLoss(4, gamma=2.0)
    ref = keras.losses.CategoricalFocalCrossentropy(alpha=1.0, gamma=2.0)
    assert float(focal(y, p)) == pytest.approx(float(ref(np.eye(4)[y], p)), rel=1e-4)


def test_trains_on_public_siim_tfrecords_with_metadata(tmp_path):
    from kit.data import records, synth

    shards = synth.write_public_siim_tfrecords(tmp_path / "public", n_images=30, n_shards=2, size=32)
    run = tmp_path / "run"
    res = train.train_folds(_cfg(tmp_path / "public", run, epochs=1, folds=(1,), meta=True), log=lambda _: None)
    saved = Config.load(run / "config.toml")
    # age is numeric; the public codes come without their tables, so they cannot be one-hot encoded
    assert saved.meta_numeric == ("age_approx",) and saved.meta_categorical == {}
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == records.parse_shard_name(shards[1])[2] and set(oof["fold"]) == {1}
    assert oof["image_name"].str.startswith("ISIC_").all() and res.folds == [1]


def test_a_fold_with_one_class_is_refused_before_training(tmp_path):
    write_records(tmp_path / "recs", n_folds=2, per_fold=6, size=32, positives=0.0)
    with pytest.raises(KitError, match="fold 0 holds one class only"):
        train.train_folds(_cfg(tmp_path / "recs", tmp_path / "run"), log=lambda _: None)
    assert not (tmp_path / "run").exists()


# --- --time-limit ----------------------------------------------------------------------------------


def _train_argv(recs, run, *more: str) -> list[str]:
    return ["train", "--records", str(recs), "--out", str(run), "--model", "tiny_cnn", "--epochs", "6", "--batch", "8",
            "--folds", "0,1", "--augment", "default", "--verbose", "0", "--strategy", "cpu", "--seed", "1", *more]


@pytest.mark.slow
def test_time_limit_stops_in_time_and_resume_gives_the_uninterrupted_result(binary_recs, tmp_path, monkeypatch, capsys):
    import time

    from kit.runs import listing as runs
    from kit.cli.app import main

    started = time.monotonic()
    assert main(_train_argv(binary_recs, tmp_path / "straight")) == 0
    limit = math.ceil(time.monotonic() - started)  # what the whole run took, its first epochs' tracing included
    capsys.readouterr()
    original = train._ExactValidation.on_epoch_end

    def slow_epoch(self, epoch, logs=None):  # 12 epochs 0.8 s longer each: the run now needs over 9 s more
        time.sleep(0.8)
        original(self, epoch, logs)

    monkeypatch.setattr(train._ExactValidation, "on_epoch_end", slow_epoch)
    run = tmp_path / "run"
    started = time.monotonic()
    assert main(_train_argv(binary_recs, run, "--time-limit", f"{limit}s")) == 0
    assert time.monotonic() - started < limit + 1.0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # within a fold after an epoch, or between folds: which one depends on this machine's speed
    assert re.match(r"stopped before the time limit at (fold \d+ after epoch \d+ of 6|the start of fold 1) ", line), line
    assert line.endswith(f"(state saved in {run}); resume with: kit train --records {binary_recs} --out {run} "
                         f"--resume --time-limit {limit}s")
    assert runs.read_run(run).state == "stopped (resume)"
    monkeypatch.setattr(train._ExactValidation, "on_epoch_end", original)
    assert main(["train", "--records", str(binary_recs), "--out", str(run), "--resume"]) == 0
    assert runs.read_run(run).state == "finished" and not (run / "stopped.json").exists()
    for name in ("oof.csv", "cv.json"):
        assert (run / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_resume_trains_folds_the_run_has_not_trained_yet(binary_recs, tmp_path):
    run = tmp_path / "run"
    train.train_folds(_cfg(binary_recs, run, folds=(0,), epochs=1), log=lambda _: None)
    lines: list[str] = []
    res = train.train_folds(Config(out=str(run), folds=(2,)), resume=True, log=lines.append, given=["out", "folds"])
    assert res.folds == [0, 2] and Config.load(run / "config.toml").folds == (0, 2)
    assert any(ln.startswith("fold 0: finished earlier") for ln in lines)
    assert any(ln.startswith("fold 2: training on folds 0,1") for ln in lines)
    assert pd.read_csv(run / "oof.csv").groupby("fold").size().to_dict() == {0: 16, 2: 16}
