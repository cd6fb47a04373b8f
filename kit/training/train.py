"""k-fold training: per fold a model trained on the other folds, the best epoch by the competition metric,
history, out-of-fold predictions; the run folder that ``kit predict`` and ``kit blend`` read.

The run folder (``cfg.out``) and its files are kit.runs.folder's (see RunFolder): the resolved config, per
fold the best and latest models, the history (val_metric is the competition's exact metric over every image
of the fold; metric is Keras' running figure on the training batches), the fold's out-of-fold predictions
and its done marker (written last); the run's out-of-fold predictions and CV summary, plots, and an error
note after a fold raised.

The out-of-fold predictions and the CV summary are rewritten after every finished fold, so a run that stops
(a NaN loss, a killed kernel) keeps what finished; the plots are drawn at the end. Example::

    res = train_folds(Config(records="records/siim256", out="runs/b0", model="efficientnet_b0"))
    res.scores[-1]   # the overall out-of-fold metric

The fold loop is here; its parts are beside it: kit.training.resolve (the config checked and filled in against the records),
kit.training.fit_parts (loss, metric, optimizer, class weights, the compiled model), kit.training.callbacks (exact validation,
checkpoints, the time limit) and kit.training.lr_find (``--find-lr``). Their names are importable from kit.training.train too.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import keras
import numpy as np
import pandas as pd

from kit.training import backbones, defaults, models, pipeline, schedule, strategy
from kit.core import fsutil, metrics
from kit.runs import plots
from kit.data import records
# the parts' names are imported (and re-exported) by name: train_fold and train_folds look build_and_compile and
# train_fold up in this module, where a caller may replace them
from kit.training.callbacks import (LAST_EVERY_S, VALIDATION_CACHE_BYTES, TimeBudget, TimeLimitReached,  # noqa: F401
                           _Checkpoints, _Deadline, _EpochLR, _EpochSeeds, _ExactValidation, _NanGuard, _save_atomic,
                           inference_model, validation_loss)
from kit.training.config import Config, smoke_config
from kit.core.errors import KitError
from kit.training.fit_parts import (BalancedAccuracy, SparseCategoricalLoss, _build, _class_weights,  # noqa: F401
                           _schedule_kwargs, build_and_compile, compile_phase, lr_at, make_loss, make_metric,
                           make_optimizer)
from kit.training.lr_find import LrFinding, find_lr, format_lr_finding  # noqa: F401
from kit.training.resolve import _smoke_swaps, chosen_meta_columns, resolve  # noqa: F401
from kit.runs.folder import (CONFIG, FOLD_TEMPORARY_FILES, FOLD_TRAINING_FILES, LAST, STATE, RunFolder, cv_summary,
                           oof_table)


class FoldResult(NamedTuple):
    """What train_folds returns: OOF predictions, per-fold scores then the overall score last."""

    oof: pd.DataFrame
    scores: list[float]
    folds: list[int]
    metric: str
    run: Path
    stopped: "StopPoint | None" = None  # set when a time limit stopped the run before its end


class StopPoint(NamedTuple):
    """Where a time limit stopped a run: the fold left unfinished and the epochs it holds (0: not started)."""

    fold: int
    epochs_done: int
    epochs: int


# --- one fold --------------------------------------------------------------------------------------


def _load(path: Path, acc: Any) -> keras.Model:
    with acc.scope():
        return keras.saving.load_model(path)


def run_tta_views(cfg: Config) -> tuple[list[str | int], str | None]:
    """The run's first ``cfg.tta`` views, from its own augmentation (see kit.training.pipeline.tta_views)."""
    return pipeline.tta_views(cfg.tta, pipeline.resolve_augment(cfg.augment, cfg.augment_options))


def predict_oof(model: keras.Model, paths: Sequence[Path], cfg: Config, batch: int, replicas: int = 1,
                views: Sequence[str | int] | None = None) -> np.ndarray:
    """Predictions for ``paths`` in record order, averaged over ``views`` (default: the run's TTA views); [N] or [N,K].

    The last batch is padded to full size when several replicas share it, and the padding dropped.
    """
    views = run_tta_views(cfg)[0] if views is None else views
    n = records.count_data_items(paths)
    total = None
    for view in views:
        ds = pipeline.predict_dataset(paths, cfg, view, batch, pad_to_batch=replicas > 1)
        p = np.asarray(model.predict(ds, verbose=0), np.float64)[:n]
        total = p if total is None else total + p
    return cfg.task.squeeze(total / len(views))


def _oof_frame(table: pd.DataFrame, pred: np.ndarray, cfg: Config, fold: int) -> pd.DataFrame:
    return oof_table(table["image_name"].to_numpy(), table["target"].to_numpy(), pred, fold, cfg.classes)


def _pred_matrix(df: pd.DataFrame, cfg: Config) -> np.ndarray:
    return cfg.task.pred_matrix(df, cfg.classes)


def _or(value: Any, missing: float) -> float:
    return missing if value is None else float(value)


def _resume_point(fdir: Path, acc: Any, fold: int,
                  log: Callable[[str], None]) -> tuple[tuple[int, float, int, float], keras.Model] | None:
    """(epoch to start, best, best epoch, best loss) and the model of an interrupted fold, or None (with one
    warning line) when its state.json or last.keras is missing or damaged: the fold then restarts from scratch."""
    try:
        state = json.loads((fdir / STATE).read_text())
        # strict JSON stores a best of -inf (no finite metric yet) as null
        point = (int(state["epoch"]) + 1, _or(state["best"], -math.inf), int(state["best_epoch"]),
                 _or(state.get("best_loss"), math.inf))
        if not (fdir / LAST).is_file():
            raise FileNotFoundError(f"{LAST} is missing")
        return point, _load(fdir / LAST, acc)
    except Exception as exc:  # noqa: BLE001 - a damaged file (truncated zip, bad JSON) fails in many ways; all mean restart
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        log(f"warning: fold {fold}: cannot resume from {fdir} ({type(exc).__name__}: {reason}); training this fold "
            "again from its start")
        return None


def train_fold(cfg: Config, fold: int, run: Path, manifest: records.Manifest, acc: Any, *, resume: bool = False,
               log: Callable[[str], None] = print, budget: TimeBudget | None = None) -> tuple[pd.DataFrame, float]:
    """Train on every other fold, validate on ``fold``; returns its OOF frame and score (files in run/fold{k}).

    With ``budget``, stops at the first epoch boundary after which the rest would not fit, saves the fold's state
    and raises :class:`TimeLimitReached`."""
    folder, fdir, rf = Path(cfg.records), RunFolder(run).fold_dir(fold), RunFolder(run)
    fdir.mkdir(parents=True, exist_ok=True)
    others = [k for k in manifest.fold_ids if k != fold]
    train_paths = records.list_shards(folder, others, split="train")
    valid_paths = records.list_shards(folder, [fold], split="train")
    batch = acc.global_batch(cfg.batch)
    n_train, n_valid = records.count_data_items(train_paths), records.count_data_items(valid_paths)
    steps = epoch_steps(cfg, n_train, sum(manifest.folds[k].positives or 0 for k in others), batch)
    keras.utils.set_random_seed(cfg.seed + fold)

    initial_epoch, best, best_epoch, best_loss = 0, -math.inf, -1, math.inf
    resumed = _resume_point(fdir, acc, fold, log) if resume and rf.state_path(fold).is_file() else None
    if resumed is not None:
        (initial_epoch, best, best_epoch, best_loss), model = resumed
        _truncate_history(rf.history_path(fold), initial_epoch)
        log(f"fold {fold}: resuming after epoch {initial_epoch} (best val {best:.4f})")
    else:
        rf.remove_fold_files(fold, FOLD_TRAINING_FILES)
        model = build_and_compile(cfg, acc, steps)
    log(f"fold {fold}: training on folds {','.join(map(str, others))} ({n_train} images, {steps} steps of "
        f"{batch}), validating on {n_valid} images")

    table = pipeline.record_table(valid_paths)
    target = table["target"].to_numpy()
    guard, ckpt = _NanGuard(), _Checkpoints(fdir, best, best_epoch, best_loss, patience=cfg.patience)
    validation = _ExactValidation(valid_paths, cfg, batch, acc.replicas, target)
    # the exact score first (history and checkpoints read it); history before checkpoints: a run killed
    # between the two repeats the epoch and drops its row
    callbacks = [_EpochSeeds(cfg.seed + fold), _EpochLR(lr_at(cfg, acc.replicas) if cfg.lr_per == "epoch" else None),
                 guard, validation,
                 keras.callbacks.CSVLogger(str(rf.history_path(fold)), append=initial_epoch > 0), ckpt]
    deadline = None
    if budget is not None:
        deadline = _Deadline(budget, ckpt, validation, cfg.epochs - 1, len(run_tta_views(cfg)[0]))
        callbacks.append(deadline)
    t0 = time.time()
    for start, stop, frozen in training_phases(cfg, initial_epoch):
        if not frozen and not models.backbone_of(model).trainable and cfg.trainable_backbone:
            log(f"fold {fold}: epoch {start + 1} on, the whole network (head-only warm-up done)")
            compile_phase(model, cfg, acc, steps, frozen=False, done_steps=start * steps)
        model.fit(
            epoch_stream(train_paths, cfg, batch, cfg.seed + fold, range(start, stop), steps),
            steps_per_epoch=steps, epochs=stop, initial_epoch=start,
            callbacks=callbacks, class_weight=_class_weights(cfg, manifest, others), verbose=cfg.verbose,
        )
        if model.stop_training:
            break  # NaN loss, early stopping or the time limit: no later phase
    if deadline is not None and deadline.stopped_after is not None:
        raise TimeLimitReached(fold, deadline.stopped_after + 1)
    if guard.bad_epoch is not None:
        raise KitError(f"fold {fold}: the training loss became NaN in epoch {guard.bad_epoch + 1}; lower lr_max "
                       f"or check the records (finished folds are kept in {run})")
    if not rf.best_model(fold).is_file():
        # every validation metric was NaN (e.g. one class only in the fold): keep the last epoch
        _save_atomic(inference_model(model), rf.best_model(fold))
    best_model = _load(rf.best_model(fold), acc)
    pred = predict_oof(best_model, valid_paths, cfg, batch, acc.replicas)
    metric = cfg.metric
    score = float(metrics.score(metric, target, pred))
    secondary = secondary_scores(cfg, target, pred, table["group"].to_numpy())
    oof = _oof_frame(table, pred, cfg, fold)
    rf.write_fold_oof(fold, oof)
    rf.remove_fold_files(fold, FOLD_TEMPORARY_FILES)
    rf.write_done(fold, {"fold": fold, "metric": metric, "score": score, "secondary": secondary,
                         "best_epoch": ckpt.best_epoch + 1, "best_val_metric": ckpt.best,
                         "epochs": cfg.epochs, "seconds": round(time.time() - t0, 1)})
    log(f"fold {fold}: {metric} {score:.4f} (best epoch {ckpt.best_epoch + 1})")
    return oof, score


def epoch_stream(paths: Sequence[Path], cfg: Config, batch: int, seed: int, epochs: range, steps: int) -> Any:
    """The training batches of ``epochs``, each epoch its own ``steps`` batches of a stream seeded by ``seed`` plus
    the epoch: an epoch sees the same images in the same order whether the fold ran straight through or was
    stopped and resumed before it (one endless stream would continue where the stopped process left it)."""
    streams = [pipeline.train_dataset(paths, cfg, batch=batch, seed=seed + epoch).take(steps) for epoch in epochs]
    out = streams[0]
    for more in streams[1:]:
        out = out.concatenate(more)
    return out


def epoch_steps(cfg: Config, n_train: int, n_positives: int, batch: int) -> int:
    """Optimizer steps per epoch: a pass over the training images, or with ``epoch_positives`` k a balanced
    epoch of k x the positives at the ``oversample`` share, the rest fresh negatives each epoch.

    At 0.1% positives (ISIC 2024: 400 among 400,000) a pass over every negative takes hours and shows each
    positive once; a balanced epoch of 2 x 400 positives at 1:4 is 4,000 images.
    """
    if not cfg.epoch_positives:
        return max(1, n_train // batch)
    if n_positives < 1:
        raise KitError("epoch_positives: the training folds hold no positives")
    return max(1, math.ceil(cfg.epoch_positives * n_positives / cfg.oversample / batch))


def training_phases(cfg: Config, initial_epoch: int = 0) -> list[tuple[int, int, bool]]:
    """``(first epoch, end epoch, backbone frozen)`` for each fit still to run: a head-only warm-up of
    ``cfg.freeze_epochs`` epochs, then the whole network; phases already finished are left out."""
    bounds = [(0, cfg.freeze_epochs, True), (cfg.freeze_epochs, cfg.epochs, False)] if cfg.freeze_epochs else \
        [(0, cfg.epochs, False)]
    return [(max(a, initial_epoch), b, frozen) for a, b, frozen in bounds if b > initial_epoch and b > a]


def _truncate_history(path: Path, keep_epochs: int) -> None:
    if path.is_file() and path.stat().st_size:
        hist = pd.read_csv(path)
        fsutil.write_csv(path, hist[hist["epoch"] < keep_epochs])


# --- the k-fold loop -------------------------------------------------------------------------------


# Settings a resumed run may take anew: where things are, how much is printed, and folds to add to the run.
_RESUME_FREE = ("records", "out", "verbose", "folds")


def resume_mismatch(given: Config, saved: Config, names: Sequence[str] = ()) -> str | None:
    """The first setting of ``given`` (those in ``names``, and any that differs from the default) that differs
    from the saved run's, as one line; None when ``--resume`` can go on with the saved settings."""
    default = Config()
    for name in dict.fromkeys([*names, *(f for f in default.to_dict() if getattr(given, f) != getattr(default, f))]):
        if name in _RESUME_FREE or getattr(given, name, None) is None:
            continue
        mine, theirs = getattr(given, name), getattr(saved, name)
        if mine != theirs:
            return (f"--resume: {name} is {theirs!r} in the run's {CONFIG}, {mine!r} was given; resume with the "
                    f"run's own settings, or train the new ones into another --out")
    return None


def train_folds(cfg: Config, *, resume: bool = False, log: Callable[[str], None] = print,
                given: Sequence[str] = (), deadline: float | None = None, smoke: bool = False) -> FoldResult:
    """Train every requested fold of ``cfg`` into the run folder ``cfg.out``; returns OOF and scores.

    A run folder that already holds a run is refused unless ``resume``; resuming uses the run's saved
    config.toml, skips folds with done.json, restarts an unfinished fold from its last epoch and trains folds
    given now that the run has not trained yet (they join its folds). A setting in ``given`` (the flags the user
    typed), or any non-default one, that differs from the saved run's is refused: a resumed run never silently
    trains something other than what was asked.

    ``deadline`` (a ``time.monotonic()`` time) stops the run at the last epoch boundary from which the next epoch
    (and a fold's end) is predicted to finish before it: the fold's state is saved, the stopped marker written, and the
    result's ``stopped`` says where; ``--resume`` goes on to the same result as a run never stopped.
    """
    run = Path(cfg.out)
    folder = RunFolder(run)
    saved = folder.config_path
    if saved.is_file() and not resume:
        raise KitError(f"{run}: already holds a run ({saved.name}); pass --resume to continue it or choose another --out")
    if resume and saved.is_file():
        # the folder may have moved since: where it is now wins, and so do records given now
        asked = cfg
        cfg = Config.load(saved, out=str(run), **({"records": cfg.records} if cfg.records else {}))
        if not cfg.weights:  # a saved run trained from random weights (before "none" said so): it still does
            cfg = cfg.replace(weights=defaults.NO_WEIGHTS)
        mismatch = resume_mismatch(asked, cfg, given)
        if mismatch:
            raise KitError(mismatch)
        if asked.folds and cfg.folds:  # folds asked now that the run lacks are trained into it
            cfg = cfg.replace(folds=sorted({*cfg.folds, *asked.folds}))
    smoke_note = smoke_config(cfg, _smoke_swaps(cfg.model), smoke)[1]
    acc = strategy.get_strategy(cfg.strategy)
    log(acc.describe())
    if smoke_note:
        log(f"note: {smoke_note}")
    cfg, manifest = resolve(cfg, accelerated=acc.accelerated, log=log, smoke=smoke)
    records.verify_shards(records.list_shards(cfg.records, split="train"))  # a damaged shard fails now, not mid-fold
    check_batch(cfg, manifest, acc.global_batch(cfg.batch))
    for line in advice(cfg):
        log(f"warning: {line}")
    if cfg.pretrained:
        _build(cfg, log=log)  # a weights file that does not fit fails here, before anything is written
    run.mkdir(parents=True, exist_ok=True)
    cfg.save(saved)
    folder.write_records_identity(manifest)

    metric = cfg.metric
    folder.clear_error()  # `kit runs` shows a run with error.txt as stopped by an error
    folder.clear_stopped()
    budget = TimeBudget(deadline) if deadline is not None else None
    done: dict[int, tuple[pd.DataFrame, float]] = {}
    trained: list[float] = []  # seconds of each fold trained in this call: the time left is estimated from them
    stopped: StopPoint | None = None
    for fold in cfg.folds:
        if resume and folder.is_done(fold) and folder.fold_oof_path(fold).is_file():
            done[fold] = (folder.read_fold_oof(fold), folder.fold_score(fold))
            log(f"fold {fold}: finished earlier ({metric} {done[fold][1]:.4f}), skipped")
            continue
        if budget is not None and not budget.fits(len(run_tta_views(cfg)[0]), first=True, then_ends=cfg.epochs <= 1):
            stopped = StopPoint(fold, 0, cfg.epochs)  # not even one epoch of the next fold would fit
            break
        started = time.monotonic()
        try:
            done[fold] = train_fold(cfg, fold, run, manifest, acc, resume=resume, log=log, budget=budget)
        except TimeLimitReached as stop:
            stopped = StopPoint(fold, stop.epochs_done, cfg.epochs)
            break
        except Exception as exc:  # an interrupt (KeyboardInterrupt, a killed kernel) leaves the run resumable
            folder.write_error(fold, exc)
            raise
        trained.append(time.monotonic() - started)
        _write_summary(run, cfg, metric, done)
        log(progress_line(len(done), len(cfg.folds), trained))
    if stopped is not None:
        RunFolder(run).write_stopped(stopped._asdict())
        if done:
            _write_summary(run, cfg, metric, done)
        return FoldResult(pd.DataFrame(), [done[k][1] for k in sorted(done)], sorted(done), metric, run, stopped)
    oof, scores = _write_summary(run, cfg, metric, done)
    _plots(run, cfg, oof, sorted(done), acc.replicas)
    return FoldResult(oof, scores, sorted(done), metric, run)


def check_batch(cfg: Config, manifest: records.Manifest, batch: int) -> None:
    """KitError when one step's ``batch`` (all replicas) is more than a fold's training images: such a run would
    work for minutes on batches the data cannot fill before its first line of progress."""
    for fold in cfg.folds:
        n = sum(manifest.folds[k].images for k in manifest.fold_ids if k != fold)
        if batch > n:
            per_replica = max(1, n * cfg.batch // batch)
            raise KitError(f"batch: {batch} images per step is more than the {n} training images of fold {fold}; "
                           f"pass --batch {per_replica} or less")


def progress_line(finished: int, planned: int, seconds: Sequence[float]) -> str:
    """``progress: 2 of 5 folds finished; this session 1 min 24 s, about 2 min 6 s left``."""
    left = planned - finished
    text = f"progress: {finished} of {planned} folds finished; this session {_duration(sum(seconds))}"
    if left and seconds:
        text += f", about {_duration(left * sum(seconds) / len(seconds))} left"
    return text


def _duration(seconds: float) -> str:
    """``1 h 02 min``, ``3 min 05 s`` or ``42 s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


def advice(cfg: Config) -> list[str]:
    """Plain-words warnings about a resolved config that will train a poor model (printed, never fatal)."""
    lines = []
    if not cfg.pretrained and backbones.is_imagenet_family(cfg.model):
        lines.append(f"{cfg.model} is an ImageNet backbone trained from random weights (--weights none), so it needs "
                     f"far more data and epochs; pass --weights (see `kit models`), or leave --model and --weights "
                     f"out for kit's choice")
    if cfg.freeze_epochs and not cfg.pretrained:
        lines.append(f"freeze_epochs {cfg.freeze_epochs}: the backbone starts from random weights, so freezing it "
                     "trains the head on random features; the warm-up is meant for --weights")
    note = run_tta_views(cfg)[1]
    if note:
        lines.append(note.replace("tta: ", "tta (out of fold): ", 1))
    return lines


def secondary_scores(cfg: Config, target: np.ndarray, pred: np.ndarray, groups: np.ndarray) -> dict[str, float | None]:
    """The competition's secondary metrics on one fold (None where a fold cannot be scored, e.g. no positives)."""
    out = {}
    for name in cfg.secondary_metrics:
        try:
            out[name] = float(metrics.get(name).score(target, pred, groups))
        except KitError:
            out[name] = None
    return out


def _write_summary(run: Path, cfg: Config, metric: str, done: dict) -> tuple[pd.DataFrame, list[float]]:
    folder = RunFolder(run)
    oof = pd.concat([done[k][0] for k in sorted(done)], ignore_index=True)
    cv = cv_summary(metric, oof, cfg.classes, {k: done[k][1] for k in done},
                    {k: folder.fold_secondary(k) for k in done}, cfg.secondary_metrics, run_tta_views(cfg)[0])
    folder.write_oof(oof)
    folder.write_cv(cv)
    return oof, [done[k][1] for k in sorted(done)] + [cv["overall"]]


def _roc_plot(plt: Any, out: Path, cfg: Config, oof: pd.DataFrame, folds: list[int]) -> None:
    from sklearn.metrics import roc_curve

    y = oof["target"].to_numpy()
    fig, ax = plt.subplots(figsize=(5, 5))
    for k in folds:
        part = oof[oof["fold"] == k]
        if part["target"].nunique() == 2:
            fpr, tpr, _ = roc_curve(part["target"], part["pred"])
            ax.plot(fpr, tpr, lw=1, label=f"fold {k}")
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, oof["pred"])
        ax.plot(fpr, tpr, "k", lw=2, label="all folds")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (out of fold)")
    ax.legend(fontsize="small")
    fsutil.write_figure(fig, out / "roc.png")


def _confusion_plot(plt: Any, out: Path, cfg: Config, oof: pd.DataFrame, folds: list[int]) -> None:
    from sklearn.metrics import confusion_matrix

    y = oof["target"].to_numpy()
    cm = confusion_matrix(y, _pred_matrix(oof, cfg).argmax(1), labels=range(cfg.n_classes)).astype(float)
    cm /= np.maximum(cm.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * cfg.n_classes, 1 + 0.6 * cfg.n_classes))
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(cfg.n_classes), cfg.classes, rotation=90)
    ax.set_yticks(range(cfg.n_classes), cfg.classes)
    for i in range(cfg.n_classes):
        for j in range(cfg.n_classes):
            ax.text(j, i, f"{cm[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title="confusion (out of fold, row-normalised)")
    fsutil.write_figure(fig, out / "confusion.png")


# the task's own out-of-fold plot: ROC for a binary run, the confusion matrix for a multi-class one
_CLASS_PLOTS: dict[str, Callable[..., None]] = {"binary": _roc_plot, "multiclass": _confusion_plot}


def _plots(run: Path, cfg: Config, oof: pd.DataFrame, folds: list[int], replicas: int) -> None:
    plt = plots.pyplot()

    out = RunFolder(run).plots
    out.mkdir(exist_ok=True)
    histories = RunFolder(run).histories(folds)
    fig = plots.learning_curves(histories, cfg.metric)
    fsutil.write_figure(fig, out / "learning_curves.png")

    _CLASS_PLOTS[cfg.task.name](plt, out, cfg, oof, folds)

    schedule.plot_schedule(out / "lr.png", epochs=max(cfg.epochs, 1), **_schedule_kwargs(cfg, replicas),
                           freeze_epochs=cfg.freeze_epochs, backbone_lr_mult=cfg.backbone_lr_mult)


def format_stopped(result: FoldResult, resume_command: str) -> str:
    """The lines ``kit train`` prints for a run a time limit stopped: its finished folds, then one line saying where it
    stopped and the command that resumes it."""
    stop = result.stopped
    if stop is None:
        return format_result(result)
    lines = [f"fold {k}: {result.metric} {s:.4f}" for k, s in zip(result.folds, result.scores)]
    where = (f"fold {stop.fold} after epoch {stop.epochs_done} of {stop.epochs}" if stop.epochs_done
             else f"the start of fold {stop.fold}")
    lines.append(f"stopped before the time limit at {where} (state saved in {result.run}); resume with: "
                 f"{resume_command}")
    return "\n".join(lines)


def format_result(result: FoldResult) -> str:
    """Lines for the terminal: one per fold, the overall score and the run folder."""
    folds = np.asarray(result.scores[:-1], float)
    lines = [f"fold {k}: {result.metric} {s:.4f}" for k, s in zip(result.folds, result.scores)]
    spread = f" +- {folds.std(ddof=1):.4f}" if len(folds) > 1 else ""
    lines.append(f"folds: {result.metric} {folds.mean():.4f}{spread} (mean +- std over folds)")
    lines.append(f"overall (out of fold, pooled): {result.metric} {result.scores[-1]:.4f}")
    lines.append(f"run: {result.run}")
    return "\n".join(lines)
