"""The leaderboard shake-up estimate of ``kit report``: where the public and private leaderboard sizes come
from (``leaderboard_sizes``), and bootstrap draws of both leaderboards from a run's out-of-fold predictions
(``shakeup``). Numbers only: the page's section about them is kit.ensemble.report_sections'."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.data import competitions
from kit.core import metrics
from kit.core.errors import KitError

if TYPE_CHECKING:  # kit.data.records is imported where records are read
    from kit.data import records


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
    from kit.data import records

    manifest = records.read_manifest(folder, "test")
    return manifest.count or sum(f.images for f in manifest.folds.values())


def _download_test_count(manifest: "records.Manifest | None") -> int | None:
    """The images of the test split of the download the records came from (their manifest's source), or None
    where the download is gone, has no test split or kit cannot read one."""
    if manifest is None or not manifest.source or not Path(manifest.source).exists():
        return None
    from kit.data import sources

    try:
        return len(sources.load_source(manifest.source, layout=manifest.layout or "auto", test=True).table)
    except (KitError, OSError):
        return None


def leaderboard_sizes(manifest: "records.Manifest | None", public: int | None = None,
                      private: int | None = None, test_records: str | os.PathLike | None = None
                      ) -> tuple[int, int, str] | None:
    """(public, private, where the sizes come from), from the first that says: the given sizes; the records'
    competition's row of the registry (kit.data.competitions); the images of ``test_records``; the test split of
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
