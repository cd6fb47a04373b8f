"""Pairing each submission with the run that wrote it, through the submission's sidecar.

``NAME.json`` beside ``NAME.csv`` names the run folder in its ``"run"`` (``kit predict`` and ``kit stack`` write
it): weights fit on the runs in one order and applied to the files in another would blend the wrong files
with each weight.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from kit.core.errors import KitError


def sidecar_of(submission: str | os.PathLike) -> Path:
    """The JSON sidecar ``kit predict`` writes beside a submission: ``NAME.json`` for ``NAME.csv``."""
    return Path(submission).with_suffix(".json")


def _run_key(run: str | os.PathLike) -> str:
    """A run folder compared by its resolved path (a relative path as seen from the working folder)."""
    return os.path.realpath(os.fspath(run))


def _sidecar_run(submission: str, run_at_position: str) -> str:
    """The run folder a submission's sidecar names; KitError naming the submission and the --oof run beside it."""
    side = sidecar_of(submission)
    how = "pass --pair-by-order if --oof lists the runs in the order of the submissions"
    if not side.is_file():
        raise KitError(f"{submission}: no sidecar {side} to say which run wrote it, so it cannot be paired with "
                       f"--oof {run_at_position}; {how}")
    try:
        run = json.loads(side.read_text()).get("run")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        run = None
    if not isinstance(run, str) or not run:
        raise KitError(f"{side}: unreadable or names no \"run\", so {submission} cannot be paired with "
                       f"--oof {run_at_position}; {how}")
    return run


def pair_runs(inputs: Sequence[str | os.PathLike], runs: Sequence[str | os.PathLike]) -> list[str]:
    """The ``runs`` in the order of the submissions ``inputs``, each paired through the submission's sidecar.

    Refuses (one line naming the submission and the run) a missing or unreadable sidecar, a sidecar naming a run
    that is not among ``runs``, and two submissions naming the same run."""
    inputs, runs = [str(p) for p in inputs], [str(r) for r in runs]
    by_key = {}
    for r in runs:
        by_key.setdefault(_run_key(r), r)
    owner: dict[str, str] = {}
    paired = []
    for sub, beside in zip(inputs, runs):
        named = _sidecar_run(sub, beside)
        key = _run_key(named)
        if key not in by_key:
            raise KitError(f"{sub}: its sidecar {sidecar_of(sub)} names run {named}, which is not among the --oof "
                           "run folders")
        if key in owner:
            raise KitError(f"{sub}: its sidecar names run {named}, as {owner[key]}'s does; each submission needs "
                           "a run of its own in --oof")
        owner[key] = sub
        paired.append(by_key[key])
    return paired
