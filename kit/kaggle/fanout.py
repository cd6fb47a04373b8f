"""``kit push --fan-out``: one Kaggle kernel per fold group, at most N running at once, watched to the end.

Each group's kernel is the same notebook with two things added before its first code cell: a ``kit-folds``
cell that writes ``kit-folds.json`` (the folds kit.kaggle.kernel.fold_args hands to ``kit train``) and, where the
kernel's image lacks a package the notebook needs, a ``kit-deps`` cell holding its wheel (kit.kaggle.deps).
Its id and title are the notebook's with ``-folds-0-1`` / `` folds 0-1`` added. Kaggle receives the notebook
alone; ``kit-folds.json`` beside it in the rendered folder is for a local rehearsal and for reading.

Before pushing, the remaining accelerator hours (``kaggle quota``, where the installed client has it) are
compared with ``--hours-per-group`` x groups; with ``--wait`` and no estimate, the first finished group's
time is the estimate for the rest.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from kit.core import fsutil
from kit.kaggle import client as kaggle, deps as kernel_deps
from kit.core.errors import KitError
from kit.kaggle.kernel import FOLDS_FILE

FOLDS_TAG = "kit-folds"
LOG_TAIL = 10  # lines of a failed kernel's log shown
_MAX_BACKOFF = 8  # the poll interval grows up to this many times --poll-seconds while nothing changes
_QUOTA_RESOURCE = {"t4": "GPU", "tpu": "TPU"}


# --- fold groups -------------------------------------------------------------------------------


def parse_groups(texts: Sequence[str]) -> list[list[int]]:
    """``['0,1', '2,3', '4']`` -> [[0, 1], [2, 3], [4]]; KitError naming a bad or repeated fold."""
    groups: list[list[int]] = []
    seen: set[int] = set()
    for text in texts:
        try:
            folds = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise KitError(f"--fan-out {text!r}: not comma-separated fold numbers (e.g. --fan-out 0,1 2,3 4)") from None
        if not folds or any(f < 0 for f in folds):
            raise KitError(f"--fan-out {text!r}: not comma-separated fold numbers (e.g. --fan-out 0,1 2,3 4)")
        for f in folds:
            if f in seen:
                raise KitError(f"--fan-out: fold {f} is in two groups")
            seen.add(f)
        groups.append(folds)
    if not groups:
        raise KitError("--fan-out: no fold group given (e.g. --fan-out 0,1 2,3 4)")
    return groups


def group_suffix(folds: Sequence[int]) -> str:
    """``folds-0-1`` for folds 0 and 1: what a group's kernel id adds to the notebook's."""
    return "folds-" + "-".join(map(str, folds))


def group_identity(slug: str, title: str, folds: Sequence[int]) -> tuple[str, str]:
    """A group's kernel slug and title: the notebook's with the folds added, the title cut to Kaggle's 50."""
    suffix = group_suffix(folds)
    tail = " " + suffix.replace("folds-", "folds ", 1)
    new_title = title[: 50 - len(tail)].rstrip() + tail
    same = kaggle.slugify(title) == slug  # the title names the slug: keep it so
    return (kaggle.slugify(new_title) if same else f"{slug}-{suffix}"), new_title


def folds_data(folds: Sequence[int], index: int, count: int) -> dict[str, Any]:
    """What kit-folds.json holds: the group's folds, its place and the number of groups."""
    return {"folds": list(folds), "group": index, "groups": count}


def folds_cell_source(folds: Sequence[int], index: int, count: int) -> str:
    """The cell that tells a fan-out kernel its folds: it writes kit-folds.json where the notebook runs."""
    data = json.dumps(folds_data(folds, index, count))
    return "\n".join([
        f"# {FOLDS_TAG}: group {index + 1} of {count} of a fan-out (kit push --fan-out): this kernel trains folds "
        f"{', '.join(map(str, folds))}",
        "import pathlib",
        f"if not pathlib.Path({FOLDS_FILE!r}).is_file():  # Kaggle gets the notebook alone; locally it is beside it",
        f"    pathlib.Path({FOLDS_FILE!r}).write_text({data!r})",
    ])


# --- one notebook, with the cells its kernel needs ---------------------------------------------


@dataclass
class KernelPlan:
    """What the notebook's kernel is, as ``kit push`` would render it: id, title and accelerator."""

    slug: str
    title: str
    accelerator: str
    code: str


def plan_kernel(notebook: str | os.PathLike, render: dict[str, Any]) -> KernelPlan:
    """Render the notebook's kernel once without the wheel, to learn its slug, title and accelerator."""
    import nbformat

    scratch = Path(tempfile.mkdtemp(prefix="kit-plan-"))
    try:
        folder = kaggle.render_kernel(notebook, scratch / "k", owner=kaggle.OWNER_PLACEHOLDER,
                                      **{**render, "bundle": False})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    meta = folder.metadata
    shape = meta.get("machine_shape")
    accelerator = next((k for k, v in kaggle.ACCELERATORS.items() if v["machine_shape"] == shape), "cpu")
    code = kernel_deps.notebook_code(nbformat.read(str(notebook), as_version=4))
    return KernelPlan(meta["id"].split("/")[1], meta["title"], accelerator, code)


def notebook_with_cells(notebook: str | os.PathLike, dest: str | os.PathLike, cells: Sequence[tuple[str, str]]) -> Path:
    """A copy of ``notebook`` in the folder ``dest`` (same name) with ``cells`` (tag, source) before its first code cell."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    nb.cells = [c for c in nb.cells if not set(c.get("metadata", {}).get("tags", [])) & {t for t, _ in cells}]
    at = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    nb.cells[at:at] = [nbformat.v4.new_code_cell(src, metadata={"tags": [tag]}) for tag, src in cells]
    out = Path(dest) / Path(notebook).name
    with fsutil.atomic_path(out) as tmp:
        nbformat.write(nb, str(tmp))
    return out


def push_notebook(notebook: str | os.PathLike, *, render: dict[str, Any], push: dict[str, Any],
                  wheels: str | os.PathLike | None = None, folds: tuple[list[int], int, int] | None = None,
                  plan: KernelPlan | None = None) -> tuple[kaggle.PushResult, list[Path]]:
    """``kaggle.push`` of ``notebook`` with the wheels its image lacks (and a fan-out group's folds) in cells.

    ``render`` holds kit.kaggle.kernel_folder.render_kernel's settings, ``push`` the rest of kit.kaggle.client.push's (folder,
    owner, dry_run, record_dir). Returns the push result and the dependency wheels bundled.
    """
    plan = plan or plan_kernel(notebook, render)
    bundled = kernel_deps.dependency_wheels(plan.code, plan.accelerator, wheels, Path(notebook).name)
    cells = [(kernel_deps.DEPS_TAG, kernel_deps.deps_cell_source(bundled))] if bundled else []
    if folds is not None:
        cells.append((FOLDS_TAG, folds_cell_source(*folds)))
    if not cells:
        return kaggle.push(notebook, **render, **push), bundled
    scratch = Path(tempfile.mkdtemp(prefix="kit-notebook-"))
    try:
        copy = notebook_with_cells(notebook, scratch, cells)
        result = kaggle.push(copy, **render, **push)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if folds is not None and push.get("folder"):
        fsutil.write_json(Path(push["folder"]) / FOLDS_FILE, folds_data(*folds))
    return result, bundled


# --- quota -------------------------------------------------------------------------------------


def quota_hours(accelerator: str) -> float | None:
    """Hours of ``accelerator`` time left this week (``kaggle quota``); None where the client has no quota
    command or the accelerator has no quota (the CPU)."""
    resource = _QUOTA_RESOURCE.get(accelerator)
    if resource is None:
        return None
    run = kaggle.run_client(["quota", "-v"])
    text = "\n".join(run.lines())
    if run.returncode == 2 and "invalid choice" in text:
        return None
    if run.returncode != 0:
        raise KitError(kaggle.one_line(f"kaggle quota: {run.failure()}"))
    for row in csv.DictReader(io.StringIO(run.stdout)):
        if (row.get("resource") or "").strip() == resource:
            try:
                return float((row.get("remaining") or "").strip().rstrip("h"))
            except ValueError:
                break
    raise KitError(kaggle.one_line(f"kaggle quota: no {resource} hours in its answer ({run.failure()})"))


def check_quota(hours_left: float | None, need: float, groups: int, per_group: float, resource: str) -> None:
    """KitError (one line) when ``need`` hours do not fit in ``hours_left``."""
    if hours_left is not None and need > hours_left:
        raise KitError(f"--hours-per-group {per_group:g} x {groups} group(s) = {need:.1f} {resource} hours, but "
                       f"kaggle quota has {hours_left:.1f} left this week; fan out fewer folds or wait for the reset")


# --- the fan-out -------------------------------------------------------------------------------


@dataclass
class GroupRun:
    """One fold group's kernel and what became of it."""

    folds: list[int]
    kernel: str
    title: str
    state: str = "waiting"  # waiting, then Kaggle's statuses; "not pushed" or "push failed" when it never ran
    folder: Path | None = None
    url: str | None = None
    message: str | None = None  # Kaggle's failure message, or why it was not pushed
    log_tail: list[str] = field(default_factory=list)
    started: float | None = None
    ended: float | None = None
    polls: int = 0
    seen_active: bool = False

    @property
    def done(self) -> bool:
        """Whether nothing more will happen to it."""
        return self.state in (*kaggle.FINAL_STATUSES, "not pushed", "push failed")


@dataclass
class FanOut:
    """The settings of a fan-out, as ``kit push`` was given them."""

    notebook: Path
    groups: list[list[int]]
    render: dict[str, Any]
    push: dict[str, Any]
    wheels: str | None = None
    concurrent: int = 2
    wait: bool = False
    poll_seconds: float = 60.0
    hours_per_group: float | None = None


def check_settings(fan: FanOut) -> None:
    """One line for a setting that cannot work."""
    if fan.concurrent < 1:
        raise KitError(f"--concurrent {fan.concurrent}: must be at least 1")
    if not fan.poll_seconds > 0:
        raise KitError(f"--poll-seconds {fan.poll_seconds:g}: must be more than 0")
    if fan.hours_per_group is not None and not fan.hours_per_group > 0:
        raise KitError(f"--hours-per-group {fan.hours_per_group:g}: must be more than 0")
    if fan.push.get("dry_run") and not fan.push.get("folder"):
        raise KitError("--fan-out --dry-run needs --folder DIR (one kernel folder per group is rendered under it)")
    if fan.wait and fan.push.get("dry_run"):
        raise KitError("--wait with --dry-run: nothing is sent, so there is nothing to wait for")


def fan_out(fan: FanOut, say: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
            clock: Callable[[], float] = time.monotonic) -> list[GroupRun]:
    """Push one kernel per fold group, at most ``concurrent`` at once; with ``wait``, watch them to the end."""
    check_settings(fan)
    plan = plan_kernel(fan.notebook, fan.render)
    owner = fan.push.get("owner") or kaggle.kaggle_username() or kaggle.OWNER_PLACEHOLDER
    runs = []
    for folds in fan.groups:
        slug, title = group_identity(plan.slug, plan.title, folds)
        runs.append(GroupRun(folds, f"{owner}/{slug}", title))
    if fan.push.get("dry_run"):
        for i, run in enumerate(runs):
            _push_group(fan, plan, run, i, len(runs), clock)
            say(f"dry run: {run.kernel} (folds {_folds(run.folds)}) rendered in {run.folder}; nothing sent")
        return runs
    hours_left = _check_quota_first(fan, plan, say)
    pending = list(runs)
    active: list[GroupRun] = []
    while pending and len(active) < fan.concurrent:
        active.append(_start(fan, plan, pending.pop(0), runs, say, clock))
    active = [r for r in active if not r.done]
    if not fan.wait:
        for run in pending:
            run.state, run.message = "not pushed", f"at most --concurrent {fan.concurrent} at once; --wait pushes it"
            say(f"not pushed: {run.kernel} (folds {_folds(run.folds)}): {run.message}")
        return runs
    interval = fan.poll_seconds
    while active or pending:
        if not active:  # every push of the wave failed: start the next ones
            while pending and len(active) < fan.concurrent:
                run = _start(fan, plan, pending.pop(0), runs, say, clock)
                active += [] if run.done else [run]
            continue
        sleep(interval)
        changed = False
        for run in list(active):
            changed |= _poll(run, say, clock)
            if run.done:
                active.remove(run)
                hours_left = _refit(fan, run, pending, hours_left, plan, say)
                if pending and len(active) < fan.concurrent:
                    nxt = _start(fan, plan, pending.pop(0), runs, say, clock)
                    active += [] if nxt.done else [nxt]
        interval = fan.poll_seconds if changed else min(interval * 1.5, fan.poll_seconds * _MAX_BACKOFF)
    return runs


def _folds(folds: Sequence[int]) -> str:
    return ",".join(map(str, folds))


def _push_group(fan: FanOut, plan: KernelPlan, run: GroupRun, index: int, count: int,
                clock: Callable[[], float]) -> None:
    owner, slug = run.kernel.split("/")
    push = dict(fan.push)
    if push.get("folder"):
        push["folder"] = Path(push["folder"]) / slug
    render = {**fan.render, "slug": slug, "title": run.title}
    result, _ = push_notebook(fan.notebook, render=render, push={**push, "owner": owner}, wheels=fan.wheels,
                              folds=(run.folds, index, count), plan=plan)
    run.folder = result.kernel.folder if push.get("folder") else None
    run.url = result.url
    run.started = clock()


def _start(fan: FanOut, plan: KernelPlan, run: GroupRun, runs: list[GroupRun], say: Callable[[str], None],
           clock: Callable[[], float]) -> GroupRun:
    try:
        _push_group(fan, plan, run, runs.index(run), len(runs), clock)
    except KitError as exc:
        run.state, run.message = "push failed", str(exc)
        say(f"{run.kernel}: push failed: {exc}")
        return run
    run.state = "pushed"
    say(f"{run.kernel}: pushed (folds {_folds(run.folds)}): {run.url}")
    return run


def _poll(run: GroupRun, say: Callable[[str], None], clock: Callable[[], float]) -> bool:
    """Read one kernel's status; True when it changed."""
    try:
        status = kaggle.kernel_status(run.kernel)
    except KitError as exc:  # one unreadable answer does not end the watch
        say(f"{run.kernel}: status not read ({exc}); asking again")
        return False
    run.polls += 1
    state = status.status
    if state in kaggle.FINAL_STATUSES and not run.seen_active and run.polls < 3:
        return False  # right after a push Kaggle may still answer with the previous version's final status
    run.seen_active |= state not in kaggle.FINAL_STATUSES
    if state == run.state:
        return False
    run.state, run.message = state, status.failure_message
    say(kaggle.format_status(status))
    if state in kaggle.FINAL_STATUSES:
        run.ended = clock()
        if state != "complete":
            run.log_tail = log_tail(run.kernel)
            for line in run.log_tail:
                say(f"  | {line}")
    return True


def log_tail(kernel: str, lines: int = LOG_TAIL) -> list[str]:
    """The last ``lines`` lines of a kernel's log (``kaggle kernels logs``), credentials redacted."""
    run = kaggle.run_client(["kernels", "logs", kernel])
    if run.returncode != 0:
        return [f"(log not read: {run.failure()})"]
    text = run.stdout
    try:  # Kaggle keeps the log as a JSON list of {"stream_name", "time", "data"}
        entries = json.loads(text)
        text = "".join(str(e.get("data", "")) for e in entries if isinstance(e, dict))
    except (json.JSONDecodeError, AttributeError, TypeError):
        pass
    return [ln.rstrip() for ln in text.splitlines() if ln.strip()][-lines:]


def _check_quota_first(fan: FanOut, plan: KernelPlan, say: Callable[[str], None]) -> float | None:
    resource = _QUOTA_RESOURCE.get(plan.accelerator)
    if resource is None:
        return None
    hours_left = quota_hours(plan.accelerator)
    if hours_left is None:
        say(f"quota: this kaggle client has no `kaggle quota` command; the {resource} hours left are not checked")
        return None
    if fan.hours_per_group is not None:
        need = fan.hours_per_group * len(fan.groups)
        check_quota(hours_left, need, len(fan.groups), fan.hours_per_group, resource)
        say(f"quota: {hours_left:.1f} {resource} hours left; the plan needs about {need:.1f}")
    else:
        later = "the first group's time will be the estimate" if fan.wait else "give --hours-per-group to check the plan"
        say(f"quota: {hours_left:.1f} {resource} hours left; {later}")
    return hours_left


def _refit(fan: FanOut, run: GroupRun, pending: list[GroupRun], hours_left: float | None, plan: KernelPlan,
           say: Callable[[str], None]) -> float | None:
    """After the first finished group (no --hours-per-group): refuse the rest when its time x their number
    does not fit the quota left."""
    if (hours_left is None or fan.hours_per_group is not None or not pending or run.state != "complete"
            or run.started is None or run.ended is None):
        return hours_left
    took = (run.ended - run.started) / 3600
    left = quota_hours(plan.accelerator)
    need = took * len(pending)
    if left is not None and need > left:
        resource = _QUOTA_RESOURCE[plan.accelerator]
        why = (f"the first group took {took:.2f} h, so {len(pending)} more need about {need:.1f} {resource} hours, "
               f"but kaggle quota has {left:.1f} left")
        say(f"quota: {why}; not pushing the rest")
        for other in pending:
            other.state, other.message = "not pushed", why
        pending.clear()
    return None  # the estimate is made once


def format_table(runs: Sequence[GroupRun]) -> str:
    """Every group's kernel, its folds, its state and how long it ran."""
    rows = [("kernel", "folds", "state", "time")]
    for run in runs:
        took = "" if run.started is None or run.ended is None else _duration(run.ended - run.started)
        rows.append((run.kernel, _folds(run.folds), run.state, took))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def failed(runs: Sequence[GroupRun]) -> list[GroupRun]:
    """The groups that did not complete (failed, cancelled, refused, not pushed)."""
    return [r for r in runs if r.state not in ("complete", "pushed", "waiting") and r.done]


__all__ = ["FOLDS_TAG", "FanOut", "GroupRun", "KernelPlan", "check_quota", "check_settings", "failed", "fan_out",
           "folds_cell_source", "folds_data", "format_table", "group_identity", "group_suffix", "log_tail", "notebook_with_cells",
           "parse_groups", "plan_kernel", "push_notebook", "quota_hours"]
