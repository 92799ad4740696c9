"""Overhead of lightning-cl against a plain PyTorch loop doing the same work (whole processes).

Runs, alternately and ``--repeats`` times each:

* ``python -m lightning_cl fit -c configs/split_mnist/sequential.yaml`` (logging to
  TensorBoard, progress bar, checkpoints and metrics on, as a user runs it), and
* ``python benchmarks/plain_torch_loop.py`` (the same work by hand: see its docstring),

timing each process from start to exit, and prints both medians and their ratio. Both must
reach the same final seen-class accuracy (same seed, same data order), which shows they did
the same computation.

    python benchmarks/overhead.py --repeats 3
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default="data")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"lightning-cl": [], "plain PyTorch": []}
    final: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            ours, plain = Path(tmp) / f"ours{i}", Path(tmp) / f"plain{i}"
            times["lightning-cl"].append(timed([
                sys.executable, "-m", "lightning_cl", "fit", "-c", "configs/split_mnist/sequential.yaml",
                "--data.data_dir", args.data_dir, "--trainer.default_root_dir", str(ours),
            ]))
            times["plain PyTorch"].append(timed([
                sys.executable, "benchmarks/plain_torch_loop.py", "--data-dir", args.data_dir, "--log-dir", str(plain),
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
