"""Hostile inputs: every failure is one line with its own exit status, and nothing is ever silently wrong.

One test per class of failure, on kit's synthetic layouts and its real record writer, then every verb run
with a hostile input of its own: non-zero exit, one ``kit VERB: error:`` line naming the culprit, no
traceback, nothing new under the output path.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kit.cli import app as cli
from kit.core import fsutil
from kit.data import imaging, sources, synth
from kit.training.config import Config
from kit.core.errors import KitError


def _run(capsys, *argv) -> tuple[int, list[str]]:
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def _tree(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()


def _stored_images(folder: Path) -> dict[str, np.ndarray]:
    """image_name -> decoded pixels of every record in ``folder`` (the writer's real output)."""
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string), "image_name": tf.io.FixedLenFeature([], tf.string)}
    out = {}
    for shard in sorted(folder.glob("*.tfrec")):
        for raw in tf.data.TFRecordDataset(str(shard)):
            ex = tf.io.parse_single_example(raw, spec)
            out[ex["image_name"].numpy().decode()] = tf.io.decode_jpeg(ex["image"]).numpy()
    return out


# --- 1. pixel depth -------------------------------------------------------------------------------


def test_16bit_and_float_tiffs_are_scaled_not_clipped(tmp_path):
    root = synth.make_competition("pcam", tmp_path / "pcam", n_train=10, n_test=0, size=48)
    ids = pd.read_csv(root / "train_labels.csv", dtype=str)["id"].tolist()
    ramp = np.tile(np.linspace(0, 65535, 48).astype(np.uint16), (48, 1))
    Image.fromarray(ramp).save(root / "train" / f"{ids[0]}.tif", format="TIFF")
    Image.fromarray(np.full((48, 48), 0.5, np.float32)).save(root / "train" / f"{ids[1]}.tif", format="TIFF")
    from kit.data import records

    records.write_from_source(root, tmp_path / "rec", size=32, n_folds=2, workers=1, progress=False)
    images = _stored_images(tmp_path / "rec")
    ramp_img, grey = images[ids[0]].astype(float), images[ids[1]].astype(float)
    assert ramp_img[:, :3].mean() < 20 and ramp_img[:, -3:].mean() > 235  # a ramp, not flat white
    assert abs(grey.mean() - 128) < 3 and grey.std() < 2  # 0.5 is mid grey, not black


def test_float_images_outside_known_ranges_are_refused():
    buf = io.BytesIO()
    Image.fromarray(np.linspace(-1, 3, 64, dtype=np.float32).reshape(8, 8)).save(buf, format="TIFF")
    with pytest.raises(imaging.ImageError, match=r"float image with pixels in -1\.\.3"):
        imaging.prepare_image(buf.getvalue(), 8)


def test_decompression_bomb_is_a_bad_image(monkeypatch):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buf, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 64*64 > 2 * 100: Pillow calls it a bomb
    with pytest.raises(imaging.ImageError, match="too many pixels"):
        imaging.prepare_image(buf.getvalue(), 8)


# --- 2. ids pandas would read as missing ----------------------------------------------------------


NA_NAMES = ["nan", "NA", "None", "null"]


def test_images_named_like_missing_values_keep_their_ids(tmp_path):
    root = synth.make_competition("pcam", tmp_path / "pcam", n_train=8, n_test=0, size=32)
    labels = pd.read_csv(root / "train_labels.csv", dtype=str)
    for old, new in zip(labels["id"][: len(NA_NAMES)], NA_NAMES):
        (root / "train" / f"{old}.tif").rename(root / "train" / f"{new}.tif")
    labels.loc[: len(NA_NAMES) - 1, "id"] = NA_NAMES
    labels.to_csv(root / "train_labels.csv", index=False)
    table = sources.load_source(root).table
    assert set(NA_NAMES) <= set(table["image_name"])
    # the run's own oof.csv, written by kit and read back on --resume
    fsutil.write_csv(tmp_path / "oof.csv", pd.DataFrame({"image_name": NA_NAMES, "target": [0, 1, 0, 1],
                                                        "pred": [0.1, float("nan"), 0.3, 0.4], "fold": 0}))
    back = sources.read_csv_ids(tmp_path / "oof.csv", ["image_name"])
    assert back["image_name"].tolist() == NA_NAMES
    assert np.isnan(back["pred"][1])  # other columns keep pandas' missing values


# --- 3. kit's own output inside a class-folder download ---------------------------------------------


def test_records_folder_inside_the_download_is_never_a_class(tmp_path, capsys):
    root = synth.make_competition("melanoma10k", tmp_path / "m", n_train=12, n_test=0, size=32) / "train"
    code, err = _run(capsys, "records", root, "--out", root / "rec32", "--size", "32", "--folds", "2",
                     "--workers", "1")
    assert code == 0, err
    code, err = _run(capsys, "records", root, "--out", root / "rec32b", "--size", "32", "--folds", "2",
                     "--workers", "1")
    assert code == 0, err
    manifest = json.loads((root / "rec32b" / "manifest.json").read_text())
    assert manifest["classes"] == ["Benign", "Malignant"] and manifest["count"] == 12


def test_empty_and_single_class_layouts_are_refused_at_records(tmp_path, capsys):
    root = synth.make_competition("melanoma10k", tmp_path / "m", n_train=8, n_test=0, size=32) / "train"
    (root / "Unknown").mkdir()
    code, err = _run(capsys, "records", root, "--out", tmp_path / "r1", "--size", "32")
    assert code == 1 and err == [f"kit records: error: {root / 'Unknown'}: empty class folder (no "
                                 ".jpg/.jpeg/.png/.tif/.tiff/.bmp images); remove it or add its images"]
    (root / "Unknown").rmdir()
    shutil.rmtree(root / "Malignant")
    code, err = _run(capsys, "records", root, "--out", tmp_path / "r2", "--size", "32")
    assert code == 1 and err[0].endswith("one class folder (Benign); a classifier needs at least two")
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r2").exists()


# --- 4 and 5. one reader, probabilities in [0, 1] ---------------------------------------------------


def _sample(tmp_path: Path) -> Path:
    (tmp_path / "s.csv").write_text("id,target\na,0.5\nb,0.5\n")
    return tmp_path / "s.csv"


@pytest.mark.parametrize("body", ["a,True\nb,False\n", 'a,True\n"b",False\n'])
def test_booleans_are_not_probabilities_for_either_reader(tmp_path, capsys, body):
    (tmp_path / "sub.csv").write_text("id,target\n" + body)
    code, err = _run(capsys, "check", tmp_path / "sub.csv", "--sample-submission", _sample(tmp_path))
    assert code == 1 and err == [f"{tmp_path / 'sub.csv'}: 2 values not a number, e.g. 'a' target='True'"]
    code, err = _run(capsys, "blend", tmp_path / "sub.csv", tmp_path / "sub.csv", "--out", tmp_path / "o.csv")
    assert code == 1 and "holds text that is not a number" in err[0] and not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("method", ["mean", "rank", "power", "geomean"])
def test_values_outside_unit_interval_are_refused_for_every_method(tmp_path, capsys, method):
    (tmp_path / "a.csv").write_text("id,target\na,0.2\nb,-0.5\n")
    (tmp_path / "b.csv").write_text("id,target\na,0.4\nb,0.6\n")
    code, err = _run(capsys, "blend", tmp_path / "a.csv", tmp_path / "b.csv", "--out", tmp_path / "o.csv",
                     "--method", method)
    assert code == 1 and err == [f"kit blend: error: {tmp_path / 'a.csv'}: row 2 (id b), column target: -0.5 "
                                 "(probabilities lie in [0, 1]; pass --scores if the inputs are scores, not probabilities)"]
    code, err = _run(capsys, "blend", tmp_path / "a.csv", tmp_path / "b.csv", "--out", tmp_path / "o.csv",
                     "--method", method, "--scores")
    if method in ("mean", "rank"):
        assert code == 0
        out = pd.read_csv(tmp_path / "o.csv")
        assert np.isfinite(out["target"]).all()
    else:
        assert code == 1 and f"--method {method} needs values >= 0" in err[0]
        assert not (tmp_path / "o.csv").exists()


def test_multiclass_rows_of_zeros_are_refused_not_written_as_nan(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("id,x,y\na,0.2,0.8\nb,0,0\n")
    code, err = _run(capsys, "blend", tmp_path / "a.csv", tmp_path / "a.csv", "--out", tmp_path / "o.csv")
    assert code == 1 and "row 2 (id b) has no finite blend" in err[0]
    assert not (tmp_path / "o.csv").exists()


def test_carriage_return_only_csv_is_one_line(tmp_path, capsys):
    (tmp_path / "cr.csv").write_bytes(b"id,target\ra,0.5\rb,0.2\r")
    code, err = _run(capsys, "check", tmp_path / "cr.csv", "--sample-submission", _sample(tmp_path))
    # kit check lists a submission's problems one per line, as its verdict (not prefixed)
    assert code == 1 and err == [f"{tmp_path / 'cr.csv'}: lines end in a carriage return alone "
                                 "(old Mac text); save it with \\n or \\r\\n line ends"]
    code, err = _run(capsys, "blend", tmp_path / "cr.csv", "--out", tmp_path / "o.csv")
    assert code == 1 and err[0].startswith(f"kit blend: error: {tmp_path / 'cr.csv'}: lines end in a carriage")


# --- 6. settings ---------------------------------------------------------------------------------


def test_augment_options_types_are_checked():
    from kit.training import pipeline

    with pytest.raises(KitError, match=r"augment_options: setting 'rotation' expects float, got 'lots'"):
        pipeline.resolve_augment("default", {"rotation": "lots"})
    with pytest.raises(KitError, match=r"augment_options: zoom expects a finite number >= 0, got -0.5"):
        pipeline.resolve_augment("default", {"zoom": -0.5})
    assert pipeline.resolve_augment("default", {"rotation": 90}).rotation == 90.0


@pytest.mark.parametrize("flag,value,message", [
    ("--epochs", "0", "epochs: expects at least 1, got 0"),
    ("--seed", "-1", "seed: expects in [0, 2**31), got -1"),
    ("--batch", "0", "batch: expects at least 1, got 0"),
    ("--label-smoothing", "5", "label_smoothing: expects in [0, 1), got 5.0"),
])
def test_numeric_settings_are_refused_before_anything_is_written(tmp_path, capsys, flag, value, message):
    code, err = _run(capsys, "train", "--records", tmp_path / "nowhere", "--out", tmp_path / "run", flag, value)
    assert code == 1 and err == [f"kit train: error: {message}"]
    assert not (tmp_path / "run").exists()


def test_done_json_is_strict_json(tmp_path):
    fsutil.write_json(tmp_path / "d.json", {"best": float("-inf"), "score": float("nan"), "n": [1.5]})
    assert json.loads((tmp_path / "d.json").read_text(), parse_constant=lambda c: pytest.fail(c)) == \
        {"best": None, "score": None, "n": [1.5]}


# --- 7. images: nesting, orientation, paths ----------------------------------------------------------


def test_nested_images_are_read_not_dropped(tmp_path):
    root = synth.make_competition("melanoma10k", tmp_path / "m", n_train=8, n_test=0, size=32) / "train"
    deeper = root / "Benign" / "deeper"
    deeper.mkdir()
    shutil.copy(next((root / "Benign").glob("*.jpg")), deeper / "nested_one.jpg")
    table = sources.load_source(root).table
    assert "nested_one" in set(table["image_name"]) and len(table) == 9


def test_image_names_cannot_leave_the_image_folder(tmp_path):
    root = synth.make_competition("pcam", tmp_path / "pcam", n_train=6, n_test=0, size=32)
    outside = tmp_path / "secret.tif"
    shutil.copy(next((root / "train").glob("*.tif")), outside)
    labels = pd.read_csv(root / "train_labels.csv", dtype=str)
    labels.loc[2, "id"] = str(outside.with_suffix(""))
    labels.to_csv(root / "train_labels.csv", index=False)
    with pytest.raises(KitError, match=r"train_labels.csv: line 4: image .* is not a name below"):
        sources.load_source(root)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 20, 20))  # red on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    buf = io.BytesIO()
    im.save(buf, format="JPEG", exif=exif, quality=95)
    shown = np.asarray(imaging.prepare_image(buf.getvalue(), 20, "squash")).astype(int)
    assert shown[:8, :, 0].mean() > 200 and shown[-8:, :, 2].mean() > 200  # red on top as a viewer shows it


# --- 8. --resume ---------------------------------------------------------------------------------


def test_resume_refuses_a_changed_setting():
    from kit.training.train import resume_mismatch

    saved = Config(records="r", out="o", model="tiny_cnn", epochs=3)
    assert resume_mismatch(Config(records="x", out="o"), saved) is None
    line = resume_mismatch(Config(out="o", model="small_cnn"), saved, ["out", "model"])
    assert line.startswith("--resume: model is 'tiny_cnn' in the run's config.toml, 'small_cnn' was given")
    # a flag typed at its default value still counts when the run saved another
    assert "epochs is 3" in resume_mismatch(Config(out="o", epochs=15), saved, ["epochs"])
    # folds are not a changed setting: --resume trains the folds given that the run has not trained yet
    assert resume_mismatch(Config(out="o", folds=(0, 4)), saved, ["folds"]) is None


def test_resume_over_a_damaged_fold_restarts_it(tmp_path):
    from kit.training import strategy, train

    lines = []
    (tmp_path / "state.json").write_text('{"epoch": 2, "be')
    (tmp_path / "last.keras").write_bytes(b"PK\x03\x04 truncated")
    assert train._resume_point(tmp_path, strategy.get_strategy("cpu"), 1, lines.append) is None
    assert len(lines) == 1 and lines[0].startswith(f"warning: fold 1: cannot resume from {tmp_path} (JSONDecodeError")
    (tmp_path / "state.json").write_text('{"epoch": 2, "best": null, "best_epoch": -1}')
    assert train._resume_point(tmp_path, strategy.get_strategy("cpu"), 1, lines.append) is None
    assert "last.keras" in lines[1] and len(lines) == 2


# --- 9. outputs are never replaced unasked ------------------------------------------------------------


def test_blend_and_predict_refuse_an_existing_out_unless_forced(tmp_path, capsys):
    (tmp_path / "a.csv").write_text("id,target\na,0.2\nb,0.4\n")
    (tmp_path / "o.csv").write_text("mine\n")
    code, err = _run(capsys, "blend", tmp_path / "a.csv", tmp_path / "a.csv", "--out", tmp_path / "o.csv")
    assert code == 1 and err == [f"kit blend: error: {tmp_path / 'o.csv'}: already exists (--out); pass --force "
                                 "to replace it, or choose another name"]
    assert (tmp_path / "o.csv").read_text() == "mine\n"
    code, _ = _run(capsys, "blend", tmp_path / "a.csv", tmp_path / "a.csv", "--out", tmp_path / "o.csv", "--force")
    assert code == 0 and (tmp_path / "o.csv").read_text() == "id,target\na,0.2\nb,0.4\n"
    run, rec = tmp_path / "run", tmp_path / "rec"
    run.mkdir(), rec.mkdir()
    (run / "config.toml").write_text("")
    (rec / "manifest.json").write_text("{}")
    (tmp_path / "p.json").write_text("{}")
    code, err = _run(capsys, "predict", "--run", run, "--records", rec, "--out", tmp_path / "p.csv")
    assert code == 1 and err == [f"kit predict: error: {tmp_path / 'p.json'}: already exists (--out); pass "
                                 "--force to replace it, or choose another name"]


# --- the boundary ------------------------------------------------------------------------------------


def test_environment_failures_are_one_line_with_status_3(tmp_path, capsys, monkeypatch):
    from kit.ensemble import blend

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "o.csv"))

    monkeypatch.setattr(blend, "blend_files", full)
    (tmp_path / "a.csv").write_text("id,target\na,0.2\n")
    code, err = _run(capsys, "blend", tmp_path / "a.csv", "--out", tmp_path / "o.csv")
    assert code == cli.EXIT_ENVIRONMENT == 3
    assert err == [f"kit blend: error: {tmp_path / 'o.csv'}: No space left on device"]


def test_unexpected_errors_are_one_line_and_a_traceback_file(tmp_path, capsys, monkeypatch):
    from kit.ensemble import blend

    def bug(*args, **kwargs):
        raise ZeroDivisionError("division by zero\nsecond line")

    monkeypatch.setattr(blend, "blend_files", bug)
    monkeypatch.setenv("KIT_TRACEBACK_DIR", str(tmp_path))
    (tmp_path / "a.csv").write_text("id,target\na,0.2\n")
    code, err = _run(capsys, "blend", tmp_path / "a.csv", "--out", tmp_path / "o.csv")
    assert code == cli.EXIT_UNEXPECTED == 70 and len(err) == 1
    saved = next(tmp_path.glob("kit-blend-*.traceback.txt"))
    assert err[0] == (f"kit blend: error: unexpected ZeroDivisionError: division by zero second line "
                      f"(traceback: {saved})")
    assert "Traceback (most recent call last)" in saved.read_text() and "def bug" not in err[0]


def test_files_and_folders_honour_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fsutil.write_text(tmp_path / "f.txt", "x")
        with fsutil.atomic_dir(tmp_path / "d") as d:
            (d / "inner").write_text("y")
        os.umask(0o077)
        fsutil.write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600


# --- every verb, one hostile input each -------------------------------------------------------------


def _hostile_cases(tmp: Path) -> list[tuple[str, list, Path]]:
    """(verb, argv, output path) for one hostile input per verb."""
    (tmp / "cr.csv").write_bytes(b"id,target\ra,0.5\r")
    (tmp / "bool.csv").write_text("id,target\na,True\n")
    (tmp / "neg.csv").write_text("id,target\na,-2\n")
    (tmp / "s.csv").write_text("id,target\na,0.5\n")
    (tmp / "single" / "OnlyClass").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp / "single" / "OnlyClass" / "x.jpg")
    (tmp / "nb.ipynb").write_text("not json")
    (tmp / "out_exists.csv").write_text("keep\n")
    (tmp / "bad.toml").write_text('augment_options = { rotation = "lots" }\nepochs = 1\n')
    return [
        ("records", ["records", tmp / "single", "--out", tmp / "o_records"], tmp / "o_records"),
        ("train", ["train", "--records", tmp / "nowhere", "--out", tmp / "o_train", "--epochs", "-1"], tmp / "o_train"),
        ("train", ["train", "--records", tmp / "nowhere", "--out", tmp / "o_train", "--config", tmp / "nowhere.toml"],
         tmp / "o_train"),
        ("predict", ["predict", "--run", tmp / "norun", "--records", tmp, "--out", tmp / "o_pred.csv"],
         tmp / "o_pred.csv"),
        ("blend", ["blend", tmp / "neg.csv", tmp / "s.csv", "--out", tmp / "o_blend.csv", "--method", "rank"],
         tmp / "o_blend.csv"),
        ("blend", ["blend", tmp / "s.csv", "--out", tmp / "out_exists.csv"], tmp / "out_exists.csv"),
        ("check", ["check", tmp / "cr.csv", "--sample-submission", tmp / "s.csv"], tmp / "cr.csv"),
        ("check", ["check", tmp / "bool.csv", "--sample-submission", tmp / "s.csv"], tmp / "bool.csv"),
        ("push", ["push", tmp / "nb.ipynb", "--dry-run", "--folder", tmp / "o_push"], tmp / "o_push"),
        ("convert-weights", ["convert-weights", tmp / "missing.h5", "--model", "efficientnet_b0", "--out",
                             tmp / "o.weights.h5"], tmp / "o.weights.h5"),
        ("demo", ["demo", "--out", tmp / "single", "--tiny"], tmp / "single"),
    ]


def test_every_verb_fails_on_one_line_and_writes_nothing(tmp_path, capsys):
    for verb, argv, out in _hostile_cases(tmp_path):
        before = _tree(out) if out.is_dir() else (out.read_bytes() if out.exists() else None)
        tree_before = _tree(tmp_path)
        code = cli.main([str(a) for a in argv])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code != 0, (argv, captured)
        if verb == "check" and len(lines) == 1 and not lines[0].startswith("kit check:"):
            lines = [f"kit check: error: {lines[0]}"]  # check's verdict on a readable file is its own line
        assert len(lines) == 1 and lines[0].startswith(f"kit {verb}: error: "), (argv, lines)
        assert "Traceback" not in captured.err + captured.out
        after = _tree(out) if out.is_dir() else (out.read_bytes() if out.exists() else None)
        assert after == before, argv
        assert _tree(tmp_path) == tree_before, (argv, _tree(tmp_path) - tree_before)


# --- damaged records, runs and samples (one real run: tiny_cnn, 1 epoch, 32 px) ------------------------


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """(download, train records, test records, run) written and trained by kit itself."""
    base = tmp_path_factory.mktemp("hostile_run")
    comp = synth.make_competition("pcam", base / "comp", n_train=16, n_test=6, size=40)
    assert cli.main(["records", str(comp), "--out", str(base / "rec"), "--size", "32", "--folds", "2",
                     "--workers", "1"]) == 0
    assert cli.main(["records", str(comp), "--out", str(base / "test"), "--size", "32", "--test",
                     "--workers", "1"]) == 0
    assert cli.main(["train", "--records", str(base / "rec"), "--out", str(base / "run"), "--model", "tiny_cnn",
                     "--epochs", "1", "--batch", "8", "--verbose", "0"]) == 0
    return comp, base / "rec", base / "test", base / "run"


def test_damaged_shards_fail_before_training_with_their_name(tmp_path, capsys, small_run):
    _, rec, _, _ = small_run
    bad = tmp_path / "rec"
    shutil.copytree(rec, bad)
    shard = sorted(bad.glob("train01-*.tfrec"))[0]
    shard.write_bytes(shard.read_bytes()[:1500])
    code, err = _run(capsys, "train", "--records", bad, "--out", tmp_path / "run", "--model", "tiny_cnn",
                     "--epochs", "1")
    assert code == 1 and err[-1].startswith(f"kit train: error: {shard}: damaged shard (truncated: record ")
    assert not (tmp_path / "run").exists()
    shard.write_bytes(os.urandom(4000))
    with pytest.raises(KitError, match=r"damaged shard \(not TFRecord data at byte 0"):
        __import__("kit.data.records").data.records.verify_shards([shard])


def test_predict_names_a_size_mismatch_a_duplicate_sample_id_and_a_damaged_model(tmp_path, capsys, small_run):
    comp, _, test, run = small_run
    sample = comp / "sample_submission.csv"
    assert cli.main(["records", str(comp), "--out", str(tmp_path / "test48"), "--size", "40", "--test",
                     "--workers", "1"]) == 0
    capsys.readouterr()
    code, err = _run(capsys, "predict", "--run", run, "--records", tmp_path / "test48", "--sample-submission",
                     sample, "--out", tmp_path / "a.csv")
    assert code == 1 and err == [f"kit predict: error: {tmp_path / 'test48'}: images are 40 px, the run trained on "
                                 "32 px; write the test records with `kit records --test --size 32`"]
    lines = sample.read_text().splitlines()
    (tmp_path / "dup.csv").write_text("\n".join(lines + [lines[1]]) + "\n")
    code, err = _run(capsys, "predict", "--run", run, "--records", test, "--sample-submission", tmp_path / "dup.csv",
                     "--out", tmp_path / "b.csv")
    first = lines[1].split(",")[0]
    assert code == 1 and err == [f"kit predict: error: sample submission: id {first!r} is on rows 1 and "
                                 f"{len(lines)}; each id must appear once"]
    broken = tmp_path / "run"
    shutil.copytree(run, broken)
    best = broken / "fold1" / "best.keras"
    best.write_bytes(best.read_bytes()[:3000])
    code, err = _run(capsys, "predict", "--run", broken, "--records", test, "--sample-submission", sample,
                     "--out", tmp_path / "c.csv")
    assert code == 1 and err == [f"kit predict: error: {best}: damaged model file (not a complete .keras zip); "
                                 "train that fold again"]
    assert not any(tmp_path.glob("[abc].*"))


def test_resume_with_another_model_is_refused_by_name(capsys, small_run):
    _, rec, _, run = small_run
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    code, err = _run(capsys, "train", "--records", rec, "--out", run, "--resume", "--model", "small_cnn")
    assert code == 1 and err[-1] == ("kit train: error: --resume: model is 'tiny_cnn' in the run's config.toml, "
                                     "'small_cnn' was given; resume with the run's own settings, or train the new "
                                     "ones into another --out")
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before


# --- processes ---------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by a container's init, counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return "\nState:\tZ" not in state


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads /proc")
def test_record_writer_workers_die_with_a_killed_parent(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    script = ("import os, time\nfrom kit.data import imaging\npool = imaging.worker_pool(2)\n"
              "pids = {pool.submit(os.getpid).result() for _ in range(8)}\n"
              "print(*pids, flush=True)\ntime.sleep(60)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        workers = [int(x) for x in parent.stdout.readline().split()]
        assert workers and all(_alive(w) for w in workers)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 5
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers)
    finally:
        parent.kill()


def test_the_second_of_two_writers_of_one_folder_gets_one_line(tmp_path):
    final = tmp_path / "rec"
    with pytest.raises(KitError, match=r"rec: was written by another process meanwhile; its output is kept"):
        with fsutil.atomic_dir(final) as loser:
            (loser / "manifest.json").write_text("loser")
            with fsutil.atomic_dir(final) as winner:  # finishes first
                (winner / "manifest.json").write_text("winner")
    assert (final / "manifest.json").read_text() == "winner"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]


# --- credentials ---------------------------------------------------------------------------------------

KEY = "k3y-0f-b0b-d0-n0t-l3ak"


@pytest.fixture
def kaggle_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("KAGGLE_USERNAME", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    return KEY


def _notebook(path: Path, code: str) -> Path:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code)]
    nbformat.write(nb, str(path))
    return path


def test_a_key_in_a_basic_auth_header_is_refused(tmp_path, kaggle_key):
    import base64

    from kit.kaggle import client as kaggle

    header = base64.b64encode(f"bob:{kaggle_key}".encode()).decode()
    nb = _notebook(tmp_path / "basic_auth.ipynb", f"headers = {{'Authorization': 'Basic {header}'}}")
    with pytest.raises(KitError, match=r"^basic_auth.ipynb: holds a Kaggle credential of this machine"):
        kaggle.push(nb, folder=tmp_path / "k", dry_run=True)
    assert not (tmp_path / "k").exists()


def test_a_key_planted_in_the_bundled_package_is_refused(tmp_path, kaggle_key, monkeypatch):
    from kit.kaggle import client as kaggle, kernel_folder

    root = tmp_path / "checkout"
    (root / "kit").mkdir(parents=True)
    (root / "kit" / "__init__.py").write_text("")
    (root / "kit" / "notes.txt").write_text(f"token: {kaggle_key}\n")
    (root / "pyproject.toml").write_text("[project]\nname = 'kit'\n")
    monkeypatch.setattr(kernel_folder, "_project_root", lambda: root)
    nb = _notebook(tmp_path / "clean.ipynb", "print(1)")
    with pytest.raises(KitError, match=r"^kit/notes.txt \(bundled in the kit wheel\): holds a Kaggle credential"):
        kaggle.push(nb, folder=tmp_path / "k", dry_run=True)
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("text,why", [('{"split": ', "not valid JSON"), ("[1, 2]", "a JSON list, not an object"),
                                      ('{"split": "train"}', "no 'image_size'")])
def test_a_damaged_manifest_is_one_line(tmp_path, text, why):
    from kit.data import records

    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(KitError, match=f"manifest.json: .*{why}"):
        records.read_manifest(tmp_path)


def test_an_unreadable_other_split_csv_is_one_line(tmp_path):
    root = synth.make_competition("siim", tmp_path / "siim", n_train=8, n_test=4, size=32)
    (root / "test.csv").write_bytes(b"image_name,patient_id\n\xff\xfe\x00broken\n")
    with pytest.raises(KitError, match=r"test.csv: not a readable CSV"):
        sources.load_source(root)


def test_a_sample_submission_repeating_an_id_is_named_by_check_and_blend(tmp_path, capsys):
    (tmp_path / "s.csv").write_text("id,target\na,0.1\nb,0.1\na,0.2\n")
    (tmp_path / "sub.csv").write_text("id,target\na,0.1\nb,0.3\n")
    code, err = _run(capsys, "check", tmp_path / "sub.csv", "--sample-submission", tmp_path / "s.csv")
    assert code == 1 and err == [f"{tmp_path / 's.csv'}: duplicate id a (rows 1 and 3)"]
    code, err = _run(capsys, "blend", tmp_path / "sub.csv", "--out", tmp_path / "o.csv", "--sample-submission",
                     tmp_path / "s.csv")
    assert code == 1 and err == [f"kit blend: error: {tmp_path / 's.csv'}: duplicate id a (rows 1 and 3)"]


# --- a reader that closes kit's standard output (`kit VERB | head`) ---------------------------------------


def _with_closed_stdout(tmp: Path, argv: list, *, read_first: bool = False, timeout: int = 120) -> tuple[int, str]:
    """Run ``kit ARGV`` in a process whose standard output is a real pipe that this side closes: at once, or
    after reading one line (``read_first``), as ``| true`` and ``| head -1`` do; (exit status, its stderr)."""
    import subprocess
    import sys

    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with open(tmp / "stderr.txt", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "kit", *map(str, argv)], stdout=subprocess.PIPE, stderr=err,
                                env=env, text=True)
        if read_first:
            assert proc.stdout.readline()
        proc.stdout.close()
        code = proc.wait(timeout=timeout)
        err.seek(0)
        return code, err.read()


def _pipe_inputs(tmp: Path) -> dict[str, list]:
    (tmp / "s.csv").write_text("id,target\na,0.5\nb,0.5\n")
    (tmp / "sub.csv").write_text("id,target\na,0.2\nb,0.9\n")
    comp = synth.make_competition("pcam", tmp / "comp", n_train=8, n_test=0, size=32)
    return {
        "models": ["models"],
        "runs": ["runs", tmp],
        "check": ["check", tmp / "sub.csv", "--sample-submission", tmp / "s.csv"],
        "blend": ["blend", tmp / "sub.csv", tmp / "sub.csv", "--out", tmp / "blend.csv"],
        "records": ["records", comp, "--out", tmp / "rec", "--size", "16", "--folds", "2", "--workers", "1"],
    }


@pytest.mark.parametrize("verb", ["models", "runs", "check", "blend", "records"])
def test_a_closed_standard_output_is_not_a_failure(tmp_path, verb):
    code, err = _with_closed_stdout(tmp_path, _pipe_inputs(tmp_path)[verb])
    assert code == 0, err
    assert "Broken pipe" not in err and "BrokenPipeError" not in err and "Exception ignored" not in err
    if verb == "blend":
        assert pd.read_csv(tmp_path / "blend.csv")["target"].tolist() == [0.2, 0.9]
    if verb == "records":
        assert json.loads((tmp_path / "rec" / "manifest.json").read_text())["count"] == 8


def test_training_finishes_every_fold_when_its_reader_has_gone(tmp_path):
    from records_fixture import write_records

    write_records(tmp_path / "rec", n_folds=2, per_fold=8, size=32)
    run = tmp_path / "run"
    code, err = _with_closed_stdout(tmp_path, ["train", "--records", tmp_path / "rec", "--out", run, "--model",
                                               "tiny_cnn", "--epochs", "2", "--batch", "8", "--verbose", "1"],
                                    read_first=True, timeout=240)
    assert code == 0, err
    assert "Broken pipe" not in err and "Exception ignored" not in err
    assert [json.loads((run / f"fold{k}" / "done.json").read_text())["fold"] for k in (0, 1)] == [0, 1]
    assert (run / "cv.json").is_file() and not (run / "error.txt").exists()


# --- crashes that became one line naming the culprit ------------------------------------------------------


def test_random_bytes_under_a_public_shard_name_are_named(tmp_path, capsys):
    (tmp_path / "D").mkdir()
    shard = tmp_path / "D" / "train00-10.tfrec"
    shard.write_bytes(np.random.default_rng(0).bytes(4000))
    code, err = _run(capsys, "train", "--records", tmp_path / "D", "--out", tmp_path / "run", "--model", "tiny_cnn",
                     "--epochs", "1")
    assert code == 1 and err == [f"kit train: error: {shard}: damaged shard (not TFRecord data at byte 0 (record 1's "
                                 "length checksum is wrong)); download it again"]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("layout", ["siim", "csv"])
def test_rows_ending_in_a_comma_are_named_by_line(tmp_path, capsys, layout):
    root = synth.make_competition("siim", tmp_path / "siim", n_train=8, n_test=0, size=32)
    lines = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join([lines[0]] + [line + "," for line in lines[1:]]) + "\n")
    argv = [root] if layout == "siim" else [root / "train.csv", "--layout", "csv", "--id-col", "image_name",
                                            "--label-col", "target", "--images", root / "jpeg" / "train"]
    code, err = _run(capsys, "records", *argv, "--out", tmp_path / "rec", "--size", "32")
    assert code == 1 and err == [f"kit records: error: {root / 'train.csv'}: 8 rows with 9 fields, the header has 8 "
                                 "(a comma at the end of the row?): lines 2, 3, 4, 5, 6 and 3 more"]
    assert not (tmp_path / "rec").exists()


def test_csv_errors_name_the_file_line_past_blank_lines_and_quoted_line_breaks(tmp_path, capsys):
    root = synth.make_competition("pcam", tmp_path / "pcam", n_train=6, n_test=0, size=32)
    lines = (root / "train_labels.csv").read_text().splitlines()
    bad = lines[4].split(",")[0]
    lines[4] = f"{bad},7"
    lines.insert(2, "")  # pandas skips a blank line: the row after it is one line further down than its count
    (root / "train_labels.csv").write_text("\n".join(lines) + "\n")
    code, err = _run(capsys, "records", root, "--out", tmp_path / "rec", "--size", "32")
    assert code == 1 and err == [f"kit records: error: {root / 'train_labels.csv'}: line 6: label '7' in column "
                                 "'label' is not one of 0, 1"]
    (tmp_path / "s.csv").write_text("id,target\na z,0.5\nb,0.5\n")
    (tmp_path / "sub.csv").write_text('id,target\n"a\nz",0.1\nb,0.2,3\n')  # the long row is on line 4
    code, err = _run(capsys, "check", tmp_path / "sub.csv", "--sample-submission", tmp_path / "s.csv")
    assert code == 1 and err == [f"{tmp_path / 'sub.csv'}: line 4 has 3 fields, the header has 2"]


@pytest.fixture(scope="module")
def siim_meta_run(tmp_path_factory):
    """(SIIM download of 32 px JPEGs, a tiny_cnn run trained with --meta on its records)."""
    base = tmp_path_factory.mktemp("siim_meta")
    comp = synth.make_competition("siim", base / "comp", n_train=16, n_test=4, size=32)
    assert cli.main(["records", str(comp), "--out", str(base / "rec"), "--size", "32", "--folds", "2",
                     "--workers", "1"]) == 0
    assert cli.main(["train", "--records", str(base / "rec"), "--out", str(base / "run"), "--model", "tiny_cnn",
                     "--epochs", "1", "--batch", "8", "--verbose", "0", "--meta"]) == 0
    return comp, base / "run"


@pytest.mark.parametrize("cut", [0.3, 0.8])  # in the header (Pillow cannot open it), in the pixels (it can)
def test_predict_from_a_download_names_a_truncated_test_image(tmp_path, capsys, siim_meta_run, cut):
    comp, run = siim_meta_run
    download = tmp_path / "comp"
    shutil.copytree(comp, download)
    image = sorted((download / "jpeg" / "test").glob("*.jpg"))[1]
    data = image.read_bytes()
    image.write_bytes(data[: int(len(data) * cut)])
    code, err = _run(capsys, "predict", "--run", run, "--records", download, "--out", tmp_path / "p.csv")
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"kit predict: error: {image}: corrupt image (")
    assert err[0].endswith("); every test image is needed for a submission") and "function_node" not in err[0]
    assert not (tmp_path / "p.csv").exists()


def test_predict_with_meta_names_a_metadata_column_the_download_lacks(tmp_path, capsys, siim_meta_run):
    comp, run = siim_meta_run
    download = tmp_path / "comp"
    shutil.copytree(comp, download)
    test = pd.read_csv(download / "test.csv")
    test.drop(columns=["age_approx"]).to_csv(download / "test.csv", index=False)
    code, err = _run(capsys, "predict", "--run", run, "--records", download, "--out", tmp_path / "p.csv")
    assert code == 1 and err == [f"kit predict: error: {download / 'test.csv'}: no column 'age_approx', which the "
                                 "run's model takes as input (--meta); predict test records that hold it"]
    assert not (tmp_path / "p.csv").exists()


# --- weak messages made plain --------------------------------------------------------------------------


def test_a_large_legal_image_gets_one_warning_line_naming_it(tmp_path, capsys, monkeypatch):
    root = synth.make_competition("pcam", tmp_path / "pcam", n_train=6, n_test=0, size=40)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 x 40 lies between the limit and twice it
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's own warning, nameless, must not reach the user
        code = cli.main(["records", str(root), "--out", str(tmp_path / "rec"), "--size", "32", "--folds", "2",
                         "--workers", "1"])
    err = capsys.readouterr().err
    assert code == 0
    lines = [line.strip() for line in err.replace("\r", "\n").splitlines() if "warning" in line.lower()]
    paths = sorted(str(p) for p in (root / "train").glob("*.tif"))
    assert sorted(lines) == [f"warning: {p}: 1,600 pixels, above Pillow's decompression-bomb warning size of 1,000; "
                             "read all the same (twice that is refused as a bad image)" for p in paths]
    assert "DecompressionBombWarning" not in err


def test_a_batch_larger_than_a_fold_s_training_images_is_refused_before_training(tmp_path, capsys):
    from records_fixture import write_records

    write_records(tmp_path / "rec", n_folds=3, per_fold=10, size=32)
    code, err = _run(capsys, "train", "--records", tmp_path / "rec", "--out", tmp_path / "run", "--model", "tiny_cnn",
                     "--batch", "100000", "--strategy", "cpu")
    assert code == 1 and err == ["kit train: error: batch: 100000 images per step is more than the 20 training images "
                                 "of fold 0; pass --batch 20 or less"]
    assert not (tmp_path / "run").exists()


def test_check_quotes_ids_so_an_edge_space_shows(tmp_path, capsys):
    (tmp_path / "s.csv").write_text("id,target\na,0.5\nb,0.5\n")
    (tmp_path / "sub.csv").write_text("id,target\na ,0.5\nb,x\n")
    code, err = _run(capsys, "check", tmp_path / "sub.csv", "--sample-submission", tmp_path / "s.csv")
    sub, s = tmp_path / "sub.csv", tmp_path / "s.csv"
    assert code == 1 and err == [f"{sub}: 1 id not in {s}, e.g. 'a ' (row 1)", f"{sub}: 1 id of {s} missing, e.g. 'a'",
                                 f"{sub}: 1 value not a number, e.g. 'b' target='x'"]
    # the messages every verb shares quote an id where it would hide something, and only there
    (tmp_path / "sub2.csv").write_text("id,target\na ,0.5\nb,0.5\n")
    code, err = _run(capsys, "blend", tmp_path / "sub2.csv", "--out", tmp_path / "o.csv", "--sample-submission", s)
    assert code == 1 and err == [f"kit blend: error: {tmp_path / 'sub2.csv'}: 1 id is not in {s}, e.g. 'a ' (row 1)"]
    (tmp_path / "sub3.csv").write_text("id,target\nc,0.5\nb,0.5\n")
    code, err = _run(capsys, "blend", tmp_path / "sub3.csv", "--out", tmp_path / "o.csv", "--sample-submission", s)
    assert code == 1 and err == [f"kit blend: error: {tmp_path / 'sub3.csv'}: 1 id is not in {s}, e.g. c (row 1)"]


def test_an_out_folder_that_cannot_be_renamed_onto_is_named(tmp_path, capsys, monkeypatch):
    root = synth.make_competition("pcam", tmp_path / "pcam", n_train=6, n_test=0, size=32)
    out = tmp_path / "mnt"
    out.mkdir()  # an empty volume's mount point: kit may write into it, never rename onto it
    real = os.replace

    def busy(src, dst):
        if Path(dst) == out:
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))  # as a mount point answers, with no path
        return real(src, dst)

    monkeypatch.setattr(os, "replace", busy)
    code, err = _run(capsys, "records", root, "--out", out, "--size", "32", "--folds", "2", "--workers", "1")
    assert code == cli.EXIT_ENVIRONMENT and err[-1] == (
        f"kit records: error: {out}: Device or resource busy (a mount point or a path in use cannot be replaced; "
        "give a new folder inside it)")
    assert list(out.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["mnt", "pcam"]


def test_a_symbolic_link_loop_is_a_bad_image(tmp_path, capsys):
    root = synth.make_competition("pcam", tmp_path / "pcam", n_train=8, n_test=0, size=32)
    loop = sorted((root / "train").glob("*.tif"))[2]
    loop.unlink()
    loop.symlink_to(loop.name)
    code, err = _run(capsys, "records", root, "--out", tmp_path / "r1", "--size", "32", "--folds", "2",
                     "--workers", "1")
    assert code == 1 and err[-1] == (f"kit records: error: {loop}: cannot read (Too many levels of symbolic links) "
                                     "(pass --skip-bad to leave it out)")
    assert not (tmp_path / "r1").exists()
    code, err = _run(capsys, "records", root, "--out", tmp_path / "r2", "--size", "32", "--folds", "2",
                     "--workers", "1", "--skip-bad")
    manifest = json.loads((tmp_path / "r2" / "manifest.json").read_text())
    assert code == 0 and manifest["count"] == 7
    assert manifest["skipped"] == [{"path": str(loop), "reason": "cannot read (Too many levels of symbolic links)"}]


def test_a_very_long_id_keeps_the_reason_at_the_end_of_its_line(tmp_path, capsys):
    long_id = "x" * 4985 + "_the_end_of_the_id"
    (tmp_path / "train.csv").write_text(f"id,label\n{long_id},0\nb,1\n")
    code, err = _run(capsys, "records", tmp_path / "train.csv", "--layout", "csv", "--id-col", "id", "--label-col",
                     "label", "--out", tmp_path / "rec", "--size", "32")
    assert code == 1 and err == [f"kit records: error: {tmp_path / 'train.csv'}: line 2: image "
                                 f"'{'x' * 59}...x_the_end_of_the_id' not found in {tmp_path}"]
