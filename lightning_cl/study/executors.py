"""Where a study's runs go: ``local`` (a pool of warm worker processes on this machine) or
``slurm`` (SLURM jobs through submitit, each a warm worker that runs a chunk of runs).

Both take the runs to do and call ``on_done(outcome)`` as each ends, so the runner's
progress, failure list and report do not depend on where the runs went. Both watch ``stop``
(:class:`StopRequest`): once it is set they start no further run, stop the runs in progress as
a single run stops on SIGTERM (at the end of a batch, keeping ``last.ckpt``), and return.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from multiprocessing.connection import wait
from pathlib import Path

from lightning_cl.study.plan import RunSpec
from lightning_cl.study.worker import LOG_FILE, Outcome, error_lines, run_chunk, serve

OnDone = Callable[[Outcome], None]
STOP_WAIT_S = 60.0  # how long stopped workers get to end their batch and exit before they are killed
POLL_S = 0.25


class StopRequest:
    """The signals that asked a study to stop (SIGTERM, SIGINT) while :meth:`watching`; the first
    stops the runs at the end of their batch, a second kills the workers at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signals: list[int] = []

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    @property
    def urgent(self) -> bool:
        return len(self.signals) > 1

    @property
    def name(self) -> str:
        return signal.Signals(self.signals[0]).name if self.signals else ""

    @contextmanager
    def watching(self):
        """Catch SIGTERM and SIGINT in this (the main) thread; elsewhere, nothing is caught."""
        try:
            saved = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        except ValueError:  # not the main thread
            saved = {}
        try:
            yield self
        finally:
            for s, handler in saved.items():
                signal.signal(s, handler)

    def _handle(self, signum, frame) -> None:
        self.signals.append(signum)


class _Worker:
    """One warm worker process of the local pool and the run it holds."""

    def __init__(self, context, slot: int, threads: int, gpu: str | None) -> None:
        self.conn, child = context.Pipe()
        self.slot = slot
        self.process = context.Process(target=serve, args=(child, threads, gpu, os.getpid()),
                                       name=f"lightning-cl-study-worker-{slot}", daemon=True)
        self.process.start()
        child.close()  # the worker holds the only other end: it sees the study go as the pipe closing
        self.spec: RunSpec | None = None
        self.quitting = False  # it said it stops after its last outcome
        self.ready = False  # it has imported what it needs: from now on it may hold a run
        self.terminated = False

    def give(self, spec: RunSpec, root: Path) -> None:
        self.spec = spec
        self.conn.send((spec, str(root)))

    def terminate(self) -> None:
        """Stop it: SIGTERM (its run stops at the end of a batch), or SIGKILL while it is still starting,
        when it holds nothing yet (an import in C code may not see a signal for many seconds)."""
        if not self.ready and self.process.is_alive():
            self.process.kill()
        elif not self.terminated and self.process.is_alive():
            self.terminated = True
            try:
                os.kill(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


class LocalExecutor:
    """``jobs`` warm worker processes, one torch thread each unless ``threads`` says otherwise.

    With ``jobs_per_gpu``, worker k uses GPU ``k // jobs_per_gpu`` (several runs share a GPU).
    A worker that dies (a crash in C code, the out-of-memory killer) fails the run it held and
    a new worker takes its place. Each worker stops by itself when the study's process is gone.
    """

    def __init__(self, jobs: int = 1, threads: int | None = None, jobs_per_gpu: int | None = None) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs={jobs} must be at least 1.")
        self.jobs, self.jobs_per_gpu = jobs, jobs_per_gpu
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)

    def _gpu(self, slot: int) -> str | None:
        if not self.jobs_per_gpu:
            return None
        index = slot // self.jobs_per_gpu
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        names = [d.strip() for d in visible.split(",") if d.strip()] if visible else []
        return names[index] if index < len(names) else str(index)

    def run(self, specs: Sequence[RunSpec], root: Path, on_done: OnDone, stop: StopRequest | None = None) -> None:
        stop = stop or StopRequest()
        context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
        todo = deque(specs)
        workers: list[_Worker] = []
        stop_deadline = None
        try:
            while todo or any(w.spec is not None for w in workers):
                if stop.requested and stop_deadline is None:
                    stop_deadline = time.monotonic() + STOP_WAIT_S
                    for worker in workers:
                        self._drain(worker, todo, root, on_done, stop)  # has it said it is ready?
                        worker.terminate()
                if stop.requested and (stop.urgent or time.monotonic() > stop_deadline):
                    self._kill(workers, on_done, root, "killed" if stop.urgent else
                               f"killed: its worker had not stopped {STOP_WAIT_S:.0f} s after {stop.name}")
                    return
                if not stop.requested:
                    self._fill(context, workers, todo, root)
                ready = wait([w.conn for w in workers] + [w.process.sentinel for w in workers], timeout=POLL_S)
                for worker in list(workers):
                    if worker.conn in ready or worker.process.sentinel in ready:
                        self._drain(worker, todo, root, on_done, stop)
                        if not worker.process.is_alive():
                            self._died(worker, workers, root, on_done, stop)
                if stop.requested and not any(w.spec is not None for w in workers):
                    return
        finally:
            for worker in workers:  # idle ones end at once; busy ones (an error of the study itself) stop
                try:
                    worker.conn.send(None)
                except OSError:
                    pass
                if worker.spec is not None:
                    worker.terminate()
            for worker in workers:
                worker.process.join(timeout=STOP_WAIT_S)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join()
                worker.conn.close()

    def _fill(self, context, workers: list[_Worker], todo: deque, root: Path) -> None:
        """Start workers for the runs to do (up to ``jobs``) and give each idle one a run."""
        while todo and len(workers) < self.jobs and len(workers) < len(todo) + sum(w.spec is not None for w in workers):
            slot = min(set(range(self.jobs)) - {w.slot for w in workers})
            workers.append(_Worker(context, slot, self.threads, self._gpu(slot)))
        for worker in workers:
            if todo and worker.spec is None and not worker.quitting:
                worker.give(todo.popleft(), root)

    def _drain(self, worker: _Worker, todo: deque, root: Path, on_done: OnDone, stop: StopRequest) -> None:
        """Every message the worker has sent (a worker that ended has sent all it will)."""
        while True:
            try:
                if not worker.conn.poll():
                    return
                message = worker.conn.recv()
            except (EOFError, OSError):
                return
            self._receive(worker, message, todo, root, on_done, stop)

    def _receive(self, worker: _Worker, message: tuple, todo: deque, root: Path, on_done: OnDone,
                 stop: StopRequest) -> None:
        if message[0] == "ready":
            worker.ready = True
            return
        if message[0] == "broken":  # it could not even start: neither can the others
            for spec in [s for s in [worker.spec, *todo] if s is not None]:
                on_done(Outcome(spec, str(spec.directory(root)), "failed", error=message[1]))
            todo.clear()
            worker.spec = None
            return
        _, outcome, quitting = message
        if outcome.status == "stopped" and not stop.requested:
            outcome.status = "failed"  # its worker alone was sent SIGTERM: the run resumes next time
        worker.spec = None
        worker.quitting = worker.quitting or quitting
        on_done(outcome)

    def _died(self, worker: _Worker, workers: list[_Worker], root: Path, on_done: OnDone, stop: StopRequest) -> None:
        workers.remove(worker)
        worker.process.join()
        worker.conn.close()
        spec = worker.spec
        if spec is None:
            return
        directory = spec.directory(root)
        reason = _exit_reason(worker.process.exitcode)
        if stop.requested:
            on_done(Outcome(spec, str(directory), "stopped", error="not started" if worker.process.exitcode == 0
                            or not worker.ready else f"its worker process ended ({reason})"))
            return
        said = error_lines(directory / LOG_FILE)
        on_done(Outcome(spec, str(directory), "failed",
                        error=f"its worker process died ({reason})" + (f"; its log ends: {said}" if said else "")))

    @staticmethod
    def _kill(workers: list[_Worker], on_done: OnDone, root: Path, why: str) -> None:
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()
            worker.process.join()
            if worker.spec is not None:
                spec, worker.spec = worker.spec, None
                on_done(Outcome(spec, str(spec.directory(root)), "stopped", error=why))


class SlurmExecutor:
    """One SLURM job per ``chunk_size`` runs, submitted with submitit; each job is a warm worker.

    ``cluster="local"`` runs the jobs as local processes (submitit's local executor), for tests.
    Without it, a machine with no ``sbatch`` is refused: submitit would run the jobs locally instead.
    """

    def __init__(self, partition: str | None = None, time: int = 60, gpus_per_job: int = 0, chunk_size: int = 4,
                 threads: int | None = None, cluster: str | None = None) -> None:
        if cluster in (None, "slurm"):
            if shutil.which("sbatch") is None:
                raise ValueError("--executor slurm: no SLURM on this machine (sbatch not found); "
                                 "run locally with --executor local (the default).")
            cluster = "slurm"  # never submitit's silent fallback to its local executor
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ValueError("--executor slurm needs submitit: pip install -e '.[slurm]'") from None
        if chunk_size < 1:
            raise ValueError(f"--chunk-size={chunk_size} must be at least 1.")
        self.partition, self.time, self.gpus_per_job = partition, time, gpus_per_job
        self.chunk_size, self.threads, self.cluster = chunk_size, threads, cluster

    def run(self, specs: Sequence[RunSpec], root: Path, on_done: OnDone, stop: StopRequest | None = None) -> None:
        import submitit

        stop = stop or StopRequest()
        executor = submitit.AutoExecutor(folder=Path(root) / ".submitit" / "%j", cluster=self.cluster)
        params = {"timeout_min": self.time, "cpus_per_task": self.threads or 1}
        if self.cluster != "local":
            params |= {"slurm_partition": self.partition, "gpus_per_node": self.gpus_per_job}
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        chunks = [list(specs[i : i + self.chunk_size]) for i in range(0, len(specs), self.chunk_size)]
        pending = {executor.submit(run_chunk, chunk, str(root), self.threads): chunk for chunk in chunks}
        cancelled_at = None
        while pending:
            if stop.requested and cancelled_at is None:
                cancelled_at = time.monotonic()
                for job in pending:  # SLURM sends SIGTERM: each job's run stops at the end of its batch
                    try:
                        job.cancel(check=False)
                    except Exception:  # noqa: BLE001 - the job may have ended meanwhile
                        pass
            for job in [j for j in pending if j.done()]:
                chunk = pending.pop(job)
                try:
                    outcomes = job.result()
                except Exception as err:  # noqa: BLE001 - the job failed as a whole, or was cancelled
                    status = "stopped" if stop.requested else "failed"
                    outcomes = [Outcome(s, str(s.directory(root)), status, error=f"SLURM job {job.job_id}: {err}")
                                for s in chunk]
                for outcome in outcomes:
                    on_done(outcome)
            if cancelled_at is not None and pending and (stop.urgent or time.monotonic() - cancelled_at > STOP_WAIT_S):
                for job, chunk in pending.items():
                    for spec in chunk:
                        on_done(Outcome(spec, str(spec.directory(root)), "stopped",
                                        error=f"SLURM job {job.job_id} was cancelled"))
                return
            if pending:
                time.sleep(POLL_S)
