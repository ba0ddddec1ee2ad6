"""`unpatch`: a build tree from an upstream base and a device's series, atomically.

The tree is built aside, checked and swapped in by patchtool.trees.building
(`build_tree`); a tree that holds work found nowhere else is never replaced
without `--force`, and then it moves to `<dir>/<device>/backups/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchtool.commands.jobs import CachedDeviceJob
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.trees.building import BuiltTree, TreeBuild, build_tree


@dataclass(frozen=True, kw_only=True)
class UnpatchOptions(CachedDeviceJob):
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
    force: bool = False
    three_way: bool = False
    public_only: bool = False  # leave private patches out instead of needing a key


def unpatch(options: UnpatchOptions, reporter: Reporter) -> BuiltTree:
    """Build the device's tree, holding the build folder's lock for the device and
    the store's lock, shared, for the device."""
    with device_locks(
        options.build_dir,
        options.store.root,
        options.device,
        reporter,
        writes_store=False,
        wait=options.wait,
    ):
        return _unpatch(options, reporter)


def _unpatch(options: UnpatchOptions, reporter: Reporter) -> BuiltTree:
    return build_tree(
        TreeBuild(
            store=options.store,
            build_dir=options.build_dir,
            device=options.device,
            cache=options.cache,
            keyring=options.keyring,
            archive_paths=options.archive_paths,
            base=options.base,
            force=options.force,
            three_way=options.three_way,
            public_only=options.public_only,
        ),
        reporter,
    )
