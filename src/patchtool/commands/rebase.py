"""`rebase`: carry a device's series from one upstream base to a newer one.

The old base's series is applied in the device's build tree (as `unpatch` would),
the new base is fetched into the same repository, and every patch is
cherry-picked onto the new base one at a time, so that each gets its own
outcome: applied unchanged (clean), merged by git (3-way), resolved by hand,
dropped because upstream already holds it, or skipped on request.

A conflict stops the run with the tree in a resumable state. The state lives
beside the tree, in `<dir>/<device>/.patchtool-rebase-<project>.json` (the
device folder is patchtool's own; a tree the rebase creates does not exist yet
when the state must first be written). It is written before the tree is
touched and moves through three phases: "starting" (what `--abort` needs to
put the tree back), "picking" (the patches, one at a time) and "finishing"
(the new base folder is staged; its digest is recorded before it is renamed
into the store). The rebase marks the tree it works in (`.git/patchtool-rebase-id`)
before it changes anything there, so a tree replaced since (`unpatch --force`)
is never "restored" by mistake.

The store is written only when the last patch is in: a new base folder
(base.toml, series, patches, rebase-report.md) appears atomically next to the
old one, which is never touched, so both releases stay buildable. `--abort`
returns the tree to what it was and the store too (a new base folder this
rebase already renamed into place, unchanged since, is removed).

A run killed at any point (see the `rebase:*` kill points, the export's
`rebase:export:*` among them) leaves a state that `--abort` undoes and, once
the patches are being picked, `--continue` resumes.
Lock files a killed git left in the tree are reported, never deleted.

This module never prints; it raises `PatchtoolError`s and reports progress
through a `Reporter`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchtool.commands.jobs import CachedDeviceJob
from patchtool.core.errors import ConflictError, DirtyTreeError, IntegrityError, UsageError, quoted
from patchtool.core.faults import kill_point
from patchtool.core.fsutil import (
    atomic_write,
    check_name,
    fsync_directory,
    read_json_record,
    remove_tree,
)
from patchtool.core.gitops import TOOL_COMMITTER, Git
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.series.pipeline import prepare_export, write_export
from patchtool.series.privacy import LoadedSeries, load_series, private_record
from patchtool.series.rendering import private_pairs
from patchtool.series.safety import TreeJudge
from patchtool.sources.bases import ensure_base, parse_onto, resolve_new_base
from patchtool.sources.cache import base_ref_name
from patchtool.store.files import move_base_folder_in, move_base_folder_out, write_base_note
from patchtool.store.model import (
    PRIVATE_SUFFIX,
    BaseOrigin,
    BaseRef,
    DeviceConfig,
    GitSource,
    GitUrl,
    PypiSource,
)
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series, series_digest, write_base_files
from patchtool.trees.applying import apply_series, checkout_base
from patchtool.trees.record import (
    BASE_REF,
    BASE_TAG,
    METADATA_FILE,
    TreeLocation,
    TreeRecord,
    write_record,
)
from patchtool.trees.staging import TRASH_PREFIX, new_stage, recover_interrupted
from patchtool.trees.work import existing_work, refuse_git_locks

# The state file, in the device's build folder: STATE_PREFIX + project + STATE_SUFFIX.
STATE_PREFIX = ".patchtool-rebase-"
STATE_SUFFIX = ".json"
# In the tree's .git: the id of the rebase that may change this tree.
MARKER_FILE = "patchtool-rebase-id"
STARTING, PICKING, FINISHING = "starting", "picking", "finishing"
REPORT_FILE = "rebase-report.md"
OLD_BASE_REF = "refs/patchtool/rebase/old-base"
OLD_TIP_REF = "refs/patchtool/rebase/old-tip"
NEW_BASE_REF = "refs/patchtool/rebase/new-base"

CLEAN, THREE_WAY, BY_HAND, UPSTREAM, SKIPPED = (
    "clean",
    "3-way",
    "resolved by hand",
    "dropped as upstream",
    "skipped",
)
_PICKED = "picked"  # clean or 3-way: decided at the end, by patch-id


# --------------------------------------------------------------------------- state


@dataclass
class PatchState:
    name: str
    subject: str
    old_commit: str
    outcome: str | None = None
    new_commit: str | None = None
    conflicts: list[str] = field(default_factory=list)
    note: str | None = None


@dataclass
class RebaseState:
    device: str
    store: str
    old_base_id: str
    old_base_commit: str
    new_base: BaseRef  # the new base, its folder (not yet written) and source included
    tree_existed: bool
    saved_branch: str | None  # the tree's branch before the rebase (None: detached)
    saved_head: str | None
    saved_record: str | None
    series_header: list[str]
    patches: list[PatchState]
    position: int = 0
    pick_from: str | None = None  # HEAD before the patch at `position` was picked
    phase: str = PICKING  # STARTING, PICKING or FINISHING
    rebase_id: str = ""  # also in the tree's .git/MARKER_FILE once the tree is touched
    # The refs the rebase may move, as they were (None: absent): restored by --abort.
    saved_refs: dict[str, str | None] = field(default_factory=dict)
    # True while patchtool itself runs the cherry-pick of the patch at `position`:
    # still True on --continue means that run was killed, not stopped by a conflict.
    pick_running: bool = False
    folder_digest: str | None = None  # the staged new base folder (FINISHING)
    # The new folder's private patches: stored sha256 -> plaintext sha256, and
    # their patch-ids (for the tree's record, see trees.record.TreeRecord).
    private: dict[str, str] = field(default_factory=dict)
    private_patch_ids: list[str] = field(default_factory=list)

    @property
    def onto_text(self) -> str:
        """The `--onto` (and `--base-version`) that starts this rebase again."""
        new = self.new_base
        if isinstance(new.source, GitSource):
            return f"git+{new.source.url}@{new.commit} --base-version {new.version}"
        return new.version


def _state_path(tree: Path) -> Path:
    """`<dir>/<device>/.patchtool-rebase-<project>.json`: beside the tree, not in it,
    so that it can be written before the tree exists and survives a half-made one."""
    return tree.parent / f"{STATE_PREFIX}{tree.name}{STATE_SUFFIX}"


def _save_state(tree: Path, state: RebaseState) -> None:
    data = asdict(state)
    data["new_base"]["path"] = str(state.new_base.path)
    atomic_write(_state_path(tree), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


_DAMAGED_STATE_HINT = "Finish by hand, or delete it and run `unpatch --force`."


def _load_state(tree: Path) -> RebaseState:
    try:
        return read_json_record(_state_path(tree), _state_from, _DAMAGED_STATE_HINT)
    except FileNotFoundError as error:
        raise UsageError(
            f"no rebase is in progress in {tree}",
            hint="Start one with `patchtool rebase -d DEVICE --onto VERSION`.",
        ) from error


def _state_from(data: dict[str, Any]) -> RebaseState:
    data["patches"] = [PatchState(**p) for p in data["patches"]]
    data["new_base"] = _base_from(data["new_base"])
    return RebaseState(**data)


def _base_from(data: dict[str, Any]) -> BaseRef:
    """The new base as _save_state wrote it (dataclasses.asdict, the path as text)."""
    source_data = data.pop("source")
    source: PypiSource | GitSource
    if source_data["kind"] == "pypi":
        source = PypiSource(source_data["filename"], source_data["sha256"])
    else:
        source = GitSource(GitUrl(source_data["url"]))
    origin: dict[str, Any] | None = data.pop("origin", None)
    if origin is not None:
        origin["models"], origin["task"] = tuple(origin["models"]), tuple(origin["task"])
    return BaseRef(
        source=source,
        path=Path(data.pop("path")),
        origin=BaseOrigin(**origin) if origin is not None else None,
        **data,
    )


def rebase_in_progress(tree: Path) -> bool:
    return _state_path(tree).is_file()


def _marker_path(tree: Path) -> Path:
    return tree / ".git" / MARKER_FILE


def _mark_tree(tree: Path, state: RebaseState) -> None:
    atomic_write(_marker_path(tree), (state.rebase_id + "\n").encode())


def _owns_tree(tree: Path, state: RebaseState) -> bool:
    """Whether `tree` is the one this rebase changed: it carries the rebase's id.
    A tree without it was not touched yet, or was replaced since the start."""
    try:
        return _marker_path(tree).read_text("utf-8").strip() == state.rebase_id
    except (FileNotFoundError, NotADirectoryError):
        return False


# --------------------------------------------------------------------------- options and results


@dataclass(frozen=True, kw_only=True)
class RebaseOptions(CachedDeviceJob):
    onto: str | None = None
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
    action: str = "start"  # start, continue, skip, abort
    note: str | None = None
    version_label: str | None = None


@dataclass(frozen=True)
class RebaseResult:
    tree: Path
    old_base: str
    new_base: BaseRef | None  # None after --abort
    outcomes: tuple[tuple[str, str], ...]  # (patch name, outcome)
    report: Path | None


def rebase(options: RebaseOptions, reporter: Reporter) -> RebaseResult:
    """Start, continue, skip or abort a rebase, holding the device's locks (the
    store's exclusive)."""
    with device_locks(
        options.build_dir,
        options.store.root,
        options.device,
        reporter,
        writes_store=True,
        wait=options.wait,
    ):
        return _rebase(options, reporter)


def _rebase(options: RebaseOptions, reporter: Reporter) -> RebaseResult:
    device = options.store.device(options.device)
    # With the lock held no live run owns a staging or trash folder there.
    recover_interrupted(options.build_dir / check_name("device", device.name), reporter)
    if options.action == "start":
        if options.onto is None:
            raise UsageError("rebase needs --onto NEW-BASE (a version, or git+URL@COMMIT)")
        old = options.store.resolve_base(device.name, options.base)
        tree = TreeLocation(options.build_dir, device.name, old.project).tree
        refuse_git_locks(tree)
        state = _start(options, old, tree, device, reporter)
    else:
        tree = _find_rebasing_tree(options.build_dir, device.name)
        refuse_git_locks(tree)
        state = _load_state(tree)
        if options.action == "abort":
            _abort(tree, state, reporter)
            return RebaseResult(tree, state.old_base_id, None, (), None)
        _check_resumable(tree, state)
        if options.action == "skip":
            _skip_current(tree, state, reporter)
        else:
            _continue_current(tree, state, options.note, reporter)
    _pick_remaining(tree, state, reporter)
    return _finish(tree, state, reporter)


def _find_rebasing_tree(build_dir: Path, device: str) -> Path:
    device_dir = build_dir / check_name("device", device)
    states = (
        sorted(
            p
            for p in device_dir.glob(f"{STATE_PREFIX}*{STATE_SUFFIX}")
            if p.is_file() and len(p.name) > len(STATE_PREFIX) + len(STATE_SUFFIX)
        )
        if device_dir.is_dir()
        else []
    )
    if not states:
        raise UsageError(
            f"no rebase is in progress for device {quoted(device)} under {device_dir}",
            hint=f"Start one with `patchtool rebase -d {device} --onto VERSION`.",
        )
    project = states[0].name[len(STATE_PREFIX) : -len(STATE_SUFFIX)]
    return device_dir / check_name("project", project)


def _check_resumable(tree: Path, state: RebaseState) -> None:
    """--continue and --skip need a start that got to its patches, in this tree."""
    device = state.device
    if state.phase == STARTING:
        raise UsageError(
            f"the start of the rebase of {device} from {state.old_base_id} onto "
            f"{state.new_base.label} was interrupted before its patches were "
            f"picked: there is nothing to continue in {tree}",
            hint=f"Run `patchtool rebase -d {device} --abort` (it puts the build tree back "
            f"as it was), then start again with `patchtool rebase -d {device} "
            f"-c {state.old_base_id} --onto {state.onto_text}`.",
        )
    if not _owns_tree(tree, state):
        raise UsageError(
            f"the build tree {tree} is not the one this rebase worked in: it was replaced "
            "or removed after the rebase started",
            hint=f"Run `patchtool rebase -d {device} --abort` to drop the rebase; "
            "it leaves that tree as it is.",
        )


# --------------------------------------------------------------------------- start


def _start(
    options: RebaseOptions, old: BaseRef, tree: Path, device: DeviceConfig, reporter: Reporter
) -> RebaseState:
    _refuse_to_start(options, tree)
    spec = parse_onto(options.onto or "", old.project, options.version_label)
    series = parse_series(old, device.limits)
    # Private patches are read (decrypted) before anything else happens.
    loaded = load_series(series, device.limits, options.keyring, device.recipients)
    folder = options.store.root / old.device / f"{spec.project}-{spec.version}"
    if folder.exists():
        raise UsageError(
            f"the base folder {folder} already exists",
            hint=(
                "Rebase onto another version. To carry new patches onto this base, build its "
                f"tree elsewhere first (`patchtool unpatch -d {old.device} -c {spec.version} "
                "--dir OTHER`) so that its conflict resolutions stay at hand, then remove the "
                "folder and rebase again (docs/rebase.md, 'Adding patches below a carried base')."
            ),
        )
    old_repository = ensure_base(
        old, options.cache, reporter, options.archive_paths, limits=device.limits
    )
    new = resolve_new_base(
        spec,
        options.store,
        old.device,
        options.cache,
        reporter,
        options.archive_paths,
        limits=device.limits,
    )
    if new.commit == old.commit:
        raise UsageError(f"{new.label} is the same commit as {old.base_id} ({old.commit[:12]})")
    if any(b.commit == new.commit for b in options.store.bases(old.device)):
        raise UsageError(f"device {quoted(old.device)} already has a base at {new.commit[:12]}")
    new_repository = ensure_base(
        new, options.cache, reporter, options.archive_paths, limits=device.limits
    )
    header = [line.replace(old.version, new.version) for line in series.header]
    # Written before the tree is touched: whatever happens next, --abort finds
    # what it needs to put the tree back (or to remove a tree this run made).
    state = _initial_state(options, old, new, tree, header)
    _save_state(tree, state)
    try:
        if state.tree_existed:
            _mark_tree(tree, state)
        kill_point("rebase:state-saved")
        if not state.tree_existed:
            reporter.step(f"checking out {old.label} ({old.commit[:12]})")
            _create_tree(old_repository, tree, old, state)
            kill_point("rebase:tree-created")
        commits, subjects = _apply_old_series(
            tree, old, new, (old_repository, new_repository), loaded, reporter
        )
    except BaseException:
        _restore_tree(tree, state, reporter)
        raise
    state.patches = [
        PatchState(e.name, s, c) for e, s, c in zip(series.entries, subjects, commits, strict=True)
    ]
    state.phase = PICKING
    _save_state(tree, state)
    return state


def _refuse_to_start(options: RebaseOptions, tree: Path) -> None:
    if rebase_in_progress(tree):
        raise UsageError(
            f"a rebase is already in progress in {tree}",
            hint=f"Go on with `patchtool rebase -d {options.device} --continue`, "
            "or --skip / --abort.",
        )
    work = existing_work(tree, options.store, options.device, options.keyring)
    if work:
        raise DirtyTreeError(
            f"the build tree {tree} holds work that exists nowhere else:\n  {work}",
            hint=f"Export it with `patchtool patch --device-type {options.device}` first; "
            "rebase starts from the store's series.",
        )


def _initial_state(
    options: RebaseOptions, old: BaseRef, new: BaseRef, tree: Path, header: list[str]
) -> RebaseState:
    """The state before the tree is touched: what --abort puts back."""
    existed = tree.exists()
    saved_branch = saved_head = saved_record = None
    saved_refs: dict[str, str | None] = {}
    if existed:
        git = Git(tree)
        branch = git.run("symbolic-ref", "--quiet", "--short", "HEAD", check=False)
        saved_branch = branch.text.strip() if branch.returncode == 0 else None
        saved_head = git.text("rev-parse", "HEAD")
        saved_record = (tree / ".git" / METADATA_FILE).read_bytes().decode("utf-8")
        for ref in _moved_refs(old.device):
            saved_refs[ref] = _ref_value(git, ref)
    return RebaseState(
        device=old.device,
        store=str(options.store.root),
        old_base_id=old.base_id,
        old_base_commit=old.commit,
        new_base=new,
        tree_existed=existed,
        saved_branch=saved_branch,
        saved_head=saved_head,
        saved_record=saved_record,
        series_header=header,
        patches=[],
        phase=STARTING,
        rebase_id=secrets.token_hex(8),
        saved_refs=saved_refs,
    )


def _apply_old_series(
    tree: Path,
    old: BaseRef,
    new: BaseRef,
    repositories: tuple[Path, Path],
    loaded: LoadedSeries,
    reporter: Reporter,
) -> tuple[list[str], list[str]]:
    """Both bases into the tree, judged; the old series applied on the old base
    as unpatch applies it; then the new base checked out. Returns the old
    series' commits and subjects."""
    git = Git(tree, env=TOOL_COMMITTER)
    for repository, commit, ref in (
        (repositories[0], old.commit, OLD_BASE_REF),
        (repositories[1], new.commit, NEW_BASE_REF),
    ):
        git.run("fetch", "--quiet", "--no-tags", str(repository), f"+{base_ref_name(commit)}:{ref}")
    kill_point("rebase:fetched")
    # Both bases are judged before either is checked out.
    judge = TreeJudge(git, old.commit, f"base {old.label}")
    TreeJudge(git, new.commit, f"base {new.label}")
    reporter.step(f"applying {len(loaded.patches)} patch(es) of {old.base_id} on {old.label}")
    git.run("checkout", "--quiet", "--force", "--detach", old.commit)
    try:
        apply_series(tree, loaded, judge, False, reporter)
    except ConflictError as error:
        raise ConflictError(
            f"the series of {old.base_id} does not apply to its own base:\n{error.message}",
            hint="Fix the store first: "
            f"`patchtool unpatch -d {old.device} -c {old.base_id}` "
            "shows which patch fails.",
        ) from None
    kill_point("rebase:applied-old-series")
    git.run("update-ref", OLD_TIP_REF, "HEAD")
    commits = git.lines("rev-list", "--reverse", f"{old.commit}..HEAD")
    subjects = [git.text("log", "-1", "--format=%s", c) for c in commits]
    reporter.step(f"checking out {new.label} ({new.commit[:12]})")
    git.run("checkout", "--quiet", "--force", "--detach", new.commit)
    kill_point("rebase:checked-out-new")
    return commits, subjects


def _moved_refs(device: str) -> tuple[str, ...]:
    """The refs besides HEAD and the rebase's own that a rebase moves (in _finish)."""
    return (BASE_REF, f"refs/tags/{BASE_TAG}", f"refs/heads/{device}")


def _ref_value(git: Git, ref: str) -> str | None:
    """The object a ref names, not peeled (an annotated tag stays the tag object)."""
    result = git.run("rev-parse", "--verify", "--quiet", ref, check=False)
    return result.text.strip() if result.returncode == 0 else None


def _create_tree(repository: Path, tree: Path, old: BaseRef, state: RebaseState) -> None:
    """The old base's tree, made in a stage and renamed into place with
    the rebase's mark already in it: a kill leaves no tree or a whole marked one
    (a stage left behind is removed by the next run's recovery)."""
    stage = new_stage(tree.parent)
    try:
        staged = stage / tree.name
        checkout_base(repository, staged, old, old.device)
        write_record(
            staged,
            TreeRecord(
                old.device, old.base_id, old.project, old.version, old.commit, store=state.store
            ),
        )
        _mark_tree(staged, state)
        os.rename(staged, tree)
        fsync_directory(tree.parent)
    finally:
        remove_tree(stage)


# --------------------------------------------------------------------------- picking


def _pick_remaining(tree: Path, state: RebaseState, reporter: Reporter) -> None:
    git = Git(tree, env=TOOL_COMMITTER)
    total = len(state.patches)
    while state.position < total:
        patch = state.patches[state.position]
        state.pick_from = git.text("rev-parse", "HEAD")
        state.pick_running = True
        _save_state(tree, state)
        reporter.step(f"[{state.position + 1}/{total}] {patch.name}")
        result = git.run("cherry-pick", "--allow-empty-message", patch.old_commit, check=False)
        kill_point("rebase:picked")
        kill_point(f"rebase:picked:{state.position + 1}")
        if result.returncode == 0:
            patch.outcome, patch.new_commit = _PICKED, git.text("rev-parse", "HEAD")
        else:
            unmerged = _unmerged(git)
            if unmerged:
                patch.conflicts = [_describe_conflict(tree, path) for path in unmerged]
                state.pick_running = False  # stopped for the user, not killed
                _save_state(tree, state)
                raise _conflict_error(state, patch, tree)
            if "is now empty" not in result.stderr + result.text:
                raise IntegrityError(
                    f"cherry-pick of {patch.name} failed:\n{result.stderr}",
                    hint="Abort with `patchtool rebase --abort` and report it.",
                )
            git.run("cherry-pick", "--skip")
            patch.outcome = UPSTREAM
            reporter.info(f"{patch.name}: already upstream in {state.new_base.version}; dropped")
        state.position += 1
        state.pick_from = None
        state.pick_running = False
        _save_state(tree, state)


def _unmerged(git: Git) -> list[str]:
    out = git.run("diff", "--name-only", "--diff-filter=U", "-z").stdout
    return sorted({p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p})


_MARKERS = re.compile(rb"^(<{7}|={7}|>{7})(?: |$)")


def conflict_ranges(data: bytes) -> list[tuple[int, int]]:
    """Line ranges (1-based, inclusive) from each `<<<<<<<` to its `>>>>>>>`."""
    ranges: list[tuple[int, int]] = []
    start = None
    for number, line in enumerate(data.split(b"\n"), start=1):
        match = _MARKERS.match(line)
        if not match:
            continue
        if match[1].startswith(b"<"):
            start = number
        elif match[1].startswith(b">") and start is not None:
            ranges.append((start, number))
            start = None
    return ranges


def _describe_conflict(tree: Path, path: str) -> str:
    file = tree / path
    if not file.is_file():
        return f"{path}: deleted on one side, changed on the other (no markers; see git status)"
    ranges = conflict_ranges(file.read_bytes())
    if not ranges:
        return f"{path}: conflict without markers (binary, mode or rename; see git status)"
    shown = ", ".join(f"{a}-{b}" for a, b in ranges)
    return f"{path}: {len(ranges)} conflict hunk(s) at lines {shown}"


def _conflict_error(state: RebaseState, patch: PatchState, tree: Path) -> ConflictError:
    number = state.position + 1
    device = state.device
    return ConflictError(
        f"patch {patch.name} ({number} of {len(state.patches)}, {quoted(patch.subject)}) conflicts "
        f"with {state.new_base.label} in {tree}:\n  " + "\n  ".join(patch.conflicts),
        hint=f"Resolve the conflicts in {tree}, `git add` the files, then run "
        f"`patchtool rebase -d {device} --continue` (or commit yourself, then --continue; "
        f"--note TEXT records how). `--skip` drops this patch; `--abort` puts the build tree "
        "and the store back as they were before the rebase.",
    )


def _continue_current(tree: Path, state: RebaseState, note: str | None, reporter: Reporter) -> None:
    if state.position >= len(state.patches):
        return
    git = Git(tree, env=TOOL_COMMITTER)
    patch = state.patches[state.position]
    if state.pick_running:
        # patchtool was killed while it picked this patch: whatever the pick left
        # (CHERRY_PICK_HEAD, a half-merged index, a commit) is undone, and
        # _pick_remaining picks the patch again, exactly as an unbroken run would.
        reporter.info(f"{patch.name}: its pick was interrupted; picking it again")
        _undo_pick(git, state)
        state.pick_running = False
        _save_state(tree, state)
        return
    picking = git.rev_parse("CHERRY_PICK_HEAD") is not None
    if picking:
        unmerged = _unmerged(git)
        if unmerged:
            raise ConflictError(
                f"patch {patch.name} still has unresolved files: {', '.join(unmerged)}",
                hint="Resolve them and `git add` them, then run --continue again.",
            )
        marked = [
            p
            for p in git.lines("diff", "--cached", "--name-only", "HEAD")
            if (tree / p).is_file() and conflict_ranges((tree / p).read_bytes())
        ]
        if marked:
            raise ConflictError(
                f"patch {patch.name}: {', '.join(marked)} still hold conflict markers",
                hint="Remove the <<<<<<< ======= >>>>>>> lines, `git add` them, and --continue.",
            )
        if git.run("diff", "--cached", "--quiet", "HEAD", check=False).returncode == 0:
            git.run("cherry-pick", "--skip")
            patch.outcome = UPSTREAM
            patch.note = note or "the resolution left no change"
        else:
            # strip: git appends a commented "# Conflicts:" list to the message, which
            # would push the patch's trailers out of the last paragraph.
            git.run(
                "commit",
                "--quiet",
                "--no-edit",
                "--no-verify",
                "--cleanup=strip",
                "--allow-empty-message",
            )
            patch.outcome, patch.new_commit, patch.note = (
                BY_HAND,
                git.text("rev-parse", "HEAD"),
                note,
            )
    else:
        head = git.text("rev-parse", "HEAD")
        if head == state.pick_from:
            raise UsageError(
                f"patch {patch.name} is neither resolved nor committed (no cherry-pick in progress "
                "and HEAD has not moved)",
                hint="Commit your resolution, or --skip the patch, or --abort the rebase.",
            )
        patch.outcome, patch.new_commit, patch.note = BY_HAND, head, note
    dirty = git.lines("status", "--porcelain", "--untracked-files=no")
    if dirty:
        raise DirtyTreeError(
            f"the build tree {tree} has uncommitted changes after {patch.name}: "
            + ", ".join(line[3:] for line in dirty[:10]),
            hint="Commit or discard them, then --continue.",
        )
    reporter.info(f"{patch.name}: resolved by hand")
    state.position += 1
    state.pick_from = None
    _save_state(tree, state)


def _skip_current(tree: Path, state: RebaseState, reporter: Reporter) -> None:
    if state.position >= len(state.patches):
        return
    git = Git(tree, env=TOOL_COMMITTER)
    patch = state.patches[state.position]
    _undo_pick(git, state)
    patch.outcome = SKIPPED
    reporter.warn(f"{patch.name}: skipped; it is not in the new series")
    state.position += 1
    state.pick_from = None
    state.pick_running = False
    _save_state(tree, state)


def _undo_pick(git: Git, state: RebaseState) -> None:
    """Back to HEAD as it was before the patch at `position` was picked."""
    git.run("cherry-pick", "--quit", check=False)
    git.run("reset", "--quiet", "--hard", state.pick_from or "HEAD")


# --------------------------------------------------------------------------- abort


def _abort(tree: Path, state: RebaseState, reporter: Reporter) -> None:
    reporter.step(f"aborting the rebase in {tree}")
    new = state.new_base
    stage = _base_stage(new, state)
    remove_tree(stage)
    if state.folder_digest is not None and _folder_digest(new.path) == state.folder_digest:
        # Killed after the new base folder was renamed into the store, before the
        # rebase ended: it holds exactly what this rebase wrote, so it goes.
        reporter.step(f"removing {new.path}, written by this unfinished rebase")
        move_base_folder_out(new.path, stage)
    elif state.folder_digest is not None and new.path.exists():
        reporter.warn(f"{new.path} is not what this rebase wrote; it is left as it is")
    _restore_tree(tree, state, reporter)


def _restore_tree(tree: Path, state: RebaseState, reporter: Reporter) -> None:
    """Put the tree back as it was before the rebase (remove it if the rebase made
    it), then drop the state. Every step can be repeated, so a kill here is undone
    by the next --abort."""
    if not _owns_tree(tree, state):
        if tree.exists():
            reporter.warn(
                f"{tree} was not changed by this rebase, or was replaced since; it is left as it is"
            )
        _state_path(tree).unlink(missing_ok=True)
        return
    if not state.tree_existed:
        # One rename takes the whole tree away; the next run's recovery removes
        # the trash folder if this one is killed before it does.
        trash = tree.with_name(f"{TRASH_PREFIX}{os.getpid()}-{state.rebase_id}")
        os.rename(tree, trash)
        fsync_directory(tree.parent)
        remove_tree(trash)
        _state_path(tree).unlink(missing_ok=True)
        return
    git = Git(tree)
    git.run("cherry-pick", "--quit", check=False)
    git.run("am", "--abort", check=False)
    head = state.saved_head
    assert head is not None
    git.run("checkout", "--quiet", "--force", "--detach", head)
    for ref, value in state.saved_refs.items():
        if value is None:
            git.run("update-ref", "-d", ref, check=False)
        else:
            git.run("update-ref", ref, value)
    for ref in (OLD_BASE_REF, OLD_TIP_REF, NEW_BASE_REF):
        git.run("update-ref", "-d", ref, check=False)
    if state.saved_branch is not None:
        git.run("checkout", "--quiet", "--force", state.saved_branch)
    git.run("reset", "--quiet", "--hard", head)
    if state.saved_record is not None:
        atomic_write(tree / ".git" / METADATA_FILE, state.saved_record.encode("utf-8"))
    _state_path(tree).unlink(missing_ok=True)
    _marker_path(tree).unlink(missing_ok=True)


# --------------------------------------------------------------------------- finish


def _base_stage(new: BaseRef, state: RebaseState) -> Path:
    """Where this rebase assembles the new base folder (and, on --abort, puts it
    aside to remove it): hidden, beside the folder, named for this rebase alone."""
    return new.path.with_name(f".{new.base_id}.patchtool-rebase-{state.rebase_id}")


def _folder_digest(folder: Path) -> str | None:
    """sha256 over every entry's name, kind, mode and bytes (None: no such folder)."""
    if not folder.is_dir() or folder.is_symlink():
        return None
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix().encode("utf-8", "surrogateescape")
        if path.is_symlink():
            kind, data = b"link", os.fsencode(os.readlink(path))
        elif path.is_file():
            kind = b"exec" if os.access(path, os.X_OK) else b"file"
            data = path.read_bytes()
        else:
            kind, data = b"dir", b""
        digest.update(b"%s %d %s %d\0" % (kind, len(name), name, len(data)) + data)
    return digest.hexdigest()


def _finish(tree: Path, state: RebaseState, reporter: Reporter) -> RebaseResult:
    git = Git(tree, env=TOOL_COMMITTER)
    new = state.new_base
    stage = _base_stage(new, state)
    remove_tree(stage)  # left by a killed run of this rebase
    written = state.folder_digest is not None and _folder_digest(new.path) == state.folder_digest
    if state.phase == FINISHING and written:
        # A killed run had renamed the folder into the store already: only the
        # tree's steps below are left (each can be repeated).
        reporter.step(f"{new.path} is already written; finishing the build tree")
    else:
        _write_new_base(git, tree, state, new, stage, reporter)
    git.run("update-ref", BASE_REF, new.commit)
    git.run("tag", "--force", BASE_TAG, new.commit)
    git.run("checkout", "--quiet", "-B", state.device)
    for ref in (OLD_BASE_REF, OLD_TIP_REF, NEW_BASE_REF):
        git.run("update-ref", "-d", ref, check=False)
    kill_point("rebase:tree-moved")
    write_record(
        tree,
        TreeRecord(
            state.device,
            new.base_id,
            new.project,
            new.version,
            new.commit,
            series_digest(parse_series(new)),
            state.store,
            private=dict(state.private),
            private_patch_ids=tuple(state.private_patch_ids),
        ),
    )
    _state_path(tree).unlink(missing_ok=True)
    _marker_path(tree).unlink(missing_ok=True)
    return RebaseResult(
        tree,
        state.old_base_id,
        new,
        tuple((p.name, p.outcome or "") for p in state.patches),
        new.path / REPORT_FILE,
    )


def _write_new_base(
    git: Git, tree: Path, state: RebaseState, new: BaseRef, stage: Path, reporter: Reporter
) -> None:
    """Assemble the new base folder beside its place and rename it in. Its digest is
    in the state before the rename, so a later run knows the folder for its own."""
    # What the picks and the hand resolutions made is judged before the store sees it.
    commits = git.lines("rev-list", "--reverse", f"{new.commit}..HEAD")
    names = [p.name for p in state.patches if p.new_commit]
    subjects = [f"patch {n} (rebased onto {new.label})" for n in names]
    if len(subjects) != len(commits):
        subjects = [f"commit {c[:12]} of the rebased series" for c in commits]
    TreeJudge(git, new.commit, f"base {new.label}").judge_commits(git, commits, subjects)
    _classify_picked(git, state)
    reporter.step(f"exporting the new series into {new.path}")
    stage.mkdir()
    try:
        folder = stage / new.base_id
        folder.mkdir()
        staged = BaseRef(
            new.device, new.base_id, new.project, new.version, new.commit, new.source, folder
        )
        write_base_files(staged, state.series_header)
        device = Store(Path(state.store)).device(state.device)
        export = prepare_export(git, staged, new.commit, device, recorded={})
        write_export(export, "rebase")
        patches = list(export.patches)
        private, ids = private_record(git, private_pairs(patches))
        state.private, state.private_patch_ids = private, list(ids)
        names_by_commit = {p.commit: p.name for p in patches}
        private_commits = {p.commit for p in patches if p.private}
        report = render_report(git, state, new, names_by_commit, private_commits)
        write_base_note(staged, REPORT_FILE, report)
        if new.path.exists():
            raise UsageError(
                f"the base folder {new.path} appeared during the rebase",
                hint="Move it away, then run --continue again.",
            )
        state.phase, state.folder_digest = FINISHING, _folder_digest(folder)
        _save_state(tree, state)
        kill_point("rebase:before-store-write")
        move_base_folder_in(folder, new.path)
        kill_point("rebase:store-written")
    finally:
        remove_tree(stage)


def _patch_ids(git: Git, revisions: list[str]) -> dict[str, str]:
    """commit -> stable patch-id (line numbers and whitespace ignored)."""
    if not revisions:
        return {}
    diffs = git.run(
        "diff-tree",
        "--stdin",
        "-p",
        "--no-color",
        "--root",
        input=("\n".join(revisions) + "\n").encode(),
    ).stdout
    ids = git.run("patch-id", "--stable", input=diffs).text
    return {commit: pid for pid, commit in (line.split() for line in ids.splitlines() if line)}


def _classify_picked(git: Git, state: RebaseState) -> None:
    """A picked patch whose diff is unchanged applied as it was (clean); one whose
    diff changed needed git's 3-way merge."""
    picked = [p for p in state.patches if p.outcome == _PICKED]
    ids = _patch_ids(git, [c for p in picked for c in (p.old_commit, p.new_commit or "")])
    for patch in picked:
        same = ids.get(patch.old_commit) == ids.get(patch.new_commit or "")
        patch.outcome = CLEAN if same else THREE_WAY


_RANGE_LINE = re.compile(
    r"^(\s*(?:\d+|-)):\s+(?:[0-9a-f]{4,40}|-+)\s+([=!<>])\s+"
    r"(\s*(?:\d+|-)):\s+(?:[0-9a-f]{4,40}|-+)\s(.*)$"
)


def range_diff(
    git: Git,
    old_base: str,
    old_tip: str,
    new_base: str,
    new_tip: str,
    private: tuple[set[int], set[int]] = (set(), set()),
) -> str:
    """`git range-diff` of old vs new series, commit ids left out (they change on
    every rebase and would make the report differ for no reason). The pairs
    whose old or new patch (1-based positions in `private`) is private show
    their header line only: the report goes into the store, in clear. A side with
    no patches is listed here: git range-diff refuses an empty range."""
    old_subjects = _subjects(git, f"{old_base}..{old_tip}")
    new_subjects = _subjects(git, f"{new_base}..{new_tip}")
    if not old_subjects or not new_subjects:
        width = len(str(max(len(old_subjects), len(new_subjects), 1)))
        dash = "-".rjust(width)
        return "\n".join(
            [f"{n:>{width}} < {dash} {s}" for n, s in enumerate(old_subjects, start=1)]
            + [f"{dash} > {n:>{width}} {s}" for n, s in enumerate(new_subjects, start=1)]
        )
    out = git.run(
        "range-diff", "--no-color", f"{old_base}..{old_tip}", f"{new_base}..{new_tip}"
    ).text
    lines = []
    hiding = False
    for line in out.splitlines():
        match = _RANGE_LINE.match(line)
        if match:
            old_pos, new_pos = match[1].strip(), match[3].strip()
            hiding = (old_pos.isdigit() and int(old_pos) in private[0]) or (
                new_pos.isdigit() and int(new_pos) in private[1]
            )
            lines.append(f"{match[1]} {match[2]} {match[3]} {match[4]}")
            if hiding and match[2] == "!":
                lines.append("    (a private patch: its changes are not shown)")
        elif not hiding:
            lines.append(line.rstrip())
    return "\n".join(lines)


def _subjects(git: Git, revisions: str) -> list[str]:
    """The subjects of the commits of `revisions`, oldest first."""
    listing = git.run("log", "--reverse", "--format=%s%x00", revisions).text
    return [subject.strip("\n") for subject in listing.split("\0")[:-1]]


def render_report(
    git: Git,
    state: RebaseState,
    new: BaseRef,
    names: dict[str, str],
    private_commits: set[str] = frozenset(),  # type: ignore[assignment]
) -> str:
    counts: dict[str, int] = {}
    for patch in state.patches:
        counts[patch.outcome or ""] = counts.get(patch.outcome or "", 0) + 1
    summary = (
        ", ".join(
            f"{counts[o]} {o}"
            for o in (CLEAN, THREE_WAY, BY_HAND, UPSTREAM, SKIPPED)
            if o in counts
        )
        or "no patches"
    )
    source = (
        f"{new.source.filename} (sha256 {new.source.sha256})"
        if isinstance(new.source, PypiSource)
        else new.source.url
    )
    lines = [
        f"# Rebase of {state.device} from {state.old_base_id} to {new.base_id}",
        "",
        f"- old base: {state.old_base_id} ({state.old_base_commit})",
        f"- new base: {new.base_id} ({new.commit}), from {source}",
        f"- patches: {len(state.patches)}: {summary}",
        "",
        "| # | patch | outcome | file in the new series |",
        "| --- | --- | --- | --- |",
    ]
    for number, patch in enumerate(state.patches, start=1):
        new_name = names.get(patch.new_commit or "", "-")
        lines.append(f"| {number} | {patch.name} | {patch.outcome} | {new_name} |")
    notes = [p for p in state.patches if p.conflicts or p.note]
    if notes:
        lines += ["", "## Conflicts and how they were settled", ""]
        for patch in notes:
            lines.append(f"### {patch.name} ({patch.outcome})")
            lines.append("")
            lines += [f"- conflict: {c}" for c in patch.conflicts]
            if patch.note:
                lines.append(f"- resolution: {patch.note}")
            lines.append("")
        while lines[-1] == "":
            lines.pop()
    private_old = {
        i for i, p in enumerate(state.patches, start=1) if p.name.endswith(PRIVATE_SUFFIX)
    }
    new_commits = git.lines("rev-list", "--reverse", f"{new.commit}..HEAD")
    private_new = {i for i, c in enumerate(new_commits, start=1) if c in private_commits}
    diff = range_diff(
        git, state.old_base_commit, OLD_TIP_REF, new.commit, "HEAD", (private_old, private_new)
    )
    lines += [
        "",
        "## Range-diff (old series vs new series)",
        "",
        "`=` unchanged, `!` changed, `<` only in the old series, `>` only in the new one.",
        "",
        "```",
        diff or "(no patches on either side)",
        "```",
    ]
    return "\n".join(lines) + "\n"


__all__ = [
    "RebaseOptions",
    "RebaseResult",
    "conflict_ranges",
    "rebase",
]
