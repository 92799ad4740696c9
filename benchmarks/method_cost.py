"""Step cost and memory of each continual-learning method against naive fine-tuning, on the
published Split-MNIST model (MLP 784-400-400, Adam, batch 128), in one process, methods
interleaved ``--rounds`` times.

Each run trains tasks [0, 1] and [2, 3] for ``--steps`` steps each (class-IL) and times task
2's steps, where every method is active (its memory, penalty or basis holds task 1). Prints
the median ms per step, the ratio to naive fine-tuning, the method's extra state (its
checkpointed tensors) in MiB, and the seconds its end of task 1 takes beyond naive fine-tuning's
(from task 1's last step to task 2's first: what the method keeps of the task, e.g. EWC's
expected Fisher over all of the task's training examples). Targets: regularisers (EWC, SI, MAS)
at most 1.2x; ER and LwF at most 2.2x (twice the forward work); A-GEM, GPM, OGD at most 2.5x, in
every projection form (``gpm:both``, ``ogd:update``...: ``--trainer.callbacks.project both``; the
methods studies run GPM with ``both`` and OGD with ``update``). GEM makes one more forward and backward
pass per earlier task (on all of its memory) and solves a quadratic programme on the CPU when
a step conflicts: it has no target. Neither have the replay methods of the second protocol
(iCaRL, Mammoth's ER, ER-ACE, DER, DER++, GDumb, whose task end is its whole training on the memory).

``--protocol mammoth`` times them under Mammoth's seq-mnist instead (MLP 784-100-100, SGD, batch
10; configs/benchmarks/seq_mnist.yaml), where a step is mostly fixed costs.

    python benchmarks/method_cost.py --steps 200 --rounds 3
    python benchmarks/method_cost.py --methods gpm gpm:update gpm:both ogd ogd:update ogd:both
    python benchmarks/method_cost.py --protocol mammoth --methods er_reservoir der derpp gem agem icarl gdumb
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from lightning.pytorch import Callback

from lightning_cl.methods.method import methods_of
from task_step_cost import timed_fit

PROTOCOLS = {
    "van_de_ven": ["-c", "configs/benchmarks/split_mnist.yaml", "--data.tasks", "[[0, 1], [2, 3]]", "--data.scenario", "class"],
    "mammoth": ["-c", "configs/benchmarks/seq_mnist.yaml", "--data.tasks", "[[0, 1], [2, 3]]",
                "--task_loop.epochs_per_task", "null"],
}
METHODS = {
    "none": [],
    **{name: ["-c", f"configs/methods/{name}.yaml"]
       for name in ("ewc", "online_ewc", "si", "mas", "lwf", "er", "agem", "gem", "gpm", "ogd",
                    "icarl", "er_reservoir", "er_ace", "der", "derpp", "gdumb")},
    **{f"{name}:{form}": ["-c", f"configs/methods/{name}.yaml", "--trainer.callbacks.project", form]
       for name in ("gpm", "ogd") for form in ("update", "both")},
}


class TaskEndTimer(Callback):
    """Seconds from the first task's last training step to the second task's first: the task end
    (the recorder's evaluation, and each method's consolidate)."""

    def __init__(self) -> None:
        self.last_step = 0.0
        self.seconds: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.datamodule.current_task == 0:
            self.last_step = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.datamodule.current_task == 1 and self.seconds is None:
            self.seconds = time.perf_counter() - self.last_step


def state_mib(state) -> float:
    """MiB of the tensors in a (nested) state_dict."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size() / 2**20
    if isinstance(state, dict):
        return sum(state_mib(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_mib(v) for v in state)
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--protocol", choices=list(PROTOCOLS), default="van_de_ven",
                        help="the model and optimiser the steps are timed on (default: the published Split-MNIST's)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="the methods to time (none, the baseline, is always timed)")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}, protocol: {args.protocol}")
    base = PROTOCOLS[args.protocol]
    methods = {name: METHODS[name] for name in dict.fromkeys(["none", *args.methods])}
    times: dict[str, list[float]] = {name: [] for name in methods}
    memory: dict[str, float] = {}
    task_end: dict[str, list[float]] = {name: [] for name in METHODS}
    for r in range(args.rounds):
        for name, extra in methods.items():
            timer = TaskEndTimer()
            ms, trainer = timed_fit([*base, *extra], args.steps, args.data_dir, callbacks=(timer,))
            times[name].append(ms)
            task_end[name].append(timer.seconds)
            memory[name] = sum(state_mib(m.state_dict()) for m in methods_of(trainer))
        print(f"round {r + 1}: " + ", ".join(f"{n} {t[-1]:.2f}" for n, t in times.items()), flush=True)
    naive = statistics.median(times["none"])
    naive_end = statistics.median(task_end["none"])
    print(f"{'method':12s} {'ms/step':>8s} {'x naive':>8s} {'state MiB':>10s} {'task end +s':>12s}")
    for name, values in times.items():
        median = statistics.median(values)
        extra_end = statistics.median(task_end[name]) - naive_end
        print(f"{name:12s} {median:8.2f} {median / naive:8.2f} {memory[name]:10.1f} {extra_end:12.2f}")


if __name__ == "__main__":
    main()
