"""Studies: a study file expands to runs checked before any runs; warm workers leak nothing
between runs; a study killed with SIGKILL and restarted finishes only what is missing; failures
are listed; runs are claimed so that studies never share a run directory; submitit's local
executor stands in for SLURM. Runs train on tests/synthetic.py (no MNIST), shrunk."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO
from lightning_cl.results import RunResults
from lightning_cl.settings import PLACEMENT
from lightning_cl.study.plan import ADDED_SINCE_RUN_IDS, LEFT_OUT_OF_RUN_IDS, Resolver, StudyError, expand, load_study, plan
from lightning_cl.study.runner import main, run_study
from lightning_cl.study.worker import claimed, complete_results
from synthetic import config_yaml

TESTS = REPO / "tests"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])}



def _study(tmp_path: Path, experiments: str, seeds=(0,), steps=8) -> Path:
    (tmp_path / "synthetic.yaml").write_text(config_yaml(steps))
    path = tmp_path / "study.yaml"
    path.write_text(f"seeds: {list(seeds)}\nexperiments:\n{experiments}")
    return path


TWO = """\
  - name: plain
    configs: [synthetic.yaml]
    grid:
      model.lr: [0.001, 0.01]
"""


def _numbers(results: Path) -> dict:
    data = json.loads(results.read_text())
    for key in ("wall_time_s", "config"):
        data.pop(key)
    return data


# ----------------------------------------------------------------- the study file
def test_a_study_expands_to_experiments_times_variants_times_grid_times_seeds(tmp_path):
    path = _study(tmp_path, TWO + """\
  - name: scenarios
    configs: [synthetic.yaml]
    variants:
      task: {overrides: {data.scenario: task}}
      domain: {overrides: {data.scenario: domain}}
""", seeds=(0, 1))
    specs = plan(load_study(path))
    assert len(specs) == (2 + 2) * 2
    assert sorted({s.name for s in specs}) == ["plain/model.lr=0.001", "plain/model.lr=0.01", "scenarios/domain",
                                               "scenarios/task"]
    assert len({s.run_id for s in specs}) == len(specs)  # the seed is part of a run's identity
    again = plan(load_study(path))
    assert [s.run_id for s in again] == [s.run_id for s in specs]  # stable


def test_a_run_keeps_its_id_on_a_gpu_and_in_other_places_but_not_on_more_devices(tmp_path):
    ((name, args, seed),) = expand(load_study(_study(tmp_path, "  - name: a\n    configs: [synthetic.yaml]\n")))
    resolver = Resolver()
    plain = resolver.spec(name, args, seed).run_id
    moved = ["--trainer.accelerator", "gpu", "--trainer.log_every_n_steps", "1", "--trainer.logger", "false"]
    assert resolver.spec(name, [*args, *moved], seed).run_id == plain  # a finished CPU run is recognised
    assert resolver.spec(name, [*args, "--trainer.devices", "2"], seed).run_id != plain
    assert resolver.spec(name, [*args, "--trainer.precision", "bf16-mixed"], seed).run_id != plain


def test_run_ids_of_runs_without_placement_settings_are_the_ids_of_before():
    """Ids were first the hash of the resolved config without LEFT_OUT_OF_RUN_IDS: runs that set
    no other placement setting (nor the accelerator) keep theirs, and are found done."""
    assert set(LEFT_OUT_OF_RUN_IDS) <= PLACEMENT
    resolver = Resolver()
    for name, args, seed in expand(load_study(REPO / "configs/studies/split_mnist_scenarios.yaml")):
        config = json.loads(resolver.parser.dump(resolver.parser.parse_args([*args, "--seed_everything", str(seed)]),
                                                 format="json", skip_none=False))
        for key in (*LEFT_OUT_OF_RUN_IDS, *ADDED_SINCE_RUN_IDS):  # the latter did not exist then
            *parents, last = key.split(".")
            node = config
            for parent in parents:
                node = node.get(parent, {})
            node.pop(last, None)
        first_id = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        assert resolver.spec(name, args, seed).run_id == first_id, name


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "studies").glob("*.yaml")), ids=lambda p: p.stem)
def test_every_study_file_of_the_project_plans(path):
    specs = plan(load_study(path))
    assert specs and all(s.args.count("-c") >= 1 for s in specs)


@pytest.mark.parametrize("experiments, message", [
    ("  - name: a\n    configs: [synthetic.yaml]\n    grids: {model.lr: [0.1]}\n", "unknown key(s) grids"),
    ("  - name: a\n    configs: [no_such.yaml]\n", "config 'no_such.yaml' does not exist"),
    ("  - name: a\n    configs: [synthetic.yaml]\n    overrides: {model.no_such_setting: 1}\n", "no_such_setting"),
    ("  - name: a\n    configs: [synthetic.yaml]\n    grid: {model.lr: []}\n", "expands to no runs"),
    ("  - name: a\n    configs: [synthetic.yaml]\n  - name: b\n    configs: [synthetic.yaml]\n", "are the same run"),
])
def test_a_bad_study_file_fails_before_any_run(tmp_path, experiments, message, capsys):
    path = _study(tmp_path, experiments)
    root = tmp_path / "root"
    with pytest.raises(StudyError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_study(path, root)
    assert not root.exists()


def test_the_command_line_names_the_problem_and_exits_2(tmp_path):
    path = _study(tmp_path, "  - name: a\n    configs: [synthetic.yaml]\n    colour: blue\n")
    out = subprocess.run([sys.executable, "-m", "lightning_cl.study", str(path), "--root", str(tmp_path / "r")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and "unknown key(s) colour" in out.stderr and not (tmp_path / "r").exists()


def test_the_slurm_executor_without_slurm_is_refused_before_any_run(tmp_path, monkeypatch):
    # submitit's AutoExecutor would fall back to running the jobs here, silently.
    monkeypatch.setenv("PATH", str(tmp_path / "no_bin"))  # no sbatch, even on a SLURM machine
    path = _study(tmp_path, TWO)
    with pytest.raises(SystemExit) as exit_:
        main([str(path), "--executor", "slurm", "--root", str(tmp_path / "r")])
    assert exit_.value.code == ("error: --executor slurm: no SLURM on this machine (sbatch not found); "
                                "run locally with --executor local (the default).")  # printed, then exit status 1
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------- warm workers
@pytest.mark.study
def test_a_run_in_a_warm_worker_after_two_others_equals_the_same_run_in_a_fresh_process(tmp_path):
    path = _study(tmp_path, TWO + """\
  - name: bn
    configs: [synthetic.yaml]
    overrides: {model.norm: batch, model.dropout: 0.3, data.scenario: task}
""")
    specs = {s.name: s for s in plan(load_study(path))}
    target = specs["bn"]
    script = (
        "import sys, pickle; from lightning_cl.study.worker import run_chunk; "
        "specs = pickle.loads(bytes.fromhex(sys.argv[1])); run_chunk(specs, sys.argv[2], threads=1)"
    )
    import pickle

    warm = [specs["plain/model.lr=0.001"], specs["plain/model.lr=0.01"], target]
    subprocess.run([sys.executable, "-c", script, pickle.dumps(warm).hex(), str(tmp_path / "warm")],
                   env=ENV, check=True, timeout=600)
    fresh = subprocess.run([sys.executable, "-c", script, pickle.dumps([target]).hex(), str(tmp_path / "fresh")],
                           env=ENV, check=True, timeout=600)
    assert fresh.returncode == 0
    a = complete_results(target.directory(tmp_path / "warm"))
    b = complete_results(target.directory(tmp_path / "fresh"))
    assert a is not None and b is not None
    assert _numbers(a) == _numbers(b)


# ----------------------------------------------------------------- kill, restart, failures
def _complete_count(root: Path) -> int:
    return sum(1 for p in root.rglob("results.json") if RunResults.read(p).complete)


@pytest.mark.study
def test_a_study_killed_with_sigkill_finishes_only_what_is_missing_and_reports_the_same(tmp_path):
    experiments = """\
  - name: plain
    configs: [synthetic.yaml]
    grid:
      model.lr: [0.001, 0.003, 0.01]
"""
    path = _study(tmp_path, experiments, steps=40)
    killed, straight = tmp_path / "killed", tmp_path / "straight"
    command = [sys.executable, "-m", "lightning_cl.study", str(path), "--jobs", "1", "--threads", "1"]
    proc = subprocess.Popen([*command, "--root", str(killed)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    deadline = time.time() + 300
    while _complete_count(killed) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its workers, mid-study
    proc.wait()
    done_before = _complete_count(killed)
    assert 1 <= done_before < 3
    again = subprocess.run([*command, "--root", str(killed)], env=ENV, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"{done_before} done before, {3 - done_before} to run" in again.stdout
    assert _complete_count(killed) == 3
    subprocess.run([*command, "--root", str(straight)], env=ENV, check=True, capture_output=True, timeout=600)
    for spec in plan(load_study(path)):
        assert _numbers(complete_results(spec.directory(killed))) == _numbers(complete_results(spec.directory(straight)))
    a = json.loads((killed / "report" / "study" / "summary.json").read_text())
    b = json.loads((straight / "report" / "study" / "summary.json").read_text())
    assert [g["acc"] for g in a["groups"]] == [g["acc"] for g in b["groups"]]


def test_a_failed_run_does_not_stop_the_others_and_is_listed(tmp_path, capsys):
    path = _study(tmp_path, TWO + """\
  - name: diverges
    configs: [synthetic.yaml]
    overrides: {model.optimizer: sgd, model.lr: 1.0e+12}
""")
    outcomes = run_study(path, tmp_path / "root", options={"jobs": 1, "threads": 1})
    status = {o.spec.name: o.status for o in outcomes}
    assert status == {"plain/model.lr=0.001": "done", "plain/model.lr=0.01": "done", "diverges": "failed"}
    err = capsys.readouterr().err
    assert "FAILED diverges seed 0: error: the training loss was" in err and "fit.log" in err
    failed = next(o for o in outcomes if o.status == "failed")
    assert "training diverged" in Path(failed.log).read_text()


def test_a_claimed_run_directory_is_not_run_twice_and_a_dead_claim_is_taken_over(tmp_path):
    with claimed(tmp_path / "run") as first:
        with claimed(tmp_path / "run") as second:
            assert first and not second
    (tmp_path / "run" / ".lock").write_text(f"{os.uname().nodename} 999999999")  # a killed process's claim
    with claimed(tmp_path / "run") as taken:
        assert taken


def test_runs_log_their_settings_and_final_metrics_to_tensorboard_hparams(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    path = _study(tmp_path, "  - name: a\n    configs: [synthetic.yaml]\n    overrides: {model.lr: 0.002}\n")
    (outcome,) = run_study(path, tmp_path / "root", options={"jobs": 1, "threads": 1}, report=False)
    run_dir = Path(outcome.results).parent
    events = EventAccumulator(str(run_dir))
    events.Reload()
    assert events.Scalars("hparams/acc")[-1].value == pytest.approx(RunResults.read(outcome.results).metrics()["acc"])
    plugin = [plugin_data_pb2.HParamsPluginData.FromString(v.metadata.plugin_data.content)
              for f in run_dir.glob("events.*") for e in EventFileLoader(str(f)).Load() for v in e.summary.value
              if v.tag in ("_hparams_/experiment", "_hparams_/session_start_info")]
    experiment = [p.experiment for p in plugin if p.HasField("experiment")][-1]
    assert {m.name.tag for m in experiment.metric_infos} >= {"hparams/acc", "hparams/bwt", "hparams/forgetting"}
    session = [p.session_start_info for p in plugin if p.HasField("session_start_info")][-1]
    assert session.hparams["model.lr"].number_value == 0.002 and session.hparams["method"].string_value == "none"


# ----------------------------------------------------------------- SLURM, through submitit's local executor
@pytest.mark.study
def test_the_slurm_executor_runs_chunks_of_runs_as_jobs(tmp_path, monkeypatch):
    pytest.importorskip("submitit")
    monkeypatch.setenv("PYTHONPATH", ENV["PYTHONPATH"])
    path = _study(tmp_path, TWO, seeds=(0, 1))
    outcomes = run_study(path, tmp_path / "root", options={"executor": "slurm", "cluster": "local", "chunk_size": 3,
                                                           "threads": 1}, report=False)
    assert sorted(o.status for o in outcomes) == ["done"] * 4
    jobs = [d for d in (tmp_path / "root" / ".submitit").iterdir() if d.name.isdigit()]
    assert len(jobs) == 2  # 4 runs in chunks of 3: two jobs


# ----------------------------------------------------------------- a stopped study stops its workers
LONG = """\
  - name: plain
    configs: [synthetic.yaml]
    grid:
      model.lr: [0.001, 0.003, 0.01]
"""
LONG_STEPS = 400


def _study_processes(mark: str) -> list[str]:
    """The live processes (not zombies) whose environment carries ``mark``: a study and its workers."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if mark.encode() in (proc / "environ").read_bytes().split(b"\0") and \
                    (proc / "stat").read_text().rpartition(")")[2].split()[0] != "Z":
                found.append(proc.name)
        except OSError:
            continue
    return found


def _half_way(root: Path, since: float) -> bool:
    """A run saved a checkpoint since ``since`` and is not complete."""
    for ckpt in root.rglob("last.ckpt"):
        results = ckpt.parent.parent / "results.json"
        if ckpt.stat().st_mtime > since and not (results.is_file() and RunResults.read(results).complete):
            return True
    return False


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("uninterrupted")
    path = _study(tmp, LONG, steps=LONG_STEPS)
    subprocess.run([sys.executable, "-m", "lightning_cl.study", str(path), "--jobs", "2", "--threads", "1",
                    "--root", str(tmp / "root")], env=ENV, check=True, capture_output=True, timeout=600)
    return {spec.name: _numbers(complete_results(spec.directory(tmp / "root"))) for spec in plan(load_study(path))}


@pytest.mark.study
@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the study's processes in /proc")
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL", "Ctrl-C"])
def test_a_stopped_study_stops_its_workers_and_a_restart_finishes_only_what_is_missing(tmp_path, how, uninterrupted):
    """SIGTERM or SIGKILL of the study's process alone (its workers must be told, or notice), or
    SIGINT to its process group as Ctrl-C sends it: no process is left, the study says how to
    resume, and the same command then finishes the rest with the numbers of an uninterrupted study."""
    mark = f"LIGHTNING_CL_TEST_STUDY={tmp_path.name}"
    env = {**ENV, "LIGHTNING_CL_TEST_STUDY": tmp_path.name}
    path = _study(tmp_path, LONG, steps=LONG_STEPS)
    root = tmp_path / "root"
    command = [sys.executable, "-m", "lightning_cl.study", str(path), "--jobs", "2", "--threads", "1",
               "--root", str(root)]
    since = time.time()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline = time.time() + 300
    while not _half_way(root, since) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the study ended before a run was half-way"
    signalled = time.time()
    if how == "Ctrl-C":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        os.kill(proc.pid, getattr(signal, how))
    output, _ = proc.communicate(timeout=120)
    while _study_processes(mark) and time.time() - signalled < 30:
        time.sleep(0.2)
    assert not _study_processes(mark), f"processes of the study left 30 s after {how}"
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 128 + (signal.SIGTERM if how == "SIGTERM" else signal.SIGINT), output[-3000:]
        last = output.strip().splitlines()[-1]
        assert last.startswith(f"error: the study was stopped by {'SIGTERM' if how == 'SIGTERM' else 'SIGINT'}: ")
        assert last.endswith(f"run the same command again to resume: lightning-cl-study {' '.join(command[3:])}")
        assert "Traceback" not in output
    done_before = _complete_count(root)
    assert done_before < 3
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert f"{done_before} done before, {3 - done_before} to run" in again.stdout
    assert "left" not in again.stderr  # runs locked by the stopped study's processes were taken over
    finished = {spec.name: _numbers(complete_results(spec.directory(root))) for spec in plan(load_study(path))}
    assert finished == uninterrupted


def test_a_run_locked_by_a_live_study_is_left_to_it_and_named(tmp_path, capsys):
    path = _study(tmp_path, TWO)
    root = tmp_path / "root"
    held = plan(load_study(path))[0]
    holder = subprocess.Popen(["sleep", "120"])
    try:
        held.directory(root).mkdir(parents=True)
        (held.directory(root) / ".lock").write_text(json.dumps({"host": os.uname().nodename, "pid": holder.pid}))
        outcomes = run_study(path, root, options={"jobs": 1, "threads": 1})
    finally:
        holder.kill()
        holder.wait()
    assert {o.spec.name: o.status for o in outcomes} == {held.name: "left", "plain/model.lr=0.01": "done"}
    err = capsys.readouterr().err
    assert f"note: 1 run(s) left to the study that is running them, not in this report: {held.name} seed 0 " \
           f"(another study (pid {holder.pid} on {os.uname().nodename}) is running it)" in err


def test_a_lock_of_a_worker_whose_study_is_gone_is_taken_over_once_the_worker_has_stopped(tmp_path):
    from lightning_cl.study.worker import claimed

    dead = subprocess.Popen(["true"])
    dead.wait()
    worker = subprocess.Popen(["sleep", "1"])  # an orphaned worker, ending its batch
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": worker.pid, "study_pid": dead.pid}))
    start = time.monotonic()
    with claimed(lock.parent) as claim:
        assert claim and worker.poll() is not None  # it waited for the worker, then took the run
    assert time.monotonic() - start < 30
    worker.wait()
    live = subprocess.Popen(["sleep", "120"])  # a worker of a live study (this one)
    try:
        lock.write_text(json.dumps({"host": os.uname().nodename, "pid": live.pid, "study_pid": os.getpid()}))
        with claimed(lock.parent, orphan_wait_s=0.5) as claim:
            assert not claim and f"study pid {os.getpid()}, worker pid {live.pid}" in claim.holder
    finally:
        live.kill()
        live.wait()


KILLS_ITS_PROCESS = '''
import os, signal
from lightning.pytorch import Callback


class KillsItsProcess(Callback):
    """A crash in C code, as far as the study can tell: the worker dies at once."""

    def on_train_start(self, trainer, pl_module):
        os.kill(os.getpid(), signal.SIGKILL)
'''


def test_a_worker_that_dies_fails_only_its_run_and_a_new_worker_takes_its_place(tmp_path, monkeypatch, capsys):
    (tmp_path / "kills_its_process.py").write_text(KILLS_ITS_PROCESS)
    monkeypatch.syspath_prepend(str(tmp_path))  # the workers get this process's sys.path
    path = _study(tmp_path, TWO + """\
  - name: dies
    configs: [synthetic.yaml]
    overrides: {trainer.callbacks: [{class_path: kills_its_process.KillsItsProcess}]}
""")
    outcomes = run_study(path, tmp_path / "root", options={"jobs": 1, "threads": 1}, report=False)
    status = {o.spec.name: (o.status, o.error) for o in outcomes}
    assert status["plain/model.lr=0.001"] == status["plain/model.lr=0.01"] == ("done", None)
    assert status["dies"][0] == "failed" and status["dies"][1].startswith("its worker process died (killed by SIGKILL)")
    err = capsys.readouterr().err
    assert "FAILED dies seed 0: its worker process died (killed by SIGKILL)" in err and "fit.log" in err


# ----------------------------------------------------------------- every run checked first
@pytest.mark.parametrize("experiment, seeds, message", [
    ("configs: [synthetic.yaml]\n    overrides: {model.lr: -1}", None, "error: model.lr=-1.0 must be > 0."),
    ("configs: [benchmarks/split_mnist.yaml]\n    overrides: {data.tasks: [[0, 1], [1, 2]]}", None,
     "data.tasks: class 1 is in task 0 and task 1; each class belongs to one task."),  # no MNIST is read
    ("configs: [synthetic.yaml]\n    overrides: {trainer.max_epochs: 3}", None,
     "error: trainer.max_epochs=3 is set by"),
    ("configs: [synthetic.yaml]", [-1], "--seeds: -1 out of range: a seed is 0 <= seed < 2**32"),
    ("configs: [synthetic.yaml]", [2**33], f"--seeds: {2**33} out of range"),
])
def test_a_value_refused_when_a_run_is_built_is_refused_before_any_run_and_by_a_dry_run(
        tmp_path, monkeypatch, experiment, seeds, message):
    path = _study(tmp_path, f"  - name: a\n    {experiment}\n  - name: fine\n    configs: [synthetic.yaml]\n")
    root, cwd = tmp_path / "root", tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    for dry_run in (True, False):
        with pytest.raises(StudyError, match=re.escape(message)) as refused:
            run_study(path, root, seeds=seeds, dry_run=dry_run)
    if seeds is None:
        assert str(refused.value).startswith("1 run(s) would stop before training; nothing was run:\nrun a (seed 0): ")
    assert not root.exists() and not any(cwd.iterdir())  # the check wrote nothing


def test_a_study_files_seed_out_of_range_is_refused(tmp_path):
    from lightning.fabric.utilities.seed import max_seed_value, min_seed_value

    from lightning_cl.study.plan import SEED_RANGE

    assert SEED_RANGE == range(min_seed_value, max_seed_value + 1)  # what seed_everything takes
    path = _study(tmp_path, "  - name: a\n    configs: [synthetic.yaml]\n", seeds=(0, 2**32))
    with pytest.raises(StudyError, match=re.escape(f"seeds: {2**32} out of range")):
        load_study(path)


@pytest.mark.parametrize("options, gpus, message", [
    (["--threads", "-1"], 0, "error: --threads=-1 must be at least 1."),
    (["--jobs", "0"], 0, "error: --jobs=0 must be at least 1."),
    (["--jobs-per-gpu", "2"], 0, "error: --jobs-per-gpu=2: no GPU is visible (torch.cuda.is_available() is False); "
                                 "leave it out to run on the CPU."),
    (["--jobs", "3", "--jobs-per-gpu", "2"], 1, "error: --jobs=3 with --jobs-per-gpu=2 needs 2 GPUs; 1 visible: "
                                                "use at most --jobs 2."),
    (["--root", "{file}/root"], 0, "error: --root {file}/root cannot be created: {file} is not a directory; "
                                   "choose a writable directory with --root DIR."),
    (["-o", "{file}"], 0, "error: -o {file} cannot be created: {file} is not a directory"),
])
def test_bad_executor_options_and_an_unwritable_root_are_refused_before_any_run(tmp_path, monkeypatch, options,
                                                                                 gpus, message):
    import lightning_cl.study.runner as runner

    monkeypatch.setattr(runner, "_gpu_count", lambda: gpus)
    path = _study(tmp_path, TWO)
    file = tmp_path / "a_file"
    file.write_text("")
    options = [o.format(file=file) for o in options]
    for dry_run in ([], ["--dry-run"]):
        with pytest.raises(SystemExit) as exit_:
            main([str(path), "--root", str(tmp_path / "r"), *options, *dry_run])
        assert str(exit_.value.code).startswith(message.format(file=file))
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("seed", ["-1", str(2**33)])
def test_a_seed_out_of_range_on_the_command_line_is_refused(tmp_path, seed, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([str(_study(tmp_path, TWO)), "--seeds", seed, "--root", str(tmp_path / "r")])
    assert exit_.value.code == 2
    assert f"argument --seeds: seed {seed} is out of range: a seed is 0 <= seed < 2**32" in capsys.readouterr().err


def test_a_failed_run_is_listed_with_its_own_error_line_not_its_exit_status(tmp_path, capsys):
    path = _study(tmp_path, "  - name: a\n    configs: [synthetic.yaml]\n")
    (spec,) = plan(load_study(path))
    checkpoints = spec.directory(tmp_path / "root") / "lightning_logs" / "version_0" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "last.ckpt").write_bytes(b"not a checkpoint")  # the run resumes from it, and stops with exit 2
    (outcome,) = run_study(path, tmp_path / "root", options={"jobs": 1, "threads": 1}, report=False)
    assert outcome.status == "failed"
    assert outcome.error.startswith(f"error: ckpt_path={str(checkpoints / 'last.ckpt')!r} cannot be loaded")
    assert f"FAILED a seed 0: {outcome.error}" in capsys.readouterr().err


def test_a_report_that_cannot_be_written_still_lists_the_failures(tmp_path, monkeypatch, capsys):
    import errno

    import lightning_cl.report

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(lightning_cl.report, "write_report", read_only)
    path = _study(tmp_path, "  - name: diverges\n    configs: [synthetic.yaml]\n"
                            "    overrides: {model.optimizer: sgd, model.lr: 1.0e+12}\n")
    with pytest.raises(StudyError, match=r"the report could not be written to .* \(Read-only file system\); the runs "
                                         r"are kept: write it with python -m lightning_cl.report "):
        run_study(path, tmp_path / "root", options={"jobs": 1, "threads": 1})
    assert "FAILED diverges seed 0: error: the training loss was" in capsys.readouterr().err
