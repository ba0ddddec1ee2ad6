"""`unpatch`: a build tree from an upstream base and a device's series, atomically.

The tree is built aside, checked and swapped in by patchtool.trees.building
(`build_tree`); a tree that holds work found nowhere else is never replaced
without `--force`, and then it moves to `<dir>/<device>/backups/`.
"""

from __future__ import annotations

from dataclasses import dataclass

from patchtool.commands.jobs import CachedDeviceJob
from patchtool.core.report import Reporter
from patchtool.trees.building import BuiltTree, TreeBuild, build_tree


@dataclass(frozen=True, kw_only=True)
class UnpatchOptions(CachedDeviceJob):
    commit_id: str | None = None
    force: bool = False
    three_way: bool = False
    public_only: bool = False  # leave private patches out instead of needing a key


def unpatch(options: UnpatchOptions, reporter: Reporter) -> BuiltTree:
    """Build the device's tree (the caller holds the build folder's lock for the
    device and the store's lock, shared, for the device)."""
    return build_tree(
        TreeBuild(
            store=options.store,
            build_dir=options.build_dir,
            device=options.device,
            cache=options.cache,
            keyring=options.keyring,
            archive_paths=options.archive_paths,
            commit_id=options.commit_id,
            force=options.force,
            three_way=options.three_way,
            public_only=options.public_only,
        ),
        reporter,
    )
