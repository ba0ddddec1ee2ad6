"""What every command is given, shared by the commands' options dataclasses.

    Job              the store, and the identity that opens private patches
    DeviceJob        ... one device and its build folder, and whether to wait for
                     its locks (patch, build-wheel)
    CacheJob         ... the base cache and local sdists (check, import --flagscale)
    CachedDeviceJob  both (unpatch, rebase, import)

All are keyword-only, so a command's own fields (with their defaults) follow
the shared ones in any order.

Locks are taken at one level: by each command's own function, around all it
does (core.locks.device_locks; `import --flagscale` per device as it comes to
it, and `check`, which never touches a build folder, the store's lock alone,
shared, per device). The cli takes none.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchtool.series.privacy import Keyring
from patchtool.sources.cache import BaseCache
from patchtool.store.resolve import Store


@dataclass(frozen=True, kw_only=True)
class Job:
    store: Store
    keyring: Keyring | None = None  # opens private patches (--identity, PATCHTOOL_IDENTITY)


@dataclass(frozen=True, kw_only=True)
class DeviceJob(Job):
    build_dir: Path
    device: str
    # The --dir as the user typed it (None: not given): hints that name a command
    # repeat it, so that the command they name finds the same build folder.
    given_dir: Path | None = None
    wait: bool = True  # queue behind another run holding the device's locks (not --no-wait)


@dataclass(frozen=True, kw_only=True)
class CacheJob(Job):
    cache: BaseCache
    archive_paths: tuple[Path, ...] = ()  # local sdists (--sdist), before any index


@dataclass(frozen=True, kw_only=True)
class CachedDeviceJob(DeviceJob, CacheJob):
    pass
