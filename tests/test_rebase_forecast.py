"""rebase --dry-run and check --forecast: each patch's outcome onto a new base,
tried in a scratch repository under the cache; the store and the build folder
are never written, and no scratch is left, also after a kill.

The world is test_rebase_kill.py's: the five-patch series on demo 1.0, with
demo 1.1 (one conflict, one 3-way, one already upstream) and demo 1.2 (no
conflict) as sdists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from helpers import SyntheticUpstream, run_cli
from test_rebase_kill import world  # noqa: F401 (fixture)

from patchtool.core.faults import VARIABLE


def everything(folder: Path) -> dict[str, bytes]:
    """Every file below `folder`, .git included, with its bytes (links: target)."""
    found: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = b"link:" + os.readlink(path).encode()
        elif path.is_file():
            found[str(path)] = path.read_bytes()
        else:
            found[str(path)] = b"dir"
    return found


def scratch() -> list[str]:
    root = Path(os.environ["PATCHTOOL_CACHE_DIR"]) / "scratch"
    return sorted(p.name for p in root.iterdir()) if root.is_dir() else []


def test_the_forecast_json_and_exit_4_with_nothing_written(world: SyntheticUpstream) -> None:  # noqa: F811
    store, build = everything(world.store), everything(world.build)
    result = world.run("rebase", "--onto", "1.1", "--dry-run", "--json")
    assert result.code == 4, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False and data["exit_code"] == 4
    (forecast,) = data["forecasts"]
    assert (forecast["device"], forecast["base"], forecast["onto"]) == ("devA", "demo-1.0",
                                                                        "demo-1.1")  # fmt: skip
    assert forecast["totals"] == {"clean": 2, "3-way": 1, "conflict": 1, "already upstream": 1}
    assert [(p["patch"], p["outcome"], p["conflicts"]) for p in forecast["patches"]] == [
        ("change-five.patch", "clean", []),
        ("change-thirty.patch", "3-way", []),
        ("change-ten.patch", "conflict", ["demo/core.py: 1 conflict hunk(s) at lines 32-36"]),
        ("add-a-vendor-note-to-the-readme.patch", "already upstream", []),
        ("add-the-vendor-file.patch", "clean", []),
    ]
    assert result.stderr.splitlines()[-2:] == [
        "error: 1 patch(es) would conflict: devA/demo-1.0 change-ten.patch",
        "hint: The forecast above names each file and hunk; run the rebase without --dry-run "
        "to resolve them.",
    ]
    assert everything(world.store) == store
    assert everything(world.build) == build
    assert scratch() == []


def test_a_forecast_without_conflict_exits_0_and_reads_as_markdown(world: SyntheticUpstream) -> None:  # noqa: F811
    result = world.run("rebase", "--onto", "1.2", "--dry-run", "--markdown")
    assert result.code == 0, result.output
    assert result.stdout.splitlines()[:8] == [
        "### devA: demo-1.0 onto demo-1.2",
        "",
        "5 patches: 4 clean, 1 3-way.",
        "",
        "| # | patch | outcome | conflicts |",
        "| --- | --- | --- | --- |",
        "| 1 | change-five.patch | clean | - |",
        "| 2 | change-thirty.patch | 3-way | - |",
    ]
    plain = world.run("rebase", "--onto", "1.1", "--dry-run")
    assert plain.code == 4
    assert "    3  conflict          change-ten.patch" in plain.stdout
    assert "demo/core.py: 1 conflict hunk(s) at lines 32-36" in plain.stdout


def test_check_forecasts_every_device(world: SyntheticUpstream) -> None:  # noqa: F811
    store = everything(world.store)
    result = world.cli("check", "--forecast", "1.2", "--json")
    assert result.code == 0, result.output
    data = json.loads(result.stdout)
    assert [(f["device"], f["base"], f["onto"], f["ok"]) for f in data["forecasts"]] == [
        ("devA", "demo-1.0", "demo-1.2", True)
    ]
    conflicting = world.cli("check", "--forecast", "1.1")
    assert conflicting.code == 4, conflicting.output
    assert everything(world.store) == store


def test_a_killed_forecast_leaves_its_scratch_to_the_next_run(world: SyntheticUpstream) -> None:  # noqa: F811
    killed = run_cli("--store", str(world.store), "rebase", "-d", "devA", "--dir",
                     str(world.build), "--onto", "1.2", "--dry-run",
                     env={VARIABLE: "forecast:merged"})  # fmt: skip
    assert killed.code == -9, killed.output
    assert len(scratch()) == 2  # the folder and its lock
    again = world.run("rebase", "--onto", "1.2", "--dry-run")
    assert again.code == 0, again.output
    assert scratch() == []


def test_dry_run_flags(world: SyntheticUpstream) -> None:  # noqa: F811
    assert world.run("rebase", "--onto", "1.1", "--json").code == 2
    both = world.run("rebase", "--abort", "--dry-run")
    assert both.code == 2 and "--abort takes no --onto" in both.stderr
