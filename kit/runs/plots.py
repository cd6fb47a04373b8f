"""Figures more than one verb draws (matplotlib, headless): ``kit train`` saves them as PNGs under
``RUN/plots/``, ``kit report`` embeds them in its page."""

from __future__ import annotations

from typing import Any, Mapping

import pandas as pd


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display: kernels and CI have none)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def learning_curves(histories: Mapping[int, pd.DataFrame], metric: str) -> Any:
    """Loss and metric per epoch, training solid and validation dashed, one colour per fold; a Figure."""
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 3.8))
    for k, h in histories.items():
        for ax, col in zip(axes, ("loss", "metric")):
            if col not in h:
                continue
            line, = ax.plot(h["epoch"] + 1, h[col], label=f"fold {k} train")
            if f"val_{col}" in h:
                ax.plot(h["epoch"] + 1, h[f"val_{col}"], "--", color=line.get_color(), label=f"fold {k} val")
    axes[0].set(title="loss", xlabel="epoch")
    axes[1].set(title=f"{metric} (train: Keras' running figure; validation: exact, whole fold)", xlabel="epoch")
    axes[1].legend(fontsize="small")
    return fig
