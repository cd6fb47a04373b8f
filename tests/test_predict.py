"""kit predict: fold models x TTA views averaged with known answers, aligned to the sample, sidecar, check.

The models here are tiny Keras models whose output depends on each image's mean colour only, so
every exact TTA view (flips, quarter turns, transposes) must give the same answer, and the expected
probabilities are computed in numpy from the decoded test images.
"""

import json

import numpy as np
import pandas as pd
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from kit.ensemble import predict
from kit.data import records, sources  # noqa: E402
from kit.cli.app import main  # noqa: E402
from kit.core.errors import KitError  # noqa: E402
from kit.ensemble.submission import check_submission  # noqa: E402

SIZE = 16
EXACT_VIEWS = ["identity", "hflip", "vflip", "rot90", "rot180", "rot270", "transpose", "transverse"]


# --- fixtures: test records and run folders -------------------------------------------------------------


IDS = ["00a1f3", "0001", "ff09", "3e5", "000000b2", "c0ffee", "0b", "9"]  # PCam-like hex ids, leading zeros


def _write_records(folder, ids, targets, classes, train_duplicates=None):
    """Test records of flat-coloured images in two shards, written by kit's writer; the decoded mean colours."""
    rng = np.random.default_rng(0)
    jpegs = []
    for _ in ids:
        colour = rng.integers(20, 236, 3)
        img = np.clip(colour + rng.integers(-15, 16, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
        jpegs.append(tf.io.encode_jpeg(img).numpy())
    table = pd.DataFrame({"image_name": ids, "target": np.asarray(targets, int), "fold": -1, "group": ids})
    src = sources.Source(table=table, classes=list(classes), layout="pcam", id_name="id",
                         labelled=bool((np.asarray(targets) >= 0).all()))
    dups = None if train_duplicates is None else [{"image_name": i, "train_image_name": f"train_{i}"}
                                                  for i in train_duplicates]
    records.write_encoded(src, jpegs, folder, size=SIZE, n_folds=0, test=True, n_shards=2, train_duplicates=dups)
    decoded = np.stack([records.decode_image(j, jpeg=True).numpy().astype(np.float64) for j in jpegs])
    return decoded.mean(axis=(1, 2))  # mean colour per image, record order (the test split keeps the table's)


W_BIN = np.array([[0.02], [0.01], [-0.025]])


def _binary_model(bias):
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model({"image": inp}, out)
    model.layers[-1].set_weights([W_BIN.astype(np.float32), np.array([bias], np.float32)])
    return model


W_MULTI = np.array([[0.02, -0.01, 0.0], [-0.01, 0.02, 0.01], [0.0, 0.01, -0.02]])


def _multi_model(bias):
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model({"image": inp}, out)
    model.layers[-1].set_weights([W_MULTI.astype(np.float32), np.asarray(bias, np.float32)])
    return model


def _make_run(folder, models, classes, id_name, unfinished=None):
    folder.mkdir()
    lines = ['model = "tiny"', f"size = {SIZE}", f"n_classes = {len(classes)}",
             "classes = [" + ", ".join(f'"{c}"' for c in classes) + "]", f'id_name = "{id_name}"']
    (folder / "config.toml").write_text("\n".join(lines) + "\n")
    for k, model in enumerate(models):
        (folder / f"fold{k}").mkdir()
        model.save(folder / f"fold{k}" / "best.keras")
        (folder / f"fold{k}" / "done.json").write_text(json.dumps({"fold": k, "score": 0.7}))
    if unfinished is not None:  # a fold that stopped: its model must not be used
        k = len(models)
        (folder / f"fold{k}").mkdir()
        unfinished.save(folder / f"fold{k}" / "best.keras")
    metric = "auc" if len(classes) == 2 else "balanced_accuracy"
    (folder / "cv.json").write_text(json.dumps({"metric": metric, "folds": {"0": 0.7, "1": 0.72}, "overall": 0.71}))
    return folder


def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


# --- tests ------------------------------------------------------------------------------------------------


def test_tta_views_follow_the_runs_augmentation():
    from kit.training.pipeline import Augment, PRESETS, tta_views

    # the default and pcam presets flip and turn: every exact view, then seeded draws of the preset
    assert tta_views(1, PRESETS["default"]) == (["identity"], None)
    assert tta_views(3, PRESETS["pcam"]) == (["identity", "hflip", "vflip"], None)
    assert tta_views(10, PRESETS["default"]) == (EXACT_VIEWS + [8, 9], None)
    # without augmentation the model never saw a flipped image: the identity only, and one line says so
    views, note = tta_views(4, PRESETS["none"])
    assert views == ["identity"] and "trained without augmentation" in note and "using 1 view" in note
    # flips without turns: the flips and their composition, the half turn, nothing else
    assert tta_views(8, Augment(hflip=True, vflip=True))[0] == ["identity", "hflip", "vflip", "rot180", 8, 9, 10, 11]
    assert tta_views(8, Augment(hflip=True))[0][:2] == ["identity", "hflip"]
    # a colour-only preset keeps the image's geometry: identity, then colour draws
    assert tta_views(3, Augment(brightness=0.1))[0] == ["identity", 8, 9]
    assert tta_views(8, Augment(rotation=90.0))[0][:4] == ["identity", "rot90", "rot270", 8]
    with pytest.raises(KitError, match="tta: must be at least 1 view, got 0"):
        tta_views(0, PRESETS["default"])


class _Affine:
    """A stand-in model: ``x @ w + b`` on the "image" input; fails if handed inputs it did not declare,
    or a batch of another size than the first (the last batch is padded to keep one input shape)."""

    def __init__(self, w, b):
        self.w, self.b = np.asarray(w), np.asarray(b)
        self.input = {"image": None}
        self.rows = set()

    def predict_on_batch(self, feed):
        assert set(feed) == {"image"}
        self.rows.add(len(feed["image"]))
        return feed["image"] @ self.w + self.b


def test_predict_views_averages_views_then_weights_folds():
    x = np.arange(10, dtype=float).reshape(5, 2)
    shift = {"identity": 0.0, "hflip": 1.0, 8: 5.0}

    def dataset_for_view(view):  # two batches per view, plus an input the models do not take
        v = x + shift[view]
        return [{"image": v[:3], "meta": np.zeros((3, 1))}, {"image": v[3:], "meta": np.zeros((2, 1))}]

    models = [_Affine([[1.0], [0.0]], [0.0]), _Affine([[0.0], [2.0]], [1.0])]
    got = predict.predict_views(models, dataset_for_view, ["identity", "hflip", 8], 5,
                                fold_weights=np.array([0.25, 0.75]), progress=False)
    mean_shift = 2.0  # (0 + 1 + 5) / 3
    expected = 0.25 * (x[:, :1] + mean_shift) + 0.75 * (2 * (x[:, 1:] + mean_shift) + 1.0)
    np.testing.assert_allclose(got, expected)
    assert models[0].rows == models[1].rows == {3}


def test_predict_views_counts_images():
    model = _Affine([[1.0]], [0.0])
    with pytest.raises(KitError, match=r"tta view 'identity': the dataset gave 2 images, the records hold 3"):
        predict.predict_views([model], lambda v: [{"image": np.ones((2, 1))}], ["identity"], 3, progress=False)


def test_binary_predict_aligned_to_sample_scored_and_checked(tmp_path, capsys):
    targets = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    colours = _write_records(tmp_path / "test_records", IDS, targets, ["0", "1"])
    run = _make_run(tmp_path / "run", [_binary_model(-1.0), _binary_model(0.5)], ["0", "1"], "id",
                    unfinished=_binary_model(50.0))
    order = [5, 2, 7, 0, 3, 1, 6, 4]
    sample = tmp_path / "sample_submission.csv"
    sample.write_text("id,label\n" + "".join(f"{IDS[i]},0\n" for i in order))
    out = tmp_path / "submissions" / "pcam.csv"
    code = main(["predict", "--run", str(run), "--records", str(tmp_path / "test_records"),
                 "--sample-submission", str(sample), "--out", str(out), "--tta", "4", "--fold-weights", "1,3"])
    printed = capsys.readouterr().out
    assert code == 0
    z = colours @ W_BIN[:, 0]
    expected = 0.25 * _sigmoid(z - 1.0) + 0.75 * _sigmoid(z + 0.5)  # every view gives the same answer
    got = pd.read_csv(out, dtype={"id": str})
    assert list(got.columns) == ["id", "label"]
    assert got["id"].tolist() == [IDS[i] for i in order]
    np.testing.assert_allclose(got["label"], expected[order], atol=2e-5)
    assert check_submission(out, sample) == []
    from sklearn.metrics import roc_auc_score

    auc = roc_auc_score(targets, expected)
    assert f"test (labelled): auc {auc:.4f}" in printed
    side = json.loads((tmp_path / "submissions" / "pcam.json").read_text())
    assert side["run"] == str(run)
    assert side["cv"] == {"metric": "auc", "overall": 0.71, "folds": {"0": 0.7, "1": 0.72}}
    assert side["tta"] == {"n": 4, "views": ["identity", "hflip", "vflip", "rot90"], "augment": "default", "note": None}
    assert side["folds"] == [0, 1]
    assert side["fold_weights"] == [0.25, 0.75]
    assert side["test_scores"]["auc"] == pytest.approx(auc, abs=1e-9)
    assert side["train_duplicates"] is None and side["test_scores_without_train_duplicates"] is None
    assert "duplicated in train" not in printed
    assert side["seconds"] > 0


def test_labelled_test_scored_also_without_images_duplicated_in_train(tmp_path, capsys):
    targets = np.array([0, 1, 0, 1, 1, 0, 0, 1])
    dups = [IDS[1], IDS[4], IDS[6]]
    colours = _write_records(tmp_path / "test_records", IDS, targets, ["0", "1"], train_duplicates=dups)
    run = _make_run(tmp_path / "run", [_binary_model(0.0)], ["0", "1"], "id")
    out = tmp_path / "s.csv"
    assert main(["predict", "--run", str(run), "--records", str(tmp_path / "test_records"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    from sklearn.metrics import accuracy_score, roc_auc_score

    probs = _sigmoid(colours @ W_BIN[:, 0])
    keep = np.array([i not in dups for i in IDS])
    auc, clean_auc = roc_auc_score(targets, probs), roc_auc_score(targets[keep], probs[keep])
    clean_acc = accuracy_score(targets[keep], probs[keep] > 0.5)
    assert abs(auc - clean_auc) > 0.01  # the planted duplicates move the score
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["train_duplicates"] == 3
    assert side["test_scores"]["auc"] == pytest.approx(auc, abs=1e-6)
    assert side["test_scores_without_train_duplicates"]["auc"] == pytest.approx(clean_auc, abs=1e-6)
    assert side["test_scores_without_train_duplicates"]["accuracy"] == pytest.approx(clean_acc)
    assert (f"test (labelled): auc {auc:.4f}, accuracy {side['test_scores']['accuracy']:.4f}; without the 3 images "
            f"duplicated in train: auc {clean_auc:.4f}, accuracy {clean_acc:.4f}") in printed


def test_score_without_is_none_when_nothing_is_left_to_score():
    y, p = np.array([0, 1, 1, 0]), np.array([0.2, 0.9, 0.6, 0.4])
    ids = ["a", "b", "c", "d"]
    assert predict.score_without("auc", y, p, ids, {"b"}) == {"auc": 1.0, "accuracy": 1.0}
    assert predict.score_without("auc", y, p, ids, {"b", "c"}) is None  # one class left: no AUC
    assert predict.score_without("auc", y, p, ids, set()) is None


def test_multiclass_predict_without_sample_passes_check(tmp_path, capsys):
    classes = ["akiec", "bcc", "mel"]
    colours = _write_records(tmp_path / "test_records", IDS, np.full(len(IDS), -1), classes)
    run = _make_run(tmp_path / "run", [_multi_model([0.1, 0.0, -0.1]), _multi_model([0.0, 0.2, 0.0])],
                    classes, "image_id")
    out = tmp_path / "ham.csv"
    code = main(["predict", "--run", str(run), "--records", str(tmp_path / "test_records"), "--out", str(out),
                 "--tta", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "test (labelled)" not in printed
    logits = colours @ W_MULTI
    soft = lambda b: np.exp(logits + b) / np.exp(logits + b).sum(axis=1, keepdims=True)  # noqa: E731
    expected = (soft(np.array([0.1, 0.0, -0.1])) + soft(np.array([0.0, 0.2, 0.0]))) / 2
    got = pd.read_csv(out, dtype={"image_id": str})
    assert list(got.columns) == ["image_id", "akiec", "bcc", "mel"]
    assert got["image_id"].tolist() == IDS
    np.testing.assert_allclose(got[classes].to_numpy(), expected, atol=2e-5)
    sample = tmp_path / "sample.csv"
    sample.write_text("image_id,akiec,bcc,mel\n" + "".join(f"{i},0,0,0\n" for i in reversed(IDS)))
    assert check_submission(out, sample) == []


def test_bad_run_and_flags(tmp_path, capsys):
    (tmp_path / "empty_run").mkdir()
    (tmp_path / "empty_run" / "config.toml").write_text(f"size = {SIZE}\n")
    (tmp_path / "manifest.json").write_text(json.dumps({"split": "test"}))  # passes kit.data.precheck; never read here
    base = ["predict", "--records", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    assert main(base + ["--run", str(tmp_path / "empty_run")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"kit predict: error: {tmp_path / 'empty_run'}: no finished folds (no fold*/done.json with best.keras); "
        "train the run first"
    )
    run = _make_run(tmp_path / "run", [_binary_model(0.0)], ["0", "1"], "id")
    assert main(base + ["--run", str(run), "--fold-weights", "1,2"]) == 1
    assert capsys.readouterr().err.strip() == "kit predict: error: --fold-weights: 2 weights for 1 finished folds (0)"
    assert main(["predict", "--run", str(run), "--records", str(tmp_path), "--out", str(tmp_path / "s.txt")]) == 1
    assert capsys.readouterr().err.strip() == f"kit predict: error: {tmp_path / 's.txt'}: the submission must be a .csv file"
    train = tmp_path / "train_records"
    train.mkdir()
    (train / "manifest.json").write_text(json.dumps({"split": "train", "classes": ["0", "1"], "shards": [], "image_size": SIZE}))
    assert main(["predict", "--run", str(run), "--records", str(train), "--out", str(tmp_path / "s.csv")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"kit predict: error: {train}: holds train records; kit predict reads test records (`kit records --test`)"
    )
    assert not (tmp_path / "s.csv").exists()


def test_random_views_do_not_depend_on_the_batch_size(tmp_path, capsys):
    _write_records(tmp_path / "test_records", IDS, np.full(len(IDS), -1), ["0", "1"])
    run = _make_run(tmp_path / "run", [_binary_model(0.0)], ["0", "1"], "id")
    outs = []
    for batch in (3, 8):
        outs.append(tmp_path / f"b{batch}.csv")
        argv = ["predict", "--run", str(run), "--records", str(tmp_path / "test_records"), "--out", str(outs[-1]),
                "--tta", "10", "--batch", str(batch)]
        assert main(argv) == 0
    capsys.readouterr()
    a, b = (pd.read_csv(p, dtype={"id": str}) for p in outs)
    assert a["id"].tolist() == b["id"].tolist() == IDS
    np.testing.assert_allclose(a["target"], b["target"], atol=1e-6)
    assert json.loads((tmp_path / "b3.json").read_text())["tta"]["views"] == EXACT_VIEWS + [8, 9]
