"""The files and folders a verb names, checked before TensorFlow loads, so that a typo fails at once.

Importing TensorFlow takes seconds; ``kit train`` and ``kit predict`` call :func:`train_paths` or
:func:`predict_paths` first, which import nothing heavier than ``json`` (no TensorFlow, Keras or
pandas). They check that things are where the flags say; kit.data.records, kit.training.train and kit.ensemble.predict
still check what is inside. Every failure is a ``KitError`` of one line that names the path.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kit.core.errors import KitError

MANIFEST = "manifest.json"


def records_folder(path: str | os.PathLike, flag: str = "--records") -> Path:
    """A records folder: it exists and holds a readable manifest.json, or ``*.tfrec`` shards (public sets)."""
    folder = Path(path)
    if not folder.is_dir():
        raise KitError(f"{folder}: no such records folder ({flag})")
    manifest = folder / MANIFEST
    if manifest.is_file():
        try:
            json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise KitError(f"{manifest}: not valid JSON ({exc})") from None
        return folder
    if not any(folder.glob("*.tfrec")):
        raise KitError(f"{folder}: no {MANIFEST} and no .tfrec shards ({flag}); write records with `kit records`")
    return folder


def holds_records(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds records (a manifest.json or .tfrec shards) rather than a competition download."""
    folder = Path(folder)
    return (folder / MANIFEST).is_file() or any(folder.glob("*.tfrec"))


def test_input(path: str | os.PathLike, flag: str = "--records") -> Path:
    """What ``kit predict`` reads: test records, or a competition download whose test split it reads directly."""
    folder = Path(path)
    if folder.is_dir() and not holds_records(folder):
        if any(folder.glob("*.csv")) or any((folder / d).is_dir() for d in ("test", "Test")):
            return folder  # a download: kit.data.sources reads its test split
        raise KitError(f"{folder}: neither test records (no {MANIFEST}, no .tfrec shards) nor a competition "
                       f"download ({flag}); write test records with `kit records --test`")
    return records_folder(path, flag)


def input_file(path: str | os.PathLike, flag: str) -> Path:
    """A file the verb reads: it exists and is a file."""
    p = Path(path)
    if not p.is_file():
        raise KitError(f"{p}: {'is a folder, not a file' if p.is_dir() else 'no such file'} ({flag})")
    return p


def output_path(path: str | os.PathLike, flag: str, folder: bool = False) -> Path:
    """Where the verb writes (a file, or with ``folder`` a folder): not the other kind, and creatable.

    Missing parent folders are fine (kit creates them) as long as the nearest existing one is a
    writable folder.
    """
    p = Path(path)
    if p.exists() and p.is_dir() != folder:
        want, found = ("folder", "file") if folder else ("file", "folder")
        raise KitError(f"{p}: is a {found}, expected a {want} ({flag})")
    parent = p.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise KitError(f"{p}: cannot be created, {parent} is a file ({flag})")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise KitError(f"{p}: cannot be created, {parent} is not writable ({flag})")
    return p


def fresh_output(path: str | os.PathLike, flag: str, force: bool, sidecars: tuple[str, ...] = ()) -> Path:
    """An output file that does not exist yet (nor its ``sidecars``, e.g. ``.json``), unless ``force`` replaces them."""
    p = output_path(path, flag)
    if not force:
        for existing in [p, *(p.with_suffix(s) for s in sidecars)]:
            if existing.exists():
                raise KitError(f"{existing}: already exists ({flag}); pass --force to replace it, or choose "
                               "another name")
    return p


def train_paths(records: str, out: str) -> None:
    """``kit train``'s paths: the records folder (when given) and the run folder to write."""
    if records:
        records_folder(records)
    if not out:
        raise KitError("no run folder: pass --out (or set out in the config file)")
    output_path(out, "--out", folder=True)


def predict_paths(records: str, out: str, sample_submission: str | None = None,
                  force: bool = False) -> None:
    """``kit predict``'s paths (the run folder is kit.runs.folder's to check): the test records, the sample
    submission and the output CSV (new, with its ``.json`` report, unless ``force``)."""
    test_input(records)
    if sample_submission:
        input_file(sample_submission, "--sample-submission")
    fresh_output(out, "--out", force, sidecars=(".json",))
