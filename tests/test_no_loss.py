"""No window in which unpatch loses work, and no private text left in the
temporary folder (issue 19, sections 5 and 6; issue 21, defect 6).

unpatch never removes the tree it replaced in the run that replaced it: the
tree's whole state is taken at the last check; a tree written in between the
check and the swap goes to backups/ at once, any other is set aside and the
next run removes it only if nothing was written in it since. The writes come
from a shell whose working folder is the old tree, as a user's would: its
working folder follows the tree when unpatch renames it.

`check` builds its trees under the cache, each scratch folder locked by its
run: SIGTERM ends the run in order (the scratch removed), a kill -9 leaves it
to the next run, and a live run's scratch is never touched by another.

Every run here is a process of its own (paused at a named point, or killed).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
from pathlib import Path

import pyrage
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

from patchtool.core.faults import PAUSE_FOLDER_VARIABLE, PAUSE_VARIABLE, VARIABLE

# --------------------------------------------------------------------------- helpers


class Shell:
    """`sh` started in a folder, fed one command at a time: a user's shell whose
    working folder is the build tree, and stays that folder when it is renamed."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            ["sh"], cwd=folder, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip

    def run(self, command: str) -> str:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{command}\necho __done__ $?\n")
        self.process.stdin.flush()
        output = []
        for line in self.process.stdout:
            if line.startswith("__done__ "):
                assert line.split()[1] == "0", "".join(output)
                return "".join(output)
            output.append(line)
        raise AssertionError(f"the shell ended: {''.join(output)}")

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait()


@pytest.fixture
def shell_factory() -> object:
    shells: list[Shell] = []

    def start(folder: Path) -> Shell:
        shells.append(Shell(folder))
        return shells[-1]

    yield start
    for shell in shells:
        shell.close()


def start_paused(args: list[str], point: str, pause: Path,
                 env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:  # fmt: skip
    """`patchtool ARGS` in a process of its own, returned once it waits at `point`.
    A run that ends without reaching it fails the test (it never hangs it)."""
    pause.mkdir()
    os.mkfifo(pause / "reached")
    os.mkfifo(pause / "resume")
    run = subprocess.Popen(
        [sys.executable, "-m", "patchtool", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", PAUSE_VARIABLE: point,
             PAUSE_FOLDER_VARIABLE: str(pause), **(env or {})},
    )  # fmt: skip
    reached = os.open(pause / "reached", os.O_RDONLY | os.O_NONBLOCK)
    try:
        said = b""
        while not said.endswith(b"\n"):
            readable, _, _ = select.select([reached], [], [], 0.2)
            if readable:
                said += os.read(reached, 200)
            elif run.poll() is not None:
                _, stderr = run.communicate()
                raise AssertionError(f"the run ended ({run.returncode}) before {point}:\n"
                                     f"{stderr.decode()}")  # fmt: skip
    finally:
        os.close(reached)
    assert said.decode() == point + "\n"
    return run


def resume(run: subprocess.Popen[bytes], pause: Path) -> tuple[int, str]:
    """Let a paused run go on (if it still waits: a run that ended is not waited
    for), and return its exit status and stderr."""
    while run.poll() is None:
        try:
            go_on = os.open(pause / "resume", os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # ENXIO: the run is not reading yet, or no more
            select.select([], [], [], 0.05)
            continue
        os.write(go_on, b"go\n")
        os.close(go_on)
        break
    _, stderr = run.communicate()
    return run.returncode, stderr.decode()


def unpatch_args(world: SyntheticUpstream, *extra: str) -> list[str]:
    return ["--store", str(world.store), "unpatch", "--device-type", "devA",
            "--dir", str(world.build), *extra]  # fmt: skip


def backups(world: SyntheticUpstream) -> list[Path]:
    folder = world.build / "devA" / "backups"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def run_lines(world: SyntheticUpstream) -> list[str]:
    """What an unpatch of the unchanged demo store says on stderr, when it has
    nothing to report."""
    commit = world.commit[:12]
    return [
        f"» checking out demo 1.0 ({commit})",
        f"» applying 0 patch(es) from {world.base_folder}",
        f"demo 1.0 ({commit}) + 0 patch(es)",
    ]


# What a user does in the old tree, and what the tree then holds besides its files.
CHANGES = {
    "edit": ("printf 'edited\\n' >> README.md", "README.md", b"# demo\n\nA small upstream "
             b"project for tests.\nedited\n"),
    "untracked": ("printf 'new\\n' > new.txt", "new.txt", b"new\n"),
    "commit": ("printf 'committed\\n' > committed.txt && git add committed.txt && "
               "git commit --quiet -m 'Add committed'", "committed.txt", b"committed\n"),
}  # fmt: skip


def expected_files(before: dict[str, bytes], change: str) -> dict[str, bytes]:
    _, path, data = CHANGES[change]
    return {**before, path: data}


def assert_kept(backup: Path, before: dict[str, bytes], change: str) -> None:
    assert snapshot(backup) == expected_files(before, change)
    status = git(backup, "status", "--porcelain", "--untracked-files=all")
    if change == "commit":
        assert status == ""
        assert git(backup, "log", "-1", "--format=%s").strip() == "Add committed"
    else:
        assert status == {"edit": " M README.md\n", "untracked": "?? new.txt\n"}[change]


# --------------------------------------------------------------------------- section 5


@pytest.mark.parametrize("change", sorted(CHANGES))
@pytest.mark.parametrize("point", ["unpatch:checked-again", "unpatch:swapped"])
def test_work_made_between_the_last_check_and_the_swap_goes_to_a_backup(
    upstream: SyntheticUpstream, tmp_path: Path, shell_factory, point: str, change: str
) -> None:
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.tree)
    shell = shell_factory(upstream.tree)
    run = start_paused(unpatch_args(upstream), point, tmp_path / "pause")
    shell.run(CHANGES[change][0])
    code, stderr = resume(run, tmp_path / "pause")
    assert code == 0, stderr
    [backup] = backups(upstream)
    lines = run_lines(upstream)
    assert stderr.splitlines() == [
        *lines[:2],
        f"warning: the previous tree held unexported work; it was moved to {backup}",
        lines[2],
    ]
    assert_kept(backup, before, change)
    assert snapshot(upstream.tree) == before  # the new tree: the store's series
    # The next run has nothing to say, and leaves the backup alone.
    again = upstream.run("unpatch")
    assert (again.code, again.stderr.splitlines()) == (0, run_lines(upstream))
    assert backups(upstream) == [backup]
    assert_kept(backup, before, change)


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_work_made_in_the_set_aside_tree_goes_to_a_backup_at_the_next_run(
    upstream: SyntheticUpstream, tmp_path: Path, shell_factory, change: str
) -> None:
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.tree)
    shell = shell_factory(upstream.tree)
    run = start_paused(unpatch_args(upstream), "unpatch:set-aside", tmp_path / "pause")
    shell.run(CHANGES[change][0])  # the run has swapped; the shell is in the old tree
    code, stderr = resume(run, tmp_path / "pause")
    assert (code, stderr.splitlines()) == (0, run_lines(upstream))
    assert backups(upstream) == []
    next_run = upstream.run("unpatch")
    assert next_run.code == 0, next_run.output
    [backup] = backups(upstream)
    assert next_run.stderr.splitlines() == [
        "warning: the tree an earlier unpatch replaced was changed after its last check; "
        f"it was moved to {backup}",
        *run_lines(upstream),
    ]
    assert_kept(backup, before, change)
    # The shell is still in that tree, wherever it was moved: its work goes on there.
    assert Path(shell.run("readlink /proc/$$/cwd").strip()) == backup


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_work_made_before_the_second_check_is_refused_and_stays_in_place(
    upstream: SyntheticUpstream, tmp_path: Path, shell_factory, change: str
) -> None:
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.tree)
    shell = shell_factory(upstream.tree)
    run = start_paused(unpatch_args(upstream), "unpatch:before-swap", tmp_path / "pause")
    shell.run(CHANGES[change][0])
    code, stderr = resume(run, tmp_path / "pause")
    assert code == 5, stderr
    work = {
        "edit": "uncommitted changes: README.md",
        "untracked": "uncommitted changes: new.txt",
        "commit": "commits not exported to the store: "
        + git(upstream.tree, "rev-parse", "--short=10", "HEAD").strip()
        + " Add committed",
    }[change]
    assert error_lines(stderr) == [
        f"error: the build tree {upstream.tree} holds work that exists nowhere else:",
        f"  {work}",
        "hint: Export it with `patchtool patch --device-type devA` (commit first, or use -m), "
        "or pass --force to move the old tree to a backup folder.",
    ]
    assert_kept(upstream.tree, before, change)
    assert backups(upstream) == []
    assert sorted(os.listdir(upstream.build / "devA")) == [".patchtool.lock", "demo"]


def test_an_unchanged_set_aside_tree_goes_without_a_word_and_only_a_killed_run_is_reported(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    # A background removal that has not finished yet: the `rm` a finished run
    # starts does nothing here, so its folder is still there for the next run.
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "rm").write_text("#!/bin/sh\nexit 0\n")
    (slow / "rm").chmod(0o755)
    path = {"PATH": f"{slow}:{os.environ['PATH']}"}
    assert upstream.run("unpatch", env=path).code == 0
    for _ in range(3):
        again = upstream.run("unpatch", env=path)
        assert (again.code, again.stderr.splitlines()) == (0, run_lines(upstream))
    killed = upstream.run("unpatch", env={**path, VARIABLE: "unpatch:applied"})
    assert killed.code == -9
    [stage] = [p.name for p in (upstream.build / "devA").iterdir()
               if p.name.startswith(".patchtool-stage-")]  # fmt: skip
    after_kill = upstream.run("unpatch", env=path)
    assert after_kill.code == 0, after_kill.output
    assert after_kill.stderr.splitlines() == [
        f"removing {stage}, left by an interrupted run",
        *run_lines(upstream),
    ]
    assert backups(upstream) == []


# --------------------------------------------------------------------------- git's lock files


def lock_error(tree: Path, locks: str) -> list[str]:
    return [
        f"error: a git command was killed, or is still running, in the build tree {tree}: "
        f"it left {locks}",
        f"hint: If no git command is running there, delete {locks} and run the same patchtool "
        "command again.",
    ]


def test_a_stale_git_lock_is_exit_9_for_unpatch_and_rebase_alike(
    upstream: SyntheticUpstream,
) -> None:
    add_second_base(upstream)
    assert upstream.run("unpatch", "--commit-id", "demo-1.0").code == 0
    (upstream.tree / "work.txt").write_text("work\n")
    commit_all(upstream.tree, "Add work")
    assert upstream.run("patch").code == 0
    before = snapshot(upstream.tree)
    lock = upstream.tree / ".git" / "index.lock"
    lock.write_bytes(b"")
    for args in (("unpatch",), ("unpatch", "--force"), ("rebase", "--onto", "1.1")):
        refused = upstream.run(*args)
        assert refused.code == 9, (args, refused.output)
        assert error_lines(refused) == lock_error(upstream.tree, ".git/index.lock")
    assert lock.is_file() and snapshot(upstream.tree) == before
    assert backups(upstream) == []
    lock.unlink()
    assert upstream.run("unpatch").code == 0


def test_a_git_command_started_while_unpatch_builds_is_exit_9_and_keeps_the_tree(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.tree)
    run = start_paused(unpatch_args(upstream), "unpatch:before-swap", tmp_path / "pause")
    ref_lock = upstream.tree / ".git" / "refs" / "heads" / "devA.lock"
    ref_lock.write_bytes(b"")
    code, stderr = resume(run, tmp_path / "pause")
    assert code == 9, stderr
    assert error_lines(stderr) == lock_error(upstream.tree, ".git/refs/heads/devA.lock")
    assert ref_lock.is_file() and snapshot(upstream.tree) == before
    assert sorted(os.listdir(upstream.build / "devA")) == [".patchtool.lock", "demo"]


# --------------------------------------------------------------------------- section 6

MARKER = "PRIVATE-MARKER-scratch-under-the-cache"


@pytest.fixture
def private(upstream: SyntheticUpstream, tmp_path: Path) -> Path:
    """devA with one recipient and a series whose one patch is private; returns
    the identity that opens it."""
    identity = pyrage.x25519.Identity.generate()
    key = tmp_path / "ci.key"
    key.write_text(f"{identity}\n")
    device = upstream.store / "devA" / "device.toml"
    device.write_text(device.read_text() + f'\n[private.recipients]\nci = "{identity.to_public()}"\n')
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "secret.py").write_text(f"PATH = '{MARKER}'\n")
    commit_all(upstream.tree, "Add the secret path", "The hardware is not announced yet.\n\n"
               "Upstream-Status: Inappropriate [not yet announced]\nPatchtool-Private: yes")  # fmt: skip
    assert upstream.run("patch").code == 0
    assert [p.name for p in upstream.base_folder.glob("*.age")] == ["add-the-secret-path.patch.age"]
    return key


def holding_the_marker(*roots: Path) -> list[str]:
    return sorted(str(path) for root in roots for path in root.rglob("*")
                  if path.is_file() and not path.is_symlink()
                  and MARKER.encode() in path.read_bytes())  # fmt: skip


def check_args(world: SyntheticUpstream, key: Path) -> list[str]:
    return ["--store", str(world.store), "check", "--device-type", "devA", "--identity", str(key)]


@pytest.fixture
def temporary(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def test_check_killed_while_it_applies_a_private_patch_leaves_nothing_in_tmp(
    upstream: SyntheticUpstream, private: Path, tmp_path: Path, temporary: Path,
    hermetic_seal: Path,
) -> None:  # fmt: skip
    scratch = hermetic_seal / "patchtool-cache" / "scratch"
    env = {"TMPDIR": str(temporary)}
    run = start_paused(check_args(upstream, private), "apply:applied", tmp_path / "pause", env)
    run.send_signal(signal.SIGKILL)
    run.communicate()
    assert run.returncode == -9
    assert os.listdir(temporary) == []
    # The dead run's scratch is under the cache, where the next run finds it.
    [dead] = [p for p in scratch.iterdir() if p.is_dir()]
    assert dead.name.startswith("check-")
    assert holding_the_marker(scratch) == [str(dead / "demo" / "secret.py")]
    again = run_cli(*check_args(upstream, private), env=env)
    assert again.code == 0, again.output
    assert os.listdir(scratch) == []
    assert os.listdir(temporary) == []
    assert holding_the_marker(hermetic_seal / "patchtool-cache", temporary) == []


def test_check_stopped_by_sigterm_removes_its_scratch_and_says_so(
    upstream: SyntheticUpstream, private: Path, tmp_path: Path, temporary: Path,
    hermetic_seal: Path,
) -> None:  # fmt: skip
    scratch = hermetic_seal / "patchtool-cache" / "scratch"
    env = {"TMPDIR": str(temporary)}
    run = start_paused(check_args(upstream, private), "apply:applied", tmp_path / "pause", env)
    run.send_signal(signal.SIGTERM)
    code, stderr = resume(run, tmp_path / "pause")
    assert code == 143, stderr
    assert error_lines(stderr) == [
        "error: stopped by SIGTERM",
        "hint: What the run had started was cleaned up; run the same command again.",
    ]
    assert os.listdir(scratch) == []
    assert os.listdir(temporary) == []
    assert holding_the_marker(hermetic_seal / "patchtool-cache", temporary) == []


def test_a_live_checks_scratch_is_left_alone_by_another_check(
    upstream: SyntheticUpstream, private: Path, tmp_path: Path, temporary: Path,
    hermetic_seal: Path,
) -> None:  # fmt: skip
    scratch = hermetic_seal / "patchtool-cache" / "scratch"
    env = {"TMPDIR": str(temporary)}
    first = start_paused(check_args(upstream, private), "apply:applied", tmp_path / "pause", env)
    [live] = [p for p in scratch.iterdir() if p.is_dir()]
    second = run_cli(*check_args(upstream, private), env=env)
    assert second.code == 0, second.output
    assert [p for p in scratch.iterdir() if p.is_dir()] == [live]
    assert (live / "demo" / "secret.py").read_text() == f"PATH = '{MARKER}'\n"
    code, stderr = resume(first, tmp_path / "pause")
    assert code == 0, stderr
    assert os.listdir(scratch) == []
    assert os.listdir(temporary) == []


def test_an_import_killed_with_a_change_on_disk_leaves_it_in_the_build_folder_only(
    upstream: SyntheticUpstream, tmp_path: Path, temporary: Path
) -> None:
    assert upstream.run("unpatch").code == 0
    mbox = tmp_path / "secret.mbox"
    mbox.write_text(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: A <a@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
        "Subject: [PATCH] Add the secret path\n\nNot announced yet.\n---\n"
        "diff --git a/secret.py b/secret.py\nnew file mode 100644\n--- /dev/null\n"
        f"+++ b/secret.py\n@@ -0,0 +1 @@\n+PATH = '{MARKER}'\n"
    )
    env = {"TMPDIR": str(temporary)}
    killed = upstream.run("import", str(mbox), env={**env, VARIABLE: "import:change-written"})
    assert killed.code == -9
    assert os.listdir(temporary) == []
    scratch = upstream.build / "devA" / ".patchtool-scratch"
    [dead] = [p.name for p in scratch.iterdir() if p.is_dir()]
    assert dead.startswith("import-")
    assert holding_the_marker(upstream.build / "devA") == [
        str(scratch / dead / p.name / "00001.patch") for p in (scratch / dead).iterdir()
        if p.name.startswith("changes-")
    ]  # fmt: skip
    # Any command on the device removes a dead import's scratch, and says so.
    again = upstream.run("unpatch", env=env)
    assert again.code == 0, again.output
    assert again.stderr.splitlines() == [
        f"removing .patchtool-scratch/{dead}, left by an interrupted run",
        *run_lines(upstream),
    ]
    assert os.listdir(scratch) == []
    assert holding_the_marker(upstream.build / "devA", temporary) == []
