"""The competition registry drives the tests: every registered competition goes from a synthetic download in
its exact layout to a checked submission, scored by its own metric (timm's list_models() habit)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from kit.data import competitions, synth
from kit.cli.app import main
from kit.data.records import Manifest
from kit.ensemble.submission import check_submission


def test_every_competition_has_a_generator_a_layout_and_a_known_metric():
    from kit.core import metrics
    from kit.data import sources
    from kit.kaggle.kernel import SESSION_HOURS
    from kit.training.pipeline import PRESETS

    assert competitions.list_competitions() == list(synth.LAYOUTS)
    for name in competitions.list_competitions():
        comp = competitions.get(name)
        assert comp.layout in sources.LAYOUTS and comp.metric in metrics.METRICS and comp.augment in PRESETS
        assert (Path(__file__).parents[1] / "notebooks" / f"{comp.notebook.name}.ipynb").is_file()
        # the notebook parameters: an accelerator Kaggle has, an input to read the download from
        assert comp.notebook.accelerator in SESSION_HOURS and comp.notebook.source[1]
    # the ISIC 9-class set is scored by accuracy, as its competition is, not by the multi-class default
    assert competitions.get("isic9").metric == "accuracy"
    assert competitions.metric_of(Manifest(image_size=8, shards=(), layout="csv", n_classes=5)) == "balanced_accuracy"
    assert competitions.metric_of(Manifest(image_size=8, shards=(), layout="folders", classes=("cat", "dog"))) == "auc"
    assert competitions.default_metric(2) == "auc" and competitions.default_metric(7) == "balanced_accuracy"


def _kit(*argv: str) -> None:
    assert main([str(a) for a in argv]) == 0, argv


@pytest.mark.slow
@pytest.mark.parametrize("name", competitions.list_competitions())
def test_competition_from_synthetic_download_to_checked_submission(name, tmp_path):
    comp = competitions.get(name)
    src = synth.make_competition(name, tmp_path / "download", n_train=90, n_test=12, seed=4,
                                 **({} if name == "pcam" else {"size": 48}))
    _kit("records", src, "--out", tmp_path / "train", "--size", 32, "--folds", 2)
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert manifest["competition"] == name
    run = tmp_path / "run"
    _kit("train", "--records", tmp_path / "train", "--out", run, "--model", "tiny_cnn", "--epochs", 1, "--batch", 8,
         "--verbose", 0, "--strategy", "cpu")
    cv = json.loads((run / "cv.json").read_text())
    assert cv["metric"] == comp.metric and set(cv["secondary"]) == set(comp.secondary)
    assert cv["tta_views"][0] == "identity"
    if name == "ham10000":
        return  # one labelled set, no test split: the out-of-fold predictions are the estimate
    _kit("records", src, "--out", tmp_path / "test", "--size", 32, "--test")
    sample = src / "sample_submission.csv"
    out = tmp_path / "sub.csv"
    _kit("predict", "--run", run, "--records", tmp_path / "test", "--out", out, "--tta", 2,
         *(["--sample-submission", sample] if sample.is_file() else []))
    sub = pd.read_csv(out, dtype=str)
    if sample.is_file():
        assert check_submission(out, sample) == []
        assert list(sub.columns) == list(pd.read_csv(sample, nrows=0).columns)
    else:
        classes = list(comp.classes)
        assert list(sub.columns) == (["id", "target"] if comp.binary else ["id", *classes])
    assert len(sub) == 12
