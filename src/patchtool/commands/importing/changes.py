"""`import`: patches from outside (mail, plain diffs, quilt) into a device's series.

Each change of the input becomes one commit on top of the device's series in its
build tree, with the author, date and message the input carries (options fill
in what it lacks), and then one patch of the store, written by the export
pipeline that `patch` uses (series/pipeline.py, trees/export.py), so the store
only ever holds normalized format-patch files, byte for byte what `patch`
would write from the same tree.

Inputs understood:
- mbox files: one `git format-patch` file, many, or one `--stdout` stream of
  many (split with `git mailsplit`, read with `git mailinfo`);
- plain unified diffs, with or without `diff --git` headers (`diff -ruN`);
- quilt folders: a `series` file (or `--series FILE`) naming patches, with an
  optional `-pN` per line.
`-p N` strips leading path components, as `patch -p` and `git apply -p` do;
`--exclude GLOB` leaves file sections out (git apply's `--exclude`, on the
stripped path); `--3way` lets git merge a change whose base blobs it has.
A change whose message has no body gets one that names its source, and an
`Upstream-Status: Pending` trailer when it has none; bodies are kept as they are.

Nothing is half-imported: every path is checked before git reads a change,
the changes are applied in the build tree on a known HEAD that is restored if
any of them fails, the new patches pass the store's safety checks, and only
then is the store written. A change that does not apply is tried again with
`git apply --reject` in a throw-away copy of the tree's files, so that every
failing hunk of every file is named, not only git's first; a tree this run made
is removed again. Afterwards every new patch that `check`'s lint would refuse is
warned about, with how to fix its commit in the tree. The export's kill points
are `import:export:*` (series/pipeline.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from patchtool.commands.importing.inputs import AUTHOR, Change, read_changes
from patchtool.commands.jobs import CachedDeviceJob
from patchtool.core.errors import (
    DirtyTreeError,
    IntegrityError,
    NotFoundError,
    UsageError,
    quoted,
)
from patchtool.core.faults import kill_point
from patchtool.core.fsutil import check_name, remove_tree, temporary_folder
from patchtool.core.gitops import TOOL_COMMITTER, Git, user_identity
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.core.scratch import scratch_folder
from patchtool.series.lint import with_origin_body
from patchtool.series.pipeline import prepare_export
from patchtool.series.privacy import stored_limit
from patchtool.store.files import render_device, write_device_file
from patchtool.store.model import (
    DEFAULT_LIMITS,
    DEVICE_FILE,
    BaseOrigin,
    BaseRef,
    NamedRecipient,
)
from patchtool.store.series import folder_file_bytes, write_base_files
from patchtool.trees.export import export_tree
from patchtool.trees.in_progress import refuse_in_progress
from patchtool.trees.record import TreeLocation, read_record
from patchtool.trees.staging import device_scratch, discard

if TYPE_CHECKING:
    from patchtool.sources.bases import NewBaseSpec
from patchtool.commands.importing.applying import (
    apply_change,
    bring_files_up,
    check_change_paths,
    check_size_of,
    commit_from_index,
    file_sections,
    move_head,
)


@dataclass(frozen=True, kw_only=True)
class ImportOptions(CachedDeviceJob):
    inputs: tuple[Path, ...]
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
    strip: int = 1
    series_file: Path | None = None
    author: str | None = None
    date: str | None = None
    message: str | None = None
    create: bool = False
    display_name: str | None = None
    vendor: str | None = None
    onto: str | None = None
    version_label: str | None = None
    # git apply's --exclude globs, matched against the stripped paths (`*` also
    # matches `/`): file sections left out of every change.
    excludes: tuple[str, ...] = ()
    # Let git fall back to a 3-way merge for a change that does not apply as it is.
    three_way: bool = False
    # Written into a base that --onto creates: where its series came from.
    origin: BaseOrigin | None = None
    # Written as [private.recipients] into a device that --create makes.
    recipients: tuple[NamedRecipient, ...] = ()
    # The changes themselves, when the caller read them (import --flagscale): then
    # `inputs` is not read.
    changes: tuple[Change, ...] = ()
    # The new base, when the caller chose it (import --flagscale); else --onto's.
    new_base: NewBaseSpec | None = None
    # The project of a base --onto names (--project); else the device's, or NAME==VERSION's.
    project: str | None = None


@dataclass(frozen=True)
class ThreeWayChange:
    """A change that only applied with a 3-way merge: review its new patch."""

    origin: str  # the change, as in Change.origin
    patch: str  # the new patch file's name
    paths: tuple[str, ...]  # the files whose hunks did not apply as they were


@dataclass(frozen=True)
class ImportResult:
    base: BaseRef
    imported: tuple[str, ...]  # new patch file names, in order
    created: tuple[Path, ...]  # store folders this run created
    three_way: tuple[ThreeWayChange, ...] = ()
    excluded_sections: int = 0  # file sections --exclude left out, over all changes
    skipped: tuple[str, ...] = ()  # changes (origins) whose every section was excluded
    dropped: tuple[str, ...] = ()  # changes (origins) already in the base: nothing to commit


# --------------------------------------------------------------------------- the import


def import_changes(options: ImportOptions, reporter: Reporter) -> ImportResult:
    """Import every change, or none, holding the device's locks (the store's
    exclusive)."""
    with device_locks(
        options.build_dir,
        options.store.root,
        options.device,
        reporter,
        writes_store=True,
        wait=options.wait,
    ):
        return import_changes_locked(options, reporter)


def import_changes_locked(options: ImportOptions, reporter: Reporter) -> ImportResult:
    """Import every change, or none, for a caller that holds the device's locks
    (`import_changes`; `import --flagscale`, which holds them per device). The
    changes pass through a scratch folder in the build folder
    (trees.staging.device_scratch), removed when the import ends, however it ends."""
    # The device's limits bound what is read; a device this run creates has the defaults.
    device_file = options.store.root / check_name("device", options.device) / DEVICE_FILE
    limits = options.store.device(options.device).limits if device_file.is_file() else None
    device_dir = options.build_dir / check_name("device", options.device)
    refuse_in_progress(device_dir, None, "import")
    with scratch_folder(device_scratch(device_dir), "import-") as workspace:
        changes = list(options.changes) or read_changes(
            options.inputs,
            options.strip,
            options.series_file,
            workspace,
            limits or DEFAULT_LIMITS,
        )
        created: list[Path] = []
        try:
            base = _device_and_base(options, created, reporter)
            done = _import_into(options, base, changes, workspace, reporter)
        except BaseException:
            for folder in reversed(created):
                remove_tree(folder)
            raise
    return ImportResult(
        base,
        tuple(done.imported),
        tuple(created),
        three_way=tuple(done.three_way),
        excluded_sections=done.excluded_sections,
        skipped=tuple(done.skipped),
        dropped=tuple(done.dropped),
    )


def _device_and_base(options: ImportOptions, created: list[Path], reporter: Reporter) -> BaseRef:
    store = options.store
    device_folder = store.root / check_name("device", options.device)
    exists = (device_folder / DEVICE_FILE).is_file()
    spec = options.new_base
    from patchtool.sources.bases import parse_onto, resolve_new_base

    if spec is None and options.onto is not None:
        # Read before anything is created: a base's project is named, never guessed.
        projects = {base.project for base in store.bases(options.device)} if exists else set()
        project = options.project or (projects.pop() if len(projects) == 1 else None)
        spec = parse_onto(options.onto, project, options.version_label)
    if not exists:
        if not options.create:
            store.device(options.device)  # raises NotFoundError with the known devices
        if not options.display_name or not options.vendor:
            raise UsageError("--create needs --display-name and --vendor for a new device")
        if device_folder.exists():
            raise UsageError(f"{device_folder} exists but holds no {DEVICE_FILE}")
        device_folder.mkdir(parents=True)
        created.append(device_folder)
        write_device_file(
            device_folder,
            render_device(options.display_name, options.vendor, options.recipients),
        )
        reporter.step(f"created device {options.device}")
    limits = store.device(options.device).limits
    if spec is None:
        return store.resolve_base(options.device, options.base)
    new = resolve_new_base(
        spec, store, options.device, options.cache, reporter, options.archive_paths, limits=limits
    )
    if new.path.exists():
        raise UsageError(
            f"the base folder {new.path} already exists",
            hint=f"Import into it with --commit-id {new.base_id} instead of --onto.",
        )
    new.path.mkdir()
    created.append(new.path)
    if options.origin is not None:
        new = replace(new, origin=options.origin)
    write_base_files(new, [f"# {options.device} series for {new.label}."])
    reporter.step(f"created base {new.base_id} ({new.commit[:12]})")
    return store.resolve_base(options.device, new.base_id)


def _ready_tree(options: ImportOptions, base: BaseRef, reporter: Reporter) -> tuple[Path, bool]:
    """The device's tree at exactly the base and its stored series, and whether it
    was (re)made for that (built as unpatch builds it, trees.building, when it is
    missing, on another base, or behind the store; work is never lost)."""
    from patchtool.trees.building import TreeBuild, build_tree

    tree = TreeLocation(options.build_dir, options.device, base.project).tree
    refuse_in_progress(tree.parent, tree, "import")
    if tree.is_dir():
        try:
            record = read_record(tree)
        except (NotFoundError, IntegrityError):
            record = None
        if record is not None and record.base_commit == base.commit:
            git = Git(tree)
            if not git.lines("status", "--porcelain", "--untracked-files=all"):
                device = options.store.device(options.device)
                export = prepare_export(
                    git, base, base.commit, device, recorded=record.private, keyring=options.keyring
                )
                if export.plan.is_noop:
                    return tree, False
    try:
        result = build_tree(
            TreeBuild(
                store=options.store,
                build_dir=options.build_dir,
                device=options.device,
                cache=options.cache,
                base=base.base_id,
                archive_paths=options.archive_paths,
                keyring=options.keyring,
            ),
            reporter,
        )
    except DirtyTreeError as error:
        # build_tree's hint is unpatch's: it offers --force, which import does not have.
        raise DirtyTreeError(error.message, hint=dirty_tree_hint(options.device)) from None
    return result.tree, True


def dirty_tree_hint(device: str) -> str:
    return (
        f"Nothing was imported. Export that work first with `patchtool patch --device-type "
        f"{device}` (commit it, or use -m), or set the tree aside with `patchtool unpatch "
        f"--device-type {device} --force` (it moves to a backup folder); then import again."
    )


def _identity(change: Change, options: ImportOptions, tree: Path) -> dict[str, str]:
    env = dict(TOOL_COMMITTER)
    author = change.author
    if author is None and options.author is not None:
        match = AUTHOR.match(options.author)
        if not match:
            raise UsageError(f"--author {quoted(options.author)} is not 'Name <email>'")
        author = (match["name"], match["email"])
    if author is None:
        mine = user_identity(tree)
        if mine is None:
            raise UsageError(
                f"{change.origin} names no author, and none is known",
                hint="Pass --author 'Name <email>'.",
            )
        author = (mine["GIT_AUTHOR_NAME"], mine["GIT_AUTHOR_EMAIL"])
    env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"] = author
    date = change.date or options.date
    if date:
        env["GIT_AUTHOR_DATE"] = date
    return env


@dataclass
class _Imported:
    """What _import_into did, gathered as it goes."""

    imported: list[str] = field(default_factory=list)
    three_way: list[ThreeWayChange] = field(default_factory=list)
    excluded_sections: int = 0
    skipped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


def _import_into(
    options: ImportOptions,
    base: BaseRef,
    changes: list[Change],
    workspace: Path,
    reporter: Reporter,
) -> _Imported:
    from patchtool.series.safety import TreeJudge

    tree_path = TreeLocation(options.build_dir, options.device, base.project).tree
    had_tree = tree_path.exists() or tree_path.is_symlink()
    tree, remade = _ready_tree(options, base, reporter)
    # What a failure leaves, said as it is: a tree this run made is removed.
    if not had_tree:
        left = f"the build tree {tree} that this import made was removed"
    elif remade:
        left = f"the build tree {tree} was remade from the store's series (it held no work)"
    else:
        left = f"the build tree {tree} is as it was"
    limits = options.store.device(options.device).limits
    git = Git(tree, env=TOOL_COMMITTER)
    start = git.text("rev-parse", "HEAD")
    reporter.step(f"importing {len(changes)} change(s) onto {base.base_id} in {tree}")
    done = _Imported()
    try:
        with temporary_folder(workspace, "changes-") as folder:
            judge = TreeJudge(git, start, f"the build tree {tree}")
            committed: list[str] = []  # origins of the changes that made a commit
            synced = start  # the commit the working tree's files (and the index) are at
            # Changes are committed through a scratch copy of the index; the real
            # one keeps its file stats, so the files are brought up in one pass.
            scratch = folder / "index"
            shutil.copyfile(tree / ".git" / "index", scratch)
            merged: list[tuple[str, str, tuple[str, ...]]] = []  # origin, commit, paths
            head = (start, git.text("rev-parse", "HEAD^{tree}"))  # HEAD and its tree
            for number, change in enumerate(changes, start=1):
                patch = folder / f"{number:05d}.patch"
                patch.write_bytes(change.diff)
                kill_point("import:change-written")
                check_size_of(change, limits)
                if options.excludes:
                    every = file_sections(git, patch, change.strip, ())
                    kept = file_sections(git, patch, change.strip, options.excludes)
                    done.excluded_sections += len(every or ()) - len(kept or ())
                    if not kept:
                        done.skipped.append(change.origin)
                        continue
                message = change.message or options.message
                if not message:
                    raise UsageError(
                        f"{change.origin} carries no message", hint="Pass --message SUBJECT."
                    )
                text = with_origin_body(
                    message, f"Imported from {change.source or change.origin}."
                ).encode()
                identity = _identity(change, options, tree)
                needed: tuple[str, ...] = ()
                made = commit_from_index(
                    git, patch, change, options.excludes, text, identity, scratch, head
                )
                if made is not None:
                    head = made
                else:
                    # Judged before git writes a file of the tree.
                    check_change_paths(git, patch, change, limits)
                    # The slow path wants a true HEAD and working tree: bring them up.
                    move_head(git, head[0])
                    synced = bring_files_up(git, synced)
                    needed = apply_change(
                        git, patch, change, number, len(changes), options.excludes,
                        options.three_way, base, left,
                    )  # fmt: skip
                    if git.run("diff", "--cached", "--quiet", "HEAD", check=False).returncode == 0:
                        # git merged it into nothing: the base holds the change already.
                        done.dropped.append(change.origin)
                        git.run("reset", "--quiet", "--hard", "HEAD")
                        continue
                    git.run("commit", "--quiet", "--no-verify", "-F", "-", input=text, env=identity)
                    synced = git.text("rev-parse", "HEAD")
                    head = (synced, git.text("rev-parse", "HEAD^{tree}"))
                    shutil.copyfile(tree / ".git" / "index", scratch)
                committed.append(change.origin)
                if needed:
                    merged.append((change.origin, head[0], needed))
            # The commits were made in the index alone: HEAD moves to the last, and
            # one pass brings the files up.
            move_head(git, head[0])
            synced = bring_files_up(git, synced)
            # What git made of the changes, judged as unpatch judges a series.
            commits = git.lines("rev-list", "--reverse", f"{start}..HEAD")
            judge.judge_commits(git, commits, committed)
            device = options.store.device(options.device)
            record = read_record(tree)
            export = prepare_export(
                git, base, base.commit, device, recorded=record.private, keyring=options.keyring
            )
            stored = folder_file_bytes(base.path, stored_limit(device.limits))
            fresh = [p.name for p in export.patches if p.file_data not in stored]
            by_commit = {p.commit: p.name for p in export.patches}
            done.three_way = [
                ThreeWayChange(origin, by_commit.get(commit, commit[:12]), paths)
                for origin, commit, paths in merged
            ]
    except BaseException:
        git.run("reset", "--quiet", "--hard", start, check=False)
        if not had_tree:
            discard(tree)
        raise
    # What check would refuse in the new patches is said now, while their
    # commits are the newest of the tree and easy to amend.
    export_tree(export, tree, record, git, "import", reporter, new=fresh)
    done.imported = fresh
    return done
