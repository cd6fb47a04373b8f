"""`kit runs`: run folders found, their states, the sort, --json / --names / --top, and no TensorFlow at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit import runs
from kit.cli import main

OLD = time.time() - 3 * 3600  # three hours ago: no longer running


def _run(folder: Path, *, planned=(0, 1, 2), done=(), scores=None, model="tiny_cnn", mtime=OLD, error=None,
         active=None, records="records/siim-32", metric="auc", competition="") -> Path:
    """A run folder as kit.train leaves it: config.toml, fold{k}/done.json for ``done``, cv.json when scored."""
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
        "from kit.cli import main\n"
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


def test_a_run_stopped_by_its_time_limit_is_resumable_even_while_its_files_are_fresh(tmp_path, capsys):
    run = _run(tmp_path / "runs" / "timed", done=(0,), scores={0: 0.8}, active=1)  # state.json written a moment ago
    (run / "stopped.json").write_text(json.dumps({"reason": "time limit", "fold": 1, "epochs_done": 2, "epochs": 3}))
    assert runs.read_run(run).state == "stopped (resume)"
    assert main(["runs", str(tmp_path / "runs")]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith("  stopped (resume)")
    (run / "fold1" / "done.json").write_text(json.dumps({"fold": 1, "score": 0.8}))
    (run / "fold2" / "done.json").write_text(json.dumps({"fold": 2, "score": 0.8}))
    assert runs.read_run(run).state == "finished"
