"""Step cost of a task by benchmark: does a Permuted- or Rotated-MNIST task cost more per
optimiser step than a Split-MNIST task? (They should not: a permutation or rotation is
applied once per task, and every batch is a slice of tensors already in memory.)

Trains, in one process and interleaved ``--rounds`` times, two tasks of each benchmark with
the published protocol's model and batch (MLP 784-400-400, batch 128) for ``--steps`` steps
per task, and times the second task's steps (after its data was made). Prints the median
milliseconds per step of each and their ratio to Split-MNIST.

    python benchmarks/task_step_cost.py --steps 300 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from lightning.pytorch import Callback

from lightning_cl.cli import run_cli

BENCHMARKS = {
    "split_mnist": ["-c", "configs/benchmarks/split_mnist.yaml", "--data.tasks", "[[0, 1], [2, 3]]"],
    "permuted_mnist": ["-c", "configs/benchmarks/permuted_mnist.yaml", "--data.num_tasks", "2"],
    "rotated_mnist": ["-c", "configs/benchmarks/rotated_mnist.yaml", "--data.angles", "[0, 30]"],
}


class SecondTaskTimer(Callback):
    """Wall time of the second task's training steps (from its first batch to its last)."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.datamodule.current_task == 1 and self.steps == 0:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.datamodule.current_task == 1:
            self.steps += 1
            self.end = time.perf_counter()


def timed_fit(args: list[str], steps: int, data_dir: str, callbacks: tuple[Callback, ...] = ()):
    """Fit two tasks of ``steps`` steps in this process (with ``callbacks`` added); return (ms per
    step of task 2, the trainer)."""
    timer = SecondTaskTimer()
    with tempfile.TemporaryDirectory() as tmp:
        cli = run_cli([*args, "--data.data_dir", data_dir, "--task_loop.steps_per_task", str(steps),
                       "--trainer.default_root_dir", tmp, "--trainer.enable_progress_bar", "false",
                       "--trainer.logger", "false", "--trainer.enable_checkpointing", "false",
                       "--trainer.enable_model_summary", "false"], run=False)
        cli.trainer.callbacks.extend([timer, *callbacks])
        cli.trainer.fit(cli.model, cli.datamodule)
    return 1000 * (timer.end - timer.start) / max(timer.steps - 1, 1), cli.trainer


def step_ms(args: list[str], steps: int, data_dir: str) -> float:
    return timed_fit(args, steps, data_dir)[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    times: dict[str, list[float]] = {name: [] for name in BENCHMARKS}
    for r in range(args.rounds):
        for name, cli_args in BENCHMARKS.items():
            times[name].append(step_ms(cli_args, args.steps, args.data_dir))
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.3f} ms/step" for n, t in times.items()), flush=True)
    split = statistics.median(times["split_mnist"])
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:15s} median {median:.3f} ms/step   ratio to split_mnist {median / split:.3f}")


if __name__ == "__main__":
    main()
