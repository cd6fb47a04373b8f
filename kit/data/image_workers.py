"""Images prepared on every core: the rows handed to worker processes, and the pool that runs their chunks."""

from __future__ import annotations

import itertools
from collections import deque
from typing import Callable, Iterator

import pandas as pd

from kit.data import imaging, sources

# Above this many images the writer fans out to worker processes; below it, starting them costs
# more than it saves.
PARALLEL_MIN_IMAGES = 96


def worker_rows(table: pd.DataFrame, src: sources.Source) -> list[tuple[str, dict]]:
    """(path, features other than the image) per row, as plain Python values for the workers."""
    codes = {c: {v: i for i, v in enumerate(src.categories.get(c, []))} for c in src.categorical}
    # column by column, not DataFrame.to_dict("records"): ISIC 2024's 41 columns made that a serial
    # 23 us per image in this process before any worker started
    columns: dict[str, list] = {
        "image_name": table["image_name"].tolist(),
        "target": [int(t) for t in table["target"].tolist()],
        "fold": [int(f) for f in table["fold"].tolist()],
        "group": table["group"].tolist(),
    }
    for c in src.numeric:
        columns[c] = [float(v) for v in table[c].tolist()]  # NaN stays NaN: readers decide how to fill
    for c in src.categorical:
        columns[c] = [codes[c].get(v, -1) if v is not None else -1 for v in table[c].tolist()]
    names = list(columns)
    return [(path, dict(zip(names, values))) for path, *values in zip(table["path"].tolist(), *columns.values())]


def run_chunks(chunks: list[list], size: int, policy: str, quality: int, workers: int,
                task: Callable[..., list] | None = None) -> Iterator[list]:
    """``task(chunk, size, policy, quality)`` per chunk (``imaging.make_records``, or ``imaging.make_jpegs`` for a
    stream), in chunk order, from ``workers`` processes (or this one)."""
    task = task or imaging.make_records
    if workers <= 1:
        for c in chunks:
            yield task(c, size, policy, quality)
        return
    pool = imaging.worker_pool(workers)
    try:
        # A bounded window of chunks in flight, not all of them: results wait in memory only until read,
        # which matters when a slow reader (a model predicting 500,000 images) consumes them
        pending: deque = deque()
        todo = iter(chunks)
        for c in itertools.islice(todo, workers * 4):
            pending.append(pool.submit(task, c, size, policy, quality))
        while pending:
            done = pending.popleft().result()
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(task, nxt, size, policy, quality))
            yield done
    finally:
        # On an error or Ctrl-C, drop the queued work instead of finishing it.
        pool.shutdown(wait=True, cancel_futures=True)
