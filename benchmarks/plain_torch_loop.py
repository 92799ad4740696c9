"""The baseline of ``benchmarks/overhead.py``: the sequential Split-MNIST run as a plain PyTorch loop.

It does the work of ``lightning-cl fit -c configs/split_mnist/sequential.yaml``, as a
careful researcher would write it by hand: MNIST checksums verified; the same data in
memory, split and shuffling; the same MLP, Adam lr 1e-3, batch 64, 5 epochs per task; the
training loss every 50 steps and, per epoch, the training and validation loss/accuracy, to
TensorBoard; a checkpoint (model and optimiser) every epoch; per task the test accuracy on
every task, the seen-class test loss/accuracy and the sparsity, to TensorBoard and to a
JSON file. No Lightning and no progress bar (it prints a line per epoch instead).

    python benchmarks/plain_torch_loop.py --data-dir data --log-dir /tmp/plain_run
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

from torch.utils.tensorboard import SummaryWriter

from lightning_cl.data.mnist_files import ensure_mnist
from lightning_cl.data.mnist_tensors import load_mnist, stratified_holdout
from lightning_cl.data.tensor_loader import TensorBatchLoader
from lightning_cl.models.mlp import MLP

TASKS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 0]]


def subset(x, y, classes):
    keep = torch.isin(y, torch.tensor(classes))
    return x[keep], y[keep]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", required=True)
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    ensure_mnist(args.data_dir)
    os.makedirs(args.log_dir, exist_ok=True)
    writer = SummaryWriter(args.log_dir)

    x, y = load_mnist(args.data_dir, train=True)
    x_test, y_test = load_mnist(args.data_dir, train=False)
    val = stratified_holdout(y, 0.1, 0)
    x_train, y_train, x_val, y_val = x[~val], y[~val], x[val], y[val]

    model = MLP()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    results = {"accuracy_matrix": [], "seen_accuracy": [], "seen_loss": [], "sparsity": []}
    epoch = step = 0
    for t, classes in enumerate(TASKS):
        seen = [c for task in TASKS[: t + 1] for c in task]
        xt, yt = subset(x_train, y_train, classes)
        xv, yv = subset(x_val, y_val, seen)
        for _ in range(args.epochs):
            model.train()
            sums = torch.zeros(3)
            for xb, yb in TensorBatchLoader(xt, yt, batch_size=64, shuffle=True, seed=args.seed * 1_000_003 + epoch):
                logits, _ = model(xb)
                loss = F.cross_entropy(logits, yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if step % 50 == 0:
                    writer.add_scalar("train/loss_step", loss.item(), step)
                step += 1
                sums += torch.stack([loss.detach() * len(yb), (logits.argmax(1) == yb).sum(), torch.tensor(len(yb))])
            model.eval()
            with torch.no_grad():
                logits, _ = model(xv)
            loss_sum, correct, n = sums.tolist()
            epoch_metrics = {
                "train/loss": loss_sum / n,
                "train/acc": correct / n,
                "val/loss": F.cross_entropy(logits, yv).item(),
                "val/acc": (logits.argmax(1) == yv).float().mean().item(),
            }
            for name, value in epoch_metrics.items():
                writer.add_scalar(name, value, step)
            print(f"epoch {epoch}: " + ", ".join(f"{k} {v:.4f}" for k, v in epoch_metrics.items()))
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "task": t},
                       os.path.join(args.log_dir, "last.ckpt"))
            epoch += 1
        with torch.no_grad():
            logits, hidden = model(x_test)
        pred = logits.argmax(1)
        row = [(pred[m] == y_test[m]).float().mean().item() for m in (torch.isin(y_test, torch.tensor(c)) for c in TASKS)]
        m = torch.isin(y_test, torch.tensor(seen))
        zeros = [(h[m] == 0).sum().item() for h in hidden]
        sizes = [h[m].numel() for h in hidden]
        results["accuracy_matrix"].append(row)
        results["seen_accuracy"].append((pred[m] == y_test[m]).float().mean().item())
        results["seen_loss"].append(F.cross_entropy(logits[m], y_test[m]).item())
        results["sparsity"].append({"h1": zeros[0] / sizes[0], "h2": zeros[1] / sizes[1], "overall": sum(zeros) / sum(sizes)})
        for j, acc in enumerate(row):
            writer.add_scalar(f"test/acc_task{j + 1}", acc, step)
        writer.add_scalar("test/acc_seen", results["seen_accuracy"][-1], step)
        writer.add_scalar("test/loss_seen", results["seen_loss"][-1], step)
        for k, v in results["sparsity"][-1].items():
            writer.add_scalar(f"sparsity/{k}", v, step)
        print(f"task {t + 1}: seen acc {results['seen_accuracy'][-1]:.4f}")
        results["wall_time_s"] = time.perf_counter() - start
        with open(os.path.join(args.log_dir, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
    writer.close()


if __name__ == "__main__":
    main()
