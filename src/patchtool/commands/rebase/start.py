"""What every rebase does before its first pick, and what `--abort` undoes:
the refusal of a tree holding work, the state that puts the tree back, the
tree made when missing, the bases fetched and judged, a series applied.
Shared by a rebase onto a new base and a carry onto existing ones.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from patchtool.commands.rebase.state import (
    CARRIED_REF_PREFIX,
    NEW_BASE_REF,
    OLD_BASE_REF,
    OLD_TIP_REF,
    STARTING,
    TARGET_TIP_REF,
    RebaseOptions,
    RebaseState,
    mark_tree,
    marker_path,
    owns_tree,
    rebase_in_progress,
)
from patchtool.core.errors import ConflictError, DirtyTreeError, UsageError
from patchtool.core.faults import kill_point
from patchtool.core.fsutil import atomic_write, fsync_directory, remove_tree
from patchtool.core.gitops import TOOL_COMMITTER, Git
from patchtool.core.report import Reporter
from patchtool.series.privacy import LoadedSeries
from patchtool.series.safety import TreeJudge
from patchtool.sources.cache import base_ref_name
from patchtool.store.model import BaseRef
from patchtool.trees.applying import apply_series, checkout_base
from patchtool.trees.in_progress import state_path
from patchtool.trees.record import BASE_REF, BASE_TAG, METADATA_FILE, TreeRecord, write_record
from patchtool.trees.staging import TRASH_PREFIX, backup_path, new_stage
from patchtool.trees.work import existing_work


def refuse_to_start(options: RebaseOptions, tree: Path) -> None:
    if rebase_in_progress(tree):
        raise UsageError(
            f"a rebase is already in progress in {tree}",
            hint=f"Go on with `patchtool rebase -d {options.device} --continue`, "
            "or --skip / --abort.",
        )
    # What rebase keeps in place (ignored files, the reflog, .git's state) does
    # not stop it: it changes the tree where it is, it does not replace it.
    work = existing_work(tree, options.store, options.device, options.keyring).refused
    if work:
        raise DirtyTreeError(
            f"the build tree {tree} holds work that exists nowhere else:\n  {work}",
            hint=f"Export it with `patchtool patch --device-type {options.device}` first; "
            "rebase starts from the store's series.",
        )


def initial_state(
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


def prepare_tree(
    tree: Path, old: BaseRef, old_repository: Path, state: RebaseState, reporter: Reporter
) -> None:
    """The state is saved; the tree is marked, or made (marked) when missing."""
    if state.tree_existed:
        mark_tree(tree, state)
    kill_point("rebase:state-saved")
    if not state.tree_existed:
        reporter.step(f"checking out {old.label} ({old.commit[:12]})")
        _create_tree(old_repository, tree, old, state)
        kill_point("rebase:tree-created")


def fetch_bases(git: Git, bases: list[tuple[Path, BaseRef, str]]) -> list[TreeJudge]:
    """Each base from its cache repository into the tree under `ref`; every one
    judged before any is checked out."""
    for repository, base, ref in bases:
        git.run(
            "fetch", "--quiet", "--no-tags", str(repository), f"+{base_ref_name(base.commit)}:{ref}"
        )
    kill_point("rebase:fetched")
    return [TreeJudge(git, base.commit, f"base {base.label}") for _, base, _ in bases]


def apply_on(
    git: Git, tree: Path, base: BaseRef, loaded: LoadedSeries, judge: TreeJudge, reporter: Reporter
) -> list[str]:
    """The series applied on `base` as unpatch applies it; its commits."""
    reporter.step(f"applying {len(loaded.patches)} patch(es) of {base.base_id} on {base.label}")
    git.run("checkout", "--quiet", "--force", "--detach", base.commit)
    try:
        apply_series(tree, loaded, judge, False, reporter)
    except ConflictError as error:
        raise ConflictError(
            f"the series of {base.base_id} does not apply to its own base:\n{error.message}",
            hint="Fix the store first: "
            f"`patchtool unpatch -d {base.device} -c {base.base_id}` "
            "shows which patch fails.",
        ) from None
    return git.lines("rev-list", "--reverse", f"{base.commit}..HEAD")


def apply_old_series(
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
    judge, _ = fetch_bases(
        git, [(repositories[0], old, OLD_BASE_REF), (repositories[1], new, NEW_BASE_REF)]
    )
    commits = apply_on(git, tree, old, loaded, judge, reporter)
    kill_point("rebase:applied-old-series")
    git.run("update-ref", OLD_TIP_REF, "HEAD")
    subjects = [git.text("log", "-1", "--format=%s", c) for c in commits]
    reporter.step(f"checking out {new.label} ({new.commit[:12]})")
    git.run("checkout", "--quiet", "--force", "--detach", new.commit)
    kill_point("rebase:checked-out-new")
    return commits, subjects


def _moved_refs(device: str) -> tuple[str, ...]:
    """The refs besides HEAD and the rebase's own that a rebase moves (in finish)."""
    return (BASE_REF, f"refs/tags/{BASE_TAG}", f"refs/heads/{device}")


def _ref_value(git: Git, ref: str) -> str | None:
    """The object a ref names, not peeled (an annotated tag stays the tag object)."""
    result = git.run("rev-parse", "--verify", "--quiet", ref, check=False)
    return result.text.strip() if result.returncode == 0 else None


def _create_tree(repository: Path, tree: Path, old: BaseRef, state: RebaseState) -> None:
    """The old base's tree, made in a staging folder and renamed into place with
    the rebase's mark already in it: a kill leaves no tree or a whole marked one
    (a staging folder left behind is removed by the next run's recovery)."""
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
        mark_tree(staged, state)
        os.rename(staged, tree)
        fsync_directory(tree.parent)
    finally:
        remove_tree(stage)


def drop_rebase_refs(git: Git) -> None:
    """The refs only a rebase uses, gone."""
    for ref in (OLD_BASE_REF, OLD_TIP_REF, NEW_BASE_REF, TARGET_TIP_REF):
        git.run("update-ref", "-d", ref, check=False)
    for ref in git.lines("for-each-ref", "--format=%(refname)", CARRIED_REF_PREFIX):
        git.run("update-ref", "-d", ref, check=False)


def restore_tree(tree: Path, state: RebaseState, reporter: Reporter) -> None:
    """Put the tree back as it was before the rebase (remove it if the rebase made
    it), then drop the state. Every step can be repeated, so a kill here is undone
    by the next --abort."""
    if not owns_tree(tree, state):
        if tree.exists():
            reporter.warn(
                f"{tree} was not changed by this rebase, or was replaced since; it is left as it is"
            )
        state_path(tree).unlink(missing_ok=True)
        return
    edits = _edits_made(tree)
    if not state.tree_existed:
        if edits:
            # The tree goes, but not what was written in it while the rebase stopped.
            backup = backup_path(tree.parent, tree.name)
            backup.parent.mkdir(parents=True, exist_ok=True)
            os.rename(tree, backup)
            state_path(tree).unlink(missing_ok=True)
            reporter.warn(
                f"the tree this rebase made held changes made while it was stopped "
                f"({_some(list(edits))}); it was moved to {backup}"
            )
            return
        # One rename takes the whole tree away; the next run's recovery removes
        # the trash folder if this one is killed before it does.
        trash = tree.with_name(f"{TRASH_PREFIX}{os.getpid()}-{state.rebase_id}")
        os.rename(tree, trash)
        fsync_directory(tree.parent)
        remove_tree(trash)
        state_path(tree).unlink(missing_ok=True)
        return
    git = Git(tree)
    tracked = [name for name, line in edits.items() if not line.startswith("??")]
    if tracked:
        # Saved before the reset below drops them: tracked edits as one diff
        # against HEAD (`git apply` puts them back); untracked files stay.
        diff = git.run("diff", "--binary", "--no-color", "--no-ext-diff", "HEAD").stdout
        saved = backup_path(tree.parent, f"{tree.name}-rebase-abort")
        saved = saved.with_name(saved.name + ".diff")
        saved.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(saved, diff)
        reporter.warn(_saved_edits_line(tree, state, tracked, saved))
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
    drop_rebase_refs(git)
    if state.saved_branch is not None:
        git.run("checkout", "--quiet", "--force", state.saved_branch)
    git.run("reset", "--quiet", "--hard", head)
    if state.saved_record is not None:
        atomic_write(tree / ".git" / METADATA_FILE, state.saved_record.encode("utf-8"))
    state_path(tree).unlink(missing_ok=True)
    marker_path(tree).unlink(missing_ok=True)


def _saved_edits_line(tree: Path, state: RebaseState, tracked: list[str], saved: Path) -> str:
    """Where the saved diff applies: on the rebase's stop it was taken at (the new
    base, the patches before the stopped one picked), not on the tree put back. A
    rebase that stops there again has the same files under a new HEAD; the diff
    restores the stop's resolution once the pick's half-merged files are reset."""
    where = f"on {state.new_base.label}"
    if state.position < len(state.patches):
        patch = state.patches[state.position]
        where += f" at patch {state.position + 1}/{len(state.patches)} ({patch.name})"
    return (
        f"the changes made in {tree} while the rebase was stopped ({_some(tracked)}) were "
        f"saved to {saved} before the tree was put back; the diff was taken {where} and "
        "applies there, not to the tree now: once a rebase onto it stops there again, "
        f"`git checkout HEAD -- . && git apply --index {saved}` in the tree restores them "
        f"(then `patchtool rebase -d {state.device} --continue`)"
    )


def _edits_made(tree: Path) -> dict[str, str]:
    """The tree's changed files (tracked ones against HEAD, untracked ones, a
    conflict's files included), each with its `git status` line."""
    if not (tree / ".git").is_dir():
        return {}
    result = Git(tree).run("status", "--porcelain=v1", "--untracked-files=all", check=False)
    return {line[3:]: line for line in result.text.splitlines() if len(line) > 3}


def _some(names: list[str]) -> str:
    return ", ".join(names[:10]) + (" …" if len(names) > 10 else "")
