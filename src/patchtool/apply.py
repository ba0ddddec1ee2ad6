"""`unpatch`: a build tree from an upstream base and a device's series, atomically.

The tree is built aside in a staging folder under `<dir>/<device>/`: a local
clone of the cached base (objects hard-linked or copied, so it keeps working
when the cache is deleted), the base commit marked, then the series applied
with `git am`, no fuzz. Only when every patch applied is it swapped into place,
with one atomic `renameat2(RENAME_EXCHANGE)` where the kernel offers it. A
failure or an interrupt leaves the previous tree exactly as it was.

A tree that holds work found nowhere else is never replaced without `--force`,
and then it is moved to `<dir>/<device>/backups/`, never deleted.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .buildtree import (
    BASE_REF,
    BASE_TAG,
    TreeLocation,
    TreeRecord,
    backup_path,
    discard,
    new_stage,
    read_record,
    recover_interrupted,
    write_record,
)
from .errors import ConflictError, DirtyTreeError, NotFoundError, PatchtoolError
from .export import tree_work
from .faults import kill_point
from .fsutil import exchange_paths
from .gitops import Git, tool_identity
from .report import Reporter
from .safety import check_series, tree_symlinks
from .store import BaseRef, DeviceConfig, PatchSeries, Store, parse_series
from .upstream import BaseCache, ensure_base


@dataclass(frozen=True)
class UnpatchOptions:
    store: Store
    build_dir: Path
    device: str
    cache: BaseCache
    commit_id: str | None = None
    force: bool = False
    three_way: bool = False
    archive_paths: tuple[Path, ...] = ()


@dataclass
class UnpatchResult:
    tree: Path
    base: BaseRef
    applied: list[str]
    three_way: list[str] = field(default_factory=list)
    backup: Path | None = None
    replaced: bool = False


def unpatch(options: UnpatchOptions, reporter: Reporter) -> UnpatchResult:
    """Build the device's tree (the caller holds the device lock)."""
    device: DeviceConfig = options.store.device(options.device)
    base = options.store.resolve_base(device.name, options.commit_id)
    series = parse_series(base)
    location = TreeLocation(options.build_dir, device.name, base.project)
    recover_interrupted(location.device_dir, reporter)
    target = location.tree

    work_to_keep = _existing_work(target, options.store, device.name)
    if work_to_keep and not options.force:
        raise DirtyTreeError(
            f"the build tree {target} holds work that exists nowhere else:\n  {work_to_keep}",
            hint=f"Export it with `patchtool patch --device-type {device.name}` (commit first, "
            "or use -m), or pass --force to move the old tree to a backup folder.",
        )

    cache_repository = ensure_base(base, options.cache, reporter, options.archive_paths)
    stage = new_stage(location.device_dir)
    try:
        tree = stage / base.project
        reporter.step(f"checking out {base.label} ({base.commit[:12]})")
        _checkout_base(cache_repository, tree, base, device.name)
        kill_point("unpatch:checked-out")
        # safety: refuse hostile or corrupt patches before git am reads them
        check_series(series, tree_symlinks(Git(tree)))
        reporter.step(f"applying {len(series.entries)} patch(es) from {base.path}")
        three_way = _apply_series(tree, series, options.three_way, reporter)
        kill_point("unpatch:applied")
        write_record(
            tree,
            TreeRecord(device.name, base.base_id, base.project, base.version, base.commit),
        )
        backup = None
        kill_point("unpatch:before-swap")
        if target.exists() or target.is_symlink():
            if work_to_keep:
                backup = backup_path(location.device_dir, base.project)
                backup.parent.mkdir(parents=True, exist_ok=True)
                os.rename(target, backup)
                os.rename(tree, target)
            else:
                exchange_paths(tree, target)
        else:
            os.rename(tree, target)
        replaced = backup is not None or tree.exists()
        kill_point("unpatch:swapped")
    except BaseException:
        # A failed run cleans up before it reports, so that it leaves nothing behind.
        shutil.rmtree(stage, ignore_errors=True)
        raise
    # On success the stage holds the replaced tree: let it go in the background.
    discard(stage)
    return UnpatchResult(
        tree=target,
        base=base,
        applied=series.names,
        three_way=three_way,
        backup=backup,
        replaced=replaced,
    )


def _existing_work(target: Path, store: Store, device: str) -> str:
    """Describe work in an existing tree that the store does not hold ('' if none)."""
    if not (target.exists() or target.is_symlink()):
        return ""
    if target.is_symlink() or not target.is_dir():
        return f"{target} is not a folder patchtool made"
    try:
        record = read_record(target)
    except NotFoundError:
        return f"{target} is not a patchtool build tree (no .git/patchtool.json)"
    git = Git(target)
    try:
        base: BaseRef | None = store.resolve_base(device, record.base_id)
    except PatchtoolError:
        base = None
    try:
        work = tree_work(git, base, record.base_commit)
    except PatchtoolError as error:
        return f"its state could not be read ({error.message})"
    return work.describe() if work else ""


def _checkout_base(cache_repository: Path, tree: Path, base: BaseRef, branch: str) -> None:
    outer = Git(tree.parent)
    outer.run(
        "clone",
        "--quiet",
        "--local",
        "--no-checkout",
        "--no-tags",
        str(cache_repository),
        str(tree),
    )
    git = Git(tree)
    git.run("remote", "remove", "origin")
    # Unreferenced objects of other bases came along with the hard-linked packs;
    # they cost no space and are dropped by the user's next gc.
    git.run("update-ref", BASE_REF, base.commit)
    git.run("tag", BASE_TAG, base.commit)
    git.run("checkout", "--quiet", "-b", branch, base.commit)
    for ref in git.lines(
        "for-each-ref", "--format=%(refname)", "refs/remotes", "refs/patchtool/bases"
    ):
        git.run("update-ref", "-d", ref)


def _apply_series(
    tree: Path, series: PatchSeries, three_way: bool, reporter: Reporter
) -> list[str]:
    """Apply every patch with git am; return the patches that needed a 3-way merge."""
    git = Git(tree, env=tool_identity("1970-01-01T00:00:00Z"))
    paths = [str(p) for p in series.paths()]
    if not paths:
        return []
    # Hooks are off through core.hooksPath (gitops); `am --no-verify` needs git 2.40.
    am = ("am", "--keep-cr", "--committer-date-is-author-date")
    if not three_way:
        result = git.run(*am, "--quiet", "--no-3way", *paths, check=False)
        if result.returncode != 0:
            _raise_conflict(git, series, result.stderr)
        return []
    needed: list[str] = []
    for entry, path in zip(series.entries, paths, strict=True):
        # Not --quiet: the "Falling back to ... 3-way merge" line is what we report.
        result = git.run(*am, "--3way", path, check=False)
        if result.returncode != 0:
            _raise_conflict(git, series, result.stderr)
        if "3-way merge" in result.stderr or "3-way merge" in result.text:
            needed.append(entry.name)
            reporter.warn(f"{entry.name} needed a 3-way merge")
    return needed


_FAILED = re.compile(r"^error: patch failed: (?P<path>.+):(?P<line>\d+)$", re.M)
_NOT_APPLY = re.compile(
    r"^error: (?P<path>.+): (?P<why>patch does not apply|does not exist in index|"
    r"already exists in (?:index|working directory)|No such file or directory)$",
    re.M,
)


def _raise_conflict(git: Git, series: PatchSeries, am_stderr: str) -> None:
    applied = int(git.text("rev-list", "--count", f"{BASE_REF}..HEAD"))
    entry = series.entries[applied]
    patch_path = series.base.path / entry.name
    git.run("am", "--abort", check=False)
    check = git.run("apply", "--check", "--verbose", str(patch_path), check=False)
    details = describe_failure(patch_path, check.stderr if check.returncode else am_stderr)
    raise ConflictError(
        f"patch {entry.name} (series line {entry.line}, patch {applied + 1} of "
        f"{len(series.entries)}) does not apply to {series.base.label} "
        f"({series.base.commit[:12]}):\n{details}",
        hint="Refresh the patch against this base, or retry with --3way to let git merge it. "
        "The previous build tree, if any, is unchanged.",
    )


def describe_failure(patch_path: Path, stderr: str) -> str:
    """Name the files and hunks git rejected, with the text it searched for."""
    hunks_by_file: dict[str, list[tuple[int, str]]] = {}
    try:
        from unidiff.patch import PatchSet

        for patched in PatchSet(patch_path.read_text("utf-8", "surrogateescape")):
            hunks_by_file[patched.path] = [
                (
                    h.source_start,
                    f"#{i} @@ -{h.source_start},{h.source_length} "
                    f"+{h.target_start},{h.target_length} @@"
                    + (f" {h.section_header}" if h.section_header else ""),
                )
                for i, h in enumerate(patched, start=1)
            ]
    except Exception:
        hunks_by_file = {}
    lines = []
    searched = re.findall(r"error: while searching for:\n(.*?)\n(?=error:)", stderr, re.S)
    for number, match in enumerate(_FAILED.finditer(stderr)):
        path, line = match["path"], int(match["line"])
        hunk = next(
            (label for start, label in hunks_by_file.get(path, []) if start == line),
            f"at line {line}",
        )
        lines.append(f"  {path}: hunk {hunk} does not match the base")
        if number < len(searched):
            context = searched[number].splitlines()[:8]
            lines.extend("      | " + text for text in context)
    for match in _NOT_APPLY.finditer(stderr):
        if match["why"] != "patch does not apply":
            lines.append(f"  {match['path']}: {match['why']}")
    if not lines:
        tail = [line for line in stderr.strip().splitlines() if line][-6:]
        lines = ["  " + line for line in tail] or ["  git gave no reason"]
    return "\n".join(lines)
