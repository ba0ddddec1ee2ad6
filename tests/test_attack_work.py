"""Work unpatch used to discard unseen (attack report 19, MEDIUM 5).

trees/work.py is the one judge of a tree's work. Refused without --force
(exit 5): any ref but patchtool's own whose commits HEAD lacks (tags, annotated
too, custom refs, notes) and edits hidden from git status (skip-worktree,
assume-unchanged). Moved to backups/ unasked, and said so: what patchtool
cannot tell is saved elsewhere (ignored and excluded files, commits only the
reflog holds, the user's hooks, config, info/ and rr-cache under .git).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SyntheticUpstream, commit_all, error_lines, git

WORK_HINT = (
    "Export it with `patchtool patch --device-type devA` (commit first, or use -m), "
    "or pass --force to move the old tree to a backup folder."
)


def _commit_then_drop(tree: Path) -> None:
    (tree / "mine.txt").write_text("MY WORK\n")
    commit_all(tree, "Work kept by a ref only")


def _refused(upstream: SyntheticUpstream, line: str) -> None:
    result = upstream.run("unpatch")
    assert result.code == 5, result.output
    assert error_lines(result) == [
        f"error: the build tree {upstream.tree} holds work that exists nowhere else:",
        f"  {line}",
        f"hint: {WORK_HINT}",
    ]
    assert not (upstream.build / "devA" / "backups").exists()


@pytest.mark.parametrize(
    ("make_ref", "line"),
    [
        (("tag", "mywork"), "tag mywork has 1 commit(s) not in HEAD"),
        (("tag", "-a", "-m", "annotated", "mywork"), "tag mywork has 1 commit(s) not in HEAD"),
        (("update-ref", "refs/wip/x", "HEAD"), "ref refs/wip/x has 1 commit(s) not in HEAD"),
    ],
)
def test_a_commit_only_a_tag_or_custom_ref_holds_is_refused(
    upstream: SyntheticUpstream, make_ref: tuple[str, ...], line: str
) -> None:
    assert upstream.run("unpatch").code == 0
    _commit_then_drop(upstream.tree)
    git(upstream.tree, *make_ref)
    git(upstream.tree, "reset", "--quiet", "--hard", "HEAD~1")
    _refused(upstream, line)
    assert upstream.run("unpatch", "--force").code == 0
    (backup,) = (upstream.build / "devA" / "backups").iterdir()
    assert git(backup, "show", "mywork:mine.txt" if "tag" in make_ref else "refs/wip/x:mine.txt")


def test_git_notes_are_refused(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    git(upstream.tree, "notes", "add", "-m", "MY NOTE", "HEAD")
    _refused(upstream, "git notes refs/notes/commits has 1 commit(s) not in HEAD")


@pytest.mark.parametrize("bit", ["--skip-worktree", "--assume-unchanged"])
def test_edits_hidden_from_git_status_are_refused(upstream: SyntheticUpstream, bit: str) -> None:
    assert upstream.run("unpatch").code == 0
    git(upstream.tree, "update-index", bit, "README.md")
    assert upstream.run("unpatch").code == 0  # the bit alone is no work
    git(upstream.tree, "update-index", bit, "README.md")
    with (upstream.tree / "README.md").open("a") as readme:
        readme.write("MY WORK\n")
    assert git(upstream.tree, "status", "--porcelain") == ""
    _refused(
        upstream, "edits git status does not show (skip-worktree or assume-unchanged): README.md"
    )


def _moved_to_backups(upstream: SyntheticUpstream, what: str) -> Path:
    result = upstream.run("unpatch")
    assert result.code == 0, result.output
    (backup,) = (upstream.build / "devA" / "backups").iterdir()
    assert [line for line in result.stderr.splitlines() if line.startswith("warning:")] == [
        (
            "warning: the previous tree held what patchtool cannot tell is saved elsewhere "
            f"({what}); it was moved to {backup}"
        )
    ]
    assert (upstream.tree / ".git" / "patchtool.json").is_file()
    return backup


def test_ignored_and_excluded_files_go_to_backups(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    with (upstream.tree / ".git" / "info" / "exclude").open("a") as exclude:
        exclude.write("secret.env\n.venv/\n")
    (upstream.tree / "secret.env").write_text("MY WORK\n")
    (upstream.tree / ".venv").mkdir()
    (upstream.tree / ".venv" / "pyvenv.cfg").write_text("home = /x\n")
    backup = _moved_to_backups(upstream, "ignored files: .venv/, secret.env; .git/info/exclude")
    assert (backup / "secret.env").read_text() == "MY WORK\n"
    assert (backup / ".venv" / "pyvenv.cfg").is_file()
    assert not (upstream.tree / "secret.env").exists()


def test_a_commit_only_the_reflog_holds_goes_to_backups(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    _commit_then_drop(upstream.tree)
    lost = git(upstream.tree, "rev-parse", "HEAD").strip()
    git(upstream.tree, "reset", "--quiet", "--hard", "HEAD~1")
    backup = _moved_to_backups(
        upstream, f"1 commit(s) only the reflog holds, not in the store's series: {lost[:10]}"
    )
    assert git(backup, "show", f"{lost}:mine.txt") == "MY WORK\n"


def test_an_amended_message_of_an_exported_commit_is_no_work(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "feature.txt").write_text("feature\n")
    commit_all(upstream.tree, "demo: add a feature")
    git(upstream.tree, "commit", "--quiet", "--amend", "-m", "demo: add the feature\n\nWhy.")
    assert upstream.run("patch").code == 0
    result = upstream.run("unpatch")
    assert result.code == 0, result.output
    assert "warning" not in result.stderr
    assert not (upstream.build / "devA" / "backups").exists()


@pytest.mark.parametrize(
    ("change", "what"),
    [
        (("hooks/pre-commit", "#!/bin/sh\necho MY WORK\n"), "hook pre-commit"),
        (("rr-cache/abc/postimage", "MY WORK\n"), "recorded resolutions in .git/rr-cache"),
        (("info/attributes", "*.txt diff\n"), ".git/info/attributes"),
        (("my-notes.txt", "MY WORK\n"), ".git/my-notes.txt"),
    ],
)
def test_the_users_state_under_git_goes_to_backups(
    upstream: SyntheticUpstream, change: tuple[str, str], what: str
) -> None:
    assert upstream.run("unpatch").code == 0
    path = upstream.tree / ".git" / change[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(change[1])
    backup = _moved_to_backups(upstream, what)
    assert (backup / ".git" / change[0]).read_text() == change[1]


def test_a_remote_in_the_trees_config_goes_to_backups(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    git(upstream.tree, "remote", "add", "mine", "https://example.invalid/mine.git")
    backup = _moved_to_backups(upstream, "git config remote.mine.fetch, remote.mine.url")
    assert git(backup, "remote") == "mine\n"


def test_a_tree_as_unpatch_made_it_is_replaced_without_a_backup(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    result = upstream.run("unpatch")
    assert result.code == 0, result.output
    assert "warning" not in result.stderr
    assert not (upstream.build / "devA" / "backups").exists()
