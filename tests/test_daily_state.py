"""The daily loop knows its own state (issue 21): a stopped rebase, git's own
operations in a tree, a backup or a set-aside tree as the working folder, a
one-device store, a --public-only tree, a device without an env script, and the
patch file names `git format-patch` writes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
from helpers import (
    SyntheticUpstream,
    commit_all,
    error_lines,
    git,
    run_cli,
    run_cli_in_process,
    snapshot,
)
from test_private import PrivateWorld, private  # noqa: F401 (fixture)
from test_rebase import edit, world  # noqa: F401 (fixture)

from patchtool.core.errors import ExitCode, OperationInProgressError

STOPPED = (
    "rebase of devA onto demo-1.1 stopped at patch 3/5 (change-ten.patch): resolve, then "
    "`patchtool rebase -d devA --continue` (or --skip, --abort)"
)


def stopped_rebase(world: SyntheticUpstream) -> None:  # noqa: F811
    started = world.run("rebase", "--onto", "1.1")
    assert started.code == 4, started.output


def tree_and_store(world: SyntheticUpstream) -> dict[str, object]:  # noqa: F811
    return {
        "tree": snapshot(world.tree),
        "head": git(world.tree, "rev-parse", "HEAD"),
        "store": snapshot(world.store),
        "device folder": sorted(p.name for p in (world.build / "devA").iterdir()),
    }


# --------------------------------------------------------------------------- #1 a stopped rebase


def test_status_leads_with_the_stopped_rebase(world: SyntheticUpstream) -> None:  # noqa: F811
    stopped_rebase(world)
    inside = run_cli("status", cwd=world.tree)
    assert inside.code == 0, inside.output
    assert inside.stdout.splitlines()[:2] == [STOPPED, f"tree:       {world.tree}"]
    outside = world.run("status", "--json")
    assert outside.code == 0, outside.output
    assert json.loads(outside.stdout)["in_progress"] == [STOPPED]


@pytest.mark.parametrize("command", ["patch", "unpatch", "build-wheel", "import"])
def test_every_command_that_reads_or_replaces_the_tree_refuses_with_that_line(
    world: SyntheticUpstream,  # noqa: F811
    command: str,
) -> None:
    stopped_rebase(world)
    before = tree_and_store(world)
    extra = [str(world.root / "none.patch")] if command == "import" else []
    if command == "import":
        (world.root / "none.patch").write_text("")
    result = world.run(command, *extra)
    assert result.code == ExitCode.DIRTY == OperationInProgressError.exit_code
    assert error_lines(result) == [
        f"error: {STOPPED}",
        f"hint: {command} refuses until the rebase ends: `patchtool rebase -d devA "
        "--continue` writes the new base's series into the store and leaves the tree on it; "
        "`patchtool rebase -d devA --abort` puts the tree and the store back as they were.",
    ]
    assert tree_and_store(world) == before


def test_unpatch_force_does_not_orphan_the_rebase(world: SyntheticUpstream) -> None:  # noqa: F811
    stopped_rebase(world)
    before = tree_and_store(world)
    result = run_cli("unpatch", "--force", cwd=world.tree)
    assert result.code == 5
    assert error_lines(result) == [
        f"error: {STOPPED}",
        "hint: --force does not drop a rebase (its resolutions would be lost): run "
        "`patchtool rebase -d devA --abort` first (it puts the tree and the store back as "
        "they were), then unpatch again.",
    ]
    assert tree_and_store(world) == before
    # The rebase goes on as if nothing had happened.
    core = world.tree / "demo" / "core.py"
    text = core.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    core.write_text(text[:start] + "    return 100\n" + text[text.index("\n", end) + 1 :])
    git(world.tree, "add", "demo/core.py")
    assert world.run("rebase", "--continue").code == 0
    assert world.run("status").stdout.splitlines()[0] == f"tree:       {world.tree}"


def test_an_interrupted_start_and_a_killed_pick_say_so(world: SyntheticUpstream) -> None:  # noqa: F811
    stopped_rebase(world)
    state = world.build / "devA" / ".patchtool-rebase-demo.json"
    text = state.read_text()
    state.write_text(text.replace('"pick_running": false', '"pick_running": true'))
    killed = world.run("patch")
    assert error_lines(killed)[0] == (
        "error: rebase of devA onto demo-1.1 was interrupted at patch 3/5 (change-ten.patch): "
        "`patchtool rebase -d devA --continue` (or --skip, --abort)"
    )
    state.write_text(text.replace('"phase": "picking"', '"phase": "starting"'))
    starting = world.run("patch")
    assert error_lines(starting)[0] == (
        "error: rebase of devA onto demo-1.1 was interrupted before its first patch: "
        "`patchtool rebase -d devA --abort` puts the tree back, then start it again"
    )


# --------------------------------------------------------------------------- git's own operations


@pytest.fixture
def exported(upstream: SyntheticUpstream) -> SyntheticUpstream:
    """devA's tree with two exported patches: add-one, add-two."""
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "one.txt").write_text("one\n")
    commit_all(upstream.tree, "Add one")
    (upstream.tree / "two.txt").write_text("two\n")
    commit_all(upstream.tree, "Add two")
    assert upstream.run("patch").code == 0
    return upstream


def test_patch_during_a_git_rebase_i_refuses_and_writes_nothing(
    exported: SyntheticUpstream,
) -> None:
    tree = exported.tree
    subprocess.run(
        ["git", "rebase", "-i", "patchtool/base"], cwd=tree, check=True, capture_output=True,
        env={**os.environ, "GIT_SEQUENCE_EDITOR": "sed -i 1s/^pick/edit/"},
    )  # fmt: skip
    before = snapshot(exported.store)
    result = exported.run("patch")
    assert result.code == 5
    assert error_lines(result) == [
        f"error: a `git rebase` is in progress in the build tree {tree}",
        "hint: In the tree, finish it with `git rebase --continue`, or undo it with "
        "`git rebase --abort`; then run patch again (now it would see a half-made series).",
    ]
    assert snapshot(exported.store) == before
    status = exported.run("status")
    assert status.stdout.splitlines()[:2] == [
        "a `git rebase` is in progress: finish it with `git rebase --continue`, or undo it "
        "with `git rebase --abort`",
        "HEAD is detached, and branch 'devA' has 1 commit(s) it lacks: `git checkout devA` "
        "(or `git checkout -B devA` to keep HEAD)",
    ]
    git(tree, "rebase", "--continue")
    assert exported.run("patch").code == 0
    assert snapshot(exported.store) == before


def test_patch_during_a_stopped_cherry_pick_names_it(exported: SyntheticUpstream) -> None:
    tree = exported.tree
    git(tree, "checkout", "--quiet", "-b", "side", "HEAD~1")
    (tree / "two.txt").write_text("other two\n")
    commit_all(tree, "Another two")
    failed = subprocess.run(["git", "cherry-pick", "devA"], cwd=tree, capture_output=True)
    assert failed.returncode != 0
    result = exported.run("build-wheel")
    assert result.code == 5
    assert error_lines(result) == [
        f"error: a `git cherry-pick` is in progress in the build tree {tree}",
        "hint: In the tree, finish it with `git cherry-pick --continue`, or undo it with "
        "`git cherry-pick --abort`; then run build-wheel again (now it would see a half-made "
        "series).",
    ]


def test_patch_on_a_detached_head_behind_the_branch_refuses(exported: SyntheticUpstream) -> None:
    tree = exported.tree
    git(tree, "checkout", "--quiet", "--detach", "HEAD~1")
    before = snapshot(exported.store)
    result = exported.run("patch")
    assert result.code == 5
    assert error_lines(result) == [
        f"error: HEAD in the build tree {tree} is detached, and branch 'devA' has 1 commit(s) "
        "HEAD lacks (now patch would leave them out)",
        "hint: `git checkout devA` to work on the branch, or `git checkout -B devA` to make "
        "HEAD the branch; then run patch again.",
    ]
    assert snapshot(exported.store) == before


# --------------------------------------------------------------------------- #2 backups


def test_a_command_run_in_a_backup_says_so_and_writes_nothing(
    exported: SyntheticUpstream,
) -> None:
    tree = exported.tree
    (tree / "work.txt").write_text("unexported\n")
    inside = tree / "demo"
    made = run_cli("unpatch", "--force", cwd=inside)
    assert made.code == 0, made.output
    [backup] = (exported.build / "devA" / "backups").iterdir()
    assert (
        f"warning: the previous tree held unexported work; it was moved to {backup}; this "
        f"shell is now in that backup: `cd {tree / 'demo'}` enters the new tree"
    ) in made.stderr
    stamp = backup.name.removeprefix("demo-")
    when = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]} {stamp[9:11]}:{stamp[11:13]}:{stamp[13:15]} UTC"
    device_folder = sorted(p.name for p in (exported.build / "devA").iterdir())
    for command in (["status"], ["patch"], ["rebase", "--continue"], ["list"]):
        result = run_cli_in_process(*command, cwd=backup / "demo")
        assert result.code == 3, result.output
        assert error_lines(result) == [
            f"error: this is a backup of the build tree of devA, made {when}; the tree is "
            f"at {tree}",
            f"hint: `cd {tree}` to work in the tree: commands do not run in a backup, which "
            f"is yours to compare with, take commits from (`git fetch {backup} HEAD` in the "
            "tree, then cherry-pick) or remove.",
        ]
    assert sorted(p.name for p in (exported.build / "devA").iterdir()) == device_folder
    assert not (exported.build / "devA" / "devA").exists()
    assert (backup / "work.txt").read_text() == "unexported\n"


def test_a_backup_of_a_device_without_a_tree_says_how_to_make_one(
    exported: SyntheticUpstream,
) -> None:
    (exported.tree / "work.txt").write_text("unexported\n")
    assert exported.run("unpatch", "--force").code == 0
    [backup] = (exported.build / "devA" / "backups").iterdir()
    shutil.rmtree(exported.tree)
    result = run_cli_in_process("patch", cwd=backup)
    assert result.code == 3
    assert error_lines(result)[0].endswith(
        f"; the device has no tree now (`patchtool unpatch -d devA` makes one at {exported.tree})"
    )


def test_a_command_run_in_a_set_aside_tree_writes_nothing(exported: SyntheticUpstream) -> None:
    assert run_cli("unpatch", cwd=exported.tree).code == 0
    [old] = [p for p in (exported.build / "devA").iterdir()
             if p.name.startswith(".patchtool-previous-")]  # fmt: skip
    device_folder = sorted(p.name for p in (exported.build / "devA").iterdir())
    for command in (["status"], ["patch"], ["unpatch", "--force"]):
        result = run_cli_in_process(*command, cwd=old / "demo")
        assert result.code == 3, result.output
        assert error_lines(result)[0] == (
            f"error: the working folder is inside a build tree that unpatch replaced: {old / 'demo'}"
        )
    assert sorted(p.name for p in (exported.build / "devA").iterdir()) == device_folder
    assert not (exported.build / "devA" / "devA").exists()


# --------------------------------------------------------------------------- #5 one device


def test_a_one_device_store_needs_no_device_type(exported: SyntheticUpstream) -> None:
    root = exported.root
    status = run_cli_in_process("status", cwd=root)
    assert status.code == 0, status.output
    assert status.stdout.splitlines()[0] == f"tree:       {exported.tree}"
    checked = run_cli_in_process("check", "-c", "1.0", "--offline", cwd=root)
    assert checked.code == 0, checked.output
    assert "devA  demo-1.0" in checked.stdout
    assert run_cli_in_process("patch", "--check", cwd=root).code == 0


def test_with_several_devices_the_error_lists_them(exported: SyntheticUpstream) -> None:
    other = exported.store / "devB"
    other.mkdir()
    (other / "device.toml").write_text('display-name = "B"\nvendor = "Example"\n')
    root = exported.root
    for command, why in (
        (["status"], "no device named and not inside a build tree"),
        (["unpatch"], "no device named and not inside a build tree"),
        (["check", "-c", "1.0"], "--commit-id needs --device-type"),
    ):
        result = run_cli_in_process(*command, cwd=root)
        assert result.code == 2
        assert error_lines(result) == [
            f"error: {why}, and the store has 2 devices: devA, devB",
            "hint: Pass --device-type NAME, or run the command from inside a build tree.",
        ]


# --------------------------------------------------------------------------- #7 --public-only


def test_status_of_a_public_only_tree_names_the_private_patch_left_out(
    private: PrivateWorld,  # noqa: F811
) -> None:
    build = str(private.world.build)
    assert private.cli("unpatch", "-d", "devA", "--dir", build, "--public-only").code == 0
    status = private.cli("status", "-d", "devA", "--dir", build)
    assert status.code == 0, status.output
    lines = status.stdout.splitlines()
    assert lines[2] == "commits:    2"
    assert lines[-1] == (
        "note: made with --public-only: it holds 2 of the series' 3 patches; 1 private "
        "patch(es) left out: add-the-decode-path.patch.age (`patchtool unpatch -d devA "
        "--identity FILE` makes the tree with them)"
    )
    as_json = private.cli("status", "-d", "devA", "--dir", build, "--json")
    assert '"left_out_private": [\n    "add-the-decode-path.patch.age"\n  ]' in as_json.stdout


# --------------------------------------------------------------------------- #9 no env script


def test_import_create_writes_no_env_script_and_build_wheel_needs_none(
    upstream: SyntheticUpstream,
) -> None:
    change = upstream.root / "change.diff"
    change.write_text(
        "--- a/demo/__init__.py\n+++ b/demo/__init__.py\n@@ -1 +1 @@\n"
        "-VERSION = '1.0'\n+VERSION = '1.0+devB'\n"
    )
    made = upstream.cli(
        "import", "-d", "devB", "--create", "--display-name", "B", "--vendor", "Example",
        "--onto", "demo==1.0", "-m", "Mark the version", "--dir", str(upstream.build), str(change),
    )  # fmt: skip
    assert made.code == 0, made.output
    assert (upstream.store / "devB" / "device.toml").read_text() == (
        'display-name = "B"\nvendor = "Example"\n'
    )
    built = upstream.cli("build-wheel", "-d", "devB", "--dir", str(upstream.build))
    assert built.code == 0, built.output
    device = upstream.store / "devB" / "device.toml"
    assert f"» sourcing no env script: {device} names none (build.env-script)" in built.stderr
    refused = upstream.cli(
        "build-wheel", "-d", "devB", "--dir", str(upstream.build), "--env-arg", "x"
    )
    assert refused.code == 2
    assert error_lines(refused) == [
        "error: --env-arg is an argument for the env script, and the device has none",
        f'hint: Name it in {device} (env-script = "env.sh" under [build]), or leave out '
        "--env-arg.",
    ]


# --------------------------------------------------------------------------- #11 names with ..


def test_a_name_git_format_patch_writes_with_two_dots_loads(
    exported: SyntheticUpstream,
) -> None:
    tree, base = exported.tree, exported.base_folder
    name = "0025-scale-touch-vllm-attention-backends-rocm_flash_attn..patch"
    (base / "add-two.patch").rename(base / name)
    series = base / "series"
    series.write_text(series.read_text().replace("add-two.patch", name))
    assert exported.run("unpatch", "--force").code == 0
    assert (tree / "two.txt").read_text() == "two\n"
    # check reads and applies it (its export row compares names with patchtool's
    # own, `add-two.patch`, as for any store named by plain format-patch).
    checked = exported.cli("check", "-d", "devA", "--offline")
    assert "ok    devA  demo-1.0  series" in checked.stdout
    assert "ok    devA  demo-1.0  apply" in checked.stdout
    assert "not a plain patch file name" not in checked.output
    for unsafe in ("../add-one.patch", ".hidden.patch"):
        series.write_text(series.read_text().replace(name, unsafe))
        refused = exported.run("unpatch", "--force")
        assert refused.code == 10
        assert f"{unsafe!r} is not a plain patch file name" in refused.stderr
        series.write_text(series.read_text().replace(unsafe, name))
