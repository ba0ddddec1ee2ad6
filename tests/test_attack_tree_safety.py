"""Where unpatch writes and what it removes (attack report 19: LOW 7, LOW 9 and
the rebase --abort gap of LOW 12).

A `build` link found beside the store, or a link at `<dir>/<device>`, is
refused as a linked patches/ found by searching is: a pull request could
commit one and send trees, locks and backups anywhere. The tree an earlier
unpatch set aside is checked again after it is renamed to its trash name, and
a trash folder no run verified is never removed unseen.
"""

from __future__ import annotations

import os
from pathlib import Path

from helpers import SyntheticUpstream, error_lines, run_cli
from test_no_loss import resume, shell_factory, start_paused, unpatch_args

__all__ = ["shell_factory"]  # the fixture, used by name


def test_a_linked_default_build_folder_is_refused(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, upstream.root / "build")
    result = run_cli("unpatch", "-d", "devA", cwd=upstream.root)
    assert result.code == 10
    assert error_lines(result) == [
        f"error: the build folder {upstream.root / 'build'} is a symlink; patchtool does not "
        "follow a linked build folder it finds",
        "hint: Replace the link by a folder, or pass --dir to build there on purpose.",
    ]
    assert list(elsewhere.iterdir()) == []
    # Named on purpose, it is used.
    chosen = run_cli(
        "unpatch", "-d", "devA", "--dir", str(upstream.root / "build"), cwd=upstream.root
    )
    assert chosen.code == 0, chosen.output
    assert (elsewhere / "devA" / "demo" / ".git").is_dir()


def test_a_linked_device_folder_is_refused(upstream: SyntheticUpstream, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    upstream.build.mkdir()
    os.symlink(elsewhere, upstream.build / "devA")
    for args in (
        ("unpatch", "-d", "devA"),
        ("unpatch", "-d", "devA", "--dir", str(upstream.build)),
    ):
        result = run_cli(*args, cwd=upstream.root)
        assert result.code == 10, result.output
        assert error_lines(result) == [
            f"error: the build folder's device folder {upstream.build / 'devA'} is a symlink; "
            "patchtool writes build trees into plain folders only",
            "hint: Replace the link by a folder, or pass --dir to build elsewhere.",
        ]
    assert list(elsewhere.iterdir()) == []


def _fake_rm(tmp_path: Path) -> dict[str, str]:
    """A PATH whose `rm` does nothing: the background removal leaves its trash."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "rm").write_text("#!/bin/sh\nexit 0\n")
    (folder / "rm").chmod(0o755)
    return {"PATH": f"{folder}:{os.environ['PATH']}"}


def _backups(world: SyntheticUpstream) -> list[Path]:
    folder = world.build / "devA" / "backups"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def test_a_write_into_the_set_aside_tree_after_its_rename_to_trash_is_kept(
    upstream: SyntheticUpstream, tmp_path: Path, shell_factory
) -> None:
    assert upstream.run("unpatch").code == 0
    assert upstream.run("unpatch").code == 0
    [previous] = [p for p in (upstream.build / "devA").iterdir()
                  if p.name.startswith(".patchtool-previous-")]  # fmt: skip
    shell = shell_factory(previous / "demo")
    run = start_paused(unpatch_args(upstream), "unpatch:trash-renamed", tmp_path / "pause")
    # The run has checked the tree and renamed it to its trash name; the shell followed.
    assert ".patchtool-trash-" in shell.run("readlink /proc/$$/cwd")
    shell.run("echo precious > mywork.txt")
    code, stderr = resume(run, tmp_path / "pause")
    assert code == 0, stderr
    [backup] = _backups(upstream)
    assert stderr.splitlines()[0] == (
        "warning: the tree an earlier unpatch replaced was changed after its last check; "
        f"it was moved to {backup}"
    )
    assert (backup / "mywork.txt").read_text() == "precious\n"
    assert [p.name for p in (upstream.build / "devA").iterdir()
            if p.name.startswith(".patchtool-trash-")] == []  # fmt: skip


def test_a_trash_folder_no_run_verified_is_moved_to_backups_not_removed(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    path = _fake_rm(tmp_path)
    for _ in range(3):
        assert upstream.run("unpatch", env=path).code == 0
    # The verified tree, left by a removal that never ran: removed without a word.
    [trash] = [p for p in (upstream.build / "devA").iterdir()
               if p.name.startswith(".patchtool-trash-") and p.is_dir()]  # fmt: skip
    (trash / "demo" / "mywork.txt").write_text("precious\n")  # written after the check
    result = upstream.run("unpatch", env=path)
    assert result.code == 0, result.output
    [backup] = _backups(upstream)
    assert result.stderr.splitlines()[0] == (
        "warning: a removal of a replaced tree did not finish, or something was written in it "
        f"while it ran; what was left of it was moved to {backup}"
    )
    assert (backup / "demo" / "mywork.txt").read_text() == "precious\n"
    # The next run finds the trash this run left, unchanged: removed without a word.
    again = upstream.run("unpatch", env=path)
    assert again.code == 0
    assert "warning" not in again.stderr
    assert _backups(upstream) == [backup]
