"""Overhead of lightning-cl against a plain PyTorch loop doing the same work (whole processes).

(a) A fresh process per run. Runs, alternately and ``--repeats`` times each:

* ``python -m lightning_cl fit -c configs/split_mnist/sequential.yaml`` (logging to
  TensorBoard, progress bar, checkpoints and metrics on, as a user runs it), and
* ``python benchmarks/plain_torch_loop.py`` (the same work by hand: see its docstring),

timing each process from start to exit, and prints both medians and their ratio. Both must
reach the same final seen-class accuracy (same seed, same data order), which shows they did
the same computation.

(b) A warm worker (``--warm N``): N runs of the same config (seeds 0..N-1) in one process, as
``lightning-cl-study`` runs them (``lightning_cl.study.worker.run_chunk``), timed from process
start to exit, against N plain PyTorch processes with the same seeds; prints the per-run cost
of each and their ratio. Every seed must end at the same final accuracy on both sides.

    python benchmarks/overhead.py --repeats 3 --warm 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


WARM_WORKER = """
from lightning_cl.study.plan import Resolver
from lightning_cl.study.worker import run_chunk
resolver = Resolver()
args = ["-c", "configs/split_mnist/sequential.yaml", "--data.data_dir", {data_dir!r}]
run_chunk([resolver.spec("sequential", args, seed) for seed in range({n})], {root!r})
"""


def warm_worker_against_plain(n: int, data_dir: str) -> None:
    """(b): N runs in one warm worker against N plain PyTorch processes."""
    with tempfile.TemporaryDirectory() as tmp:
        warm = timed([sys.executable, "-c", WARM_WORKER.format(n=n, data_dir=data_dir, root=str(Path(tmp) / "warm"))])
        plain = sum(timed([sys.executable, "benchmarks/plain_torch_loop.py", "--data-dir", data_dir, "--seed", str(seed),
                           "--log-dir", str(Path(tmp) / f"plain{seed}")]) for seed in range(n))
        ours = sorted(json.loads(p.read_text())["final_seen_accuracy"] for p in (Path(tmp) / "warm").rglob("results.json"))
        theirs = sorted(json.loads((Path(tmp) / f"plain{s}" / "results.json").read_text())["seen_accuracy"][-1]
                        for s in range(n))
    print(f"warm worker, {n} runs: {warm:.2f} s in all, {warm / n:.2f} s per run; final seen acc {ours}")
    print(f"plain PyTorch, {n} processes: {plain:.2f} s in all, {plain / n:.2f} s per run; final seen acc {theirs}")
    print(f"ratio warm worker / plain PyTorch, per run: {warm / plain:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3, help="(a): fresh processes of each side")
    parser.add_argument("--warm", type=int, default=0, help="(b): runs in one warm worker (0: skip (b))")
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    if args.repeats:
        fresh_process_against_plain(args.repeats, args.data_dir)
    if args.warm:
        warm_worker_against_plain(args.warm, args.data_dir)


def fresh_process_against_plain(repeats: int, data_dir: str) -> None:
    """(a): one fresh process per run on both sides."""
    times: dict[str, list[float]] = {"lightning-cl": [], "plain PyTorch": []}
    final: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            ours, plain = Path(tmp) / f"ours{i}", Path(tmp) / f"plain{i}"
            times["lightning-cl"].append(timed([
                sys.executable, "-m", "lightning_cl", "fit", "-c", "configs/split_mnist/sequential.yaml",
                "--data.data_dir", data_dir, "--trainer.default_root_dir", str(ours),
            ]))
            times["plain PyTorch"].append(timed([
                sys.executable, "benchmarks/plain_torch_loop.py", "--data-dir", data_dir, "--log-dir", str(plain),
            ]))
            final["lightning-cl"] = json.loads(next(ours.rglob("results.json")).read_text())["final_seen_accuracy"]
            final["plain PyTorch"] = json.loads((plain / "results.json").read_text())["seen_accuracy"][-1]
            print(f"run {i + 1}: lightning-cl {times['lightning-cl'][-1]:.2f} s, plain {times['plain PyTorch'][-1]:.2f} s", flush=True)
    for name, values in times.items():
        print(f"{name:14s} median {statistics.median(values):6.2f} s  (runs: {', '.join(f'{v:.2f}' for v in values)})  "
              f"final seen acc {final[name]:.4f}")
    ratio = statistics.median(times["lightning-cl"]) / statistics.median(times["plain PyTorch"])
    print(f"ratio lightning-cl / plain PyTorch: {ratio:.3f}")


if __name__ == "__main__":
    main()
