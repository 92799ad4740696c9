"""``lightning-cl-study FILE [--seeds ...] [--jobs N] [--root DIR] [-o REPORT_DIR]``: run a study.

Expands the study file (``lightning_cl.study.plan``), checks every run before anything runs (its
settings with the CLI's parser, then its model, data, callbacks and Trainer built as the run
would build them), and the executor's options and the root; skips runs that already finished
under ``--root``, resumes interrupted ones from their ``last.ckpt``, runs the rest on the
executor (warm workers), shows one progress bar with an ETA and one line per finished run, and
ends with the comparison report over the study's runs. A failed run does not stop the others:
the study ends with the list of failures (run, seed, error, log) and exit status 1.

SIGTERM or Ctrl-C stops the study: each run in progress stops at the end of its batch and keeps
its ``last.ckpt``, no further run starts, and the study exits with ``128 + signal`` and one line
saying how to resume (the same command again). A second one kills the workers at once.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from lightning_cl import quiet
from lightning_cl.metrics import ACC
from lightning_cl.study.plan import SEED_RANGE, RunSpec, StudyError, load_study, plan
from lightning_cl.study.worker import Outcome, complete_results, last_checkpoint

EXECUTORS = ("local", "slurm")
PROG = "lightning-cl-study"


class StudyStopped(Exception):
    """The study was stopped by a signal before every run ended; the message says what was left."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: an integer") from None
    if value not in SEED_RANGE:
        raise argparse.ArgumentTypeError(f"seed {value} is out of range: a seed is 0 <= seed < 2**32 (numpy and torch)")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                     epilog="Example: lightning-cl-study configs/studies/notebook.yaml --seeds 0 1 --jobs 2")
    parser.add_argument("study", help="the study file (YAML)")
    parser.add_argument("--seeds", type=_seed, nargs="+", help="seeds (default: the study file's)")
    parser.add_argument("--root", default="lightning_logs/studies", help="where runs go (default: %(default)s)")
    parser.add_argument("-o", "--out", help="report directory (default: ROOT/report/<study name>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check every run and list them, and which are done; run nothing")
    parser.add_argument("--executor", choices=EXECUTORS, help="local (default) or slurm (needs '.[slurm]')")
    parser.add_argument("--jobs", type=int, help="local: runs at a time (default 1)")
    parser.add_argument("--threads", type=int, help="torch threads per run (default: cores / jobs locally, 1 on SLURM)")
    parser.add_argument("--jobs-per-gpu", type=int, help="local, with GPU runs: runs sharing each GPU")
    slurm = parser.add_argument_group("slurm")
    slurm.add_argument("--partition", help="SLURM partition")
    slurm.add_argument("--time", type=int, help="minutes per job (default 60)")
    slurm.add_argument("--gpus-per-job", type=int, help="GPUs per job (default 0)")
    slurm.add_argument("--chunk-size", type=int, help="runs per job (default 4)")
    return parser.parse_args(argv)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def option_errors(options: dict) -> list[str]:
    """What is wrong with the executor's options (the command line's over the study file's)."""
    errors = []
    executor = options.get("executor") or "local"
    if executor not in EXECUTORS:
        errors.append(f"--executor={executor!r}: choose {' or '.join(EXECUTORS)}.")
    least = {"jobs": 1, "threads": 1, "jobs_per_gpu": 1, "time": 1, "chunk_size": 1, "gpus_per_job": 0}
    for key, low in least.items():
        value = options.get(key)
        flag = f"--{key.replace('_', '-')}"
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            errors.append(f"{flag}={value!r} must be an integer.")
        elif value < low:
            errors.append(f"{flag}={value} must be at least {low}.")
    if errors:
        return errors
    jobs_per_gpu = options.get("jobs_per_gpu")
    if jobs_per_gpu is not None and executor == "local":
        gpus, jobs = _gpu_count(), options.get("jobs") or 1
        if gpus == 0:
            errors.append(f"--jobs-per-gpu={jobs_per_gpu}: no GPU is visible (torch.cuda.is_available() is False); "
                          "leave it out to run on the CPU.")
        elif jobs > gpus * jobs_per_gpu:
            errors.append(f"--jobs={jobs} with --jobs-per-gpu={jobs_per_gpu} needs {-(-jobs // jobs_per_gpu)} GPUs; "
                          f"{gpus} visible: use at most --jobs {gpus * jobs_per_gpu}.")
    return errors


def make_executor(options: dict):
    from lightning_cl.study.executors import LocalExecutor, SlurmExecutor

    errors = option_errors(options)
    if errors:
        raise StudyError("\nerror: ".join(errors))
    if options.get("executor", "local") == "slurm":
        return SlurmExecutor(partition=options.get("partition"), time=options.get("time") or 60,
                             gpus_per_job=options.get("gpus_per_job") or 0, chunk_size=options.get("chunk_size") or 4,
                             threads=options.get("threads"), cluster=options.get("cluster"))
    return LocalExecutor(jobs=options.get("jobs") or 1, threads=options.get("threads"),
                         jobs_per_gpu=options.get("jobs_per_gpu"))


def check_writable(path: Path, flag: str, create: bool) -> None:
    """Refuse a directory that cannot be created or written (with ``create``, by making it and
    writing a temporary file in it; without, by asking the nearest folder that exists)."""
    existing = next(p for p in [path, *path.parents] if p.exists() or p == p.parent)
    tip = f"choose a writable directory with {flag} DIR."
    if not existing.is_dir():
        raise StudyError(f"{flag} {path} cannot be created: {existing} is not a directory; {tip}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StudyError(f"{flag} {path} cannot be written ({existing} is read-only for this user); {tip}")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
            tempfile.TemporaryFile(dir=path).close()
        except OSError as err:
            raise StudyError(f"{flag} {path} cannot be written ({err.strerror or err}); {tip}") from None


def status_of(spec: RunSpec, root: Path) -> str:
    directory = spec.directory(root)
    if complete_results(directory) is not None:
        return "done"
    return "interrupted (resumes)" if last_checkpoint(directory) is not None else "to do"


def _detail(outcome: Outcome) -> str | None:
    if outcome.status in ("done", "skipped") and outcome.acc is not None:
        return f"{ACC.label} {outcome.acc:.4f}, {outcome.wall_time_s:.0f} s"
    if outcome.status == "stopped":
        kept = last_checkpoint(Path(outcome.directory))
        return (f"its {kept.name} is kept: it resumes from there" if kept is not None else
                "not started" if outcome.error == "not started" else "no checkpoint yet: it starts again")
    return outcome.error


def run_study(study_file: str | Path, root: str | Path, seeds: list[int] | None = None, options: dict | None = None,
              out: str | Path | None = None, dry_run: bool = False, report: bool = True) -> list[Outcome]:
    """Run a study (see the module docstring); return every run's :class:`Outcome`. Raises
    :class:`StudyError` before any run on anything that would fail, and :class:`StudyStopped` when
    SIGTERM or SIGINT stopped it."""
    from lightning_cl.study.executors import StopRequest

    study = load_study(study_file)
    root = Path(root)
    options = {**study.executor, **{k: v for k, v in (options or {}).items() if v is not None}}
    executor = make_executor(options)  # checks the executor's settings before any run
    specs = plan(study, seeds)
    out = Path(out) if out else root / "report" / study.path.stem
    check_writable(root, "--root", create=False)
    check_writable(out, "-o", create=False)
    statuses = {spec: status_of(spec, root) for spec in specs}
    if dry_run:
        for spec in specs:
            print(f"{statuses[spec]:22s} {spec.name} seed {spec.seed}  {spec.directory(root)}")
        print(f"{len(specs)} run(s), each checked: {sum(s == 'done' for s in statuses.values())} done")
        return []
    check_writable(root, "--root", create=True)
    todo = [s for s in specs if statuses[s] != "done"]
    print(f"study {study.path.stem}: {len(specs)} run(s), {len(specs) - len(todo)} done before, {len(todo)} to run "
          f"under {root}")
    outcomes: list[Outcome] = [Outcome(s, str(s.directory(root)), "skipped") for s in specs if statuses[s] == "done"]
    stop = StopRequest()
    with tqdm(total=len(specs), initial=len(specs) - len(todo), desc="study", unit="run", dynamic_ncols=True) as bar:
        def on_done(outcome: Outcome) -> None:
            outcomes.append(outcome)
            spec = outcome.spec
            bar.write(f"{outcome.status:7s} {spec.name} seed {spec.seed}: {_detail(outcome)}")
            if outcome.status != "stopped":
                bar.update()

        with stop.watching():
            executor.run(todo, root, on_done, stop)
    failures = [o for o in outcomes if o.status == "failed"]
    report_error = None
    if report and not stop.requested:
        from lightning_cl.report import write_report

        try:
            metric, over = study.select or ("val_acc", ())
            path = write_report([s.directory(root) for s in specs if s.directory(root).is_dir()], out,
                                select_over=over, select_metric=metric)
            print(f"report: {path}")
        except OSError as err:  # the failures are still listed below
            report_error = (f"the report could not be written to {out} ({err.strerror or err}); the runs are kept: "
                            f"write it with python -m lightning_cl.report {root} -o DIR")
    for failure in failures:
        log = failure.log if Path(failure.log).is_file() else "none (the run did not start)"
        print(f"FAILED {failure.spec.name} seed {failure.spec.seed}: {failure.error}\n"
              f"       args: {' '.join(failure.spec.args)}\n       log: {log}", file=sys.stderr)
    left = [o for o in outcomes if o.status == "left"]
    if left:
        print(f"note: {len(left)} run(s) left to the study that is running them, not in this report: "
              + "; ".join(f"{o.spec.name} seed {o.spec.seed} ({o.error})" for o in left)
              + ". Run the same command again once it has finished.", file=sys.stderr)
    if stop.requested:
        counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
        stopped = [o for o in outcomes if o.status == "stopped" and o.error != "not started"]
        resumes = sum(last_checkpoint(Path(o.directory)) is not None for o in stopped)
        ended = {o.spec for o in outcomes}
        not_started = sum(1 for s in todo if s not in ended) + sum(o.error == "not started" for o in outcomes)
        parts = [f"{counts['failed']} failed" if counts["failed"] else "",
                 f"{len(stopped)} stopped ({resumes} with a last.ckpt to resume from)" if stopped else "",
                 f"{not_started} not started" if not_started else ""]
        raise StudyStopped(stop.signals[0], f"the study was stopped by {stop.name}: "
                           + ", ".join([f"{counts['done'] + counts['skipped']} of {len(specs)} run(s) done",
                                        *filter(None, parts)]))
    if report_error is not None:
        raise StudyError(report_error)
    return outcomes


def main(argv: Sequence[str] | None = None) -> None:
    quiet.install()  # the resolver builds the CLI in this process
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    options = {k: getattr(args, k) for k in ("executor", "jobs", "threads", "jobs_per_gpu", "partition", "time",
                                             "gpus_per_job", "chunk_size")}
    again = shlex.join([PROG, *argv])
    try:
        outcomes = run_study(args.study, args.root, args.seeds, options, args.out, args.dry_run)
    except (StudyError, ValueError) as err:
        sys.exit(f"error: {err}")
    except StudyStopped as stopped:
        print(f"error: {stopped}; run the same command again to resume: {again}", file=sys.stderr)
        sys.exit(128 + stopped.signum)
    except KeyboardInterrupt:  # before the runs or in the report: nothing is left running
        print(f"error: interrupted (SIGINT) before the study ended; run the same command again to resume: {again}",
              file=sys.stderr)
        sys.exit(128 + signal.SIGINT)
    if any(o.status == "failed" for o in outcomes):
        sys.exit(1)
