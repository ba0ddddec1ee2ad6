"""Killed runs, concurrent runs, a full disk and a read-only store: nothing is lost
or half-written, and the next run works without manual clean-up."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import SyntheticUpstream, commit_all, error_lines, git, kill_points, snapshot

from patchtool.core.faults import VARIABLE

UNPATCH_POINTS = ["unpatch:checked-out", "unpatch:applied", "unpatch:before-swap",
                  "unpatch:swapped"]  # fmt: skip
EXPORT_POINTS = ["patch:export:staged-unchanged", "patch:export:wrote-patch",
                 "patch:export:before-exchange", "patch:export:after-exchange",
                 "patch:export:written"]  # fmt: skip
WHEEL_POINTS = ["build-wheel:built", "build-wheel:moved"]

# Every run here is a process of its own (the `upstream` world's default): killed at
# a point, or holding a lock another process waits for.


def tree_state(tree: Path) -> tuple[dict[str, bytes], str, str]:
    return snapshot(tree), git(tree, "rev-parse", "HEAD"), git(tree, "show-ref")


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


def leftovers(world: SyntheticUpstream) -> list[str]:
    found = [p.name for p in (world.build / "devA").iterdir()
             if p.name.startswith((".patchtool-stage-", ".patchtool-wheel-"))]
    found += [p.name for p in (world.store / "devA").iterdir() if p.name.startswith(".")]
    return found


def exported_world(world: SyntheticUpstream) -> None:
    assert world.run("unpatch").code == 0
    (world.tree / "first.txt").write_text("first\n")
    commit_all(world.tree, "Add first")
    assert world.run("patch").code == 0


@pytest.mark.parametrize("point", kill_points(UNPATCH_POINTS))
def test_unpatch_killed_at_any_point_keeps_the_previous_tree(upstream: SyntheticUpstream,
                                                             point: str) -> None:
    exported_world(upstream)
    old = tree_state(upstream.tree)
    # The store moves on: a second patch the old tree does not have.
    (upstream.tree / "second.txt").write_text("second\n")
    commit_all(upstream.tree, "Add second")
    assert upstream.run("patch").code == 0
    git(upstream.tree, "reset", "--quiet", "--hard", "HEAD~1")
    old = tree_state(upstream.tree)
    store = folder_bytes(upstream.store)

    killed = upstream.run("unpatch", env={VARIABLE: point})
    assert killed.code == -9
    assert folder_bytes(upstream.store) == store
    state = tree_state(upstream.tree)
    if point == "unpatch:swapped":
        assert (upstream.tree / "second.txt").read_text() == "second\n"  # whole new tree
    else:
        assert state == old

    again = upstream.run("unpatch", "--force")
    assert again.code == 0, again.output
    assert (upstream.tree / "second.txt").read_text() == "second\n"
    assert leftovers(upstream) == []


@pytest.mark.parametrize("point", kill_points(EXPORT_POINTS))
def test_patch_killed_at_any_point_leaves_old_or_new_store(upstream: SyntheticUpstream,
                                                           point: str) -> None:
    exported_world(upstream)
    before = folder_bytes(upstream.base_folder)
    (upstream.tree / "first.txt").write_text("first, changed\n")
    (upstream.tree / "extra.txt").write_text("extra\n")
    commit_all(upstream.tree, "Change first and add extra")
    killed = upstream.run("patch", env={VARIABLE: point})
    assert killed.code == -9
    during = folder_bytes(upstream.base_folder)
    again = upstream.run("patch")
    assert again.code == 0, again.output
    after = folder_bytes(upstream.base_folder)
    assert during in (before, after)
    assert during == (after if point.endswith(("after-exchange", "written")) else before)
    assert leftovers(upstream) == []
    assert upstream.run("patch", "--check").code == 0


@pytest.fixture
def buildable(upstream: SyntheticUpstream) -> SyntheticUpstream:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "env.sh").write_text("export DEMO_ENV=1\n")
    commit_all(upstream.tree, "Add env.sh")
    assert upstream.run("patch").code == 0
    return upstream


@pytest.mark.parametrize("point", kill_points(WHEEL_POINTS))
def test_build_wheel_killed_leaves_no_partial_wheel(buildable: SyntheticUpstream,
                                                    point: str) -> None:
    out = buildable.root / "out"
    store = folder_bytes(buildable.store)
    tree = tree_state(buildable.tree)
    killed = buildable.run("build-wheel", "--out", str(out), env={VARIABLE: point})
    assert killed.code == -9
    wheels = sorted(p.name for p in out.glob("*.whl"))
    assert wheels == ([] if point == "build-wheel:built" else ["demo-1.0-py3-none-any.whl"])
    assert not list(out.glob("*.tmp"))
    assert folder_bytes(buildable.store) == store and tree_state(buildable.tree) == tree
    again = buildable.run("build-wheel", "--out", str(out))
    assert again.code == 0, again.output
    assert "reusing" not in again.stderr  # the killed run recorded no success
    assert (out / "demo-1.0-py3-none-any.whl.provenance.json").is_file()
    assert leftovers(buildable) == []


def test_second_run_waits_for_the_lock_or_fails_with_no_wait(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    lock = FileLock(str(upstream.build / "devA" / ".patchtool.lock"))
    device_dir = upstream.build / "devA"
    with lock:
        refused = upstream.run("patch", "--no-wait")
        assert refused.code == 9
        assert error_lines(refused) == [
            f"error: another patchtool run holds the lock on {device_dir}",
            "hint: Wait for it to finish, or run without --no-wait to queue behind it.",
        ]
        waiting = subprocess.Popen(
            [sys.executable, "-m", "patchtool", "--store", str(upstream.store), "patch",
             "--device-type", "devA", "--dir", str(upstream.build)],
            stderr=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ.copy(),
        )  # fmt: skip
        # The run says so right before it blocks on the lock.
        said = read_stderr_until(waiting, b"waiting for another patchtool run")
        assert waiting.poll() is None  # still queued behind the lock
    _, stderr = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, said + stderr
    assert f"waiting for another patchtool run on {device_dir} to finish".encode() in said


def read_stderr_until(process: subprocess.Popen[bytes], text: bytes,
                      timeout: float = 60) -> bytes:  # fmt: skip
    """What `process` wrote on stderr up to and including `text` (the rest stays in
    the pipe for `communicate`); fails if `text` does not come within `timeout` s."""
    assert process.stderr is not None
    descriptor = process.stderr.fileno()
    deadline = time.monotonic() + timeout
    seen = b""
    while text not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"{text!r} did not come within {timeout} s; stderr so far: {seen!r}"
        if select.select([descriptor], [], [], left)[0]:
            chunk = os.read(descriptor, 65536)
            assert chunk, f"stderr closed before {text!r} (exit {process.wait()}): {seen!r}"
            seen += chunk
    return seen


def _in_private_mount(world: SyntheticUpstream, script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` in a private mount namespace where the store lives on a small
    tmpfs; the mount vanishes with the namespace."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-euc", script],
        capture_output=True, text=True, check=False,
        env={**os.environ, "STORE": str(world.store), "BUILD": str(world.build),
             "PYTHON": sys.executable},
    )  # fmt: skip


SUM_STORE = "(cd \"$STORE\" && find . -type f -print0 | sort -z | xargs -0 sha256sum)"


def test_full_disk_during_export_is_a_clear_error_and_changes_nothing(
    upstream: SyntheticUpstream,
) -> None:
    exported_world(upstream)
    (upstream.tree / "big.bin").write_bytes(os.urandom(400_000))
    commit_all(upstream.tree, "Add a big binary")
    result = _in_private_mount(upstream, f"""
        cp -a "$STORE" "$STORE.orig"
        mount -t tmpfs -o size=256k tmpfs "$STORE"
        cp -a "$STORE.orig/." "$STORE/"
        {SUM_STORE} > /tmp/before.$$
        set +e
        "$PYTHON" -m patchtool --store "$STORE" patch --device-type devA --dir "$BUILD"
        echo "exit=$?"
        set -e
        {SUM_STORE} > /tmp/after.$$
        cmp /tmp/before.$$ /tmp/after.$$ && echo unchanged
        ls -a "$STORE/devA"
    """)  # fmt: skip
    assert "exit=6" in result.stdout, result.stdout + result.stderr
    assert "No space left on device" in result.stderr
    assert "add-a-big-binary.patch" in result.stderr
    assert "unchanged" in result.stdout
    assert ".demo-1.0.patchtool-export" not in result.stdout


def test_read_only_store_is_a_clear_error(upstream: SyntheticUpstream) -> None:
    exported_world(upstream)
    (upstream.tree / "more.txt").write_text("more\n")
    commit_all(upstream.tree, "Add more")
    result = _in_private_mount(upstream, f"""
        cp -a "$STORE" "$STORE.orig"
        mount -t tmpfs tmpfs "$STORE"
        cp -a "$STORE.orig/." "$STORE/"
        mount -o remount,ro "$STORE"
        {SUM_STORE} > /tmp/before.$$
        set +e
        "$PYTHON" -m patchtool --store "$STORE" patch --device-type devA --dir "$BUILD"
        echo "exit=$?"
        set -e
        {SUM_STORE} > /tmp/after.$$
        cmp /tmp/before.$$ /tmp/after.$$ && echo unchanged
    """)  # fmt: skip
    assert "exit=6" in result.stdout, result.stdout + result.stderr
    assert "Read-only file system" in result.stderr
    assert str(upstream.store / "devA") in result.stderr
    assert "unchanged" in result.stdout
