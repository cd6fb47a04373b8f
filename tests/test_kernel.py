"""What runs inside a Kaggle kernel (kit.kaggle.kernel): paths, attached inputs and Models, kit commands from a cell."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.kaggle import kernel
from kit.core.errors import KitError

REPO = Path(__file__).resolve().parent.parent
COMPETITION = "siim-isic-melanoma-classification"
MODEL = "keras/efficientnet/keras/efficientnet_b0_ra_imagenet/2"


def test_the_user_side_never_imports_the_cli_or_the_kernel_side_heavy_modules():
    # kit.kaggle.client runs `kit push` / `kit status`; neither side imports the CLI (run_kit lives in kit.cli). numpy is allowed:
    # the run folder's column schema comes from kit.core.task, which computes with it (a tenth of a second to import)
    code = ("import sys, kit.kaggle.client, kit.kaggle.kernel; "
            "print(sorted(m for m in sys.modules if m in {'kit.cli.app', 'pandas', 'tensorflow', 'keras'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("mount", [
    "efficientnet/keras/efficientnet_b0_ra_imagenet/2",  # /kaggle/input/<model>/<framework>/<variation>/<version>
    "m/keras/efficientnet/keras/efficientnet_b0_ra_imagenet/2",  # /kaggle/input/m/<owner>/...
])
def test_find_model_mount_in_both_mount_forms(tmp_path, mount):
    (tmp_path / mount).mkdir(parents=True)
    (tmp_path / mount / "config.json").write_text("{}")
    (tmp_path / "efficientnet" / "keras" / "efficientnet_b0_ra_imagenet" / "1").mkdir(parents=True, exist_ok=True)
    assert kernel.find_model_mount(MODEL, tmp_path) == tmp_path / mount
    assert kernel.find_model_mount(MODEL.replace("/2", "/3"), tmp_path) is None  # another version is not attached
    assert kernel.find_model_mount("bob/efficientnet/keras/efficientnet_b0_ra_imagenet/2", tmp_path) == (
        tmp_path / mount if not mount.startswith("m/") else None)  # the short form does not name the owner
    with pytest.raises(KitError, match=r"^model source 'efficientnet_b0' is not owner/model/framework/variation/"):
        kernel.find_model_mount("efficientnet_b0", tmp_path)


def test_pretrained_weights_attached_online_or_one_line(tmp_path):
    paths = kernel.NotebookPaths(tmp_path, tmp_path / "w", tmp_path / "s", True)
    with pytest.raises(KitError) as exc:
        kernel.pretrained_weights(MODEL, paths, online=lambda: False)
    assert str(exc.value) == (f"{tmp_path}: the Kaggle Model {MODEL} is not attached and the kernel is offline: add "
                              f"it (Add Input > Models, or kit push --model-source {MODEL}) or turn internet on")
    online = kernel.pretrained_weights(MODEL, paths, online=lambda: True)
    from kit.training import models

    assert online == f"kaggle://{MODEL}" and models.weights_route(online) == "preset"  # what keras-hub fetches
    mount = tmp_path / "m" / "keras" / "efficientnet" / "keras" / "efficientnet_b0_ra_imagenet" / "2"
    mount.mkdir(parents=True)
    assert kernel.pretrained_weights(MODEL, paths, online=lambda: pytest.fail("no probe")) == str(mount)


def test_has_internet_is_false_when_nothing_answers():
    assert kernel.has_internet("127.0.0.1", port=9, timeout=0.5) is False  # discard port: refused at once


def test_notebook_paths_locally_and_on_kaggle(tmp_path, monkeypatch):
    monkeypatch.delenv("KAGGLE_KERNEL_RUN_TYPE", raising=False)
    assert kernel.on_kaggle() is False
    paths = kernel.notebook_paths(tmp_path / "comp", tmp_path / "out")
    out = (tmp_path / "out").resolve()
    assert paths == kernel.NotebookPaths((tmp_path / "comp").resolve(), out, out / "scratch", False)
    assert paths.scratch.is_dir()
    (tmp_path / "inp" / "competitions" / COMPETITION).mkdir(parents=True)
    (tmp_path / "inp" / "datasets" / "cdeotte" / "melanoma-256x256").mkdir(parents=True)
    local = kernel.NotebookPaths(tmp_path / "inp", tmp_path, tmp_path, False)
    assert kernel.find_input(COMPETITION, local) == tmp_path / "inp" / "competitions" / COMPETITION
    assert kernel.find_input("cdeotte/melanoma-256x256", local) == tmp_path / "inp/datasets/cdeotte/melanoma-256x256"
    with pytest.raises(KitError, match="no input named 'ham10000'"):
        kernel.find_input("ham10000", kernel.NotebookPaths(tmp_path / "empty", tmp_path, tmp_path, True))
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Batch")
    assert kernel.on_kaggle() is True
    monkeypatch.setattr(Path, "mkdir", lambda *a, **k: None)  # do not create /kaggle/temp on this machine
    on = kernel.notebook_paths(tmp_path)
    assert (on.input, on.working, on.scratch, on.on_kaggle) == (
        Path("/kaggle/input"), Path("/kaggle/working"), Path("/kaggle/temp"), True)


def test_locate_and_link_shards(tmp_path):
    root = tmp_path / "skin-cancer9-classesisic"
    (root / "Skin cancer ISIC The International Skin Imaging Collaboration" / "Train" / "melanoma").mkdir(parents=True)
    assert kernel.locate(root, "Train") == root / "Skin cancer ISIC The International Skin Imaging Collaboration"
    with pytest.raises(KitError, match="no 'train.csv' within 3 folder levels"):
        kernel.locate(root, "train.csv")
    public = tmp_path / "melanoma-256x256"
    public.mkdir()
    for name in ("train00-2182.tfrec", "train01-2185.tfrec", "test00-687.tfrec"):
        (public / name).write_bytes(b"x")
    train = kernel.link_shards(public, tmp_path / "train", "train")
    assert sorted(p.name for p in train.iterdir()) == ["train00-2182.tfrec", "train01-2185.tfrec"]
    assert (train / "train00-2182.tfrec").resolve() == (public / "train00-2182.tfrec").resolve()
    with pytest.raises(KitError, match="no valid\\*.tfrec shards"):
        kernel.link_shards(public, tmp_path / "v", "valid")


def test_run_kit_raises_when_the_command_fails(capsys):
    from kit.cli import run_kit

    with pytest.raises(KitError, match="kit status failed with status 1"):
        run_kit("status", "not-a-kernel")
    assert capsys.readouterr().err.strip() == "kit status: error: kernel 'not-a-kernel' is not owner/slug (or owner/slug/version)"


def test_previous_run_copies_the_attached_kernel_output_into_working(tmp_path, monkeypatch):
    out = tmp_path / "input" / "melanoma-t4" / "run"  # kit push --resume-from alice/melanoma-t4: its output
    (out / "fold0").mkdir(parents=True)
    (out / "config.toml").write_text('model = "tiny_cnn"\n')
    (out / "fold0" / "last.keras").write_bytes(b"weights")
    for p in (out / "fold0" / "last.keras", out / "config.toml", out / "fold0", out):
        p.chmod(0o555 if p.is_dir() else 0o444)  # Kaggle's inputs are read-only
    paths = kernel.notebook_paths(tmp_path / "input", tmp_path / "working")
    run = paths.working / "run"
    monkeypatch.delenv("KIT_RESUME_FROM", raising=False)
    assert kernel.previous_run(run, paths) is False and not run.exists()
    monkeypatch.setenv("KIT_RESUME_FROM", "alice/melanoma-t4/3")
    assert kernel.previous_run(run, paths) is True
    assert (run / "fold0" / "last.keras").read_bytes() == b"weights"
    (run / "fold0" / "state.json").write_text("{}")  # the copy is writable: kit train --resume goes on in it
    monkeypatch.setenv("KIT_RESUME_FROM", "alice/gone")
    assert kernel.previous_run(run, paths) is True  # this session's run is kept


def test_time_limit_is_the_session_less_the_margin_and_the_time_spent(monkeypatch):
    import time

    assert int(kernel.time_limit(12, time.time() - 600)[:-1]) == pytest.approx(11.5 * 3600 - 600, abs=2)
    assert kernel.SESSION_HOURS["tpu"] == 9 and int(kernel.time_limit(9, time.time())[:-1]) == pytest.approx(8.5 * 3600, abs=2)
    assert kernel.time_limit(1, time.time() - 7200) == "1s"


def test_the_old_module_path_still_gives_run_kit_with_a_warning():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning)\n"
            "try:\n    import kit.kernel\nexcept DeprecationWarning as w:\n    print(w)\n"
            "warnings.simplefilter('ignore')\nfrom kit.kernel import run_kit, find_input\n"
            "print(run_kit.__module__, find_input.__module__)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["kit.kernel moved to kit.kaggle.kernel; the old name goes in the next release",
                                        "kit.cli.notebook kit.kaggle.kernel"]
