"""``results.json`` is written atomically, with the mode of any other new file."""

import json
import os

from lightning_cl.results import write_json_atomic


def test_results_get_the_mode_of_a_new_file_under_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "results.json", {"a": 1})
        (tmp_path / "other").write_text("x")
    finally:
        os.umask(old)
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0o600
    assert (tmp_path / "results.json").stat().st_mode & 0o777 == (tmp_path / "other").stat().st_mode & 0o777
    assert json.loads((tmp_path / "results.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
