"""A carry onto existing bases killed at every kill point: --abort puts the tree
and the store back byte for byte, --continue (once the patches are being
picked) ends with the very folders an unbroken carry writes.

The world is test_rebase_carry.py's (demo 1.1 carried from 1.0, demo 1.2 from
1.1 where a test needs the chain), with "Change fifteen" added on 1.0.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, kill_points, snapshot
from test_rebase import tree_state
from test_rebase_carry import add_fifteen, carried, folder, rebase_12  # noqa: F401 (fixture)
from test_rebase_kill import killed

START_POINTS = ["rebase:state-saved", "rebase:fetched", "rebase:applied-old-series",
                "rebase:checked-out-new"]  # fmt: skip
LATER_POINTS = ["rebase:picked", "rebase:staged", "rebase:before-store-write",
                "rebase:store-written", "rebase:tree-moved"]  # fmt: skip
CHAIN_POINTS = ["rebase:staged", "rebase:next-step", "rebase:store-written"]


def build_folder(world: SyntheticUpstream) -> list[str]:
    """What the build folder of devA holds, less the lock and a tree the last
    unpatch set aside (the next command removes it): a state file, staging or
    trash folders left behind show up here."""
    return sorted(
        p.name
        for p in (world.build / "devA").iterdir()
        if p.name != ".patchtool.lock" and not p.name.startswith(".patchtool-previous")
    )


def store_folder(world: SyntheticUpstream) -> list[str]:
    """Everything in the device's store folder, hidden staging folders included."""
    return sorted(p.name for p in (world.store / "devA").iterdir())


def reference(world: SyntheticUpstream, tmp_path: Path, *args: str) -> dict[str, dict[str, bytes]]:
    """An unbroken carry's folders; then tree and store put back (by --abort's
    twin: the folders and the tree restored from copies)."""
    saved = tmp_path / "saved-store"
    shutil.copytree(world.store, saved, symlinks=True)
    done = world.run("rebase", *args)
    assert done.code == 0, done.output
    result = {v: snapshot(folder(world, v)) for v in ("1.1", "1.2") if folder(world, v).exists()}
    shutil.rmtree(world.store)
    shutil.copytree(saved, world.store, symlinks=True)
    assert world.run("unpatch", "--commit-id", "1.0", "--force").code == 0
    return result


def assert_aborted_exactly(world: SyntheticUpstream, tree: dict[str, object],
                           store: dict[str, bytes], builds: list[str]) -> None:  # fmt: skip
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    assert tree_state(world.tree) == tree
    assert snapshot(world.store) == store
    assert build_folder(world) == builds
    assert not any(name.startswith(".") for name in store_folder(world))
    assert not (world.tree / ".git" / "patchtool-rebase-id").exists()


@pytest.mark.parametrize("point", kill_points(START_POINTS))
def test_killed_while_starting(carried: SyntheticUpstream, point: str) -> None:  # noqa: F811
    world = carried
    add_fifteen(world)
    tree, store, builds = tree_state(world.tree), snapshot(world.store), build_folder(world)
    killed(world, point, "-c", "1.0", "--onto", "1.1")
    refused = world.run("rebase", "--continue")
    assert refused.code == 2 and "was interrupted before its patches were picked" in refused.stderr
    assert_aborted_exactly(world, tree, store, builds)


@pytest.mark.parametrize("point", kill_points(LATER_POINTS))
def test_killed_while_picking_or_finishing(carried: SyntheticUpstream, point: str,  # noqa: F811
                                           tmp_path: Path) -> None:  # fmt: skip
    world = carried
    add_fifteen(world)
    expected = reference(world, tmp_path, "-c", "1.0", "--onto", "1.1")
    tree, store, builds = tree_state(world.tree), snapshot(world.store), build_folder(world)
    killed(world, point, "-c", "1.0", "--onto", "1.1")
    assert_aborted_exactly(world, tree, store, builds)

    killed(world, point, "-c", "1.0", "--onto", "1.1")
    done = world.run("rebase", "--continue")
    assert done.code == 0, done.output
    assert snapshot(folder(world, "1.1")) == expected["1.1"]
    assert not any(name.startswith(".") for name in store_folder(world))
    assert '"base_id": "demo-1.1"' in (world.tree / ".git" / "patchtool.json").read_text()


@pytest.mark.parametrize("point", kill_points(CHAIN_POINTS))
def test_a_chain_killed_between_its_bases(carried: SyntheticUpstream, point: str,  # noqa: F811
                                          tmp_path: Path) -> None:  # fmt: skip
    world = carried
    rebase_12(world)
    add_fifteen(world)
    expected = reference(world, tmp_path, "-c", "1.0", "--onto", "1.1,1.2")
    tree, store, builds = tree_state(world.tree), snapshot(world.store), build_folder(world)
    killed(world, point, "-c", "1.0", "--onto", "1.1,1.2")
    assert_aborted_exactly(world, tree, store, builds)

    killed(world, point, "-c", "1.0", "--onto", "1.1,1.2")
    done = world.run("rebase", "--continue")
    assert done.code == 0, done.output
    for version in ("1.1", "1.2"):
        assert snapshot(folder(world, version)) == expected[version]
    assert '"base_id": "demo-1.2"' in (world.tree / ".git" / "patchtool.json").read_text()
