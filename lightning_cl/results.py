"""``results.json``: the per-run record that users compare across runs (format in README.md)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

RESULTS_FILE = "results.json"
FORMAT_VERSION = 1


def _umask() -> int:
    mask = os.umask(0)  # the only portable way to read it
    os.umask(mask)
    return mask


def write_json_atomic(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as JSON so that ``path`` always holds either the old or the new file, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; give it the mode of any new file
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
