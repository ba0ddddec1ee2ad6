"""Where a command runs: the build tree around the working folder, and the
store, build folder and device that follow from it.

Anywhere inside a build tree, commands take the device, the build folder and
the store from the tree's record; elsewhere the store is `patches/` in the
working folder or above (or --store), and the build folder is `build/` beside
that `patches/` (or --dir). A --dir inside a build tree is refused: trees never
nest.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import IntegrityError, NotFoundError, UnsafeInputError, UsageError
from patchtool.core.fsutil import check_build_dir, check_name
from patchtool.store.resolve import Store, find_store
from patchtool.trees.record import TreeRecord, enclosing_tree, read_record
from patchtool.trees.staging import PREVIOUS_PREFIX, backup_made, is_backup


def working_folder() -> Path:
    """The working folder, or a clear error when it no longer exists.

    `unpatch` and `rebase` replace a build tree as a whole (built aside, then
    swapped in), so a shell that was inside the old tree is left in a removed
    folder; the next command would otherwise die on os.getcwd()."""
    try:
        return Path.cwd()
    except FileNotFoundError:
        shown = os.environ.get("PWD", "")
        replaced = bool(shown) and Path(shown).is_dir()
        raise NotFoundError(
            "the working folder no longer exists" + (f": {shown}" if shown else ""),
            hint=(
                "A command replaced it (unpatch and rebase swap a build tree in whole): "
                f"`cd {shlex.quote(shown)}` enters the new one."
                if replaced
                else "cd into an existing folder and run the command again."
            ),
        ) from None


@dataclass(frozen=True)
class Here:
    """The build tree a command runs in (the working folder is inside it)."""

    tree: Path
    record: TreeRecord


def tree_around(folder: Path) -> Here | None:
    tree = enclosing_tree(folder)
    if tree is None:
        return None
    if tree.parent.name.startswith(PREVIOUS_PREFIX):
        # A shell that was inside a tree unpatch replaced: the old tree is set
        # aside (unpatch never removes it in the same run), under a name that
        # is no place to work in.
        shown = os.environ.get("PWD", "")
        new = bool(shown) and Path(shown).is_dir() and enclosing_tree(Path(shown)) != tree
        raise NotFoundError(
            f"the working folder is inside a build tree that unpatch replaced: {tree}",
            hint=(f"`cd {shlex.quote(shown)}` enters the new one. " if new else "")
            + "The old one is removed by the next run on the device, or moved to backups/ "
            "if anything was written in it.",
        )
    try:
        record = read_record(tree)
    except (NotFoundError, IntegrityError):
        # A damaged record: commands then need -d, --dir and --store, as outside.
        return None
    if is_backup(tree):
        raise in_a_backup(tree, record)
    return Here(tree, record)


def in_a_backup(backup: Path, record: TreeRecord) -> NotFoundError:
    """A command run inside `<dir>/<device>/backups/<name>`: where the device's tree
    is. Raised before any lock is taken, so the run writes nothing."""
    device_dir = backup.parent.parent
    tree = device_dir / record.project
    made = backup_made(backup) or "at a time its name does not say"
    where = (
        f"the tree is at {tree}"
        if (tree / ".git").is_dir()
        else f"the device has no tree now (`patchtool unpatch -d {record.device}` makes one "
        f"at {tree})"
    )
    return NotFoundError(
        f"this is a backup of the build tree of {record.device}, made {made}; {where}",
        hint=f"`cd {shlex.quote(str(tree))}` to work in the tree: commands do not run in a "
        "backup, which is yours to compare with, take commits from (`git fetch "
        f"{shlex.quote(str(backup))} HEAD` in the tree, then cherry-pick) or remove.",
    )


def store_for(cwd: Path, explicit: Path | None, here: Here | None) -> Store:
    """--store; else the store the tree we are in was made from; else patches/ above."""
    if explicit is None and here is not None and here.record.store:
        recorded = Path(here.record.store)
        if not recorded.is_dir():
            raise NotFoundError(
                f"the build tree {here.tree} was made from the store {recorded}, "
                "which no longer exists",
                hint="Pass the store with --store.",
            )
        return find_store(cwd, recorded)
    return find_store(cwd, explicit)


def build_dir_for(build_dir: Path | None, store: Store, here: Here | None) -> Path:
    """--dir; else the build folder of the tree we are in; else build/ beside the store."""
    if build_dir is None and here is not None:
        build_dir = here.tree.parent.parent
    elif build_dir is None:
        build_dir = store.root.parent / "build"
        # Found, not chosen (as a linked patches/ found by searching): a `build`
        # link that comes with a pull request would send trees anywhere.
        if build_dir.is_symlink():
            raise UnsafeInputError(
                f"the build folder {build_dir} is a symlink; patchtool does not follow a "
                "linked build folder it finds",
                hint="Replace the link by a folder, or pass --dir to build there on purpose.",
            )
    else:
        inside = enclosing_tree(build_dir.resolve())
        if inside is not None:
            raise UsageError(
                f"--dir {build_dir} lies inside the build tree {inside}",
                hint="Trees do not nest: leave out --dir to use the tree's own build folder "
                f"({inside.parent.parent}).",
            )
    return check_build_dir(build_dir, [store.root, store.root.parent])


def device_for(device: str | None, here: Here | None, store: Store | None) -> str:
    """--device-type, else the device of the build tree we are in, else the store's
    one device (`store`: None where a device is being created, which must be named)."""
    if device is None:
        if here is not None:
            device = here.record.device
        elif store is not None:
            device = sole_device(store, "no device named and not inside a build tree")
        else:
            raise UsageError(
                "no device named and not inside a build tree",
                hint="Pass --device-type NAME (`patchtool list` shows the devices), or run "
                "the command from inside a build tree.",
            )
    return check_name("device", device)


def sole_device(store: Store, why: str) -> str:
    """The device a command takes when none is named and no tree says which: the
    store's only one. With several (or none), `why` starts the error, which lists
    them: the one rule for every command (`check -c` included)."""
    names = store.device_names()
    if len(names) == 1:
        return names[0]
    if not names:
        raise UsageError(
            f"{why}, and the store {store.root} has no devices",
            hint="Create one with `patchtool import --create --device-type NAME ...`.",
        )
    raise UsageError(
        f"{why}, and the store has {len(names)} devices: {', '.join(names)}",
        hint="Pass --device-type NAME, or run the command from inside a build tree.",
    )
