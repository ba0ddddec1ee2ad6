"""patch: --check, -m, refusals."""

from __future__ import annotations

import pytest
from helpers import SyntheticUpstream, commit_all, error_lines, git

pytestmark = pytest.mark.cli_in_process


def test_check_passes_on_a_fresh_tree_and_fails_on_unexported_work(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    assert upstream.run("patch", "--check").code == 0
    (upstream.tree / "x.txt").write_text("x\n")
    commit_all(upstream.tree, "Add x")
    before = sorted(p.name for p in upstream.base_folder.iterdir())
    stale = upstream.run("patch", "--check")
    assert stale.code == 7
    assert error_lines(stale) == [
        f"error: {upstream.base_folder} differs from what a fresh export of {upstream.tree} "
        "would write:",
        "  new patch add-x.patch",
        "hint: Run `patchtool patch --device-type devA` and commit the store.",
    ]
    assert sorted(p.name for p in upstream.base_folder.iterdir()) == before


def test_uncommitted_changes_are_refused_without_m(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "README.md").write_text("changed\n")
    series = (upstream.base_folder / "series").read_bytes()
    result = upstream.run("patch")
    assert result.code == 5
    assert error_lines(result) == [
        f"error: the build tree {upstream.tree} has uncommitted changes: README.md",
        "hint: Commit them (each logical change its own commit), or pass -m SUBJECT to commit "
        "them all as one new patch.",
    ]
    assert (upstream.base_folder / "series").read_bytes() == series


def test_m_commits_changes_as_a_new_patch_under_the_users_name(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "README.md").write_text("changed\n")
    result = upstream.run("patch", "-m", "docs: Rewrite the readme")
    assert result.code == 0, result.output
    text = (upstream.base_folder / "docs-rewrite-the-readme.patch").read_text()
    assert "From: Test Author <author@example.invalid>" in text
    assert "Subject: [PATCH] docs: Rewrite the readme" in text
    assert git(upstream.tree, "status", "--porcelain") == ""


def test_patch_without_a_tree_says_how_to_make_one(upstream: SyntheticUpstream) -> None:
    result = upstream.run("patch")
    assert result.code == 3
    assert error_lines(result) == [
        f"error: no build tree for device 'devA' under {upstream.build / 'devA'}",
        # The --dir given (upstream.run passes one) is repeated.
        f"hint: Create one with `patchtool unpatch --device-type devA --dir {upstream.build}`.",
    ]


def test_status_lists_commits_unexported_and_uncommitted(upstream: SyntheticUpstream) -> None:
    import json

    assert upstream.run("unpatch").code == 0
    (upstream.tree / "a.txt").write_text("a\n")
    commit_all(upstream.tree, "Add a")
    (upstream.tree / "b.txt").write_text("b\n")
    result = upstream.run("status", "--json")
    assert result.code == 0, result.output
    data = json.loads(result.stdout)
    assert data["base_commit"] == upstream.commit
    assert [c.split(" ", 1)[1] for c in data["commits"]] == ["Add a"]
    assert [c.split(" ", 1)[1] for c in data["unexported"]] == ["Add a"]
    assert data["uncommitted"] == ["b.txt"]


def test_list_shows_devices_and_bases(upstream: SyntheticUpstream) -> None:
    import json

    result = upstream.cli("list", "--json")
    assert result.code == 0
    assert json.loads(result.stdout) == {"include": [{
        "device": "devA", "display_name": "Device A", "base": "demo-1.0", "project": "demo",
        "version": "1.0", "commit": upstream.commit, "source": "pypi", "patches": 0,
        "private": 0,
        "command": "patchtool check -d devA --commit-id demo-1.0",
    }]}
