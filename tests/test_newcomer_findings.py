"""What a newcomer who knew the tool only from its README ran into: each finding
pinned by its exact error, hint and exit code."""

from __future__ import annotations

import json
import shutil

import pytest
from helpers import SyntheticUpstream

# --------------------------------------------------------------------------- 1. list --json


@pytest.mark.parametrize("shape", ["climbing line", "folder"])
def test_list_json_shows_a_device_whose_series_is_bad_as_its_problem(
    upstream: SyntheticUpstream, shape: str
) -> None:
    shutil.copytree(upstream.store / "devA", upstream.store / "devB")
    series = upstream.base_folder / "series"
    if shape == "folder":
        series.unlink()
        series.mkdir()
        problem = f"{series} is a folder, not a regular file"
    else:
        series.write_text("../x.patch\n")
        problem = f"{series}:1: '../x.patch' is not a plain patch file name"
    result = upstream.cli("list", "--json")
    assert result.code == 0, result.output
    entries = json.loads(result.stdout)["include"]
    assert entries[0] == {
        "device": "devA",
        "display_name": "Device A",
        "base": None,
        "problem": problem,
        "command": "patchtool check -d devA",
    }
    assert [(e["device"], e["base"]) for e in entries] == [("devA", None), ("devB", "demo-1.0")]
    # The command CI runs for it fails by name.
    check = upstream.cli("check", "-d", "devA")
    assert check.code == 10
    assert "error: 1 check(s) failed: devA/demo-1.0 series" in check.stderr
    assert problem in check.stdout
