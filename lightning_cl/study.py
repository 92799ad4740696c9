"""The whole study of SPEC.md in one command: every notebook experiment for a list of seeds,
several runs at a time, skipping runs that already finished.

Used by ``python -m lightning_cl.report --study --seeds 0 1 2 --jobs 2 -o OUT_DIR``, which then
writes the report over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from lightning_cl.results import RESULTS_FILE

# Every notebook experiment of SPEC.md: (name, config file, overrides).
STUDY: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("concurrent", "split_mnist/concurrent.yaml", ()),
    ("concurrent_bn", "split_mnist/concurrent_bn.yaml", ()),
    *((f"concurrent_l1_{lam}", "split_mnist/concurrent.yaml", ("--model.lambda_l1", lam))
      for lam in ("0.001", "0.1", "1.0", "2.0")),
    ("sequential", "split_mnist/sequential.yaml", ()),
    ("sequential_bn", "split_mnist/sequential_bn.yaml", ()),
    ("sequential_dropout", "split_mnist/sequential_dropout.yaml", ()),
    ("sequential_l1_1.0", "split_mnist/sequential.yaml", ("--model.lambda_l1", "1.0")),
    ("ogd", "split_mnist/ogd.yaml", ()),  # SPEC.md: "changed nothing"; no numbers to compare
    ("ogd_bn", "split_mnist/ogd_bn.yaml", ()),
    ("ogd_bn_t95", "split_mnist/ogd_bn_t95.yaml", ()),
    ("ogd_bn_t95_l1", "split_mnist/ogd_bn_t95_l1.yaml", ()),
    ("ogd_bn_dropout", "split_mnist/ogd_bn_dropout.yaml", ()),
)
CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def finished(run_root: Path) -> bool:
    """Whether a complete ``results.json`` lies under ``run_root``."""
    for path in run_root.rglob(RESULTS_FILE) if run_root.is_dir() else ():
        try:
            if json.loads(path.read_text()).get("complete"):
                return True
        except (OSError, json.JSONDecodeError):
            continue
    return False


def study_commands(root: str | Path, seeds: Sequence[int], extra: Sequence[str] = ()) -> list[tuple[Path, list[str]]]:
    """``(run root, command)`` of every experiment and seed not finished yet under ``root``."""
    commands = []
    for name, config, overrides in STUDY:
        for seed in seeds:
            run_root = Path(root) / name / f"seed{seed}"
            if finished(run_root):
                continue
            commands.append((run_root, [
                sys.executable, "-m", "lightning_cl", "fit", "-c", str(CONFIG_DIR / config), *overrides,
                "--seed_everything", str(seed), "--trainer.default_root_dir", str(run_root),
                "--trainer.enable_progress_bar", "false", *extra,
            ]))
    return commands


def _run_logged(run_root: Path, command: list[str], threads: int) -> int:
    run_root.mkdir(parents=True, exist_ok=True)
    # One BLAS/OpenMP pool per job, sized to its share of the cores: oversubscribed pools
    # slowed training several-fold on a shared 2-core machine.
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with open(run_root / "fit.log", "a") as log:
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode


def run_study(root: str | Path, seeds: Sequence[int], jobs: int = 1, extra: Sequence[str] = (),
              runner: Callable[[Path, list[str], int], int] = _run_logged) -> list[tuple[Path, int]]:
    """Run what is missing of the study, ``jobs`` at a time; return each run root with its exit status."""
    if jobs < 1:
        raise ValueError(f"--jobs={jobs} must be at least 1.")
    commands = study_commands(root, seeds, extra)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    print(f"study: {len(commands)} run(s) to do under {root}, {jobs} at a time")
    codes: dict[Path, int] = {}
    with ThreadPoolExecutor(max_workers=jobs) as pool, tqdm(total=len(commands), desc="study", unit="run") as bar:
        futures = {pool.submit(runner, run_root, command, threads): run_root for run_root, command in commands}
        for future in as_completed(futures):
            run_root = futures[future]
            codes[run_root] = future.result()
            bar.set_postfix_str(f"{run_root.parent.name}/{run_root.name}" + ("" if codes[run_root] == 0 else " FAILED"))
            bar.update()
    for run_root, _ in commands:
        if codes[run_root] != 0:
            print(f"study: {run_root} failed (exit {codes[run_root]}); see {run_root / 'fit.log'}")
    return [(run_root, codes[run_root]) for run_root, _ in commands]


def main(args: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_cl.study",
        description="The study runner used by `python -m lightning_cl.report --study`: every notebook experiment "
                    "of SPEC.md for each seed, several runs at a time, skipping runs that already finished. "
                    "It only runs; `python -m lightning_cl.report --study` also writes the report.",
    )
    parser.add_argument("--root", default="lightning_logs/study", help="where the runs go (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (default: %(default)s)")
    options = parser.parse_args(args)
    if options.jobs < 1:
        parser.error(f"--jobs={options.jobs} must be at least 1.")
    failed = [run_root for run_root, code in run_study(options.root, options.seeds, options.jobs) if code != 0]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
