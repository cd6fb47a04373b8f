"""`kit demo --tiny` end to end: every promised file, member CV AUC, a blend that passes `kit check`."""

import contextlib
import io
import json
import re

import pandas as pd
import pytest

from kit.cli import app as cli, demo
from kit.ensemble import submission


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny demo run shared by the tests below (it trains two members over three folds)."""
    out = tmp_path_factory.mktemp("demo") / "out"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        status = cli.main(["demo", "--out", str(out), "--tiny"])
    return out, status, buf.getvalue()


def test_tiny_demo_writes_every_promised_file(tiny):
    out, status, _ = tiny
    assert status == 0
    comp = out / "competition"
    assert {p.name for p in comp.iterdir()} >= {"train.csv", "test.csv", "sample_submission.csv", "jpeg"}
    for split, n in (("train", demo.TINY.n_train), ("test", demo.TINY.n_test)):
        manifest = json.loads((out / "records" / split / "manifest.json").read_text())
        shards = sorted((out / "records" / split).glob(f"{split}*.tfrec"))
        assert manifest["count"] == n and [s.name for s in shards] == sorted(manifest["shards"])
        # shard names carry their counts, which add up to the images written
        assert sum(int(s.stem.split("-")[1]) for s in shards) == n
    for name in demo.MEMBERS:
        run = out / "runs" / name
        assert (run / "config.toml").is_file()
        assert sorted(p.parent.name for p in run.glob("fold*/best.keras")) == ["fold0", "fold1", "fold2"]
        oof = pd.read_csv(run / "oof.csv")
        assert list(oof.columns) == ["image_name", "target", "pred", "fold"] and len(oof) == demo.TINY.n_train
        assert {p.name for p in (run / "plots").glob("*.png")} == {"learning_curves.png", "roc.png", "lr.png"}
        assert (out / "submissions" / f"{name}.csv").is_file() and (out / "submissions" / f"{name}.json").is_file()
    blend = pd.read_csv(out / "submissions" / "blend.csv")
    sample = pd.read_csv(comp / "sample_submission.csv")
    assert list(blend.columns) == ["image_name", "target"] and list(blend.image_name) == list(sample.image_name)
    kernel = out / "kernel"
    assert (kernel / "kernel-metadata.json").is_file()
    meta = json.loads((kernel / "kernel-metadata.json").read_text())
    assert (kernel / meta["code_file"]).is_file() and meta["code_file"].endswith(".ipynb")
    # kit's wheel travels once, embedded in the install cell (`kaggle kernels push` sends the notebook only)
    assert list(kernel.glob("*.whl")) == []
    assert (kernel / meta["code_file"]).read_text().count("_KIT_WHEEL_B64 = (") == 1


def test_tiny_demo_members_learn_and_the_blend_is_scored(tiny):
    out, _, text = tiny
    scores = {}
    for name in demo.MEMBERS:
        cv = json.loads((out / "runs" / name / "cv.json").read_text())
        assert cv["metric"] == "auc" and set(cv["folds"]) == {"0", "1", "2"}
        # CV AUC as the mean of the folds' AUCs. The pooled "overall" is not asserted: after a few
        # epochs each fold's model squashes its outputs differently, so pooling them can score well
        # below every fold (the "folds" column below is the mean of the folds' own AUCs).
        assert sum(cv["folds"].values()) / 3 >= 0.85, (name, cv)
        assert cv["fold_mean"] == pytest.approx(sum(cv["folds"].values()) / 3)
        assert 0.5 <= cv["overall"] <= 1.0
        scores[name] = cv["overall"]
    # the closing summary prints the blend's OOF AUC beside each member's, from the same numbers
    summary = text[text.rindex("out-of-fold AUC:"):]
    fold_means = {}
    for name, score in scores.items():
        row = re.search(rf"^  {name}\s+{score:.4f}\s+(\d\.\d{{4}})\s+(\d\.\d\d)$", summary, re.M)
        assert row, summary
        fold_means[name] = float(row.group(1))
        assert fold_means[name] >= 0.85
    blend_line = re.search(r"^  blend\s+(\d\.\d{4})\s+\(rank blend", summary, re.M)
    assert blend_line and float(blend_line.group(1)) >= max(fold_means.values()) - 5e-5, summary
    # per-epoch progress and per-fold scores were shown as training went
    assert len(re.findall(r"val_metric: \d", text)) == 2 * 3 * demo.TINY.epochs
    assert len(re.findall(r"^fold \d: auc \d\.\d{4} \(best epoch \d+\)$", text, re.M)) == 2 * 3


def test_tiny_demo_blend_passes_kit_check(tiny, capsys):
    out, _, text = tiny
    blend, sample = out / "submissions" / "blend.csv", out / "competition" / "sample_submission.csv"
    assert submission.check_submission(blend, sample) == []
    assert cli.main(["check", str(blend), "--sample-submission", str(sample)]) == 0
    summary = text[text.rindex("submissions:"):]
    for name in [*demo.MEMBERS, "blend"]:
        assert str(out / "submissions" / f"{name}.csv") in summary
        assert str(out / "runs" / name / "plots") in summary or name == "blend"
    assert "passes kit check" in summary and str(out / "kernel") in summary


def test_demo_refuses_a_non_empty_out(tmp_path, capsys):
    (tmp_path / "keep.txt").write_text("mine")
    assert cli.main(["demo", "--out", str(tmp_path), "--tiny"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"kit demo: error: {tmp_path}: already exists and is not empty; pass another --out or remove it"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_tiny_demo_ends_by_naming_each_members_report(tiny):
    out, _, text = tiny
    tail = text.rstrip().splitlines()[-len(demo.MEMBERS):]
    for name, line in zip(demo.MEMBERS, tail):
        path = out / "runs" / name / "report.html"
        assert line.split() == [name, str(path)]
        page = path.read_text()
        assert page.count("<section id=") == 10 and "data:image/png;base64," in page
        shake = json.loads((out / "runs" / name / "report.json").read_text())["shakeup"]  # kit report's own file
        # the demo's records are SIIM-ISIC shaped: its leaderboard sizes
        assert (shake["public_size"], shake["private_size"]) == (3295, 7687) and shake["difference"]["std"] > 0
