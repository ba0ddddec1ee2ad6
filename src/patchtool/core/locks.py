"""The two locks every command takes: one on the build folder, one on the store.

A device's build folder (`<dir>/<device>/`) and its store folder
(`patches/<device>/`) are each shared state: two build folders share one store,
and a build folder may be used by a run while another starts. So:

- `build_lock`: one run at a time per build folder and device (a lock file,
  `<dir>/<device>/.patchtool.lock`, in patchtool's own folder);
- `store_lock`: the store's device folder itself is locked (flock on the
  folder, so nothing is written into the store), exclusively by the commands
  that write the store (`patch`, `import`, `rebase`) and shared by those that
  only read it (`unpatch`, `check`, `build-wheel`).

`device_locks` takes both, always in that order, so two runs cannot deadlock.
Both are OS locks: a killed run releases them with its process. Each command
takes them itself, in its own function (commands/jobs.py), never the cli;
`check` takes the store's alone (it never touches a build folder).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from patchtool.core.errors import LockedError
from patchtool.core.fsutil import check_name
from patchtool.core.report import Reporter

LOCK_NAME = ".patchtool.lock"


@contextmanager
def build_lock(device_dir: Path, reporter: Reporter, wait: bool = True) -> Iterator[None]:
    """One run at a time per build folder and device."""
    from filelock import FileLock, Timeout

    device_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(device_dir / LOCK_NAME))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise LockedError(
                f"another patchtool run holds the lock on {device_dir}",
                hint="Wait for it to finish, or run without --no-wait to queue behind it.",
            ) from None
        reporter.step(f"waiting for another patchtool run on {device_dir} to finish")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


@contextmanager
def store_lock(
    store_root: Path, device: str, exclusive: bool, reporter: Reporter, wait: bool = True
) -> Iterator[None]:
    """The store's lock for one device: its folder under the store's root
    `store_root` (the root itself while the device is still being created)."""
    folder = store_root / check_name("device", device)
    if not folder.is_dir() or folder.is_symlink():
        folder = store_root
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockedError(
                    f"another patchtool run is {'using' if exclusive else 'writing'} "
                    f"the store's folder {folder}",
                    hint="Wait for it to finish, or run without --no-wait to queue behind it.",
                ) from None
            reporter.step(f"waiting for another patchtool run on {folder} to finish")
            fcntl.flock(fd, mode)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


@contextmanager
def device_locks(
    build_dir: Path,
    store_root: Path,
    device: str,
    reporter: Reporter,
    *,
    writes_store: bool,
    wait: bool = True,
) -> Iterator[None]:
    """The build folder's lock, then the store's (exclusive when the command
    writes the store)."""
    with (
        build_lock(build_dir / check_name("device", device), reporter, wait),
        store_lock(store_root, device, writes_store, reporter, wait),
    ):
        yield
