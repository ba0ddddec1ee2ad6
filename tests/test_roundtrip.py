"""unpatch → edit → patch → unpatch gives back the same tree, for every kind of change."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, commit_all, git, snapshot


def unpatch_ok(world: SyntheticUpstream, *extra: str) -> None:
    result = world.cli("unpatch", "--device-type", "devA", "--dir", str(world.build), *extra)
    assert result.code == 0, result.output


def patch_ok(world: SyntheticUpstream, *extra: str) -> str:
    result = world.cli("patch", "--device-type", "devA", "--dir", str(world.build), *extra)
    assert result.code == 0, result.output
    return result.stderr


def store_bytes(world: SyntheticUpstream) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(world.base_folder.iterdir())}


def test_unpatch_gives_the_sdist_tree_with_modes_and_links(upstream: SyntheticUpstream) -> None:
    unpatch_ok(upstream)
    tree = upstream.tree
    assert (tree / "demo" / "core.py").read_bytes().startswith(b"def function_0")
    assert os.access(tree / "tools" / "run.sh", os.X_OK)
    assert not os.access(tree / "setup.py", os.X_OK)
    assert os.readlink(tree / "docs" / "link.md") == "../README.md"
    assert (tree / "demo" / "windows.txt").read_bytes() == b"line one\r\nline two\r\n"
    assert git(tree, "rev-parse", "patchtool/base").strip() == upstream.commit
    assert git(tree, "rev-parse", "HEAD").strip() == upstream.commit
    assert git(tree, "remote").strip() == ""  # self-contained: no link to the cache


def test_patch_right_after_unpatch_changes_no_byte(upstream: SyntheticUpstream) -> None:
    unpatch_ok(upstream)
    (upstream.tree / "demo" / "new.py").write_text("X = 1\n")
    commit_all(upstream.tree, "demo: add new module")
    patch_ok(upstream)
    before = store_bytes(upstream)
    unpatch_ok(upstream)
    stderr = patch_ok(upstream)
    assert "store unchanged" in stderr
    assert store_bytes(upstream) == before


def test_edit_commit_patch_adds_one_file_and_one_series_line(upstream: SyntheticUpstream) -> None:
    unpatch_ok(upstream)
    series_before = (upstream.base_folder / "series").read_text()
    files_before = set(store_bytes(upstream))
    (upstream.tree / "demo" / "__init__.py").write_text("VERSION = '1.0+devA'\n")
    commit_all(upstream.tree, "demo: Mark the version as devA's")
    patch_ok(upstream)
    assert set(store_bytes(upstream)) - files_before == {"demo-mark-the-version-as-deva-s.patch"}
    assert (upstream.base_folder / "series").read_text() == (
        series_before + "demo-mark-the-version-as-deva-s.patch\n"
    )
    edited = snapshot(upstream.tree)
    unpatch_ok(upstream)
    assert snapshot(upstream.tree) == edited


def test_every_kind_of_change_round_trips(upstream: SyntheticUpstream) -> None:
    unpatch_ok(upstream)
    tree = upstream.tree
    (tree / "demo" / "blob.bin").write_bytes(bytes(range(256))[::-1] * 8 + b"\0\xff")
    commit_all(tree, "Add a binary file")
    git(tree, "mv", "demo/core.py", "demo/renamed_core.py")
    commit_all(tree, "Rename the core module")
    git(tree, "rm", "--quiet", "README.md")
    commit_all(tree, "Delete the readme")
    os.chmod(tree / "setup.py", 0o755)
    os.chmod(tree / "tools" / "run.sh", 0o644)
    commit_all(tree, "Flip executable bits")
    os.symlink("renamed_core.py", tree / "demo" / "alias.py")
    os.unlink(tree / "docs" / "link.md")
    os.symlink("../setup.py", tree / "docs" / "link.md")
    commit_all(tree, "Add and retarget symlinks")
    (tree / "demo" / "latin1.txt").write_bytes("caf\xe9 cr\xe8me\n".encode("latin-1"))
    commit_all(tree, "Add a Latin-1 file")
    (tree / "demo" / "windows.txt").write_bytes(b"line one\r\nline 2 changed\r\nline three\r\n")
    commit_all(tree, "Edit CRLF content")
    (tree / "demo" / "data.bin").write_bytes(b"\x00\x01changed binary\xff" * 30)
    commit_all(tree, "Change a binary file")
    (tree / "no-newline.txt").write_bytes(b"no newline at end")
    commit_all(tree, "Add a file without a final newline")
    expected = snapshot(tree)
    patch_ok(upstream)
    exported = store_bytes(upstream)
    assert len([n for n in exported if n.endswith(".patch")]) == 9
    unpatch_ok(upstream)
    assert snapshot(upstream.tree) == expected
    patch_ok(upstream)
    assert store_bytes(upstream) == exported
    rename = (upstream.base_folder / "rename-the-core-module.patch").read_bytes()
    assert b"rename from demo/core.py" in rename and b"similarity index 100%" in rename


def test_exported_patch_matches_golden_file(upstream: SyntheticUpstream) -> None:
    unpatch_ok(upstream)
    core = upstream.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 7\n", "return 7 * 1\n"))
    commit_all(upstream.tree, "demo: Make function_7 explicit",
               "The golden file pins every byte of the export format.\n\n"
               "Upstream-Status: Inappropriate [test]")
    patch_ok(upstream)
    golden = Path(__file__).parent / "golden" / "demo-make-function-7-explicit.patch"
    assert (upstream.base_folder / "demo-make-function-7-explicit.patch").read_bytes() == (
        golden.read_bytes()
    )


def test_reorder_and_drop_in_the_tree_reorder_and_drop_in_the_store(
    upstream: SyntheticUpstream,
) -> None:
    unpatch_ok(upstream)
    for name in ("one", "two", "three"):
        (upstream.tree / f"{name}.txt").write_text(name + "\n")
        commit_all(upstream.tree, f"Add {name}")
    (upstream.base_folder / "notes.txt").write_text("not a patch; must survive\n")
    patch_ok(upstream)
    # drop "two", swap "one" and "three": rebuild the branch by cherry-picking
    tree = upstream.tree
    commits = git(tree, "rev-list", "--reverse", "patchtool/base..HEAD").split()
    git(tree, "reset", "--quiet", "--hard", "patchtool/base")
    git(tree, "cherry-pick", commits[2])
    git(tree, "cherry-pick", commits[0])
    patch_ok(upstream)
    series = (upstream.base_folder / "series").read_text().splitlines()
    assert series == ["# demo series", "add-three.patch", "add-one.patch"]
    assert not (upstream.base_folder / "add-two.patch").exists()
    assert (upstream.base_folder / "notes.txt").read_text() == "not a patch; must survive\n"


@pytest.mark.parametrize("subject,expected", [
    ("fused_moe: Add 64-bit offsets", "fused-moe-add-64-bit-offsets.patch"),
    ("   ", "patch.patch"),
])
def test_patch_names_come_from_subjects(upstream: SyntheticUpstream, subject: str,
                                        expected: str) -> None:
    unpatch_ok(upstream)
    (upstream.tree / "x.txt").write_text("x\n")
    git(upstream.tree, "add", "x.txt")
    git(upstream.tree, "commit", "--quiet", "--allow-empty-message", "-m", subject)
    patch_ok(upstream)
    assert (upstream.base_folder / expected).is_file()


def test_unpatch_over_an_exported_tree_replaces_it_without_a_backup(
    upstream: SyntheticUpstream,
) -> None:
    build = str(upstream.build)
    assert upstream.cli("unpatch", "-d", "devA", "--dir", build).code == 0
    core = upstream.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 4\n", "return 44\n"))
    commit_all(upstream.tree, "Return 44")
    assert upstream.cli("patch", "-d", "devA", "--dir", build).code == 0
    again = upstream.cli("unpatch", "-d", "devA", "--dir", build)
    assert again.code == 0, again.output
    assert [line for line in again.stderr.splitlines() if line.startswith("warning")] == []
    # No backup: the replaced tree is only set aside, for the next run to remove.
    names = sorted(p.name for p in (upstream.build / "devA").iterdir())
    assert len(names) == 3 and names[0].startswith(".patchtool-previous-")
    assert names[1:] == [".patchtool.lock", "demo"]
    assert git(upstream.tree, "log", "-1", "--format=%s").strip() == "Return 44"


def test_a_damaged_tree_record_is_exit_6_and_unpatch_keeps_the_tree(
    upstream: SyntheticUpstream,
) -> None:
    build = str(upstream.build)
    assert upstream.cli("unpatch", "-d", "devA", "--dir", build).code == 0
    record = upstream.tree / ".git" / "patchtool.json"
    record.write_text("{not json")
    status = upstream.cli("status", "-d", "devA", "--dir", build)
    assert status.code == 6, status.output
    assert status.stderr.splitlines() == [
        f"error: {record} is damaged: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
        "hint: Recreate the tree with `patchtool unpatch --force` (the tree is kept in "
        "backups/).",
    ]
    refused = upstream.cli("unpatch", "-d", "devA", "--dir", build)
    assert refused.code == 5, refused.output
    assert refused.stderr.splitlines()[0] == (
        f"error: the build tree {upstream.tree} holds work that exists nowhere else:"
    )
    assert record.read_text() == "{not json"
