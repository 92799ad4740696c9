"""The report side, run after training and never during it: group runs by what they record
(``comparison``), write ``report.md``, ``summary.json`` and pictures (``writer``), and put the
notebook's published numbers next to ours (``notebook``, ``notebook_targets``).

``python -m lightning_cl.report RUN_DIR ... -o OUT`` runs :func:`main`.
"""

from lightning_cl.report.writer import main, write_report

__all__ = ["main", "write_report"]
