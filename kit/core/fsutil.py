"""Atomic writes: nothing half-written is ever left under its final name.

The temporary files and folders come from ``mkstemp``/``mkdtemp``, which create them private (0600 and
0700) whatever the umask says; they are given the mode any other tool would create (0666 and 0777 less
the umask) before they take their final name, so records, runs and submissions are shared as the user
expects.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from kit.core.errors import KitError

if TYPE_CHECKING:  # pandas costs ~0.2 s to import: kit push / status use this module and never need it
    import pandas as pd


def umask() -> int:
    """The process's file-creation mask (read without changing it for longer than one call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _honour_umask(path: Path, folder: bool = False) -> None:
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, keep_suffix: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds.

    ``keep_suffix``: the temporary name ends as ``path`` does (``.keras``, ``.weights.h5``), for writers
    such as Keras' that choose the format by the file name.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(final.suffixes) if keep_suffix else ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=suffix, dir=final.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            _honour_umask(tmp_path)
        _replace(tmp_path, final)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _replace(tmp: Path, final: Path) -> None:
    """``os.replace(tmp, final)``; a refusal names ``final`` (the path the user gave), not the hidden temporary one."""
    try:
        os.replace(tmp, final)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        if exc.errno == errno.EBUSY:  # a mount point (an empty volume given as --out) cannot be renamed onto
            reason += " (a mount point or a path in use cannot be replaced; give a new folder inside it)"
        raise type(exc)(exc.errno, reason, str(final)) from None


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False, default=str, allow_nan=False) + "\n")


def _finite(obj: Any) -> Any:
    """``obj`` with NaN and infinite floats as None: JSON has no NaN or Infinity, and strict readers refuse them."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_csv(path: str | os.PathLike, df: pd.DataFrame, **kwargs: Any) -> Path:
    """Write a DataFrame as CSV (no index) to ``path`` atomically."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)
    return Path(path)


def write_figure(fig: Any, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG to ``path`` atomically, and close it."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_dead_partials(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary folders that killed writers of ``path`` left (``.NAME.PID.*.partial`` whose
    process is gone); folders of live writers stay. Returns what was removed."""
    final = Path(path)
    # exactly ".NAME.PID.RANDOM.partial" (mkdtemp's random part has no dots): the leftovers of a folder
    # named "NAME.5" never pass for NAME's
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(\d+)\.[^.]+\.partial")
    removed = []
    if not final.parent.is_dir():
        return removed
    for partial in sorted(final.parent.iterdir()):
        match = pattern.fullmatch(partial.name)
        if match and partial.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(partial, ignore_errors=True)
            removed.append(partial)
    return removed


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``path``; rename it onto ``path`` only on success.

    ``path`` must not exist yet (callers refuse to overwrite earlier output with a clear error). The
    temporary name carries the writer's pid: a writer killed outright (SIGKILL, a kernel restart) cannot
    clean up after itself, so the next writer of the same path removes such leftovers first.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".partial", dir=final.parent))
    try:
        yield tmp
        _honour_umask(tmp, folder=True)
        try:
            _replace(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
            # another writer of the same path finished first: its complete output stays, this one is dropped
            raise KitError(f"{final}: was written by another process meanwhile; its output is kept and "
                           "this one dropped") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
