"""The stack's tree libraries: one fold's trees of LightGBM, XGBoost or CatBoost (each imported only when
its kind is fitted), the number of trees chosen on an inner fold and refit on every training fold, averaged
over seeds, with the majority class undersampled where asked."""

from __future__ import annotations

import os
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd

from kit.core import metrics
from kit.ensemble.stack_config import StackConfig
from kit.core.task import task_for


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

    # a metric CatBoost has no name for (kit.core.metrics.TABLE) stops on the task's log loss
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
