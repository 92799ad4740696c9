"""A warm worker: one process that imports Lightning once and runs many fits in it, each with a
fresh Trainer, module and DataModule (the CLI builds them) and the seed reset.

A run's directory is claimed with a lock file, so two studies into one root never run the same
run at once; a lock left by a process that is gone is taken over. A run that was interrupted
resumes from its ``last.ckpt``; its output goes to ``fit.log`` in its directory.

A worker stops on SIGTERM as a single run does (the fit ends at the end of its batch and keeps
its ``last.ckpt``; ``results.json`` says it is incomplete) and takes no further run. A local
worker also stops when the study that started it is gone (:func:`stop_with_parent`).
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lightning_cl.metrics import ACC
from lightning_cl.results import RESULTS_FILE, ResultsError, RunResults
from lightning_cl.study.plan import RunSpec

LOCK_FILE = ".lock"
TAKEOVER_FILE = ".lock.takeover"  # held for the moment of taking over a dead process's lock
LOG_FILE = "fit.log"
ORPHAN_WAIT_S = 60.0  # how long a claim waits for a worker of a dead study to stop by itself
PARENT_POLL_S = 1.0
SIGTERM_EXIT_CODE = 128 + signal.SIGTERM  # the CLI's exit status for a fit stopped by SIGTERM


@dataclass
class Outcome:
    """How a run ended: ``status`` is ``done`` (complete results), ``skipped`` (finished before),
    ``left`` (another live study holds it; ``error`` names it), ``stopped`` (the study was
    stopped; the run resumes next time) or ``failed`` (``error`` says why; ``log`` has the output)."""

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


# ----------------------------------------------------------------- run directory locks
def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (Linux), or None."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None


def _start_time(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, Linux), to tell it from a later process
    that got the same pid; None where /proc does not say."""
    stat = _stat(pid)
    return stat[19] if stat else None  # field 22


def _alive(pid: int | None, started: str | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        pass  # another user's process: it exists
    stat = _stat(pid)
    if stat is None:
        return True  # no /proc: it exists
    return stat[0] != "Z" and (started is None or stat[19] == started)  # not ended, and not a later process


_study_pid: int | None = None  # a local worker's study (the runner), recorded in its locks


def _lock_record() -> dict:
    pid = os.getpid()
    record = {"host": socket.gethostname(), "pid": pid, "started": _start_time(pid)}
    if _study_pid is not None:
        record |= {"study_pid": _study_pid, "study_started": _start_time(_study_pid)}
    return record


def read_lock(lock: Path) -> dict | None:
    """A lock file's holder (``host``, ``pid``, and for a local study's worker ``study_pid``), or None
    if it cannot be read. Locks of before are one line ``host pid``."""
    try:
        text = lock.read_text()
    except OSError:
        return None
    try:
        record = json.loads(text)
        if isinstance(record, dict) and "host" in record and isinstance(record.get("pid"), int):
            return record
    except ValueError:
        pass
    try:
        host, pid = text.split()
        return {"host": host, "pid": int(pid)}
    except ValueError:
        return None


def holder_state(record: dict | None) -> str:
    """``live`` (a live study holds it: leave the run to it), ``stopping`` (a worker whose study is
    gone: it stops by itself in a moment) or ``dead`` (take the run over)."""
    if record is None:
        return "dead"  # empty or unreadable: its writer died between creating and writing it
    if record["host"] != socket.gethostname():
        return "live"  # another machine's process: assume it is alive
    if not _alive(record["pid"], record.get("started")):
        return "dead"
    if "study_pid" in record and not _alive(record["study_pid"], record.get("study_started")):
        return "stopping"
    return "live"


def describe_holder(record: dict | None) -> str:
    if record is None:
        return "another study"
    study = f"study pid {record['study_pid']}, worker pid {record['pid']}" if "study_pid" in record else \
        f"pid {record['pid']}"
    return f"another study ({study} on {record['host']})"


@dataclass(frozen=True)
class Claim:
    """True when this process holds the run's lock; else ``holder`` names the live study that does."""

    holder: str | None = None

    def __bool__(self) -> bool:
        return self.holder is None


@contextmanager
def claimed(directory: Path, orphan_wait_s: float = ORPHAN_WAIT_S):
    """Hold ``directory/.lock`` while the run goes; yields a :class:`Claim`, false if a live study
    holds the lock. A lock of a process that is gone is taken over; one of a worker whose study
    is gone is taken over once that worker has stopped (it does so by itself)."""
    directory.mkdir(parents=True, exist_ok=True)
    lock = directory / LOCK_FILE
    deadline = time.monotonic() + orphan_wait_s
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            record = read_lock(lock)
            state = holder_state(record)
            if state == "live" or (state == "stopping" and time.monotonic() > deadline):
                yield Claim(f"{describe_holder(record)} is running it")
                return
            if state == "dead":
                _take_over(directory, lock, record)
            else:
                time.sleep(0.2)  # a worker of a study that is gone, finishing its batch
            continue
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(_lock_record()))
        try:
            yield Claim()
        finally:
            lock.unlink(missing_ok=True)
        return


def _take_over(directory: Path, lock: Path, record: dict | None) -> None:
    """Remove the lock of a dead process, unless another process is taking it over at this moment
    (two restarts at once must not both remove it: one would remove the other's new lock)."""
    takeover = directory / TAKEOVER_FILE
    try:
        fd = os.open(takeover, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            if time.time() - takeover.stat().st_mtime > 30:  # its taker died in the middle: a moment's work
                takeover.unlink(missing_ok=True)
        except OSError:
            pass
        time.sleep(0.1)
        return
    try:
        if read_lock(lock) == record:  # still the dead holder's, not a new one
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
        takeover.unlink(missing_ok=True)


# ----------------------------------------------------------------- stopping
class WorkerStopped(Exception):
    """SIGTERM outside a fit: the worker stops where it is."""


_stop_requested = threading.Event()
_interruptible = True  # False from the end of a fit until its outcome is recorded and sent


def set_interruptible(value: bool) -> None:
    global _interruptible
    _interruptible = value


def _on_sigterm(signum, frame) -> None:
    first = not _stop_requested.is_set()
    _stop_requested.set()
    # In a fit, Lightning's handler (which calls this one too) stops it at the end of its batch;
    # outside one, stop here. A second SIGTERM changes nothing.
    if first and _interruptible and signal.getsignal(signal.SIGTERM) is _on_sigterm:
        raise WorkerStopped("stopped by SIGTERM before its training began")


def stop_on_sigterm() -> None:
    """SIGTERM stops this worker as it stops a single run: see the module docstring."""
    _stop_requested.clear()
    signal.signal(signal.SIGTERM, _on_sigterm)


def stop_requested() -> bool:
    return _stop_requested.is_set()


def stop_with_parent(parent: int) -> None:
    """SIGTERM this process when its parent (the study) is gone: at once on Linux (PR_SET_PDEATHSIG),
    and by polling the parent's pid elsewhere (or should the signal be missed)."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_POLL_S)
        if not _stop_requested.is_set():
            os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="stop-with-parent", daemon=True).start()


# ----------------------------------------------------------------- running
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
    release_freed_memory()


def release_freed_memory() -> None:
    """Hand the memory the last run freed back to the system. glibc keeps freed blocks below its
    (growing) mmap threshold, up to 32 MB, in the heap: a test set of one MNIST task is 31 MB,
    so a warm worker grew by ~1 GB per 20-task run until two of them exhausted 24 GB
    (benchmarks/worker_memory.py). ``malloc_trim(0)`` returns it; elsewhere nothing is done."""
    gc.collect()
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): nothing to trim
        return
    if hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def error_lines(log: Path, start: int = 0) -> str | None:
    """The ``error:`` lines a run printed in ``log`` from byte ``start`` (the CLI's one-line
    errors), else the last line it printed (a traceback's exception); None if it printed nothing."""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    errors = [line for line in lines if line.startswith("error:")]
    return "; ".join(errors) if errors else (lines[-1] if lines else None)


def run_spec(spec: RunSpec, root: str | Path) -> Outcome:
    """Run ``spec`` into its directory under ``root`` in this process (skip it if it finished)."""
    from lightning_cl.cli import main

    directory = spec.directory(Path(root))
    done = complete_results(directory)
    if done is not None:
        return _finished(spec, directory, "skipped", done)
    error, stopped = None, False
    log = directory / LOG_FILE
    with claimed(directory) as claim:
        if not claim:
            return Outcome(spec, str(directory), "left", error=claim.holder)
        args = ["fit", *spec.args, "--trainer.default_root_dir", str(directory),
                "--trainer.enable_progress_bar", "false"]
        checkpoint = last_checkpoint(directory)
        if checkpoint is not None:
            args += ["--ckpt_path", str(checkpoint)]
        reset_process_state()
        start = log.stat().st_size if log.exists() else 0
        try:
            with output_to(log):
                print(f"lightning-cl {' '.join(args)}", flush=True)
                try:
                    main(args)
                except SystemExit as exit_:
                    if exit_.code not in (0, None):
                        error = str(exit_.code) if isinstance(exit_.code, str) else f"exit status {exit_.code}"
                        print(error, file=sys.stderr)  # what the interpreter would print on exit
                        stopped = exit_.code == SIGTERM_EXIT_CODE and stop_requested()
                except WorkerStopped as stop:
                    error, stopped = str(stop), True
                except BaseException as exc:  # a failed run must not stop the others
                    traceback.print_exc()
                    error = f"{type(exc).__name__}: {exc}"
                    if isinstance(exc, KeyboardInterrupt):
                        raise
                finally:
                    set_interruptible(False)  # the fit is over: what follows records its outcome
        except WorkerStopped as stop:  # in the moment before the run's output went to its log
            error, stopped = str(stop), True
    if error is not None and error.startswith("exit status"):
        error = error_lines(log, start) or error  # the run's own message, not its exit status
    done = complete_results(directory)
    if done is not None:
        return _finished(spec, directory, "done", done)
    if error is None:
        error = "the run ended without complete results"
    return Outcome(spec, str(directory), "stopped" if stopped else "failed", error=error.splitlines()[0])


def _finished(spec: RunSpec, directory: Path, status: str, results: Path) -> Outcome:
    record = RunResults.read(results)
    return Outcome(spec, str(directory), status, results=str(results), acc=record.metrics()[ACC.key],
                   wall_time_s=record.wall_time_s)


def run_chunk(specs: list[RunSpec], root: str, threads: int | None = None) -> list[Outcome]:
    """A warm worker's job: run ``specs`` one after the other (a SLURM job runs one chunk). On
    SIGTERM the run in progress stops as a single run does and the rest are not started."""
    init_worker(threads)
    stop_on_sigterm()
    outcomes = []
    for spec in specs:
        if stop_requested():
            outcomes.append(Outcome(spec, str(spec.directory(Path(root))), "stopped", error="not started"))
            continue
        set_interruptible(True)
        try:
            outcomes.append(run_spec(spec, root))
        except WorkerStopped as stopped:
            outcomes.append(Outcome(spec, str(spec.directory(Path(root))), "stopped", error=str(stopped)))
    return outcomes


def init_worker(threads: int | None = None, gpu: str | None = None) -> None:
    """Import Lightning once and size the thread pools before any run; ``gpu``: the CUDA device
    this worker uses (as CUDA_VISIBLE_DEVICES names it)."""
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


def serve(conn, threads: int | None, gpu: str | None, study: int) -> None:
    """A local worker's life: take ``(spec, root)`` from ``conn``, run it, send back its
    :class:`Outcome`, until told to stop (``None``, SIGTERM, or the study gone).

    Ctrl-C reaches every process of the terminal's group: the worker ignores SIGINT and lets the
    study stop it with SIGTERM, so that both stop the same way."""
    global _study_pid
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_on_sigterm()
    _study_pid = study
    stop_with_parent(study)
    try:
        try:
            init_worker(threads, gpu)
        except WorkerStopped:
            return
        except BaseException as exc:  # noqa: BLE001 - told to the study, which fails the runs with it
            conn.send(("broken", f"the worker could not start: {type(exc).__name__}: {exc}"))
            return
        conn.send(("ready",))
        while not stop_requested():
            set_interruptible(True)
            try:
                task = conn.recv()
            except (EOFError, OSError):
                return  # the study is gone
            if task is None:
                return
            spec, root = task
            try:
                outcome = run_spec(spec, root)
            except WorkerStopped as stopped:
                outcome = Outcome(spec, str(spec.directory(Path(root))), "stopped", error=str(stopped))
            try:
                conn.send(("outcome", outcome, stop_requested()))
            except (BrokenPipeError, OSError):
                return
    except WorkerStopped:
        return
