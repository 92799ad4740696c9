"""Under DDP every process must hold the same OGD basis: two CPU processes (gloo) on real MNIST."""

import os
import subprocess
import sys

import pytest
import torch

from conftest import REPO

pytestmark = pytest.mark.mnist


@pytest.mark.parametrize("variant", ["mean_loss", "gtl"])
def test_both_processes_hold_the_same_basis(variant, mnist_dir, tmp_path):
    config = (REPO / "configs/split_mnist/ogd_bn.yaml").read_text()
    assert "variant: mean_loss" in config
    variant_config = tmp_path / "ogd_variant.yaml"
    variant_config.write_text(config.replace("variant: mean_loss", f"variant: {variant}\n        examples_per_task: 6"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]),
           "OGD_BASIS_DIR": str(tmp_path), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "lightning_cl", "fit", "-c", str(variant_config),
           "--data.data_dir", mnist_dir, "--data.tasks", "[[1, 2], [3, 4], [5, 6]]",
           "--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.limit_train_batches", "4",
           "--trainer.enable_progress_bar", "false", "--task_loop.epochs_per_task", "1",
           "--trainer.default_root_dir", str(tmp_path / "runs"),
           "--trainer.callbacks+=probes.SaveBasisPerRank"]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rank0, rank1 = (torch.load(tmp_path / f"basis_rank{r}.pt") for r in (0, 1))
    # Each process trained on its own half of every task; the basis must still be one.
    expected_rows = [1, 1] if variant == "mean_loss" else [6, 6]  # after tasks 1 and 2 (none after the last)
    assert rank0["vectors_per_task"] == rank1["vectors_per_task"] == expected_rows
    assert torch.equal(rank0["basis"], rank1["basis"])
    assert torch.allclose(rank0["basis"] @ rank0["basis"].T, torch.eye(sum(expected_rows)), atol=1e-4)
