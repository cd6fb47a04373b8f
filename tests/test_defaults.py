"""What kit train chooses for the settings a user leaves out (kit.training.defaults), and how fast it refuses a typo."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kit.training import backbones, defaults
from kit.core.errors import KitError
from records_fixture import write_records


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No cached weights, no Kaggle input, no network."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(defaults, "online", lambda *a, **k: False)
    monkeypatch.setattr(defaults, "KAGGLE_INPUT", tmp_path / "no-input")


def test_a_cpu_trains_the_compact_cnn_from_scratch_and_says_why(offline):
    choices = defaults.Choices()
    assert defaults.choose_model("", "", accelerated=False, choices=choices) == ("compact_cnn", "")
    assert choices.line().startswith("chose: model compact_cnn (from scratch, sized to the images: no GPU or TPU")
    assert "--model efficientnet_b0 --weights FILE fine-tunes instead" in choices.line()


def test_an_accelerator_with_cached_imagenet_weights_fine_tunes_efficientnet(offline, tmp_path):
    cached = tmp_path / "keras" / "models" / backbones.imagenet_file("efficientnet_b0")
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"weights")
    choices = defaults.Choices()
    assert defaults.choose_model("", "", accelerated=True, choices=choices) == ("efficientnet_b0", "imagenet")
    assert choices.line() == f"chose: model efficientnet_b0 (fine-tuned from ImageNet weights in Keras' cache, {cached})"


def test_an_accelerator_without_weights_falls_back_to_the_compact_cnn(offline):
    choices = defaults.Choices()
    assert defaults.choose_model("", "", accelerated=True, choices=choices) == ("compact_cnn", "")
    assert "no ImageNet weights here (offline, none cached or attached)" in choices.line()


def test_a_kaggle_input_holding_the_weights_file_is_found(offline, tmp_path, monkeypatch):
    file = tmp_path / "input" / "effnet" / "weights" / backbones.imagenet_file("efficientnet_b0")
    file.parent.mkdir(parents=True)
    file.write_bytes(b"weights")
    monkeypatch.setattr(defaults, "KAGGLE_INPUT", tmp_path / "input")
    choices = defaults.Choices()
    assert defaults.choose_model("efficientnet_b0", "", accelerated=True, choices=choices) == (
        "efficientnet_b0", str(file))
    assert choices.line() == f"chose: weights {file} (ImageNet, from the Kaggle input {file})"


def test_an_imagenet_backbone_without_weights_offline_is_refused_with_what_to_do(offline):
    with pytest.raises(KitError) as err:
        defaults.choose_model("efficientnet_b0", "", accelerated=False, choices=defaults.Choices())
    line = str(err.value)
    assert line.startswith("weights: efficientnet_b0 fine-tunes ImageNet weights and none are here")
    assert "--weights none to train it from random weights" in line and "leave --model out" in line
    # on purpose: random weights, no refusal, nothing chosen
    choices = defaults.Choices()
    assert defaults.choose_model("efficientnet_b0", "none", accelerated=False, choices=choices) == (
        "efficientnet_b0", "none")
    assert choices.line() == ""


def test_weights_without_a_model_pick_the_backbone_they_fit():
    file, preset = defaults.Choices(), defaults.Choices()
    assert defaults.choose_model("", "b0.h5", accelerated=False, choices=file) == ("efficientnet_b0", "b0.h5")
    assert defaults.choose_model("", "kaggle://keras/vit", accelerated=False, choices=preset)[0] == "keras_hub"


def test_augment_is_none_for_a_download_no_competition_claims():
    generic, known, asked = defaults.Choices(), defaults.Choices(), defaults.Choices()
    assert defaults.choose_augment("", None, None, generic) == "none"
    assert "no flip or turn that could change a label" in generic.line()
    assert defaults.choose_augment("", "pcam", "pcam", known) == "pcam"
    assert known.line() == "chose: augment pcam (pcam's preset)"
    assert defaults.choose_augment("strong", None, None, asked) == "strong" and asked.line() == ""


def test_metric_is_the_competitions_else_auc_or_balanced_accuracy():
    two, ten, comp = defaults.Choices(), defaults.Choices(), defaults.Choices()
    assert defaults.choose_metric("", None, None, 2, two) == "auc"
    assert defaults.choose_metric("", None, None, 10, ten) == "balanced_accuracy"
    assert ten.line() == "chose: metric balanced_accuracy (10 classes and no competition; set metric in --config to choose)"
    assert defaults.choose_metric("", "isic2024", "pauc", 2, comp) == "pauc"


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("defaults") / "records"
    write_records(folder, n_folds=2, per_fold=4, size=16)
    return folder


def _kit_seconds(args: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "kit", *args], capture_output=True, text=True, env=env, timeout=60)
    return time.perf_counter() - start, done


@pytest.mark.parametrize("case, flags, line", [
    ("unknown model", ["--model", "effnet_b0"], "kit train: error: model: unknown model 'effnet_b0'; known: "),
    ("missing weights file", ["--weights", "nope/b0.h5"], "kit train: error: nope/b0.h5: weights file not found"),
    ("ImageNet offline", ["--model", "efficientnet_b0"],
     "kit train: error: weights: efficientnet_b0 fine-tunes ImageNet weights and none are here"),
])
def test_a_typo_is_refused_in_under_a_second_before_tensorflow_loads(case, flags, line, tiny_records, tmp_path):
    env = {**os.environ, "KERAS_HOME": str(tmp_path / "keras"), "PYTHONPATH": str(Path(__file__).parents[1])}
    seconds, done = _kit_seconds(["train", "--records", str(tiny_records), "--out", str(tmp_path / "run"), *flags],
                                 env)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith(line), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    assert seconds < 1.0, f"{case}: {seconds:.2f} s"
