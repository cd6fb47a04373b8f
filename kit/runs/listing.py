"""``kit runs``: every run (and stack) folder under some folders, one row each, from the small files alone.

A run folder is one that holds a config or a CV summary (see kit.runs.folder.RunFolder). Its row reads the
config (model, records, competition, size, epochs, planned folds), each fold's done marker (finished
folds), the CV summary (the metric, per-fold scores, fold mean and spread, the pooled figure) and file times.
Nothing here imports TensorFlow, Keras, JAX or pandas: listing a hundred runs takes a fraction of a second.

A run's state:

- ``finished``: every planned fold is done;
- ``running``: not finished, and a file of the run (a fold's latest model, state, history or done marker,
  or the config at the start) changed within the last ``RUNNING_WITHIN_S`` seconds;
- ``stopped (resume)``: not finished, and ``kit train --time-limit`` stopped it before its limit with its state
  saved (``kit train --resume`` continues it);
- ``error``: not finished, not running, and the run's error note (written by kit.training.train when a fold raised) is there;
- ``resumable``: any other unfinished run (``kit train --resume`` continues it);
- ``bad <file>``: the CV summary or the config is not what kit writes (not JSON or TOML, or a field of
  another type, e.g. ``"folds"`` a list); the row shows what the rest says, and ``problem`` says what is wrong.

``merge_runs`` (``kit runs merge``) joins runs that trained different folds of the same records with the
same settings into one run folder.

Scores are comparable only between runs trained on the same records and scored by the same metric:
``scan`` with ``top`` or ``names`` refuses rows of more than one (records, metric) group, and ``records``,
``metric`` and ``competition`` keep one.

Example::

    rows = scan(["runs/"], metric="auc")
    print(format_table(rows))
    top = [r.path for r in rows[:5]]      # what `kit runs runs/ --metric auc --top 5 --names` prints
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
from typing import Any, Callable, Iterable, Mapping, Sequence

from kit.runs import folder as runfolder
from kit.core.errors import KitError
from kit.runs.folder import RunFolder

# kit.training.train writes a fold's history every epoch and its latest model and state at most a minute apart,
# but an epoch of a large backbone on a big set can take several minutes: a run counts as running when
# a file changed within the last 15 minutes (a run killed less than 15 minutes ago still shows running).
RUNNING_WITHIN_S = 15 * 60
STOPPED = "stopped (resume)"
SORT_KEYS = ("cv", "pooled", "when", "name")
_MAX_DEPTH = 4  # how deep under a given folder runs are looked for (runs/<competition>/<experiment>/...)


@dataclass
class RunRow:
    """One run folder as ``kit runs`` lists it."""

    name: str
    path: str
    kind: str  # "run" (kit train) or "stack" (a second stage, no fold models of its own)
    model: str
    records: str | None  # the records folder it trained on (the config's records), as written there
    competition: str | None  # the config's competition, where it names one
    size: int | None
    epochs: int | None
    folds_done: int
    folds_planned: int
    metric: str | None
    cv: float | None  # the mean of the folds' scores (what one fold model is worth)
    cv_std: float | None  # their standard deviation
    pooled: float | None  # the pooled out-of-fold score (the CV summary's "overall")
    when: float  # last change, seconds since the epoch
    state: str
    error: str | None = None
    folds: dict[str, float] = field(default_factory=dict)
    problem: str | None = None  # what is wrong with its CV summary or config (state "bad ...")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (``when`` also as an ISO time in UTC)."""
        out = dataclasses.asdict(self)
        out["when_iso"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.when))
        return out


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds a run (a config or a CV summary)."""
    return RunFolder(path).is_run()


def find_runs(folders: Iterable[str | os.PathLike], warn: Callable[[str], None] | None = None) -> list[Path]:
    """Run folders at or under ``folders`` (a run's own sub-folders are not searched); a folder that cannot be
    read is skipped, with one line to ``warn``."""
    found: list[Path] = []
    for given in folders:
        root = Path(given)
        if not root.is_dir():
            raise KitError(f"{root}: no such folder")
        stack = [(root, 0)]
        while stack:
            folder, depth = stack.pop()
            try:
                if is_run_folder(folder):
                    found.append(folder)
                    continue
                if depth >= _MAX_DEPTH:
                    continue
                children = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                                  reverse=True)
            except OSError as exc:
                _skipped(folder, exc, warn)
                continue
            stack += [(c, depth + 1) for c in children]
    seen, unique = set(), []
    for p in found:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _skipped(folder: Path, exc: OSError, warn: Callable[[str], None] | None) -> None:
    if warn is not None:
        warn(f"{folder}: cannot be read ({exc.strerror or exc}); skipped")


def _read_json(path: Path) -> tuple[dict, str | None]:
    """The object in ``path`` ({} when there is no file) and what is wrong with it, if anything."""
    if not path.is_file():
        return {}, None
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}, f"{path.name}: not valid JSON"
    if not isinstance(data, dict):
        return {}, f"{path.name}: {_kind(data)}, expected an object"
    return data, None


def _read_toml(path: Path) -> tuple[dict, str | None]:
    if not path.is_file():
        return {}, None
    try:
        return tomllib.loads(path.read_text()), None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return {}, f"{path.name}: not valid TOML"


def _kind(value: Any) -> str:
    """How a JSON or TOML value reads in one line: 'a list', 'an object', 'the text "0,1"'."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"the text {json.dumps(value[:40])}"
    if isinstance(value, (int, float)):
        return f"the number {value}"
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number_or_null(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _is_text(x: Any) -> bool:
    return isinstance(x, str)


# Fields a row reads, with the kind kit writes them as: a field of another kind is dropped and named.
_CONFIG_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "folds": (lambda x: isinstance(x, list) and all(map(_is_int, x)), "a list of fold numbers"),
    "size": (_is_int, "an integer"), "epochs": (_is_int, "an integer"), "model": (_is_text, "a name"),
    "records": (_is_text, "a folder"), "metric": (_is_text, "a metric name"), "competition": (_is_text, "a name"),
    "models": (lambda x: isinstance(x, list), "a list"),
}
_CV_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "metric": (_is_text, "a metric name"),
    "folds": (lambda x: isinstance(x, dict) and all(str(k).isdigit() and _is_number_or_null(v) for k, v in x.items()),
              "an object of fold: score"),
    "fold_mean": (_is_number_or_null, "a number"), "fold_std": (_is_number_or_null, "a number"),
    "overall": (_is_number_or_null, "a number"),
}


def cv_problem(cv: dict) -> str | None:
    """What is wrong with a CV summary object (``<file>: "folds" is a list, ...``); None where kit wrote it so."""
    return _checked(cv, _CV_FIELDS, runfolder.CV)[1]


def _checked(data: dict, fields: Mapping[str, tuple[Callable[[Any], bool], str]], name: str
             ) -> tuple[dict, str | None]:
    """``data`` less the fields not of their kind, and a line naming the first of them."""
    clean, problem = dict(data), None
    for key, (ok, expected) in fields.items():
        if key in clean and not ok(clean[key]):
            problem = problem or f'{name}: "{key}" is {_kind(clean[key])}, expected {expected}'
            del clean[key]
    return clean, problem


def _float(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def read_run(run: str | os.PathLike, now: float | None = None) -> RunRow:
    """The row of one run folder (see the module docstring for the states)."""
    run = Path(run)
    folder = RunFolder(run)
    now = time.time() if now is None else now
    cfg, cfg_problem = _read_toml(folder.config_path)
    cv, cv_problem = _read_json(folder.cv_path)
    cfg, cfg_field = _checked(cfg, _CONFIG_FIELDS, runfolder.CONFIG)
    cv, cv_field = _checked(cv, _CV_FIELDS, runfolder.CV)
    problem = cv_problem or cv_field or cfg_problem or cfg_field
    fold_dirs = folder.fold_dirs()
    planned = list(cfg.get("folds", [])) or sorted(fold_dirs) or [int(k) for k in cv.get("folds", {})]
    done = folder.finished_folds()
    # training activity only: not the CV summary, nor what `kit report` writes (report.html, report.json)
    times = folder.activity_times()
    if not times and folder.cv_path.is_file():
        times.append(folder.cv_path.stat().st_mtime)  # a stack: the CV summary is all it has
    when = max(times) if times else run.stat().st_mtime
    # kit stack's config lists the image runs it stacks, and has no backbone; a bare CV summary is a stack too
    stack = "model" not in cfg and ("runs" in cfg or (not fold_dirs and bool(cv)))
    kind = "stack" if stack else "run"
    if kind == "stack" and not fold_dirs:
        finished = bool(cv)
        planned = planned or [int(k) for k in cv.get("folds", {})]
        done = [int(k) for k in cv.get("folds", {})]
    else:
        finished = bool(planned) and set(planned) <= set(done)
    error_path = folder.error_path
    if problem:
        state = "bad " + problem.split(":", 1)[0]
    elif finished:
        state = "finished"
    elif folder.stopped_path.is_file():
        state = STOPPED
    elif now - when < RUNNING_WITHIN_S and not error_path.is_file():
        state = "running"
    elif error_path.is_file():
        state = "error"
    else:
        state = "resumable"
    error = None
    if state == "error":
        error = folder.error_line()
    folds = {str(k): float(v) for k, v in (cv.get("folds") or {}).items() if _float(v) is not None}
    cv_mean = _float(cv.get("fold_mean"))
    if cv_mean is None and folds:
        cv_mean = sum(folds.values()) / len(folds)
    return RunRow(
        name=run.name, path=str(run), kind=kind, model=_model_label(cfg, kind), records=_text(cfg.get("records")),
        competition=_text(cfg.get("competition")), size=cfg.get("size") or None, epochs=cfg.get("epochs"),
        folds_done=len(done), folds_planned=len(planned), metric=_text(cv.get("metric")) or _text(cfg.get("metric")),
        cv=cv_mean, cv_std=_float(cv.get("fold_std")), pooled=_float(cv.get("overall")), when=when, state=state,
        error=error, folds=folds, problem=problem,
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


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _group_label(records: str | None, metric: str | None) -> str:
    return f"{records or '(records unknown)'} {metric or '(metric unknown)'}"


def check_one_group(rows: Sequence[RunRow], flag: str) -> None:
    """Refuse rows trained on more than one records folder or scored by more than one metric: ranking them
    together (``--top``, ``--names``) would compare scores that are not comparable."""
    records: dict[str, str] = {}
    for r in rows:
        if r.records:
            records.setdefault(os.path.realpath(r.records), r.records)
    metrics = {r.metric for r in rows if r.metric}
    if len(records) < 2 and len(metrics) < 2:
        return
    groups = list(dict.fromkeys(
        _group_label(records.get(os.path.realpath(r.records)) if r.records else None, r.metric) for r in rows))
    pick = " and ".join(f for f, n in (("--records DIR", len(records)), ("--metric NAME", len(metrics))) if n > 1)
    raise KitError(f"{flag}: the runs belong to {len(groups)} (records, metric) groups whose scores do not compare: "
                   f"{'; '.join(groups)}; pick one with {pick}")


def select(rows: Iterable[RunRow], *, records: str | None = None, metric: str | None = None,
           competition: str | None = None) -> list[RunRow]:
    """The rows trained on ``records`` (compared as resolved paths), scored by ``metric``, of ``competition``."""
    return [r for r in rows
            if (records is None or (r.records is not None and _same_folder(r.records, records)))
            and (metric is None or r.metric == metric) and (competition is None or r.competition == competition)]


def scan(folders: Iterable[str | os.PathLike], *, sort: str = "cv", top: int | None = None,
         now: float | None = None, records: str | None = None, metric: str | None = None,
         competition: str | None = None, names: bool = False, warn: Callable[[str], None] | None = None
         ) -> list[RunRow]:
    """Every run under ``folders`` (of ``records``, ``metric``, ``competition`` when given), sorted (best CV first
    by default), at most ``top`` of them. With ``top`` or ``names`` the rows must form one (records, metric)
    group. Each run whose files are damaged, and each folder that cannot be read, is one line to ``warn``."""
    if top is not None and top < 1:
        raise KitError(f"--top: expects at least 1, got {top}")
    rows = []
    for path in find_runs(folders, warn):
        try:
            row = read_run(path, now)
        except OSError as exc:
            _skipped(path, exc, warn)
            continue
        if row.problem and warn is not None:
            warn(f"{path}: {row.problem}; listed as {row.state}")
        rows.append(row)
    rows = sort_rows(select(rows, records=records, metric=metric, competition=competition), sort)
    if top is not None or names:
        check_one_group(rows, "--top" if top is not None else "--names")
    return rows[:top] if top else rows


def _num(x: float | None, width: int = 6) -> str:
    return f"{x:.4f}" if x is not None else "-".rjust(width)


def format_table(rows: Sequence[RunRow]) -> str:
    """The table ``kit runs`` prints: one row per run, errors and problems on a line of their own under their run.

    The competition column shows only when a run names one."""
    if not rows:
        return f"no runs found (a run folder holds {runfolder.CONFIG} or {runfolder.CV})"
    with_competition = any(r.competition for r in rows)
    head = ["run", "model", "records", *(["competition"] if with_competition else []), "size", "epochs", "folds",
            "metric", "cv", "+-", "pooled", "when", "state"]
    table = [head]
    for r in rows:
        table.append([
            r.path, r.model, r.records or "-", *([r.competition or "-"] if with_competition else []),
            str(r.size or "-"), str(r.epochs if r.epochs is not None else "-"),
            f"{r.folds_done}/{r.folds_planned}", r.metric or "-", _num(r.cv), _num(r.cv_std), _num(r.pooled),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r.when)), r.state,
        ])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    right = {head.index(c) for c in ("size", "epochs", "folds", "cv", "+-", "pooled")}
    lines = []
    for row, r in zip(table, [None, *rows]):
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if r is not None and r.error:
            lines.append(f"    error: {r.error}")
        if r is not None and r.problem:
            lines.append(f"    problem: {r.problem}")
    lines.append("cv: mean of the folds' scores (+- their standard deviation); pooled: all out-of-fold "
                 "predictions scored together")
    return "\n".join(lines)


def format_json(rows: Sequence[RunRow]) -> str:
    """``kit runs --json``: a JSON list of the rows, in the printed order."""
    return json.dumps([r.to_dict() for r in rows], indent=2)


def format_names(rows: Sequence[RunRow]) -> str:
    """``kit runs --names``: the run folders, one a line (for ``kit blend --oof $(kit runs ... --names)``)."""
    return "\n".join(r.path for r in rows)


# --- kit runs merge ------------------------------------------------------------------------------------

# Settings in which runs to merge may differ: which folds they trained, where the run and its records lie
# (the records' identity is compared instead), how much was printed.
MERGE_FREE = ("folds", "out", "records", "verbose")


def merge_runs(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> Path:
    """One run folder at ``out`` from runs that trained different folds of the same records with the same settings.

    Every fold's files are copied, the out-of-fold predictions of all folds are joined in fold order (as one
    ``kit train`` over those folds writes them), the CV summary is computed as kit.training.train computes it, and the
    config lists the union of the folds. Written to a temporary folder, renamed onto ``out`` at the end.
    """
    out = Path(out)
    runs = [RunFolder(s) for s in sources]
    if len(runs) < 2:
        raise KitError("runs merge: give at least two run folders to merge")
    if out.exists():
        raise KitError(f"{out}: already exists; choose a new --out (kit never overwrites a run)")
    configs = [_train_config(r) for r in runs]
    identities = [r.read_records_identity() for r in runs]
    for run, cfg, identity in zip(runs[1:], configs[1:], identities[1:]):
        _check_same_records(runs[0], configs[0], identities[0], run, cfg, identity)
        _check_same_settings(runs[0], configs[0], run, cfg)
    owner = _fold_owners(runs, configs)
    return _write_merged(out, owner, configs[0], identities[0], runs)


def _train_config(run: RunFolder) -> dict[str, Any]:
    """The config of a `kit train` run; KitError when ``run`` holds none (not a run, or a stack)."""
    if not run.path.is_dir():
        raise KitError(f"{run.path}: no such run folder")
    cfg = run.read_config()
    if not cfg:
        raise KitError(f"{run.config_path}: missing; not a run folder of `kit train`")
    if "model" not in cfg:
        raise KitError(f"{run.path}: a stack (no model in {run.config_path.name}); only `kit train` runs merge")
    folds = cfg.get("folds")
    if not (isinstance(folds, list) and folds and all(map(_is_int, folds))):
        raise KitError(f'{run.config_path}: "folds" is {_kind(folds)}, expected a list of fold numbers')
    return cfg


def _shown(cfg: Mapping[str, Any], name: str) -> str:
    return repr(cfg[name]) if name in cfg else "not set"


# written into records.json by earlier kit versions, and not part of what the records hold
IDENTITY_IGNORED = ("created",)


def _check_same_records(first: RunFolder, first_cfg: dict, first_id: dict | None,
                        run: RunFolder, cfg: dict, identity: dict | None) -> None:
    """KitError when ``run`` trained on other records than ``first`` (by their identity; by folder for older runs)."""
    if first_id is not None and identity is not None:
        for name in dict.fromkeys([*first_id, *identity]):
            if name in IDENTITY_IGNORED:
                continue
            if first_id.get(name) != identity.get(name):
                raise KitError(f"{run.path}: trained on different records from {first.path} ({name}: "
                               f"{_shown(identity, name)} here, {_shown(first_id, name)} there)")
        return
    mine, theirs = str(cfg.get("records", "")), str(first_cfg.get("records", ""))
    if not _same_folder(mine, theirs):
        raise KitError(f"{run.path}: trained on different records from {first.path} ({mine} here, {theirs} there)")


def _check_same_settings(first: RunFolder, first_cfg: dict, run: RunFolder, cfg: dict) -> None:
    """KitError naming the first setting (other than MERGE_FREE) in which ``run`` differs from ``first``."""
    for name in dict.fromkeys([*first_cfg, *cfg]):
        if name not in MERGE_FREE and first_cfg.get(name) != cfg.get(name):
            raise KitError(f"{run.path}: different settings from {first.path}: {name} is {_shown(cfg, name)} here, "
                           f"{_shown(first_cfg, name)} there; runs to merge differ in their folds only")


def _fold_owners(runs: Sequence[RunFolder], configs: Sequence[dict]) -> dict[int, RunFolder]:
    """fold -> the run that trained it; KitError for a fold in two runs, a fold not finished, or a damaged one."""
    owner: dict[int, RunFolder] = {}
    for run, cfg in zip(runs, configs):
        for fold in cfg["folds"]:
            if fold in owner:
                raise KitError(f"fold {fold}: trained in both {owner[fold].path} and {run.path}; merge each fold "
                               "from one run only")
            _check_fold(run, fold)
            owner[fold] = run
    return dict(sorted(owner.items()))


def _check_fold(run: RunFolder, fold: int) -> None:
    """KitError when fold ``fold`` of ``run`` is not finished, or a file it needs is missing or damaged."""
    if not run.is_done(fold):
        raise KitError(f"{run.path}: fold {fold} has not finished (no {run.done_path(fold).relative_to(run.path)}); "
                       f"finish it with `kit train --resume --out {run.path}` before merging")
    run.fold_score(fold)  # a done marker that is not JSON, or whose score is not a number, names its file
    for path in (run.fold_oof_path(fold), run.best_model(fold)):
        if not path.is_file():
            raise KitError(f"{path}: missing, but fold {fold} of {run.path} is marked finished")


def _write_merged(out: Path, owner: Mapping[int, RunFolder], cfg: dict, identity: dict | None,
                  runs: Sequence[RunFolder]) -> Path:
    import shutil

    import pandas as pd

    from kit.core import fsutil

    folds = list(owner)
    oof = pd.concat([owner[k].read_fold_oof(k) for k in folds], ignore_index=True)
    first_cv = runs[0].read_cv() or {}
    cv = runfolder.cv_summary(
        cfg["metric"], oof, cfg.get("classes") or (), {k: owner[k].fold_score(k) for k in folds},
        {k: owner[k].fold_secondary(k) for k in folds}, cfg.get("secondary_metrics") or (),
        first_cv.get("tta_views") or ())  # the views follow from the settings, which every run shares
    with fsutil.atomic_dir(out) as tmp:
        merged = RunFolder(tmp)
        for fold, run in owner.items():
            shutil.copytree(run.fold_dir(fold), merged.fold_dir(fold))
            merged.remove_fold_files(fold, runfolder.FOLD_TEMPORARY_FILES)
        merged.write_config({**cfg, "out": str(out), "folds": folds})
        if identity is not None:
            fsutil.write_json(merged.records_path, identity)
        merged.write_oof(oof)
        merged.write_cv(cv)
    return out


def format_merged(out: Path) -> str:
    """What ``kit runs merge`` prints: the merged run's row."""
    return format_table([read_run(out)])
