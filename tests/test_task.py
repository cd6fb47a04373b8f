"""The task spec (kit.core.task) and the metric table (kit.core.metrics.TABLE): what each declares, as its callers read it."""

from __future__ import annotations

import numpy as np
import pytest

from kit.core import metrics
from kit.core.errors import KitError
from kit.core.task import task_for, task_of_columns, task_of_width


def test_binary_and_multiclass_tasks_own_their_columns_head_and_loss():
    b, m = task_for(2), task_for(3)
    assert (b.name, b.head_units, b.head_activation, b.default_loss, b.default_metric) == (
        "binary", 1, "sigmoid", "bce", "auc")
    assert (m.name, m.head_units, m.head_activation, m.default_loss, m.default_metric) == (
        "multiclass", 3, "softmax", "cce", "balanced_accuracy")
    assert b.oof_columns(["benign", "malignant"]) == ["image_name", "target", "pred", "fold"]
    assert m.oof_columns(["a", "b", "c"]) == ["image_name", "target", "pred_a", "pred_b", "pred_c", "fold"]
    assert b.submission_columns(["benign", "malignant"]) == ["target"]
    assert m.submission_columns(["a", "b", "c"]) == ["a", "b", "c"]
    assert b.encode([0, 1]).dtype == np.float32 and m.encode([0, 2]).dtype == np.int32


def test_a_task_is_read_back_from_its_columns_and_widths():
    assert task_of_columns(["image_name", "target", "pred", "fold"]) == (task_for(2), ["0", "1"])
    assert task_of_columns(["image_name", "target", "pred_x", "pred_y", "pred_z", "fold"]) == (task_for(3), ["x", "y", "z"])
    assert task_of_width(1) == task_for(2) and task_of_width(4) == task_for(4)


def test_submission_values_follow_the_task():
    two_way = np.array([[0.2, 0.8], [0.9, 0.1]])
    np.testing.assert_array_equal(task_for(2).submission_probs(two_way, ["0", "1"]), [[0.8], [0.1]])
    assert task_for(3).value_order(["c", "a", "b"], ["a", "b", "c"], "s.csv") == [2, 0, 1]
    with pytest.raises(KitError, match=r"^s\.csv: 2 value columns; a binary submission has one$"):
        task_for(2).value_order(["a", "b"], ["a", "b"], "s.csv")
    with pytest.raises(KitError, match=r"^predictions: 2 columns for 3 classes$"):
        task_for(3).submission_probs(two_way, ["a", "b", "c"])


def test_the_metric_table_declares_what_kit_reads():
    assert [n for n, m in metrics.TABLE.items() if m.per_fold_blend] == ["auc", "pauc"]
    assert [n for n, m in metrics.TABLE.items() if m.needs_groups] == ["top15_sensitivity"]
    assert "top15_sensitivity" not in metrics.METRICS  # it cannot pick checkpoints
    assert all(m.higher_is_better for m in metrics.TABLE.values())
    # tree libraries: a built-in name for a binary task only; multi-class early-stops on kit's exact score
    auc = metrics.get("auc")
    assert task_for(2).tree_metric(auc, "lightgbm") == "auc" and task_for(2).tree_metric(auc, "catboost") == "AUC"
    assert task_for(3).tree_metric(auc, "lightgbm") == "" and task_for(2).tree_metric(metrics.get("pauc"), "lightgbm") == ""
    # the running Keras figure: the metric's where the head feeds it, else the task's
    assert task_for(2).keras_figure(metrics.get("pauc")) == "auc"
    assert task_for(2).keras_figure(metrics.get("balanced_accuracy")) == "auc"
    assert task_for(5).keras_figure(auc) == "balanced_accuracy"


def test_a_grouped_metric_scores_with_its_groups():
    y, p, g = np.array([1, 0, 1, 0]), np.array([0.9, 0.1, 0.2, 0.3]), np.array(["a", "a", "b", "b"])
    assert metrics.get("top15_sensitivity").score(y, p, g) == 1.0
    with pytest.raises(KitError, match=r"^metric: unknown metric 'nope'; known: auc, pauc, accuracy, balanced_accuracy$"):
        metrics.get("nope")
