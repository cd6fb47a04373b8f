"""The kit command inside a notebook: ``run_kit`` runs a verb exactly as in a terminal, and the ISIC 2024 notebook's
run (attached, or trained here when rehearsing). These drive the command line, so they live with it: the kernel
helpers in kit.kaggle.kernel never import the CLI."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from kit.cli import app
from kit.core.errors import KitError
from kit.kaggle.kernel import NotebookPaths, attached_isic2024_run


def run_kit(*argv: Any) -> None:
    """Run a ``kit`` command from a notebook, exactly as in a terminal; stops the notebook if it fails."""
    args = [str(a) for a in argv]
    code = app.main(args)
    if code:
        raise KitError(f"kit {' '.join(args[:1])} failed with status {code} (its message is above)")


def isic2024_run(run_dataset: str, source: str | os.PathLike, paths: NotebookPaths, *, tiny: bool = False) -> Path:
    """The run folder an ISIC 2024 submission predicts with: the attached ``run_dataset`` on Kaggle; when
    rehearsing (``tiny``, or locally without it), a tiny run trained here on ``source``'s train split."""
    if not tiny:
        attached = attached_isic2024_run(run_dataset, paths)
        if attached is not None:
            return attached
    run, recs = paths.working / "run", paths.scratch / "records"
    run_kit("records", source, "--out", recs, "--size", 32, "--folds", 3)  # kit stack needs three folds
    run_kit("train", "--records", recs, "--out", run, "--model", "tiny_cnn", "--epochs", 1, "--batch", 8,
            "--meta", "--oversample", 0.25, "--epoch-positives", 2)
    return run
