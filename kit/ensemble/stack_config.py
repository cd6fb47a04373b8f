"""``kit stack``'s settings: ``StackConfig`` (TOML keys and ``kit stack`` flags are its field names) and the
checks that refuse a stack no run could finish, one line naming the setting."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from kit.core.errors import KitError


@dataclass(frozen=True)
class StackConfig:
    """Settings of a ``kit stack`` run (TOML keys are the field names)."""

    records: str = ""  # train records folder (`kit records`)
    runs: tuple[str, ...] = ()  # image run folders (`kit train`) whose oof.csv become features
    out: str = ""  # the stack's run folder (must not exist)
    test_records: str = ""  # test records folder (`kit records --test`)
    predictions: tuple[str, ...] = ()  # each run's test submission (`kit predict`), one per run
    sample_submission: str = ""
    submission: str = ""  # also write the submission here
    models: tuple[str, ...] = ("lightgbm",)  # or "all": every installed kind
    seeds: int = 1  # tree models per fold and kind, averaged
    seed: int = 42
    undersample: float = 0.0  # majority rows kept per row of the other classes in each fold's fit; 0 = all
    metadata: bool = True  # the records' metadata columns as features
    group_features: bool = True  # group size, z-score, ratio to mean, rank within the group
    drop: tuple[str, ...] = ()  # metadata columns (or features) to leave out
    rounds: int = 2000  # most trees; early stopping picks fewer
    early_stopping: int = 100  # stop after this many trees without a better inner-fold metric
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_child_samples: int = 20
    colsample: float = 0.8
    subsample: float = 0.8
    threads: int = 0  # 0: every core

    def to_dict(self) -> dict[str, Any]:
        """Plain values for TOML (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def check(self) -> None:
        """Refuse settings no stack can run with, naming the value."""
        if not self.records:
            raise KitError("--records: the train records folder is required")
        if not self.out:
            raise KitError("--out: the stack's run folder is required")
        if self.predictions and len(self.predictions) != len(self.runs):
            raise KitError(f"--predictions: {len(self.predictions)} files for {len(self.runs)} runs (one per run, "
                           "in the order of --runs)")
        if self.predictions and not self.test_records:
            raise KitError("--predictions: give the test records they predict with --test-records")
        if self.test_records and self.runs and not self.predictions:
            raise KitError("--test-records: give each run's test submission with --predictions A.csv B.csv ...")
        if self.submission and not self.test_records:
            raise KitError("--submission: needs --test-records (and --predictions) to predict the test set")
        if not self.runs and not self.metadata:
            raise KitError("--runs: nothing to learn from (no runs and --no-metadata)")
        self.check_numbers()

    def check_numbers(self) -> None:
        """One KitError line naming the first number out of its range, as ``kit train``'s settings are checked."""
        rules = [
            ("seed", 0 <= self.seed < 2**31, "in [0, 2**31)"), ("seeds", self.seeds >= 1, "at least 1"),
            ("rounds", self.rounds >= 1, "at least 1"), ("early_stopping", self.early_stopping >= 1, "at least 1"),
            ("learning_rate", 0 < self.learning_rate <= 1, "in (0, 1]"),
            ("undersample", self.undersample == 0 or 1 <= self.undersample < math.inf,
             "0 (keep every row) or a finite ratio >= 1"),
            ("threads", self.threads >= 0, ">= 0 (0: every core)"), ("num_leaves", self.num_leaves >= 2, "at least 2"),
            ("min_child_samples", self.min_child_samples >= 1, "at least 1"),
            ("colsample", 0 < self.colsample <= 1, "in (0, 1]"), ("subsample", 0 < self.subsample <= 1, "in (0, 1]"),
        ]
        for name, ok, want in rules:
            if not ok:
                raise KitError(f"{name}: expects {want}, got {getattr(self, name)}")
