"""A device's build tree from an upstream base and its series, built aside and swapped in.

The tree is built aside in a staging folder under `<dir>/<device>/`: a local
clone of the cached base (objects hard-linked or copied, so it keeps working
when the cache is deleted), the base commit marked, then the series applied
with `git am`, no fuzz. Only when every patch applied is it swapped into place,
with one atomic `renameat2(RENAME_EXCHANGE)` where the kernel offers it. A
failure or an interrupt leaves the previous tree exactly as it was.

A tree that holds work found nowhere else is never replaced without `--force`,
and then it is moved to `<dir>/<device>/backups/`, never deleted. That check is
made again right before the swap, together with the tree's whole state
(staging.TreeState: every file's stats, refs, index). The replaced tree is never
removed by the run that replaced it: one changed between the check and the
swap goes to `backups/` at once, any other is set aside as
`<dir>/<device>/.patchtool-previous-*` with its state, and the next run under
the device's lock removes it only if nothing was written in it since (a shell
still working in it, a commit that straddled the swap), else it moves it to
`backups/` and says so.

What the series may do is decided by git's own reading of it
(patchtool.series.safety): the base is judged from the cache before it is
checked out, the patches are applied by `git am` with git's own protections on,
and every commit it made is judged before the tree is swapped in.

`unpatch` is this and nothing more; `import` makes its tree here too when the
device's tree is missing, on another base or behind the store (the `unpatch:*`
kill and pause points fire for both).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from patchtool.core.errors import DirtyTreeError, IntegrityError, NotFoundError, UsageError
from patchtool.core.faults import kill_point, pause_point
from patchtool.core.fsutil import exchange_paths
from patchtool.core.gitops import Git
from patchtool.core.report import Reporter
from patchtool.series.privacy import Keyring, load_series, private_record
from patchtool.series.safety import TreeJudge
from patchtool.sources.bases import ensure_base
from patchtool.sources.cache import BaseCache
from patchtool.store.model import BaseRef, DeviceConfig
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series, series_digest
from patchtool.trees.applying import apply_series, checkout_base
from patchtool.trees.record import TreeLocation, TreeRecord, find_tree, read_record, write_record
from patchtool.trees.staging import (
    backup_path,
    new_stage,
    record_previous,
    recover_interrupted,
    set_aside,
    tree_state,
)
from patchtool.trees.work import existing_work


@dataclass(frozen=True, kw_only=True)
class TreeBuild:
    """What building a device's tree needs: the store, the build folder and the
    device, the base cache (and local sdists), the base (`base`: as
    --commit-id gives it; None: the existing tree's base, else the default), and
    how to build."""

    store: Store
    build_dir: Path
    device: str
    cache: BaseCache
    keyring: Keyring | None = None  # opens private patches
    archive_paths: tuple[Path, ...] = ()  # local sdists, before any index
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
    force: bool = False  # replace a tree that holds work (it goes to backups/)
    three_way: bool = False
    public_only: bool = False  # leave private patches out instead of needing a key


@dataclass
class BuiltTree:
    tree: Path
    base: BaseRef
    applied: list[str]
    skipped_private: list[str] = field(default_factory=list)
    three_way: list[str] = field(default_factory=list)
    backup: Path | None = None
    replaced: bool = False


def build_tree(request: TreeBuild, reporter: Reporter) -> BuiltTree:
    """Build the device's tree aside and swap it in (the caller holds the build
    folder's lock for the device and the store's lock, shared, for the device)."""
    device: DeviceConfig = request.store.device(request.device)
    current = _current_tree(request.build_dir, device.name)
    base = _choose_base(request, device, current, reporter)
    series = parse_series(base, device.limits)
    # Read (and decrypted) before anything is downloaded: a missing key fails fast.
    loaded = load_series(
        series, device.limits, request.keyring, device.recipients, request.public_only
    )
    if loaded.skipped:
        reporter.warn(
            f"left out {len(loaded.skipped)} private patch(es), as --public-only asks: "
            + ", ".join(e.name for e in loaded.skipped)
        )
    location = TreeLocation(request.build_dir, device.name, base.project)
    recover_interrupted(location.device_dir, reporter)
    target = location.tree
    if current is not None and current[0] == target and current[1].base_id != base.base_id:
        reporter.info(
            f"switching {target} from {current[1].base_id} ({current[1].version}) "
            f"to {base.base_id} ({base.version})"
        )

    # Checked now to fail fast, and again just before the swap (below).
    work_to_keep = existing_work(target, request.store, device.name, request.keyring)
    if work_to_keep and not request.force:
        raise _dirty(target, work_to_keep, device.name)

    cache_repository = ensure_base(
        base, request.cache, reporter, request.archive_paths, limits=device.limits
    )
    # The base is judged from the cache before any of it is checked out.
    judge = TreeJudge(Git(cache_repository), base.commit, f"base {base.label}")
    stage = new_stage(location.device_dir)
    replaced = target.exists() or target.is_symlink()
    try:
        tree = stage / base.project
        reporter.step(f"checking out {base.label} ({base.commit[:12]})")
        checkout_base(cache_repository, tree, base, device.name)
        kill_point("unpatch:checked-out")
        reporter.step(f"applying {len(loaded.patches)} patch(es) from {base.path}")
        three_way = apply_series(tree, loaded, judge, request.three_way, reporter)
        kill_point("unpatch:applied")
        private, private_ids = private_record(Git(tree), loaded.private_pairs())
        write_record(
            tree,
            TreeRecord(
                device.name,
                base.base_id,
                base.project,
                base.version,
                base.commit,
                series_digest(series),
                str(request.store.root),
                private=private,
                private_patch_ids=private_ids,
                skipped_private=tuple(e.name for e in loaded.skipped),
            ),
        )
        pause_point("unpatch:before-swap")
        kill_point("unpatch:before-swap")
        backup = _swap_in(tree, target, request, device.name, location, stage)
        kill_point("unpatch:swapped")
    finally:
        # Whatever happened, the stage goes, but for the tree it replaced (if it
        # holds it): that one is set aside for the next run to judge.
        set_aside(stage)
    pause_point("unpatch:set-aside")
    return BuiltTree(
        tree=target,
        base=base,
        applied=[p.entry.name for p in loaded.patches],
        skipped_private=[e.name for e in loaded.skipped],
        three_way=three_way,
        backup=backup,
        replaced=replaced,
    )


def _swap_in(
    tree: Path,
    target: Path,
    request: TreeBuild,
    device: str,
    location: TreeLocation,
    stage: Path,
) -> Path | None:
    """Put the new tree in place of the old one, atomically; return where the old
    one was kept, if it had to be (work found in it, or anything written in it
    between the last check and the swap). Otherwise the old tree is left in the
    stage with its state at the last check (staging.record_previous)."""
    if not (target.exists() or target.is_symlink()):
        os.rename(tree, target)
        return None
    # Re-verified right before the swap: work made in the tree while this run
    # built the new one must not be replaced unseen. Its state is taken before
    # the check (the index after it: `git status` may refresh it).
    before = tree_state(target)
    work_to_keep = existing_work(target, request.store, device, request.keyring)
    seen = None if before is None else before.with_index_of(target)
    if work_to_keep and not request.force:
        raise _dirty(target, work_to_keep, device)
    pause_point("unpatch:checked-again")
    if work_to_keep:
        backup = backup_path(location.device_dir, location.project)
        backup.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, backup)
        os.rename(tree, target)
        return backup
    record_previous(stage, target, seen)
    exchange_paths(tree, target)
    pause_point("unpatch:swapped")
    # The old tree now sits in the stage. Anything written in it since its state
    # was taken (an edit, a new file, a commit that straddled the swap) shows in
    # its state: keep it, then.
    if seen is None or tree_state(tree) != seen:
        backup = backup_path(location.device_dir, location.project)
        backup.parent.mkdir(parents=True, exist_ok=True)
        os.rename(tree, backup)
        return backup
    return None


def _current_tree(build_dir: Path, device: str) -> tuple[Path, TreeRecord] | None:
    """The device's build tree and its record, when there is exactly one that reads."""
    try:
        tree = find_tree(build_dir, device)
        return tree, read_record(tree)
    except (NotFoundError, IntegrityError, UsageError):
        return None


def _choose_base(
    request: TreeBuild,
    device: DeviceConfig,
    current: tuple[Path, TreeRecord] | None,
    reporter: Reporter,
) -> BaseRef:
    """--commit-id when given; else the existing tree's base (rebuilding a tree never
    moves it to another base unasked); else the device's default base."""
    if request.base is not None:
        return request.store.resolve_base(device.name, request.base)
    if current is not None:
        try:
            return request.store.resolve_base(device.name, current[1].base_id)
        except NotFoundError:
            reporter.warn(
                f"{current[0]} was made from base {current[1].base_id}, which the store no "
                "longer has; using the device's default base"
            )
    return request.store.resolve_base(device.name, None)


def _dirty(target: Path, work: str, device: str) -> DirtyTreeError:
    return DirtyTreeError(
        f"the build tree {target} holds work that exists nowhere else:\n  {work}",
        hint=f"Export it with `patchtool patch --device-type {device}` (commit first, "
        "or use -m), or pass --force to move the old tree to a backup folder.",
    )
