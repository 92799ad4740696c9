"""A warm worker: one process that imports Lightning once and runs many fits in it, each with a
fresh Trainer, module and DataModule (the CLI builds them) and the seed reset.

A run's directory is claimed with a lock file, so two studies into one root never run the same
run at once; a run that was interrupted resumes from its ``last.ckpt``; its output goes to
``fit.log`` in its directory.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lightning_cl.metrics import ACC
from lightning_cl.results import RESULTS_FILE, ResultsError, RunResults
from lightning_cl.study.plan import RunSpec

LOCK_FILE = ".lock"
LOG_FILE = "fit.log"


@dataclass
class Outcome:
    """How a run ended: ``status`` is ``done`` (complete results), ``skipped`` (finished before,
    or being run by another study), or ``failed`` (``error`` says why; ``log`` has the output)."""

    spec: RunSpec
    directory: str
    status: str
    error: str | None = None
    results: str | None = None  # path of the complete results.json
    acc: float | None = None
    wall_time_s: float | None = None

    @property
    def log(self) -> str:
        return str(Path(self.directory) / LOG_FILE)


def complete_results(directory: Path) -> Path | None:
    """The newest complete ``results.json`` under a run directory, or None."""
    found = []
    for path in directory.rglob(RESULTS_FILE) if directory.is_dir() else ():
        try:
            if RunResults.read(path).complete:
                found.append(path)
        except ResultsError:
            continue
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def last_checkpoint(directory: Path) -> Path | None:
    """The newest ``last.ckpt`` of an interrupted run, to resume from."""
    found = list(directory.glob("lightning_logs/version_*/checkpoints/last.ckpt"))
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@contextmanager
def claimed(directory: Path):
    """Hold ``directory/.lock`` while the run goes; yields False if a live process holds it."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    me = f"{socket.gethostname()} {os.getpid()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _holder_alive(lock):
                yield False
                return
            lock.unlink(missing_ok=True)  # left by a killed process: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        try:
            yield True
        finally:
            lock.unlink(missing_ok=True)
        return
    yield False


def _holder_alive(lock: Path) -> bool:
    try:
        host, pid = lock.read_text().split()
    except (OSError, ValueError):
        return False
    if host != socket.gethostname():
        return True  # another machine's process: assume it is alive
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def output_to(path: Path):
    """Send this process's stdout and stderr (Python's and the C level's) to ``path``."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def reset_process_state() -> None:
    """What one run may leave behind in the process that the next must not inherit."""
    import torch

    torch.use_deterministic_algorithms(False)  # a run with trainer.deterministic true sets it


def run_spec(spec: RunSpec, root: str | Path) -> Outcome:
    """Run ``spec`` into its directory under ``root`` in this process (skip it if it finished)."""
    from lightning_cl.cli import main

    directory = spec.directory(Path(root))
    done = complete_results(directory)
    if done is not None:
        return _finished(spec, directory, "skipped", done)
    with claimed(directory) as mine:
        if not mine:
            return Outcome(spec, str(directory), "skipped", error="another study is running it")
        args = ["fit", *spec.args, "--trainer.default_root_dir", str(directory), "--trainer.enable_progress_bar", "false"]
        checkpoint = last_checkpoint(directory)
        if checkpoint is not None:
            args += ["--ckpt_path", str(checkpoint)]
        reset_process_state()
        error = None
        with output_to(directory / LOG_FILE):
            print(f"lightning-cl {' '.join(args)}", flush=True)
            try:
                main(args)
            except SystemExit as exit_:
                if exit_.code not in (0, None):
                    error = str(exit_.code) if isinstance(exit_.code, str) else f"exit status {exit_.code}"
                    print(error, file=sys.stderr)  # what the interpreter would print on exit
            except BaseException as exc:  # a failed run must not stop the others
                traceback.print_exc()
                error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, KeyboardInterrupt):
                    raise
    done = complete_results(directory)
    if error is None and done is None:
        error = "the run ended without complete results"
    if error is not None:
        return Outcome(spec, str(directory), "failed", error=error.splitlines()[0] if error else error)
    return _finished(spec, directory, "done", done)


def _finished(spec: RunSpec, directory: Path, status: str, results: Path) -> Outcome:
    record = RunResults.read(results)
    return Outcome(spec, str(directory), status, results=str(results), acc=record.metrics()[ACC.key],
                   wall_time_s=record.wall_time_s)


def run_chunk(specs: list[RunSpec], root: str, threads: int | None = None) -> list[Outcome]:
    """A warm worker's job: run ``specs`` one after the other (a SLURM job runs one chunk)."""
    init_worker(threads)
    return [run_spec(spec, root) for spec in specs]


def init_worker(threads: int | None = None, gpu: int | None = None) -> None:
    """Import Lightning once and size the thread pools before any run."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu)
    if threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    import torch

    import lightning_cl.cli  # noqa: F401  (the import that warm workers pay once)
    from lightning_cl import quiet

    quiet.install()  # a spawned worker starts with Python's filters, not its runner's

    if threads:
        torch.set_num_threads(threads)
