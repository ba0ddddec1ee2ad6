"""rebase killed at every kill point: --abort puts tree and store back byte for byte,
--continue (once the patches are being picked) ends with the very base folder an
unbroken run writes, and lock files left by a killed git are named, not deleted.

Two new bases for the series of test_rebase.py:
  demo 1.1  the one of test_rebase.py: patch 3 (change-ten) conflicts
  demo 1.2  conflict-free: one patch needs a 3-way merge, the others apply clean
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import (
    DEMO_FILES,
    SyntheticUpstream,
    commit_all,
    git,
    kill_points,
    make_sdist,
    run_cli,
    snapshot,
)
from test_rebase import demo_11_files, edit, resolve_ten, tree_state

from patchtool.core.faults import VARIABLE

START_POINTS = ["rebase:state-saved", "rebase:fetched", "rebase:applied-old-series",
                "rebase:checked-out-new"]  # fmt: skip
NEW_TREE_POINTS = ["rebase:state-saved", "rebase:tree-created", "rebase:fetched",
                   "rebase:applied-old-series", "rebase:checked-out-new"]  # fmt: skip
# "rebase:picked" is the first pick, "rebase:picked:N" the pick of patch N.
PICK_POINTS = ["rebase:picked", "rebase:picked:5", "rebase:before-store-write",
               "rebase:store-written", "rebase:tree-moved"]  # fmt: skip


def demo_12_files() -> dict[str, bytes | tuple[str, str]]:
    files = dict(DEMO_FILES)
    core = files["demo/core.py"]
    assert isinstance(core, bytes)
    core = core.replace(b"return 29\n", b"return 29  # upstream 1.2\n")  # 3-way for "thirty"
    files["demo/core.py"] = core.replace(b"return 20\n", b"return 2020\n")
    files["demo/__init__.py"] = b"VERSION = '1.2'\n"
    return files


@pytest.fixture
def world(upstream: SyntheticUpstream) -> SyntheticUpstream:
    return exported_five(upstream)


def exported_five(upstream: SyntheticUpstream) -> SyntheticUpstream:
    """The five-patch series of test_rebase.py on demo 1.0, exported; demo 1.1 and
    demo 1.2 beside it as sdists."""
    for version, files in (("1.1", demo_11_files()), ("1.2", demo_12_files())):
        make_sdist(upstream.sdist.parent / f"demo-{version}.tar.gz", f"demo-{version}", files,
                   modes={"tools/run.sh": 0o755})  # fmt: skip
    assert upstream.run("unpatch").code == 0
    tree = upstream.tree
    for path, old, new, subject in (
        ("demo/core.py", "return 5\n", "return 55\n", "Change five"),
        ("demo/core.py", "return 30\n", "return 300\n", "Change thirty"),
        ("demo/core.py", "return 10\n", "return 100\n", "Change ten"),
        ("README.md", "for tests.\n", "for tests.\nVendor note: runs on devA.\n",
         "Add a vendor note to the README"),
    ):  # fmt: skip
        edit(tree, path, old, new)
        commit_all(tree, subject)
    (tree / "vendor.txt").write_text("devA\n")
    commit_all(tree, "Add the vendor file")
    exported = upstream.cli("patch", "--device-type", "devA", "--dir", str(upstream.build))
    assert exported.code == 0, exported.output
    return upstream


def killed(world: SyntheticUpstream, point: str, *args: str) -> None:
    result = run_cli("--store", str(world.store), "rebase", "--device-type", "devA", "--dir",
                     str(world.build), *args, env={VARIABLE: point})  # fmt: skip
    assert result.code == -9, result.output


def folder_bytes(folder: Path) -> dict[str, bytes]:
    assert folder.is_dir()
    return snapshot(folder)


def device_folder(world: SyntheticUpstream) -> list[str]:
    """What the build folder of devA holds (the state file, staging or trash folders
    show up here)."""
    return sorted(p.name for p in (world.build / "devA").iterdir())


def state_file(world: SyntheticUpstream) -> Path:
    return world.build / "devA" / ".patchtool-rebase-demo.json"


def messages(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error:", "hint:"))]


def reference_folder(world: SyntheticUpstream, tmp_path: Path, version: str) -> dict[str, bytes]:
    """An unbroken rebase onto `version` (a conflict resolved as test_rebase does);
    its base folder's bytes. Tree and store are put back as they were."""
    started = world.run("rebase", "--onto", version)
    if started.code == 4:
        resolve_ten(world.tree)
        started = world.run("rebase", "--continue", "--note", "kept 100")
    assert started.code == 0, started.output
    folder = world.store / "devA" / f"demo-{version}"
    result = folder_bytes(folder)
    shutil.move(str(folder), str(tmp_path / f"reference-{version}"))
    assert world.run("unpatch", "--commit-id", "1.0", "--force").code == 0
    return result


def assert_aborted_exactly(world: SyntheticUpstream, tree: dict[str, object],
                           store: dict[str, bytes], folder: list[str]) -> None:  # fmt: skip
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    assert tree_state(world.tree) == tree
    assert snapshot(world.store) == store
    assert device_folder(world) == folder
    assert not (world.tree / ".git" / "patchtool-rebase-id").exists()
    again = world.run("rebase", "--continue")
    assert again.code == 2 and "no rebase is in progress" in again.stderr


# --------------------------------------------------------------------------- starting


@pytest.mark.parametrize("point", kill_points(START_POINTS))
def test_killed_while_starting_abort_restores_and_continue_explains(
    world: SyntheticUpstream, point: str
) -> None:
    tree, store, folder = tree_state(world.tree), snapshot(world.store), device_folder(world)
    killed(world, point, "--onto", "1.2")
    assert state_file(world).is_file()
    refused = world.run("rebase", "--continue")
    assert refused.code == 2, refused.output
    assert messages(refused.stderr) == [
        "error: the start of the rebase of devA from demo-1.0 onto demo 1.2 was interrupted "
        f"before its patches were picked: there is nothing to continue in {world.tree}",
        "hint: Run `patchtool rebase -d devA --abort` (it puts the build tree back as it was), "
        "then start again with `patchtool rebase -d devA -c demo-1.0 --onto 1.2`.",
    ]
    assert world.run("rebase", "--skip").code == 2
    assert_aborted_exactly(world, tree, store, folder)
    # and a new start works
    assert world.run("rebase", "--onto", "1.2").code == 0


@pytest.mark.parametrize("point", kill_points(NEW_TREE_POINTS))
def test_killed_while_starting_without_a_tree_abort_removes_the_tree(
    world: SyntheticUpstream, point: str
) -> None:
    shutil.rmtree(world.tree)
    store, folder = snapshot(world.store), device_folder(world)
    killed(world, point, "--onto", "1.2")
    assert state_file(world).is_file()
    assert world.run("rebase", "--continue").code == 2
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    assert not world.tree.exists()
    assert snapshot(world.store) == store
    assert device_folder(world) == folder


# --------------------------------------------------------------------------- picking, finishing


@pytest.mark.parametrize("point", kill_points(PICK_POINTS))
def test_killed_while_picking_or_finishing_abort_and_continue(
    world: SyntheticUpstream, point: str, tmp_path: Path
) -> None:
    reference = reference_folder(world, tmp_path, "1.2")
    tree, store, folder = tree_state(world.tree), snapshot(world.store), device_folder(world)
    killed(world, point, "--onto", "1.2")
    assert_aborted_exactly(world, tree, store, folder)

    killed(world, point, "--onto", "1.2")
    done = world.run("rebase", "--continue")
    assert done.code == 0, done.output
    assert folder_bytes(world.store / "devA" / "demo-1.2") == reference
    assert git(world.tree, "symbolic-ref", "HEAD") == "refs/heads/devA\n"
    assert '"base_id": "demo-1.2"' in (world.tree / ".git" / "patchtool.json").read_text()
    assert not state_file(world).exists()
    assert sorted(p.name for p in (world.store / "devA").iterdir()) == [
        "demo-1.0", "demo-1.2", "device.toml"]  # fmt: skip


@pytest.mark.slow
def test_killed_in_the_conflicting_pick(world: SyntheticUpstream, tmp_path: Path) -> None:
    reference = reference_folder(world, tmp_path, "1.1")
    tree, store, folder = tree_state(world.tree), snapshot(world.store), device_folder(world)
    killed(world, "rebase:picked:3", "--onto", "1.1")
    assert (world.tree / ".git" / "CHERRY_PICK_HEAD").is_file()
    assert_aborted_exactly(world, tree, store, folder)

    killed(world, "rebase:picked:3", "--onto", "1.1")
    again = world.run("rebase", "--continue")  # the pick is made again: the same conflict
    assert again.code == 4, again.output
    assert "patch change-ten.patch (3 of 5, 'Change ten') conflicts with demo 1.1" in again.stderr
    resolve_ten(world.tree)
    done = world.run("rebase", "--continue", "--note", "kept 100")
    assert done.code == 0, done.output
    assert folder_bytes(world.store / "devA" / "demo-1.1") == reference


@pytest.mark.slow
def test_killed_while_continuing_after_a_conflict(world: SyntheticUpstream,
                                                  tmp_path: Path) -> None:  # fmt: skip
    reference = reference_folder(world, tmp_path, "1.1")
    tree, store, folder = tree_state(world.tree), snapshot(world.store), device_folder(world)
    assert world.run("rebase", "--onto", "1.1").code == 4
    resolve_ten(world.tree)
    killed(world, "rebase:picked", "--continue", "--note", "kept 100")  # at patch 4
    assert_aborted_exactly(world, tree, store, folder)

    assert world.run("rebase", "--onto", "1.1").code == 4
    resolve_ten(world.tree)
    killed(world, "rebase:picked", "--continue", "--note", "kept 100")
    done = world.run("rebase", "--continue")
    assert done.code == 0, done.output
    assert folder_bytes(world.store / "devA" / "demo-1.1") == reference


def test_a_tree_replaced_during_a_rebase_is_left_alone(world: SyntheticUpstream) -> None:
    store = snapshot(world.store)
    killed(world, "rebase:picked", "--onto", "1.2")
    # unpatch --force refuses to replace it (tests/test_daily_state.py); by hand:
    assert world.run("unpatch", "--commit-id", "1.0", "--force").code == 5
    other = world.root / "other-build"
    assert world.run("unpatch", "--commit-id", "1.0", build=other).code == 0
    shutil.rmtree(world.tree)
    (other / "devA" / "demo").rename(world.tree)
    replaced = tree_state(world.tree)
    refused = world.run("rebase", "--continue")
    assert refused.code == 2, refused.output
    assert messages(refused.stderr) == [
        f"error: the build tree {world.tree} is not the one this rebase worked in: it was "
        "replaced or removed after the rebase started",
        "hint: Run `patchtool rebase -d devA --abort` to drop the rebase; it leaves that tree "
        "as it is.",
    ]
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    assert tree_state(world.tree) == replaced
    assert snapshot(world.store) == store
    assert not state_file(world).exists()


# --------------------------------------------------------------------------- git's lock files


def test_git_lock_files_are_named_and_left_in_place(world: SyntheticUpstream) -> None:
    assert world.run("rebase", "--onto", "1.1").code == 4
    lock = world.tree / ".git" / "index.lock"
    lock.write_bytes(b"")
    state_before = state_file(world).read_bytes()
    files_before = snapshot(world.tree)
    for action in ("--continue", "--skip", "--abort"):
        refused = world.run("rebase", action)
        assert refused.code == 9, refused.output
        assert messages(refused.stderr) == [
            "error: a git command was killed, or is still running, in the build tree "
            f"{world.tree}: it left .git/index.lock",
            "hint: If no git command is running there, delete .git/index.lock and run the "
            "same patchtool command again.",
        ]
    ref_lock = world.tree / ".git" / "refs" / "heads" / "devA.lock"
    ref_lock.write_bytes(b"")
    both = world.run("rebase", "--abort")
    assert both.code == 9
    assert messages(both.stderr)[1] == (
        "hint: If no git command is running there, delete .git/index.lock, "
        ".git/refs/heads/devA.lock and run the same patchtool command again."
    )
    assert lock.is_file() and ref_lock.is_file()
    assert state_file(world).read_bytes() == state_before
    assert snapshot(world.tree) == files_before

    lock.unlink()
    ref_lock.unlink()
    assert world.run("rebase", "--abort").code == 0


def test_a_start_is_refused_while_git_holds_a_lock(world: SyntheticUpstream) -> None:
    tree, store = tree_state(world.tree), snapshot(world.store)
    (world.tree / ".git" / "HEAD.lock").write_bytes(b"")
    refused = world.run("rebase", "--onto", "1.2")
    assert refused.code == 9, refused.output
    assert messages(refused.stderr)[0] == (
        "error: a git command was killed, or is still running, in the build tree "
        f"{world.tree}: it left .git/HEAD.lock"
    )
    assert not state_file(world).exists()
    (world.tree / ".git" / "HEAD.lock").unlink()
    assert tree_state(world.tree) == tree and snapshot(world.store) == store
