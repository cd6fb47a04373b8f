"""What runs inside a Kaggle kernel: where a notebook reads and writes, its attached inputs and Models, and
``kit`` commands run from a cell.

A notebook imports this module (``from kit.kaggle.kernel import notebook_paths, ...``) and ``kit.cli``'s ``run_kit``; kit.kaggle.kernel_folder
and kit.kaggle.client are the other side of the seam, what runs on the user's machine (kernel metadata, the bundled
wheel; the ``kaggle`` client). Locally the same calls read KIT_INPUT and write under KIT_WORKING, so a notebook
rehearses on a synthetic competition unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from kit.runs import folder as runfolder
from kit.core import runtime
from kit.core.errors import KitError

# The fold group a fan-out kernel trains (kit push --fan-out writes it beside the notebook, and a cell of the
# notebook writes it into the kernel's working folder, as Kaggle receives the notebook alone)
FOLDS_FILE = "kit-folds.json"
# owner/model/framework/variation/version, as the kaggle client checks it: five parts, the version a number
MODEL_SOURCE = re.compile(r"^[^/\s]+/[^/\s]+/[^/\s]+/[^/\s]+/\d+$")
MODEL_SOURCE_FORM = "owner/model/framework/variation/version (version a number)"


# --- where a notebook runs -----------------------------------------------------------------------


def on_kaggle() -> bool:
    """True inside a Kaggle kernel (the image sets KAGGLE_KERNEL_RUN_TYPE), False elsewhere."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE"))


@dataclass(frozen=True)
class NotebookPaths:
    """Where a notebook reads its inputs, writes its outputs, and keeps what must not become an output."""

    input: Path
    working: Path  # kept as the kernel's output on Kaggle: submission.csv, the run folder
    scratch: Path  # records and other bulk (Kaggle keeps /kaggle/temp for the session only)
    on_kaggle: bool


def notebook_paths(local_input: str | os.PathLike | None = None,
                   local_working: str | os.PathLike | None = None) -> NotebookPaths:
    """On Kaggle: /kaggle/input, /kaggle/working, /kaggle/temp; locally: the given folders (or KIT_INPUT / KIT_WORKING).

    Locally the working folder defaults to ``./runs/notebook`` and scratch is its ``scratch/``; both are
    created. The input folder defaults to the current folder. A relative path is taken from the kernel's
    current folder, which Jupyter sets to the notebook's own (hence absolute paths in the rehearsal).
    The notebook's first kit call, so it also settles what the ``kit`` command settles before TensorFlow loads
    (kit.core.runtime.prepare: Keras on JAX on a TPU VM, TensorFlow's own log lines hidden).
    """
    runtime.prepare()
    if on_kaggle():
        scratch = Path("/kaggle/temp")
        try:
            scratch.mkdir(parents=True, exist_ok=True)
        except OSError:  # an image without /kaggle/temp: /tmp is not saved either
            scratch = Path(tempfile.gettempdir()) / "kit"
            scratch.mkdir(parents=True, exist_ok=True)
        return NotebookPaths(Path("/kaggle/input"), Path("/kaggle/working"), scratch, True)
    inp = Path(local_input or os.environ.get("KIT_INPUT") or ".").resolve()
    work = Path(local_working or os.environ.get("KIT_WORKING") or "runs/notebook").resolve()
    (work / "scratch").mkdir(parents=True, exist_ok=True)
    return NotebookPaths(inp, work, work / "scratch", False)


def find_input(name: str, paths: NotebookPaths | None = None) -> Path:
    """The folder of an attached competition or dataset called ``name`` (its slug) under the input root.

    Kaggle has mounted inputs both as ``/kaggle/input/<slug>`` and under ``competitions/`` or
    ``datasets/<owner>/``; all are tried. Locally ``name`` may also be the input folder itself.
    """
    paths = paths or notebook_paths()
    slug = name.rstrip("/").split("/")[-1]
    root = paths.input
    candidates = [root / slug, root / "competitions" / slug, *sorted(root.glob(f"datasets/*/{slug}"))]
    if not paths.on_kaggle:
        candidates.append(root)
    for cand in candidates:
        if cand.is_dir() and (cand.name == slug or cand == root and any(cand.iterdir())):
            return cand
    present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
    raise KitError(f"{root}: no input named {slug!r} (found: {', '.join(present) or 'nothing'}); attach it to the kernel")


def check_model_source(handle: str) -> str:
    """``handle`` when it is a Kaggle Model source owner/model/framework/variation/version; else KitError."""
    if not isinstance(handle, str) or not MODEL_SOURCE.match(handle):
        raise KitError(f"model source {handle!r} is not {MODEL_SOURCE_FORM}")
    return handle


def find_model_mount(handle: str, root: str | os.PathLike = "/kaggle/input") -> Path | None:
    """The folder where an attached Kaggle Model ``handle`` (owner/model/framework/variation/version) is mounted.

    Kaggle has mounted models as ``ROOT/<model>/<framework>/<variation>/<version>`` and, more
    recently, as ``ROOT/m/<owner>/<model>/<framework>/<variation>/<version>``; both are tried.
    None when the model is not attached.
    """
    owner, *rest = check_model_source(handle).split("/")
    root = Path(root)
    for folder in (root.joinpath(*rest), root.joinpath("m", owner, *rest)):
        if folder.is_dir():
            return folder
    return None


def has_internet(host: str = "www.kaggle.com", port: int = 443, timeout: float = 3.0) -> bool:
    """True when a TCP connection to ``host`` opens (a kernel with internet on); nothing is downloaded."""
    import socket

    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pretrained_weights(handle: str, paths: NotebookPaths | None = None,
                       online: Callable[[], bool] = has_internet) -> str:
    """What a notebook passes to ``--weights``: the attached model's folder, else its ``kaggle://`` handle if online.

    keras-hub downloads a ``kaggle://`` preset itself; ``imagenet`` would not do, as the model is a keras-hub one.

    Offline and without the model attached, stops with one line naming the model to attach.
    """
    paths = paths or notebook_paths()
    folder = find_model_mount(handle, paths.input)
    if folder is not None:
        return str(folder)
    if online():
        return f"kaggle://{handle}"
    raise KitError(f"{paths.input}: the Kaggle Model {handle} is not attached and the kernel is offline: add it "
                   f"(Add Input > Models, or kit push --model-source {handle}) or turn internet on")


def locate(root: str | os.PathLike, entry: str, max_depth: int = 3) -> Path:
    """The shallowest folder under ``root`` that holds ``entry`` (a file or folder name).

    Kaggle datasets often wrap a download in one or two extra folders; this finds the layout's root.
    """
    level = [Path(root)]
    for _ in range(max_depth + 1):
        for folder in level:
            if (folder / entry).exists():
                return folder
        level = sorted(p for folder in level for p in folder.iterdir() if p.is_dir())
    raise KitError(f"{root}: no {entry!r} within {max_depth} folder levels")


def link_shards(src: str | os.PathLike, dest: str | os.PathLike, split: str) -> Path:
    """Link the ``{split}*.tfrec`` shards of ``src`` into ``dest`` (public folders mix train and test)."""
    shards = sorted(Path(src).glob(f"{split}*.tfrec"))
    if not shards:
        raise KitError(f"{src}: no {split}*.tfrec shards")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        link = dest / shard.name
        if not link.exists():
            link.symlink_to(shard.resolve())
    return dest


def attached_isic2024_run(run_dataset: str, paths: NotebookPaths) -> Path | None:
    """The run folder an ISIC 2024 submission predicts with: the attached ``run_dataset`` (or, on Kaggle, the fold
    kernels attached as kernel sources); None off Kaggle when nothing is attached (a rehearsal trains one)."""
    try:
        return locate(find_input(run_dataset, paths), runfolder.CONFIG)
    except KitError:
        if not paths.on_kaggle:
            return None
        try:  # the folds may come from fan-out kernels attached as kernel sources
            return attached_run(paths)
        except KitError:
            raise KitError(f"{run_dataset}: attach your trained run folder ({runfolder.CONFIG}, "
                           f"fold*/{runfolder.BEST}) as a dataset, or the kernels that trained its folds") from None


# Kaggle's session limits (its notebook documentation: 12 hours for CPU and GPU sessions, 9 for TPU sessions)
SESSION_HOURS = {"t4": 12.0, "cpu": 12.0, "tpu": 9.0}


def time_limit(session_hours: float, started: float, margin_hours: float = 0.5) -> str:
    """What a notebook passes to ``kit train --time-limit``: the session's ``session_hours`` less ``margin_hours``
    (kept for what runs after training: predictions, the submission) less what has run since ``started``
    (``time.time()`` in the notebook's first cell), in whole seconds, at least one."""
    left = (session_hours - margin_hours) * 3600 - (time.time() - started)
    return f"{max(1, int(left))}s"


def previous_run(run: str | os.PathLike, paths: NotebookPaths | None = None) -> bool:
    """Copy the run folder of an earlier kernel's output into ``run`` when ``kit push --resume-from KERNEL`` asked for
    it (KIT_RESUME_FROM, set by the cell it adds); True when ``run`` then holds a run to ``kit train --resume``.

    The kernel's output is mounted read-only under the input root as its slug (/kaggle/input/<slug>/); the run
    folder in it is the one named like ``run`` that holds config.toml, else the shallowest folder that does. A run
    already in ``run`` (this session's) is kept.
    """
    kernel = os.environ.get("KIT_RESUME_FROM", "").strip()
    run = Path(run)
    if (run / runfolder.CONFIG).is_file():
        return True
    if not kernel:
        return False
    slug = kernel.split("/")[1] if kernel.count("/") >= 1 else kernel
    root = find_input(slug, paths)
    named = root / run.name
    source = named if (named / runfolder.CONFIG).is_file() else locate(root, runfolder.CONFIG)
    for path in sorted(source.rglob("*")):  # file by file: a copy of the read-only input's modes would stay read-only
        dest = run / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
    print(f"resuming the run of {kernel} ({source}) in {run}")
    return True
def fold_group(folder: str | os.PathLike | None = None) -> list[int] | None:
    """The folds this kernel trains, from ``kit-folds.json`` in ``folder`` (default the current one); None
    (every fold) where there is no such file."""
    path = Path(folder or ".") / FOLDS_FILE
    if not path.is_file():
        return None
    try:
        folds = json.loads(path.read_text()).get("folds")
    except (json.JSONDecodeError, AttributeError):
        folds = None
    if not isinstance(folds, list) or not folds or not all(isinstance(f, int) and f >= 0 for f in folds):
        raise KitError(f"{path}: not a fold group ({{\"folds\": [0, 1]}} expected); push again with kit push --fan-out")
    return folds


def fold_args(folder: str | os.PathLike | None = None) -> list[str]:
    """``['--folds', '0,1']`` for ``kit train`` in a fan-out kernel (:func:`fold_group`); [] elsewhere."""
    folds = fold_group(folder)
    return ["--folds", ",".join(map(str, folds))] if folds else []


def attached_run(paths: NotebookPaths, out: str | os.PathLike | None = None) -> Path:
    """The run to predict with: the one run folder under the inputs, or every fold-group kernel's run attached
    (kit push --kernel-source) merged into ``out`` (default scratch/run-merged) as ``kit runs merge`` does."""
    from kit.runs import listing as runs

    found = runs.find_runs([paths.input]) if paths.input.is_dir() else []
    if not found:
        raise KitError(f"{paths.input}: no run folder ({runfolder.CONFIG}) among the inputs; attach the trained run "
                       "as a dataset, or its fold kernels as kernel sources")
    if len(found) == 1:
        return found[0]
    return runs.merge_runs(found, Path(out) if out else paths.scratch / "run-merged")


__all__ = [
    "FOLDS_FILE", "MODEL_SOURCE_FORM", "NotebookPaths", "attached_run", "check_model_source", "find_input",
    "find_model_mount", "fold_args", "fold_group", "has_internet", "attached_isic2024_run", "link_shards", "locate",
    "notebook_paths", "on_kaggle", "pretrained_weights", "previous_run", "time_limit",
]
