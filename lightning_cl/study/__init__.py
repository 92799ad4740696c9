"""Studies: many runs (configs x settings x seeds) from one study file, on warm workers,
locally or on a SLURM cluster, resumable, ending with the comparison report.

``lightning-cl-study FILE`` / ``python -m lightning_cl.study FILE``; see ``runner.main``.
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "configs"
