"""TTA prediction with every fold model of a run: a submission aligned to the sample, and its sidecar.

Reads the run folder ``kit train`` writes (through kit.runs.folder.RunFolder: the config, the best model of
each finished fold, the CV summary) and a test records folder. Each fold model sees every TTA view of
every test image; views are averaged per fold, then folds are averaged (equal weights or given
ones). The views are the ones the run's augmentation made the model invariant to
(``kit.training.pipeline.tta_views``): the exact views among identity, flips, quarter turns and transposes
that training showed, then seeded random draws of the run's own augmentation (view indices 8, 9, ...,
each seeded by its index and the image id). A run trained without augmentation gets the identity only.

The CSV copies ``sample_submission.csv`` (ids, order, column names) through
``kit.ensemble.submission.make_submission``; without a sample it is ``id_name,target`` or ``id_name,<classes>``.
``NAME.json`` beside ``NAME.csv`` records the run, its CV score, the TTA views, the folds and the time.
When the test records are labelled (the folder layouts), the submission is scored and the score printed;
when their manifest lists test images byte-identical to training images (``train_duplicates``), it
is scored a second time without them, since a model that saw an image in training is not being tested
on it.

TensorFlow and Keras are imported inside the functions that need them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from kit.data import competitions, precheck
from kit.core import fsutil
from kit.training.config import Config
from kit.core.errors import KitError
from kit.runs.folder import BEST, DONE, RunFolder
from kit.core.task import task_for

if TYPE_CHECKING:  # kit.data.records is imported where it is used, as elsewhere in this module
    from kit.data import records


@dataclass
class RunInfo:
    """What prediction needs from a run folder."""

    run: Path
    config: "Config"
    folds: list[int]
    models: list[Path]
    cv: dict[str, Any] | None

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        classes = [str(c) for c in self.config.classes]
        n = int(self.config.n_classes or len(classes) or 2)
        return classes or [str(i) for i in range(n)]

    @property
    def n_classes(self) -> int:
        """Number of classes (2 for binary)."""
        return int(self.config.n_classes or len(self.classes))

    @property
    def id_name(self) -> str:
        """The id column the competition's submission uses."""
        return str(self.config.id_name or "id")


@dataclass
class PredictReport:
    """What ``predict_run`` wrote and measured."""

    out: str
    sidecar: str
    run: str
    rows: int
    columns: list[str]
    folds: list[int]
    fold_weights: list[float]
    views: list[str | int]
    seconds: float
    tta_note: str | None = None  # set when the run supports fewer views than were asked
    cv: dict[str, Any] | None = None
    test_scores: dict[str, float] = field(default_factory=dict)
    # Test records byte-identical to training images (None: the records' manifest does not say).
    train_duplicates: int | None = None
    # test_scores over the other records; None when there are no duplicates or what is left cannot be scored.
    test_scores_without_duplicates: dict[str, float] | None = None


def load_run(run: str | os.PathLike) -> RunInfo:
    """Read a run folder: its config, the best model of every finished fold, and its CV summary."""
    rf = RunFolder(run).check_trained()
    config = Config.load(rf.config_path)
    folds, models = [], []
    for fold in rf.finished_folds():  # an unfinished fold's best model may be from a run that stopped
        model = rf.best_model(fold)
        if not model.is_file():
            raise KitError(f"{model}: missing, but {rf.done_path(fold)} says the fold finished")
        folds.append(fold)
        models.append(model)
    if not models:
        raise KitError(f"{run}: no finished folds (no fold*/{DONE} with {BEST}); train the run first")
    return RunInfo(rf.path, config, folds, models, rf.read_cv())


def _fold_weights(weights: Sequence[float] | None, folds: list[int]) -> np.ndarray:
    from kit.ensemble.blend import normalized_weights

    return normalized_weights(weights, len(folds), option="--fold-weights",
                              what=f"finished folds ({', '.join(map(str, folds))})")


def _model_inputs(model: Any) -> set[str] | None:
    inputs = getattr(model, "input", None)
    return set(inputs) if isinstance(inputs, dict) else None


def _all_folds_step(models: Sequence[Any]) -> Callable[[dict[str, Any]], list[Any]]:
    """batch -> every fold model's predictions; each model gets only the inputs it declares (a model without
    metadata ignores ``meta``).

    Keras models on TensorFlow run as one compiled function per batch, all folds together: one call instead
    of one ``predict_on_batch`` per fold, whose per-call overhead (about 0.8 ms) is paid 500,000 / 64 times
    per fold on ISIC 2024's rerun. Other backends and objects go through ``predict_on_batch``."""
    wanted = [_model_inputs(m) for m in models]

    def feed(batch: dict[str, Any], f: int) -> dict[str, Any]:
        return batch if wanted[f] is None else {k: v for k, v in batch.items() if k in wanted[f]}

    import keras

    if keras.backend.backend() != "tensorflow" or not all(isinstance(m, keras.Model) for m in models):
        return lambda batch: [m.predict_on_batch(feed(batch, f)) for f, m in enumerate(models)]
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(batch: dict[str, Any]) -> list[Any]:
        return [m(feed(batch, f), training=False) for f, m in enumerate(models)]

    return step


def _pad(batch: dict[str, Any], rows: int) -> dict[str, np.ndarray]:
    """Each input of ``batch`` padded with zeros to ``rows`` rows."""
    out = {}
    for key, value in batch.items():
        value = np.asarray(value)
        pad = np.zeros((rows - len(value),) + value.shape[1:], value.dtype)
        out[key] = np.concatenate([value, pad])
    return out


def predict_views(
    models: Sequence[Any],
    dataset_for_view: Callable[[str | int], Iterable[dict[str, Any]]],
    views: Sequence[str | int],
    n_images: int,
    *,
    fold_weights: np.ndarray | None = None,
    progress: bool | None = None,
) -> np.ndarray:
    """Probabilities ``[n_images, K]``: views averaged per fold model, then folds weighted.

    ``dataset_for_view(view)`` yields batches of model inputs (dicts) in the fixed record order; a
    model is given only the inputs it declares (a model without metadata ignores ``meta``).
    """
    from tqdm.auto import tqdm

    w = np.full(len(models), 1.0 / len(models)) if fold_weights is None else np.asarray(fold_weights)
    step = _all_folds_step(models)
    total: np.ndarray | None = None
    disable = None if progress is None else not progress  # None: a bar on terminals only
    bar = tqdm(total=n_images * len(views), desc="predict", unit="img", disable=disable)
    try:
        for view in views:
            outs: list[list[np.ndarray]] = [[] for _ in models]
            seen = 0
            full = 0
            for batch in dataset_for_view(view):
                size = len(next(iter(batch.values())))
                full = full or size
                if size < full:
                    batch = _pad(batch, full)  # one input shape: no retracing (or XLA recompiling) at the end
                for f, pred in enumerate(step(batch)):
                    pred = np.asarray(pred, np.float64)
                    outs[f].append(pred.reshape(len(pred), -1)[:size])
                seen += size
                bar.update(size)
            if seen != n_images:
                raise KitError(f"tta view {view!r}: the dataset gave {seen} images, the records hold {n_images}")
            for f in range(len(models)):
                term = w[f] * np.concatenate(outs[f]) / len(views)
                total = term if total is None else total + term
    finally:
        bar.close()
    assert total is not None
    return total


def score_test(metric: str, y: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """The run's metric and accuracy on labelled test records."""
    from kit.core import metrics

    scores = {metric: metrics.score(metric, y, probs)}
    scores.setdefault("accuracy", metrics.score("accuracy", y, probs))
    return scores


def train_duplicate_ids(manifest: "records.Manifest") -> set[str] | None:
    """Ids of test records byte-identical to training images, from the manifest (None when not checked)."""
    if manifest.train_duplicates is None:
        return None
    return {d.image_name for d in manifest.train_duplicates}


def score_without(metric: str, y: np.ndarray, probs: np.ndarray, ids: Sequence[str],
                  drop: set[str]) -> dict[str, float] | None:
    """``score_test`` over the rows whose id is not in ``drop``; None if none is dropped or the rest cannot be scored."""
    keep = np.array([i not in drop for i in ids], bool)
    if keep.all():
        return None
    try:
        return score_test(metric, y[keep], probs[keep])
    except KitError:
        # No row left, or one class only: a score that does not exist is reported as such, not as a failure.
        return None


def load_fold_model(path: str | os.PathLike) -> Any:
    """A fold's saved model; KitError naming the file when it is truncated or not a .keras file."""
    import zipfile

    import keras

    import kit.training.models  # noqa: F401  (registers kit's custom layers, so load_model can rebuild them)

    # Keras calls a truncated .keras "File not found"; a .keras file is a zip, whose directory sits at its end
    if not zipfile.is_zipfile(path):
        raise KitError(f"{path}: damaged model file (not a complete .keras zip); train that fold again")
    try:
        return keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as exc:
        raise KitError(f"{path}: cannot be loaded ({' '.join(str(exc).split())[:200]})") from None


def test_images(records_dir: str | os.PathLike, info: RunInfo) -> "tuple[Any, records.Manifest]":
    """The test images to predict and their manifest: test records, or a competition download's test split
    read straight from its files (no records written: ISIC 2024's hidden ~500,000 images on the rerun)."""
    from kit.data import records

    folder = Path(records_dir)
    if folder.is_dir() and not precheck.holds_records(folder):
        train_records = Path(info.config.records)
        try:
            train_manifest = records.read_manifest(train_records, "train")
        except KitError:
            raise KitError(f"{records_dir}: a download needs the run's train records ({train_records}) for their "
                           "image size and metadata codes; write test records with `kit records --test` instead") from None
        cfg = info.config
        run_columns = [*cfg.meta_numeric, *cfg.meta_categorical] if cfg.meta else []
        stream = records.stream_test_split(folder, train_manifest, columns=run_columns)
        return stream, stream.manifest
    manifest = records.read_manifest(records_dir, "test")  # a public SIIM folder holds train and test
    if manifest.split != "test":
        raise KitError(
            f"{records_dir}: holds {manifest.split} records; kit predict reads test records (`kit records --test`)"
        )
    paths = records.list_shards(records_dir, split="test")
    if not paths:
        raise KitError(f"{records_dir}: no .tfrec shards")
    records.verify_shards(paths)
    paths = records.as_images(paths)
    size, trained = manifest.image_size, info.config.size
    if size and trained and int(size) != int(trained):
        raise KitError(f"{records_dir}: images are {size} px, the run trained on {trained} px; write the test "
                       f"records with `kit records --test --size {trained}`")
    return paths, manifest


def predict_run(
    run: str | os.PathLike,
    records_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    sample_submission: str | os.PathLike | None = None,
    tta: int = 1,
    fold_weights: Sequence[float] | None = None,
    batch: int = 64,
    progress: bool | None = None,
) -> PredictReport:
    """Predict the test records with every finished fold of ``run`` and write the submission + sidecar."""
    t0 = time.perf_counter()
    out = Path(out)
    if out.suffix.lower() != ".csv":
        raise KitError(f"{out}: the submission must be a .csv file")
    sample = sample_submission
    if sample is not None and Path(sample).exists() and out.exists() and os.path.samefile(out, sample):
        raise KitError(f"{out}: is the sample submission; write the submission to another file")
    if tta < 1:
        raise KitError(f"--tta: must be at least 1, got {tta}")
    if batch < 1:
        raise KitError(f"--batch: must be at least 1, got {batch}")
    info = load_run(run)
    weights = _fold_weights(fold_weights, info.folds)
    sample_frame = None
    if sample is not None:
        from kit.ensemble.submission import read_submission

        sample_frame = read_submission(sample)

    paths, manifest = test_images(records_dir, info)
    classes = list(manifest.classes)
    if classes and len(classes) != len(info.classes):
        raise KitError(
            f"{records_dir}: {len(classes)} classes ({', '.join(classes)}) but the run has {len(info.classes)}"
        )
    from kit.training import pipeline

    # the ids in the order predict_dataset yields predictions (the same reader, the same order)
    table = pipeline.record_table(paths)
    ids, targets = table["image_name"].tolist(), table["target"].to_numpy(np.int64)
    import kit.training.models  # noqa: F401  (registers kit's custom layers, so load_model can rebuild them)
    models = [load_fold_model(p) for p in info.models]
    cfg = info.config
    views, note = pipeline.tta_views(tta, pipeline.resolve_augment(cfg.augment, cfg.augment_options))
    try:
        probs = predict_views(
            models, lambda view: pipeline.predict_dataset(paths, cfg, view, batch), views, len(ids),
            fold_weights=weights, progress=progress,
        )
    except Exception:  # an image a stream could not read reaches here inside TensorFlow's own error text
        if getattr(paths, "failure", None) is not None:
            raise paths.failure from None
        raise
    return _write(info, ids, targets, probs, out, sample_frame, views, weights, t0, str(records_dir),
                  train_duplicate_ids(manifest), note)


def _write(
    info: RunInfo,
    ids: list[str],
    targets: np.ndarray,
    probs: np.ndarray,
    out: Path,
    sample_frame: Any,
    views: list[str | int],
    weights: np.ndarray,
    t0: float,
    records_dir: str,
    train_dups: set[str] | None = None,
    tta_note: str | None = None,
) -> PredictReport:
    """Align to the sample, write the CSV and its JSON sidecar, score labelled test records (also without
    the images duplicated in train)."""
    from kit.ensemble.submission import make_submission, write_submission

    n_classes = info.n_classes
    task_for(n_classes).check_outputs(probs.shape[1], str(info.models[0]))
    frame = make_submission(ids, probs, info.classes, sample_frame, info.id_name)
    scores: dict[str, float] = {}
    clean: dict[str, float] | None = None
    n_dups = None if train_dups is None else sum(i in train_dups for i in ids)
    if len(targets) and (targets >= 0).all():
        metric = (info.cv or {}).get("metric") or competitions.default_metric(n_classes)
        scores = score_test(metric, targets, probs)
        if n_dups:
            clean = score_without(metric, targets, probs, ids, train_dups)
    write_submission(frame, out)
    sidecar = out.with_suffix(".json")
    report = PredictReport(
        out=str(out), sidecar=str(sidecar), run=str(info.run), rows=len(frame), columns=list(frame.columns),
        folds=info.folds, fold_weights=[float(x) for x in weights], views=list(views),
        seconds=time.perf_counter() - t0, cv=info.cv, test_scores=scores, train_duplicates=n_dups,
        test_scores_without_duplicates=clean, tta_note=tta_note,
    )
    cv = info.cv or {}
    fsutil.write_json(sidecar, {
        "submission": str(out),
        "run": str(info.run),
        "records": records_dir,
        "model": info.config.model,
        "cv": {"metric": cv.get("metric"), "overall": cv.get("overall"), "folds": cv.get("folds")},
        # names of exact views, indices of random ones; note: fewer views than asked, and why
        "tta": {"n": len(views), "views": list(views), "augment": info.config.augment or "default", "note": tta_note},
        "folds": info.folds,
        "fold_weights": report.fold_weights,
        "rows": report.rows,
        "columns": report.columns,
        "test_scores": scores or None,
        "train_duplicates": n_dups,  # test records byte-identical to training images; null: not checked
        "test_scores_without_train_duplicates": clean,
        "seconds": round(report.seconds, 3),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    return report


@dataclass
class TimeEstimate:
    """How long predicting a whole test split will take, from a timed sample of it."""

    images: int  # in the whole test split
    sampled: int
    seconds_per_image: float
    seconds: float  # estimated for the whole split

    def fits(self, budget_s: float) -> bool:
        """Whether the estimate fits in ``budget_s`` seconds."""
        return self.seconds <= budget_s

    def describe(self, budget_s: float) -> str:
        """One line: the estimate against the budget."""
        verdict = "fits" if self.fits(budget_s) else "does NOT fit"
        return (f"predicting {self.images:,} images: {self.seconds_per_image * 1000:.2f} ms each over a timed sample "
                f"of {self.sampled}, about {self.seconds / 3600:.2f} h; {verdict} in the {budget_s / 3600:.2f} h left")


def estimate_time(run: str | os.PathLike, test: str | os.PathLike, *, sample: int = 256, tta: int = 1,
                  batch: int = 64) -> TimeEstimate:
    """Time the run's fold models on the first ``sample`` test images (after one warm-up batch, which pays the
    compile) and scale to the whole test split: a code competition's rerun must fit its time limit."""
    from kit.training import pipeline
    from kit.data import records

    info = load_run(run)
    images, _ = test_images(test, info)
    total = images.n_images
    images = images.head(sample + batch)  # a stream prepares only these; shards are read as far as taken
    import kit.training.models  # noqa: F401  (registers kit's custom layers)

    models = [load_fold_model(p) for p in info.models]
    cfg = info.config
    views, _ = pipeline.tta_views(tta, pipeline.resolve_augment(cfg.augment, cfg.augment_options))

    def batches(skip: int, take: int) -> Callable[[str | int], Any]:
        return lambda view: pipeline.predict_dataset(images, cfg, view, batch).skip(skip).take(take)

    warm = min(batch, total)  # the first batch pays for tracing and compiling: not part of the rate
    predict_views(models, batches(0, 1), ["identity"], warm, progress=False)
    n = min(-(-sample // batch) * batch, total - warm)
    if n <= 0:
        n, skip = warm, 0  # a tiny test split: time the warm batch again
    else:
        skip = 1
    start = time.perf_counter()
    predict_views(models, batches(skip, -(-n // batch)), views, n, progress=False)
    per_image = (time.perf_counter() - start) / n
    return TimeEstimate(total, n, per_image, per_image * total)


def _cv_text(cv: dict[str, Any]) -> str:
    """``0.9120 pooled, folds 0.9301 +- 0.0100`` (the fold figures only where the CV summary has them)."""
    text = f"{float(cv['overall']):.4f} pooled"
    if cv.get("fold_mean") is not None:
        text += f", folds {float(cv['fold_mean']):.4f} +- {float(cv.get('fold_std') or 0.0):.4f}"
    return text


def format_report(report: PredictReport) -> str:
    """Lines ``kit predict`` prints."""
    views = ", ".join(str(v) for v in report.views)
    lines = [f"note: {report.tta_note}"] if report.tta_note else []
    lines += [
        f"{report.out}: {report.rows:,} rows, columns {','.join(report.columns)}",
        f"  run {report.run}, folds {','.join(map(str, report.folds))} "
        f"(weights {', '.join(f'{w:.3f}' for w in report.fold_weights)}), {len(report.views)} TTA views ({views})",
    ]
    if report.cv and report.cv.get("overall") is not None:
        lines.append(f"  CV {report.cv.get('metric')} {_cv_text(report.cv)}")
    if report.test_scores:
        line = "  test (labelled): " + ", ".join(f"{k} {v:.4f}" for k, v in report.test_scores.items())
        n = report.train_duplicates
        if n:
            without = f"without the {n} image{'s' if n != 1 else ''} duplicated in train"
            clean = report.test_scores_without_duplicates
            line += (f"; {without}: " + ", ".join(f"{k} {v:.4f}" for k, v in clean.items()) if clean
                     else f"; no score {without} (too few images or one class left)")
        lines.append(line)
    elif report.train_duplicates:
        lines.append(f"  {report.train_duplicates} test image(s) byte-identical to training images "
                     "(listed in the records' manifest.json)")
    lines.append(f"  sidecar {report.sidecar}; {report.seconds:.1f} s")
    return "\n".join(lines)
