"""``kit report``: one self-contained HTML page about a run, and the leaderboard shake-up estimate.

The page (``RUN/report.html`` by default) embeds every image as base64 PNG and loads nothing from the
network, so it opens from a Kaggle kernel's output or a laptop alike. It opens with the scores and the
curves; what the run was and what it read come last. Its sections (``<section id=...>``), in order:

    cv            per-fold scores, their mean and spread, the pooled out-of-fold score (the run's CV summary)
    curves        learning curves per fold (loss and the metric, training and validation)
    lr            the learning rate each epoch ran at (each fold's history)
    binary        ROC and precision-recall per fold and pooled, the calibration curve   (binary runs)
    multiclass    the confusion matrix and per-class recall                            (multi-class runs)
    mistakes      the worst out-of-fold mistakes as thumbnails read from the records
    patients      the per-patient (group) view, where the records hold groups
    gradcam       Grad-CAM heatmaps over a sample of correct and wrong predictions
    shakeup       bootstrap draws of the public and private leaderboards from the OOF predictions
    importance    a stack's feature importances (when the folder holds them)
    records       the records the run trained on (manifest: source, size, classes, images per fold and class)
    config        the resolved config

``kit report`` writes nothing else into the run but ``RUN/report.json`` (the shake-up and where its
leaderboard sizes came from); the CV summary and every other file of the run stay as training left them, and an
``--out`` naming one of them is refused.

The HTML is built with f-strings and ``html.escape``: the page is one fixed layout of a dozen tables
and images, which a template engine (jinja2) would not make shorter, and kit would carry one more
dependency into every offline kernel for it. TensorFlow and Keras are imported only where the records
are read and Grad-CAM runs; matplotlib draws the plots.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import math
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd

from kit import competitions, fsutil, metrics, plots, runfolder
from kit.errors import KitError
from kit.runfolder import RunFolder
from kit.task import Task, task_of_columns, task_of_width

if TYPE_CHECKING:  # kit.records is imported where records are read
    from kit import records

REPORT_JSON = runfolder.REPORT_JSON  # kit report's own numbers, in the run folder
# Bounds of the shake-up's work: the largest image leaderboard kit knows (ISIC 2024 scores about 500,000
# hidden images) fits, and 10,000 draws pin the 5th and 95th percentiles far below the 4th decimal.
MAX_LEADERBOARD = 1_000_000
MAX_DRAWS = 10_000

# --- leaderboard sizes ---------------------------------------------------------------------------------


def check_shakeup_settings(public: int | None, private: int | None, draws: int) -> None:
    """Refuse leaderboard sizes or a number of draws outside kit's bounds, naming the flag."""
    if public is not None or private is not None:
        if public is None or private is None:
            raise KitError("--public/--private: give both leaderboard sizes (or neither)")
        for flag, value, low in (("--public", public, 0), ("--private", private, 1)):
            if not low <= value <= MAX_LEADERBOARD:
                raise KitError(f"{flag}: expects {low} to {MAX_LEADERBOARD:,} images, got {value:,}")
    if not 2 <= draws <= MAX_DRAWS:
        raise KitError(f"--draws: expects 2 to {MAX_DRAWS:,}, got {draws:,}")


def _test_records_count(folder: str | os.PathLike) -> int:
    """The images of a test records folder (`kit records --test`), from its manifest."""
    from kit import records

    manifest = records.read_manifest(folder, "test")
    return manifest.count or sum(f.images for f in manifest.folds.values())


def _download_test_count(manifest: "records.Manifest | None") -> int | None:
    """The images of the test split of the download the records came from (their manifest's source), or None
    where the download is gone, has no test split or kit cannot read one."""
    if manifest is None or not manifest.source or not Path(manifest.source).exists():
        return None
    from kit import sources

    try:
        return len(sources.load_source(manifest.source, layout=manifest.layout or "auto", test=True).table)
    except (KitError, OSError):
        return None


def leaderboard_sizes(manifest: "records.Manifest | None", public: int | None = None,
                      private: int | None = None, test_records: str | os.PathLike | None = None
                      ) -> tuple[int, int, str] | None:
    """(public, private, where the sizes come from), from the first that says: the given sizes; the records'
    competition's row of the registry (kit.competitions); the images of ``test_records``; the test split of
    the records' download. A test split is one leaderboard (its public share is unknown): (0, its size).
    None when nothing says."""
    if public is not None or private is not None:
        check_shakeup_settings(public, private, 200)
        return int(public), int(private), "given (--public/--private)"
    comp = competitions.of_manifest(manifest) if manifest is not None else None
    if comp is not None and comp.leaderboard:
        return comp.leaderboard[0], comp.leaderboard[1], comp.title
    one = "one leaderboard: the public share is unknown; pass --public N --private N to split it"
    if test_records is not None:
        count = _test_records_count(test_records)
        return 0, count, f"the {count:,} images of the test records {test_records}; {one}"
    count = _download_test_count(manifest)
    if count:
        return 0, count, f"the {count:,} images of the test split of {manifest.source}; {one}"
    return None


NO_SIZES = ("no shake-up estimate: no leaderboard size is known for these records (no competition of kit's "
            "registry, no test split found); pass --public N --private N or --test-records DIR")


def _score_or_none(metric: str, y: np.ndarray, p: np.ndarray) -> float | None:
    try:
        return float(metrics.score(metric, y, p))
    except KitError:  # one class only in a small draw: that draw has no score
        return None


def _summary(values: np.ndarray) -> dict[str, float]:
    if not len(values):
        return {"mean": float("nan"), "std": float("nan"), "p05": float("nan"), "p95": float("nan")}
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "p05": float(np.percentile(values, 5)), "p95": float(np.percentile(values, 95))}


def shakeup(y: np.ndarray, pred: np.ndarray, metric: str, public: int, private: int, *, draws: int = 200,
            seed: int = 0) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Bootstrap ``draws`` leaderboards of ``public`` + ``private`` rows from the OOF predictions.

    Each draw resamples the out-of-fold rows with replacement, the first ``public`` as the public
    leaderboard and the next ``private`` as the private one. Returns the spread (mean, std, 5th and 95th
    percentiles) of the metric on each and of private minus public, as report.json stores it, and the draws
    themselves. With no public leaderboard (``public`` 0) only the private figures are given.
    """
    check_shakeup_settings(public, private, draws)
    y, pred = np.asarray(y), np.asarray(pred, float)
    rng = np.random.default_rng(seed)
    pub, priv, diff, skipped = [], [], [], 0
    for _ in range(draws):
        idx = rng.integers(0, len(y), public + private)
        b = _score_or_none(metric, y[idx[public:]], pred[idx[public:]])
        a = _score_or_none(metric, y[idx[:public]], pred[idx[:public]]) if public else None
        if b is None or public and a is None:
            skipped += 1
            continue
        priv.append(b)
        if public:
            pub.append(a)
            diff.append(b - a)
    out: dict[str, Any] = {"metric": metric, "public_size": int(public), "private_size": int(private),
                           "draws": int(draws), "skipped_draws": skipped, "seed": int(seed)}
    out["private"] = _summary(np.asarray(priv))
    if public:
        out["public"] = _summary(np.asarray(pub))
        out["difference"] = _summary(np.asarray(diff))  # private minus public
    return out, {"public": np.asarray(pub), "private": np.asarray(priv), "difference": np.asarray(diff)}


# --- reading a run --------------------------------------------------------------------------------


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
    from kit import runs

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
    """Read the config, CV summary and out-of-fold table (kit.runfolder.RunFolder) and the records' manifest of ``run`` (no TensorFlow, unless the run
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
        from kit import records

        # the public SIIM-ISIC TFRecords carry no manifest: kit.records builds one from their shard names
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

    from kit import pipeline, records

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


# --- Grad-CAM -------------------------------------------------------------------------------------

# keras-hub's transformer blocks (ViTEncoderBlock, DINOV2Layer, TransformerEncoder): the last one's input
# tokens are what Grad-CAM weighs in a vision transformer
_BLOCK_SUFFIXES = ("Block", "Layer", "TransformerEncoder")


def _reduces_a_map(op: Any) -> bool:
    """Whether a graph operation takes one 4-D feature map and gives something of lower rank (pooling, flatten)."""
    try:
        x, y = op.input, op.output
    except (AttributeError, ValueError):  # an input layer, or a layer called more than once
        return False
    one = not isinstance(x, (list, tuple, dict)) and not isinstance(y, (list, tuple, dict))
    return one and len(x.shape) == 4 and len(y.shape) < 4


def _transformer_blocks(backbone: Any) -> list[Any]:
    """The transformer blocks of the keras-hub model inside ``backbone`` (any order), or []."""
    import keras

    hubs = [layer for layer in backbone.layers
            if isinstance(layer, keras.Model) and type(layer).__module__.startswith("keras_hub.")]
    blocks = []
    for hub in hubs:
        blocks += [layer for layer in hub._flatten_layers(include_self=False)
                   if type(layer).__module__.startswith("keras_hub.") and not isinstance(layer, keras.Model)
                   and type(layer).__name__.endswith(_BLOCK_SUFFIXES)]
    return blocks


def _patch_size(backbone: Any) -> int | None:
    for layer in backbone._flatten_layers():
        size = getattr(layer, "patch_size", None)
        if size:
            return int(size[0] if isinstance(size, (tuple, list)) else size)
    return None


@contextlib.contextmanager
def _inputs_swapped(layers: Sequence[Any], swap: Callable[[Any, Any], Any]) -> Iterator[None]:
    """While inside, each of ``layers`` computes on ``swap(layer, x)`` instead of its first input ``x``.

    Grad-CAM needs the model's output as a function of one inner tensor. Swapping a layer's input in its
    ``call`` reaches that tensor in any graph (EfficientNet's skip connections, ConvNeXt's residual adds, a
    metadata branch joined after the backbone) and inside layers that are not graphs (a keras-hub
    transformer's blocks), on TensorFlow and JAX alike.
    """
    for layer in layers:
        original = layer.call

        def call(*args: Any, _original: Any = original, _layer: Any = layer, **kwargs: Any) -> Any:
            return _original(swap(_layer, args[0]), *args[1:], **kwargs)

        object.__setattr__(layer, "call", call)  # past Keras' attribute tracking: a plain instance attribute
    try:
        yield
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")


def _value_and_grad(fn: Any, x: Any) -> tuple[Any, Any]:
    """``fn(x)`` and its gradient with respect to ``x`` on the running Keras backend (the one non-ops step)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        x = tf.convert_to_tensor(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        return y, tape.gradient(y, x)
    if backend == "jax":
        import jax

        return jax.value_and_grad(fn)(x)
    raise KitError(f"Grad-CAM: the {backend} backend is not supported (tensorflow or jax)")


def _model_inputs(model: Any, images: np.ndarray, meta: np.ndarray | None) -> dict[str, np.ndarray]:
    """The model's inputs: the images, and for a metadata model ``meta`` (default zeros: every column missing,
    which the pipeline feeds as the column mean for a number and no code for a category)."""
    inputs = {"image": np.asarray(images, "float32")}
    wanted = model.input if isinstance(model.input, dict) else {}
    if "meta" in wanted:
        width = int(wanted["meta"].shape[-1])
        inputs["meta"] = (np.zeros((len(images), width), "float32") if meta is None
                          else np.asarray(meta, "float32").reshape(len(images), width))
    return inputs


def gradcam(model: Any, images: np.ndarray, classes: Sequence[int] | None = None,
            meta: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps [N, H, W] in [0, 1] of ``images`` [N, H, W, 3] (pixels 0..255), and the model's outputs.

    The class explained is ``classes[i]``, by default the predicted one (binary: positive when p > 0.5). The
    map weighed is the backbone's last feature map (the input of the layer that pools or flattens it), or in a
    keras-hub vision transformer the patch tokens entering its last block, laid on their grid. A metadata model
    gets ``meta`` [N, M] beside the images (see ``_model_inputs``): the heatmap explains its image branch
    with the metadata held fixed.
    """
    from keras import ops

    from kit import models

    try:
        backbone = models.backbone_of(model)
    except KitError:
        backbone = model  # a model without a nested backbone: its own graph
    maps = [op for op in backbone.operations if _reduces_a_map(op)]
    candidates = maps[-1:] or _transformer_blocks(backbone)
    if not candidates:
        raise KitError(f"{model.name}: no feature map or transformer block to take Grad-CAM from")
    inputs = _model_inputs(model, images, meta)
    seen: list[tuple[Any, Any]] = []
    with _inputs_swapped(candidates, lambda layer, x: seen.append((layer, x)) or x):
        out = ops.convert_to_numpy(ops.cast(model(inputs, training=False), "float32"))
    target, fmap = seen[-1]  # the last block called is the last block
    task = task_of_width(out.shape[-1])
    if classes is None:
        classes = task.labels(task.squeeze(out))
    weight = ops.convert_to_tensor(task.output_weights(np.asarray(classes, int)))

    def score(a: Any) -> Any:
        with _inputs_swapped([target], lambda layer, x: a):
            return ops.sum(ops.cast(model(inputs, training=False), "float32") * weight)

    _, grads = _value_and_grad(score, fmap)
    fmap = ops.convert_to_numpy(ops.cast(fmap, "float32"))
    grads = ops.convert_to_numpy(ops.cast(grads, "float32"))
    if fmap.ndim == 3:  # tokens [N, T, D]: the patch tokens after the class (and register) tokens, on their grid
        patch = _patch_size(backbone)
        side = images.shape[1] // patch if patch else math.isqrt(fmap.shape[1] - 1)
        first = fmap.shape[1] - side * side
        if side < 1 or first < 0:
            raise KitError(f"{model.name}: {fmap.shape[1]} tokens do not hold a {side}x{side} patch grid")
        fmap, grads = (t[:, first:].reshape(len(t), side, side, -1) for t in (fmap, grads))
    weights = grads.mean(axis=(1, 2), keepdims=True)
    cam = np.maximum((fmap * weights).sum(axis=-1, keepdims=True), 0.0)
    cam = cam / (cam.max(axis=(1, 2), keepdims=True) + 1e-8)
    cam = ops.image.resize(cam, (images.shape[1], images.shape[2]), interpolation="bilinear")
    return np.clip(ops.convert_to_numpy(cam)[..., 0], 0.0, 1.0), out


# --- drawing --------------------------------------------------------------------------------------


def _fig_png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plots.pyplot().close(fig)
    return buf.getvalue()


def _array_png(img: np.ndarray, scale: int = 1) -> bytes:
    from PIL import Image

    im = Image.fromarray(np.asarray(img, np.uint8))
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _overlay(img: np.ndarray, heat: np.ndarray) -> np.ndarray:
    """The image with the heatmap laid over it (jet colours, 45% opaque)."""
    from matplotlib import colormaps

    colour = colormaps["jet"](heat)[..., :3] * 255.0
    return np.clip(0.55 * img.astype(float) + 0.45 * colour, 0, 255).astype(np.uint8)


def _img(png: bytes, alt: str, cls: str = "") -> str:
    data = base64.b64encode(png).decode()
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _learning_curves(histories: Mapping[int, pd.DataFrame], metric: str) -> bytes:
    return _fig_png(plots.learning_curves(histories, metric))


def _lr_plot(histories: Mapping[int, pd.DataFrame]) -> bytes:
    plt = plots.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for k, h in histories.items():
        ax.plot(h["epoch"] + 1, h["lr"], marker="o", ms=3, label=f"fold {k}")
    ax.set(title="learning rate per epoch", xlabel="epoch", ylabel="lr", yscale="log")
    ax.legend(fontsize="small")
    return _fig_png(fig)


def _binary_plots(oof: pd.DataFrame) -> tuple[bytes, bytes, bytes]:
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    plt = plots.pyplot()
    parts = [(f"fold {k}", oof[oof["fold"] == k], 1.0) for k in sorted(oof["fold"].unique())]
    parts.append(("pooled", oof, 2.2))
    roc, ax_roc = plt.subplots(figsize=(4.6, 4.6))
    pr, ax_pr = plt.subplots(figsize=(4.6, 4.6))
    for label, part, lw in parts:
        y, p = part["target"].to_numpy(int), part["pred"].to_numpy(float)
        if len(np.unique(y)) < 2:
            continue
        colour = "k" if label == "pooled" else None
        fpr, tpr, _ = roc_curve(y, p)
        ax_roc.plot(fpr, tpr, lw=lw, color=colour, label=f"{label} AUC {roc_auc_score(y, p):.4f}")
        prec, rec, _ = precision_recall_curve(y, p)
        ax_pr.plot(rec, prec, lw=lw, color=colour, label=f"{label} AP {average_precision_score(y, p):.4f}")
    ax_roc.plot([0, 1], [0, 1], ":", color="grey")
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (out of fold)")
    ax_pr.axhline(oof["target"].mean(), ls=":", color="grey", label="base rate")
    ax_pr.set(xlabel="recall", ylabel="precision", title="precision-recall (out of fold)")
    ax_roc.legend(fontsize="small")
    ax_pr.legend(fontsize="small")
    cal, ax = plt.subplots(figsize=(4.6, 4.6))
    frac, mean = calibration_curve(oof["target"], oof["pred"].clip(0, 1), n_bins=10, strategy="uniform")
    ax.plot(mean, frac, "o-", label="pooled out of fold")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="fraction positive", title="calibration (10 bins)")
    ax.legend(fontsize="small")
    return _fig_png(roc), _fig_png(pr), _fig_png(cal)


def _confusion_plot(cm: np.ndarray, classes: Sequence[str]) -> bytes:
    plt = plots.pyplot()
    n = len(classes)
    norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    side = max(4.5, 1.5 + 0.65 * n)
    fig, ax = plt.subplots(figsize=(side, side))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(cm[i, j])}\n{norm[i, j]:.2f}", ha="center", va="center", fontsize=8 if n > 6 else 10,
                    color="white" if norm[i, j] > 0.6 else "black")
    ax.set(xlabel="predicted", ylabel="true", title="confusion (counts, row share)")
    return _fig_png(fig)


def _shakeup_plot(samples: Mapping[str, np.ndarray], metric: str) -> bytes:
    plt = plots.pyplot()
    panels = [k for k in ("public", "private", "difference") if len(samples.get(k, []))]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    for ax, key in zip(axes[0], panels):
        values = samples[key]
        ax.hist(values, bins=30 if np.ptp(values) > 1e-12 else 1, color="#4477aa")  # every draw equal: one bar
        ax.set(title=f"{key} {metric}" if key != "difference" else f"private - public {metric}")
    return _fig_png(fig)


def _importance_plot(table: pd.DataFrame) -> bytes:
    plt = plots.pyplot()
    top = table.head(25)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.25 * len(top) + 1))
    ax.barh(top.iloc[:, 0].astype(str), top.iloc[:, 1].astype(float))
    ax.set(title="feature importance", xlabel=str(table.columns[1]))
    return _fig_png(fig)


# --- HTML pieces ----------------------------------------------------------------------------------


def _num(x: Any, digits: int = 4) -> str:
    """A table cell holding a number: shown rounded, exact in ``data-value``."""
    if x is None or isinstance(x, float) and not math.isfinite(x):
        return '<td class="n">-</td>'
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return f'<td class="n" data-value="{int(x)}">{int(x)}</td>'
    return f'<td class="n" data-value="{float(x)!r}">{float(x):.{digits}f}</td>'


def _cell(x: Any) -> str:
    if isinstance(x, str) and x.startswith("<td"):
        return x
    if isinstance(x, (float, int, np.floating, np.integer)) and not isinstance(x, bool):
        return _num(x.item() if hasattr(x, "item") else x)
    return f"<td>{html.escape(str(x))}</td>"


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1150px;color:#222;
padding:0 16px}h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;margin:8px 0;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px}
th{background:#f3f3f3}td.n{text-align:right;font-variant-numeric:tabular-nums}.note{color:#666;font-size:.9em}
pre{background:#f7f7f7;padding:8px;font-size:.85em;max-height:420px;overflow:auto}
.grid{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #ddd;padding:6px;font-size:.8em;width:150px}
.card img{width:144px;height:144px;image-rendering:pixelated}.plots img{max-width:100%;margin:4px}
.key{font-size:1.1em}.bad{color:#b00}
"""


# --- the page -------------------------------------------------------------------------------------


@dataclass
class ReportResult:
    """What ``write_report`` wrote, and the numbers it computed."""

    path: Path
    sections: list[str]
    shakeup: dict | None
    notes: list[str]
    seconds: float
    no_shakeup: str | None = None  # why there is no shake-up estimate, when there is none


def _histories(run: Path) -> dict[int, pd.DataFrame]:
    out = {}
    folder = RunFolder(run)
    for fold in folder.fold_dirs():
        path = folder.history_path(fold)
        if path.is_file() and path.stat().st_size:
            out[fold] = pd.read_csv(path)
    return out


def _config_section(data: RunData) -> str:
    if not data.config_text:
        return _section("config", "Config", _note(f"no {runfolder.CONFIG} in the run folder"))
    return _section("config", f"Config (resolved, RUN/{runfolder.CONFIG})", f"<pre>{html.escape(data.config_text)}</pre>")


def _records_section(data: RunData) -> str:
    m = data.manifest
    where = data.records or data.config.get("records", "")
    if m is None:
        return _section("records", "Records", _note(f"records {where}: not found; the run trained on them"))
    info = [("folder", str(where)), ("source", m.source), ("layout", m.layout), ("image size", m.image_size),
            ("classes", ", ".join(m.classes)), ("images", m.count),
            ("fold seed", "" if m.fold_seed is None else m.fold_seed)]
    folds = [(k, m.folds[k]) for k in m.fold_ids]
    per_class = any(f.class_counts is not None for _, f in folds)
    if per_class:  # one column per class, in the records' class order
        labels = list(dict.fromkeys([*m.classes, *(c for _, f in folds for c in (f.class_counts or {}))]))
        counts = [[(f.class_counts or {}).get(c, "") for c in labels] for _, f in folds]
    else:
        labels = ["positives"]
        counts = [["" if f.positives is None else f.positives] for _, f in folds]
    rows = [[k, f.images, "" if f.groups is None else f.groups, *c] for (k, f), c in zip(folds, counts)]
    body = (_table(["", ""], info, "kv")
            + _table(["fold", "images", "groups", *labels], rows, "folds"))
    return _section("records", "Records it trained on", body)


def _score(cv: Mapping[str, Any], key: str) -> float | None:
    """A score of the CV summary, None where it is null (kit writes NaN as null) or absent."""
    value = cv.get(key)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _cv_section(data: RunData) -> str:
    cv = data.cv
    folds = cv.get("folds", {})
    rows = [[f"fold {k}", _num(v)] for k, v in folds.items()]
    rows.append(["mean of folds", _num(_score(cv, "fold_mean"))])
    rows.append(["std over folds", _num(_score(cv, "fold_std"))])
    rows.append(["pooled out of fold", _num(_score(cv, "overall"))])
    tta = ", ".join(map(str, cv.get("tta_views", []))) or "-"
    body = (f'<p class="key">metric: <b>{html.escape(data.metric)}</b>; out-of-fold TTA views: {html.escape(tta)}</p>'
            + _table(["", data.metric], rows, "cv")
            + _note("The mean of folds is what one fold model is worth; pooled scores every out-of-fold "
                    "prediction together, and folds whose models scale their probabilities differently can pull "
                    "it below every fold's own score."))
    scored = {k: float(v) for k, v in folds.items() if v is not None and math.isfinite(v)}
    if len(scored) > 1:
        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(5, 2.8))
        ax.bar([f"fold {k}" for k in scored], list(scored.values()), color="#4477aa")
        overall = _score(cv, "overall")
        if overall is not None:
            ax.axhline(overall, color="k", ls="--", label="pooled")
            ax.legend(fontsize="small")
        low = min([*scored.values(), *([overall] if overall is not None else [])])
        ax.set(ylim=(max(0.0, low - 0.1), 1.0), title="how the folds disagree")
        body += f'<div class="plots">{_img(_fig_png(fig), "per-fold scores")}</div>'
    return _section("cv", "Cross-validation", body)


def _curves_sections(data: RunData) -> list[str]:
    histories = _histories(data.run)
    if not histories:
        msg = _note(f"no fold*/{runfolder.HISTORY} in the run folder")
        return [_section("curves", "Learning curves", msg), _section("lr", "Learning rate", msg)]
    curves = _section("curves", "Learning curves",
                      f'<div class="plots">{_img(_learning_curves(histories, data.metric), "learning curves")}</div>')
    if all("lr" in h for h in histories.values()):
        lr = f'<div class="plots">{_img(_lr_plot(histories), "learning rate")}</div>'
    else:
        lr = _note(f"{runfolder.HISTORY} has no lr column")
    return [curves, _section("lr", "Learning rate", lr)]


def _class_sections(data: RunData) -> str:
    return _CLASS_SECTIONS[data.task.name](data)


def _binary_section(data: RunData) -> str:
    roc, pr, cal = _binary_plots(data.oof)
    body = (f'<div class="plots">{_img(roc, "ROC")}{_img(pr, "precision-recall")}{_img(cal, "calibration")}</div>'
            + _note("Thick black: every out-of-fold prediction pooled; thin: one fold each."))
    return _section("binary", "ROC, precision-recall and calibration", body)


def _multiclass_section(data: RunData) -> str:
    from sklearn.metrics import confusion_matrix

    y, p = data.oof["target"].to_numpy(int), data.pred_matrix()
    cm = confusion_matrix(y, p.argmax(1), labels=range(len(data.classes))).astype(float)
    table = metrics.per_class(y, p, data.classes)
    rows = [[r["class"], int(r["support"]), _num(r["sensitivity"]), _num(r["precision"]), _num(r["auc"])]
            for _, r in table.iterrows()]
    body = (f'<div class="plots">{_img(_confusion_plot(cm, data.classes), "confusion matrix")}</div>'
            + _table(["class", "images", "recall", "precision", "one-vs-rest AUC"], rows, "recall"))
    return _section("multiclass", "Confusion matrix and per-class recall", body)


_CLASS_SECTIONS: dict[str, Callable[[RunData], str]] = {"binary": _binary_section, "multiclass": _multiclass_section}


def _label(data: RunData, k: int) -> str:
    return data.classes[k] if 0 <= k < len(data.classes) else str(k)


def _pred_text(data: RunData, row: pd.Series) -> str:
    return _PRED_TEXT[data.task.name](data, row)


# a mistake's prediction in words: the probability (binary), or the predicted class and its probability
_PRED_TEXT: dict[str, Callable[[RunData, pd.Series], str]] = {
    "binary": lambda data, row: f"p={row['pred']:.3f}",
    "multiclass": lambda data, row: (f"{_label(data, int(row['predicted']))} "
                                     f"({row[f'pred_{_label(data, int(row.predicted))}']:.2f})"),
}


def _mistakes_section(data: RunData, worst: pd.DataFrame, images: Mapping[str, np.ndarray]) -> str:
    cards = []
    for _, r in worst.iterrows():
        img = images.get(r["image_name"])
        pic = _img(_array_png(img), r["image_name"]) if img is not None else "<div>(image not read)</div>"
        cards.append(f'<div class="card" data-id="{html.escape(r["image_name"])}">{pic}<br><b>{html.escape(r["image_name"])}'
                     f'</b><br>true {html.escape(_label(data, int(r["target"])))}, {html.escape(_pred_text(data, r))}'
                     f'<br>fold {int(r["fold"])}, error {r["error"]:.3f}</div>')
    pred_cols = data.pred_columns()
    rows = [[r["image_name"], int(r["target"]), *[_num(r[c]) for c in pred_cols], _num(r["error"]), int(r["fold"])]
            for _, r in worst.iterrows()]
    body = (_note("Largest error first: |target - pred| for a binary run, 1 - the probability of the true class "
                  "otherwise. Each image was predicted by the fold model that never trained on it.")
            + f'<div class="grid">{"".join(cards)}</div>'
            + _table(["image_name", "target", *pred_cols, "error", "fold"], rows, "mistakes"))
    if not images and data.records is None:
        body += _note("thumbnails left out: the records were not found")
    return _section("mistakes", f"The {len(worst)} worst out-of-fold mistakes", body)


def _patients_section(data: RunData, groups: Mapping[str, str], worst: pd.DataFrame) -> str:
    if not groups:
        return _section("patients", "Per patient", _note("no groups read (records not found)"))
    df = data.oof[["image_name", "target"]].copy()
    df["group"] = df["image_name"].map(groups)
    df["error"] = errors_of(data)
    df["pred"] = data.task.confidence(data.pred_matrix())
    if df["group"].isna().all() or (df["group"] == df["image_name"]).all() or df["group"].nunique() == len(df):
        return _section("patients", "Per patient", _note("the records hold no groups (one image per group)"))
    g = df.groupby("group").agg(images=("image_name", "size"), positives=("target", "sum"),
                                mean_error=("error", "mean"), max_pred=("pred", "max"))
    text = (f"{len(g)} groups, {g['images'].mean():.1f} images each on average. ")
    binary = data.task.name == "binary"  # positives and a patient-level AUC mean something for a binary run
    if binary and g["positives"].gt(0).nunique() == 2:
        from sklearn.metrics import roc_auc_score

        text += (f"Patient-level AUC (a patient's highest prediction against whether any of their images is "
                 f"positive): {roc_auc_score(g['positives'] > 0, g['max_pred']):.4f}. ")
    shown = g.loc[[x for x in dict.fromkeys(df.set_index("image_name").loc[worst["image_name"], "group"]) if x in g.index]]
    rows = [[name, int(r["images"]), int(r["positives"]) if binary else "-", _num(r["mean_error"]),
             _num(r["max_pred"])] for name, r in shown.iterrows()]
    head = ["group", "images", "positives", "mean error", "max pred" if binary else "max confidence"]
    body = _note(text + "The groups of the worst mistakes:") + _table(head, rows, "patients")
    return _section("patients", "Per patient (group)", body)


def _gradcam_section(data: RunData, worst: pd.DataFrame, read: RecordsRead, n: int,
                     seed: int) -> tuple[str, list[str]]:
    notes: list[str] = []
    images = read.images
    folder = RunFolder(data.run)
    if not any(folder.best_model(k).is_file() for k in folder.fold_dirs()):
        return _section("gradcam", "Grad-CAM", _note(f"left out: no fold*/{runfolder.BEST} (a stack has no image "
                                                      "model)")), notes
    if not images:
        return _section("gradcam", "Grad-CAM", _note("left out: the records were not found")), notes
    df = _with_predicted(data)
    wrong = [i for i, t, p in zip(worst["image_name"], worst["target"], worst["predicted"])
             if t != p and i in images][:n]
    right = [i for i in _correct_sample(df, n, seed)["image_name"] if i in images]
    import keras  # noqa: F401  before kit.models: the backend is settled by kit.runtime

    from kit import models  # noqa: F401  registers kit's layers, so a fold's best model loads

    cards = {"correct": [], "wrong": []}
    fold_of = dict(zip(df["image_name"], df["fold"].astype(int)))
    by_fold: dict[int, list[tuple[str, str]]] = {}
    for kind, ids in (("wrong", wrong), ("correct", right)):
        for i in ids:
            by_fold.setdefault(fold_of[i], []).append((kind, i))
    for fold, items in sorted(by_fold.items()):
        path = folder.best_model(fold)
        if not path.is_file():
            notes.append(f"{path}: missing; Grad-CAM left out for fold {fold}")
            continue
        model = keras.saving.load_model(path, compile=False)
        meta = np.stack([read.meta[i] for _, i in items]) if read.meta else None
        try:
            # the predicted class: a fixed positive class leaves the many confident negatives all blue (seen)
            heat, _ = gradcam(model, np.stack([images[i] for _, i in items]), meta=meta)
        except KitError as exc:
            return _section("gradcam", "Grad-CAM", _note(f"left out: {exc}")), notes
        for (kind, i), h in zip(items, heat):
            row = df[df["image_name"] == i].iloc[0]
            cards[kind].append(
                f'<div class="card" data-id="{html.escape(i)}">{_img(_array_png(images[i]), i)}'
                f'{_img(_array_png(_overlay(images[i], h)), "Grad-CAM " + i)}<br><b>{html.escape(i)}</b><br>'
                f'true {html.escape(_label(data, int(row["target"])))}, {html.escape(_pred_text(data, row))}</div>')
    text = ("Where each fold model found the evidence for the class it predicted: Grad-CAM on the backbone's last "
            "feature map (a vision transformer: the patch tokens entering its last block, on their grid; red: most "
            "weight), for the worst mistakes and for a random sample of correct predictions of every class.")
    if read.meta:
        text += " The model also reads metadata: each image was given its own, as in training, and held fixed."
    body = _note(text)
    for kind in ("wrong", "correct"):
        body += f"<h3>{kind}</h3>" + (f'<div class="grid {kind}">{"".join(cards[kind])}</div>' if cards[kind]
                                      else _note(f"no {kind} out-of-fold predictions"))
    return _section("gradcam", "Grad-CAM", body), notes


def _shakeup_section(data: RunData, shake: dict, samples: Mapping[str, np.ndarray], source: str) -> str:
    m = data.metric
    rows = []
    for key, label in (("public", "public leaderboard"), ("private", "private leaderboard"),
                       ("difference", "private - public")):
        if key in shake:
            s = shake[key]
            rows.append([label, _num(s["mean"]), _num(s["std"]), _num(s["p05"]), _num(s["p95"])])
    lead = (f"The out-of-fold predictions drawn {shake['draws']} times (with replacement) into a public "
            f"leaderboard of {shake['public_size']:,} and a private one of {shake['private_size']:,} images "
            f"({source}). ")
    if "difference" in shake:
        d = shake["difference"]
        lead += (f"Nine draws in ten move {m} from public to private by between {d['p05']:+.4f} and {d['p95']:+.4f}: "
                 f"a gap between two submissions smaller than that is noise, not a better model.")
    if shake["skipped_draws"]:
        lead += f" {shake['skipped_draws']} draws held one class only and were skipped."
    body = (_note(lead) + _table(["", "mean", "std", "5%", "95%"], rows, "shakeup")
            + f'<div class="plots">{_img(_shakeup_plot(samples, m), "shake-up")}</div>'
            + _note(f"The same numbers are in {REPORT_JSON} under \"shakeup\". The draws assume the test set looks "
                    "like the training set; a shifted test set moves the leaderboard further."))
    return _section("shakeup", "Shake-up estimate: how far the leaderboard may move", body)


def _importance_table(run: Path) -> tuple[pd.DataFrame, str] | None:
    """(feature, importance..., where from): kit stack's features.csv (importance_<model kind> columns, shown
    with their mean), else the first ``*importance*.csv`` of two columns (name, value)."""
    features = run / "features.csv"
    if features.is_file():
        table = pd.read_csv(features)
        kinds = [c for c in table.columns if c.startswith("importance_")]
        if "feature" in table.columns and kinds:
            table = table.assign(importance=table[kinds].mean(axis=1))
            keep = ["feature", "importance", *kinds] + [c for c in ("source",) if c in table.columns]
            return table[keep].sort_values("importance", ascending=False, kind="mergesort"), features.name
    for path in sorted(run.glob("*importance*.csv")):
        table = pd.read_csv(path)
        if table.shape[1] >= 2:
            table = table.iloc[:, :2]
            return table.sort_values(table.columns[1], ascending=False, kind="mergesort"), path.name
    return None


def _importance_section(run: Path, cv: Mapping[str, Any]) -> str | None:
    found = _importance_table(run)
    if found is None:
        return None
    table, source = found
    head = [str(c) for c in table.columns]
    rows = [[r.iloc[0], *[_num(float(v)) if isinstance(v, (int, float, np.number)) else v for v in r.iloc[1:]]]
            for _, r in table.head(40).iterrows()]
    body = (_note(f"From {source}, most important first (the 40 first of {len(table)}).")
            + f'<div class="plots">{_img(_importance_plot(table), "importance")}</div>'
            + _table(head, rows, "importance"))
    kinds = cv.get("models")
    if isinstance(kinds, dict) and kinds:
        body += _table(["model kind", "pooled", "blend weight"],
                       [[k, _num(v.get("overall")), _num(v.get("weight"))] for k, v in kinds.items()], "kinds")
    return _section("importance", "Feature importance (stack)", body)


_PAGE_START = '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>kit report: '


def _is_report_page(path: Path) -> bool:
    """Whether ``path`` is a page ``kit report`` wrote (what an --out may replace)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(_PAGE_START)) == _PAGE_START.encode()
    except OSError:
        return False


def check_out(out: Path, run: Path) -> None:
    """Refuse an --out that would replace anything but a page kit report wrote: a file of the run (see
    kit.runfolder.RunFolder) or any other file; or a folder."""
    if out.is_dir():
        raise KitError(f"{out}: is a folder; --out names the HTML file to write")
    own = out.resolve() == RunFolder(run).report_json.resolve()
    if not own and (not out.exists() or _is_report_page(out)):
        return
    if own or run.resolve() in out.resolve().parents:
        raise KitError(f"{out}: is a file of the run {run}, not its report; write the page to another --out "
                       "(default RUN/report.html)")
    raise KitError(f"{out}: exists and is not a page kit report wrote; write the page to another --out")


def _test_records_of(data: RunData, given: str | os.PathLike | None) -> tuple[str | None, str | None]:
    """(test records folder, note): ``given`` (--test-records) as it is, else the run config's test_records
    (a stack's) when that folder is still there."""
    if given is not None:
        return str(given), None
    named = data.config.get("test_records")
    if not isinstance(named, str) or not named:
        return None, None
    if not (Path(named) / "manifest.json").is_file():
        return None, f"{named}: test records named by {runfolder.CONFIG} not found, so their size was not used"
    return named, None


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 records: str | os.PathLike | None = None, public: int | None = None, private: int | None = None,
                 draws: int = 200, mistakes: int = 16, gradcam_per_kind: int = 6, with_gradcam: bool = True,
                 seed: int = 0, test_records: str | os.PathLike | None = None) -> ReportResult:
    """Write the HTML report of ``run`` (default RUN/report.html) and its numbers to RUN/report.json.

    The leaderboard sizes of the shake-up: see ``leaderboard_sizes`` (``test_records`` defaults to a stack's
    config's test_records)."""
    t0 = time.perf_counter()
    if mistakes < 1:
        raise KitError(f"--mistakes: expects at least 1, got {mistakes}")
    check_shakeup_settings(public, private, draws)
    run = Path(run)
    out = Path(out) if out else run / "report.html"
    if run.is_dir():
        check_out(out, run)
    data = load_run_data(run, records)
    notes = list(data.notes)
    tests, note = _test_records_of(data, test_records)
    notes += [note] if note else []
    sizes = leaderboard_sizes(data.manifest, public, private, tests)
    name = data.run.name
    model = data.config.get("model", "stack")
    title = f"kit report: {name}"
    fold_mean, overall = _score(data.cv, "fold_mean"), _score(data.cv, "overall")
    head = (f"<h1>{html.escape(title)}</h1><p class=\"key\">{html.escape(str(model))}"
            f"{', ' + str(data.config.get('size')) + ' px' if data.config.get('size') else ''}"
            f"{', ' + str(data.config.get('epochs')) + ' epochs' if data.config.get('epochs') else ''}; "
            f"{html.escape(data.metric)} {_text_score(fold_mean)} (mean of folds), {_text_score(overall)} pooled; "
            f"folder {html.escape(str(data.run))}; written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>")
    sections = [_cv_section(data), *_curves_sections(data)]
    shake, no_shakeup = None, None
    if data.oof is not None:
        sections.append(_class_sections(data))
        worst = worst_mistakes(data, mistakes)
        read = RecordsRead({}, {}, {})
        if data.records is not None:
            sample = _correct_sample(_with_predicted(data), gradcam_per_kind, seed)
            want = set(worst["image_name"]) | set(sample["image_name"])
            read = read_records(data.records, data.oof["fold"].unique(), want, data.config)
        sections.append(_mistakes_section(data, worst, read.images))
        sections.append(_patients_section(data, read.groups, worst))
        if with_gradcam:
            section, more = _gradcam_section(data, worst, read, gradcam_per_kind, seed)
            sections.append(section)
            notes += more
        else:
            sections.append(_section("gradcam", "Grad-CAM", _note("left out (--no-gradcam)")))
        if sizes is None:
            no_shakeup = NO_SIZES
            sections.append(_section("shakeup", "Shake-up estimate", _note(NO_SIZES)))
        else:
            pub, priv, source = sizes
            shake, samples = shakeup(data.oof["target"].to_numpy(int), data.pred_matrix(), data.metric, pub, priv,
                                     draws=draws, seed=seed)
            shake["source"] = source
            sections.append(_shakeup_section(data, shake, samples, source))
    importance = _importance_section(data.run, data.cv)
    if importance:
        sections.append(importance)
    sections += [_records_section(data), _config_section(data)]
    notes_html = "".join(_note(n) for n in notes)
    page = (f"{_PAGE_START}{html.escape(name)}</title>"
            f"<style>{_CSS}</style></head><body>{head}{notes_html}{''.join(sections)}</body></html>\n")
    fsutil.write_text(out, page)
    fsutil.write_json(RunFolder(data.run).report_json, {
        "page": str(out), "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "shakeup": shake,
        "no_shakeup": no_shakeup})
    ids = [s.split('"', 2)[1] for s in sections]
    return ReportResult(out, ids, shake, notes, time.perf_counter() - t0, no_shakeup)


def _text_score(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def format_result(result: ReportResult) -> str:
    """Lines ``kit report`` prints: the shake-up in one line, notes, and the page written."""
    lines = []
    s = result.shakeup
    if s and "difference" in s:
        d = s["difference"]
        lines.append(f"shake-up ({s['public_size']:,} public / {s['private_size']:,} private images, {s['draws']} draws): "
                     f"private - public {s['metric']} {d['mean']:+.4f} +- {d['std']:.4f} (90% within "
                     f"{d['p05']:+.4f} .. {d['p95']:+.4f})")
    elif s:
        p = s["private"]
        lines.append(f"spread of {s['metric']} over {s['private_size']:,} test images: +- {p['std']:.4f}")
    elif result.no_shakeup:
        lines.append(result.no_shakeup)
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"report: {result.path} ({result.seconds:.1f} s)")
    return "\n".join(lines)
