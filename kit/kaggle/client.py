"""Kaggle kernels from kit: push / status / output / submit through the real ``kaggle`` client.

kit never talks to Kaggle itself and never passes, prints, logs or writes a credential: the
``kaggle`` client (run as a subprocess, the one installed beside this Python) finds them in its own
places (kit.kaggle.credentials; what the client prints is redacted before kit reads it). The client exits 0
when the server answers with an error and ``kernels status`` exits 0 on a failed kernel, so every call
here reads what the client printed.

This module runs on the user's machine and sends the kernel folder kit.kaggle.kernel_folder renders (the
notebook with the kit wheel embedded, kernel-metadata.json), whose names it re-exports. What runs
inside the kernel is kit.kaggle.kernel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from kit.core import fsutil
from kit.kaggle.credentials import kaggle_username, redact
from kit.core.errors import KitError
from kit.kaggle.kernel_folder import (
    ACCELERATORS, COMPETITION_SLUG, INSTALL_TAG, KERNEL_ID, KERNELSPEC, METADATA_FILE, OWNER_PLACEHOLDER, RESUME_TAG,
    KernelFolder, accelerator_settings, build_wheel, check_metadata, check_resume_from, default_metadata,
    install_cell, install_cell_source, kernel_metadata, kit_wheel, notebook_kernel_defaults, prepare_notebook,
    render_kernel, resume_cell, slugify, wheel_files, write_wheel_dataset,
)

# Statuses after which a kernel never changes again (the client prints KernelWorkerStatus names).
FINAL_STATUSES = ("complete", "error", "cancel_acknowledged")


# --- running the client -------------------------------------------------------------------------


def client_path() -> Path:
    """The ``kaggle`` client installed beside this Python (else the one on PATH)."""
    here = Path(sys.executable).parent / "kaggle"
    if here.is_file():
        return here
    found = shutil.which("kaggle")
    if found:
        return Path(found)
    raise KitError(f"{here}: the kaggle client is not installed (pip install 'kaggle==2.2.*')")


@dataclass
class ClientRun:
    """What the client printed (credentials redacted) and its exit status."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def lines(self) -> list[str]:
        """Non-empty output lines, stdout first."""
        return [ln.strip() for ln in (self.stdout + "\n" + self.stderr).splitlines() if ln.strip()]

    def failure(self) -> str:
        """One line saying why the client failed."""
        if any(ln.startswith("Authentication required") for ln in self.lines()):
            return ("Authentication required: Kaggle refused the credentials or found none "
                    "(run `kaggle auth login`, or put an API token in ~/.kaggle/kaggle.json)")
        text = [ln for ln in self.lines() if not ln.startswith("Warning:")] or self.lines()
        return text[-1] if text else f"exited with status {self.returncode}"


def run_client(args: Sequence[str], *, timeout: float = 600.0) -> ClientRun:
    """Run ``kaggle ARGS`` and capture what it printed; the credentials stay in the client's hands."""
    cmd = [str(client_path()), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise KitError(f"kaggle {' '.join(args[:2])}: no answer within {timeout:.0f} s") from None
    return ClientRun(list(args), proc.returncode, redact(proc.stdout or ""), redact(proc.stderr or ""))


def one_line(text: str) -> str:
    """``text`` on one line: every run of whitespace (newlines included) becomes one space."""
    return re.sub(r"\s+", " ", text).strip()


def _client_error(run: ClientRun) -> KitError:
    return KitError(one_line(f"kaggle {' '.join(run.args[:2])}: {run.failure()}"))


# --- push ---------------------------------------------------------------------------------------


@dataclass
class PushResult:
    """A rendered kernel folder, and what Kaggle answered when it was sent."""

    kernel: KernelFolder
    sent: bool
    url: str | None = None
    version: int | None = None
    messages: list[str] = field(default_factory=list)


_PUSHED = re.compile(r"Kernel version\s*(\d*)\s*successfully pushed\.\s*Please check progress at (\S+)")


def push(notebook: str | os.PathLike, *, folder: str | os.PathLike | None = None, owner: str | None = None,
         dry_run: bool = False, slug: str | None = None, title: str | None = None, accelerator: str | None = None,
         competition: str | None = None, datasets: Sequence[str] = (), kernels: Sequence[str] = (),
         models: Sequence[str] = (), private: bool = True, internet: bool = False, kit_dataset: str | None = None,
         bundle: bool = True, defaults: dict[str, Any] | None = None, resume_from: str | None = None,
         record_dir: str | os.PathLike = "runs/kernels", timeout: float = 600.0) -> PushResult:
    """Render a kernel folder for ``notebook`` and send it with ``kaggle kernels push -p FOLDER``.

    The kernel settings (``slug`` ... ``defaults``) are :func:`render_kernel`'s. A dry run renders and
    sends nothing. A pushed kernel's id, version and URL are recorded in ``record_dir/OWNER-SLUG/push.json``
    so that ``kit output`` can name its files by version.
    """
    owner = owner or kaggle_username()
    if not owner:
        if not dry_run:
            raise KitError("no Kaggle user name: set KAGGLE_USERNAME, add it to ~/.kaggle/kaggle.json, or pass --owner")
        owner = OWNER_PLACEHOLDER
    scratch = not folder and not dry_run  # a folder nobody asked to see: removed once sent
    folder = Path(folder) if folder else Path(tempfile.mkdtemp(prefix="kit-kernel-"))
    try:
        kernel = render_kernel(notebook, folder, owner=owner, slug=slug, title=title, accelerator=accelerator,
                               competition=competition, datasets=datasets, kernels=kernels, models=models,
                               private=private, internet=internet, kit_dataset=kit_dataset, bundle=bundle,
                               defaults=defaults, resume_from=resume_from)
        if dry_run:
            return PushResult(kernel, sent=False)
        run = run_client(["kernels", "push", "-p", str(kernel.folder)], timeout=timeout)
    finally:
        if scratch:
            shutil.rmtree(folder, ignore_errors=True)
    lines = run.lines()
    errors = [ln for ln in lines if ln.startswith("Kernel push error")]
    refused = [ln for ln in lines if ln.startswith("The following are not valid")]
    match = next((m for m in map(_PUSHED.search, lines) if m), None)
    if run.returncode != 0 or errors or not match:
        raise _client_error(run) if not errors else KitError(one_line(f"kaggle kernels push: {errors[0]}"))
    version = int(match.group(1)) if match.group(1) else None
    result = PushResult(kernel, True, match.group(2), version, lines)
    owner_, slug = kernel.metadata["id"].split("/")
    fsutil.write_json(Path(record_dir) / f"{owner_}-{slug}" / "push.json", {
        "kernel": kernel.metadata["id"], "version": version, "url": result.url,
        "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    if refused:
        raise KitError(one_line(f"kaggle kernels push: {refused[0]} (version {version} was saved at {result.url})"))
    return result


def format_push(result: PushResult) -> str:
    """What `kit push` prints: the folder and metadata (dry run) or the kernel URL and version."""
    meta = result.kernel.metadata
    privacy = "private" if meta["is_private"] else "public"
    if not result.sent:
        lines = [f"dry run: nothing sent; kernel folder {result.kernel.folder}"]
        if meta["id"].startswith(OWNER_PLACEHOLDER + "/"):
            lines.append(f"  (no Kaggle user name configured: the id says {OWNER_PLACEHOLDER!r}; see --owner)")
        lines += [f"  {name}" for name in result.kernel.files]
        if result.kernel.wheel is not None:
            lines.append(f"  (kit: {result.kernel.embedded_wheel()})")
        lines += [f"{METADATA_FILE}:", json.dumps(meta, indent=2)]
        return "\n".join(lines)
    version = f"version {result.version}" if result.version else "new version"
    return f"pushed {meta['id']} {version} ({privacy}): {result.url}"


# --- status -------------------------------------------------------------------------------------


@dataclass
class KernelStatus:
    """A kernel's latest run: queued, running, complete, error, ..."""

    kernel: str
    status: str
    failure_message: str | None = None


_STATUS = re.compile(r'has status "([^"]*)"')
_FAILURE = re.compile(r'Failure message: "(.*)"')


def kernel_ref(kernel: str) -> tuple[str, str, int | None]:
    """owner, slug and the version (if given as owner/slug/N)."""
    parts = kernel.strip().split("/")
    if len(parts) in (2, 3) and KERNEL_ID.match("/".join(parts[:2])) and (len(parts) == 2 or parts[2].isdigit()):
        return parts[0], parts[1], int(parts[2]) if len(parts) == 3 else None
    raise KitError(f"kernel {kernel!r} is not owner/slug (or owner/slug/version)")


def kernel_status(kernel: str, wait: bool = False, interval: float = 30.0, timeout: float | None = None,
                  on_change: Callable[[KernelStatus], None] | None = None) -> KernelStatus:
    """The kernel's status from ``kaggle kernels status``; with ``wait``, poll until it is final.

    ``on_change`` is called with each new status seen while waiting (e.g. to print progress).
    """
    owner, slug, _ = kernel_ref(kernel)
    ref = f"{owner}/{slug}"
    start = time.monotonic()
    last = None
    while True:
        run = run_client(["kernels", "status", ref])
        text = "\n".join(run.lines())
        match = _STATUS.search(text)
        if run.returncode != 0 or not match:
            raise _client_error(run)
        status = match.group(1).split(".")[-1].lower()
        failure = _FAILURE.search(text)
        result = KernelStatus(ref, status, failure.group(1) if failure else None)
        if not wait or status in FINAL_STATUSES:
            return result
        if on_change is not None and status != last:
            on_change(result)
        last = status
        if timeout is not None and time.monotonic() - start + interval > timeout:
            raise KitError(f"{ref}: still {status} after {timeout:.0f} s")
        time.sleep(interval)


def format_status(status: KernelStatus) -> str:
    """One line: kernel and status, plus Kaggle's failure message if any."""
    line = f"{status.kernel}: {status.status}"
    return line + (f" ({one_line(status.failure_message)})" if status.failure_message else "")


# --- output -------------------------------------------------------------------------------------


@dataclass
class KernelOutput:
    """A kernel's downloaded outputs, and where its submission.csv was copied."""

    kernel: str
    version: int | None
    folder: Path
    files: list[Path]
    submission: Path | None = None


def _recorded_version(owner: str, slug: str, record_dir: str | os.PathLike) -> int | None:
    path = Path(record_dir) / f"{owner}-{slug}" / "push.json"
    try:
        version = json.loads(path.read_text()).get("version")
    except (OSError, json.JSONDecodeError):
        return None
    return int(version) if isinstance(version, int) else None


_DOWNLOADED = re.compile(r"^(?:Output file|Kernel log) downloaded to (.+?)\s*$")


def kernel_output(kernel: str, out: str | os.PathLike | None = None, *, submissions: str | os.PathLike = "submissions",
                  record_dir: str | os.PathLike = "runs/kernels") -> KernelOutput:
    """Download a kernel's outputs (``kaggle kernels output``); copy its submission.csv into ``submissions``.

    The copy is named ``OWNER-SLUG-vN.csv``: N from ``owner/slug/N``, else from the version
    ``kit push`` recorded, else ``latest`` plus the UTC time.
    """
    owner, slug, version = kernel_ref(kernel)
    version = version if version is not None else _recorded_version(owner, slug, record_dir)
    tag = f"v{version}" if version is not None else "latest-" + datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    folder = Path(out) if out else Path(record_dir) / f"{owner}-{slug}" / tag
    folder.mkdir(parents=True, exist_ok=True)
    run = run_client(["kernels", "output", f"{owner}/{slug}", "-p", str(folder), "-o"])
    if run.returncode != 0:
        raise _client_error(run)
    files = [Path(m.group(1)) for m in map(_DOWNLOADED.match, run.stdout.splitlines()) if m]
    result = KernelOutput(f"{owner}/{slug}", version, folder, files)
    found = [f for f in files if f.name == "submission.csv" and f.is_file()]
    if found:
        dest = Path(submissions) / f"{owner}-{slug}-{tag}.csv"
        with fsutil.atomic_path(dest) as tmp:
            shutil.copyfile(min(found, key=lambda p: len(p.parts)), tmp)
        result.submission = dest
    return result


def format_output(result: KernelOutput) -> str:
    """What `kit output` prints: where the files are, and the submission copy."""
    lines = [f"{result.kernel}: {len(result.files)} file(s) in {result.folder}"]
    lines += [f"  {f.name}" for f in result.files]
    lines.append(f"submission: {result.submission}" if result.submission else "no submission.csv in the outputs")
    return "\n".join(lines)


# --- submit -------------------------------------------------------------------------------------


def _check_before_submit(path: Path, sample: str | os.PathLike) -> None:
    from kit.ensemble import submission

    problems = submission.check_submission(str(path), str(sample))
    if problems:
        more = f" (and {len(problems) - 1} more; run kit check)" if len(problems) > 1 else ""
        raise KitError(one_line(f"{path}: {problems[0]}{more}"))


def submit(path: str | os.PathLike, competition: str, message: str, sample: str | os.PathLike | None = None,
           *, kernel: str | None = None, record_dir: str | os.PathLike = "runs/kernels") -> str:
    """Submit a CSV (``kaggle competitions submit``), checked against the sample first when it is known.

    Code competitions submit a kernel version's output instead: pass ``kernel`` as owner/slug/N
    (or owner/slug, taking the version ``kit push`` recorded) and ``path`` as the output file name.
    Returns Kaggle's answer.
    """
    if not COMPETITION_SLUG.match(competition or ""):
        raise KitError(f"competition {competition!r} is not a competition slug")
    if not message or not message.strip():
        raise KitError("--message is empty; Kaggle needs a description")
    path = Path(path)
    if kernel:
        owner, slug, version = kernel_ref(kernel)
        version = version if version is not None else _recorded_version(owner, slug, record_dir)
        if version is None:
            raise KitError(f"kernel {kernel!r}: no version known; give it as {owner}/{slug}/N")
        args = ["competitions", "submit", competition, "-k", f"{owner}/{slug}", "-v", str(version),
                "-f", path.name, "-m", message]
    else:
        if not path.is_file():
            raise KitError(f"{path}: submission file not found")
        if sample is not None:
            _check_before_submit(path, sample)
        args = ["competitions", "submit", competition, "-f", str(path), "-m", message, "-q"]
    run = run_client(args)
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    bad = [ln for ln in lines if ln.startswith(("Could not", "Upload of"))]
    if run.returncode != 0 or bad or not lines:
        raise KitError(one_line(f"kaggle competitions submit: {bad[0] if bad else run.failure()}"))
    return lines[-1].strip()


__all__: Iterable[str] = [
    "ACCELERATORS", "FINAL_STATUSES", "INSTALL_TAG", "KERNELSPEC", "METADATA_FILE", "OWNER_PLACEHOLDER", "RESUME_TAG",
    "ClientRun", "KernelFolder", "KernelOutput", "KernelStatus", "PushResult", "accelerator_settings", "build_wheel",
    "check_metadata", "check_resume_from", "client_path", "default_metadata", "format_output", "format_push",
    "format_status", "install_cell", "install_cell_source", "kaggle_username", "kernel_metadata", "kernel_output",
    "kernel_ref", "kernel_status", "kit_wheel", "notebook_kernel_defaults", "one_line", "prepare_notebook", "push",
    "redact", "render_kernel", "resume_cell", "run_client", "slugify", "submit", "wheel_files", "write_wheel_dataset",
]
