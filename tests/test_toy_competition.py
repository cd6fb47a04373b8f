"""Adding a competition is one file: a toy competition declared and registered here alone (nothing under kit/
edited) is recognised, synthesised, written to records, trained on and predicted like the built-in ones."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kit.data import competitions, sources, synth
from kit.cli.app import main
from kit.data.competitions import Competition, Layout, Source, SynthSpec
from kit.data.competitions._draw import BINARY_STYLE, lesion_image, save_jpeg, skin_tone
from kit.data.competitions._read import class_labels, find_images, read_csv, source_table

CLASSES = ("calm", "angry")


def recognise(path: Path) -> bool:
    """A toy download: its labels.csv, or a folder holding one."""
    return path.name == "labels.csv" if path.is_file() else (path / "labels.csv").is_file()


def read(path: Path, *, id_col, label_col, group_col, images, test, skip_bad) -> Source:
    """labels.csv (file, mood, owner) + pics/<file>.jpg; the test split is test.csv (file, owner)."""
    root = path.parent if path.is_file() else path
    csv = root / ("test.csv" if test else "labels.csv")
    df = read_csv(csv, ["file", "owner"] + ([] if test else ["mood"]), "file")
    skipped: list[dict] = []
    df = find_images(df, df["file"], [images or root / "pics"], csv, skip_bad, skipped)
    target = np.full(len(df), -1) if test else class_labels(csv, df, "mood", list(CLASSES))
    table = source_table(df, "file", target, df["owner"], [], [])
    return Source(table, list(CLASSES), "toy", "file", [], [], not test, {}, skipped, str(root), table_file=str(csv))


def synthesise(root: Path, rng: np.random.Generator, spec: SynthSpec) -> None:
    """labels.csv and test.csv, two images per owner, each class one fixed look."""
    for split, n in (("labels", spec.n_train), ("test", spec.n_test)):
        rows = []
        for i in range(n):
            mood = i % 2
            name = f"{split}_{i:03d}"
            save_jpeg(lesion_image(rng, spec.size, spec.size, skin_tone(rng), BINARY_STYLE[mood]),
                      root / "pics" / f"{name}.jpg")
            rows.append({"file": name, "owner": f"o{i // 2}", **({"mood": CLASSES[mood]} if split == "labels" else {})})
        pd.DataFrame(rows).to_csv(root / f"{split}.csv", index=False)


TOY = Competition(name="toy", title="Toy moods", download=Layout("toy", read, recognise, recognise),
                  classes=CLASSES, metric="auc", secondary=("accuracy",), synthesise=synthesise)


@pytest.fixture
def toy():
    competitions.register(TOY)
    yield TOY
    competitions.unregister("toy")


def test_registering_a_competition_adds_its_layout_and_unregistering_removes_it(toy):
    assert competitions.names()[-1] == "toy" and competitions.get("toy") is toy
    assert competitions.layouts() == ["siim", "ham10000", "pcam", "folders", "isic2024", "toy", "csv"]
    with pytest.raises(ValueError, match="competition 'toy' registered twice"):
        competitions.register(TOY)
    competitions.unregister("toy")
    assert "toy" not in competitions.names() and competitions.layout("toy") is None
    competitions.register(TOY)  # the fixture takes it out again


def test_a_competition_without_notebook_parameters_has_no_notebook(toy):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "notebooks"))
    import build_notebooks

    assert toy.notebook is None
    assert list(build_notebooks.notebooks()) == list(build_notebooks.NOTEBOOKS)  # the six built-in ones, no toy
    assert "toy" not in [c.name for c in build_notebooks.notebooks().values()]


@pytest.mark.slow
def test_toy_competition_runs_records_train_and_predict(toy, tmp_path):
    src = synth.make_competition("toy", tmp_path / "download", n_train=24, n_test=6, size=32)
    assert sources.detect_layout(src) == "toy" and sources.detect_layout(src / "labels.csv") == "toy"
    assert main(["records", str(src), "--out", str(tmp_path / "train"), "--size", "32", "--folds", "2"]) == 0
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert (manifest["competition"], manifest["layout"], manifest["classes"]) == ("toy", "toy", ["calm", "angry"])
    run = tmp_path / "run"
    assert main(["train", "--records", str(tmp_path / "train"), "--out", str(run), "--model", "tiny_cnn",
                 "--epochs", "1", "--batch", "8", "--verbose", "0", "--strategy", "cpu"]) == 0
    cv = json.loads((run / "cv.json").read_text())
    assert cv["metric"] == "auc" and set(cv["secondary"]) == {"accuracy"}
    assert len(pd.read_csv(run / "oof.csv")) == 24
    assert main(["records", str(src), "--out", str(tmp_path / "test"), "--size", "32", "--test"]) == 0
    out = tmp_path / "sub.csv"
    assert main(["predict", "--run", str(run), "--records", str(tmp_path / "test"), "--out", str(out)]) == 0
    sub = pd.read_csv(out, dtype={"file": str})
    assert list(sub.columns) == ["file", "target"] and list(sub["file"]) == [f"test_{i:03d}" for i in range(6)]
