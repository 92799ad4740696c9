"""Shared fixtures. Tests marked ``mnist`` train on the real MNIST, fetched once into ``data/``
(or ``$LIGHTNING_CL_DATA``) and verified by checksum."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def _verified_mnist_dir() -> str:
    from lightning_cl.data.mnist_files import ensure_mnist

    data_dir = os.environ.get("LIGHTNING_CL_DATA", str(REPO / "data"))
    ensure_mnist(data_dir)
    return data_dir


@pytest.fixture()
def mnist_dir(request, _verified_mnist_dir) -> str:
    # `pytest -m "not mnist"` must run without MNIST: a test that needs it must say so.
    assert request.node.get_closest_marker("mnist"), f"{request.node.name} uses MNIST but is not marked mnist"
    return _verified_mnist_dir


@pytest.fixture(scope="session")
def run_cli(_verified_mnist_dir, tmp_path_factory):
    """Run ``lightning-cl fit`` in-process with a config and overrides; return its results.json."""
    from lightning_cl.cli import run_cli as cli

    def run(config: str, *overrides: str) -> dict:
        root = tmp_path_factory.mktemp("run")
        args = ["fit", "-c", str(REPO / "configs" / config), "--data.data_dir", _verified_mnist_dir,
                "--trainer.default_root_dir", str(root), "--trainer.enable_progress_bar", "false", *overrides]
        cli(args)
        (path,) = root.rglob("results.json")
        results = json.loads(path.read_text())
        results["_dir"] = str(path.parent)
        return results

    return run
