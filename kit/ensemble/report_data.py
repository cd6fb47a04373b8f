"""What ``kit report`` reads: a run folder's config, CV summary and out-of-fold table (``RunData``), the
records' manifest, and one pass over the records for groups, thumbnails and a --meta run's metadata
(``read_records``); and the out-of-fold rows the page shows (the worst mistakes, a sample of correct ones).
TensorFlow is imported only where the records are read."""

from __future__ import annotations

import io
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np
import pandas as pd

from kit.data import competitions
from kit.runs import folder as runfolder
from kit.core.errors import KitError
from kit.runs.folder import RunFolder
from kit.core.task import Task, task_of_columns

if TYPE_CHECKING:  # kit.data.records is imported where records are read
    from kit.data import records


@dataclass
class RunData:
    """What the report reads from a run folder (and its records, when they are still there)."""

    run: Path
    config: dict
    config_text: str
    cv: dict
    oof: pd.DataFrame | None
    classes: list[str]
    metric: str
    records: Path | None
    manifest: "records.Manifest | None"
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> Task:
        """The run's task, from its oof.csv's prediction columns (multi-class without one)."""
        return task_of_columns(self.oof.columns if self.oof is not None else [])[0]

    def pred_columns(self) -> list[str]:
        """The oof.csv's prediction columns, in the order of ``classes``."""
        return self.task.pred_columns(self.classes)

    def pred_matrix(self) -> np.ndarray:
        """OOF predictions: [N] binary or [N, K] in the order of ``classes``."""
        return self.task.pred_matrix(self.oof, self.classes).astype(float)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise KitError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: not a JSON object")
    return data


def _read_cv(path: Path) -> dict:
    """The CV summary, its fields of the kinds kit writes ("fold_mean": null, kit's NaN, is an unknown score)."""
    from kit.runs import listing as runs

    cv = _read_json(path)
    problem = runs.cv_problem(cv)
    if problem:
        raise KitError(f"{path}{problem[len(runfolder.CV):]}")
    return cv


def read_oof(path: Path) -> pd.DataFrame:
    """A run's out-of-fold table with numeric target, fold and prediction columns; an empty or non-numeric cell is refused,
    naming the file, row and id."""
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise KitError(f"{path}: not a CSV file kit wrote ({str(exc).strip().splitlines()[0] if str(exc) else exc})"
                       ) from None
    preds = [c for c in raw.columns if c == "pred" or c.startswith("pred_")]
    if "image_name" not in raw.columns or "target" not in raw.columns or "fold" not in raw.columns or not preds:
        raise KitError(f"{path}: columns {','.join(raw.columns)}; expected image_name,target,pred...,fold")
    if raw.empty:
        raise KitError(f"{path}: no rows")
    oof = raw.copy()
    for col in ("target", "fold", *preds):
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna().to_numpy() | ~np.isfinite(values.to_numpy(float))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            cell = raw[col].iloc[i]
            what = "empty" if not cell.strip() else f"not a finite number ({cell[:40]!r})"
            raise KitError(f"{path}: row {i + 1} (id {raw['image_name'].iloc[i]}): {col} is {what}")
        oof[col] = values.astype(int) if col in ("target", "fold") else values.astype(float)
    return oof


def load_run_data(run: str | os.PathLike, records: str | os.PathLike | None = None) -> RunData:
    """Read the config, CV summary and out-of-fold table (kit.runs.folder.RunFolder) and the records' manifest of ``run`` (no TensorFlow, unless the run
    trained on public SIIM-ISIC TFRecords: their image size is read from their first record)."""
    run = Path(run)
    if not run.is_dir():
        raise KitError(f"{run}: no such run folder")
    folder = RunFolder(run)
    cfg_path, cv_path, oof_path = folder.config_path, folder.cv_path, folder.oof_path
    if not cv_path.is_file():
        raise KitError(f"{cv_path}: missing; a report needs at least one finished fold (train the run first)")
    config_text = cfg_path.read_text() if cfg_path.is_file() else ""
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise KitError(f"{cfg_path}: not valid TOML ({exc})") from None
    cv = _read_cv(cv_path)
    oof = read_oof(oof_path) if oof_path.is_file() else None
    notes = []
    if oof is None:
        notes.append(f"{oof_path}: missing, so no curves, mistakes, Grad-CAM or shake-up")
    pred_cols = [c for c in (oof.columns if oof is not None else []) if c.startswith("pred_")]
    classes = [str(c) for c in config.get("classes", [])] or [c[len("pred_"):] for c in pred_cols] or ["0", "1"]
    metric = str(cv.get("metric") or competitions.default_metric(len(classes)))
    folder = Path(records) if records else (Path(config["records"]) if config.get("records") else None)
    manifest = None
    if folder is not None and ((folder / "manifest.json").is_file() or any(folder.glob("train*.tfrec"))):
        from kit.data import records

        # the public SIIM-ISIC TFRecords carry no manifest: kit.data.records builds one from their shard names
        manifest = records.read_manifest(folder, "train")
    elif folder is not None:
        notes.append(f"{folder}: records not found (moved? pass --records DIR), so no thumbnails, groups or Grad-CAM")
        folder = None
    return RunData(run, config, config_text, cv, oof, classes, metric, folder, manifest, notes)


def errors_of(data: RunData) -> np.ndarray:
    """Each OOF row's error: |target - pred| (binary) or 1 - the probability of the true class."""
    return data.task.errors(data.oof["target"].to_numpy(int), data.pred_matrix())


def _with_predicted(data: RunData) -> pd.DataFrame:
    """The OOF table with each row's ``error`` and ``predicted`` class (p > 0.5, or the arg-max)."""
    df = data.oof.copy()
    df["error"] = errors_of(data)
    p = data.pred_matrix()
    df["predicted"] = data.task.labels(p)
    return df


def _correct_sample(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` correct predictions at random, the classes taking turns (a rare positive class is shown too)."""
    right = df[df["predicted"] == df["target"]].sample(frac=1.0, random_state=seed)
    turn = right.groupby("target").cumcount()
    return right.assign(_turn=turn).sort_values(["_turn", "target"], kind="mergesort").head(n).drop(columns="_turn")


def worst_mistakes(data: RunData, k: int) -> pd.DataFrame:
    """The ``k`` OOF rows with the largest error, largest first (ties by id), with ``error`` and ``predicted``."""
    df = _with_predicted(data)
    return df.sort_values(["error", "image_name"], ascending=[False, True], kind="mergesort").head(k)


@dataclass
class RecordsRead:
    """What one pass over the records gives the page: every id's group, and the wanted ids' pixels and metadata."""

    groups: dict[str, str]
    images: dict[str, np.ndarray]
    meta: dict[str, np.ndarray]  # the model's "meta" input of each wanted id (empty: the run feeds none)


def _meta_settings(config: Mapping[str, Any]) -> tuple[list[str], dict[str, int], dict] | None:
    """(numeric columns, categorical columns and their code counts, column statistics) of a --meta run."""
    if not config.get("meta"):
        return None
    numeric, categorical = list(config.get("meta_numeric") or []), dict(config.get("meta_categorical") or {})
    return (numeric, categorical, dict(config.get("meta_stats") or {})) if numeric or categorical else None


def read_records(folder: Path, folds: Iterable[int], want: set[str], config: Mapping[str, Any] | None = None
                 ) -> RecordsRead:
    """One pass over the records of ``folds``: every id's group, and the decoded image of each id in ``want``
    with the metadata a --meta run (``config``) fed its model, prepared as training prepared it."""
    import tensorflow as tf
    from PIL import Image

    from kit.training import pipeline
    from kit.data import records

    paths = records.list_shards(folder, sorted(set(int(f) for f in folds)), split="train")
    settings = _meta_settings(config or {})
    vector = pipeline.meta_vector(*settings) if settings else (lambda ex: tf.zeros([0], tf.float32))
    out = RecordsRead({}, {}, {})
    ds = records.load_dataset(paths, decode=False).map(
        lambda ex: (ex["image_name"], ex["group"], ex["image"], vector(ex)))
    for name, group, data, meta in ds.as_numpy_iterator():
        name = name.decode()
        out.groups[name] = group.decode()
        if name in want:
            out.images[name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            if settings:
                out.meta[name] = meta
    return out
