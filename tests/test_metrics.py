"""The continual-learning metrics against values computed by hand on small matrices."""

import pytest

from lightning_cl.metrics import (
    CL_METRICS, average_accuracy, backward_transfer, cl_metrics, forgetting, forward_transfer, learning_accuracy,
)

# R[i][j]: accuracy on task j after training task i (3 tasks).
R = [
    [0.9, 0.1, 0.2],
    [0.6, 0.8, 0.3],
    [0.5, 0.7, 1.0],
]
B = [0.1, 0.2, 0.25]  # random-init accuracies


def test_acc_is_the_mean_of_the_last_row():
    assert average_accuracy(R) == pytest.approx((0.5 + 0.7 + 1.0) / 3)


def test_bwt_compares_the_end_with_just_after_learning():
    assert backward_transfer(R) == pytest.approx(((0.5 - 0.9) + (0.7 - 0.8)) / 2)


def test_fwt_compares_before_learning_with_random_init():
    assert forward_transfer(R, B) == pytest.approx(((0.1 - 0.2) + (0.3 - 0.25)) / 2)
    assert forward_transfer(R, None) is None


def test_forgetting_is_the_drop_from_the_best_earlier_value():
    # Task 0: best 0.9 (after task 0), ends 0.5; task 1: best 0.8, ends 0.7.
    assert forgetting(R) == pytest.approx(((0.9 - 0.5) + (0.8 - 0.7)) / 2)
    # The best value need not be the diagonal: task 0 improves after task 1, then drops.
    assert forgetting([[0.6, 0.0], [0.8, 0.9], [0.3, 0.9]][:3]) == pytest.approx(((0.8 - 0.3) + 0.0) / 2)


def test_learning_accuracy_is_the_mean_diagonal():
    assert learning_accuracy(R) == pytest.approx((0.9 + 0.8 + 1.0) / 3)


def test_metrics_over_the_tasks_trained_so_far():
    partial = R[:2]  # after two of three tasks: the columns of the future task are ignored
    m = cl_metrics(partial, B)
    assert m["acc"] == pytest.approx((0.6 + 0.8) / 2)
    assert m["bwt"] == pytest.approx(0.6 - 0.9) and m["forgetting"] == pytest.approx(0.9 - 0.6)
    assert m["fwt"] == pytest.approx(0.1 - 0.2)
    one = cl_metrics(R[:1], B)
    assert one["acc"] == 0.9 and one["bwt"] is None and one["fwt"] is None and one["forgetting"] is None
    assert cl_metrics([], B)["acc"] is None


def test_each_metric_has_one_key_and_one_label():
    # The keys of results.json, summary.json and TensorBoard; the labels of the report and the log.
    assert [m.key for m in CL_METRICS] == list(cl_metrics(R, B)) == ["acc", "bwt", "fwt", "forgetting", "learning_acc"]
    assert [m.label for m in CL_METRICS] == ["ACC", "BWT", "FWT", "forgetting", "learning acc"]
