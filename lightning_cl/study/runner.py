"""``lightning-cl-study FILE [--seeds ...] [--jobs N] [--root DIR] [-o REPORT_DIR]``: run a study.

Expands the study file (``lightning_cl.study.plan``), checks every run's settings with the CLI's
parser before anything runs, skips runs that already finished under ``--root``, resumes
interrupted ones from their ``last.ckpt``, runs the rest on the executor (warm workers), shows
one progress bar with an ETA and one line per finished run, and ends with the comparison report
over the study's runs. A failed run does not stop the others: the study ends with the list of
failures (run, seed, error, log) and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from lightning_cl import quiet
from lightning_cl.metrics import ACC
from lightning_cl.study.plan import RunSpec, StudyError, load_study, plan
from lightning_cl.study.worker import Outcome, complete_results, last_checkpoint

EXECUTORS = ("local", "slurm")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="lightning-cl-study", description=__doc__.split("\n\n")[0],
                                     epilog="Example: lightning-cl-study configs/studies/notebook.yaml --seeds 0 1 --jobs 2")
    parser.add_argument("study", help="the study file (YAML)")
    parser.add_argument("--seeds", type=int, nargs="+", help="seeds (default: the study file's)")
    parser.add_argument("--root", default="lightning_logs/studies", help="where runs go (default: %(default)s)")
    parser.add_argument("-o", "--out", help="report directory (default: ROOT/report/<study name>)")
    parser.add_argument("--dry-run", action="store_true", help="list the runs and which are done; run nothing")
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


def make_executor(options: dict):
    from lightning_cl.study.executors import LocalExecutor, SlurmExecutor

    if options.get("executor", "local") == "slurm":
        return SlurmExecutor(partition=options.get("partition"), time=options.get("time") or 60,
                             gpus_per_job=options.get("gpus_per_job") or 0, chunk_size=options.get("chunk_size") or 4,
                             threads=options.get("threads"), cluster=options.get("cluster"))
    return LocalExecutor(jobs=options.get("jobs") or 1, threads=options.get("threads"),
                         jobs_per_gpu=options.get("jobs_per_gpu"))


def status_of(spec: RunSpec, root: Path) -> str:
    directory = spec.directory(root)
    if complete_results(directory) is not None:
        return "done"
    return "interrupted (resumes)" if last_checkpoint(directory) is not None else "to do"


def run_study(study_file: str | Path, root: str | Path, seeds: list[int] | None = None, options: dict | None = None,
              out: str | Path | None = None, dry_run: bool = False, report: bool = True) -> list[Outcome]:
    """Run a study (see the module docstring); return every run's :class:`Outcome`."""
    study = load_study(study_file)
    specs = plan(study, seeds)
    root = Path(root)
    options = {**study.executor, **{k: v for k, v in (options or {}).items() if v is not None}}
    executor = make_executor(options)  # checks the executor's settings before any run
    statuses = {spec: status_of(spec, root) for spec in specs}
    if dry_run:
        for spec in specs:
            print(f"{statuses[spec]:22s} {spec.name} seed {spec.seed}  {spec.directory(root)}")
        print(f"{len(specs)} run(s): {sum(s == 'done' for s in statuses.values())} done")
        return []
    todo = [s for s in specs if statuses[s] != "done"]
    print(f"study {study.path.stem}: {len(specs)} run(s), {len(specs) - len(todo)} done before, {len(todo)} to run "
          f"under {root}")
    outcomes: list[Outcome] = [Outcome(s, str(s.directory(root)), "skipped") for s in specs if statuses[s] == "done"]
    with tqdm(total=len(specs), initial=len(specs) - len(todo), desc="study", unit="run", dynamic_ncols=True) as bar:
        def on_done(outcome: Outcome) -> None:
            outcomes.append(outcome)
            spec = outcome.spec
            detail = (f"{ACC.label} {outcome.acc:.4f}, {outcome.wall_time_s:.0f} s" if outcome.status != "failed" and
                      outcome.acc is not None else outcome.error)
            bar.write(f"{outcome.status:7s} {spec.name} seed {spec.seed}: {detail}")
            bar.update()

        executor.run(todo, root, on_done)
    failures = [o for o in outcomes if o.status == "failed"]
    if report:
        from lightning_cl.report import write_report

        out = Path(out) if out else root / "report" / study.path.stem
        path = write_report([s.directory(root) for s in specs if s.directory(root).is_dir()], out)
        print(f"report: {path}")
    for failure in failures:
        print(f"FAILED {failure.spec.name} seed {failure.spec.seed}: {failure.error}\n"
              f"       args: {' '.join(failure.spec.args)}\n       log: {failure.log}", file=sys.stderr)
    return outcomes


def main(argv: Sequence[str] | None = None) -> None:
    quiet.install()  # the resolver builds the CLI in this process
    args = parse_args(argv)
    options = {k: getattr(args, k) for k in ("executor", "jobs", "threads", "jobs_per_gpu", "partition", "time",
                                             "gpus_per_job", "chunk_size")}
    try:
        outcomes = run_study(args.study, args.root, args.seeds, options, args.out, args.dry_run)
    except (StudyError, ValueError) as err:
        sys.exit(f"error: {err}")
    if any(o.status == "failed" for o in outcomes):
        sys.exit(1)
