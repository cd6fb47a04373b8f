"""``kit runs``: every run (and stack) folder under some folders, one row each, from the small files alone.

A run folder is one that holds ``config.toml`` or ``cv.json`` (kit.train's contract). Its row reads
config.toml (model, size, epochs, planned folds), ``fold{k}/done.json`` (finished folds), cv.json (the
metric, per-fold scores, fold mean and spread, the pooled figure) and file times. Nothing here imports
TensorFlow, Keras, JAX or pandas: listing a hundred runs takes a fraction of a second.

A run's state:

- ``finished``: every planned fold has ``done.json``;
- ``running``: not finished, and a file of the run (a fold's last.keras, state.json, history.csv,
  done.json, or config.toml at the start) changed within the last ``RUNNING_WITHIN_S`` seconds;
- ``error``: not finished, not running, and ``error.txt`` (written by kit.train when a fold raised) is there;
- ``resumable``: any other unfinished run (``kit train --resume`` continues it).

Example::

    rows = scan(["runs/"])
    print(format_table(rows))
    top = [r.path for r in rows[:5]]      # what `kit runs runs/ --top 5 --names` prints
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from kit.errors import KitError

# kit.train writes a fold's history.csv every epoch and last.keras/state.json at most a minute apart,
# but an epoch of a large backbone on a big set can take several minutes: a run counts as running when
# a file changed within the last 15 minutes (a run killed less than 15 minutes ago still shows running).
RUNNING_WITHIN_S = 15 * 60
ERROR_FILE = "error.txt"
# files whose change means a fold is making progress
_ACTIVITY = ("last.keras", "state.json", "history.csv", "done.json", "oof.csv")
SORT_KEYS = ("cv", "pooled", "when", "name")
_MAX_DEPTH = 4  # how deep under a given folder runs are looked for (runs/<competition>/<experiment>/...)


@dataclass
class RunRow:
    """One run folder as ``kit runs`` lists it."""

    name: str
    path: str
    kind: str  # "run" (kit train) or "stack" (a second stage, no fold models of its own)
    model: str
    size: int | None
    epochs: int | None
    folds_done: int
    folds_planned: int
    metric: str | None
    cv: float | None  # the mean of the folds' scores (what one fold model is worth)
    cv_std: float | None  # their standard deviation
    pooled: float | None  # the pooled out-of-fold score (cv.json "overall")
    when: float  # last change, seconds since the epoch
    state: str
    error: str | None = None
    folds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``when`` also as an ISO time in UTC)."""
        out = dataclasses.asdict(self)
        out["when_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.when))
        return out


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds a run (config.toml or cv.json)."""
    return (path / "config.toml").is_file() or (path / "cv.json").is_file()


def find_runs(folders: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders at or under ``folders`` (a run's own sub-folders are not searched)."""
    found: list[Path] = []
    for given in folders:
        root = Path(given)
        if not root.is_dir():
            raise KitError(f"{root}: no such folder")
        stack = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            if is_run_folder(folder):
                found.append(folder)
                continue
            if depth >= _MAX_DEPTH:
                continue
            try:
                children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                  reverse=True)
            except PermissionError:
                continue
            stack += [(c, depth + 1) for c in children]
    seen, unique = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a file being rewritten, or damaged: the row shows what the rest says
    return data if isinstance(data, dict) else {}


def _read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}


def _fold_dirs(run: Path) -> dict[int, Path]:
    out = {}
    for p in run.glob("fold*"):
        suffix = p.name[len("fold"):]
        if p.is_dir() and suffix.isdigit():
            out[int(suffix)] = p
    return out


def _float(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def read_run(run: str | os.PathLike, now: float | None = None) -> RunRow:
    """The row of one run folder (see the module docstring for the states)."""
    run = Path(run)
    now = time.time() if now is None else now
    cfg = _read_toml(run / "config.toml")
    cv = _read_json(run / "cv.json")
    fold_dirs = _fold_dirs(run)
    planned = [int(k) for k in cfg.get("folds", [])] or sorted(fold_dirs) or [int(k) for k in cv.get("folds", {})]
    done = [k for k, d in fold_dirs.items() if (d / "done.json").is_file()]
    # not cv.json: `kit report` adds its shake-up there, which is no training activity
    times = [p.stat().st_mtime for p in (run / "config.toml", run / "oof.csv") if p.is_file()]
    for d in fold_dirs.values():
        times += [(d / f).stat().st_mtime for f in _ACTIVITY if (d / f).is_file()]
    if not times and (run / "cv.json").is_file():
        times.append((run / "cv.json").stat().st_mtime)  # a stack: cv.json is all it has
    when = max(times) if times else run.stat().st_mtime
    # kit stack's config.toml lists the image runs it stacks, and has no backbone; a bare cv.json is a stack too
    stack = "model" not in cfg and ("runs" in cfg or (not fold_dirs and bool(cv)))
    kind = "stack" if stack else "run"
    if kind == "stack" and not fold_dirs:
        finished = bool(cv)
        planned = planned or [int(k) for k in cv.get("folds", {})]
        done = [int(k) for k in cv.get("folds", {})]
    else:
        finished = bool(planned) and set(planned) <= set(done)
    error_path = run / ERROR_FILE
    if finished:
        state = "finished"
    elif now - when < RUNNING_WITHIN_S and not error_path.is_file():
        state = "running"
    elif error_path.is_file():
        state = "error"
    else:
        state = "resumable"
    error = None
    if state == "error":
        lines = error_path.read_text(errors="replace").strip().splitlines()
        error = lines[0] if lines else "(empty error.txt)"
    folds = {str(k): float(v) for k, v in (cv.get("folds") or {}).items() if _float(v) is not None}
    cv_mean = _float(cv.get("fold_mean"))
    if cv_mean is None and folds:
        cv_mean = sum(folds.values()) / len(folds)
    return RunRow(
        name=run.name, path=str(run), kind=kind, model=_model_label(cfg, kind),
        size=int(cfg["size"]) if isinstance(cfg.get("size"), int) and cfg["size"] else None,
        epochs=int(cfg["epochs"]) if isinstance(cfg.get("epochs"), int) else None,
        folds_done=len(done), folds_planned=len(planned), metric=cv.get("metric"), cv=cv_mean,
        cv_std=_float(cv.get("fold_std")), pooled=_float(cv.get("overall")), when=when, state=state, error=error,
        folds=folds,
    )


def _model_label(cfg: dict, kind: str) -> str:
    if kind == "stack":
        kinds = cfg.get("models") or []
        return "stack" + (f" ({'+'.join(map(str, kinds))})" if kinds else "")
    return str(cfg.get("model", "?"))


def sort_rows(rows: Sequence[RunRow], by: str = "cv") -> list[RunRow]:
    """Rows best first (by ``cv``, ``pooled``), newest first (``when``) or by name; runs without a score last."""
    if by not in SORT_KEYS:
        raise KitError(f"--sort: expects one of {', '.join(SORT_KEYS)}, got {by!r}")
    if by == "name":
        return sorted(rows, key=lambda r: r.path)
    if by == "when":
        return sorted(rows, key=lambda r: -r.when)
    # every metric kit scores (AUC, accuracy, balanced accuracy) is higher-is-better
    return sorted(rows, key=lambda r: (getattr(r, by) is None, -(getattr(r, by) or 0.0), -r.when))


def scan(folders: Iterable[str | os.PathLike], *, sort: str = "cv", top: int | None = None,
         now: float | None = None) -> list[RunRow]:
    """Every run under ``folders``, sorted (best CV first by default), at most ``top`` of them."""
    if top is not None and top < 1:
        raise KitError(f"--top: expects at least 1, got {top}")
    rows = sort_rows([read_run(p, now) for p in find_runs(folders)], sort)
    return rows[:top] if top else rows


def _num(x: float | None, width: int = 6) -> str:
    return f"{x:.4f}" if x is not None else "-".rjust(width)


def format_table(rows: Sequence[RunRow]) -> str:
    """The table ``kit runs`` prints: one row per run, errors on a line of their own under their run."""
    if not rows:
        return "no runs found (a run folder holds config.toml or cv.json)"
    head = ["run", "model", "size", "epochs", "folds", "metric", "cv", "+-", "pooled", "when", "state"]
    table = [head]
    for r in rows:
        table.append([
            r.path, r.model, str(r.size or "-"), str(r.epochs if r.epochs is not None else "-"),
            f"{r.folds_done}/{r.folds_planned}", r.metric or "-", _num(r.cv), _num(r.cv_std), _num(r.pooled),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.when)), r.state,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    right = {2, 3, 4, 6, 7, 8}
    lines = []
    for row, r in zip(table, [None, *rows]):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if r is not None and r.error:
            lines.append(f"    error: {r.error}")
    lines.append("cv: mean of the folds' scores (+- their standard deviation); pooled: all out-of-fold "
                 "predictions scored together")
    return "\n".join(lines)


def format_json(rows: Sequence[RunRow]) -> str:
    """``kit runs --json``: a JSON list of the rows, in the printed order."""
    return json.dumps([r.to_dict() for r in rows], indent=2)


def format_names(rows: Sequence[RunRow]) -> str:
    """``kit runs --names``: the run folders, one a line (for ``kit blend --oof $(kit runs ... --names)``)."""
    return "\n".join(r.path for r in rows)
