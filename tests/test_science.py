"""The notebook's results, reproduced on the real MNIST with the shipped configs (marked ``mnist``).

The notebook's numbers are single runs; bounds here allow for seed-to-seed spread.
"""

import pytest

pytestmark = pytest.mark.mnist

NOTEBOOK_SEQUENTIAL_PLAIN = [0.996, 0.486, 0.314, 0.252, 0.1985]


@pytest.fixture(scope="module")
def concurrent_plain(run_cli):
    return run_cli("split_mnist/concurrent.yaml")


def test_concurrent_plain_mlp_reaches_the_upper_bound(concurrent_plain):
    assert concurrent_plain["final_seen_accuracy"] >= 0.96
    assert concurrent_plain["epochs_per_task"] == [5]


def test_concurrent_batchnorm_mlp(run_cli):
    assert run_cli("split_mnist/concurrent_bn.yaml")["final_seen_accuracy"] >= 0.97


def test_sequential_plain_mlp_forgets_as_in_the_notebook(run_cli):
    results = run_cli("split_mnist/sequential.yaml")
    seen = results["seen_accuracy"]
    assert seen[0] >= 0.99
    for ours, notebook in zip(seen[1:], NOTEBOOK_SEQUENTIAL_PLAIN[1:]):
        assert ours == pytest.approx(notebook, abs=0.04)
    assert 0.18 <= results["final_seen_accuracy"] <= 0.22
    # Catastrophic forgetting: after each task only the newest task is recognised.
    matrix = results["accuracy_matrix"]
    for t in range(1, 5):
        assert matrix[t][t] > 0.95 and max(matrix[t][:t]) < 0.05
    assert min(results["seen_loss"][1:]) > 5.0  # confidently wrong on old classes
    # Without L1, the sparsity grows as tasks accumulate (notebook: 0.50 -> 0.90).
    overall = [s["overall"] for s in results["sparsity"]]
    assert overall[0] < 0.6 and overall[-1] > 0.8


def test_l1_penalty_buys_sparsity_with_accuracy(run_cli, concurrent_plain):
    strong, stronger = (run_cli("split_mnist/concurrent.yaml", "--model.lambda_l1", str(lam)) for lam in (1.0, 2.0))
    plain_sparsity = concurrent_plain["sparsity"][-1]["overall"]
    assert plain_sparsity < 0.65  # notebook 0.544
    assert strong["sparsity"][-1]["overall"] > plain_sparsity + 0.25  # notebook 0.924
    assert stronger["sparsity"][-1]["overall"] > plain_sparsity + 0.25  # notebook 0.933
    assert stronger["final_seen_accuracy"] < concurrent_plain["final_seen_accuracy"] - 0.02  # notebook 0.906 vs 0.972
