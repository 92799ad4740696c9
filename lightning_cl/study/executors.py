"""Where a study's runs go: ``local`` (a pool of warm worker processes on this machine) or
``slurm`` (SLURM jobs through submitit, each a warm worker that runs a chunk of runs).

Both take the runs to do and call ``on_done(outcome)`` as each ends, so the runner's
progress, failure list and report do not depend on where the runs went.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from lightning_cl.study.plan import RunSpec
from lightning_cl.study.worker import Outcome, init_worker, run_chunk, run_spec

OnDone = Callable[[Outcome], None]

_gpu_slot = None  # set in each local worker: which GPU it uses


def _init_local(threads: int | None, counter, jobs_per_gpu: int | None) -> None:
    gpu = None
    if jobs_per_gpu:
        with counter.get_lock():
            slot = counter.value
            counter.value += 1
        gpu = slot // jobs_per_gpu
    init_worker(threads, gpu)


class LocalExecutor:
    """``jobs`` warm worker processes, one torch thread each unless ``threads`` says otherwise.

    With ``jobs_per_gpu``, worker k uses GPU ``k // jobs_per_gpu`` (several runs share a GPU).
    A worker that dies (a crash in C code) fails the runs it held; the others go on in a new pool.
    """

    def __init__(self, jobs: int = 1, threads: int | None = None, jobs_per_gpu: int | None = None) -> None:
        if jobs < 1:
            raise ValueError(f"--jobs={jobs} must be at least 1.")
        self.jobs, self.jobs_per_gpu = jobs, jobs_per_gpu
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)

    def run(self, specs: Sequence[RunSpec], root: Path, on_done: OnDone) -> None:
        todo = list(specs)
        context = multiprocessing.get_context("spawn")  # no fork of a process with torch threads
        while todo:
            counter = context.Value("i", 0)
            with ProcessPoolExecutor(self.jobs, mp_context=context, initializer=_init_local,
                                     initargs=(self.threads, counter, self.jobs_per_gpu)) as pool:
                futures = {pool.submit(run_spec, spec, str(root)): spec for spec in todo}
                todo = []
                pending = set(futures)
                while pending:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        spec = futures[future]
                        try:
                            on_done(future.result())
                        except BrokenProcessPool:
                            todo.append(spec)  # retried in a fresh pool, unless it broke the pool itself
                        except Exception as err:  # noqa: BLE001 - reported as the run's failure
                            on_done(Outcome(spec, str(spec.directory(root)), "failed", error=f"{type(err).__name__}: {err}"))
            if todo and len(todo) == len(futures):
                # Nothing finished in a whole pool: a run kills its worker; fail them all rather than loop.
                for spec in todo:
                    on_done(Outcome(spec, str(spec.directory(root)), "failed", error="its worker process died"))
                return


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

    def run(self, specs: Sequence[RunSpec], root: Path, on_done: OnDone) -> None:
        import submitit

        executor = submitit.AutoExecutor(folder=Path(root) / ".submitit" / "%j", cluster=self.cluster)
        params = {"timeout_min": self.time, "cpus_per_task": self.threads or 1}
        if self.cluster != "local":
            params |= {"slurm_partition": self.partition, "gpus_per_node": self.gpus_per_job}
        executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
        chunks = [list(specs[i : i + self.chunk_size]) for i in range(0, len(specs), self.chunk_size)]
        jobs = [(executor.submit(run_chunk, chunk, str(root), self.threads), chunk) for chunk in chunks]
        for job, chunk in jobs:
            try:
                outcomes = job.result()
            except Exception as err:  # noqa: BLE001 - the job failed as a whole
                outcomes = [Outcome(s, str(s.directory(root)), "failed", error=f"SLURM job {job.job_id}: {err}")
                            for s in chunk]
            for outcome in outcomes:
                on_done(outcome)
