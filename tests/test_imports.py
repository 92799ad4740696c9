"""Nothing that runs during training imports the report side (``lightning_cl.report``): a run
trains and records; comparing runs is done after, by another command."""

import os
import subprocess
import sys

from conftest import REPO

TRAINING = ("lightning_cl.task_loop", "lightning_cl.recorder", "lightning_cl.classifier", "lightning_cl.cli",
            "lightning_cl.methods", "lightning_cl.diagnostics", "lightning_cl.study.worker")
CODE = """
import importlib, sys
for module in {modules}:
    importlib.import_module(module)
from lightning_cl.cli import run_cli
run_cli(["fit", "--data", "synthetic.SyntheticTasks", "--data.tasks", "[[0, 1], [2, 3]]", "--task_loop.epochs_per_task",
         "1", "--trainer.limit_train_batches", "2", "--trainer.enable_progress_bar", "false",
         "--trainer.callbacks+=lightning_cl.diagnostics.AccuracyMatrix", "--trainer.default_root_dir", {root!r}])
print("report modules:", sorted(m for m in sys.modules if m.startswith("lightning_cl.report")))
"""


def test_a_run_through_the_cli_imports_nothing_of_the_report(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", CODE.format(modules=TRAINING, root=str(tmp_path))], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "report modules: []" in out.stdout
    assert (next(tmp_path.rglob("results.json")).parent / "accuracy_matrix.png").is_file()  # it did train and record
