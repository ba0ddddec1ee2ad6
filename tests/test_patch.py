"""patch: --check, -m, refusals."""

from __future__ import annotations

from helpers import SyntheticUpstream, commit_all, git


def cli(world: SyntheticUpstream, command: str, *extra: str):  # type: ignore[no-untyped-def]
    return world.cli(command, "--device-type", "devA", "--dir", str(world.build), *extra)


def test_check_passes_on_a_fresh_tree_and_fails_on_unexported_work(upstream: SyntheticUpstream) -> None:
    assert cli(upstream, "unpatch").code == 0
    assert cli(upstream, "patch", "--check").code == 0
    (upstream.tree / "x.txt").write_text("x\n")
    commit_all(upstream.tree, "Add x")
    before = sorted(p.name for p in upstream.base_folder.iterdir())
    stale = cli(upstream, "patch", "--check")
    assert stale.code == 7
    assert "new patch add-x.patch" in stale.stderr
    assert "series order or content differs" in stale.stderr
    assert sorted(p.name for p in upstream.base_folder.iterdir()) == before


def test_uncommitted_changes_are_refused_without_m(upstream: SyntheticUpstream) -> None:
    assert cli(upstream, "unpatch").code == 0
    (upstream.tree / "README.md").write_text("changed\n")
    series = (upstream.base_folder / "series").read_bytes()
    result = cli(upstream, "patch")
    assert result.code == 5
    assert "uncommitted changes: README.md" in result.stderr and "-m" in result.stderr
    assert (upstream.base_folder / "series").read_bytes() == series


def test_m_commits_changes_as_a_new_patch_under_the_users_name(upstream: SyntheticUpstream) -> None:
    assert cli(upstream, "unpatch").code == 0
    (upstream.tree / "README.md").write_text("changed\n")
    result = cli(upstream, "patch", "-m", "docs: Rewrite the readme")
    assert result.code == 0, result.output
    text = (upstream.base_folder / "docs-rewrite-the-readme.patch").read_text()
    assert "From: Test Author <author@example.invalid>" in text
    assert "Subject: [PATCH] docs: Rewrite the readme" in text
    assert git(upstream.tree, "status", "--porcelain") == ""


def test_patch_without_a_tree_says_how_to_make_one(upstream: SyntheticUpstream) -> None:
    result = cli(upstream, "patch")
    assert result.code == 3
    assert "no build tree for device 'devA'" in result.stderr
    assert "patchtool unpatch --device-type devA" in result.stderr


def test_status_lists_commits_unexported_and_uncommitted(upstream: SyntheticUpstream) -> None:
    import json

    assert cli(upstream, "unpatch").code == 0
    (upstream.tree / "a.txt").write_text("a\n")
    commit_all(upstream.tree, "Add a")
    (upstream.tree / "b.txt").write_text("b\n")
    result = cli(upstream, "status", "--json")
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
        "command": "patchtool check -d devA --commit-id demo-1.0",
    }]}
