"""The layers of docs/architecture.md: what each package may import of the others, read from
the source (no import runs)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lightning_cl"

# package (a folder or a module of lightning_cl) -> the parts of lightning_cl it must not import
FORBIDDEN = {
    "maths": {"data", "models", "methods", "callbacks", "classifier", "task_loop", "recorder", "cli", "diagnostics",
              "report", "study"},
    "models": {"data", "methods", "callbacks", "classifier", "task_loop", "recorder", "cli", "diagnostics",
               "report", "study"},
    "methods": {"classifier", "task_loop", "recorder", "cli", "diagnostics", "report", "study", "callbacks"},
    "callbacks": {"methods", "classifier", "task_loop", "recorder", "cli", "diagnostics", "report", "study"},
    "classifier": {"task_loop", "recorder", "cli", "diagnostics", "report", "study"},
    "task_loop": {"cli", "diagnostics", "report", "study"},
    "recorder": {"cli", "diagnostics", "report", "study"},
    "diagnostics": {"cli", "report", "study"},
    "cli": {"report", "study"},
    "progress": {"classifier", "recorder", "cli", "diagnostics", "report", "study", "methods"},
    "quiet": {"maths", "models", "data", "methods", "callbacks", "classifier", "task_loop", "recorder", "cli",
              "diagnostics", "report", "study", "metrics", "results", "settings", "progress"},
    "report": {"classifier", "task_loop", "recorder", "cli", "diagnostics", "methods", "study"},
    "atomic_write": {"maths", "models", "data", "metrics", "results", "settings", "methods", "callbacks", "classifier",
                     "task_loop", "recorder", "checkpoint_io", "cli", "diagnostics", "report", "study"},
    "checkpoint_io": {"maths", "models", "data", "methods", "callbacks", "classifier", "task_loop", "recorder", "cli",
                      "diagnostics", "report", "study"},
}


def imported_parts(path: Path) -> set[str]:
    """The parts of lightning_cl (first name after ``lightning_cl.``) that a file imports."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
        parts |= {n.split(".")[1] for n in names if n.startswith("lightning_cl.")}
    return parts


@pytest.mark.parametrize("part", sorted(FORBIDDEN))
def test_each_layer_imports_only_the_layers_below_it(part):
    files = sorted((PACKAGE / part).rglob("*.py")) if (PACKAGE / part).is_dir() else [PACKAGE / f"{part}.py"]
    assert files and all(f.is_file() for f in files)
    wrong = {f"{f.relative_to(PACKAGE)} imports {p}" for f in files for p in imported_parts(f) & FORBIDDEN[part]}
    assert not wrong, sorted(wrong)
