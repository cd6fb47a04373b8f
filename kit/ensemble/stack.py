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
files are kit.runs.folder.RunFolder's): the resolved StackConfig; the out-of-fold predictions in records
order; the CV summary ({"metric", "folds", "overall" (pooled), "fold_mean", "fold_std", "models": {kind:
{"overall", "weight"}}, "features": n, "runs": [...]}); per fold the done marker ({"fold", "metric",
"score", "trees": {kind: mean trees}}); the feature table (feature, source, kind, importance_<model
kind>..., gain, each kind sums to 1); one run folder per model kind under ``models/`` (out-of-fold
predictions, CV summary, done markers, submission); the submission aligned to the sample (when test
records are given) and its sidecar; and ``plots/importance.png``, the 30 most important features.

Example::

    res = stack(StackConfig(records="records/siim", runs=("runs/b0", "runs/b3"), out="runs/stack"))
    res.scores[-1]   # the stack's pooled out-of-fold metric

Its parts: the settings (kit.ensemble.stack_config), the features (kit.ensemble.stack_features), the tree libraries
(kit.ensemble.stack_trees) and the run folders it reads and writes (kit.ensemble.stack_runs); their public names are
importable from here too.
"""

from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np
import pandas as pd

from kit.data import competitions
from kit.core import fsutil, metrics
from kit.runs import folder as runfolder
from kit.ensemble.blend import blend_arrays, fit_oofs
from kit.core.errors import KitError
from kit.runs.folder import RunFolder
from kit.ensemble.stack_config import StackConfig
from kit.ensemble.stack_features import (GROUP_STATS, Features, _check_columns, _check_drop, _constant, _metadata_columns,
                                _safe, build_features, group_features, train_only_columns)
from kit.ensemble.stack_runs import _load_run, _load_test_predictions, _member_oof, _oof_frame, _run_label, _scores, _write_run
from kit.ensemble.stack_trees import _Data, _fit_fold, undersample
from kit.ensemble.submission import IdIndex, make_submission, read_submission, write_submission
from kit.core.task import task_for

if TYPE_CHECKING:  # kit.data.records is imported where the records are read
    from kit.data import records

__all__ = ["GROUP_STATS", "MODEL_KINDS", "Features", "StackConfig", "StackResult", "build_features", "format_result",
           "group_features", "installed", "resolve_models", "stack", "train_only_columns", "undersample"]

MODEL_KINDS = ("lightgbm", "catboost", "xgboost")
_MODULE = {"lightgbm": "lightgbm", "catboost": "catboost", "xgboost": "xgboost"}


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
        from kit.data import records

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
    from kit.data import precheck

    path = Path(submission)
    if sample and path.exists() and Path(sample).exists() and os.path.samefile(path, sample):
        raise KitError(f"{path}: is the sample submission (--submission); write the stack's submission to another "
                       "file")
    precheck.fresh_output(path, "--submission", force)


def _plots(folder: Path, table: pd.DataFrame, kinds: Sequence[str]) -> None:
    from kit.runs.plots import pyplot

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
