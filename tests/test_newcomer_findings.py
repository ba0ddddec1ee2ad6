"""What a newcomer who knew the tool only from its README ran into: each finding
pinned by its exact error, hint and exit code."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from helpers import (
    SyntheticUpstream,
    commit_all,
    error_lines,
    git,
    run_cli,
    snapshot,
    warning_lines,
)
from test_private import PrivateWorld, private  # noqa: F401 (fixture)
from test_rebase import resolve_ten, world  # noqa: F401 (fixture)

from patchtool.core.faults import VARIABLE


def killed_rebase(world: SyntheticUpstream, point: str) -> None:  # noqa: F811
    """`rebase --onto 1.1` of the five-patch series of test_rebase.py, killed (-9) at `point`."""
    result = run_cli("--store", str(world.store), "rebase", "--device-type", "devA", "--dir",
                     str(world.build), "--onto", "1.1", env={VARIABLE: point})  # fmt: skip
    assert result.code == -9, result.output


INTERRUPTED = (
    "rebase of devA onto demo-1.1 was interrupted before its first patch: "
    "`patchtool rebase -d devA --abort` puts the tree back, then start it again"
)

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


# --------------------------------------------------------------------------- 2, 5. a killed rebase


@pytest.mark.parametrize("point", ["rebase:applied-old-series", "rebase:checked-out-new"])
def test_status_of_a_rebase_killed_before_its_first_patch_shows_no_work(
    world: SyntheticUpstream,  # noqa: F811
    point: str,
) -> None:
    killed_rebase(world, point)
    status = world.run("status")
    assert status.code == 0, status.output
    assert status.stdout.splitlines() == [
        INTERRUPTED,
        f"tree:       {world.tree}",
        "uncommitted files: 0",
    ]
    as_json = json.loads(world.run("status", "--json").stdout)
    assert {k: as_json[k] for k in ("base", "base_commit", "commits", "unexported", "other")} == {
        "base": None, "base_commit": None, "commits": [], "unexported": [], "other": []
    }  # fmt: skip
    # The hint it gives works, and then status shows the tree whole again.
    assert world.run("rebase", "--abort").code == 0
    lines = world.run("status").stdout.splitlines()
    assert lines[:3] == [f"tree:       {world.tree}", lines[1], "commits:    5"]
    assert lines[1].startswith("base:       demo-1.0 (demo 1.0, ")


def test_status_of_a_rebase_killed_after_a_pick_shows_the_rebase_view(
    world: SyntheticUpstream,  # noqa: F811
) -> None:
    killed_rebase(world, "rebase:picked")
    lines = world.run("status").stdout.splitlines()
    assert lines[0] == (
        "rebase of devA onto demo-1.1 was interrupted at patch 1/5 (change-five.patch): "
        "`patchtool rebase -d devA --continue` (or --skip, --abort)"
    )
    assert lines[2].startswith("base:       demo-1.1 (demo 1.1, ")
    assert [lines[3], lines[4][10:], *lines[5:]] == [
        "commits:    1", "Change five", "unexported: 0", "uncommitted files: 0"
    ]  # fmt: skip


def test_unpatch_during_a_rebase_killed_before_its_first_patch_says_abort(
    world: SyntheticUpstream,  # noqa: F811
) -> None:
    killed_rebase(world, "rebase:checked-out-new")
    refused = world.run("unpatch")
    assert refused.code == 5
    assert error_lines(refused) == [
        f"error: {INTERRUPTED}",
        "hint: unpatch refuses until the rebase ends: it was interrupted before its first "
        "patch, so there is nothing to continue; `patchtool rebase -d devA --abort` puts the "
        "tree and the store back as they were (then run unpatch again, or start the rebase "
        "again).",
    ]
    # --continue indeed has nothing to continue; the --abort the hint names works.
    assert world.run("rebase", "--continue").code == 2
    assert world.run("rebase", "--abort").code == 0
    assert world.run("unpatch").code == 0


# --------------------------------------------------------------------------- 3. rebase --abort's diff


def test_the_command_rebase_abort_gives_for_its_saved_diff_restores_the_resolution(
    world: SyntheticUpstream,  # noqa: F811
) -> None:
    assert world.run("rebase", "--onto", "1.1").code == 4
    resolve_ten(world.tree)  # the resolution, staged
    (world.tree / "README.md").write_text("an edit not staged\n")
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    [saved] = sorted((world.build / "devA" / "backups").iterdir())
    warning = (
        f"warning: the changes made in {world.tree} while the rebase was stopped (README.md, "
        f"demo/core.py) were saved to {saved} before the tree was put back; the diff was taken "
        "on demo 1.1 at patch 3/5 (change-ten.patch) and applies there, not to the tree now: "
        "once a rebase onto it stops there again, `git checkout HEAD -- . && git apply --index "
        f"{saved}` in the tree restores them (then `patchtool rebase -d devA --continue`)"
    )
    assert [line for line in aborted.stderr.splitlines() if line.startswith("warning:")] == [
        warning
    ]
    # Not on the tree put back (the old base): that is what the hint no longer claims.
    assert subprocess.run(["git", "apply", "--check", str(saved)], cwd=world.tree,
                          capture_output=True).returncode != 0  # fmt: skip
    # The command the hint gives, where it says, restores the resolution.
    assert world.run("rebase", "--onto", "1.1").code == 4
    command = warning.split("`")[1]
    restored = subprocess.run(command, shell=True, cwd=world.tree, capture_output=True)
    assert restored.returncode == 0, restored.stderr
    assert (world.tree / "README.md").read_text() == "an edit not staged\n"
    subprocess.run(["git", "checkout", "HEAD", "--", "README.md"], cwd=world.tree, check=True)
    assert world.run("rebase", "--continue").code == 0
    ten = (world.store / "devA" / "demo-1.1" / "change-ten.patch").read_text()
    assert "+    return 100\n" in ten


# --------------------------------------------------------------------------- 4. check's skipped bases


def invalid_bases(upstream: SyntheticUpstream) -> None:
    """devA/x1 and devA/x2: base.toml with a URL git must not be given."""
    for name in ("x1", "x2"):
        folder = upstream.store / "devA" / name
        folder.mkdir()
        (folder / "base.toml").write_text(
            f'project = "demo"\nversion = "2.0"\ncommit = "{"a" * 40}"\n\n'
            '[source]\ntype = "git"\nurl = "ext::sh"\n'
        )
        (folder / "series").write_text("")


INVALID_SKIPPED = (
    "warning: the source, series, safety, apply, export and lint checks of 2 base(s) were not "
    "run, base.toml is invalid: devA/x1, devA/x2"
)


def test_check_names_the_true_reason_bases_were_skipped(upstream: SyntheticUpstream) -> None:
    invalid_bases(upstream)
    # Offline, with demo-1.0 neither in the cache nor offered: each reason is its own line.
    with pytest.MonkeyPatch.context() as patched:
        patched.delenv("PATCHTOOL_SDIST_PATH")
        offline = upstream.cli("check", "-d", "devA", "--offline")
    assert offline.code == 10
    assert warning_lines(offline) == [
        "warning: offline: the source, safety, apply and export checks of 1 base(s) were "
        "skipped, their source is not in the cache: devA/demo-1.0",
        INVALID_SKIPPED,
    ]
    # Not offline, nothing says offline.
    result = upstream.cli("check", "-d", "devA")
    assert result.code == 10
    assert warning_lines(result) == [INVALID_SKIPPED]
    assert error_lines(result)[0] == "error: 2 check(s) failed: devA/x1 config, devA/x2 config"


# --------------------------------------------------------------------------- 6. patch -m, nothing to commit


def test_patch_m_on_a_clean_tree_warns_that_it_made_no_commit(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "one.txt").write_text("one\n")
    commit_all(upstream.tree, "Add one")
    head = git(upstream.tree, "rev-parse", "HEAD")
    result = upstream.run("patch", "-m", "Add two")
    assert result.code == 0, result.output
    assert warning_lines(result) == [
        f"warning: -m 'Add two' made no commit: the build tree {upstream.tree} has no "
        "uncommitted changes; its commits are exported as they are"
    ]
    assert git(upstream.tree, "rev-parse", "HEAD") == head
    assert (upstream.base_folder / "series").read_text().splitlines()[-1] == "add-one.patch"
    store = snapshot(upstream.store)
    again = upstream.run("patch", "-m", "Add two")
    assert (again.code, len(warning_lines(again))) == (0, 1)
    assert snapshot(upstream.store) == store


# --------------------------------------------------------------------------- 7. patch in a --public-only tree


def public_only_refusal(private: PrivateWorld) -> str:  # noqa: F811
    return (
        f"error: the build tree {private.tree} was made with --public-only: it lacks the "
        "private patches add-the-decode-path.patch.age, and exporting it would remove them "
        "from the store"
    )


def test_patch_in_a_public_only_tree_without_work_says_unpatch_with_the_identity(
    private: PrivateWorld,  # noqa: F811
) -> None:
    build = str(private.world.build)
    assert private.cli("unpatch", "-d", "devA", "--dir", build, "--public-only").code == 0
    refused = private.cli("patch", "-d", "devA", "--dir", build)
    assert refused.code == 5
    assert error_lines(refused) == [
        public_only_refusal(private),
        "hint: This tree holds no work of its own: `patchtool unpatch -d devA --identity FILE` "
        "makes it anew with the private patches.",
    ]
    # The hint's command works as it stands, and then patch does.
    made = private.cli("unpatch", "-d", "devA", "--dir", build, "--identity",
                       str(private.identity))  # fmt: skip
    assert made.code == 0, made.output
    assert private.cli("patch", "-d", "devA", "--dir", build, identity=private.identity).code == 0


def test_patch_in_a_public_only_tree_with_a_new_commit_says_force_and_names_it(
    private: PrivateWorld,  # noqa: F811
) -> None:
    build = str(private.world.build)
    assert private.cli("unpatch", "-d", "devA", "--dir", build, "--public-only").code == 0
    (private.tree / "mine.txt").write_text("mine\n")
    commit_all(private.tree, "Add mine")
    short = git(private.tree, "rev-parse", "HEAD")[:10]
    refused = private.cli("patch", "-d", "devA", "--dir", build)
    assert refused.code == 5
    assert error_lines(refused) == [
        public_only_refusal(private),
        "hint: Make the tree with your identity (`patchtool unpatch -d devA --force "
        "--identity FILE` moves this one to backups/ first), then bring your work over from "
        f"the backup: commits not exported to the store: {short} Add mine.",
    ]


# --------------------------------------------------------------------------- 8. check's final hint


def test_check_names_the_device_and_base_of_each_distinct_hint(upstream: SyntheticUpstream) -> None:
    shutil.copytree(upstream.store / "devA", upstream.store / "devB")
    invalid_bases(upstream)  # devA/x1, devA/x2: one hint between them
    (upstream.store / "devB" / "demo-1.0" / "series").write_text("../x.patch\n")
    result = upstream.cli("check")
    assert result.code == 10
    assert error_lines(result) == [
        "error: 3 check(s) failed: devA/x1 config, devA/x2 config, devB/demo-1.0 series",
        "hint: devA/x1, devA/x2: Use an https://, ssh://, git:// or file:// URL, "
        "user@host:path, or a local path.",
        "      devB/demo-1.0: series lists file names in its own folder, one a line: letters, "
        "digits and . _ + @ , = -, not starting with '.' or '-'.",
    ]
