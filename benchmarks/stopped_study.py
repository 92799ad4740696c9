"""A stopped study stops its workers, and a restart finishes exactly what is missing.

On a synthetic study (tests/synthetic.py, no MNIST; 6 runs on 2 workers), stops
``lightning-cl-study`` three ways, each while a run is half-way:

1. SIGTERM to the study's process alone (as ``kill PID`` or a scheduler does),
2. SIGKILL to the study's process alone (``kill -9 PID``: its workers must notice by themselves),
3. SIGINT to its process group (what Ctrl-C in a terminal does);

after each it checks the exit status and last line, that no process of the study is left
after 30 s (every process whose environment carries this script's mark, found in /proc),
and restarts the same command. The last restart runs to the end; then every run's
``results.json`` numbers and the report's accuracies must equal those of the same study
run without interruption. Prints each check and exits 1 if one fails.

    python benchmarks/stopped_study.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic benchmark the study trains on
from synthetic import config_yaml  # noqa: E402

MARK = f"LIGHTNING_CL_STOPPED_STUDY={uuid.uuid4().hex}"
ENV = {**os.environ, MARK.split("=")[0]: MARK.split("=")[1], "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
STUDY = """\
seeds: [0, 1]
experiments:
  - name: plain
    configs: [synthetic.yaml]
    grid:
      model.lr: [0.001, 0.003, 0.01]
"""
RUNS = 6
failed: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  {'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        failed.append(what)


def study_processes() -> list[str]:
    """Every live process (but this one) whose environment carries the mark: the study's."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if MARK.encode() in (proc / "environ").read_bytes().split(b"\0"):
                state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
                if state != "Z":  # a zombie has ended; only its parent's wait is missing
                    cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                    found.append(f"{proc.name}: {cmdline[:90]}")
        except OSError:
            continue
    return found


def results(root: Path) -> dict[Path, dict]:
    out = {}
    for path in root.rglob("results.json"):
        try:
            out[path] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def complete(root: Path) -> int:
    return sum(1 for r in results(root).values() if r.get("complete"))


def half_way(root: Path, since: float) -> bool:
    """A run that has saved a checkpoint since ``since`` and is not complete: stop it now."""
    for ckpt in root.rglob("last.ckpt"):
        run = ckpt.parent.parent
        data = results(run).get(run / "results.json")
        if ckpt.stat().st_mtime > since and not (data or {}).get("complete"):
            return True
    return False


def start(command: list[str], root: Path) -> subprocess.Popen:
    return subprocess.Popen([*command, "--root", str(root)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, cwd=ROOT)


def stop_once(command: list[str], root: Path, how: str) -> None:
    before = complete(root)
    since = time.time()
    proc = start(command, root)
    deadline = time.time() + 300
    while not half_way(root, since) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if proc.poll() is not None:
        check(False, f"{how}: the study was still running when a run was half-way (it ended first)")
        return
    signalled = time.time()
    if how == "SIGTERM to the study's process":
        os.kill(proc.pid, signal.SIGTERM)
    elif how == "SIGKILL to the study's process":
        os.kill(proc.pid, signal.SIGKILL)
    else:
        os.killpg(proc.pid, signal.SIGINT)
    while proc.poll() is None and time.time() - signalled < 120:
        time.sleep(0.05)
    exited = time.time() - signalled
    output, _ = proc.communicate(timeout=120)  # its workers hold its stdout until they end
    lines = [line for line in output.replace("\r", "\n").splitlines() if line.strip() and not line.startswith("study:")]
    print(f"{how}: {complete(root) - before} more run(s) complete; the study's process ended "
          f"{exited:.1f} s after the signal, exit status {proc.returncode}")
    for line in lines[-3:]:
        print(f"    | {line.strip()[:400]}")
    if how == "SIGKILL to the study's process":
        check(proc.returncode == -signal.SIGKILL, "killed: nothing of its own to print")
    else:
        want = 128 + (signal.SIGTERM if "SIGTERM" in how else signal.SIGINT)
        check(proc.returncode == want, f"exit status {want}")
        check(bool(lines) and lines[-1].startswith("error: the study was stopped by")
              and "run the same command again to resume: lightning-cl-study" in lines[-1],
              "its last line says how to resume")
        check("Traceback" not in output, "no traceback")
    left = study_processes()
    while left and time.time() - signalled < 30:
        time.sleep(0.2)
        left = study_processes()
    gone = time.time() - signalled
    check(not left, f"no process of the study left after 30 s (the last ended {gone:.1f} s after the signal)"
          + "".join(f"\n         left: {p}" for p in left))
    locks = list(root.rglob(".lock"))
    print(f"    run directories still locked (by dead processes, taken over on restart): {len(locks)}")


def numbers(path: Path) -> dict:
    data = json.loads(path.read_text())
    return {k: v for k, v in data.items() if k not in ("wall_time_s", "config")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500, help="steps per task of each run (2 tasks)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "synthetic.yaml").write_text(config_yaml(args.steps))
        (tmp / "study.yaml").write_text(STUDY)
        command = [sys.executable, "-m", "lightning_cl.study", str(tmp / "study.yaml"), "--jobs", "2", "--threads", "1"]
        stopped, straight = tmp / "stopped", tmp / "straight"
        print(f"study: {RUNS} runs of {args.steps} steps x 2 tasks on 2 workers; `{' '.join(command[1:])}`")
        for how in ("SIGTERM to the study's process", "SIGKILL to the study's process",
                    "SIGINT to the study's process group (Ctrl-C)"):
            stop_once(command, stopped, how)
        before = complete(stopped)
        final = subprocess.run([*command, "--root", str(stopped)], env=ENV, capture_output=True, text=True, cwd=ROOT)
        first = next((line for line in final.stdout.splitlines() if line.startswith("study ")), "")
        print(f"restart: exit status {final.returncode}; `{first}`")
        check(final.returncode == 0, "the restart ends with exit status 0")
        check(f"{before} done before, {RUNS - before} to run" in first,
              f"it runs exactly the {RUNS - before} missing run(s)")
        check(complete(stopped) == RUNS, f"all {RUNS} runs complete")
        check(not study_processes(), "no process of the study left")
        subprocess.run([*command, "--root", str(straight)], env=ENV, capture_output=True, check=True, cwd=ROOT)
        a = {p.relative_to(stopped).parts[:3]: numbers(p) for p, r in results(stopped).items() if r.get("complete")}
        b = {p.relative_to(straight).parts[:3]: numbers(p) for p, r in results(straight).items() if r.get("complete")}
        check(len(a) == RUNS and a == b, "every run's results.json numbers equal those of the uninterrupted study")
        sa = json.loads((stopped / "report" / "study" / "summary.json").read_text())
        sb = json.loads((straight / "report" / "study" / "summary.json").read_text())
        check([g["acc"] for g in sa["groups"]] == [g["acc"] for g in sb["groups"]], "and so do the report's accuracies")
    print("all checks passed" if not failed else f"{len(failed)} check(s) failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
