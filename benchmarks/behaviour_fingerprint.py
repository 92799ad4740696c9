"""A behaviour fingerprint: what every method computes, in every scenario, on a shrunk run.

Meant to show that a refactor changes no result. For naive fine-tuning (``none``), joint
training (``joint``: ``data.cumulative``) and every method config in ``configs/methods/*.yaml``,
in each scenario (class, task, domain), it trains through the real CLI in-process
(``lightning_cl.cli.run_cli(["fit", ...])``): synthetic tasks [[0, 1], [2, 3], [4, 5]]
(``tests/synthetic.py``, no MNIST), an MLP 784-32-16-out, 8 steps of batch 16 per task,
seed 0, on the CPU, with the method's settings shrunk (``SHRINK``) so that all 33 runs take
about ten seconds on one CPU thread. Methods are named by their config file only: nothing here imports a method.

From each run's ``results.json`` it keeps the measurements (``KEYS``; not the wall time or the
config) and writes ``{"<method>/<scenario>": {...}}`` as one JSON file::

    python benchmarks/behaviour_fingerprint.py --out before.json
    python benchmarks/behaviour_fingerprint.py --out after.json --compare before.json

``--compare FILE`` prints, per run, ``identical`` or each differing key with its largest
absolute difference, and exits with status 1 if anything differs.

Checkpoints and resume::

    python benchmarks/behaviour_fingerprint.py --checkpoints CKPTS [--out full.json]
    python benchmarks/behaviour_fingerprint.py --resume CKPTS --out resumed.json --compare before.json

``--checkpoints DIR`` trains the same runs with an extra ModelCheckpoint that keeps every
epoch (each task is one epoch of 8 steps) and saves ``DIR/<method>_<scenario>/mid.ckpt`` (the
checkpoint of epoch 0: task 1 trained and recorded, the task loop moved on to task 2) and the
run's ``config.yaml``; its fingerprint is that of these full runs. ``--resume DIR`` resumes each
with ``fit -c DIR/<m>_<s>/config.yaml --ckpt_path DIR/<m>_<s>/mid.ckpt`` and fingerprints the
resumed runs; on the CPU they equal the uninterrupted ones. A run that fails records
``{"error": message}`` instead (a resume: ``{"refused": message}``), the message of an
exception or what the CLI printed before exiting (SystemExit).

The repository's ``lightning_cl`` and ``tests/`` (for ``synthetic.SyntheticTasks``) are put first
on ``sys.path``, so the package imported is this checkout's, whatever is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

SCENARIOS = ("class", "task", "domain")
# Method settings shrunk for a fast run, given after the method's -c config (they set the
# last callback: the method's). Penalty weights are lowered from the published protocol's so
# that the penalty neither vanishes nor freezes the network in 8 steps: it shows in the results.
# A config without an entry here runs with its own settings.
SHRINK: dict[str, list[str]] = {
    "none": [],
    "joint": [],
    "ewc": ["--trainer.callbacks.lam", "1000", "--trainer.callbacks.fisher_examples", "32"],
    "online_ewc": ["--trainer.callbacks.lam", "1000", "--trainer.callbacks.gamma", "0.9",
                   "--trainer.callbacks.fisher_examples", "32"],
    "si": ["--trainer.callbacks.c", "1000"],
    "mas": ["--trainer.callbacks.lam", "100", "--trainer.callbacks.examples", "32"],
    "lwf": [],
    "er": ["--trainer.callbacks.per_class", "4", "--trainer.callbacks.batch_size", "8"],
    "agem": ["--trainer.callbacks.per_class", "4", "--trainer.callbacks.batch_size", "8"],
    "gpm": ["--trainer.callbacks.examples", "32"],
    "ogd": ["--trainer.callbacks.examples_per_task", "8"],
}
KEYS = ("complete", "error", "method", "scenario", "accuracy_matrix", "seen_accuracy", "seen_loss", "sparsity",
        "acc", "bwt", "fwt", "forgetting", "learning_acc", "random_init_accuracy", "epochs_per_task",
        "steps_per_task", "global_step")
# Every epoch's checkpoint; epoch 0 ends task 1 (one epoch of steps_per_task batches per task).
EVERY_EPOCH = json.dumps({"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {
    "filename": "{epoch}", "save_top_k": -1, "every_n_epochs": 1, "save_on_train_epoch_end": True}})
MID_CKPT = "epoch=0.ckpt"


def run_args(method: str, scenario: str) -> list[str]:
    """``fit`` arguments of the shrunk run of ``method`` (a config stem, ``none`` or ``joint``)."""
    config = [] if method in ("none", "joint") else ["-c", str(REPO / "configs" / "methods" / f"{method}.yaml")]
    return ["fit", *config, *SHRINK.get(method, []),
            "--data.class_path", "synthetic.SyntheticTasks", "--data.init_args.tasks", "[[0, 1], [2, 3], [4, 5]]",
            "--data.init_args.scenario", scenario, "--data.init_args.batch_size", "16",
            "--data.init_args.cumulative", str(method == "joint").lower(),
            "--model.hidden", "[32, 16]", "--task_loop.steps_per_task", "8", "--task_loop.epochs_per_task", "null",
            "--seed_everything", "0", "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false"]


def methods() -> list[str]:
    return ["none", "joint", *sorted(p.stem for p in (REPO / "configs" / "methods").glob("*.yaml"))]


class Tee(io.TextIOBase):
    """Writes to the real stderr and keeps a copy (the CLI's error message before SystemExit)."""

    def __init__(self, stream) -> None:
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        return self.copy.write(text)

    def flush(self) -> None:
        self.stream.flush()


def fit(args: list[str], root: Path) -> Path:
    """Run ``lightning-cl`` in-process with ``args`` under ``root``; return the run's directory."""
    from lightning_cl.cli import run_cli

    run_cli([*args, "--trainer.default_root_dir", str(root)])
    (results,) = root.rglob("results.json")
    return results.parent


def fingerprint_of(run_dir: Path) -> dict[str, Any]:
    results = json.loads((run_dir / "results.json").read_text())
    return {key: results.get(key) for key in KEYS}


def failure(err: BaseException, stderr: str) -> str:
    if isinstance(err, SystemExit):
        lines = [line for line in stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("error:")]
        return "\n".join(errors or lines[-3:]) or f"SystemExit({err.code})"
    return f"{type(err).__name__}: {err}"


def run(key: str, args: list[str], failure_key: str = "error", keep=None) -> dict[str, Any]:
    """Fingerprint one run; ``keep(run_dir)`` is called after it finishes (before its files go)."""
    with tempfile.TemporaryDirectory(prefix="fingerprint_") as root:
        tee = Tee(sys.stderr)
        try:
            with contextlib.redirect_stderr(tee):
                run_dir = fit(args, Path(root))
        except (Exception, SystemExit) as err:
            print(f"{key}: {failure_key}", flush=True)
            return {failure_key: failure(err, tee.copy.getvalue())}
        if keep is not None:
            keep(run_dir)
        result = fingerprint_of(run_dir)
    print(f"{key}: acc {result['acc']}", flush=True)
    return result


def fingerprint() -> dict[str, dict]:
    return {f"{m}/{s}": run(f"{m}/{s}", run_args(m, s)) for m in methods() for s in SCENARIOS}


def save_checkpoints(directory: Path) -> dict[str, dict]:
    def keeper(target: Path):
        def keep(run_dir: Path) -> None:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(run_dir / "checkpoints" / MID_CKPT, target / "mid.ckpt")
            shutil.copyfile(run_dir / "config.yaml", target / "config.yaml")
        return keep

    args = ["--trainer.callbacks+", EVERY_EPOCH]
    return {f"{m}/{s}": run(f"{m}/{s}", run_args(m, s) + args, keep=keeper(directory / f"{m}_{s}"))
            for m in methods() for s in SCENARIOS}


def resume(directory: Path) -> dict[str, dict]:
    prints = {}
    order = [f"{m}_{s}" for m in methods() for s in SCENARIOS]  # the fingerprint's order, then any others
    saved_runs = [p for p in directory.iterdir() if (p / "mid.ckpt").is_file()]
    for saved in sorted(saved_runs, key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name)):
        method, _, scenario = saved.name.rpartition("_")
        key = f"{method}/{scenario}"
        prints[key] = run(key, ["fit", "-c", str(saved / "config.yaml"), "--ckpt_path", str(saved / "mid.ckpt")],
                          failure_key="refused")
    return prints


def foreign_modules() -> list[str]:
    """Modules of the package (or ``synthetic``) loaded from outside this checkout: an editable
    install of another checkout resolves there what this one lacks (a config's moved class path)."""
    foreign = []
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("lightning_cl", "synthetic"):
            where = getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), None)
            if where is not None and not Path(where).resolve().is_relative_to(REPO):
                foreign.append(f"{name} ({where})")
    return sorted(foreign)


def numbers(value: Any) -> list[float] | None:
    """The numbers of a nested value in order, or None if it holds something else (a string)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, (int, float)):
        return [float(value)]
    parts = [numbers(v) for v in (value.values() if isinstance(value, dict) else value)]
    return None if any(p is None for p in parts) else [x for p in parts for x in p]


def max_abs_difference(a: Any, b: Any) -> float | None:
    na, nb = numbers(a), numbers(b)
    if na is None or nb is None or len(na) != len(nb):
        return None
    return max((abs(x - y) if not (math.isnan(x) and math.isnan(y)) else 0.0 for x, y in zip(na, nb)), default=0.0)


def compare(new: dict[str, dict], old: dict[str, dict]) -> bool:
    """Print per run ``identical`` or what differs; True if everything is identical."""
    same = True
    for key in [*old, *(k for k in new if k not in old)]:
        if key not in new or key not in old:
            print(f"{key}: only in the {'earlier' if key in old else 'new'} fingerprint")
            same = False
            continue
        a, b = old[key], new[key]
        diffs = []
        for field in sorted(a.keys() | b.keys()):
            if a.get(field) != b.get(field):
                d = max_abs_difference(a.get(field), b.get(field))
                diffs.append(f"{field} (max abs diff {d:.3g})" if d is not None
                             else f"{field} ({a.get(field)!r} -> {b.get(field)!r})")
        print(f"{key}: {'identical' if not diffs else 'differs: ' + ', '.join(diffs)}")
        same = same and not diffs
    return same


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--checkpoints", type=Path, metavar="DIR", help="also save every run's mid-run checkpoint in DIR")
    mode.add_argument("--resume", type=Path, metavar="DIR", help="fingerprint the resumed checkpoints of DIR")
    parser.add_argument("--out", type=Path, metavar="FILE", help="write the fingerprint to FILE")
    parser.add_argument("--compare", type=Path, metavar="FILE", help="compare against an earlier fingerprint")
    args = parser.parse_args()
    if not (args.out or args.compare or args.checkpoints):
        parser.error("nothing to do: give --out FILE, --compare FILE or --checkpoints DIR")

    torch.set_num_threads(1)
    import lightning.pytorch  # noqa: F401  (it sets its loggers' level when imported)

    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # each run's task lines and tips
    warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
    import lightning_cl

    print(f"lightning_cl from {Path(lightning_cl.__file__).parent}", flush=True)
    start = time.perf_counter()
    if args.checkpoints:
        prints = save_checkpoints(args.checkpoints)
    elif args.resume:
        prints = resume(args.resume)
    else:
        prints = fingerprint()
    print(f"{len(prints)} runs in {time.perf_counter() - start:.1f} s")
    if foreign_modules():
        sys.exit(f"error: not a fingerprint of {REPO}: modules were imported from elsewhere: "
                 f"{', '.join(foreign_modules())}")
    if args.out:
        args.out.write_text(json.dumps(prints, indent=1) + "\n")
        print(f"fingerprint: {args.out}")
    if args.compare and not compare(prints, json.loads(args.compare.read_text())):
        sys.exit(1)


if __name__ == "__main__":
    main()
