"""A shrunk Split-MNIST protocol for the methods' MNIST tests: the published protocol's MLP and
optimiser (configs/benchmarks/split_mnist.yaml), three tasks of 100 steps in task-IL, where
naive fine-tuning forgets measurably (BWT about -0.1) and every regularisation method is known
to help. The naive run is made once per session and shared by the methods' tests."""

from __future__ import annotations

from pathlib import Path

METHODS = Path(__file__).resolve().parent.parent / "configs" / "methods"

SHRUNK = ("--data.scenario", "task", "--data.tasks", "[[0, 1], [2, 3], [4, 5]]", "--task_loop.steps_per_task", "100",
          "--trainer.enable_checkpointing", "false")
_runs: dict[tuple[str, ...], dict] = {}


def shrunk_run(run_cli, method: str | None = None, *overrides: str) -> dict:
    """results.json of the shrunk protocol with ``configs/methods/<method>.yaml`` (None: naive)."""
    key = (method or "none", *overrides)
    if key not in _runs:
        configs = () if method is None else ("-c", str(METHODS / f"{method}.yaml"))
        _runs[key] = run_cli("benchmarks/split_mnist.yaml", *SHRUNK, *configs, *overrides)
    return _runs[key]

# The stream replay methods (Mammoth's ER, DER, DER++) with Mammoth's seq-mnist optimisation,
# shrunk: class-IL, batch 10, SGD lr 0.03 (utils/best_args.py's seq-mnist sgd, der and derpp
# rate; one rate for the method and the naive run it is compared with), 200 steps (2000 examples)
# per task. Naive training keeps only the last task (ACC ~0.33, BWT ~ -0.95).
STREAM = ("--data.scenario", "class", "--data.batch_size", "10", "--model.optimizer", "sgd", "--model.lr", "0.03",
          "--task_loop.steps_per_task", "200")
