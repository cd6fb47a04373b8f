"""kit.core.fsutil: atomic files and folders, and the clean-up of what killed writers leave."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from kit.core import fsutil


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_atomic_dir_appears_only_complete(tmp_path):
    out = tmp_path / "rec[1]"  # glob metacharacters in the name are taken literally
    with pytest.raises(RuntimeError):
        with fsutil.atomic_dir(out) as tmp:
            (tmp / "a.txt").write_text("half")
            assert tmp.name.startswith(f".rec[1].{os.getpid()}.") and tmp.name.endswith(".partial")
            raise RuntimeError("killed")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with fsutil.atomic_dir(out) as tmp:
        (tmp / "a.txt").write_text("whole")
    assert (out / "a.txt").read_text() == "whole" and [p.name for p in tmp_path.iterdir()] == ["rec[1]"]


def test_only_dead_writers_partials_are_removed(tmp_path):
    out = tmp_path / "records"
    dead = tmp_path / f".records.{_dead_pid()}.x1.partial"
    live = tmp_path / f".records.{os.getpid()}.x2.partial"
    other = tmp_path / f".records-b.{_dead_pid()}.x3.partial"  # other folders' leftovers
    dotted = tmp_path / f".records.5.{os.getpid()}.x4.partial"  # (a live writer of "records.5")
    for folder in (dead, live, other, dotted):
        (folder / "train00-10.tfrec").parent.mkdir()
        (folder / "train00-10.tfrec").write_bytes(b"x")
    assert fsutil.remove_dead_partials(out) == [dead]
    assert not dead.exists() and live.exists() and other.exists() and dotted.exists()
