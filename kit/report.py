"""``kit report``: one self-contained HTML page about a run, and the leaderboard shake-up estimate.

The page (``RUN/report.html`` by default) embeds every image as base64 PNG and loads nothing from the
network, so it opens from a Kaggle kernel's output or a laptop alike. Its sections (``<section id=...>``):

    config        the resolved config.toml
    records       the records the run trained on (manifest: source, size, classes, per-fold counts)
    cv            per-fold scores, their mean and spread, the pooled out-of-fold score (cv.json)
    curves        learning curves per fold (loss and the metric, training and validation)
    lr            the learning rate each epoch ran at (history.csv)
    binary        ROC and precision-recall per fold and pooled, the calibration curve   (binary runs)
    multiclass    the confusion matrix and per-class recall                            (multi-class runs)
    mistakes      the worst out-of-fold mistakes as thumbnails read from the records
    patients      the per-patient (group) view, where the records hold groups
    gradcam       Grad-CAM heatmaps over a sample of correct and wrong predictions
    shakeup       bootstrap draws of the public and private leaderboards from the OOF predictions
    importance    a stack's feature importances (when the folder holds them)

The shake-up numbers are also written into ``RUN/cv.json`` under ``"shakeup"`` (other keys untouched).

The HTML is built with f-strings and ``html.escape``: the page is one fixed layout of a dozen tables
and images, which a template engine (jinja2) would not make shorter, and kit would carry one more
dependency into every offline kernel for it. TensorFlow and Keras are imported only where the records
are read and Grad-CAM runs; matplotlib draws the plots.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from kit import competitions, fsutil, metrics, plots
from kit.errors import KitError

if TYPE_CHECKING:  # kit.records is imported where records are read
    from kit import records

# --- leaderboard sizes (the registry can absorb this table) ---------------------------------------

# Public and private leaderboard sizes in images, keyed by the records' layout (manifest.json "layout").
# Sources: each competition's Kaggle data and leaderboard pages ("calculated with approximately N% of the
# test data"): SIIM-ISIC Melanoma 2020 scores 10,982 test images, 30% public; Histopathologic Cancer
# Detection scores 57,458 test patches, about half public. HAM10000 has no Kaggle leaderboard: its
# figure is the ISIC 2018 task 3 test set (1,512 images, one leaderboard). ISIC 2024 (a hidden ~500k-image
# rerun) is left out until its public share is checked; it takes the default like any unknown layout.
DEFAULT_LEADERBOARD = "siim"  # the registry row whose sizes stand in for a download of unknown origin


def leaderboard_sizes(manifest: "records.Manifest | None", public: int | None = None,
                      private: int | None = None) -> tuple[int, int, str]:
    """(public, private, where the sizes come from): given sizes win, then the records' competition's row of
    the registry (kit.competitions), then SIIM-ISIC's."""
    if public is not None or private is not None:
        if public is None or private is None:
            raise KitError("--public/--private: give both leaderboard sizes (or neither)")
        if public < 0 or private < 1:
            raise KitError(f"--public/--private: expects public >= 0 and private >= 1, got {public} and {private}")
        return int(public), int(private), "given (--public/--private)"
    comp = competitions.of_manifest(manifest) if manifest is not None else None
    if comp is not None and comp.leaderboard:
        return comp.leaderboard[0], comp.leaderboard[1], comp.title
    default = competitions.get(DEFAULT_LEADERBOARD)
    what = comp.title if comp else f"layout {(manifest.layout if manifest is not None else '') or 'unknown'}"
    return (default.leaderboard[0], default.leaderboard[1],
            f"{default.title} (default for {what}; pass --public N --private N)")


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
    percentiles) of the metric on each and of private minus public, as cv.json stores it, and the draws
    themselves. With no public leaderboard (``public`` 0) only the private figures are given.
    """
    if draws < 2:
        raise KitError(f"--draws: expects at least 2, got {draws}")
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
    def binary(self) -> bool:
        """Whether the run is binary (one ``pred`` column)."""
        return self.oof is not None and "pred" in self.oof.columns

    def pred_matrix(self) -> np.ndarray:
        """OOF predictions: [N] binary or [N, K] in the order of ``classes``."""
        if self.binary:
            return self.oof["pred"].to_numpy(float)
        return self.oof[[f"pred_{c}" for c in self.classes]].to_numpy(float)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise KitError(f"{path}: not valid JSON ({exc})") from None


def load_run_data(run: str | os.PathLike, records: str | os.PathLike | None = None) -> RunData:
    """Read config.toml, cv.json, oof.csv and the records' manifest.json of ``run`` (no TensorFlow, unless the run
    trained on public SIIM-ISIC TFRecords: their image size is read from their first record)."""
    run = Path(run)
    if not run.is_dir():
        raise KitError(f"{run}: no such run folder")
    cfg_path, cv_path, oof_path = run / "config.toml", run / "cv.json", run / "oof.csv"
    if not cv_path.is_file():
        raise KitError(f"{cv_path}: missing; a report needs at least one finished fold (train the run first)")
    config_text = cfg_path.read_text() if cfg_path.is_file() else ""
    try:
        config = tomllib.loads(config_text)
    except tomllib.TOMLDecodeError as exc:
        raise KitError(f"{cfg_path}: not valid TOML ({exc})") from None
    cv = _read_json(cv_path)
    oof = pd.read_csv(oof_path, dtype={"image_name": str}) if oof_path.is_file() else None
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
    y = data.oof["target"].to_numpy(int)
    p = data.pred_matrix()
    if data.binary:
        return np.abs(y - p)
    return 1.0 - p[np.arange(len(y)), y]


def _with_predicted(data: RunData) -> pd.DataFrame:
    """The OOF table with each row's ``error`` and ``predicted`` class (p > 0.5, or the arg-max)."""
    df = data.oof.copy()
    df["error"] = errors_of(data)
    p = data.pred_matrix()
    df["predicted"] = (p > 0.5).astype(int) if data.binary else p.argmax(1)
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


def read_records(folder: Path, folds: Iterable[int], want: set[str]) -> tuple[dict[str, str], dict[str, np.ndarray]]:
    """One pass over the records of ``folds``: every id's group, and the decoded image of each id in ``want``."""
    from PIL import Image

    from kit import records

    paths = records.list_shards(folder, sorted(set(int(f) for f in folds)), split="train")
    groups, images = {}, {}
    ds = records.load_dataset(paths, decode=False).map(lambda ex: (ex["image_name"], ex["group"], ex["image"]))
    for name, group, data in ds.as_numpy_iterator():
        name = name.decode()
        groups[name] = group.decode()
        if name in want:
            images[name] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    return groups, images


# --- Grad-CAM -------------------------------------------------------------------------------------


def _feature_chain(model: Any) -> tuple[list, Any, list]:
    """Split a kit model into (layers before the backbone, image -> last 4-D feature map, layers after it).

    kit's models are ``image -> [preprocess] -> backbone (a nested Model) -> [dropout] -> head``; any
    graph may lie before the feature map (EfficientNet's skip connections), but what follows it must be a
    chain of single-input layers (pooling, flatten, dense), which every backbone kit registers has.
    """
    import keras

    if "meta" in [getattr(t, "name", "").split(":")[0] for t in model.inputs] or len(model.inputs) > 1:
        raise KitError(f"{model.name}: takes metadata beside the image; Grad-CAM covers image-only models")
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(nested) == 1:
        backbone = nested[0]
        at = model.layers.index(backbone)
        pre = [layer for layer in model.layers[:at] if not isinstance(layer, keras.layers.InputLayer)]
        post = list(model.layers[at + 1:])
    else:
        backbone, pre, post = model, [], []
    maps = [i for i, layer in enumerate(backbone.layers)
            if not isinstance(layer, keras.layers.InputLayer) and len(layer.output.shape) == 4]
    if not maps:
        raise KitError(f"{model.name}: no convolutional feature map to take Grad-CAM from")
    at = maps[-1]
    tail = list(backbone.layers[at + 1:]) + post
    for layer in tail:
        if isinstance(layer.input, (list, tuple, dict)):
            raise KitError(f"{model.name}: layer {layer.name} after the feature map takes several inputs; "
                           "Grad-CAM needs a chain of single-input layers there")
    return pre, keras.Model(backbone.inputs, backbone.layers[at].output), tail


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


def gradcam(model: Any, images: np.ndarray, classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM heatmaps [N, H, W] in [0, 1] of ``images`` [N, H, W, 3] (pixels 0..255), and the model's outputs.

    The class explained is ``classes[i]``, by default the predicted one (binary: positive when p > 0.5).
    Everything but the gradient itself is Keras ops, so it runs for every backbone kit builds, on
    TensorFlow and on JAX.
    """
    from keras import ops

    pre, features, tail = _feature_chain(model)
    x = x0 = ops.convert_to_tensor(np.asarray(images, "float32"))
    for layer in pre:
        x = layer(x, training=False)
    fmap = features(x, training=False)

    def head(a: Any) -> Any:
        for layer in tail:
            a = layer(a, training=False)
        return ops.cast(a, "float32")

    out = ops.convert_to_numpy(head(fmap))
    direct = ops.convert_to_numpy(ops.cast(model({"image": x0}, training=False), "float32"))
    if not np.allclose(out, direct, rtol=1e-3, atol=1e-4):
        # the layers after the feature map do not replay as a chain (ConvNeXt's head normalises across
        # what it pools): a heatmap from such a replay would explain another function than the model
        raise KitError(f"{model.name}: Grad-CAM cannot replay this backbone's head after its feature map")
    binary = out.shape[-1] == 1
    if classes is None:
        classes = (out[:, 0] > 0.5).astype(int) if binary else out.argmax(-1)
    classes = np.asarray(classes, int)
    if binary:
        sign = ops.convert_to_tensor((2.0 * classes - 1.0).astype("float32"))  # p for class 1, -p (1-p) for 0

        def score(a: Any) -> Any:
            return ops.sum(head(a)[:, 0] * sign)
    else:
        onehot = ops.convert_to_tensor(np.eye(out.shape[-1], dtype="float32")[classes])

        def score(a: Any) -> Any:
            return ops.sum(head(a) * onehot)

    _, grads = _value_and_grad(score, fmap)
    fmap, grads = ops.cast(fmap, "float32"), ops.cast(grads, "float32")
    weights = ops.mean(grads, axis=(1, 2), keepdims=True)
    cam = ops.relu(ops.sum(fmap * weights, axis=-1, keepdims=True))
    cam = cam / (ops.max(cam, axis=(1, 2), keepdims=True) + 1e-8)
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


def _histories(run: Path) -> dict[int, pd.DataFrame]:
    out = {}
    for path in sorted(run.glob("fold*/history.csv")):
        suffix = path.parent.name[len("fold"):]
        if suffix.isdigit() and path.stat().st_size:
            out[int(suffix)] = pd.read_csv(path)
    return out


def _config_section(data: RunData) -> str:
    if not data.config_text:
        return _section("config", "Config", _note("no config.toml in the run folder"))
    return _section("config", "Config (resolved, RUN/config.toml)", f"<pre>{html.escape(data.config_text)}</pre>")


def _records_section(data: RunData) -> str:
    m = data.manifest
    where = data.records or data.config.get("records", "")
    if m is None:
        return _section("records", "Records", _note(f"records {where}: not found; the run trained on them"))
    info = [("folder", str(where)), ("source", m.source), ("layout", m.layout), ("image size", m.image_size),
            ("classes", ", ".join(m.classes)), ("images", m.count),
            ("fold seed", "" if m.fold_seed is None else m.fold_seed)]
    rows = []
    for k in m.fold_ids:
        f = m.folds[k]
        counts = json.dumps(f.class_counts) if f.class_counts is not None else f.positives
        rows.append([k, f.images, "" if f.groups is None else f.groups, "" if counts is None else counts])
    body = _table(["", ""], info, "kv") + _table(["fold", "images", "groups", "positives / class counts"], rows)
    return _section("records", "Records it trained on", body)


def _cv_section(data: RunData) -> str:
    cv = data.cv
    folds = cv.get("folds", {})
    rows = [[f"fold {k}", _num(v)] for k, v in folds.items()]
    rows.append(["mean of folds", _num(cv.get("fold_mean"))])
    rows.append(["std over folds", _num(cv.get("fold_std"))])
    rows.append(["pooled out of fold", _num(cv.get("overall"))])
    tta = ", ".join(map(str, cv.get("tta_views", []))) or "-"
    body = (f'<p class="key">metric: <b>{html.escape(data.metric)}</b>; out-of-fold TTA views: {html.escape(tta)}</p>'
            + _table(["", data.metric], rows, "cv")
            + _note("The mean of folds is what one fold model is worth; pooled scores every out-of-fold "
                    "prediction together, and folds whose models scale their probabilities differently can pull "
                    "it below every fold's own score."))
    if len(folds) > 1:
        plt = plots.pyplot()
        fig, ax = plt.subplots(figsize=(5, 2.8))
        ax.bar([f"fold {k}" for k in folds], list(folds.values()), color="#4477aa")
        if cv.get("overall") is not None:
            ax.axhline(cv["overall"], color="k", ls="--", label="pooled")
            ax.legend(fontsize="small")
        low = min(list(folds.values()) + [cv.get("overall", 1.0)])
        ax.set(ylim=(max(0.0, low - 0.1), 1.0), title="how the folds disagree")
        body += f'<div class="plots">{_img(_fig_png(fig), "per-fold scores")}</div>'
    return _section("cv", "Cross-validation", body)


def _curves_sections(data: RunData) -> list[str]:
    histories = _histories(data.run)
    if not histories:
        msg = _note("no fold*/history.csv in the run folder")
        return [_section("curves", "Learning curves", msg), _section("lr", "Learning rate", msg)]
    curves = _section("curves", "Learning curves",
                      f'<div class="plots">{_img(_learning_curves(histories, data.metric), "learning curves")}</div>')
    if all("lr" in h for h in histories.values()):
        lr = f'<div class="plots">{_img(_lr_plot(histories), "learning rate")}</div>'
    else:
        lr = _note("history.csv has no lr column")
    return [curves, _section("lr", "Learning rate", lr)]


def _class_sections(data: RunData) -> str:
    if data.binary:
        roc, pr, cal = _binary_plots(data.oof)
        body = (f'<div class="plots">{_img(roc, "ROC")}{_img(pr, "precision-recall")}{_img(cal, "calibration")}</div>'
                + _note("Thick black: every out-of-fold prediction pooled; thin: one fold each."))
        return _section("binary", "ROC, precision-recall and calibration", body)
    from sklearn.metrics import confusion_matrix

    y, p = data.oof["target"].to_numpy(int), data.pred_matrix()
    cm = confusion_matrix(y, p.argmax(1), labels=range(len(data.classes))).astype(float)
    table = metrics.per_class(y, p, data.classes)
    rows = [[r["class"], int(r["support"]), _num(r["sensitivity"]), _num(r["precision"]), _num(r["auc"])]
            for _, r in table.iterrows()]
    body = (f'<div class="plots">{_img(_confusion_plot(cm, data.classes), "confusion matrix")}</div>'
            + _table(["class", "images", "recall", "precision", "one-vs-rest AUC"], rows, "recall"))
    return _section("multiclass", "Confusion matrix and per-class recall", body)


def _label(data: RunData, k: int) -> str:
    return data.classes[k] if 0 <= k < len(data.classes) else str(k)


def _pred_text(data: RunData, row: pd.Series) -> str:
    if data.binary:
        return f"p={row['pred']:.3f}"
    return f"{_label(data, int(row['predicted']))} ({row[f'pred_{_label(data, int(row.predicted))}']:.2f})"


def _mistakes_section(data: RunData, worst: pd.DataFrame, images: Mapping[str, np.ndarray]) -> str:
    cards = []
    for _, r in worst.iterrows():
        img = images.get(r["image_name"])
        pic = _img(_array_png(img), r["image_name"]) if img is not None else "<div>(image not read)</div>"
        cards.append(f'<div class="card" data-id="{html.escape(r["image_name"])}">{pic}<br><b>{html.escape(r["image_name"])}'
                     f'</b><br>true {html.escape(_label(data, int(r["target"])))}, {html.escape(_pred_text(data, r))}'
                     f'<br>fold {int(r["fold"])}, error {r["error"]:.3f}</div>')
    pred_cols = ["pred"] if data.binary else [f"pred_{c}" for c in data.classes]
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
    df["pred"] = data.pred_matrix() if data.binary else data.pred_matrix().max(1)
    if df["group"].isna().all() or (df["group"] == df["image_name"]).all() or df["group"].nunique() == len(df):
        return _section("patients", "Per patient", _note("the records hold no groups (one image per group)"))
    g = df.groupby("group").agg(images=("image_name", "size"), positives=("target", "sum"),
                                mean_error=("error", "mean"), max_pred=("pred", "max"))
    text = (f"{len(g)} groups, {g['images'].mean():.1f} images each on average. ")
    if data.binary and g["positives"].gt(0).nunique() == 2:
        from sklearn.metrics import roc_auc_score

        text += (f"Patient-level AUC (a patient's highest prediction against whether any of their images is "
                 f"positive): {roc_auc_score(g['positives'] > 0, g['max_pred']):.4f}. ")
    shown = g.loc[[x for x in dict.fromkeys(df.set_index("image_name").loc[worst["image_name"], "group"]) if x in g.index]]
    rows = [[name, int(r["images"]), int(r["positives"]) if data.binary else "-", _num(r["mean_error"]),
             _num(r["max_pred"])] for name, r in shown.iterrows()]
    head = ["group", "images", "positives", "mean error", "max pred" if data.binary else "max confidence"]
    body = _note(text + "The groups of the worst mistakes:") + _table(head, rows, "patients")
    return _section("patients", "Per patient (group)", body)


def _gradcam_section(data: RunData, worst: pd.DataFrame, images: Mapping[str, np.ndarray], n: int,
                     seed: int) -> tuple[str, list[str]]:
    notes: list[str] = []
    if not any(data.run.glob("fold*/best.keras")):
        return _section("gradcam", "Grad-CAM", _note("left out: no fold*/best.keras (a stack has no image model)")), notes
    if not images:
        return _section("gradcam", "Grad-CAM", _note("left out: the records were not found")), notes
    df = _with_predicted(data)
    wrong = [i for i, t, p in zip(worst["image_name"], worst["target"], worst["predicted"]) if t != p and i in images][:n]
    right = [i for i in _correct_sample(df, n, seed)["image_name"] if i in images]
    import keras  # noqa: F401  before kit.models: the backend is settled by kit.runtime

    from kit import models  # noqa: F401  registers kit's layers, so best.keras loads

    cards = {"correct": [], "wrong": []}
    fold_of = dict(zip(df["image_name"], df["fold"].astype(int)))
    by_fold: dict[int, list[tuple[str, str]]] = {}
    for kind, ids in (("wrong", wrong), ("correct", right)):
        for i in ids:
            by_fold.setdefault(fold_of[i], []).append((kind, i))
    for fold, items in sorted(by_fold.items()):
        path = data.run / f"fold{fold}" / "best.keras"
        if not path.is_file():
            notes.append(f"{path}: missing; Grad-CAM left out for fold {fold}")
            continue
        model = keras.saving.load_model(path, compile=False)
        try:
            # the predicted class: a fixed positive class leaves the many confident negatives all blue (seen)
            heat, _ = gradcam(model, np.stack([images[i] for _, i in items]))
        except KitError as exc:
            return _section("gradcam", "Grad-CAM", _note(f"left out: {exc}")), notes
        for (kind, i), h in zip(items, heat):
            row = df[df["image_name"] == i].iloc[0]
            cards[kind].append(
                f'<div class="card" data-id="{html.escape(i)}">{_img(_array_png(images[i]), i)}'
                f'{_img(_array_png(_overlay(images[i], h)), "Grad-CAM " + i)}<br><b>{html.escape(i)}</b><br>'
                f'true {html.escape(_label(data, int(row["target"])))}, {html.escape(_pred_text(data, row))}</div>')
    body = _note("Where each fold model found the evidence for the class it predicted: Grad-CAM on the last "
                 "convolutional feature map (red: most weight), for the worst mistakes and for a random sample of "
                 "correct predictions of every class.")
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
            + _note("The same numbers are in cv.json under \"shakeup\". The draws assume the test set looks like "
                    "the training set; a shifted test set moves the leaderboard further."))
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


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 records: str | os.PathLike | None = None, public: int | None = None, private: int | None = None,
                 draws: int = 200, mistakes: int = 16, gradcam_per_kind: int = 6, with_gradcam: bool = True,
                 seed: int = 0) -> ReportResult:
    """Write the HTML report of ``run`` (default RUN/report.html) and add the shake-up to RUN/cv.json."""
    t0 = time.perf_counter()
    if mistakes < 1:
        raise KitError(f"--mistakes: expects at least 1, got {mistakes}")
    data = load_run_data(run, records)
    pub, priv, source = leaderboard_sizes(data.manifest, public, private)
    out = Path(out) if out else data.run / "report.html"
    notes = list(data.notes)
    name = data.run.name
    model = data.config.get("model", "stack")
    title = f"kit report: {name}"
    head = (f"<h1>{html.escape(title)}</h1><p class=\"key\">{html.escape(str(model))}"
            f"{', ' + str(data.config.get('size')) + ' px' if data.config.get('size') else ''}"
            f"{', ' + str(data.config.get('epochs')) + ' epochs' if data.config.get('epochs') else ''}; "
            f"{html.escape(data.metric)} {data.cv.get('fold_mean', float('nan')):.4f} (mean of folds), "
            f"{data.cv.get('overall', float('nan')):.4f} pooled; folder {html.escape(str(data.run))}; written "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}</p>")
    sections = [_config_section(data), _records_section(data), _cv_section(data), *_curves_sections(data)]
    shake = None
    if data.oof is not None:
        sections.append(_class_sections(data))
        worst = worst_mistakes(data, mistakes)
        groups: dict[str, str] = {}
        images: dict[str, np.ndarray] = {}
        if data.records is not None:
            sample = _correct_sample(_with_predicted(data), gradcam_per_kind, seed)
            want = set(worst["image_name"]) | set(sample["image_name"])
            groups, images = read_records(data.records, data.oof["fold"].unique(), want)
        sections.append(_mistakes_section(data, worst, images))
        sections.append(_patients_section(data, groups, worst))
        if with_gradcam:
            section, more = _gradcam_section(data, worst, images, gradcam_per_kind, seed)
            sections.append(section)
            notes += more
        else:
            sections.append(_section("gradcam", "Grad-CAM", _note("left out (--no-gradcam)")))
        shake, samples = shakeup(data.oof["target"].to_numpy(int), data.pred_matrix(), data.metric, pub, priv,
                                 draws=draws, seed=seed)
        shake["source"] = source
        sections.append(_shakeup_section(data, shake, samples, source))
        cv = _read_json(data.run / "cv.json")
        cv["shakeup"] = shake
        fsutil.write_json(data.run / "cv.json", cv)
    importance = _importance_section(data.run, data.cv)
    if importance:
        sections.append(importance)
    notes_html = "".join(_note(n) for n in notes)
    page = (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body>{head}{notes_html}{''.join(sections)}</body></html>\n")
    fsutil.write_text(out, page)
    ids = [s.split('"', 2)[1] for s in sections]
    return ReportResult(out, ids, shake, notes, time.perf_counter() - t0)


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
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"report: {result.path} ({result.seconds:.1f} s)")
    return "\n".join(lines)
