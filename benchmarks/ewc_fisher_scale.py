"""How large EWC's Fisher is after a Split-MNIST task, empirical against expected, and what the
expected Fisher over the whole task costs at the task end.

Trains the published protocol's model (MLP 784-400-400, Adam 1e-3, batch 128, 2000 steps) on
the first task, digits 0 and 1, in task-IL (the softmax over the task's two units), then
measures the diagonal Fisher on 1000 of its training examples both ways
(``lightning_cl.maths.passes.fisher_diagonal``): with the true label (the empirical Fisher) and
over every label weighted by the model's probability (the expected Fisher, the protocol's and
EWC's default). Prints the final loss, the mean probability of the true label and both sums. A
model this confident has an empirical Fisher near 0, which is why EWC's task-IL lambda of 1e5
hardly binds with it.

Then times the expected Fisher as EWC takes it at a task end, over all of the task's training
examples, from the Linear layers' factors (``linears``), in task-IL (2 units) and class-IL (10),
and the per-example (``vmap``) path on ``--vmap-examples`` of them, for comparison.

    python benchmarks/ewc_fisher_scale.py
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lightning_cl.data.mnist_files import ensure_mnist
from lightning_cl.data.mnist_tensors import load_mnist
from lightning_cl.models.mlp import MLP
from lightning_cl.maths.passes import fisher_diagonal


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vmap-examples", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    ensure_mnist(args.data_dir)
    x, y = load_mnist(args.data_dir, train=True, normalize=False)
    keep = (y == 0) | (y == 1)
    x, y = x[keep], y[keep]
    net = MLP(norm="none", dropout=0.0, hidden=(400, 400), num_classes=10)
    units = torch.zeros(1, 10, dtype=torch.bool)
    units[0, :2] = True  # task-IL: the first task's units
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(args.steps):
        i = torch.randint(0, len(x), (128,))
        logits = net(x[i])[0].masked_fill(~units, torch.finfo(torch.float32).min)
        loss = F.cross_entropy(logits, y[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    i = torch.randperm(len(x))[:1000]
    xs, ys, t = x[i], y[i], torch.zeros(1000, dtype=torch.long)
    with torch.no_grad():
        p_true = F.softmax(net(xs)[0][:, :2], dim=1).gather(1, ys[:, None]).mean().item()
    sums = {labels: sum(f.sum() for f in fisher_diagonal(net, xs, ys, t, unit_mask=units, labels=labels).values()).item()
            for labels in ("empirical", "expected")}
    print(f"seed {args.seed}: last batch loss {loss.item():.2e}, mean p(true label) {p_true:.6f}")
    print(f"sum of the diagonal Fisher: empirical {sums['empirical']:.3e}, expected {sums['expected']:.3e}, "
          f"ratio {sums['expected'] / sums['empirical']:.0f}")
    t = torch.zeros(len(x), dtype=torch.long)
    for scenario, mask in (("task-IL", units), ("class-IL", None)):
        start = time.perf_counter()
        fisher_diagonal(net, x, y, t, unit_mask=mask, labels="expected", linears=net.linear_layers())
        factored = time.perf_counter() - start
        n = args.vmap_examples
        start = time.perf_counter()
        fisher_diagonal(net, x[:n], y[:n], t[:n], unit_mask=mask, labels="expected")
        per_example = time.perf_counter() - start
        print(f"{scenario}: the expected Fisher over all {len(x)} training examples from the Linear layers' "
              f"factors {factored:.2f} s; per example (vmap) {per_example:.2f} s for {n}, "
              f"~{per_example * len(x) / n:.0f} s for all")


if __name__ == "__main__":
    main()
