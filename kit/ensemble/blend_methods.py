"""The blend methods on aligned arrays: mean, rank, power and geometric averages, and the weights' rule.

Methods, with weights ``w`` summing to 1 and ``p_i`` the inputs' probabilities:

    mean      sum w_i p_i
    rank      sum w_i rank(p_i) / n         average ranks for ties, so row order never matters
    power     (sum w_i p_i^k)^(1/k)         the root keeps a probability scale; it does not change
                                            the order, so AUC equals the root-less Kaggle variant
    geomean   exp(sum w_i log max(p_i, 1e-15))

No TensorFlow and no pandas here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from kit.training.config import BLEND_METHODS as METHODS
from kit.core.errors import KitError

GEOMEAN_FLOOR = 1e-15  # log(0) would make one confident zero veto every other model


def rankdata(x: np.ndarray) -> np.ndarray:
    """Average ranks 1..n of a float vector (ties share their mean rank), like scipy's rankdata."""
    n = len(x)
    order = np.argsort(x, kind="quicksort")
    xs = x[order]
    ranks = np.empty(n, np.float64)
    if n == 0:
        return ranks
    new = np.empty(n, bool)
    new[0] = True
    np.not_equal(xs[1:], xs[:-1], out=new[1:])
    if new.all():
        ranks[order] = np.arange(1, n + 1, dtype=np.float64)
        return ranks
    starts = np.flatnonzero(new)
    ends = np.append(starts[1:], n)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def _transform(p: np.ndarray, method: str, power: float) -> np.ndarray:
    """What each method averages, per column of ``p`` ``[n, k]``."""
    if method == "mean":
        return p
    if method == "rank":
        out = np.empty_like(p, dtype=np.float64)
        for c in range(p.shape[1]):
            out[:, c] = rankdata(p[:, c]) / len(p)
        return out
    if method == "power":
        return np.power(p, power)
    if method == "geomean":
        return np.log(np.maximum(p, GEOMEAN_FLOOR))
    raise KitError(f"--method: unknown blend method {method!r} (known: {', '.join(METHODS)})")


def _finish(acc: np.ndarray, method: str, power: float) -> np.ndarray:
    """Undo the transform of the weighted average and renormalise multi-class rows."""
    if method == "power":
        acc = np.power(acc, 1.0 / power)
    elif method == "geomean":
        acc = np.exp(acc)
    if acc.shape[1] > 1:
        acc = acc / acc.sum(axis=1, keepdims=True)
    return acc


def normalized_weights(weights: Sequence[float] | None, n: int, *, option: str = "--weights",
                       what: str = "inputs") -> np.ndarray:
    """``n`` weights summing to 1 (equal when ``weights`` is None); KitError naming ``option`` when unusable.

    One rule for blending submissions and for averaging a run's fold models."""
    if weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(weights, np.float64)
    if len(w) != n:
        raise KitError(f"{option}: {len(w)} weights for {n} {what}")
    if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise KitError(f"{option}: weights must be finite, >= 0 and not all 0, got {list(weights)}")
    return w / w.sum()


def blend_arrays(
    preds: Sequence[np.ndarray], method: str = "mean", weights: Sequence[float] | None = None, power: float = 2.0
) -> np.ndarray:
    """Blend aligned predictions (each ``[n]`` or ``[n, k]``); returns the same shape."""
    if not preds:
        raise KitError("blend: nothing to blend")
    w = normalized_weights(weights, len(preds))
    squeeze = np.asarray(preds[0]).ndim == 1
    acc = None
    for wi, p in zip(w, preds):
        p = np.asarray(p, np.float64)
        p = p[:, None] if p.ndim == 1 else p
        term = wi * _transform(p, method, power)
        acc = term if acc is None else acc + term
    out = _finish(acc, method, power)
    return out[:, 0] if squeeze else out


def _check_power(method: str, power: float) -> None:
    """The exponent of ``--method power``: finite and > 0 (inf makes every row 1, nan every row nan)."""
    if method == "power" and not (math.isfinite(power) and power > 0):
        raise KitError(f"--power: must be a finite number > 0, got {power}")
