"""`rebase --onto EXISTING`: carry what changed in a series onto a base that was
carried from it before, keeping every resolution that base already holds.

Each patch of the from-series is paired with its counterpart in the target's
series by what the target's report recorded (report.py's pairing block: the
git blob id each from-patch's file had when it was last carried); a report
from before that block is paired by name (its outcome table), then by subject,
then by patch-id. Then, in the target's order:

    kept     unchanged since: the target's commit, as it is (its file byte for byte)
    added    new in the from-series: picked with a 3-way merge at its place,
             before the counterpart of the next paired from-patch
    updated  changed since: the change (old version -> new, as an "interdiff"
             commit made on the from-series) picked onto the target's version
             and folded into it; an earlier version that is not at hand
             (neither in a base folder nor in the store's git history) makes
             the new version be picked anew instead
    removed  gone from the from-series: left out
    own      only in the target's series: kept

`--onto A,B` carries onto A from the -c base, then onto B from A as just
carried (its staged folder), and so on; `--carried` takes every base whose
report leads back to the -c base, nearest first.
"""

from __future__ import annotations

from pathlib import Path

from patchtool.commands.rebase.interdiff import FromPatch, git_blob_id, make_interdiff
from patchtool.commands.rebase.report import REPORT_FILE, Pairing, read_pairing
from patchtool.commands.rebase.start import (
    apply_on,
    fetch_bases,
    initial_state,
    prepare_tree,
    refuse_to_start,
    restore_tree,
)
from patchtool.commands.rebase.state import (
    ADDED,
    CARRIED_REF_PREFIX,
    DROP,
    FOLD,
    KEEP,
    KEPT,
    NEW_BASE_REF,
    OLD_BASE_REF,
    OLD_TIP_REF,
    OWN,
    PICK,
    PICKING,
    REMOVED,
    TARGET_TIP_REF,
    UNCHANGED,
    UPDATED,
    PatchState,
    RebaseOptions,
    RebaseState,
    save_state,
)
from patchtool.core.errors import NotFoundError, UsageError, quoted
from patchtool.core.faults import kill_point
from patchtool.core.gitops import TOOL_COMMITTER, Git
from patchtool.core.report import Reporter
from patchtool.series.privacy import LoadedSeries, load_series
from patchtool.series.safety import TreeJudge
from patchtool.sources.bases import ensure_base
from patchtool.store.model import BaseRef, DeviceConfig
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series
from patchtool.trees.committing import commit_series
from patchtool.trees.picking import commit_patch_ids

LEFT_OUT = "not in this series"


# --------------------------------------------------------------------------- the targets


def carry_targets(options: RebaseOptions, old: BaseRef) -> list[BaseRef]:
    """The existing bases to carry onto, in order; [] for a rebase onto a new base."""
    store, device = options.store, old.device
    if options.carried:
        if options.onto is not None:
            raise UsageError("--carried and --onto exclude each other")
        found = carried_from(store, device, old.base_id)
        if not found:
            raise UsageError(
                f"no base of {device} was carried from {old.base_id} (no rebase-report.md "
                "names it as the old base)",
                hint="Name the bases with `--onto A,B`, or rebase onto a new version.",
            )
        return found
    assert options.onto is not None
    # `vllm==0.7.3` names the version 0.7.3 of the base's project.
    names = [n.strip().removeprefix(f"{old.project}==").strip() for n in options.onto.split(",")]
    if len(names) == 1 and (names[0].startswith("git+") or not _existing(store, device, names[0])):
        return []
    targets = []
    for name in names:
        if not name or not _existing(store, device, name):
            raise UsageError(
                f"--onto {quoted(options.onto)}: {quoted(name)} is not a base of {device}",
                hint="A list carries onto existing bases only; rebase onto a new version alone.",
            )
        targets.append(store.resolve_base(device, name))
    ids = [t.base_id for t in targets]
    if old.base_id in ids or len(set(ids)) != len(ids):
        raise UsageError(
            f"--onto {quoted(options.onto)} names {old.base_id} or one base twice",
            hint="Name each base to carry onto once, not the base carried from.",
        )
    return targets


def _existing(store: Store, device: str, name: str) -> bool:
    try:
        store.resolve_base(device, name)
    except NotFoundError:
        return False
    return True


def carried_from(store: Store, device: str, base_id: str) -> list[BaseRef]:
    """Every base whose report leads back to `base_id`, each after the one it
    was carried from (in version order where that leaves a choice)."""
    parents: dict[str, str] = {}
    bases = store.bases(device)
    for base in bases:
        report = base.path / REPORT_FILE
        if report.is_file():
            pairing = read_pairing(report.read_text("utf-8"))
            if pairing is not None:
                parents[base.base_id] = pairing.from_base
    reached = {base_id}
    ordered: list[BaseRef] = []
    changed = True
    while changed:
        changed = False
        for base in bases:
            if base.base_id not in reached and parents.get(base.base_id) in reached:
                reached.add(base.base_id)
                ordered.append(base)
                changed = True
    return ordered


# --------------------------------------------------------------------------- starting


def start_carry(
    options: RebaseOptions,
    old: BaseRef,
    targets: list[BaseRef],
    tree: Path,
    device: DeviceConfig,
    reporter: Reporter,
) -> RebaseState:
    refuse_to_start(options, tree)
    target = targets[0]
    for base in (old, *targets):
        if base.project != old.project:
            raise UsageError(f"{base.base_id} is a base of {base.project}, not of {old.project}")
    series = parse_series(old, device.limits)
    loaded = load_series(series, device.limits, options.keyring, device.recipients)
    old_repository, target_repository = (
        ensure_base(b, options.cache, reporter, options.archive_paths, limits=device.limits)
        for b in (old, target)
    )
    state = initial_state(options, old, target, tree, list(parse_series(target).header))
    state.carry, state.original_base_id = True, old.base_id
    state.chain = [t.base_id for t in targets[1:]]
    save_state(tree, state)
    try:
        # A missing tree is made at the target's base: the picks happen there.
        prepare_tree(tree, target, target_repository, state, reporter)
        git = Git(tree, env=TOOL_COMMITTER)
        (judge,) = fetch_bases(git, [(old_repository, old, OLD_BASE_REF)])
        commits = series_commits(git, tree, old, loaded, judge, reporter)
        git.run("update-ref", OLD_TIP_REF, commits[-1] if commits else old.commit)
        kill_point("rebase:applied-old-series")
        files = [(p.entry.name, p.path.read_bytes()) for p in loaded.patches]
        _set_up_step(
            options, tree, state, old, target, commits, files, [old.path], device, reporter
        )
    except BaseException:
        restore_tree(tree, state, reporter)
        raise
    return state


def next_step(
    options: RebaseOptions, tree: Path, state: RebaseState, device: DeviceConfig, reporter: Reporter
) -> None:
    """The next base of the chain, carried from the one just staged."""
    from patchtool.commands.rebase.finish import base_stage

    previous = state.new_base
    git = Git(tree, env=TOOL_COMMITTER)
    tip = CARRIED_REF_PREFIX + previous.base_id
    git.run("update-ref", OLD_TIP_REF, tip)
    kill_point("rebase:next-step")
    commits = git.lines("rev-list", "--reverse", f"{previous.commit}..{tip}")
    staged = base_stage(previous.path, state)
    names = [
        line.strip()
        for line in (staged / "series").read_text("utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = [(name, (staged / name).read_bytes()) for name in names]
    target = options.store.resolve_base(state.device, state.chain[0])
    state.old_base_id, state.old_base_commit = previous.base_id, previous.commit
    _set_up_step(
        options, tree, state, previous, target, commits, files, [previous.path], device, reporter
    )


def _set_up_step(
    options: RebaseOptions,
    tree: Path,
    state: RebaseState,
    source: BaseRef,
    target: BaseRef,
    commits: list[str],
    files: list[tuple[str, bytes]],
    folders: list[Path],
    device: DeviceConfig,
    reporter: Reporter,
) -> None:
    """One base of the carry: its series applied on it (TARGET_TIP_REF), the
    from-series paired with it, the plan made, the target's base checked out."""
    git = Git(tree, env=TOOL_COMMITTER)
    if len(commits) != len(files):
        raise UsageError(
            f"the series of {source.base_id} did not apply as one commit per patch",
            hint=f"Run `patchtool rebase -d {state.device} --abort`; check the series.",
        )
    target_series = parse_series(target, device.limits)
    loaded = load_series(target_series, device.limits, options.keyring, device.recipients)
    repositories = [
        ensure_base(b, options.cache, reporter, options.archive_paths, limits=device.limits)
        for b in (source, target)
    ]
    _, judge = fetch_bases(
        git, [(repositories[0], source, OLD_BASE_REF), (repositories[1], target, NEW_BASE_REF)]
    )
    # The target's series with git am: the picks start from its files anyway.
    target_commits = apply_on(git, tree, target, loaded, judge, reporter)
    git.run("update-ref", TARGET_TIP_REF, target_commits[-1] if target_commits else target.commit)
    from_patches = [
        FromPatch(name, git_blob_id(data), commit, _subject(git, commit))
        for (name, data), commit in zip(files, commits, strict=True)
    ]
    targets = [
        (p.entry.name, commit, _subject(git, commit))
        for p, commit in zip(loaded.patches, target_commits, strict=True)
    ]
    report = target.path / REPORT_FILE
    pairing = read_pairing(report.read_text("utf-8")) if report.is_file() else None
    plan, how = plan_carry(git, source.base_id, from_patches, targets, pairing)
    for index, patch in enumerate(plan):
        if patch.action == FOLD:
            make_interdiff(
                git, options, tree, plan, index, from_patches, folders, source, device, reporter
            )
    position, head = _kept_prefix(plan, target_commits, target.commit)
    git.run("reset", "--quiet", "--hard", head)
    kill_point("rebase:checked-out-new")
    state.new_base = target
    state.series_header = list(target_series.header)
    state.from_blobs = [[p.name, p.blob] for p in from_patches]
    state.pairing = how
    state.patches, state.position, state.pick_from = plan, position, None
    if state.chain and state.chain[0] == target.base_id:
        state.chain.pop(0)
    state.phase = PICKING
    save_state(tree, state)


def _kept_prefix(plan: list[PatchState], commits: list[str], base: str) -> tuple[int, str]:
    """The target's own commits the plan starts with stay as they are: they are
    marked kept, and the picks start after the last of them (HEAD goes there
    from the target's tip, rewriting the files of the patches after it only)."""
    position, count = 0, 0
    for patch in plan:
        if patch.action == DROP and patch.change == KEPT:  # left out before, and now
            position += 1
        elif patch.action == KEEP and count < len(commits) and patch.old_commit == commits[count]:
            patch.outcome, patch.new_commit = UNCHANGED, patch.old_commit
            position, count = position + 1, count + 1
        else:
            break
    return position, commits[count - 1] if count else base


def series_commits(
    git: Git, tree: Path, base: BaseRef, loaded: LoadedSeries, judge: TreeJudge, reporter: Reporter
) -> list[str]:
    """The series' commits on its base: made without a checkout where every
    patch is a mail that applies (trees/committing.py), else by `git am`."""
    reporter.step(f"committing {len(loaded.patches)} patch(es) of {base.base_id} on {base.label}")
    commits = commit_series(tree, base.commit, loaded, judge)
    return commits if commits is not None else apply_on(git, tree, base, loaded, judge, reporter)


def _subject(git: Git, commit: str) -> str:
    return git.text("log", "-1", "--format=%s", commit)


# --------------------------------------------------------------------------- the plan


def plan_carry(
    git: Git,
    source: str,
    from_patches: list[FromPatch],
    targets: list[tuple[str, str, str]],
    pairing: Pairing | None,
) -> tuple[list[PatchState], str]:
    """The carry's steps in the target's order, and how the patches were paired."""
    index = {name: j for j, (name, _, _) in enumerate(targets)}
    paired: dict[int, int | None] = {}  # from index -> target index (None: left out there)
    updated: dict[int, str] = {}  # from index -> the blob of its version then
    details: dict[int, str] = {}
    recorded_here: set[str] = set()
    if pairing is not None and pairing.from_base == source:
        how = (
            "paired by the blob ids this report recorded"
            if pairing.recorded
            else "paired by name (this report predates recorded blob ids), then subject and "
            "patch-id"
        )
        by_name = {row[0]: row for row in pairing.rows}
        by_blob = {row[1]: row for row in pairing.rows if row[1]}
        recorded_here = {row[2] for row in pairing.rows if row[2]}
        for k, patch in enumerate(from_patches):
            row = by_name.get(patch.name)
            if pairing.recorded and not (row and row[1] == patch.blob):
                same = by_blob.get(patch.blob)
                if same is not None:
                    row = same
                elif row is not None:
                    updated[k] = row[1] or ""
            if row is not None:
                paired[k] = index.get(row[2]) if row[2] else None
    else:
        how = f"paired by subject and patch-id (this base's report names no pairing with {source})"
    claimed = {j for j in paired.values() if j is not None}
    loose = [k for k in range(len(from_patches)) if k not in paired]
    ids = commit_patch_ids(git, [from_patches[k].commit for k in loose] + [t[1] for t in targets])
    for k in loose:
        patch = from_patches[k]
        for j, (_, commit, subject) in enumerate(targets):
            if j in claimed:
                continue
            by_subject = subject == patch.subject
            if by_subject or (ids.get(commit) and ids.get(commit) == ids.get(patch.commit)):
                paired[k] = j
                claimed.add(j)
                details[k] = "paired by " + ("subject" if by_subject else "patch-id")
                break
    return _sequence(from_patches, targets, paired, updated, details, recorded_here), how


def _sequence(
    from_patches: list[FromPatch],
    targets: list[tuple[str, str, str]],
    paired: dict[int, int | None],
    updated: dict[int, str],
    details: dict[int, str],
    recorded_here: set[str],
) -> list[PatchState]:
    of_target = {j: k for k, j in paired.items() if j is not None}
    before: dict[int | None, list[PatchState]] = {}
    for k, patch in enumerate(from_patches):
        if k in paired and paired[k] is not None:
            continue
        if k in paired:  # left out there before
            change, action, outcome = (
                (UPDATED, PICK, None) if k in updated else (KEPT, DROP, LEFT_OUT)
            )
        else:
            change, action, outcome = ADDED, PICK, None
        state = PatchState(
            patch.name, patch.subject, patch.commit, outcome=outcome, change=change,
            action=action, from_name=patch.name, detail=details.get(k),
        )  # fmt: skip
        anchor: int | None = next(
            (paired[n] for n in range(k + 1, len(from_patches)) if paired.get(n) is not None),
            None,
        )
        before.setdefault(anchor, []).append(state)
    plan: list[PatchState] = []
    for j, (name, commit, subject) in enumerate(targets):
        plan += before.get(j, [])
        origin = of_target.get(j)
        if origin is None:
            change = REMOVED if name in recorded_here else OWN
            plan.append(
                PatchState(
                    name,
                    subject,
                    commit,
                    outcome="removed" if change == REMOVED else None,
                    change=change,
                    action=DROP if change == REMOVED else KEEP,
                    target_name=name,
                )
            )
            continue
        patch = from_patches[origin]
        detail = details.get(origin)
        # The target's version is kept; an updated one is followed by the fold
        # step that carries the from-patch's change onto it.
        change = UPDATED if origin in updated else KEPT
        plan.append(
            PatchState(
                name,
                subject,
                commit,
                change=change,
                action=KEEP,
                from_name=patch.name,
                target_name=name,
                detail=detail,
            )
        )
        if origin in updated:
            plan.append(
                PatchState(
                    name,
                    patch.subject,
                    updated[origin],
                    change=UPDATED,
                    action=FOLD,
                    from_name=patch.name,
                    target_name=name,
                    detail=detail,
                )
            )
    return plan + before.get(None, [])
