"""`rebase`: carry a device's series from one upstream base to another.

The old base's series is applied in the device's build tree (as `unpatch` would),
the new base is fetched into the same repository, and every patch is
cherry-picked onto the new base one at a time, so that each gets its own
outcome: applied unchanged (clean), merged by git (3-way), resolved by hand,
dropped because upstream already holds it, or skipped on request. `--onto` an
existing base of the device carries the series' changes onto that base's
series instead (carry.py); `--dry-run` forecasts (forecast.py).

A conflict stops the run with the tree in a resumable state (state.py). The
store is written only when the last patch is in (finish.py): a new base
folder appears atomically next to the old one, which is never touched, so
both releases stay buildable; a carried base's folder is exchanged with its
update. `--abort` returns the tree and the store to what they were.

A run killed at any point (see the `rebase:*` kill points) leaves a state that
`--abort` undoes and, once the patches are being picked, `--continue` resumes.
Lock files a killed git left in the tree are reported, never deleted.
"""

from __future__ import annotations

from pathlib import Path

from patchtool.commands.rebase.carry import carry_targets, next_step, start_carry
from patchtool.commands.rebase.finish import (
    abort_store,
    finish_carry,
    finish_new_base,
    stage_carried,
)
from patchtool.commands.rebase.interdiff import git_blob_id
from patchtool.commands.rebase.start import (
    apply_old_series,
    initial_state,
    prepare_tree,
    refuse_to_start,
    restore_tree,
)
from patchtool.commands.rebase.state import (
    ALREADY_IN,
    BY_HAND,
    DROP,
    FOLD,
    KEEP,
    NEXT,
    PICKED,
    PICKING,
    SKIPPED,
    STARTING,
    UNCHANGED,
    UPSTREAM,
    PatchState,
    RebaseOptions,
    RebaseResult,
    RebaseState,
    find_rebasing_tree,
    load_state,
    owns_tree,
    save_state,
)
from patchtool.core.errors import ConflictError, DirtyTreeError, IntegrityError, UsageError, quoted
from patchtool.core.faults import kill_point
from patchtool.core.fsutil import check_name
from patchtool.core.gitops import TOOL_COMMITTER, Git
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.series.privacy import load_series
from patchtool.sources.bases import ensure_base, parse_onto, resolve_new_base
from patchtool.store.model import BaseRef, DeviceConfig
from patchtool.store.series import parse_series
from patchtool.trees.picking import (
    commit_patch_ids,
    conflict_ranges,
    describe_conflict,
    is_empty_pick,
    unmerged,
)
from patchtool.trees.record import TreeLocation
from patchtool.trees.staging import recover_interrupted
from patchtool.trees.work import refuse_git_locks


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
        if options.onto is None and not options.carried:
            raise UsageError("rebase needs --onto NEW-BASE (a version, or git+URL@COMMIT)")
        old = options.store.resolve_base(device.name, options.base)
        tree = TreeLocation(options.build_dir, device.name, old.project).tree
        refuse_git_locks(tree)
        targets = carry_targets(options, old)
        if targets:
            state = start_carry(options, old, targets, tree, device, reporter)
        else:
            state = _start(options, old, tree, device, reporter)
    else:
        tree = find_rebasing_tree(options.build_dir, device.name)
        refuse_git_locks(tree)
        state = load_state(tree)
        if options.action == "abort":
            reporter.step(f"aborting the rebase in {tree}")
            abort_store(state, reporter)
            restore_tree(tree, state, reporter)
            return RebaseResult(tree, state.original_base_id or state.old_base_id, None, (), None)
        _check_resumable(tree, state, options.action)
        if state.phase == NEXT:
            next_step(options, tree, state, device, reporter)
        elif options.action == "skip":
            _skip_current(tree, state, reporter)
        else:
            _continue_current(tree, state, options.note, reporter)
    while True:
        _pick_remaining(tree, state, reporter)
        if not state.carry:
            return finish_new_base(tree, state, reporter)
        if state.phase == PICKING:
            stage_carried(tree, state, options.keyring, reporter)
        if state.phase == NEXT:
            next_step(options, tree, state, device, reporter)
            continue
        return finish_carry(tree, state, reporter)


def _check_resumable(tree: Path, state: RebaseState, action: str) -> None:
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
    if not owns_tree(tree, state):
        raise UsageError(
            f"the build tree {tree} is not the one this rebase worked in: it was replaced "
            "or removed after the rebase started",
            hint=f"Run `patchtool rebase -d {device} --abort` to drop the rebase; "
            "it leaves that tree as it is.",
        )
    if state.phase == NEXT and action == "skip":
        raise UsageError(
            f"the rebase of {device} stopped between two bases: there is no patch to skip",
            hint=f"Run `patchtool rebase -d {device} --continue`, or --abort.",
        )


# --------------------------------------------------------------------------- start


def _start(
    options: RebaseOptions, old: BaseRef, tree: Path, device: DeviceConfig, reporter: Reporter
) -> RebaseState:
    refuse_to_start(options, tree)
    spec = parse_onto(options.onto or "", old.project, options.version_label)
    series = parse_series(old, device.limits)
    # Private patches are read (decrypted) before anything else happens.
    loaded = load_series(series, device.limits, options.keyring, device.recipients)
    folder = options.store.root / old.device / f"{spec.project}-{spec.version}"
    if folder.exists():
        # An existing base is carried onto (carry.py); this is no base.
        raise UsageError(
            f"the base folder {folder} already exists, without a base.toml",
            hint="Move it away, or rebase onto another version. `--onto` a base the device "
            "has carries the series' changes onto it.",
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
    state = initial_state(options, old, new, tree, header)
    state.from_blobs = [[p.entry.name, git_blob_id(p.path.read_bytes())] for p in loaded.patches]
    save_state(tree, state)
    try:
        prepare_tree(tree, old, old_repository, state, reporter)
        commits, subjects = apply_old_series(
            tree, old, new, (old_repository, new_repository), loaded, reporter
        )
    except BaseException:
        restore_tree(tree, state, reporter)
        raise
    state.patches = [
        PatchState(e.name, s, c) for e, s, c in zip(series.entries, subjects, commits, strict=True)
    ]
    state.phase = PICKING
    save_state(tree, state)
    return state


# --------------------------------------------------------------------------- picking


def _pick_remaining(tree: Path, state: RebaseState, reporter: Reporter) -> None:
    git = Git(tree, env=TOOL_COMMITTER)
    total = len(state.patches)
    while state.position < total:
        patch = state.patches[state.position]
        head = git.text("rev-parse", "HEAD")
        if patch.action == DROP or (
            # The target's commit on the same parent (or there already, when a
            # run was killed after moving HEAD): kept as it is.
            patch.action == KEEP and head in (patch.old_commit, _parent(git, patch.old_commit))
        ):
            if patch.action == KEEP:
                # The run of target commits that follow one another moves HEAD once.
                last = state.position
                while (
                    last + 1 < total
                    and state.patches[last + 1].action == KEEP
                    and _parent(git, state.patches[last + 1].old_commit)
                    == state.patches[last].old_commit
                ):
                    last += 1
                git.run("reset", "--quiet", "--hard", state.patches[last].old_commit)
                for kept in state.patches[state.position : last + 1]:
                    kept.outcome, kept.new_commit = UNCHANGED, kept.old_commit
                state.position = last
            _advance(tree, state)
            continue
        state.pick_from = head
        state.pick_running = True
        save_state(tree, state)
        reporter.step(f"[{state.position + 1}/{total}] {patch.name}")
        if patch.action == FOLD:
            result = git.run("cherry-pick", "--no-commit", patch.old_commit, check=False)
        else:
            result = git.run("cherry-pick", "--allow-empty-message", patch.old_commit, check=False)
        kill_point("rebase:picked")
        kill_point(f"rebase:picked:{state.position + 1}")
        if result.returncode == 0:
            if patch.action == FOLD:
                _fold(git, state, patch, None)
            else:
                patch.outcome, patch.new_commit = PICKED, git.text("rev-parse", "HEAD")
        else:
            conflicted = unmerged(git)
            if conflicted:
                patch.conflicts = [describe_conflict(tree, path) for path in conflicted]
                state.pick_running = False  # stopped for the user, not killed
                save_state(tree, state)
                raise _conflict_error(state, patch, tree)
            if not is_empty_pick(result.stderr + result.text):
                raise IntegrityError(
                    f"cherry-pick of {patch.name} failed:\n{result.stderr}",
                    hint="Abort with `patchtool rebase --abort` and report it.",
                )
            git.run("cherry-pick", "--skip")
            patch.outcome = UPSTREAM
            reporter.info(f"{patch.name}: already upstream in {state.new_base.version}; dropped")
        _advance(tree, state)


def _advance(tree: Path, state: RebaseState) -> None:
    state.position += 1
    state.pick_from = None
    state.pick_running = False
    save_state(tree, state)


def _parent(git: Git, commit: str) -> str | None:
    return git.rev_parse(f"{commit}^")


def _fold(git: Git, state: RebaseState, patch: PatchState, note: str | None) -> None:
    """A carried change is in the index on top of the target's version of its
    patch: one amend makes them one commit (or nothing, when the change is
    there already), with the message `message_from` names."""
    kept = state.patches[state.position - 1]
    unchanged = git.run("diff", "--cached", "--quiet", "HEAD", check=False).returncode == 0
    if unchanged and patch.message_from is None:
        patch.outcome, patch.note = ALREADY_IN, note
        return
    if unchanged:
        # Only the message changed on the from-base (a reworded body): the
        # target's version keeps its code and takes the new message.
        patch.outcome = "clean"
        patch.detail = "only its message changed: the new message replaces this base's"
    elif note is not None or patch.conflicts:
        patch.outcome = BY_HAND
    else:
        staged = git.run("diff", "--cached", "--no-color", "HEAD").stdout
        picked = git.run("patch-id", "--stable", input=staged).text.split()[:1]
        wanted = commit_patch_ids(git, [patch.old_commit]).get(patch.old_commit)
        patch.outcome = "clean" if picked and picked[0] == wanted else "3-way"
    git.run(
        "commit",
        "--quiet",
        "--amend",
        "--no-verify",
        *(["--allow-empty"] if unchanged else []),
        "--allow-empty-message",
        "-C",
        patch.message_from or "HEAD",
    )
    patch.note = note
    kept.new_commit, kept.outcome = git.text("rev-parse", "HEAD"), patch.outcome


def _conflict_error(state: RebaseState, patch: PatchState, tree: Path) -> ConflictError:
    number = state.position + 1
    device = state.device
    what = "the change to" if patch.action == FOLD else "patch"
    return ConflictError(
        f"{what} {patch.name} ({number} of {len(state.patches)}, {quoted(patch.subject)}) "
        f"conflicts with {state.new_base.label} in {tree}:\n  "
        + "\n  ".join(patch.conflicts),
        hint=f"Resolve the conflicts in {tree}, `git add` the files, then run "
        f"`patchtool rebase -d {device} --continue` (or commit yourself, then --continue; "
        f"--note TEXT records how). `--skip` drops this patch; `--abort` puts the build tree "
        "and the store back as they were before the rebase.",
    )


def _refuse_unresolved(git: Git, tree: Path, patch: PatchState) -> None:
    conflicted = unmerged(git)
    if conflicted:
        raise ConflictError(
            f"patch {patch.name} still has unresolved files: {', '.join(conflicted)}",
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
        save_state(tree, state)
        return
    if patch.action == FOLD:
        _continue_fold(git, tree, state, patch, note)
    elif git.rev_parse("CHERRY_PICK_HEAD") is not None:
        _refuse_unresolved(git, tree, patch)
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
    _advance(tree, state)


def _continue_fold(
    git: Git, tree: Path, state: RebaseState, patch: PatchState, note: str | None
) -> None:
    """A carried change that conflicted, resolved: folded into the target's
    version of its patch (a commit the user made on top is folded too)."""
    head = git.text("rev-parse", "HEAD")
    start = state.pick_from or head
    if head == start:
        _refuse_unresolved(git, tree, patch)
        _fold(git, state, patch, note or "")
        if patch.outcome == ALREADY_IN:
            patch.note = note or "the resolution left no change"
    elif _parent(git, head) == start:
        git.run("reset", "--quiet", "--soft", start)
        _fold(git, state, patch, note or "")
    elif _parent(git, head) == _parent(git, start):
        # A run killed after its amend: the fold is made.
        kept = state.patches[state.position - 1]
        patch.outcome, patch.note = BY_HAND, note
        kept.new_commit, kept.outcome = head, BY_HAND
    else:
        raise UsageError(
            f"the build tree's HEAD moved more than one commit past the change to {patch.name}",
            hint="Put the resolution in one commit (or leave it staged), then --continue.",
        )
    if patch.note == "":
        patch.note = None


def _skip_current(tree: Path, state: RebaseState, reporter: Reporter) -> None:
    if state.position >= len(state.patches):
        return
    git = Git(tree, env=TOOL_COMMITTER)
    patch = state.patches[state.position]
    _undo_pick(git, state)
    patch.outcome = SKIPPED
    reporter.warn(f"{patch.name}: skipped; it is not in the new series")
    following = state.position + 1
    if (
        following < len(state.patches)
        and state.patches[following].action == FOLD
        and patch.action != FOLD
    ):
        # The target's version of an updated patch is skipped: its change goes too.
        state.patches[following].outcome = SKIPPED
        state.position += 1
    _advance(tree, state)


def _undo_pick(git: Git, state: RebaseState) -> None:
    """Back to HEAD as it was before the patch at `position` was picked."""
    git.run("cherry-pick", "--quit", check=False)
    git.run("reset", "--quiet", "--hard", state.pick_from or "HEAD")
