"""The second stage: gradient-boosted trees on the metadata, the image runs' out-of-fold predictions and
features relative to the patient, on the records' own folds.

Features (``build_features``): the metadata columns present in both the train and the test records
(``train_only_columns`` names the others, never features), each image run's prediction columns (out of
fold for training rows, the run's submission for test rows), and per group (patient or lesion, the
records' ``group``) its size and, for each numeric column and image prediction, the z-score within the
group, the ratio to the group mean and the rank within the group (``group_features``).

Folds: fold k's trees train on the other folds' rows, whose image features came from fold models that
never saw those rows; fold k's rows are then scored by trees and image models that never saw them. The
number of trees is chosen on an inner fold (the next training fold), and the trees refit on every
training fold with that number, so fold k never steers its own model.

The run folder (like ``kit train``'s, so ``kit blend --oof`` and ``kit check`` read it as they are; its
files are kit.runfolder.RunFolder's): the resolved StackConfig; the out-of-fold predictions in records
order; the CV summary ({"metric", "folds", "overall" (pooled), "fold_mean", "fold_std", "models": {kind:
{"overall", "weight"}}, "features": n, "runs": [...]}); per fold the done marker ({"fold", "metric",
"score", "trees": {kind: mean trees}}); the feature table (feature, source, kind, importance_<model
kind>..., gain, each kind sums to 1); one run folder per model kind under ``models/`` (out-of-fold
predictions, CV summary, done markers, submission); the submission aligned to the sample (when test
records are given) and its sidecar; and ``plots/importance.png``, the 30 most important features.

Example::

    res = stack(StackConfig(records="records/siim", runs=("runs/b0", "runs/b3"), out="runs/stack"))
    res.scores[-1]   # the stack's pooled out-of-fold metric
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from kit import competitions, fsutil, metrics, runfolder
from kit.blend import Oof, blend_arrays, fit_oofs, load_oof
from kit.errors import KitError
from kit.runfolder import RunFolder
from kit.submission import IdIndex, make_submission, read_submission, read_table, write_submission
from kit.task import task_for, task_of_width

if TYPE_CHECKING:  # kit.records is imported where the records are read
    from kit import records

MODEL_KINDS = ("lightgbm", "catboost", "xgboost")
_MODULE = {"lightgbm": "lightgbm", "catboost": "catboost", "xgboost": "xgboost"}
GROUP_STATS = ("z", "ratio", "rank")


@dataclass(frozen=True)
class StackConfig:
    """Settings of a ``kit stack`` run (TOML keys are the field names)."""

    records: str = ""  # train records folder (`kit records`)
    runs: tuple[str, ...] = ()  # image run folders (`kit train`) whose oof.csv become features
    out: str = ""  # the stack's run folder (must not exist)
    test_records: str = ""  # test records folder (`kit records --test`)
    predictions: tuple[str, ...] = ()  # each run's test submission (`kit predict`), one per run
    sample_submission: str = ""
    submission: str = ""  # also write the submission here
    models: tuple[str, ...] = ("lightgbm",)  # or "all": every installed kind
    seeds: int = 1  # tree models per fold and kind, averaged
    seed: int = 42
    undersample: float = 0.0  # majority rows kept per row of the other classes in each fold's fit; 0 = all
    metadata: bool = True  # the records' metadata columns as features
    group_features: bool = True  # group size, z-score, ratio to mean, rank within the group
    drop: tuple[str, ...] = ()  # metadata columns (or features) to leave out
    rounds: int = 2000  # most trees; early stopping picks fewer
    early_stopping: int = 100  # stop after this many trees without a better inner-fold metric
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    colsample: float = 0.8
    subsample: float = 0.8
    threads: int = 0  # 0: every core

    def to_dict(self) -> dict[str, Any]:
        """Plain values for TOML (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def check(self) -> None:
        """Refuse settings no stack can run with, naming the value."""
        if not self.records:
            raise KitError("--records: the train records folder is required")
        if not self.out:
            raise KitError("--out: the stack's run folder is required")
        if self.predictions and len(self.predictions) != len(self.runs):
            raise KitError(f"--predictions: {len(self.predictions)} files for {len(self.runs)} runs (one per run, "
                           "in the order of --runs)")
        if self.predictions and not self.test_records:
            raise KitError("--predictions: give the test records they predict with --test-records")
        if self.test_records and self.runs and not self.predictions:
            raise KitError("--test-records: give each run's test submission with --predictions A.csv B.csv ...")
        if self.submission and not self.test_records:
            raise KitError("--submission: needs --test-records (and --predictions) to predict the test set")
        if not self.runs and not self.metadata:
            raise KitError("--runs: nothing to learn from (no runs and --no-metadata)")
        self.check_numbers()

    def check_numbers(self) -> None:
        """One KitError line naming the first number out of its range, as ``kit train``'s settings are checked."""
        rules = [
            ("seed", 0 <= self.seed < 2**31, "in [0, 2**31)"), ("seeds", self.seeds >= 1, "at least 1"),
            ("rounds", self.rounds >= 1, "at least 1"), ("early_stopping", self.early_stopping >= 1, "at least 1"),
            ("learning_rate", 0 < self.learning_rate <= 1, "in (0, 1]"),
            ("undersample", self.undersample == 0 or 1 <= self.undersample < math.inf,
             "0 (keep every row) or a finite ratio >= 1"),
            ("threads", self.threads >= 0, ">= 0 (0: every core)"), ("num_leaves", self.num_leaves >= 2, "at least 2"),
            ("min_child_samples", self.min_child_samples >= 1, "at least 1"),
            ("colsample", 0 < self.colsample <= 1, "in (0, 1]"), ("subsample", 0 < self.subsample <= 1, "in (0, 1]"),
        ]
        for name, ok, want in rules:
            if not ok:
                raise KitError(f"{name}: expects {want}, got {getattr(self, name)}")


class StackResult(NamedTuple):
    """What ``stack`` returns: OOF predictions, per-fold scores then the overall score last."""

    oof: pd.DataFrame
    scores: list[float]
    folds: list[int]
    metric: str
    run: Path
    features: list[str]
    models: dict[str, float]  # kind -> its own pooled OOF score
    weights: dict[str, float]  # kind -> weight in the stack
    submission: Path | None


# --- model kinds -------------------------------------------------------------------------------------


def installed(kind: str) -> bool:
    """Whether the library behind model kind ``kind`` can be imported."""
    return importlib.util.find_spec(_MODULE[kind]) is not None


def resolve_models(models: Sequence[str], log: Callable[[str], None] = print) -> list[str]:
    """The model kinds to fit: ``all`` is every installed kind (a line for each one skipped); a named kind
    that is not installed is refused."""
    names = [m.strip().lower() for part in models for m in part.split(",") if m.strip()]
    if not names:
        raise KitError("--models: no model kind given (known: lightgbm, catboost, xgboost, all)")
    if "all" in names:
        kinds = [k for k in MODEL_KINDS if installed(k)]
        for k in MODEL_KINDS:
            if k not in kinds:
                log(f"{k}: not installed, skipped (pip install 'kit[trees]')")
        return kinds
    for m in names:
        if m not in MODEL_KINDS:
            raise KitError(f"--models: unknown model kind {m!r} (known: {', '.join(MODEL_KINDS)}, all)")
        if not installed(m):
            raise KitError(f"--models {m}: {_MODULE[m]} is not installed (pip install 'kit[trees]', or leave it out)")
    return list(dict.fromkeys(names))


class _Data(NamedTuple):
    frame: pd.DataFrame  # features; categoricals as pandas Categorical
    categorical: list[str]


def _lgb_params(seed: int, n_classes: int, metric: str, cfg: StackConfig) -> dict[str, Any]:
    task = task_for(n_classes)
    params = {
        "objective": task.tree_objectives["lightgbm"], "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.num_leaves, "min_child_samples": cfg.min_child_samples,
        "feature_fraction": cfg.colsample, "bagging_fraction": cfg.subsample, "bagging_freq": 1 if cfg.subsample < 1 else 0,
        "seed": seed, "deterministic": True, "force_col_wise": True, "verbosity": -1,
        "num_threads": cfg.threads or os.cpu_count() or 1,
        "metric": task.tree_metric(metrics.get(metric), "lightgbm") or "None",
    }
    params.update(task.tree_params("lightgbm"))
    return params


def _lgb_prepare(data: _Data, y: np.ndarray, n_classes: int, metric: str, cfg: StackConfig) -> Any:
    """The fold's training rows binned once; every fit of the fold (inner, refit, each seed) takes a subset.

    Binning is most of LightGBM's time on a wide table (2.2 s of 3.9 s per fit at 100,000 x 173); the bin
    edges come from the training folds' features only, never from the fold being scored.
    """
    import lightgbm as lgb

    params = _lgb_params(cfg.seed, n_classes, metric, cfg)
    return lgb.Dataset(data.frame, y, categorical_feature=data.categorical or "auto", params=params,
                       free_raw_data=False).construct()


def _lgb_fit(pool: Any, rows: np.ndarray, stop_rows: np.ndarray | None, rounds: int, seed: int,
             n_classes: int, metric: str, cfg: StackConfig) -> tuple[Any, int]:
    import lightgbm as lgb

    params = _lgb_params(seed, n_classes, metric, cfg)
    dtrain = pool.subset(sorted(rows.tolist()))
    if stop_rows is None:
        return lgb.train(params, dtrain, num_boost_round=rounds), rounds
    dvalid = pool.subset(sorted(stop_rows.tolist()))
    def exact_metric(pred: np.ndarray, data: Any) -> tuple[str, float, bool]:
        return metric, metrics.score(metric, data.get_label().astype(np.int64), pred), True

    feval = exact_metric if params["metric"] == "None" else None
    model = lgb.train(params, dtrain, num_boost_round=rounds, valid_sets=[dvalid], feval=feval,
                      callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)])
    return model, max(1, int(model.best_iteration or rounds))


def _lgb_predict(model: Any, data: _Data) -> np.ndarray:
    return np.asarray(model.predict(data.frame), np.float64)


def _lgb_importance(model: Any) -> dict[str, float]:
    return dict(zip(model.feature_name(), model.feature_importance("gain").astype(float)))


def _keep(data: _Data, y: np.ndarray, n_classes: int, metric: str, cfg: StackConfig) -> tuple[_Data, np.ndarray]:
    """XGBoost and CatBoost take each fit's rows as a table of their own."""
    return data, y


def _split(pool: tuple[_Data, np.ndarray], rows: np.ndarray,
           stop_rows: np.ndarray | None) -> tuple[_Data, np.ndarray, _Data | None, np.ndarray | None]:
    """(fit table, its labels, early-stopping table, its labels) out of a kept pool."""
    data, y = pool
    if stop_rows is None:
        return _subset(data, rows), y[rows], None, None
    return _subset(data, rows), y[rows], _subset(data, stop_rows), y[stop_rows]


def _xgb_fit(pool: tuple[_Data, np.ndarray], rows: np.ndarray, stop_rows: np.ndarray | None, rounds: int, seed: int,
             n_classes: int, metric: str, cfg: StackConfig) -> tuple[Any, int]:
    import xgboost as xgb

    train, y, valid, yv = _split(pool, rows, stop_rows)

    task = task_for(n_classes)
    params = {
        "objective": task.tree_objectives["xgboost"], "eta": cfg.learning_rate,
        "max_leaves": cfg.num_leaves, "grow_policy": "lossguide", "tree_method": "hist", "max_depth": 0,
        "min_child_weight": 1.0, "colsample_bytree": cfg.colsample, "subsample": cfg.subsample, "seed": seed,
        "nthread": cfg.threads or os.cpu_count() or 1, "disable_default_eval_metric": 1,
    }
    params.update(task.tree_params("xgboost"))
    dtrain = xgb.DMatrix(train.frame, y, enable_categorical=True)
    if valid is None:
        return xgb.train(params, dtrain, num_boost_round=rounds), rounds
    dvalid = xgb.DMatrix(valid.frame, yv, enable_categorical=True)

    def score(pred: np.ndarray, data: Any) -> tuple[str, float]:
        return metric, metrics.score(metric, data.get_label().astype(np.int64), pred)

    model = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "inner")], custom_metric=score,
                      early_stopping_rounds=cfg.early_stopping,
                      maximize=metrics.get(metric).higher_is_better, verbose_eval=False)
    return model, max(1, int(model.best_iteration) + 1)


def _xgb_predict(model: Any, data: _Data) -> np.ndarray:
    import xgboost as xgb

    return np.asarray(model.predict(xgb.DMatrix(data.frame, enable_categorical=True)), np.float64)


def _xgb_importance(model: Any) -> dict[str, float]:
    return {k: float(v) for k, v in model.get_score(importance_type="total_gain").items()}


def _cb_frame(data: _Data) -> pd.DataFrame:
    """CatBoost takes categories as integers without missing values: the code, -1 for missing."""
    frame = data.frame.copy()
    for c in data.categorical:
        frame[c] = frame[c].cat.codes.astype(np.int64)
    return frame


def _cb_fit(pool: tuple[_Data, np.ndarray], rows: np.ndarray, stop_rows: np.ndarray | None, rounds: int, seed: int,
            n_classes: int, metric: str, cfg: StackConfig) -> tuple[Any, int]:
    from catboost import CatBoostClassifier, Pool

    train, y, valid, yv = _split(pool, rows, stop_rows)

    # a metric CatBoost has no name for (kit.metrics.TABLE) stops on the task's log loss
    task = task_for(n_classes)
    objective = task.tree_objectives["catboost"]
    eval_metric = task.tree_metric(metrics.get(metric), "catboost") or objective
    model = CatBoostClassifier(
        iterations=rounds, learning_rate=cfg.learning_rate, depth=6, random_seed=seed, eval_metric=eval_metric,
        loss_function=objective, rsm=cfg.colsample if cfg.colsample < 1 else None,
        thread_count=cfg.threads or os.cpu_count() or 1, verbose=False, allow_writing_files=False,
        od_type="Iter" if valid is not None else None, od_wait=cfg.early_stopping if valid is not None else None,
        use_best_model=valid is not None)
    train_pool = Pool(_cb_frame(train), y, cat_features=train.categorical or None)
    if valid is None:
        model.fit(train_pool)
        return model, rounds
    model.fit(train_pool, eval_set=Pool(_cb_frame(valid), yv, cat_features=valid.categorical or None))
    return model, max(1, int(model.get_best_iteration()) + 1)


def _cb_predict(model: Any, data: _Data) -> np.ndarray:
    p = np.asarray(model.predict_proba(_cb_frame(data)), np.float64)
    return task_for(p.shape[1]).from_proba(p)


def _cb_importance(model: Any) -> dict[str, float]:
    return dict(zip(model.feature_names_, model.get_feature_importance().astype(float)))


# kind -> (prepare the fold's training rows once, fit on some of them, predict, importance by feature)
_FITTERS: dict[str, tuple[Callable, Callable, Callable, Callable]] = {
    "lightgbm": (_lgb_prepare, _lgb_fit, _lgb_predict, _lgb_importance),
    "xgboost": (_keep, _xgb_fit, _xgb_predict, _xgb_importance),
    "catboost": (_keep, _cb_fit, _cb_predict, _cb_importance),
}


# --- features --------------------------------------------------------------------------------------


def train_only_columns(train_metadata: "records.MetadataColumns", test_metadata: "records.MetadataColumns") -> list[str]:
    """Metadata columns of the train records that the test records lack: never features (ISIC 2024 ships 11)."""
    test = set(test_metadata.columns)
    return [c for c in train_metadata.columns if c not in test]


def _group_order(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """A stable order of ``codes``: numpy's radix sort on 16-bit keys, twice above 65,536 groups (LSD)."""
    if n_groups <= 1 << 16:
        return np.argsort(codes.astype(np.uint16), kind="stable")
    low = np.argsort((codes & 0xFFFF).astype(np.uint16), kind="stable")
    return low[np.argsort((codes[low] >> 16).astype(np.uint16), kind="stable")]


def group_features(values: np.ndarray, group: Sequence[Any] | np.ndarray,
                   names: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Per-group features of ``values`` [n, c]: ``group_size``, then per column ``<name>__z`` (z-score in the
    group, population std, 0 where the group does not vary), ``__ratio`` (to the group mean; NaN when that
    mean is 0) and ``__rank`` (average rank / non-missing count in the group, as pandas' rank(pct=True)).

    Missing values (NaN) stay missing and are left out of the group's statistics. One factorisation and
    one bincount per statistic; each rank is one float sort plus a 16-bit radix sort by group.
    """
    x = np.asarray(values, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    # column-major in and out: every step below reads or writes one column, contiguous this way (row-major
    # strides each element onto its own cache line: 3x slower on 400,000 x 43)
    x = np.asfortranarray(x)
    n, c = x.shape
    codes, uniques = pd.factorize(np.asarray(group), sort=False)
    g = len(uniques)
    size = np.bincount(codes, minlength=g)
    out = np.empty((n, 1 + 3 * c), np.float64, order="F")
    out[:, 0] = size[codes]
    first = np.concatenate([[0], np.cumsum(size)[:-1]])  # start of each group in the group order
    new = np.empty(n, bool)
    for j in range(c):
        v = x[:, j]
        ok = ~np.isnan(v)
        count = np.bincount(codes, weights=ok, minlength=g)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.bincount(codes, weights=np.where(ok, v, 0.0), minlength=g) / count
            centred = v - mean[codes]  # NaN where v is missing, and so are z and ratio below
            sq = np.nan_to_num(centred * centred, copy=False, nan=0.0)
            std = np.sqrt(np.bincount(codes, weights=sq, minlength=g) / count)
            # statistics per group (few), then one gather and one product per row: a group whose values agree
            # to rounding has no spread, and its members are "usual" (z 0)
            flat = std <= 1e-12 * np.maximum(np.abs(mean), 1.0)
            inv_std = np.where(flat, 0.0, 1.0 / np.where(flat, 1.0, std))
            inv_mean = np.where(mean != 0, 1.0 / np.where(mean != 0, mean, 1.0), np.nan)
        np.multiply(centred, inv_std[codes], out=out[:, 1 + 3 * j])
        np.multiply(v, inv_mean[codes], out=out[:, 2 + 3 * j])
        # rank: sort by value (missing last), then stably by group, so each group's values come in order.
        # numpy sorts NaN 4x slower than numbers: missing becomes +inf first, unless +inf is a real value there
        key = v if ok.all() or np.isposinf(v).any() else np.where(ok, v, np.inf)
        order = np.argsort(key)
        order = order[_group_order(codes[order], g)]
        vs, cs = v[order], codes[order]
        if n:
            new[0] = True
            np.not_equal(vs[1:], vs[:-1], out=new[1:])
            new[1:] |= cs[1:] != cs[:-1]
        starts = np.flatnonzero(new)
        ends = np.append(starts[1:], n)
        avg = np.repeat((starts + ends + 1) / 2.0, ends - starts) - first[cs]
        with np.errstate(invalid="ignore", divide="ignore"):
            avg /= count[cs]
        avg[~ok[order]] = np.nan
        out[order, 3 + 3 * j] = avg
    feature_names = ["group_size"] + [f"{name}__{s}" for name in names for s in GROUP_STATS]
    return out, feature_names


def _categories(column: str, train: pd.DataFrame, test: pd.DataFrame | None) -> pd.Index:
    """One category list for both splits (train's first), so that a code means the same in train and test."""
    values = []
    for t in (train, test):
        if t is None:
            continue
        v = t[column]
        values += list(v.cat.categories) if isinstance(v.dtype, pd.CategoricalDtype) else list(v.dropna().unique())
    return pd.Index(list(dict.fromkeys(values)))


def _safe(name: str) -> str:
    """A feature name every tree library accepts (LightGBM refuses JSON punctuation)."""
    return re.sub(r"[^0-9A-Za-z_.\-]+", "_", name).strip("_") or "f"


@dataclass
class Features:
    """The feature tables of the stack: train rows (records order), test rows (or None), and what each is."""

    train: pd.DataFrame
    test: pd.DataFrame | None
    source: dict[str, str]  # feature -> "metadata" | run folder | "group"
    kind: dict[str, str]  # feature -> "numeric" | "categorical" | "image" | "group_size" | "z" | "ratio" | "rank"

    @property
    def categorical(self) -> list[str]:
        """Names of the categorical features."""
        return [f for f, k in self.kind.items() if k == "categorical"]


def build_features(
    train: pd.DataFrame,
    test: pd.DataFrame | None,
    numeric: Sequence[str],
    categorical: Sequence[str],
    image: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    groups: bool = True,
    image_source: Mapping[str, str] | None = None,
) -> Features:
    """Feature tables for train (and test): metadata columns, image predictions, per-group features.

    ``train``/``test`` hold ``group`` and the metadata columns; ``image`` maps a feature name to its
    (train values, test values). Group features are computed within each split's own groups.
    """
    source: dict[str, str] = {}
    kind: dict[str, str] = {}
    frames = []
    cats = {c: _categories(c, train, test) for c in categorical}
    for split, table in (("train", train), ("test", test)):
        if table is None:
            frames.append(None)
            continue
        cols: dict[str, Any] = {}
        for c in numeric:
            cols[_safe(c)] = table[c].to_numpy(np.float64)
            source[_safe(c)], kind[_safe(c)] = "metadata", "numeric"
        for c in categorical:
            cols[_safe(c)] = pd.Categorical(np.asarray(table[c].astype(object)), categories=cats[c])
            source[_safe(c)], kind[_safe(c)] = "metadata", "categorical"
        for name, (tr, te) in image.items():
            cols[name] = tr if split == "train" else te
            source[name], kind[name] = (image_source or {}).get(name, "image"), "image"
        frame = pd.DataFrame(cols, index=pd.RangeIndex(len(table)))
        if groups:
            base = [_safe(c) for c in numeric] + list(image)
            values = frame[base].to_numpy(np.float64) if base else np.empty((len(frame), 0))
            g, names = group_features(values, table["group"].to_numpy(), base)
            frame = pd.concat([frame, pd.DataFrame(g, columns=names, index=frame.index)], axis=1)
            for name in names:
                source[name] = "group"
                kind[name] = "group_size" if name == "group_size" else name.rsplit("__", 1)[1]
        frames.append(frame)
    return Features(frames[0], frames[1], source, kind)


# --- inputs ------------------------------------------------------------------------------------------


def _run_label(run: str, taken: set[str]) -> str:
    base = _safe(Path(run).resolve().name) or "run"
    label, k = base, 2
    while label in taken:
        label, k = f"{base}_{k}", k + 1
    taken.add(label)
    return label


def _check_finished(run: str, folds: Sequence[int]) -> None:
    """KitError naming the folds of ``run`` not done: a run still training, stopped, or trained on some folds only
    has no out-of-fold prediction for their rows."""
    unfinished = [k for k in folds if not RunFolder(run).is_done(k)]
    if unfinished:
        listed = ", ".join(map(str, unfinished))
        raise KitError(f"{run}: fold{'s' if len(unfinished) > 1 else ''} {listed} of {len(folds)} unfinished (no "
                       f"fold{unfinished[0]}/{runfolder.DONE}); the stack needs every fold's out-of-fold predictions: finish "
                       f"it (`kit train --resume --out {run}`) or leave it out of --runs")


def _load_run(run: str, train: pd.DataFrame, index: IdIndex, classes: list[str], records: str) -> np.ndarray:
    """A run's OOF predictions in records order, after checking it was trained on these records and folds."""
    _check_finished(run, sorted(np.unique(train["fold"]).tolist()))
    header = RunFolder(run).oof_header()
    path = RunFolder(run).oof_path
    if header and "fold" not in header:
        raise KitError(f"{path}: no fold column, so which fold model predicted each row is unknown; the stack needs "
                       "out-of-fold predictions from the records' folds (a `kit train` run)")
    oof = load_oof(run)
    if task_of_width(oof.preds.shape[1]).pred_columns(oof.classes) != task_for(len(classes)).pred_columns(classes):
        raise KitError(f"{path}: classes {','.join(oof.classes)} differ from the records' {','.join(classes)}")
    try:
        src = index.align(oof.ids, str(path))
    except KitError as exc:
        raise KitError(f"{exc} (was the run trained on {records}?)") from None
    fold = oof.fold if src is None else oof.fold[src]
    target = oof.target if src is None else oof.target[src]
    want = train["fold"].to_numpy()
    if not np.array_equal(fold, want):
        r = int(np.flatnonzero(fold != want)[0])
        raise KitError(f"{path}: folds differ from the records' (id {train['image_name'].iat[r]}: fold {fold[r]} in the "
                       f"run, {want[r]} in {records}); the stack uses the records' folds, retrain the run on them")
    if not np.array_equal(target, train["target"].to_numpy()):
        r = int(np.flatnonzero(target != train["target"].to_numpy())[0])
        raise KitError(f"{path}: target differs from the records' for id {train['image_name'].iat[r]} "
                       f"(was the run trained on {records}?)")
    return oof.preds if src is None else oof.preds[src]


def _load_test_predictions(path: str, test: pd.DataFrame, index: IdIndex, classes: list[str]) -> np.ndarray:
    """A run's test submission in test-records order; every test id must have a prediction."""
    table = read_table(path)
    order = task_for(len(classes)).value_order(table.columns[1:], classes, path)
    ids = set(table.ids.tolist())
    missing = [i for i in test["image_name"] if i.encode() not in ids]
    if missing:
        raise KitError(f"{path}: no prediction for {len(missing)} of the {len(test)} test ids, e.g. {missing[0]}; "
                       "predict the test records given to --test-records")
    try:
        src = index.align(table.ids, path)
    except KitError as exc:
        raise KitError(f"{exc} (predict the test records given to --test-records)") from None
    values = table.values if src is None else table.values[src]
    values = values[:, np.argsort(order)]
    if not np.isfinite(values).all():
        r = int(np.flatnonzero(~np.isfinite(values).all(axis=1))[0])
        raise KitError(f"{path}: NaN or infinite prediction for id {test['image_name'].iat[r]}")
    return values


def _check_drop(drop: Sequence[str], metadata: Sequence[str], numeric: Sequence[str], image: Sequence[str]) -> None:
    """KitError naming the first ``--drop`` name that is no metadata column, image prediction or per-group feature
    this stack could have, and listing those (metadata last: ISIC 2024 has 41 columns)."""
    bases = [*(_safe(c) for c in numeric), *image]
    known = {*metadata, *(_safe(c) for c in metadata), *image, "group_size",
             *(f"{b}__{stat}" for b in bases for stat in GROUP_STATS)}
    unknown = [d for d in drop if d not in known]
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise KitError(f"--drop {unknown[0]!r}{more}: no such column or feature; there are image predictions: "
                       f"{', '.join(image) or 'none'}; per group: group_size, COLUMN__{', COLUMN__'.join(GROUP_STATS)}; "
                       f"metadata columns: {', '.join(metadata) or 'none'}")


def _metadata_columns(train_manifest: "records.Manifest", test_manifest: "records.Manifest | None",
                      drop: Sequence[str], log: Callable[[str], None]) -> tuple[list[str], list[str]]:
    meta = train_manifest.metadata
    numeric, categorical = list(meta.numeric), list(meta.categorical)
    if test_manifest is not None:
        gone = train_only_columns(meta, test_manifest.metadata)
        if gone:
            log(f"train-only columns, never features: {', '.join(gone)}")
        numeric = [c for c in numeric if c not in gone]
        categorical = [c for c in categorical if c not in gone]
    return [c for c in numeric if c not in drop], [c for c in categorical if c not in drop]


def _constant(values: pd.Series | np.ndarray) -> bool:
    """One value in every row (missing counts as a value, as in ``nunique(dropna=False)``), without hashing."""
    v = values.cat.codes.to_numpy() if isinstance(getattr(values, "dtype", None), pd.CategoricalDtype) else values
    v = np.asarray(v, np.float64)
    if len(v) == 0:
        return True
    missing = np.isnan(v)
    if missing.all():
        return True
    return not missing.any() and v.min() == v.max()


def _check_columns(train: pd.DataFrame, test: pd.DataFrame | None, columns: Sequence[str], what: Mapping[str, str]) -> None:
    """Refuse a feature constant in train, or a metadata column whose test values are all missing."""
    for c in columns:
        v = train[c]
        if _constant(v):
            first = v.iloc[0] if len(v) else None
            raise KitError(f"{what.get(c, 'feature')} {c!r} is constant in the training records ({first}), so no tree "
                           f"can split on it; leave it out with --drop {c}")
        if test is not None and c in test.columns and test[c].isna().all():
            raise KitError(f"metadata column {c!r}: every test value is missing, so the trees would score the test set "
                           f"on a column they never see there; leave it out with --drop {c}")


# --- fitting -----------------------------------------------------------------------------------------


def undersample(y: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Row indices keeping every row but the majority class's, cut to ``ratio`` x the other classes' rows."""
    idx = np.arange(len(y))
    if not ratio:
        return idx
    counts = np.bincount(y)
    major = int(np.argmax(counts))
    rest = len(y) - counts[major]
    keep = int(min(counts[major], max(1, round(ratio * rest))))
    major_rows = np.flatnonzero(y == major)
    chosen = np.sort(rng.choice(major_rows, size=keep, replace=False))
    return np.sort(np.concatenate([np.flatnonzero(y != major), chosen]))


def _subset(data: _Data, rows: np.ndarray) -> _Data:
    return _Data(data.frame.iloc[rows].reset_index(drop=True), data.categorical)


def _fit_fold(kind: str, data: _Data, y: np.ndarray, folds: np.ndarray, fold: int, test: _Data | None,
              n_classes: int, metric: str, cfg: StackConfig) -> tuple[np.ndarray, np.ndarray | None, list[int], dict]:
    """Fold ``fold``'s trees of ``kind``, averaged over seeds: (valid preds, test preds, trees per seed, importance)."""
    prepare, fit, predict, importance = _FITTERS[kind]
    order = sorted(np.unique(folds).tolist())
    others = [f for f in order if f != fold]
    inner = next((f for f in others if f > fold), others[0])  # the next fold, cyclically
    train_rows = np.flatnonzero(folds != fold)
    local = folds[train_rows]  # positions below are within the training rows
    fit_rows, inner_rows, all_rows = np.flatnonzero(local != inner), np.flatnonzero(local == inner), np.arange(len(local))
    yt = y[train_rows]
    pool = prepare(_subset(data, train_rows), yt, n_classes, metric, cfg)
    valid = _subset(data, np.flatnonzero(folds == fold))
    pv, pt, trees, imp = None, None, [], {}
    for s in range(cfg.seeds):
        seed = cfg.seed + 1000 * s + fold
        rng = np.random.default_rng([cfg.seed, s, fold])
        rows = fit_rows[undersample(yt[fit_rows], cfg.undersample, rng)]
        _, best = fit(pool, rows, inner_rows, cfg.rounds, seed, n_classes, metric, cfg)
        rows = all_rows[undersample(yt, cfg.undersample, rng)]
        model, _ = fit(pool, rows, None, best, seed, n_classes, metric, cfg)
        trees.append(best)
        p = predict(model, valid)
        pv = p if pv is None else pv + p
        if test is not None:
            q = predict(model, test)
            pt = q if pt is None else pt + q
        for k, v in importance(model).items():
            imp[k] = imp.get(k, 0.0) + v
    return pv / cfg.seeds, (pt / cfg.seeds if pt is not None else None), trees, imp


def _oof_frame(ids: pd.Series, y: np.ndarray, pred: np.ndarray, folds: np.ndarray, classes: list[str]) -> pd.DataFrame:
    return runfolder.oof_table(ids.to_numpy(), y, pred, folds, classes if pred.ndim > 1 else ())


def _member_oof(name: str, ids: pd.Series, y: np.ndarray, pred: np.ndarray, folds: np.ndarray, classes: list[str],
                metric: str) -> Oof:
    """A model kind's out-of-fold predictions as ``load_oof`` would read them back from its run folder."""
    preds = pred.reshape(len(y), -1).astype(np.float64)
    return Oof(name, ids.to_numpy().astype(bytes), y.astype(np.int64), preds, folds.astype(np.int64),
               ["0", "1"] if pred.ndim == 1 else list(classes), metric)


def _scores(metric: str, y: np.ndarray, pred: np.ndarray, folds: np.ndarray) -> tuple[dict[str, float], float]:
    per = {str(f): float(metrics.score(metric, y[folds == f], pred[folds == f])) for f in sorted(np.unique(folds))}
    return per, float(metrics.score(metric, y, pred))


def _write_run(folder: RunFolder, oof: pd.DataFrame, metric: str, per: dict[str, float], overall: float,
               done_extra: Mapping[str, dict], extra: Mapping[str, Any]) -> None:
    """The run-folder contract: out-of-fold predictions, the CV summary, each fold's done marker."""
    vals = np.asarray(list(per.values()), float)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_oof(oof)
    folder.write_cv({
        "metric": metric, "folds": per, "overall": overall, "fold_mean": float(vals.mean()),
        "fold_std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0, **extra})
    for f, score in per.items():
        folder.write_done(int(f), {"fold": int(f), "metric": metric, "score": score, **done_extra.get(f, {})})


def stack(cfg: StackConfig, *, log: Callable[[str], None] = print,
          tables: "tuple[pd.DataFrame, records.Manifest, pd.DataFrame | None, records.Manifest | None] | None" = None,
          force: bool = False) -> StackResult:
    """Fit the second stage on the records' folds and write its run folder (and submission); see the module doc.

    ``tables``: the (train, manifest, test, test manifest) that ``records.read_metadata`` returns, for a caller
    that already holds them (a notebook, the benchmark); the records folders are then not read again.
    ``force`` lets ``cfg.submission`` replace an existing file (never the sample submission).
    """
    t0 = time.perf_counter()
    cfg.check()
    out = Path(cfg.out)
    if out.exists():
        raise KitError(f"{out}: already exists; choose a new --out (kit never overwrites a run)")
    if cfg.submission:
        _check_submission_path(cfg.submission, cfg.sample_submission, force)
    kinds = resolve_models(cfg.models, log)
    if not kinds:
        raise KitError("--models all: no tree library installed (pip install lightgbm)")
    for p in ((cfg.records, cfg.test_records) if tables is None else ()) + tuple(cfg.runs):
        if p and not Path(p).is_dir():
            raise KitError(f"{p}: no such folder")
    for p in (*cfg.predictions, cfg.sample_submission):
        if p and not Path(p).is_file():
            raise KitError(f"{p}: no such file")
    if tables is None:
        from kit import records

        train, manifest = records.read_metadata(cfg.records, "train")
        test, test_manifest = ((records.read_metadata(cfg.test_records, "test", train_manifest=manifest))
                               if cfg.test_records else (None, None))
    else:
        train, manifest, test, test_manifest = tables
    if manifest.split != "train" or (train["fold"] < 0).all():
        raise KitError(f"{cfg.records}: holds test records (fold -1); give the train records to --records")
    if (train["target"] < 0).any():
        raise KitError(f"{cfg.records}: unlabelled records (target -1); the stack trains on labelled records")
    folds = train["fold"].to_numpy()
    if len(np.unique(folds)) < 3:
        raise KitError(f"{cfg.records}: {len(np.unique(folds))} folds; the stack needs at least 3 (one scored, one to "
                       "stop the trees on, the rest to fit)")
    classes = list(manifest.classes) or ["0", "1"]
    n_classes = max(2, len(classes))
    y = train["target"].to_numpy(np.int64)
    index = IdIndex(train["image_name"].to_numpy().astype(bytes), cfg.records)
    test_index = IdIndex(test["image_name"].to_numpy().astype(bytes), cfg.test_records) if test is not None else None

    image: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    image_source: dict[str, str] = {}
    taken: set[str] = set()
    for i, run in enumerate(cfg.runs):
        preds = _load_run(run, train, index, classes, cfg.records)
        test_preds = _load_test_predictions(cfg.predictions[i], test, test_index, classes) if test is not None else None
        label = _run_label(run, taken)
        cols = task_for(len(classes)).pred_columns(classes)
        for j, c in enumerate(cols):
            name = _safe(f"{label}_{c}")
            image[name] = (preds[:, j], None if test_preds is None else test_preds[:, j])
            image_source[name] = str(run)
    metric = competitions.metric_of(manifest)  # the registry's: early stopping and every score use it
    _check_drop(cfg.drop, [*manifest.metadata.numeric, *manifest.metadata.categorical], manifest.metadata.numeric,
                list(image))

    numeric, categorical = _metadata_columns(manifest, test_manifest, cfg.drop, log) if cfg.metadata else ([], [])
    what = {**{c: "metadata column" for c in numeric + categorical}, **{c: "image prediction" for c in image}}
    _check_columns(train.assign(**{k: v[0] for k, v in image.items()}),
                   test, [*numeric, *categorical, *[c for c in image if c not in cfg.drop]], what)
    image = {k: v for k, v in image.items() if k not in cfg.drop}
    feats = build_features(train, test, numeric, categorical, image, groups=cfg.group_features,
                           image_source=image_source)
    # a derived feature constant in train (e.g. the z-score of age, which SIIM repeats within a patient)
    # tells the trees nothing: leave it out quietly, as it is not an input the user chose
    derived = [f for f in feats.train.columns if feats.source[f] == "group" and _constant(feats.train[f])]
    names = [f for f in feats.train.columns if f not in derived and f not in cfg.drop]
    if not names:
        raise KitError("no features left (every column dropped or constant)")
    cat = [f for f in names if feats.kind[f] == "categorical"]
    data = _Data(feats.train[names], cat)
    test_data = _Data(feats.test[names], cat) if feats.test is not None else None
    log(f"stack: {len(train)} rows, {len(np.unique(folds))} folds, {len(names)} features "
        f"({len(numeric) + len(categorical)} metadata, {len(image)} image, "
        f"{sum(feats.source[f] == 'group' for f in names)} per group), models {', '.join(kinds)}, metric {metric}")

    fold_ids = sorted(np.unique(folds).tolist())
    with fsutil.atomic_dir(out) as tmp_path:
        tmp = RunFolder(tmp_path)
        kind_pred, kind_test, kind_score, importance = {}, {}, {}, {}
        trees_all: dict[str, dict] = {}  # fold -> {"trees": {kind: mean trees over seeds}}
        for kind in kinds:
            pred = np.zeros(task_for(n_classes).pred_shape(len(y)))
            ptest = None
            trees_of: dict[str, dict] = {}
            imp: dict[str, float] = {}
            for f in fold_ids:
                t1 = time.perf_counter()
                rows = folds == f
                pv, pt, trees, fi = _fit_fold(kind, data, y, folds, f, test_data, n_classes, metric, cfg)
                pred[rows] = pv
                if pt is not None:
                    ptest = pt / len(fold_ids) if ptest is None else ptest + pt / len(fold_ids)
                for k, v in fi.items():
                    imp[k] = imp.get(k, 0.0) + v
                s = float(metrics.score(metric, y[rows], pv))
                trees_of[str(f)] = {"trees": float(np.mean(trees))}
                trees_all.setdefault(str(f), {"trees": {}})["trees"][kind] = float(np.mean(trees))
                log(f"{kind} fold {f}: {metric} {s:.4f} ({np.mean(trees):.0f} trees, {cfg.seeds} seed"
                    f"{'s' if cfg.seeds > 1 else ''}, {time.perf_counter() - t1:.1f} s)")
            per, overall = _scores(metric, y, pred, folds)
            member = tmp.member(kind)
            _write_run(member, _oof_frame(train["image_name"], y, pred, folds, classes), metric, per, overall,
                       trees_of, {"model": kind})
            if ptest is not None:
                write_submission(make_submission(test["image_name"].tolist(), ptest, classes, None,
                                                 manifest.id_name), member.file(runfolder.SUBMISSION))
            kind_pred[kind], kind_test[kind], kind_score[kind] = pred, ptest, overall
            total = sum(imp.values()) or 1.0
            importance[kind] = {k: v / total for k, v in imp.items()}

        if len(kinds) > 1:
            # the model kinds' predictions as they are in memory, not read back from their folders
            fit = fit_oofs([_member_oof(str(tmp.member(k).path), train["image_name"], y, kind_pred[k], folds, classes,
                                        metric) for k in kinds], method="mean")
            weights = dict(zip(kinds, fit.weights))
            used = [k for k in kinds if weights[k] > 0]
            pred = blend_arrays([kind_pred[k] for k in used], "mean", [weights[k] for k in used])
            ptest = (blend_arrays([kind_test[k] for k in used], "mean", [weights[k] for k in used])
                     if test is not None else None)
            log(f"blend of {', '.join(kinds)}: weights {', '.join(f'{weights[k]:.3f}' for k in kinds)}")
        else:
            weights = {kinds[0]: 1.0}
            pred, ptest = kind_pred[kinds[0]], kind_test[kinds[0]]
        per, overall = _scores(metric, y, pred, folds)
        oof = _oof_frame(train["image_name"], y, pred, folds, classes)
        _write_run(tmp, oof, metric, per, overall, trees_all,
                   {"models": {k: {"overall": kind_score[k], "weight": weights[k]} for k in kinds},
                    "features": len(names), "runs": list(cfg.runs)})
        table = pd.DataFrame({
            "feature": names, "source": [feats.source[f] for f in names], "kind": [feats.kind[f] for f in names],
            **{f"importance_{k}": [importance[k].get(f, 0.0) for f in names] for k in kinds}})
        table = table.sort_values(f"importance_{kinds[0]}", ascending=False, kind="stable")
        fsutil.write_csv(tmp.file(runfolder.FEATURES), table)
        tmp.write_config({**cfg.to_dict(), "metric": metric, "classes": classes, "n_classes": n_classes,
                          "features": names})
        _plots(tmp.plots, table, kinds)
        sub_path = None
        if test is not None:
            sample = read_submission(cfg.sample_submission) if cfg.sample_submission else None
            frame = make_submission(test["image_name"].tolist(), ptest, classes, sample,
                                    manifest.id_name)
            write_submission(frame, tmp.file(runfolder.SUBMISSION))
            # its sidecar, as `kit predict` writes one: `kit blend --fit` pairs the submission with this folder
            final = RunFolder(out)
            fsutil.write_json(tmp.file(runfolder.SUBMISSION_SIDECAR),
                              {"submission": str(final.file(runfolder.SUBMISSION)), "run": str(out)})
            sub_path = final.file(runfolder.SUBMISSION)
    if test is not None and cfg.submission:
        sub_path = write_submission(frame, cfg.submission)
    log(f"stack: {metric} {overall:.4f} out of fold (fold mean {np.mean(list(per.values())):.4f}) "
        f"in {time.perf_counter() - t0:.1f} s -> {out}")
    return StackResult(oof, list(per.values()) + [overall], fold_ids, metric, out, names, kind_score, weights, sub_path)


def _check_submission_path(submission: str, sample: str, force: bool) -> None:
    """``--submission`` may not be the sample submission, nor (unless ``force``) any existing file."""
    from kit import precheck

    path = Path(submission)
    if sample and path.exists() and Path(sample).exists() and os.path.samefile(path, sample):
        raise KitError(f"{path}: is the sample submission (--submission); write the stack's submission to another "
                       "file")
    precheck.fresh_output(path, "--submission", force)


def _plots(folder: Path, table: pd.DataFrame, kinds: Sequence[str]) -> None:
    from kit.plots import pyplot

    plt = pyplot()
    top = table.assign(mean=table[[f"importance_{k}" for k in kinds]].mean(axis=1)).nlargest(30, "mean")[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.25 * len(top) + 1.2))
    left = np.zeros(len(top))
    for k in kinds:
        ax.barh(top["feature"], top[f"importance_{k}"] / len(kinds), left=left, label=k)
        left += top[f"importance_{k}"].to_numpy() / len(kinds)
    ax.set(xlabel="share of gain (mean over model kinds)", title="feature importance")
    ax.tick_params(axis="y", labelsize=7)
    ax.legend(fontsize="small")
    fsutil.write_figure(fig, folder / "importance.png")


def format_result(res: StackResult) -> str:
    """Lines ``kit stack`` prints at the end: each model kind, the stack, what was written."""
    lines = [f"{'model':<10}  {'oof ' + res.metric:<22}  weight"]
    for k, s in res.models.items():
        lines.append(f"{k:<10}  {s:<22.6f}  {res.weights.get(k, 0.0):.4f}")
    lines.append(f"{'stack':<10}  {res.scores[-1]:<22.6f}  ({len(res.features)} features; folds "
                 + ", ".join(f"{s:.4f}" for s in res.scores[:-1]) + ")")
    lines.append(f"{res.run}: {runfolder.OOF}, {runfolder.CV}, {runfolder.FEATURES}, {runfolder.PLOTS}/" + (f"; submission {res.submission}"
                                                                         if res.submission else ""))
    return "\n".join(lines)
