"""The task a run learns: binary (one probability, of the positive class) or multi-class (one per class).

A task owns everything that differs between the two: the model's head (units, activation), the losses
that fit it and the default one, how labels are encoded for training, its out-of-fold prediction columns
(binary ``pred``, multi-class ``pred_<class>``), how probabilities become submission columns, how its
folds' labels are counted, and its default metric and tree-library objectives. The rest of kit asks its
task instead of testing ``n_classes == 2``: the choice between the two is made here, in ``task_for`` (from
a number of classes) and ``task_of_width`` (from a number of prediction columns). A multi-label task would
be a third subclass.

numpy only (no TensorFlow, no pandas), so every layer may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from kit.core.errors import KitError

if TYPE_CHECKING:
    from kit.core.metrics import Metric

OOF_ID, OOF_TARGET, OOF_FOLD = "image_name", "target", "fold"


@dataclass(frozen=True)
class Task:
    """What differs between tasks; ``n_classes`` is the number of classes the labels index. The methods here
    are the one-column-per-class behaviour that a multi-class task keeps and a binary task overrides."""

    n_classes: int

    name: ClassVar[str] = ""
    head_activation: ClassVar[str] = ""
    default_loss: ClassVar[str] = ""
    losses: ClassVar[tuple[str, ...]] = ()  # the loss kinds that fit (kit.training.config's "loss" choices)
    default_metric: ClassVar[str] = ""  # a download no competition claims is scored by it
    keras_figures: ClassVar[tuple[str, ...]] = ()  # running Keras figures its head can feed, the first the default
    count_key: ClassVar[str] = ""  # the manifest's per-fold label count
    count_label: ClassVar[str] = ""  # its header in `kit records`' fold table
    target_dtype: ClassVar[str] = ""  # labels as the model trains on them
    tree_objectives: ClassVar[Mapping[str, str]] = {}  # per tree library

    @property
    def head_units(self) -> int:
        """Output units of the model's head."""
        return int(self.n_classes)

    def describe(self) -> str:
        """Its classes in words ("two classes", "7 classes")."""
        return f"{self.n_classes} classes"

    def encode(self, labels: Sequence[int] | np.ndarray) -> np.ndarray:
        """Class indices as the model trains on them (``target_dtype``)."""
        return np.asarray(labels).astype(self.target_dtype)

    def pred_columns(self, classes: Sequence[str]) -> list[str]:
        """The prediction columns of an oof.csv."""
        return [f"pred_{c}" for c in classes]

    def oof_columns(self, classes: Sequence[str]) -> list[str]:
        """Every column of an oof.csv, in order: id, target, the prediction columns, fold."""
        return [OOF_ID, OOF_TARGET, *self.pred_columns(classes), OOF_FOLD]

    def classes_of(self, pred_columns: Sequence[str]) -> list[str]:
        """The class names an oof.csv's prediction columns carry."""
        return [c[len("pred_"):] for c in pred_columns]

    def squeeze(self, outputs: np.ndarray) -> np.ndarray:
        """Model outputs [N, units] as kit stores predictions: [N] (binary) or [N, K]."""
        return outputs

    def from_proba(self, proba: np.ndarray) -> np.ndarray:
        """A classifier's [N, K] class probabilities (scikit-learn's predict_proba) as kit stores predictions."""
        return proba

    def pred_shape(self, n_rows: int) -> tuple[int, ...]:
        """The shape of ``n_rows`` stored predictions."""
        return (n_rows, self.n_classes)

    def pred_frame(self, pred: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
        """Stored predictions as {prediction column: values}, in column order."""
        return {c: pred[:, i] for i, c in enumerate(self.pred_columns(classes))}

    def pred_matrix(self, frame: Any, classes: Sequence[str]) -> np.ndarray:
        """Stored predictions back out of a table holding the prediction columns."""
        return frame[self.pred_columns(classes)].to_numpy()

    def labels(self, pred: np.ndarray) -> np.ndarray:
        """The predicted class of each row."""
        return pred.argmax(1)

    def errors(self, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
        """Each row's error: 1 - the probability given to its true class."""
        return 1.0 - pred[np.arange(len(target)), target]

    def confidence(self, pred: np.ndarray) -> np.ndarray:
        """Each row's highest probability."""
        return pred.max(1)

    def output_weights(self, classes: np.ndarray) -> np.ndarray:
        """[N, units]: the direction in the head's outputs that favours each row's class (Grad-CAM's score)."""
        return np.eye(self.head_units, dtype="float32")[classes]

    def check_outputs(self, width: int, where: str) -> None:
        """KitError when a model's ``width`` outputs do not fit the task."""
        if width != self.n_classes:
            raise KitError(f"{where}: the model gives {width} outputs for {self.n_classes} classes")

    def submission_columns(self, classes: Sequence[str]) -> list[str]:
        """The value columns of a submission written without a sample."""
        return [str(c) for c in classes]

    def submission_probs(self, probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """[N, columns]: predictions as submission values, one column per ``submission_columns``."""
        if probs.shape[1] != len(classes):
            raise KitError(f"predictions: {probs.shape[1]} columns for {len(classes)} classes")
        return probs

    def value_order(self, value_cols: Sequence[str], classes: Sequence[str], where: str) -> list[int]:
        """For each value column of a submission, the prediction column it holds; KitError when they do not fit."""
        names = [str(c) for c in classes]
        if sorted(value_cols) != sorted(names):
            wrong = next((c for c in value_cols if c not in names), value_cols[0] if value_cols else "")
            raise KitError(f"{where}: column {wrong!r} is not a class of the run ({', '.join(names)})")
        return [names.index(c) for c in value_cols]

    def fold_counts(self, targets: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
        """A fold's label counts as the manifest stores them (``count_key``: value)."""
        counts = np.bincount(targets, minlength=len(classes))
        return {self.count_key: {c: int(k) for c, k in zip(classes, counts)}}

    def class_totals(self, info: Any, classes: Sequence[str]) -> list[float]:
        """Images per class in a manifest's fold entry."""
        return [float(info.class_counts.get(str(c), 0)) for c in classes]

    def single_class(self, info: Any) -> bool:
        """Whether a manifest's fold entry is known to hold one class only (its metric then undefined)."""
        return False

    def tree_params(self, library: str) -> dict[str, Any]:
        """Parameters a tree library needs besides its objective for this task."""
        return {"num_class": self.n_classes}

    def tree_metric(self, metric: Metric, library: str) -> str:
        """The library's built-in evaluation metric for ``metric`` on this task; "" = kit's exact score."""
        return ""

    def keras_figure(self, metric: Metric | None) -> str:
        """The running Keras figure for ``metric`` on the training batches (the metric's own, where the head fits it)."""
        own = metric.keras if metric is not None else ""
        return own if own in self.keras_figures else self.keras_figures[0]


@dataclass(frozen=True)
class Binary(Task):
    """Two classes: the head gives one sigmoid probability, of class 1."""

    n_classes: int = 2

    name = "binary"
    head_activation = "sigmoid"
    default_loss = "bce"
    losses = ("bce", "focal")
    default_metric = "auc"
    keras_figures = ("auc",)
    count_key = "positives"
    count_label = "positives"
    target_dtype = "float32"
    tree_objectives = {"lightgbm": "binary", "xgboost": "binary:logistic", "catboost": "Logloss"}

    @property
    def head_units(self) -> int:
        return 1

    def describe(self) -> str:
        return "two classes"

    def pred_columns(self, classes: Sequence[str]) -> list[str]:
        return ["pred"]

    def classes_of(self, pred_columns: Sequence[str]) -> list[str]:
        return ["0", "1"]  # a binary oof.csv does not name its classes

    def squeeze(self, outputs: np.ndarray) -> np.ndarray:
        return outputs[:, 0]

    def from_proba(self, proba: np.ndarray) -> np.ndarray:
        return proba[:, 1]

    def pred_shape(self, n_rows: int) -> tuple[int, ...]:
        return (n_rows,)

    def pred_frame(self, pred: np.ndarray, classes: Sequence[str]) -> dict[str, np.ndarray]:
        return {"pred": pred}

    def pred_matrix(self, frame: Any, classes: Sequence[str]) -> np.ndarray:
        return frame["pred"].to_numpy()

    def labels(self, pred: np.ndarray) -> np.ndarray:
        return (pred > 0.5).astype(int)

    def errors(self, target: np.ndarray, pred: np.ndarray) -> np.ndarray:
        return np.abs(target - pred)

    def confidence(self, pred: np.ndarray) -> np.ndarray:
        return pred

    def output_weights(self, classes: np.ndarray) -> np.ndarray:
        # p for class 1, -p (1-p) for class 0
        return (2.0 * classes - 1.0).astype("float32")[:, None]

    def check_outputs(self, width: int, where: str) -> None:
        return None  # one sigmoid, or a two-way softmax whose positive column the submission takes

    def submission_columns(self, classes: Sequence[str]) -> list[str]:
        return ["target"]

    def submission_probs(self, probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        return probs[:, 1:] if probs.shape[1] == 2 else probs  # a two-way softmax: the positive class

    def value_order(self, value_cols: Sequence[str], classes: Sequence[str], where: str) -> list[int]:
        if len(value_cols) != 1:
            raise KitError(f"{where}: {len(value_cols)} value columns; a binary submission has one")
        return [0]

    def fold_counts(self, targets: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
        return {self.count_key: int((targets == 1).sum())}

    def class_totals(self, info: Any, classes: Sequence[str]) -> list[float]:
        return [info.images - info.positives, info.positives]

    def single_class(self, info: Any) -> bool:
        return info.positives is not None and info.positives in (0, info.images)

    def tree_params(self, library: str) -> dict[str, Any]:
        return {}

    def tree_metric(self, metric: Metric, library: str) -> str:
        return metric.trees.get(library, "")


@dataclass(frozen=True)
class MultiClass(Task):
    """Three classes or more: the head gives a softmax over the classes, in the records' class order."""

    name = "multiclass"
    head_activation = "softmax"
    default_loss = "cce"
    losses = ("cce", "focal")
    default_metric = "balanced_accuracy"
    keras_figures = ("balanced_accuracy",)
    count_key = "class_counts"
    count_label = "class counts"
    target_dtype = "int32"
    tree_objectives = {"lightgbm": "multiclass", "xgboost": "multi:softprob", "catboost": "MultiClass"}


TASKS = ("binary", "multiclass")


def task_for(n_classes: int) -> Task:
    """The task of labels with ``n_classes`` classes: binary up to two, multi-class beyond."""
    return Binary() if int(n_classes) <= 2 else MultiClass(int(n_classes))


def task_of_width(width: int) -> Task:
    """The task whose predictions (or model outputs) have ``width`` columns: one is binary."""
    return Binary() if int(width) == 1 else MultiClass(int(width))


def task_of_columns(columns: Sequence[str]) -> tuple[Task, list[str]]:
    """The task and classes of an oof.csv's columns (``pred``, or ``pred_<class>`` each); binary classes are "0", "1"."""
    pred = [c for c in columns if c == "pred" or c.startswith("pred_")]
    task = task_of_width(len(pred))
    return task, task.classes_of(pred)
