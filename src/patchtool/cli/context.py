"""What every command starts from: the global options as given, and what follows
from them and the working folder (the build tree around it, the store, the build
folder, the device, the base cache, the reporter).

Set by the app's root callback (cli/app.py) before a command runs; read by the
commands of cli/. It prints nothing itself.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchtool.core.report import RichReporter

if TYPE_CHECKING:
    from patchtool.cli.whereabouts import Here
    from patchtool.sources.cache import BaseCache
    from patchtool.store.resolve import Store


@dataclass
class GlobalOptions:
    store: Path | None = None
    cache_dir: Path | None = None
    debug: bool = False
    quiet: bool = False


# The global options of the run in progress (one run at a time per process).
global_options = GlobalOptions()


def reporter() -> RichReporter:
    return RichReporter(quiet=global_options.quiet)


@functools.lru_cache(maxsize=1)
def tree_here() -> Here | None:
    """The build tree around the working folder, read once per run (main() clears it)."""
    from patchtool.cli.whereabouts import tree_around, working_folder

    return tree_around(working_folder())


def store() -> Store:
    from patchtool.cli.whereabouts import store_for, working_folder

    return store_for(working_folder(), global_options.store, tree_here())


def build_dir(given: Path | None, found_store: Store) -> Path:
    from patchtool.cli.whereabouts import build_dir_for

    return build_dir_for(given, found_store, tree_here())


@dataclass(frozen=True)
class DeviceContext:
    reporter: RichReporter
    store: Store
    build_dir: Path
    device: str
    given_dir: Path | None = None  # --dir as typed, for hints that name a command


def device_context(
    device: str | None, given_dir: Path | None, must_exist: bool = True
) -> DeviceContext:
    """What every per-device command starts with: the device name checked (and,
    unless it is being created, found in the store before the lock creates
    DIR/<device>), the store, and the build folder checked."""
    from patchtool.cli.whereabouts import device_for

    found_store = store()
    name = device_for(device, tree_here(), found_store if must_exist else None)
    if must_exist:
        found_store.device(name)
    return DeviceContext(
        reporter(), found_store, build_dir(given_dir, found_store), name, given_dir
    )


def cache() -> BaseCache:
    from patchtool.sources.cache import BaseCache, cache_root

    return BaseCache(cache_root(global_options.cache_dir))


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
