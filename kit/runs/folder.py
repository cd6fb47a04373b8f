"""The run folder: every file a run (``kit train``) or a stack (``kit stack``) keeps, named and read here only.

::

    RUN/config.toml          the resolved settings (kit.training.config.Config parses the dict read here)
    RUN/records.json         the identity of the records the run trained on (``records_identity``)
    RUN/fold{k}/best.keras   the epoch with the best validation metric
    RUN/fold{k}/last.keras   a recent epoch, with state.json, while the fold runs (``--resume`` restarts there)
    RUN/fold{k}/state.json   {"epoch", "best", "best_epoch", "best_loss"} of last.keras
    RUN/fold{k}/history.csv  epoch, loss, metric, lr, val_loss, val_metric
    RUN/fold{k}/oof.csv      this fold's out-of-fold predictions
    RUN/fold{k}/done.json    written last, when the fold finished: {"fold", "metric", "score", ...}
    RUN/oof.csv              image_name,target,<pred_columns(classes)>,fold: every finished fold, in fold order
    RUN/cv.json              ``cv_summary``'s object
    RUN/plots/*.png          learning curves, ROC or confusion, learning rate
    RUN/error.txt            after a fold raised: "fold k: ErrorType: message"
    RUN/report.json          what ``kit report`` measured (``kit report`` never edits cv.json)

A file that is missing reads as absent (an older run, a run still training); a file that is there but
not what kit writes raises one KitError line naming it. Every write is atomic (kit.core.fsutil). Nothing here
imports TensorFlow, Keras or (until a table is read or written) pandas.
"""

from __future__ import annotations

import json
import math
import os
import tomllib
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from kit.core import fsutil
from kit.core.layout import RUN_CONFIG
from kit.core.task import task_for, task_of_columns
from kit.core.errors import KitError

if TYPE_CHECKING:
    import pandas as pd

    from kit.data.records import Manifest

CONFIG = RUN_CONFIG  # the file that marks a run folder (kit.core.layout: the data stage recognises it too)
RECORDS = "records.json"
CV = "cv.json"
OOF = "oof.csv"
ERROR = "error.txt"
STOPPED = "stopped.json"  # kit train --time-limit stopped the run in time (removed when it restarts)
PLOTS = "plots"
REPORT_JSON = "report.json"
FEATURES = "features.csv"  # kit stack's feature table
SUBMISSION = "submission.csv"  # kit stack's submission, and its sidecar below
SUBMISSION_SIDECAR = "submission.json"
MODELS = "models"  # kit stack: one run folder per model kind
BEST = "best.keras"
LAST = "last.keras"
STATE = "state.json"
HISTORY = "history.csv"
DONE = "done.json"
# a fold's files whose change means it is making progress (kit runs' "running")
ACTIVITY = (LAST, STATE, HISTORY, DONE, OOF)
# a fold's files that a fresh start of the fold removes
FOLD_TRAINING_FILES = (BEST, LAST, STATE, HISTORY)
# a fold's files that only a fold still training holds
FOLD_TEMPORARY_FILES = (LAST, STATE)


def pred_columns(classes: Sequence[str]) -> list[str]:
    """The prediction columns of oof.csv for ``classes``: ``pred`` (binary) or ``pred_<class>`` each."""
    return task_for(len(classes) or 2).pred_columns(classes)


def oof_table(names: Any, target: Any, pred: Any, fold: Any, classes: Sequence[str]) -> "pd.DataFrame":
    """The rows of oof.csv: image_name, target, the prediction columns (``pred`` takes [N] or [N, K]), fold."""
    import numpy as np
    import pandas as pd

    df = pd.DataFrame({"image_name": np.asarray(names), "target": np.asarray(target)})
    cols = pred_columns(classes)
    pred = np.asarray(pred)
    if cols == ["pred"]:
        df["pred"] = pred.reshape(len(df), -1)[:, 0] if pred.ndim > 1 else pred
    else:
        for i, c in enumerate(cols):
            df[c] = pred[:, i]
    df["fold"] = fold
    return df


def classes_of_columns(columns: Sequence[str]) -> list[str] | None:
    """The classes an oof.csv header names (``["0", "1"]`` for ``pred``); None when it has no prediction column."""
    if not any(c == "pred" or c.startswith("pred_") for c in columns):
        return None
    return task_of_columns(columns)[1]


def records_identity(manifest: "Manifest") -> dict[str, Any]:
    """What tells one records folder's content from another's, wherever it lies and whenever it was written: its
    download, size, classes and folds. Fold-group kernels each write records from the same download with the same
    settings, at different times; their runs merge (kit's folds are a function of the download and the seed)."""
    return {"competition": manifest.competition, "source": manifest.source, "count": manifest.count,
            "n_folds": manifest.n_folds, "fold_seed": manifest.fold_seed,
            "classes": list(manifest.classes), "image_size": manifest.image_size,
            "folds": {str(k): manifest.folds[k].images for k in sorted(manifest.folds)}}


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    import numpy as np

    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def _std(values: Sequence[float]) -> float:
    """The sample standard deviation (ddof 1) as numpy computes it; 0 for one value."""
    import numpy as np

    return float(np.asarray(values, float).std(ddof=1)) if len(values) > 1 else 0.0


def cv_summary(metric: str, oof: "pd.DataFrame", classes: Sequence[str], fold_scores: Mapping[int, float],
               fold_secondary: Mapping[int, Mapping[str, float | None]], secondary_metrics: Sequence[str],
               tta_views: Sequence[str | int]) -> dict[str, Any]:
    """cv.json of a run: each fold's score, the pooled score of ``oof`` (all folds' rows), their mean and spread."""
    import numpy as np

    from kit.core import metrics

    folds = sorted(fold_scores)
    pred = task_for(len(classes) or 2).pred_matrix(oof, classes)
    overall = float(metrics.score(metric, oof["target"].to_numpy(), pred))
    scores = np.asarray([fold_scores[k] for k in folds], float)
    return {
        "metric": metric, "folds": {str(k): fold_scores[k] for k in folds}, "overall": overall,
        # each fold model scores its own fold: the mean is what a fold model is worth; pooled, folds whose
        # probabilities are scaled differently mix, and an AUC can drop below every fold's own
        "fold_mean": float(scores.mean()), "fold_std": _std(list(scores)),
        "tta_views": list(tta_views),
        # the competition's other figures, each the mean over folds (a per-patient one cannot be pooled)
        "secondary": {name: _mean_or_none(fold_secondary.get(k, {}).get(name) for k in folds)
                      for name in secondary_metrics},
    }


def _read_text(path: Path) -> str | None:
    if not path.is_file():
        return None
    try:
        return path.read_text()
    except UnicodeDecodeError:
        raise KitError(f"{path}: not text (damaged?)") from None


def _read_json_object(path: Path) -> dict | None:
    """The JSON object in ``path`` (None when there is no file); KitError naming the file when it is not one."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise KitError(f"{path}: not valid JSON") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: not a JSON object")
    return data


class RunFolder:
    """One run folder: the path of each of its files, and reading and writing them.

    Example:
        >>> run = RunFolder("runs/b0")
        >>> run.finished_folds(), run.read_cv()["overall"], run.best_model(0)
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # --- paths ---------------------------------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        """RUN/config.toml."""
        return self.path / CONFIG

    @property
    def records_path(self) -> Path:
        """RUN/records.json."""
        return self.path / RECORDS

    @property
    def cv_path(self) -> Path:
        """RUN/cv.json."""
        return self.path / CV

    @property
    def oof_path(self) -> Path:
        """RUN/oof.csv."""
        return self.path / OOF

    @property
    def error_path(self) -> Path:
        """RUN/error.txt."""
        return self.path / ERROR

    @property
    def plots(self) -> Path:
        """RUN/plots/."""
        return self.path / PLOTS

    @property
    def report_json(self) -> Path:
        """RUN/report.json (kit report's own numbers)."""
        return self.path / REPORT_JSON

    def file(self, name: str) -> Path:
        """RUN/``name`` for a file named by one of this module's constants (FEATURES, SUBMISSION, ...)."""
        return self.path / name

    def member(self, kind: str) -> "RunFolder":
        """A stack's run folder of one model kind (RUN/models/<kind>)."""
        return RunFolder(self.path / MODELS / kind)

    def fold_dir(self, fold: int) -> Path:
        """RUN/fold{k}/."""
        return self.path / f"fold{fold}"

    def best_model(self, fold: int) -> Path:
        """RUN/fold{k}/best.keras."""
        return self.fold_dir(fold) / BEST

    def last_model(self, fold: int) -> Path:
        """RUN/fold{k}/last.keras."""
        return self.fold_dir(fold) / LAST

    def state_path(self, fold: int) -> Path:
        """RUN/fold{k}/state.json."""
        return self.fold_dir(fold) / STATE

    def history_path(self, fold: int) -> Path:
        """RUN/fold{k}/history.csv."""
        return self.fold_dir(fold) / HISTORY

    def done_path(self, fold: int) -> Path:
        """RUN/fold{k}/done.json."""
        return self.fold_dir(fold) / DONE

    def fold_oof_path(self, fold: int) -> Path:
        """RUN/fold{k}/oof.csv."""
        return self.fold_dir(fold) / OOF

    # --- what is there -------------------------------------------------------------------------------

    def check_trained(self) -> "RunFolder":
        """This folder, after checking it holds a run of ``kit train`` (it exists and has a config); else KitError."""
        if not self.path.is_dir():
            raise KitError(f"{self.path}: no such run folder")
        if not self.config_path.is_file():
            raise KitError(f"{self.config_path}: missing; is {self.path} a folder written by `kit train`?")
        return self

    def is_run(self) -> bool:
        """Whether the folder holds a run or a stack (config.toml or cv.json)."""
        return self.config_path.is_file() or self.cv_path.is_file()

    def fold_dirs(self) -> dict[int, Path]:
        """fold number -> RUN/fold{k}/ for every fold folder there, in fold order."""
        out = {}
        for p in self.path.glob("fold*"):
            suffix = p.name[len("fold"):]
            if suffix.isdigit() and p.is_dir():
                out[int(suffix)] = p
        return dict(sorted(out.items()))

    def is_done(self, fold: int) -> bool:
        """Whether fold ``fold`` finished (its done.json is there)."""
        return self.done_path(fold).is_file()

    def finished_folds(self) -> list[int]:
        """The folds with a done.json, in order."""
        return [k for k in self.fold_dirs() if self.is_done(k)]

    def activity_times(self) -> list[float]:
        """Modification times of the files training changes (not cv.json, nor kit report's files)."""
        times = [p.stat().st_mtime for p in (self.config_path, self.oof_path) if p.is_file()]
        for d in self.fold_dirs().values():
            times += [(d / f).stat().st_mtime for f in ACTIVITY if (d / f).is_file()]
        return times

    # --- config and records --------------------------------------------------------------------------

    def config_text(self) -> str | None:
        """config.toml as written (None when there is none)."""
        return _read_text(self.config_path)

    def read_config(self) -> dict[str, Any]:
        """config.toml as a dict ({} when there is none); KitError naming the file when it is not TOML."""
        text = self.config_text()
        if text is None:
            return {}
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise KitError(f"{self.config_path}: not valid TOML ({exc})") from None

    def write_config(self, settings: Mapping[str, Any]) -> Path:
        """config.toml from a dict of TOML values."""
        import tomli_w

        self.path.mkdir(parents=True, exist_ok=True)
        return fsutil.write_text(self.config_path, tomli_w.dumps(dict(settings)))

    def read_records_identity(self) -> dict[str, Any] | None:
        """records.json (None for a run written before kit kept it)."""
        return _read_json_object(self.records_path)

    def write_records_identity(self, manifest: "Manifest") -> Path:
        """records.json: the identity of the records the run trains on."""
        self.path.mkdir(parents=True, exist_ok=True)
        return fsutil.write_json(self.records_path, records_identity(manifest))

    # --- scores --------------------------------------------------------------------------------------

    def read_cv(self) -> dict[str, Any] | None:
        """cv.json (None when there is none); KitError naming the file when it is not a JSON object."""
        return _read_json_object(self.cv_path)

    def write_cv(self, cv: Mapping[str, Any]) -> Path:
        """cv.json."""
        return fsutil.write_json(self.cv_path, dict(cv))

    def read_done(self, fold: int) -> dict[str, Any] | None:
        """fold{k}/done.json (None while the fold has not finished)."""
        return _read_json_object(self.done_path(fold))

    def write_done(self, fold: int, done: Mapping[str, Any]) -> Path:
        """fold{k}/done.json, the fold's last file."""
        self.fold_dir(fold).mkdir(parents=True, exist_ok=True)
        return fsutil.write_json(self.done_path(fold), dict(done))

    def fold_score(self, fold: int) -> float:
        """The score done.json records for ``fold`` (NaN where it is null: a fold that could not be scored)."""
        done = self.read_done(fold) or {}
        score = done.get("score")
        if score is not None and not isinstance(score, (int, float)) or isinstance(score, bool):
            raise KitError(f"{self.done_path(fold)}: \"score\" is not a number")
        return math.nan if score is None else float(score)

    def fold_secondary(self, fold: int) -> dict[str, float | None]:
        """The secondary scores done.json records for ``fold`` ({} when none)."""
        return (self.read_done(fold) or {}).get("secondary") or {}

    # --- fold state ----------------------------------------------------------------------------------

    def read_state(self, fold: int) -> dict[str, Any] | None:
        """fold{k}/state.json (None when the fold has none)."""
        return _read_json_object(self.state_path(fold))

    def write_state(self, fold: int, state: Mapping[str, Any]) -> Path:
        """fold{k}/state.json."""
        return fsutil.write_json(self.state_path(fold), dict(state))

    def remove_fold_files(self, fold: int, names: Sequence[str]) -> None:
        """Remove the files ``names`` (FOLD_TRAINING_FILES, FOLD_TEMPORARY_FILES) of fold ``fold``, where there."""
        for name in names:
            (self.fold_dir(fold) / name).unlink(missing_ok=True)

    def histories(self, folds: Iterable[int]) -> "dict[int, pd.DataFrame]":
        """fold -> its history.csv, for the folds of ``folds`` that have one."""
        import pandas as pd

        return {k: pd.read_csv(self.history_path(k)) for k in folds if self.history_path(k).is_file()}

    # --- predictions ---------------------------------------------------------------------------------

    def oof_header(self) -> list[str]:
        """The columns of oof.csv ([] when there is none)."""
        if not self.oof_path.is_file():
            return []
        with open(self.oof_path, encoding="utf-8", errors="replace") as fh:
            return [c.strip() for c in fh.readline().strip().split(",")]

    def read_oof(self) -> "pd.DataFrame":
        """oof.csv with exact ids and floats as written."""
        return _read_oof(self.oof_path)

    def write_oof(self, oof: "pd.DataFrame") -> Path:
        """oof.csv."""
        return fsutil.write_csv(self.oof_path, oof)

    def read_fold_oof(self, fold: int) -> "pd.DataFrame":
        """fold{k}/oof.csv with exact ids and floats as written."""
        return _read_oof(self.fold_oof_path(fold))

    def write_fold_oof(self, fold: int, oof: "pd.DataFrame") -> Path:
        """fold{k}/oof.csv."""
        return fsutil.write_csv(self.fold_oof_path(fold), oof)

    # --- errors --------------------------------------------------------------------------------------

    def write_error(self, fold: int, exc: BaseException) -> Path:
        """error.txt: the fold that raised and what."""
        return fsutil.write_text(self.error_path, f"fold {fold}: {type(exc).__name__}: {exc}\n")

    def clear_error(self) -> None:
        """Remove error.txt (a restarted run is no longer stopped by an error)."""
        self.error_path.unlink(missing_ok=True)

    @property
    def stopped_path(self) -> Path:
        """RUN/stopped.json: written when ``kit train --time-limit`` stopped the run with its state saved."""
        return self.path / STOPPED

    def write_stopped(self, stopped: Mapping[str, Any]) -> Path:
        """stopped.json: where the time limit stopped the run."""
        return fsutil.write_json(self.stopped_path, {"reason": "time limit", **stopped})

    def clear_stopped(self) -> None:
        """Remove stopped.json (a restarted run is no longer stopped)."""
        self.stopped_path.unlink(missing_ok=True)

    def error_line(self) -> str | None:
        """The first line of error.txt (None when there is none)."""
        if not self.error_path.is_file():
            return None
        lines = self.error_path.read_text(errors="replace").strip().splitlines()
        return lines[0] if lines else f"(empty {ERROR})"


def _read_oof(path: Path) -> "pd.DataFrame":
    from kit.data.sources import read_csv_ids

    if not path.is_file():
        raise KitError(f"{path}: missing")
    # round_trip: a float read back is the float written, so a table rewritten from it is byte-identical
    return read_csv_ids(path, ["image_name"], float_precision="round_trip")
