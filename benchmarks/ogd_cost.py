"""Cost of Orthogonal Gradient Descent (Farajtabar et al. 2020) per training step and per task.

Times, on the BatchNorm MLP of SPEC.md with Adam and batch 64, a plain training step
(forward, backward, optimiser step) against the same step with OGD's projection (the
callback's ``on_before_optimizer_step``: flatten, ``g - B^T (B g)``, copy back), for

* the notebook's variant at its largest basis, 4 vectors (during task 5), and
* the paper's GTL variant with 200 examples x 4 tasks (800 vectors),

alternating plain and OGD rounds so that load on a shared machine hits both alike, and
reports the medians, their ratio and the basis memory. It also times one GTL registration
(200 per-example gradients and their Gram-Schmidt into a 600-vector basis).

    python benchmarks/ogd_cost.py --steps 200 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import torch

from lightning_cl.callbacks.ogd import OrthogonalGradientDescent
from lightning_cl.classifier import ContinualClassifier
from lightning_cl.gradients import orthonormal_extend


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


def ogd_with_basis(model: ContinualClassifier, rows: int) -> OrthogonalGradientDescent:
    ogd = OrthogonalGradientDescent()
    ogd.on_train_start(None, model)
    n = ogd.basis.shape[1]
    ogd.basis = torch.linalg.qr(torch.randn(n, rows)).Q.T.contiguous()  # orthonormal rows, like a real basis
    ogd.on_train_epoch_start(None, model)
    return ogd


def compare(name: str, rows: int, batches, rounds: int) -> None:
    torch.manual_seed(0)
    model = ContinualClassifier(norm="batch", lr=1e-4)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    ogd = ogd_with_basis(model, rows)
    plain, projected = make_step(model, optimizer, None), make_step(model, optimizer, ogd)
    time_steps(plain, batches[:20]), time_steps(projected, batches[:20])  # warm-up
    times: dict[str, list[float]] = {"plain": [], "ogd": []}
    for _ in range(rounds):
        times["plain"].append(time_steps(plain, batches))
        times["ogd"].append(time_steps(projected, batches))
    p, o = statistics.median(times["plain"]), statistics.median(times["ogd"])
    mib = ogd.basis.numel() * ogd.basis.element_size() / 2**20
    print(f"{name}: basis {rows} x {ogd.basis.shape[1]} = {mib:.1f} MiB; "
          f"plain step {p:.3f} ms, OGD step {o:.3f} ms, ratio {o / p:.3f}")


def time_gtl_registration(examples: int, existing: int) -> None:
    torch.manual_seed(0)
    model = ContinualClassifier(norm="batch")
    x, y = torch.randn(examples, 784), torch.randint(0, 10, (examples,))
    batches = [(x[i : i + 64], y[i : i + 64]) for i in range(0, examples, 64)]
    trainer = SimpleNamespace(datamodule=SimpleNamespace(train_dataloader=lambda: iter(batches)), world_size=1)
    ogd = OrthogonalGradientDescent(variant="gtl", examples_per_task=examples)
    ogd.on_train_start(trainer, model)
    basis = torch.linalg.qr(torch.randn(ogd.basis.shape[1], existing)).Q.T.contiguous()
    start = time.perf_counter()
    vectors = ogd._per_example_gradients(trainer, model)
    mid = time.perf_counter()
    extended = orthonormal_extend(basis, vectors)
    end = time.perf_counter()
    print(f"GTL registration of {examples} examples into a {existing}-vector basis: per-example gradients "
          f"{mid - start:.2f} s, Gram-Schmidt {end - mid:.2f} s, basis now {len(extended)} vectors")


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
    compare("notebook (mean loss), 4 tasks", 4, batches, args.rounds)
    compare("paper GTL, 200 examples x 4 tasks", 800, batches, args.rounds)
    time_gtl_registration(200, 600)


if __name__ == "__main__":
    main()
