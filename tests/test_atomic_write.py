"""Checkpoints and ``results.json`` are written to a temporary file in their own directory, synced
and renamed: a failed write (a full disk) leaves the previous file whole, and the run stops with
one line naming the file and the last complete checkpoint, from which it resumes as if uninterrupted."""

import errno
import json
import os
import pickle
import subprocess
import sys
import tempfile

import pytest
import torch

from conftest import REPO
from lightning_cl import atomic_write
from lightning_cl.atomic_write import WriteFailed, write_atomic
from lightning_cl.checkpoint_io import AtomicCheckpointIO
from lightning_cl.cli import run_cli
from lightning_cl.results import RunResults, write_json_atomic

NO_SPACE = "no space left on device while writing"


def recording_writes(monkeypatch):
    """Every file :func:`write_atomic` writes bytes into, in order."""
    written = []

    def _write_all(out, data, write_all=atomic_write._write_all):
        written.append(out.name)
        write_all(out, data)

    monkeypatch.setattr(atomic_write, "_write_all", _write_all)
    return written


def hidden(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_files_are_written_next_to_their_place_then_renamed(tmp_path, monkeypatch):
    elsewhere = tmp_path / "tmp"  # the system temporary directory, as if on another filesystem
    elsewhere.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(elsewhere))
    written = recording_writes(monkeypatch)
    ckpt, results = tmp_path / "run/checkpoints/last.ckpt", tmp_path / "run/results.json"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}}, ckpt)
    write_json_atomic(results, {"a": 1})
    assert written == [str(ckpt.parent / f".last.ckpt.tmp-{os.getpid()}"),
                       str(results.parent / f".results.json.tmp-{os.getpid()}")]
    assert torch.equal(torch.load(ckpt, weights_only=True)["state_dict"]["w"], torch.ones(3))
    assert json.loads(results.read_text()) == {"a": 1}
    assert hidden(ckpt.parent) == hidden(results.parent) == [] and list(elsewhere.iterdir()) == []


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "no space left on device"),
                                          (errno.EDQUOT, "disk quota exceeded"), (errno.EIO, "input/output error")])
def test_a_failed_write_leaves_the_previous_file_whole(tmp_path, monkeypatch, code, reason):
    ckpt, results = tmp_path / "last.ckpt", tmp_path / "results.json"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(1000)}}, ckpt)
    write_json_atomic(results, {"tasks_done": 1})
    before = ckpt.read_bytes(), results.read_bytes()

    def fails_half_way(out, data, write_all=atomic_write._write_all):
        view = memoryview(data).cast("B")
        write_all(out, view[: len(view) // 2])  # half of it reached the disk
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(atomic_write, "_write_all", fails_half_way)
    with pytest.raises(WriteFailed) as failed:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(2000)}}, ckpt)
    assert str(failed.value) == f"{reason} while writing {ckpt}" and failed.value.errno == code
    assert isinstance(failed.value, OSError) and failed.value.disk_full == (code != errno.EIO)
    assert str(pickle.loads(pickle.dumps(failed.value))) == str(failed.value)  # e.g. out of a worker process
    with pytest.raises(WriteFailed, match=f"^{reason} while writing {results}$"):
        RunResults(complete=False, tasks=[[0, 1]], accuracy_matrix=[[1.0]], seen_accuracy=[1.0]).write(results)
    assert (ckpt.read_bytes(), results.read_bytes()) == before
    assert torch.equal(torch.load(ckpt, weights_only=True)["state_dict"]["w"], torch.ones(1000))
    assert io.last_saved == ckpt and hidden(tmp_path) == []  # no temporary file left


def test_a_write_interrupted_by_ctrl_c_removes_its_temporary_file(tmp_path, monkeypatch):
    def interrupted(out, data):
        out.write(b"half")
        raise KeyboardInterrupt

    write_atomic(tmp_path / "f", b"old")
    monkeypatch.setattr(atomic_write, "_write_all", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "f", b"new")
    assert (tmp_path / "f").read_bytes() == b"old" and hidden(tmp_path) == []


def test_the_cli_trainer_writes_checkpoints_atomically_unless_the_config_has_its_own_checkpoint_io(tmp_path):
    args = ["--data", "synthetic.SyntheticTasks", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false"]
    assert isinstance(run_cli(args, run=False).trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    own = run_cli([*args, "--trainer.plugins", "lightning.pytorch.plugins.TorchCheckpointIO"], run=False)
    assert type(own.trainer.strategy.checkpoint_io).__name__ == "TorchCheckpointIO"


# Three tasks of one epoch: results.json then last.ckpt are written at the end of each.
RUN = ["--data", "synthetic.SyntheticTasks", "--data.tasks", "[[0, 1], [2, 3], [4, 5]]", "--task_loop.epochs_per_task",
       "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
       "--trainer.callbacks+=probes.NoSpaceAt"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("straight")
    os.environ.pop("NO_SPACE", None)
    run_cli(["fit", *RUN, "--trainer.default_root_dir", str(root)])
    return json.loads((root / "lightning_logs/version_0/results.json").read_text())


def fit_on_a_disk_that_fills(root, file, nth):
    env = {**os.environ, "NO_SPACE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "lightning_cl", "fit", *RUN, "--trainer.default_root_dir", str(root),
                           "--trainer.callbacks.init_args.file", file, "--trainer.callbacks.init_args.nth", str(nth)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("file, tasks_in_results", [("last.ckpt", 2), ("results.json", 1)])
def test_a_full_disk_stops_the_run_in_one_line_and_it_resumes_from_the_intact_checkpoint(
        file, tasks_in_results, uninterrupted, tmp_path, monkeypatch):
    # The disk is full from the second write of `file` (the end of task 2) on: every write fails half way.
    out = fit_on_a_disk_that_fills(tmp_path, file, nth=2)
    run = tmp_path / "lightning_logs/version_0"
    ckpt, config = run / "checkpoints/last.ckpt", run / "config.yaml"
    target = ckpt if file == "last.ckpt" else run / file
    assert out.returncode == 1, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {NO_SPACE} {target}; the last complete checkpoint is {ckpt}; make room, then "
                      f"resume with: lightning-cl fit -c {config} --ckpt_path {ckpt}"], out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "During handling" not in out.stderr
    assert hidden(run) == hidden(run / "checkpoints") == []  # the half-written temporary files are gone

    checkpoint = torch.load(ckpt, weights_only=True)  # the previous one, whole: task 1
    assert len(checkpoint["callbacks"]["TaskLoop"]["epochs_used"]) == 1
    results = json.loads((run / "results.json").read_text())  # the previous one, whole
    assert results["tasks_done"] == tasks_in_results and not results["complete"]
    assert results["accuracy_matrix"] == uninterrupted["accuracy_matrix"][:tasks_in_results]

    monkeypatch.delenv("NO_SPACE", raising=False)  # room was made
    run_cli(["fit", "-c", str(config), "--ckpt_path", str(ckpt)])
    resumed = json.loads((tmp_path / "lightning_logs/version_1/results.json").read_text())
    for key in ("complete", "accuracy_matrix", "seen_accuracy", "seen_loss", "sparsity", "epochs_per_task", "global_step"):
        assert resumed[key] == uninterrupted[key], key
