"""The kit notebooks: valid, thin, pushable as they are, and (once training lands) run top to bottom on
a tiny synthetic competition."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kit import kaggle

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))
import build_notebooks  # noqa: E402

NAMES = list(build_notebooks.NOTEBOOKS)
SHAPES = {"siim_isic_tpu": "TpuV5E8", "ham10000_t4": "NvidiaTeslaT4", "pcam_t4": "NvidiaTeslaT4",
          "isic9_t4": "NvidiaTeslaT4", "melanoma10k_t4": "NvidiaTeslaT4", "isic2024_t4": "NvidiaTeslaT4"}
# The code-competition notebook trains nothing on Kaggle: it predicts with a run attached as a dataset.
TRAINING = [n for n in build_notebooks.NOTEBOOKS if n != "isic2024_t4"]


def _cells(nb: nbformat.NotebookNode) -> list[tuple[str, str, list]]:
    return [(c.cell_type, c.source, c.get("metadata", {}).get("tags", [])) for c in nb.cells]


def test_there_is_one_notebook_per_competition():
    assert sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)
    from kit import competitions

    assert sorted(build_notebooks.LAYOUTS.values()) == sorted(competitions.list_competitions())
    assert {competitions.get(layout).notebook for layout in build_notebooks.LAYOUTS.values()} == set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_committed_notebook_is_what_the_builder_writes(name):
    committed = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert _cells(committed) == _cells(build_notebooks.build(name)), "run python notebooks/build_notebooks.py"
    assert committed.metadata == build_notebooks.build(name).metadata


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_valid_thin_and_installs_kit_offline(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec == {"display_name": "Python 3", "language": "python", "name": "python3"}
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata.tags == ["kit-install"] and code[0].source == kaggle.install_cell_source()
    assert all(c.outputs == [] and c.execution_count is None for c in code)
    text = "\n".join(c.source for c in code)
    calls = {"ham10000_t4": ("records.write_from_source", "run_kit('train'", "make_submission"),
             "isic2024_t4": ("predict.estimate_time", "run_kit('predict'", "run_kit('stack'", "run_kit('check'")}
    for call in calls.get(name, ("records.write_from_source", "run_kit('train'", "run_kit('predict'")):
        assert call in text, call
    assert "submission.csv" in text
    assert "KAGGLE_KEY" not in text and "kaggle.json" not in text
    # in the kernel a notebook uses kit.kernel only; kit.kaggle (the client's side) stays on the user's machine
    assert "from kit.kernel import" in text and "kit.kaggle" not in text
    # thin: no function or class definitions; the logic is kit's
    assert "def " not in text and "class " not in text


@pytest.mark.parametrize("name", NAMES)
def test_notebook_renders_a_valid_kernel_folder(name, tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    result = kaggle.push(NOTEBOOKS / f"{name}.ipynb", folder=tmp_path / "k", owner="alice", dry_run=True,
                         kit_dataset="alice/kit-wheel")
    meta = result.kernel.metadata
    kit_meta = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).metadata.kit
    assert meta["id"] == f"alice/{kit_meta['slug']}" and meta["title"] == kit_meta["title"]
    assert kaggle.slugify(meta["title"]) == kit_meta["slug"]
    assert meta["machine_shape"] == SHAPES[name]
    assert meta["is_private"] is True and meta["enable_internet"] is False and "docker_image" not in meta
    assert meta["dataset_sources"] == [*kit_meta.get("datasets", []), "alice/kit-wheel"]
    assert meta["competition_sources"] == ([kit_meta["competition"]] if "competition" in kit_meta else [])
    assert meta["model_sources"] == kit_meta.get("models", []) == ([build_notebooks.PRETRAINED] if name in TRAINING else [])


@pytest.mark.parametrize("name", TRAINING)
def test_notebook_trains_the_attached_pretrained_backbone_unless_tiny(name):
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert f"MODEL_SOURCE = {build_notebooks.PRETRAINED!r}" in text
    assert "MODEL, SIZE, FOLDS, EPOCHS, BATCH, TTA = 'keras_hub'," in text
    assert "WEIGHTS = '' if TINY else pretrained_weights(MODEL_SOURCE, paths)" in text
    assert "KERAS_BACKEND" not in text  # import kit chooses the backend, on the TPU VM too
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "KERAS_BACKEND" not in markdown


def test_tpu_notebook_agrees_with_the_repository_kernel_metadata():
    root = json.loads((REPO / "kernel-metadata.json").read_text())
    kaggle.check_metadata(root, REPO)  # its code_file now exists
    kit_meta = nbformat.read(REPO / root["code_file"], as_version=4).metadata.kit
    assert root["title"] == kit_meta["title"] and root["id"].split("/")[1] == kit_meta["slug"]
    assert root["dataset_sources"] == kit_meta["datasets"]
    assert root["competition_sources"] == [kit_meta["competition"]]
    assert root["model_sources"] == kit_meta["models"] == [build_notebooks.PRETRAINED]


# --- execution: needs kit.train / kit.predict / kit.synth, which land separately ------------------

_MISSING = [m for m in ("kit.synth", "kit.train", "kit.predict", "kit.submission") if importlib.util.find_spec(m) is None]
needs_training = pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not importable yet: notebooks cannot run")

EXPECTED_COLUMNS = {
    "siim_isic_tpu": ["image_name", "target"],
    "ham10000_t4": ["image_id", "akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],
    "pcam_t4": ["id", "label"],
    "isic9_t4": None,  # id + the 9 class names, checked below
    "melanoma10k_t4": ["id", "target"],
    "isic2024_t4": ["isic_id", "target"],
}


@pytest.mark.slow
@needs_training
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_on_a_tiny_synthetic_competition(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from kit import synth

    layout = build_notebooks.LAYOUTS[name]
    comp = synth.make_competition(layout, tmp_path / "comp", n_train=40, n_test=12, size=32)
    work = tmp_path / "work"
    for key, value in {"KIT_INPUT": comp, "KIT_WORKING": work, "KIT_TINY": "1", "PYTHONPATH": REPO,
                       "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    sub = pd.read_csv(work / "submission.csv")
    if name == "isic9_t4":
        assert list(sub.columns) == ["id", *synth.ISIC9_CLASSES]
    else:
        assert list(sub.columns) == EXPECTED_COLUMNS[name]
    n_rows = 40 if name == "ham10000_t4" else 12  # HAM10000: out-of-fold, one row per training image
    assert len(sub) == n_rows
    probs = sub.iloc[:, 1:].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    cv = json.loads((work / "run" / "cv.json").read_text())
    from kit import competitions

    assert cv["metric"] == competitions.get(build_notebooks.LAYOUTS[name]).metric
