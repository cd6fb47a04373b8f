"""Leak-free folds: stratified group k-fold ("triple stratified") and the leakage check.

``assign_folds`` gives every image a fold so that

- no group (patient, lesion) is in two folds, and byte-identical images count as one group
  (a duplicate saved under two names would otherwise land on both sides of a split);
- each fold holds about the same share of every class;
- each fold holds about the same number of images and a similar mix of small and large groups
  (patients with 1 image vs 100), the third axis of the SIIM-ISIC "triple stratified" folds.

Groups are dealt greedily, rarest class and largest groups first, each to the fold whose fill
(per class, per image count, per group-size bucket) it raises least; the seed orders ties, so the
same seed always gives the same folds. ``check_leakage`` fails loudly, naming the group or the
duplicate pair, when a table's folds leak; the writer calls it and so can a user.
``train_duplicates`` finds test images byte-identical to training images: no fold can keep those
apart, so the test writer lists them instead.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from kit.data import imaging
from kit.core.errors import KitError
from kit.core.task import task_for


def file_digest(path: str | Path) -> str:
    """SHA-1 of a file's bytes ("" for a missing or empty file, which is never a duplicate)."""
    return imaging.sha1_of(path)


def file_digests(paths: Iterable[str | Path], workers: int = 8) -> list[str]:
    """SHA-1 per file, "" where no other file has the same size (so it cannot be a byte duplicate).

    Only files whose size collides are read, on threads (hashing releases the GIL): a folder of
    large JPEGs costs a ``stat`` per file, not a second full read.
    """
    return paired_digests(paths, (), workers)[0]


def paired_digests(
    paths: Iterable[str | Path], others: Iterable[str | Path], workers: int = 8
) -> tuple[list[str], list[str]]:
    """SHA-1 per file of ``paths`` and of ``others`` (test and train), "" for a file left unread.

    A file of ``paths`` is read when another file of ``paths`` or one of ``others`` has its size; a
    file of ``others`` only when one of ``paths`` has its size, since duplicates among ``others``
    are not looked for. Every file is read at most once.
    """
    paths, others = [str(p) for p in paths], [str(p) for p in others]
    if any(imaging.HDF5_SEP in p for p in paths + others):
        # an HDF5 member's size costs about what reading it does (h5py looks each key up), and the worker
        # processes read in parallel: hash every member instead of sizing them in this process first
        sizes, other_sizes = [1] * len(paths), [1] * len(others)
    else:
        sizes, other_sizes = _sizes(paths), _sizes(others)
    count, other_set = Counter(sizes), set(other_sizes)
    todo = [i for i, n in enumerate(sizes) if n > 0 and (count[n] > 1 or n in other_set)]
    other_todo = [j for j, n in enumerate(other_sizes) if n > 0 and n in count]
    both = [paths[i] for i in todo] + [others[j] for j in other_todo]
    out, other_out = [""] * len(paths), [""] * len(others)
    if both:
        digests = _digests(both, workers)
        for i, d in zip(todo, digests):
            out[i] = d
        for j, d in zip(other_todo, digests[len(todo):]):
            other_out[j] = d
    return out, other_out


def _digests(paths: list[str], workers: int) -> list[str]:
    """SHA-1 of each path: HDF5 members in worker processes (h5py reads one at a time under its lock, and a
    thread per image costs more than the read), files on threads (their reads and hashing release the GIL)."""
    if any(imaging.HDF5_SEP in p for p in paths) and len(paths) >= 256:
        chunks = [paths[i:i + 256] for i in range(0, len(paths), 256)]
        with imaging.worker_pool(min(workers, os.cpu_count() or 1)) as pool:
            return [d for part in pool.map(imaging.sha1_all, chunks) for d in part]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(file_digest, paths))


def _sizes(paths: list[str]) -> list[int]:
    """Byte size per file, -1 where it cannot be read."""
    return [imaging.image_byte_size(p) for p in paths]


def train_duplicates(
    names: Iterable[str], digests: Iterable[str], train_names: Iterable[str], train_digests: Iterable[str]
) -> list[dict[str, str]]:
    """One ``{"image_name", "train_image_name"}`` per image byte-identical to a training image.

    Digests come from ``paired_digests`` ("" for none); an image equal to several training images
    names the first of them in train order.
    """
    first_train: dict[str, str] = {}
    for name, d in zip(train_names, train_digests):
        if d:
            first_train.setdefault(d, str(name))
    return [{"image_name": str(name), "train_image_name": first_train[d]}
            for name, d in zip(names, digests) if d and d in first_train]


def merge_duplicates(groups: Iterable[str], digests: Iterable[str]) -> np.ndarray:
    """Groups joined through byte-identical images: images sharing a digest end in one group.

    Returns the merged group label per image (the smallest original group name of the union).
    """
    groups = [str(g) for g in groups]
    parent: dict[str, str] = {g: g for g in groups}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    first_group_of: dict[str, str] = {}
    for g, d in zip(groups, digests):
        if not d:
            continue
        if d in first_group_of:
            a, b = find(first_group_of[d]), find(g)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first_group_of[d] = g
    return np.array([find(g) for g in groups], dtype=object)


def assign_folds(
    table: pd.DataFrame,
    n_folds: int = 5,
    seed: int = 42,
    *,
    digests: Iterable[str] | None = None,
) -> np.ndarray:
    """Fold index per row of ``table`` (columns ``target``, ``group``; ``path`` to find duplicates).

    ``digests`` (one per row; "" for none) skips re-reading the files when the caller has them.
    Unlabelled rows (target -1) are balanced as one more class.

    Example:
        >>> table["fold"] = assign_folds(src.table, n_folds=5, seed=42)
    """
    n = len(table)
    if n_folds < 2:
        raise KitError(f"--folds {n_folds}: need at least 2 folds")
    if digests is None:
        digests = file_digests(table["path"]) if "path" in table.columns else [""] * n
    groups = merge_duplicates(table["group"], list(digests))
    codes, uniq = pd.factorize(pd.Series(groups), sort=True)
    n_groups = len(uniq)
    if n_groups < n_folds:
        raise KitError(f"--folds {n_folds}: only {n_groups} groups (patients/lesions/images); use fewer folds")

    target = table["target"].to_numpy(dtype=np.int64)
    classes, cls_idx = np.unique(target, return_inverse=True)
    n_cls = len(classes)
    # Per group: image count per class.
    per_group = np.zeros((n_groups, n_cls), np.int64)
    np.add.at(per_group, (codes, cls_idx), 1)
    size = per_group.sum(1)
    # Group-size buckets on a log2 scale (1, 2-3, 4-7, ...): folds get a similar mix of each.
    bucket = np.floor(np.log2(size)).astype(np.int64)
    n_buckets = int(bucket.max()) + 1

    cls_total = per_group.sum(0).astype(np.float64)
    bucket_total = np.bincount(bucket, minlength=n_buckets).astype(np.float64)
    want_cls = cls_total / n_folds
    want_img = n / n_folds
    want_bucket = np.maximum(bucket_total / n_folds, 1e-9)

    # Order: groups holding the rarest class first, then larger groups first; the seed shuffles ties.
    rng = np.random.default_rng(seed)
    rarity = np.where(per_group > 0, cls_total[None, :], np.inf).min(1)
    order = np.lexsort((rng.permutation(n_groups), -size, rarity))

    fill_cls = np.zeros((n_folds, n_cls))
    fill_img = np.zeros(n_folds)
    fill_bucket = np.zeros((n_folds, n_buckets))
    fold_of_group = np.empty(n_groups, np.int64)
    fold_pref = rng.permutation(n_folds)  # breaks exact ties between folds, seeded
    for g in order:
        new_cls = (fill_cls + per_group[g]) / np.maximum(want_cls, 1e-9)
        cost = (
            (new_cls[:, per_group[g] > 0] ** 2).sum(1)
            + ((fill_img + size[g]) / want_img) ** 2
            + ((fill_bucket[:, bucket[g]] + 1) / want_bucket[bucket[g]]) ** 2
        )
        best = fold_pref[np.argmin(cost[fold_pref])]
        fold_of_group[g] = best
        fill_cls[best] += per_group[g]
        fill_img[best] += size[g]
        fill_bucket[best, bucket[g]] += 1
    return fold_of_group[codes]


def check_leakage(
    table: pd.DataFrame,
    *,
    fold_col: str = "fold",
    digests: Iterable[str] | None = None,
) -> None:
    """Raise KitError if any group, or any pair of byte-identical images, spans two folds.

    ``table`` needs ``image_name``, ``group`` and ``fold_col``; duplicates are found from
    ``digests`` (one per row) or else from the files under ``path``.
    """
    if fold_col not in table.columns:
        raise KitError(f"table: missing column {fold_col!r}")
    folds = table[fold_col].to_numpy()
    names = table["image_name"].astype(str).to_numpy()
    groups = table["group"].astype(str).to_numpy()
    seen: dict[str, tuple[int, str]] = {}
    for g, f, name in zip(groups, folds, names):
        if g in seen and seen[g][0] != f:
            first_fold, first_name = seen[g]
            raise KitError(f"leak: group {g!r} is in folds {first_fold} ({first_name}) and {f} ({name})")
        seen.setdefault(g, (f, name))
    if digests is None:
        digests = file_digests(table["path"]) if "path" in table.columns else []
    by_digest: dict[str, tuple[int, str]] = {}
    for d, f, name in zip(digests, folds, names):
        if not d:
            continue
        if d in by_digest and by_digest[d][0] != f:
            first_fold, first_name = by_digest[d]
            raise KitError(f"leak: {first_name} (fold {first_fold}) and {name} (fold {f}) are the same image "
                           f"(sha1 {d[:12]})")
        by_digest.setdefault(d, (f, name))


def fold_summary(table: pd.DataFrame, classes: list[str], fold_col: str = "fold") -> dict[str, dict]:
    """Per fold: images, groups, and positives (binary) or class counts (by class name)."""
    task = task_for(len(classes))
    out: dict[str, dict] = {}
    for fold, part in table.groupby(fold_col, sort=True):
        entry: dict = {"images": int(len(part)), "groups": int(part["group"].nunique())}
        labelled = part["target"] >= 0
        if labelled.any():
            entry.update(task.fold_counts(part.loc[labelled, "target"].to_numpy(), classes))
        out[str(int(fold))] = entry
    return out
