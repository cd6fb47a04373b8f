"""What makes `kit train` give good models: the exact metric picks epochs, TTA follows the run's augmentation,
defaults fit what is trained, multi-class class weights on real records, the learning-rate range test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from kit.data import records, synth
from kit.training import train
from kit.training.config import SCHEDULE_DEFAULTS, Config
from kit.core.errors import KitError
from records_fixture import write_records


def _cfg(recs, run, **kw) -> Config:
    base = dict(records=str(recs), out=str(run), model="tiny_cnn", epochs=2, batch=8, verbose=0, strategy="cpu",
                seed=1)
    base.update(kw)
    return Config(**base)


@pytest.fixture(scope="module")
def recs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recs")
    write_records(folder, n_folds=2, per_fold=24, size=32, signal=0.6, seed=5)
    return folder


def test_val_metric_is_the_exact_metric_over_the_whole_fold(recs, tmp_path):
    # tta=1: the out-of-fold predictions come from best.keras through the identity view, so the best epoch's
    # logged val_metric must be scikit-learn's AUC of them, exactly (keras.metrics.AUC buckets thresholds)
    run = tmp_path / "run"
    res = train.train_folds(_cfg(recs, run, epochs=3, augment="none"), log=lambda _: None)
    oof = pd.read_csv(run / "oof.csv")
    cv = json.loads((run / "cv.json").read_text())
    for k in res.folds:
        hist = pd.read_csv(run / f"fold{k}" / "history.csv")
        part = oof[oof["fold"] == k]
        exact = roc_auc_score(part["target"], part["pred"])
        assert hist["val_metric"].max() == pytest.approx(exact, abs=1e-9)
        assert cv["folds"][str(k)] == pytest.approx(exact, abs=1e-12)
        assert hist["val_loss"].notna().all() and (hist["val_loss"] > 0).all()
    scores = np.array([cv["folds"][str(k)] for k in res.folds])
    assert cv["fold_mean"] == pytest.approx(scores.mean()) and cv["fold_std"] == pytest.approx(scores.std(ddof=1))
    assert cv["overall"] == pytest.approx(roc_auc_score(oof["target"], oof["pred"]))
    assert cv["tta_views"] == ["identity"]
    assert "(mean +- std over folds)" in train.format_result(res)


def test_tta_never_lowers_the_cv_of_a_run_trained_without_augmentation(recs, tmp_path):
    one = train.train_folds(_cfg(recs, tmp_path / "one", augment="none", tta=1), log=lambda _: None)
    lines: list[str] = []
    four = train.train_folds(_cfg(recs, tmp_path / "four", augment="none", tta=4), log=lines.append)
    assert four.scores == pytest.approx(one.scores, abs=1e-9)
    assert any("trained without augmentation" in line and "using 1 view" in line for line in lines)
    # a run that trained with flips and turns averages the eight exact views
    assert train.run_tta_views(Config(augment="default", tta=8))[0][-1] == "transverse"


def test_early_stopping_follows_the_exact_metric(recs, tmp_path, monkeypatch):
    exact = train._ExactValidation.on_epoch_end
    scripted = [0.70, 0.90, 0.80, 0.85, 0.95, 0.99]  # best at epoch 2; two worse epochs then stop

    def scripted_metric(self, epoch, logs=None):
        exact(self, epoch, logs)
        logs["val_metric"] = scripted[epoch]

    monkeypatch.setattr(train._ExactValidation, "on_epoch_end", scripted_metric)
    run = tmp_path / "run"
    train.train_folds(_cfg(recs, run, folds=(0,), epochs=6, patience=2, augment="none"), log=lambda _: None)
    hist = pd.read_csv(run / "fold0" / "history.csv")
    assert hist["val_metric"].tolist() == [0.70, 0.90, 0.80, 0.85]
    assert json.loads((run / "fold0" / "done.json").read_text())["best_epoch"] == 2


def test_schedule_defaults_follow_what_is_trained(recs, tmp_path):
    scratch, _ = train.resolve(_cfg(recs, tmp_path / "a", epochs=None))
    assert (scratch.lr_max, scratch.lr_start, scratch.epochs) == (1e-3, 1e-3, 15)
    weights = tmp_path / "tiny.weights.h5"
    from kit.training import models

    models.build_model("tiny_cnn", n_classes=2, size=32).get_layer("backbone").save_weights(str(weights))
    tuned, _ = train.resolve(_cfg(recs, tmp_path / "b", weights=str(weights), epochs=None))
    assert (tuned.lr_max, tuned.lr_start, tuned.lr_ramp_epochs) == (5e-5, 1e-5, 2)
    assert tuned.lr_max == SCHEDULE_DEFAULTS["pretrained"]["lr_max"]
    # a value the user gives always wins, and the resolved config keeps what ran
    mine, _ = train.resolve(_cfg(recs, tmp_path / "c", lr_max=3e-4))
    assert mine.lr_max == 3e-4 and mine.lr_start == 1e-3
    assert "lr_max" not in Config().to_dict()  # unset: left out of a TOML, not written as a guess


def test_an_imagenet_backbone_from_random_weights_is_named_in_plain_words():
    lines = train.advice(Config(model="efficientnet_b0", weights="none", augment="default").with_schedule_defaults())
    assert len(lines) == 1 and "efficientnet_b0 is an ImageNet backbone trained from random weights" in lines[0]
    assert train.advice(Config(model="tiny_cnn", augment="default").with_schedule_defaults()) == []


@pytest.mark.parametrize("setting, value, message", [
    ("epochs", 0, "epochs: expects at least 1, got 0"),
    ("lr_max", -1.0, "lr_max: expects > 0, got -1.0"),
    ("label_smoothing", 5.0, "label_smoothing: expects in [0, 1), got 5.0"),
    ("patience", -2, "patience: expects >= 0"),
])
def test_settings_out_of_range_are_refused_before_anything_is_written(recs, tmp_path, setting, value, message):
    with pytest.raises(KitError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        train.train_folds(_cfg(recs, tmp_path / "run", **{setting: value}), log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_balanced_class_weights_on_records_from_the_real_writer(tmp_path):
    # the writer stores class_counts as {class name: n}; a multi-class run with class_weight balanced trains on it
    src = synth.make_competition("ham10000", tmp_path / "ham", n_train=42, n_test=0, size=32, seed=3)
    manifest = records.write_from_source(src, tmp_path / "rec", n_folds=2, size=32, progress=False)
    assert set(manifest.folds[0].class_counts) == set(synth.HAM_CLASSES)
    run = tmp_path / "run"
    res = train.train_folds(_cfg(tmp_path / "rec", run, epochs=1, class_weight="balanced"), log=lambda _: None)
    assert res.metric == "balanced_accuracy" and 0.0 <= res.scores[-1] <= 1.0
    cfg, _ = train.resolve(Config.load(run / "config.toml"))
    weights = train._class_weights(cfg, manifest, [1])
    counts = manifest.folds[1].class_counts
    n, present = sum(counts.values()), sum(1 for c in counts.values() if c)
    for i, name in enumerate(cfg.classes):
        if counts[name]:
            assert weights[i] == pytest.approx(n / (present * counts[name]))


def test_find_lr_writes_its_plot_and_suggests_a_rate_inside_the_sweep(recs, tmp_path):
    out = tmp_path / "lr"
    finding = train.find_lr(_cfg(recs, out), steps=60, log=lambda _: None)
    assert finding.plot.is_file() and finding.plot.stat().st_size > 1000
    table = pd.read_csv(finding.table)
    assert list(table.columns) == ["lr", "loss"] and 10 < len(table) <= 60
    assert table["lr"].is_monotonic_increasing
    assert table["lr"].min() <= finding.suggestion <= table["lr"].max()
    assert not (out / "config.toml").exists()  # the folder stays free for the run itself
    assert "suggested lr_max" in train.format_lr_finding(finding)


# --- fine-tuning: a head-only warm-up, then the whole network at a lower backbone rate ---------------------


def test_training_phases_warm_up_the_head_then_train_everything():
    cfg = Config(epochs=5, freeze_epochs=2)
    assert train.training_phases(cfg) == [(0, 2, True), (2, 5, False)]
    assert train.training_phases(cfg, initial_epoch=1) == [(1, 2, True), (2, 5, False)]
    assert train.training_phases(cfg, initial_epoch=3) == [(3, 5, False)]
    assert train.training_phases(Config(epochs=5)) == [(0, 5, False)]
    with pytest.raises(KitError, match=r"freeze_epochs: expects in \[0, epochs\)"):
        Config(epochs=2, freeze_epochs=2).check_numbers()


def _backbone_weights(model):
    from kit.training import models

    return [np.array(w) for w in models.backbone_of(model).get_weights()]


def test_frozen_warm_up_keeps_the_pretrained_backbone_and_its_batchnorm(recs, tmp_path):
    from kit.training import models, pipeline, strategy

    weights = tmp_path / "pre.weights.h5"
    pre = models.build_model("tiny_cnn", n_classes=2, size=32)
    models.backbone_of(pre).save_weights(str(weights))
    cfg, manifest = train.resolve(_cfg(recs, tmp_path / "run", weights=str(weights), freeze_epochs=1, epochs=2,
                                       backbone_lr_mult=0.5, lr_max=1e-2, lr_start=1e-2))
    acc = strategy.get_strategy("cpu")
    model = train.build_and_compile(cfg, acc, steps_per_epoch=3)
    start = _backbone_weights(model)
    head = np.array(model.get_layer("head").get_weights()[0])
    data = pipeline.train_dataset(records.list_shards(recs, [1], split="train"), cfg, batch=8, seed=0)
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    # warm-up: every backbone weight, BatchNorm moving statistics included, is exactly as pretrained
    assert all(np.array_equal(a, b) for a, b in zip(start, _backbone_weights(model)))
    assert not np.array_equal(head, model.get_layer("head").get_weights()[0])
    train.compile_phase(model, cfg, acc, 3, frozen=False, done_steps=3)
    assert model.optimizer.iterations.numpy() == 3 and model.optimizer.backbone_lr_mult == 0.5
    model.fit(data, steps_per_epoch=3, epochs=1, verbose=0)
    bn = models.backbone_of(model).get_layer("tiny_bn0")
    after = dict(zip([w.path for w in models.backbone_of(model).weights], _backbone_weights(model)))
    before = dict(zip([w.path for w in models.backbone_of(model).weights], start))
    conv = "tiny_conv0/kernel"
    assert not np.array_equal(before[conv], after[conv])  # then the whole network trains ...
    for w in bn.non_trainable_weights:  # ... with the pretrained BatchNorm statistics kept
        assert np.array_equal(before[w.path], after[w.path])


def test_the_backbone_steps_at_its_fraction_of_the_head_rate(recs, tmp_path):
    from kit.training import models, pipeline, strategy

    acc = strategy.get_strategy("cpu")
    moved = {}
    for mult in (1.0, 0.1):
        cfg, _ = train.resolve(_cfg(recs, tmp_path / f"r{mult}", backbone_lr_mult=mult, lr_start=1e-3, lr_max=1e-3))
        keras_seed = 3
        import keras

        keras.utils.set_random_seed(keras_seed)
        model = train.build_and_compile(cfg, acc, steps_per_epoch=1)
        before = _backbone_weights(model)
        data = pipeline.train_dataset(records.list_shards(recs, [1], split="train"), cfg, batch=8, seed=0)
        model.fit(data, steps_per_epoch=1, epochs=1, verbose=0)
        kernel = models.backbone_of(model).get_layer("tiny_conv0").get_weights()[0]
        moved[mult] = float(np.abs(kernel - before[0]).mean())
    # Adam's first step is about the rate itself whatever the gradient: the backbone moves a tenth as far
    assert moved[0.1] / moved[1.0] == pytest.approx(0.1, rel=0.05)


def test_a_fine_tuning_run_draws_both_rates_and_says_when_the_backbone_joins(recs, tmp_path):
    from kit.training import models

    weights = tmp_path / "pre.weights.h5"
    models.backbone_of(models.build_model("tiny_cnn", n_classes=2, size=32)).save_weights(str(weights))
    lines: list[str] = []
    run = tmp_path / "run"
    train.train_folds(_cfg(recs, run, folds=(0,), weights=str(weights), epochs=2, freeze_epochs=1,
                           backbone_lr_mult=0.1), log=lines.append)
    assert "fold 0: epoch 2 on, the whole network (head-only warm-up done)" in lines
    saved = Config.load(run / "config.toml")
    assert (saved.freeze_epochs, saved.backbone_lr_mult) == (1, 0.1)
    assert (run / "plots" / "lr.png").stat().st_size > 1000


# --- kit against a plain model.fit ------------------------------------------------------------------------


def _plain_fit_cv(rec: Path, n_classes: int, settings: dict) -> float:
    """What a user writes without kit: the same network and rate, arrays in memory, the best epoch by the
    exact metric on the held-out fold (checked after every epoch), averaged over the records' folds."""
    import keras

    from kit.core import metrics
    from kit.training import models, pipeline

    paths = records.list_shards(rec, split="train")
    table = pipeline.record_table(paths)
    images = np.concatenate([b["image"] for b in pipeline.predict_dataset(paths, 32, "identity", 64).as_numpy_iterator()])
    y, folds = table["target"].to_numpy(), table["fold"].to_numpy()
    metric, scores = ("auc" if n_classes == 2 else "balanced_accuracy"), []
    for k in np.unique(folds):
        keras.utils.set_random_seed(1 + int(k))
        model = models.build_model("tiny_cnn", n_classes=n_classes, size=32)
        loss = "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"
        model.compile(optimizer=keras.optimizers.Adam(settings["lr_max"]), loss=loss)
        train_rows, valid_rows = folds != k, folds == k
        best = -1.0
        for _ in range(settings["epochs"]):
            model.fit({"image": images[train_rows]}, y[train_rows].astype("float32"), batch_size=settings["batch"],
                      epochs=1, shuffle=True, verbose=0)
            pred = model.predict({"image": images[valid_rows]}, verbose=0)
            best = max(best, metrics.score(metric, y[valid_rows], pred[:, 0] if n_classes == 2 else pred))
        scores.append(best)
    return float(np.mean(scores))


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["siim", "isic9"])
def test_kit_is_no_worse_than_a_plain_model_fit_of_the_same_network_on_the_same_folds(layout, tmp_path):
    # overlapping classes, so that neither reaches a perfect score and a difference would show
    src = synth.make_competition(layout, tmp_path / "src", n_train=160 if layout == "siim" else 360, n_test=0, size=32, seed=2,
                                 **({"overlap": 0.8} if layout == "siim" else {}))
    manifest = records.write_from_source(src, tmp_path / "rec", n_folds=2, size=32, progress=False)
    settings = dict(model="tiny_cnn", epochs=6, batch=16, lr_start=3e-3, lr_max=3e-3, lr_min=3e-3, lr_ramp_epochs=0,
                    lr_sustain_epochs=0, lr_decay=1.0, augment="none")
    res = train.train_folds(Config(records=str(tmp_path / "rec"), out=str(tmp_path / "run"), strategy="cpu",
                                   verbose=0, seed=1, **settings), log=lambda _: None)
    kit_cv = json.loads((tmp_path / "run" / "cv.json").read_text())["fold_mean"]
    plain_cv = _plain_fit_cv(tmp_path / "rec", manifest.n_classes, settings)
    print(f"{layout}: kit {kit_cv:.4f} vs plain model.fit {plain_cv:.4f} ({res.metric}, fold mean)")
    assert kit_cv >= plain_cv - 0.05, (kit_cv, plain_cv)
