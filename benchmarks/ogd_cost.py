"""Cost of Orthogonal Gradient Descent (Farajtabar et al. 2020) per training step and per task.

Times, on the notebook's BatchNorm MLP with Adam and batch 64, a plain training step
(forward, backward, optimiser step) against the same step with OGD's projection (the
callback's ``on_before_optimizer_step``), for

* the notebook's variant at its largest basis, 4 vectors (during task 5): a dense basis,
  ``g - B^T (B g)``;
* the paper's GTL variant with 200 examples x 4 tasks (800 gradients, on random data): layer
  factors (lightning_cl/factored_span.py),

alternating plain and OGD rounds so that load on a shared machine hits both alike, and
reports the medians, their ratio and OGD's state in MiB (a dense basis of the 800 GTL
gradients would be 800 x n floats). It also times each GTL registration (200 per-example
gradients as factors, and the new projector).

    python benchmarks/ogd_cost.py --steps 200 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from lightning_cl.methods.ogd import OrthogonalGradientDescent
from lightning_cl.classifier import ContinualClassifier


def make_step(model: ContinualClassifier, optimizer: torch.optim.Optimizer, ogd: OrthogonalGradientDescent | None):
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        logits, hidden = model(x)
        loss = model.loss(logits, hidden, y)
        optimizer.zero_grad()
        if ogd is not None:  # Lightning's order: on_before_backward, backward, on_before_optimizer_step
            ogd.on_before_backward(None, model, loss)
        loss.backward()
        if ogd is not None:
            ogd.on_before_optimizer_step(None, model, optimizer)
        optimizer.step()

    return step


def time_steps(step, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    return (time.perf_counter() - start) / len(batches) * 1e3  # ms per step


def state_mib(ogd: OrthogonalGradientDescent) -> float:
    state = ogd.state_dict()
    tensors = [state["basis"]] if state["basis"] is not None else []
    if state["factors"] is not None:
        tensors += [*state["factors"]["deltas"], *state["factors"]["inputs"], state["factors"]["dense"]]
    return sum(t.numel() * t.element_size() for t in tensors) / 2**20


def notebook_ogd(model: ContinualClassifier, rows: int = 4) -> OrthogonalGradientDescent:
    ogd = OrthogonalGradientDescent()
    ogd.on_train_start(None, model)
    n = ogd.basis.shape[1]
    ogd.basis = torch.linalg.qr(torch.randn(n, rows)).Q.T.contiguous()  # orthonormal rows, like a real basis
    return ogd


def gtl_ogd(model: ContinualClassifier, tasks: int = 4, examples: int = 200) -> OrthogonalGradientDescent:
    """OGD-GTL after ``tasks`` task ends on random data, timing each registration."""
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(examples, 784, generator=g), torch.randint(0, 10, (examples,), generator=g)) for _ in range(tasks)]

    def loader(task: int):
        x, y = data[task]
        return iter([(x[i : i + 64], y[i : i + 64], torch.zeros_like(y[i : i + 64])) for i in range(0, examples, 64)])

    trainer = SimpleNamespace(datamodule=SimpleNamespace(task_train_loader=loader, num_tasks=tasks + 1), world_size=1)
    ogd = OrthogonalGradientDescent(variant="gtl", examples_per_task=examples)
    ogd.on_train_start(trainer, model)
    for task in range(tasks):
        start = time.perf_counter()
        ogd.on_task_end(trainer, model, task)
        print(f"GTL registration of task {task + 1} ({examples} examples): {time.perf_counter() - start:.2f} s, "
              f"span now {ogd.basis_size} dimensions")
    return ogd


def compare(name: str, make_ogd, batches, rounds: int) -> None:
    torch.manual_seed(0)
    model = ContinualClassifier(norm="batch", lr=1e-4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    ogd = make_ogd(model)
    ogd.on_train_epoch_start(None, model)
    plain, projected = make_step(model, optimizer, None), make_step(model, optimizer, ogd)
    time_steps(plain, batches[:20]), time_steps(projected, batches[:20])  # warm-up
    times: dict[str, list[float]] = {"plain": [], "ogd": []}
    for _ in range(rounds):
        times["plain"].append(time_steps(plain, batches))
        times["ogd"].append(time_steps(projected, batches))
    p, o = statistics.median(times["plain"]), statistics.median(times["ogd"])
    n = sum(q.numel() for q in model.parameters())
    print(f"{name}: span {ogd.basis_size} of n = {n}, state {state_mib(ogd):.1f} MiB "
          f"(dense: {ogd.basis_size * n * 4 / 2**20:.1f} MiB); "
          f"plain step {p:.3f} ms, OGD step {o:.3f} ms, ratio {o / p:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(64, 784, generator=g), torch.randint(0, 10, (64,), generator=g)) for _ in range(args.steps)]
    print(f"torch {torch.__version__}, {args.threads} thread(s), {args.steps} steps x {args.rounds} rounds, CPU")
    compare("notebook (mean loss), 4 tasks", notebook_ogd, batches, args.rounds)
    compare("paper GTL, 200 examples x 4 tasks", gtl_ogd, batches, args.rounds)


if __name__ == "__main__":
    main()
