"""A warm study worker's memory across runs: the resident set size after each of ``--runs`` short
rot-mnist runs (20 tasks, ``--steps`` steps each) made in one process as a study worker makes
them (``lightning_cl.study.worker.run_spec``), with the worker's release of freed memory between
runs and without it (``--no-release``).

    python benchmarks/worker_memory.py --runs 4
    python benchmarks/worker_memory.py --runs 4 --no-release

Each run builds the 20 rotated test sets (31 MB each) and its training sets; glibc keeps such
blocks in the heap once freed, so without the release a worker grows by about a run's data per run.
"""

from __future__ import annotations

import argparse
import tempfile
from unittest import mock

import torch

from lightning_cl.study import worker
from lightning_cl.study.plan import RunSpec


def resident_mib() -> float:
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--no-release", action="store_true", help="skip the release of freed memory between runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    patch = mock.patch.object(worker, "release_freed_memory", lambda: None) if args.no_release else mock.MagicMock()
    with tempfile.TemporaryDirectory() as root, patch:
        for i in range(args.runs):
            spec = RunSpec(name=f"rot/none/r{i}", seed=i, run_id=f"memory{i}",
                           args=("-c", "configs/benchmarks/rot_mnist.yaml", "--task_loop.epochs_per_task", "null",
                                 "--task_loop.steps_per_task", str(args.steps), "--seed_everything", str(i)))
            outcome = worker.run_spec(spec, root)
            print(f"run {i + 1}: {outcome.status}, resident {resident_mib():.0f} MiB", flush=True)
        worker.reset_process_state()  # what the next run would start from
        print(f"before a next run: resident {resident_mib():.0f} MiB ({'no release' if args.no_release else 'released'})")


if __name__ == "__main__":
    main()
