"""`kit runs`: run folders found, their states, the sort, --json / --names / --top, and no TensorFlow at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.runs import listing as runs
from kit.cli.app import main

OLD = time.time() - 3 * 3600  # three hours ago: no longer running


def _run(folder: Path, *, planned=(0, 1, 2), done=(), scores=None, model="tiny_cnn", mtime=OLD, error=None,
         active=None, records="records/siim-32", metric="auc", competition="") -> Path:
    """A run folder as kit.training.train leaves it: config.toml, fold{k}/done.json for ``done``, cv.json when scored."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(f'records = "{records}"\nmodel = "{model}"\nsize = 32\nepochs = 3\n'
                                        f'folds = {list(planned)}\nmetric = "{metric}"\ncompetition = "{competition}"\n')
    for k in planned:
        (folder / f"fold{k}").mkdir()
    for k in done:
        (folder / f"fold{k}" / "done.json").write_text(json.dumps({"fold": k, "score": scores[k]}))
    if scores and done:
        vals = [scores[k] for k in done]
        mean = sum(vals) / len(vals)
        std = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else 0.0
        (folder / "cv.json").write_text(json.dumps({"metric": metric, "folds": {str(k): scores[k] for k in done},
                                                    "overall": mean - 0.01, "fold_mean": mean, "fold_std": std}))
    if active is not None:
        (folder / f"fold{active}" / "state.json").write_text("{}")
    if error:
        (folder / "error.txt").write_text(error + "\n")
    for p in folder.rglob("*"):
        os.utime(p, (mtime, mtime))
    if active is not None:  # the fold in progress wrote its state a moment ago
        os.utime(folder / f"fold{active}" / "state.json", None)
    return folder


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Path:
    root = tmp_path / "runs"
    _run(root / "b0", done=(0, 1, 2), scores={0: 0.90, 1: 0.92, 2: 0.88})
    _run(root / "siim" / "b3", done=(0, 1, 2), scores={0: 0.95, 1: 0.93, 2: 0.94}, model="efficientnet_b3")
    _run(root / "live", done=(0,), scores={0: 0.80}, active=1)
    _run(root / "broken", done=(0,), scores={0: 0.85}, error="fold 1: RuntimeError: the loss became NaN")
    _run(root / "paused", done=(0, 1), scores={0: 0.70, 1: 0.72})
    _run(root / "fresh")  # started three hours ago, no fold finished, not running: resumable
    stack = root / "stack1"  # as `kit stack` writes it: config.toml lists the image runs; no backbone
    for k in (0, 1):
        (stack / f"fold{k}").mkdir(parents=True)
        (stack / f"fold{k}" / "done.json").write_text("{}")
    (stack / "config.toml").write_text('records = "records/siim-32"\nruns = ["runs/b0", "runs/siim/b3"]\n'
                                       'models = ["lightgbm"]\nmetric = "auc"\n')
    (stack / "cv.json").write_text(json.dumps({"metric": "auc", "folds": {"0": 0.96, "1": 0.97},
                                               "overall": 0.965, "fold_mean": 0.965, "fold_std": 0.007}))
    for p in stack.rglob("*"):
        os.utime(p, (OLD, OLD))
    (root / "notes").mkdir()  # not a run: skipped
    return root


def test_every_run_found_with_its_state_and_scores(runs_dir):
    rows = {r.name: r for r in runs.scan([runs_dir])}
    assert set(rows) == {"b0", "b3", "live", "broken", "paused", "fresh", "stack1"}
    assert {n: r.state for n, r in rows.items()} == {
        "b0": "finished", "b3": "finished", "live": "running", "broken": "error", "paused": "resumable",
        "fresh": "resumable", "stack1": "finished"}
    b0 = rows["b0"]
    assert (b0.model, b0.size, b0.epochs, b0.folds_done, b0.folds_planned) == ("tiny_cnn", 32, 3, 3, 3)
    assert b0.cv == pytest.approx(0.90) and b0.cv_std == pytest.approx(0.02) and b0.pooled == pytest.approx(0.89)
    assert (rows["paused"].folds_done, rows["paused"].folds_planned) == (2, 3)
    assert rows["broken"].error == "fold 1: RuntimeError: the loss became NaN"
    assert (rows["stack1"].kind, rows["stack1"].model, rows["stack1"].folds_done, rows["stack1"].folds_planned) == (
        "stack", "stack (lightgbm)", 2, 2)
    assert rows["fresh"].cv is None
    assert rows["b0"].when == pytest.approx(OLD, abs=1)


def test_sorted_by_cv_unscored_last_and_other_sorts(runs_dir):
    names = [r.name for r in runs.scan([runs_dir])]
    assert names == ["stack1", "b3", "b0", "broken", "live", "paused", "fresh"]
    assert [r.name for r in runs.scan([runs_dir], sort="pooled")][:3] == ["stack1", "b3", "b0"]
    assert runs.scan([runs_dir], sort="when")[0].name == "live"
    assert [r.name for r in runs.scan([runs_dir], top=2)] == ["stack1", "b3"]


def test_running_means_a_change_within_the_window(runs_dir):
    live = runs_dir / "live"
    assert runs.read_run(live).state == "running"
    paused = runs_dir / "paused"
    (paused / "cv.json").write_text((paused / "cv.json").read_text())  # what `kit report` does: no training
    assert runs.read_run(paused).state == "resumable" and runs.read_run(paused).when == pytest.approx(OLD, abs=1)
    later = time.time() + runs.RUNNING_WITHIN_S + 1
    assert runs.read_run(live, now=later).state == "resumable"


def test_cli_table_json_and_names(runs_dir, capsys):
    assert main(["runs", str(runs_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split() == ["run", "model", "records", "size", "epochs", "folds", "metric", "cv", "+-", "pooled",
                                "when", "state"]
    b3 = next(line for line in table if line.startswith(str(runs_dir / "siim" / "b3")))
    assert b3.split()[1:10] == ["efficientnet_b3", "records/siim-32", "32", "3", "3/3", "auc", "0.9400", "0.0100",
                                "0.9300"]
    assert b3.split()[-1] == "finished"
    assert "    error: fold 1: RuntimeError: the loss became NaN" in table

    assert main(["runs", str(runs_dir), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in data][:2] == ["stack1", "b3"]
    assert data[1]["folds"] == {"0": 0.95, "1": 0.93, "2": 0.94} and data[1]["when_iso"].endswith("Z")
    assert (data[1]["records"], data[1]["metric"], data[1]["competition"]) == ("records/siim-32", "auc", None)

    assert main(["runs", str(runs_dir), "--top", "2", "--names"]) == 0
    assert capsys.readouterr().out.split() == [str(runs_dir / "stack1"), str(runs_dir / "siim" / "b3")]


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["runs", str(tmp_path / "nope")]) == 1
    assert capsys.readouterr().err.strip() == f"kit runs: error: {tmp_path / 'nope'}: no such folder"
    assert main(["runs", str(tmp_path), "--top", "0"]) == 1
    assert "--top: expects at least 1" in capsys.readouterr().err
    assert main(["runs", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith("no runs found")


def test_kit_runs_never_imports_tensorflow_keras_or_jax(runs_dir):
    code = (
        "import sys\n"
        "from kit.cli.app import main\n"
        f"assert main(['runs', {str(runs_dir)!r}, '--json']) == 0\n"
        "print(sorted(m for m in ('tensorflow', 'keras', 'jax', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


# --- runs of other records or metrics are never ranked together -----------------------------------------------


@pytest.fixture()
def mixed_dir(runs_dir: Path) -> Path:
    """runs_dir plus a HAM10000 run (other records, balanced accuracy) and a SIIM run at 64 px (other records)."""
    _run(runs_dir / "ham" / "b0", done=(0, 1, 2), scores={0: 0.99, 1: 0.98, 2: 0.97}, records="records/ham-32",
         metric="balanced_accuracy", competition="ham10000")
    _run(runs_dir / "siim64", done=(0, 1, 2), scores={0: 0.96, 1: 0.96, 2: 0.96}, records="records/siim-64")
    return runs_dir


def test_table_and_json_say_what_each_run_trained_on(mixed_dir, capsys):
    assert main(["runs", str(mixed_dir)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["run", "model", "records", "competition"]  # a run names its competition
    ham = next(line for line in table if line.startswith(str(mixed_dir / "ham" / "b0")))
    assert ham.split()[1:8] == ["tiny_cnn", "records/ham-32", "ham10000", "32", "3", "3/3", "balanced_accuracy"]
    assert main(["runs", str(mixed_dir), "--json"]) == 0
    rows = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert (rows["b0"]["records"], rows["b0"]["competition"]) == ("records/siim-32", None)


def test_top_and_names_refuse_runs_of_several_groups(mixed_dir, capsys):
    groups = ("records/siim-32 auc; records/ham-32 balanced_accuracy; records/siim-64 auc")
    for flags, flag in ((["--top", "2"], "--top"), (["--names"], "--names"), (["--top", "1", "--names"], "--top")):
        assert main(["runs", str(mixed_dir), *flags]) == 1
        captured = capsys.readouterr()
        assert captured.out == ""
        err = captured.err.strip().splitlines()
        assert len(err) == 1
        assert err[0].startswith(f"kit runs: error: {flag}: the runs belong to 3 (records, metric) groups whose "
                                 "scores do not compare: ")
        assert err[0].endswith("; pick one with --records DIR and --metric NAME")
        assert set(err[0].split("compare: ")[1].split("; pick")[0].split("; ")) == set(groups.split("; "))
    # one metric still spans two records folders: only --records is named
    assert main(["runs", str(mixed_dir), "--metric", "auc", "--names"]) == 1
    assert capsys.readouterr().err.strip().endswith("groups whose scores do not compare: records/siim-32 auc; "
                                                    "records/siim-64 auc; pick one with --records DIR")
    # the listing itself shows every run
    assert main(["runs", str(mixed_dir)]) == 0
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith(str(mixed_dir))]) == 9


def test_records_metric_and_competition_filters_pick_one_group(mixed_dir, capsys, monkeypatch):
    monkeypatch.chdir(mixed_dir.parent)
    # records compared as resolved paths: ./records/siim-32/ is the folder config.toml calls records/siim-32
    assert main(["runs", str(mixed_dir), "--records", "./records/siim-32/", "--top", "2", "--names"]) == 0
    assert capsys.readouterr().out.split() == [str(mixed_dir / "stack1"), str(mixed_dir / "siim" / "b3")]
    assert main(["runs", str(mixed_dir), "--metric", "balanced_accuracy", "--names"]) == 0
    assert capsys.readouterr().out.split() == [str(mixed_dir / "ham" / "b0")]
    assert main(["runs", str(mixed_dir), "--competition", "ham10000", "--json"]) == 0
    assert [d["name"] for d in json.loads(capsys.readouterr().out)] == ["b0"]
    assert main(["runs", str(mixed_dir), "--records", "records/none", "--names"]) == 0
    assert capsys.readouterr().out.strip() == ""


# --- damaged and unreadable runs ---------------------------------------------------------------------------


@pytest.mark.parametrize("file, text, state, problem", [
    ("cv.json", '{"metric": "auc", "folds": [0.9, 0.8], "fold_mean": 0.85}', "bad cv.json",
     'cv.json: "folds" is a list, expected an object of fold: score'),
    ("cv.json", '{"metric": {"name": "auc"}, "folds": {"0": 0.9}}', "bad cv.json",
     'cv.json: "metric" is an object, expected a metric name'),
    ("cv.json", '[1, 2]', "bad cv.json", "cv.json: a list, expected an object"),
    ("cv.json", '{"metric": "auc", "folds": {"0": 0.9', "bad cv.json", "cv.json: not valid JSON"),
    ("config.toml", 'model = "tiny_cnn"\nfolds = "0,1"\n', "bad config.toml",
     'config.toml: "folds" is the text "0,1", expected a list of fold numbers'),
    ("config.toml", 'model = "tiny_cnn"\nfolds = [0, 1\n', "bad config.toml", "config.toml: not valid TOML"),
])
def test_a_run_with_an_odd_file_is_listed_as_bad_and_the_others_still_are(runs_dir, capsys, file, text, state,
                                                                           problem):
    (runs_dir / "paused" / file).write_text(text)
    assert main(["runs", str(runs_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"kit runs: warning: {runs_dir / 'paused'}: {problem}; listed as {state}"]
    table = captured.out.splitlines()
    assert len([line for line in table if line.startswith(str(runs_dir))]) == 7  # every run, the bad one too
    row = next(line for line in table if line.startswith(str(runs_dir / "paused")))
    assert row.endswith(state)
    assert table[table.index(row) + 1] == f"    problem: {problem}"
    assert main(["runs", str(runs_dir), "--json"]) == 0
    bad = next(d for d in json.loads(capsys.readouterr().out) if d["name"] == "paused")
    assert (bad["state"], bad["problem"]) == (state, problem)


def test_an_unreadable_run_folder_is_skipped_with_a_warning(runs_dir, capsys, monkeypatch):
    locked = runs_dir / "siim"
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads through permissions: the file system's refusal, as a user would get it
        real = Path.iterdir

        def iterdir(self):
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return real(self)

        monkeypatch.setattr(Path, "iterdir", iterdir)
    try:
        assert main(["runs", str(runs_dir), "--names"]) == 0
    finally:
        locked.chmod(0o755)
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [
        f"kit runs: warning: {locked}: cannot be read (Permission denied); skipped"]
    assert str(runs_dir / "b0") in captured.out.split() and len(captured.out.split()) == 6


def test_what_kit_report_writes_is_no_training_activity(runs_dir):
    paused = runs_dir / "paused"
    (paused / "report.json").write_text("{}")
    (paused / "report.html").write_text("<html></html>")
    row = runs.read_run(paused)
    assert row.state == "resumable" and row.when == pytest.approx(OLD, abs=1)


# --- kit runs merge ------------------------------------------------------------------------------------

_IDENTITY = {"competition": None, "source": "synthetic", "count": 48, "n_folds": 3, "fold_seed": 0,
             "classes": ["benign", "malignant"], "image_size": 32,
             "folds": {"0": 16, "1": 16, "2": 16}}


def _part(folder: Path, folds, *, identity=None, lr_max=0.003, done=True) -> Path:
    """A finished `kit train` run of ``folds`` (hand-made: config, records identity, per fold done, oof, model)."""
    folder.mkdir(parents=True)
    (folder / "config.toml").write_text(f'records = "records/a"\nout = "{folder}"\nfolds = {list(folds)}\n'
                                        f'model = "tiny_cnn"\nsize = 32\nepochs = 2\nlr_max = {lr_max}\n'
                                        f'metric = "auc"\nclasses = ["benign", "malignant"]\nn_classes = 2\n'
                                        'secondary_metrics = []\n')
    (folder / "records.json").write_text(json.dumps(identity or _IDENTITY))
    for k in folds:
        fdir = folder / f"fold{k}"
        fdir.mkdir()
        (fdir / "best.keras").write_bytes(b"model")
        (fdir / "oof.csv").write_text("image_name,target,pred,fold\n" + "".join(
            f"img_{k}_{i},{i % 2},{0.1 + 0.2 * (i % 2) + 0.01 * i},{k}\n" for i in range(4)))
        if done:
            (fdir / "done.json").write_text(json.dumps({"fold": k, "metric": "auc", "score": 1.0, "secondary": {}}))
    return folder


def _merge_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(["runs", "merge", *map(str, argv)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err.strip()


def test_merge_joins_the_folds_of_two_runs(tmp_path, capsys):
    a, b = _part(tmp_path / "a", [0, 1]), _part(tmp_path / "b", [2])
    code, out, err = _merge_cli(capsys, a, b, "--out", tmp_path / "m")
    assert (code, err) == (0, "")
    m = tmp_path / "m"
    assert "3/3" in out and "finished" in out
    lines = (m / "oof.csv").read_text().splitlines()
    assert lines[0] == "image_name,target,pred,fold"
    assert [line.split(",")[-1] for line in lines[1:]] == ["0"] * 4 + ["1"] * 4 + ["2"] * 4
    cv = json.loads((m / "cv.json").read_text())
    assert cv["folds"] == {"0": 1.0, "1": 1.0, "2": 1.0} and cv["fold_mean"] == 1.0 and cv["fold_std"] == 0.0
    assert cv["overall"] == 1.0
    import tomllib

    assert tomllib.loads((m / "config.toml").read_text())["folds"] == [0, 1, 2]
    assert json.loads((m / "records.json").read_text()) == _IDENTITY
    assert sorted(p.name for p in m.iterdir()) == ["config.toml", "cv.json", "fold0", "fold1", "fold2", "oof.csv",
                                                   "records.json"]
    assert runs.read_run(m).state == "finished"


def _refused(capsys, tmp_path, *argv) -> str:
    code, out, err = _merge_cli(capsys, *argv)
    assert code == 1 and out == ""
    assert not (tmp_path / "m").exists() and not list(tmp_path.glob(".m.*"))
    return err


def test_merge_refuses_other_records(tmp_path, capsys):
    a = _part(tmp_path / "a", [0, 1])
    b = _part(tmp_path / "b", [2], identity={**_IDENTITY, "count": 36})
    assert _refused(capsys, tmp_path, a, b, "--out", tmp_path / "m") == (
        f"kit runs: error: {b}: trained on different records from {a} (count: 36 here, 48 there)")


def test_merge_refuses_other_settings_naming_the_first(tmp_path, capsys):
    a, b = _part(tmp_path / "a", [0, 1]), _part(tmp_path / "b", [2], lr_max=0.001)
    assert _refused(capsys, tmp_path, a, b, "--out", tmp_path / "m") == (
        f"kit runs: error: {b}: different settings from {a}: lr_max is 0.001 here, 0.003 there; runs to merge "
        "differ in their folds only")


def test_merge_refuses_a_fold_twice(tmp_path, capsys):
    a, b = _part(tmp_path / "a", [0, 1]), _part(tmp_path / "b", [1, 2])
    assert _refused(capsys, tmp_path, a, b, "--out", tmp_path / "m") == (
        f"kit runs: error: fold 1: trained in both {a} and {b}; merge each fold from one run only")


def test_merge_refuses_a_fold_still_running(tmp_path, capsys):
    a, b = _part(tmp_path / "a", [0, 1]), _part(tmp_path / "b", [2], done=False)
    assert _refused(capsys, tmp_path, a, b, "--out", tmp_path / "m") == (
        f"kit runs: error: {b}: fold 2 has not finished (no fold2/done.json); finish it with "
        f"`kit train --resume --out {b}` before merging")


@pytest.mark.parametrize("damage, line", [
    (lambda f: (f / "done.json").write_text("{not json"), "{f}/done.json: not valid JSON"),
    (lambda f: (f / "oof.csv").unlink(), "{f}/oof.csv: missing, but fold 2 of {b} is marked finished"),
    (lambda f: (f / "best.keras").unlink(), "{f}/best.keras: missing, but fold 2 of {b} is marked finished"),
])
def test_merge_refuses_a_damaged_fold(tmp_path, capsys, damage, line):
    a, b = _part(tmp_path / "a", [0, 1]), _part(tmp_path / "b", [2])
    damage(b / "fold2")
    assert _refused(capsys, tmp_path, a, b, "--out", tmp_path / "m") == (
        "kit runs: error: " + line.format(f=b / "fold2", b=b))


def test_merge_refuses_an_existing_out_and_one_run(tmp_path, capsys):
    a, b = _part(tmp_path / "a", [0, 1]), _part(tmp_path / "b", [2])
    (tmp_path / "m").mkdir()
    assert _merge_cli(capsys, a, b, "--out", tmp_path / "m") == (
        1, "", f"kit runs: error: {tmp_path / 'm'}: already exists; choose a new --out (kit never overwrites a run)")
    (tmp_path / "m").rmdir()
    assert _refused(capsys, tmp_path, a, "--out", tmp_path / "m") == (
        "kit runs: error: runs merge: give at least two run folders to merge")
    assert _refused(capsys, tmp_path, a, b) == "kit runs: error: runs merge: --out RUN is required (the merged run "\
                                               "folder to write)"


def test_listing_refuses_out_without_merge(tmp_path, capsys):
    assert main(["runs", str(tmp_path), "--out", str(tmp_path / "m")]) == 1
    assert capsys.readouterr().err.strip() == "kit runs: error: --out: only with `kit runs merge RUN_A RUN_B ... --out RUN`"


@pytest.mark.slow
def test_merged_partial_runs_equal_one_run_over_all_folds(tmp_path, capsys):
    """Folds 0,1 and fold 2 trained as two runs (same seed) and merged: the out-of-fold predictions byte for byte
    and the CV summary equal one `kit train` over folds 0,1,2 (CPU); the verbs that take a run accept it."""
    sys.path.insert(0, str(Path(__file__).parent))
    from records_fixture import write_records

    from kit.ensemble import blend, predict
    from kit.training import train
    from kit.training.config import Config

    write_records(tmp_path / "recs", n_folds=3, per_fold=16, size=32)

    def trained(name, folds):
        cfg = Config(records=str(tmp_path / "recs"), out=str(tmp_path / name), model="tiny_cnn", epochs=2, batch=8,
                     lr_start=1e-3, lr_max=3e-3, lr_min=1e-6, lr_ramp_epochs=1, lr_sustain_epochs=0, lr_decay=0.8,
                     augment="default", verbose=0, strategy="cpu", seed=1, folds=folds)
        return train.train_folds(cfg, log=lambda _: None).run

    whole, first, second = trained("all", (0, 1, 2)), trained("a", (0, 1)), trained("b", (2,))
    assert main(["runs", "merge", str(first), str(second), "--out", str(tmp_path / "m")]) == 0
    merged = tmp_path / "m"
    assert (merged / "oof.csv").read_bytes() == (whole / "oof.csv").read_bytes()
    assert json.loads((merged / "cv.json").read_text()) == json.loads((whole / "cv.json").read_text())
    capsys.readouterr()
    assert predict.load_run(merged).folds == [0, 1, 2]
    fit = blend.fit_weights([merged, whole])  # what `kit blend --fit --oof` fits
    assert fit.member_scores[0] == fit.member_scores[1]
    assert main(["runs", str(merged)]) == 0
    assert "3/3" in capsys.readouterr().out
    assert main(["report", str(merged), "--no-gradcam"]) == 0
    assert (merged / "report.json").is_file()


def test_a_run_stopped_by_its_time_limit_is_resumable_even_while_its_files_are_fresh(tmp_path, capsys):
    run = _run(tmp_path / "runs" / "timed", done=(0,), scores={0: 0.8}, active=1)  # state.json written a moment ago
    (run / "stopped.json").write_text(json.dumps({"reason": "time limit", "fold": 1, "epochs_done": 2, "epochs": 3}))
    assert runs.read_run(run).state == "stopped (resume)"
    assert main(["runs", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("  stopped (resume)")
    (run / "fold1" / "done.json").write_text(json.dumps({"fold": 1, "score": 0.8}))
    (run / "fold2" / "done.json").write_text(json.dumps({"fold": 2, "score": 0.8}))
    assert runs.read_run(run).state == "finished"
