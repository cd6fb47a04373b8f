"""The kit notebooks: valid, thin, pushable as they are, and (once training lands) run top to bottom on
a tiny synthetic competition."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from kit.kaggle import client as kaggle

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
    from kit.data import competitions

    assert [c.name for c in build_notebooks.NOTEBOOKS.values()] == competitions.list_competitions()
    assert [competitions.get(name).notebook.name for name in competitions.list_competitions()] == NAMES
    # only the notebooks that are not the standard one have a template of their own
    assert sorted(build_notebooks.TEMPLATES) == ["isic2024_t4", "siim_isic_tpu"]


def test_the_notebook_settings_are_the_competitions_parameters():
    from kit.data import competitions

    pcam = competitions.get("pcam").notebook
    text = "\n".join(c.source for c in nbformat.read(NOTEBOOKS / "pcam_t4.ipynb", as_version=4).cells)
    assert "COMPETITION = 'histopathologic-cancer-detection'" in text
    assert "MODEL, SIZE, FOLDS, EPOCHS, BATCH, TTA = 'keras_hub', 96, 5, 10, 64, 8" in text
    assert (pcam.size, pcam.folds, pcam.epochs, pcam.batch, pcam.tta) == (96, 5, 10, 64, 8)
    assert "'--augment', 'pcam'" in text  # the competition's augmentation preset
    ham = nbformat.read(NOTEBOOKS / "ham10000_t4.ipynb", as_version=4)
    assert "DATASET = 'kmader/skin-cancer-mnist-ham10000'" in ham.cells[3].source
    assert "SOURCE = locate(find_input(DATASET, paths), 'HAM10000_metadata.csv')" in ham.cells[4].source
    assert ham.metadata.kit == {"title": "HAM10000 skin lesions T4", "slug": "ham10000-skin-lesions-t4",
                                "accelerator": "t4", "datasets": ["kmader/skin-cancer-mnist-ham10000"],
                                "models": [build_notebooks.PRETRAINED]}


def test_the_docs_table_of_notebook_parameters_is_the_registry():
    from kit.data import competitions

    section = (REPO / "docs" / "competitions.md").read_text().split("## Notebook parameters", 1)[1]
    rows = [[cell.strip(" `") for cell in line.strip("|").split("|")] for line in section.splitlines()
            if line.startswith("| `")]
    assert [row[0] for row in rows] == competitions.list_competitions()
    for name, notebook, accelerator, _, size, folds, epochs, batch, tta, submission in rows:
        nb = competitions.get(name).notebook
        assert (notebook, accelerator, batch, tta, submission) == (nb.name, nb.accelerator, str(nb.batch),
                                                                   str(nb.tta), nb.submission), name
        if name != "isic2024":  # the code-competition notebook trains nothing on Kaggle
            assert (size, folds, epochs) == (str(nb.size), str(nb.folds), str(nb.epochs)), name


def test_a_new_competition_gets_the_standard_notebook_from_its_parameters_alone():
    import dataclasses

    from kit.data import competitions
    from kit.data.competitions import NotebookParams

    params = NotebookParams(name="tiles_t4", intro="# Tiles on two T4s\n\nBinary tiles.", title="Tiles T4",
                            slug="tiles-t4", datasets=("alice/tiles",), locate="train", submission="test",
                            size=128, folds=3, epochs=4, batch=16, tta=2)
    comp = dataclasses.replace(competitions.get("melanoma10k"), name="tiles", notebook=params)
    competitions.register(comp)
    try:
        assert list(build_notebooks.notebooks())[-1] == "tiles_t4"
        nb = build_notebooks.build("tiles_t4")
    finally:
        competitions.unregister("tiles")
    assert "tiles_t4" not in build_notebooks.notebooks()
    cells = [c.source for c in nb.cells]
    assert cells[0].startswith("# Tiles on two T4s\n\nBinary tiles.\n\nLocally, a rehearsal")
    assert "synth.make_competition('tiles', 'data/synth-tiles')" in cells[0]
    assert cells[3].splitlines()[0] == "DATASET = 'alice/tiles'"
    assert "MODEL, SIZE, FOLDS, EPOCHS, BATCH, TTA = 'keras_hub', 128, 3, 4, 16, 2" in cells[3]
    assert cells[4].splitlines()[0] == "SOURCE = locate(find_input(DATASET, paths), 'train')"
    assert "layout='folders'" in cells[4] and "test=True" in cells[4]
    assert "# Kaggle ends a GPU session after 12 hours" in cells[5] and "--augment" not in cells[5]
    assert "'--sample-submission'" not in cells[6]  # submission="test": kit predict on the labelled test split
    assert nb.metadata.kit == {"title": "Tiles T4", "slug": "tiles-t4", "accelerator": "t4",
                               "datasets": ["alice/tiles"], "models": [build_notebooks.PRETRAINED]}


def test_notebook_parameters_refuse_an_unknown_submission_and_a_notebook_without_input():
    from kit.data.competitions import NotebookParams

    with pytest.raises(ValueError, match=r"^notebook 'x': submission 'csv' is not one of \('sample', 'test', 'oof'\)$"):
        NotebookParams(name="x", intro="", title="X", slug="x", competition="c", submission="csv")
    with pytest.raises(ValueError, match="notebook 'x': no competition and no dataset to read the download from"):
        NotebookParams(name="x", intro="", title="X", slug="x")


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
    # in the kernel a notebook uses kit.kaggle.kernel only; kit.kaggle.client (the client's side) stays on the user's machine
    assert "from kit.kaggle.kernel import" in text and "kit.kaggle.client" not in text
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


# --- execution: needs kit.training.train / kit.ensemble.predict / kit.data.synth, which land separately ------------------

_MISSING = [m for m in ("kit.data.synth", "kit.training.train", "kit.ensemble.predict", "kit.ensemble.submission") if importlib.util.find_spec(m) is None]
needs_training = pytest.mark.skipif(bool(_MISSING), reason=f"{', '.join(_MISSING)} not importable yet: notebooks cannot run")

EXPECTED_COLUMNS = {
    "siim_isic_tpu": ["image_name", "target"],
    "ham10000_t4": ["image_id", "akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"],
    "pcam_t4": ["id", "label"],
    "isic9_t4": None,  # id + the 9 class names, checked below
    "melanoma10k_t4": ["id", "target"],
    "isic2024_t4": ["isic_id", "target"],
}


def _check_outputs(name: str, work: Path, n_train: int, n_test: int) -> dict:
    """Assert the submission and CV a notebook wrote under ``work``; returns the CV (cv.json)."""
    from kit.data import synth

    sub = pd.read_csv(work / "submission.csv")
    if name == "isic9_t4":
        assert list(sub.columns) == ["id", *synth.ISIC9_CLASSES]
    else:
        assert list(sub.columns) == EXPECTED_COLUMNS[name]
    n_rows = n_train if name == "ham10000_t4" else n_test  # HAM10000: out-of-fold, one row per training image
    assert len(sub) == n_rows
    probs = sub.iloc[:, 1:].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    cv = json.loads((work / "run" / "cv.json").read_text())
    assert cv["metric"] == build_notebooks.NOTEBOOKS[name].metric
    return cv


# The notebook whose rehearsal docs/kaggle.md prints; the test below runs it that way, the others in-process.
README_NOTEBOOK = "pcam_t4"


def readme_rehearsal() -> str:
    """The local notebook rehearsal as docs/kaggle.md prints it: the bash block of "The local rehearsal"."""
    text = (REPO / "docs" / "kaggle.md").read_text()
    section = text.split("## The local rehearsal", 1)[1].split("\n## ", 1)[0]
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", section, flags=re.S) if "jupyter execute" in b]
    assert len(blocks) == 1, blocks
    return blocks[0]


def test_readme_rehearsal_is_the_one_each_notebook_prints():
    name = README_NOTEBOOK
    layout = build_notebooks.NOTEBOOKS[name].name
    assert readme_rehearsal() == build_notebooks.REHEARSAL.format(layout=layout, name=name)
    for name in NAMES:
        first = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4).cells[0]
        own = build_notebooks.REHEARSAL.format(layout=build_notebooks.NOTEBOOKS[name].name, name=name)
        assert first.cell_type == "markdown" and f"```bash\n{own}```" in first.source, name
        assert f"`runs/{name}/{name}.ipynb`" in first.source  # and it says where the executed notebook is


@pytest.mark.slow
@needs_training
def test_readme_rehearsal_runs_as_printed_and_keeps_the_executed_notebook(tmp_path):
    name = README_NOTEBOOK
    (tmp_path / "notebooks").mkdir()  # a checkout's layout: the commands run from its root
    shutil.copy(NOTEBOOKS / f"{name}.ipynb", tmp_path / "notebooks")
    env = {key: value for key, value in os.environ.items()
           if key not in ("KAGGLE_KERNEL_RUN_TYPE", "KIT_INPUT", "KIT_WORKING", "KIT_TINY", "PWD")}
    env.update({"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",  # python, jupyter
                "PYTHONPATH": str(REPO), "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"})
    proc = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_rehearsal()], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    work = tmp_path.resolve() / "runs" / name
    executed = work / f"{name}.ipynb"
    assert f"Save executed results to {executed}\n" in proc.stderr
    nb = nbformat.read(executed, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    printed = ["".join(o.text for o in c.outputs if o.output_type == "stream" and o.name == "stdout") for c in code]
    assert sum(bool(re.search(r"^train: 60 images, ", text, re.M)) for text in printed) == 1  # the records summary
    cv = _check_outputs(name, work, n_train=60, n_test=20)  # kit.data.synth's default competition size
    # the cell that prints the CV holds what it printed, and the submission's head as its result
    (result,) = [c for c in code if "print(json.loads((RUN / 'cv.json')" in c.source]
    assert ast.literal_eval(printed[code.index(result)].strip()) == cv
    (shown,) = [o for o in result.outputs if o.output_type == "execute_result"]
    assert shown.data["text/plain"].split()[:2] == ["id", "label"]
    # the notebook itself stays as it was: outputs go to the executed copy only
    assert all(c.outputs == [] for c in nbformat.read(tmp_path / "notebooks" / f"{name}.ipynb", as_version=4).cells
               if c.cell_type == "code")


@pytest.mark.slow
@needs_training
@pytest.mark.parametrize("name", [n for n in NAMES if n != README_NOTEBOOK])
def test_notebook_runs_top_to_bottom_on_a_tiny_synthetic_competition(name, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    from kit.data import synth

    layout = build_notebooks.NOTEBOOKS[name].name
    comp = synth.make_competition(layout, tmp_path / "comp", n_train=40, n_test=12, size=32)
    work = tmp_path / "work"
    for key, value in {"KIT_INPUT": comp, "KIT_WORKING": work, "KIT_TINY": "1", "PYTHONPATH": REPO,
                       "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "2"}.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    _check_outputs(name, work, n_train=40, n_test=12)
