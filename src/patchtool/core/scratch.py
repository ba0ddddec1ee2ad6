"""Scratch folders outside any build folder, for the commands that need one and
hold no build folder's lock (`check`): under the cache, never in the shared
temporary folder, because a private patch's plaintext passes through them.

    <cache>/scratch/<prefix><pid>-<token>/        the folder
    <cache>/scratch/<prefix><pid>-<token>.lock    its lock, made first, flocked by its owner

The owner removes its folder when it is done, however it ends (an exception, or
SIGTERM, which cli turns into one). A folder whose owner was killed outright
(SIGKILL, the machine) keeps its plaintext until the next `scratch_folder` on
the same root: that call removes every folder whose lock no process holds. The
lock is an OS lock, so a dead owner's is free at once and a live owner's folder
is never touched.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from patchtool.core.fsutil import remove_tree

SCRATCH_FOLDER = "scratch"
LOCK_SUFFIX = ".lock"


def scratch_root(cache_root: Path) -> Path:
    return cache_root / SCRATCH_FOLDER


@contextlib.contextmanager
def scratch_folder(root: Path, prefix: str) -> Iterator[Path]:
    """A new folder under `root` (made 0700), locked for as long as it exists and
    removed when the block ends. Folders dead runs left under `root` are removed
    first."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    remove_dead_scratch(root)
    name = f"{prefix}{os.getpid()}-{secrets.token_hex(6)}"
    lock = root / (name + LOCK_SUFFIX)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        folder = root / name
        folder.mkdir(mode=0o700)
        try:
            yield folder
        finally:
            # The lock goes only with the folder: a folder that could not be
            # removed is tried again by the next run.
            if remove_tree(folder):
                lock.unlink(missing_ok=True)
    finally:
        os.close(fd)


def remove_dead_scratch(root: Path) -> list[str]:
    """Remove every scratch folder under `root` whose owner is gone; return their
    names. A folder without its lock file is an orphan too: the lock is made
    before the folder and removed after it."""
    removed: list[str] = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return removed
    names = set(entries)
    for entry in entries:
        if entry.endswith(LOCK_SUFFIX):
            folder = entry[: -len(LOCK_SUFFIX)]
            if _remove_if_unlocked(root, folder):
                removed.append(folder)
        elif (
            entry + LOCK_SUFFIX not in names
            and not (root / (entry + LOCK_SUFFIX)).exists()
            and remove_tree(root / entry)
        ):
            removed.append(entry)
    return removed


def _remove_if_unlocked(root: Path, name: str) -> bool:
    lock = root / (name + LOCK_SUFFIX)
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False  # gone meanwhile: its owner finished
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live run holds it
        if not remove_tree(root / name):
            return False
        lock.unlink(missing_ok=True)
        return True
    finally:
        os.close(fd)
