"""The building blocks of ``kit report``'s page: plots drawn with matplotlib into PNG bytes, images embedded
as base64, and the HTML pieces (table, cell, section, note) every section is made of."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from kit.runs import plots


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
