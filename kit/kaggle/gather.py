"""``kit gather KERNEL ... --out RUN``: the run folders that fold-group kernels wrote, downloaded and merged.

Each kernel's status is read first: one still running or failed is refused with one line, or named and
skipped with ``--partial``. The outputs of the others are downloaded with ``kaggle kernels output`` (the
client fetches every page of files) into ``DOWNLOADS/OWNER-SLUG/gather-TIME``, their run folders found
(kit.runs.listing.find_runs) and merged into ``RUN`` by kit.runs.listing.merge_runs, as ``kit runs merge`` does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from kit.kaggle import client as kaggle
from kit.runs import listing as runs
from kit.core.errors import KitError


@dataclass
class Gathered:
    """One kernel's part: its state, where its outputs landed, the run folders found there."""

    kernel: str
    state: str
    folder: Path | None = None
    files: int = 0
    runs: list[Path] = field(default_factory=list)
    skipped: str | None = None  # why it was left out (with --partial)


@dataclass
class GatherResult:
    """Every kernel's part and the merged run."""

    parts: list[Gathered]
    out: Path | None


_DOWNLOADED = re.compile(r"^(?:Output file|Kernel log) downloaded to (.+?)\s*$")


def download_output(kernel: str, folder: Path) -> int:
    """Download every output file of ``kernel`` into ``folder``; the number of files written."""
    folder.mkdir(parents=True, exist_ok=True)
    run = kaggle.run_client(["kernels", "output", kernel, "-p", str(folder), "-o"])
    if run.returncode != 0:
        raise KitError(kaggle.one_line(f"kaggle kernels output {kernel}: {run.failure()}"))
    return sum(1 for line in run.stdout.splitlines() if _DOWNLOADED.match(line))


def _why_not(status: kaggle.KernelStatus) -> str:
    if status.status == "complete":
        return ""
    if status.status in kaggle.FINAL_STATUSES:
        reason = f" ({kaggle.one_line(status.failure_message)})" if status.failure_message else ""
        return f"{status.kernel} ended with {status.status}{reason}"
    return f"{status.kernel} is still {status.status}"


def gather(kernels: Sequence[str], out: str | os.PathLike, *, partial: bool = False,
           downloads: str | os.PathLike = "runs/kernels", say: Callable[[str], None] = print) -> GatherResult:
    """Download each complete kernel's outputs, find their run folders and merge them into ``out``."""
    if not kernels:
        raise KitError("kit gather: no kernel given (owner/slug ...)")
    out = Path(out)
    if out.exists():
        raise KitError(f"--out {out}: exists; kit gather writes a new run folder")
    refs = []
    for k in kernels:
        owner, slug, _ = kaggle.kernel_ref(k)
        refs.append(f"{owner}/{slug}")
    if len(set(refs)) != len(refs):
        twice = next(r for r in refs if refs.count(r) > 1)
        raise KitError(f"kernel {twice} is given twice")
    parts = []
    for ref in refs:
        status = kaggle.kernel_status(ref)
        why = _why_not(status)
        if why and not partial:
            raise KitError(f"{why}: wait for it, or give --partial to gather the others")
        parts.append(Gathered(ref, status.status, skipped=why or None))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for part in parts:
        if part.skipped:
            say(f"skipped: {part.skipped}")
            continue
        part.folder = Path(downloads) / part.kernel.replace("/", "-") / f"gather-{stamp}"
        part.files = download_output(part.kernel, part.folder)
        part.runs = runs.find_runs([part.folder])
        if not part.runs:
            raise KitError(f"{part.kernel}: no run folder (config.toml) in its {part.files} output file(s) in "
                           f"{part.folder}")
        say(f"{part.kernel}: {part.files} file(s), run folder(s) {', '.join(map(str, part.runs))}")
    sources = [r for p in parts for r in p.runs]
    if not sources:
        raise KitError("kit gather: no kernel has finished; nothing to merge")
    merged = runs.merge_runs(sources, out)
    return GatherResult(parts, Path(merged))


def format_result(result: GatherResult) -> str:
    """The closing lines of ``kit gather``: what was merged, what was skipped."""
    used = [p for p in result.parts if not p.skipped]
    lines = [f"merged {sum(len(p.runs) for p in used)} run folder(s) from {len(used)} kernel(s) into {result.out}"]
    lines += [f"left out: {p.kernel} ({p.state})" for p in result.parts if p.skipped]
    return "\n".join(lines)


__all__ = ["GatherResult", "Gathered", "download_output", "format_result", "gather"]
