"""Commands know where they are (inside a build tree, inside the store), the
default base, global options after the command, and help and progress output
that cannot be broken by what they print."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    SyntheticUpstream,
    add_second_base,
    commit_all,
    error_lines,
    git,
    run_cli,
    snapshot,
)


def set_default_base(world: SyntheticUpstream, value: str) -> None:
    device = world.store / "devA" / "device.toml"
    device.write_text(f'default-base = "{value}"\n' + device.read_text())


# --------------------------------------------------------------------------- inside a tree


def test_commands_run_from_inside_the_tree_find_store_device_and_build_folder(
    upstream: SyntheticUpstream,
) -> None:
    made = upstream.cli("unpatch", "--device-type", "devA")
    assert made.code == 0, made.output
    # No --dir: the tree goes to build/ beside the store's patches/ folder.
    assert made.stdout.strip() == str(upstream.tree)
    inside = upstream.tree / "demo"
    (inside / "hello.txt").write_text("hello\n")
    commit_all(upstream.tree, "Add a greeting")

    status = run_cli("status", cwd=inside)
    assert status.code == 0, status.output
    assert status.stdout.splitlines()[0] == f"tree:       {upstream.tree}"

    exported = run_cli("patch", cwd=inside)
    assert exported.code == 0, exported.output
    assert exported.stdout.strip() == str(upstream.base_folder)
    assert (upstream.base_folder / "series").read_text().splitlines() == [
        "# demo series",
        "add-a-greeting.patch",
    ]
    again = run_cli("unpatch", cwd=inside)
    assert again.code == 0, again.output
    assert again.stdout.strip() == str(upstream.tree)
    # Never a tree inside the tree.
    assert not (upstream.tree / "build").exists()
    assert not (inside / "build").exists()


def test_the_store_recorded_in_the_tree_is_found_from_a_build_folder_elsewhere(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "scratch" / "builds"
    made = upstream.cli("unpatch", "--device-type", "devA", "--dir", str(elsewhere))
    assert made.code == 0, made.output
    status = run_cli("status", "--json", cwd=elsewhere / "devA" / "demo" / "tools")
    assert status.code == 0, status.output
    assert f'"tree": "{elsewhere / "devA" / "demo"}"' in status.stdout


def test_a_dir_inside_a_build_tree_is_refused(upstream: SyntheticUpstream) -> None:
    assert upstream.cli("unpatch", "--device-type", "devA").code == 0
    before = snapshot(upstream.tree)
    result = run_cli("unpatch", "--dir", "build", cwd=upstream.tree)
    assert result.code == 2
    assert result.stderr.splitlines() == [
        f"error: --dir build lies inside the build tree {upstream.tree}",
        "hint: Trees do not nest: leave out --dir to use the tree's own build folder "
        f"({upstream.build}).",
    ]
    assert snapshot(upstream.tree) == before
    # The tree itself as the build folder would nest one inside it, too.
    itself = upstream.cli("unpatch", "-d", "devA", "--dir", str(upstream.tree))
    assert itself.code == 2
    assert itself.stderr.splitlines()[0] == (
        f"error: --dir {upstream.tree} lies inside the build tree {upstream.tree}"
    )
    assert snapshot(upstream.tree) == before


def test_from_inside_the_store_the_build_folder_is_beside_it(upstream: SyntheticUpstream) -> None:
    result = run_cli("unpatch", "--device-type", "devA", cwd=upstream.base_folder)
    assert result.code == 0, result.output
    assert result.stdout.strip() == str(upstream.tree)
    assert not (upstream.base_folder / "build").exists()


def test_outside_a_tree_a_device_must_be_named(upstream: SyntheticUpstream) -> None:
    # With one device it is the default (tests/test_daily_state.py); with two, name one.
    other = upstream.store / "devB"
    other.mkdir()
    (other / "device.toml").write_text('display-name = "B"\nvendor = "Example"\n')
    result = run_cli("status", cwd=upstream.root)
    assert result.code == 2
    assert result.stderr.splitlines() == [
        "error: no device named and not inside a build tree, and the store has 2 devices: "
        "devA, devB",
        "hint: Pass --device-type NAME, or run the command from inside a build tree.",
    ]


def test_a_tree_whose_store_is_gone_says_so(upstream: SyntheticUpstream, tmp_path: Path) -> None:
    moved_store = tmp_path / "other" / "patches"
    moved_store.parent.mkdir()
    upstream.store.rename(moved_store)
    made = run_cli("--store", str(moved_store), "unpatch", "-d", "devA", "--dir",
                   str(upstream.build))
    assert made.code == 0, made.output
    moved_store.rename(tmp_path / "other" / "gone")
    result = run_cli("status", cwd=upstream.tree)
    assert result.code == 3
    assert result.stderr.splitlines() == [
        f"error: the build tree {upstream.tree} was made from the store {moved_store}, "
        "which no longer exists",
        "hint: Pass the store with --store.",
    ]


# --------------------------------------------------------------------------- the default base


def test_default_base_comes_from_device_toml_and_a_tree_keeps_its_base(
    upstream: SyntheticUpstream,
) -> None:
    add_second_base(upstream)
    set_default_base(upstream, "demo-1.0")
    first = upstream.cli("unpatch", "-d", "devA")
    assert first.code == 0, first.output
    assert f"demo 1.0 ({upstream.commit[:12]}) + 0 patch(es)" in first.stderr
    switched = upstream.cli("unpatch", "-d", "devA", "--commit-id", "1.1")
    assert switched.code == 0, switched.output
    assert f"switching {upstream.tree} from demo-1.0 (1.0) to demo-1.1 (1.1)" in (
        switched.stderr.splitlines()
    )
    # With no --commit-id, rebuilding keeps the tree on its base (not the default).
    kept = upstream.cli("unpatch", "-d", "devA")
    assert kept.code == 0, kept.output
    assert "switching" not in kept.stderr
    assert '"base_id": "demo-1.1"' in (upstream.tree / ".git" / "patchtool.json").read_text()


def test_without_default_base_the_newest_base_is_taken(upstream: SyntheticUpstream) -> None:
    add_second_base(upstream)
    result = upstream.cli("unpatch", "-d", "devA")
    assert result.code == 0, result.output
    assert '"base_id": "demo-1.1"' in (upstream.tree / ".git" / "patchtool.json").read_text()


def test_a_default_base_that_names_no_base_is_an_integrity_error(
    upstream: SyntheticUpstream,
) -> None:
    set_default_base(upstream, "demo-9.9")
    result = upstream.cli("unpatch", "-d", "devA")
    assert result.code == 6
    assert result.stderr.splitlines()[0] == (
        f"error: {upstream.store / 'devA' / 'device.toml'}: default-base 'demo-9.9' names "
        "no base of 'devA'"
    )
    assert not upstream.tree.exists()


def test_a_default_base_that_is_not_a_name_is_refused(upstream: SyntheticUpstream) -> None:
    set_default_base(upstream, "../demo-1.0")
    refused = [
        f"error: {upstream.store / 'devA' / 'device.toml'}: default-base '../demo-1.0' is not "
        "a valid name",
        "hint: A default-base is 1-100 characters of letters, digits, '.', '_', '+' and '-', "
        "starting with a letter or digit, and never contains '..'.",
    ]
    # list shows the device as a matrix entry of its own: CI runs its check, which fails.
    result = upstream.cli("list", "--json")
    assert result.code == 0
    assert json.loads(result.stdout)["include"] == [
        {
            "device": "devA",
            "display_name": None,
            "base": None,
            "problem": f"{upstream.store / 'devA' / 'device.toml'}: default-base '../demo-1.0' "
            "is not a valid name",
            "command": "patchtool check -d devA",
        }
    ]
    assert upstream.cli("check", "-d", "devA").code == 10
    result = upstream.cli("unpatch", "-d", "devA")
    assert (result.code, error_lines(result)) == (10, refused)


# --------------------------------------------------------------------------- the command line


def test_global_options_work_after_the_command(upstream: SyntheticUpstream) -> None:
    result = run_cli("unpatch", "-d", "devA", "-q", "--store", str(upstream.store),
                     cwd=upstream.root.parent)
    assert result.code == 0, result.output
    assert result.stderr == ""
    assert result.stdout.strip() == str(upstream.tree)


def test_an_option_value_is_never_taken_for_a_global_option(upstream: SyntheticUpstream) -> None:
    assert upstream.cli("unpatch", "-d", "devA").code == 0
    (upstream.tree / "demo" / "hello.txt").write_text("hello\n")
    result = upstream.cli("patch", "-d", "devA", "-m", "-q")
    assert result.code == 0, result.output
    assert git(upstream.tree, "log", "-1", "--format=%s").strip() == "-q"


@pytest.mark.parametrize(
    "command", ["unpatch", "patch", "build-wheel", "list", "status", "check", "rebase", "import"]
)
def test_help_shows_no_empty_defaults(command: str) -> None:
    result = run_cli(command, "--help")
    assert result.code == 0
    assert "[default: None]" not in result.stdout
    assert "[default: no-" not in result.stdout
    assert "[default: False]" not in result.stdout


def test_rich_markup_in_a_path_is_printed_as_it_is(upstream: SyntheticUpstream) -> None:
    build = upstream.root / "b[/]x[bold]"
    result = upstream.cli("unpatch", "-d", "devA", "--dir", str(build))
    assert result.code == 0, result.output
    assert f"» checking out demo 1.0 ({upstream.commit[:12]})" in result.stderr
    assert result.stdout.strip() == str(build / "devA" / "demo")


def test_a_shell_left_in_a_replaced_tree_gets_a_clear_error(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    # unpatch builds the new tree aside and swaps it in whole, so a shell that
    # ran it from inside the tree is left in the old tree, set aside.
    assert upstream.cli("unpatch", "--device-type", "devA").code == 0
    inside = upstream.tree / "demo"
    script = tmp_path / "session.sh"
    script.write_text(
        'cd "$1" && patchtool unpatch >/dev/null 2>&1 && patchtool status; echo "rc=$?"\n'
        'cd "$PWD" && patchtool status >/dev/null; echo "rc=$?"\n'
    )
    done = subprocess.run(
        ["bash", str(script), str(inside)], capture_output=True, text=True, check=True,
        env=dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"),
    )
    [old] = [p for p in (upstream.build / "devA").iterdir()
             if p.name.startswith(".patchtool-previous-")]  # fmt: skip
    assert done.stderr.splitlines() == [
        f"error: the working folder is inside a build tree that unpatch replaced: {old / 'demo'}",
        f"hint: `cd {inside}` enters the new one. The old one is removed by the next run on the "
        "device, or moved to backups/ if anything was written in it.",
    ]
    assert done.stdout.splitlines() == ["rc=3", "rc=0"]


def test_a_removed_working_folder_is_named(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    done = subprocess.run(
        ["bash", "-c", f'cd {gone} && rmdir {gone} && "$0" -m patchtool list', sys.executable],
        capture_output=True, text=True,
    )
    assert done.returncode == 3
    assert done.stderr.splitlines() == [
        f"error: the working folder no longer exists: {gone}",
        "hint: cd into an existing folder and run the command again.",
    ]
