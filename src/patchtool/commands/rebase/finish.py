"""The end of a rebase: the series judged, exported and written into the store.

A rebase onto a new base assembles the new base folder beside its place and
renames it in; a carry onto existing bases assembles each updated folder
beside its place ("staged", one per base, as each base's picks end) and, once
the last base is carried, exchanges each with the folder it replaces
(`fsutil.exchange_paths`), so that the old folder sits in the stage place
until the rebase ends. Each folder's digest is in the state before it enters
the store: `--abort` removes (or exchanges back) exactly what this rebase
wrote, and `--continue` after a kill knows what is written already.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from patchtool.commands.rebase.report import REPORT_FILE, render_report, update_report
from patchtool.commands.rebase.start import drop_rebase_refs
from patchtool.commands.rebase.state import (
    CARRIED_REF_PREFIX,
    CLEAN,
    FINISHING,
    FOLD,
    NEXT,
    PICKED,
    THREE_WAY,
    UNCHANGED,
    RebaseResult,
    RebaseState,
    marker_path,
    save_state,
    state_path,
)
from patchtool.core.errors import IntegrityError, UsageError
from patchtool.core.faults import kill_point
from patchtool.core.fsutil import exchange_paths, fsync_directory, remove_tree
from patchtool.core.gitops import TOOL_COMMITTER, Git
from patchtool.core.report import Reporter
from patchtool.series.pipeline import PreparedExport, prepare_export, write_export
from patchtool.series.privacy import Keyring, private_record
from patchtool.series.rendering import (
    private_pairs,
)
from patchtool.series.safety import TreeJudge
from patchtool.store.files import move_base_folder_in, move_base_folder_out, write_base_note
from patchtool.store.model import SERIES_FILE, BaseRef
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series, render_series, series_digest, write_base_files
from patchtool.trees.picking import commit_patch_ids
from patchtool.trees.record import BASE_REF, BASE_TAG, TreeRecord, write_record


def base_stage(folder: Path, state: RebaseState) -> Path:
    """Where this rebase assembles a base folder (and, on --abort, puts it aside
    to remove it): hidden, beside the folder, named for this rebase alone."""
    return folder.with_name(f".{folder.name}.patchtool-rebase-{state.rebase_id}")


def folder_digest(folder: Path) -> str | None:
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


def judge_and_classify(git: Git, state: RebaseState, new: BaseRef) -> None:
    """What the picks and the hand resolutions made is judged before the store
    sees it; a picked patch whose diff is unchanged applied as it was (clean),
    one whose diff changed needed git's 3-way merge."""
    commits = git.lines("rev-list", "--reverse", f"{new.commit}..HEAD")
    names = [p.name for p in state.patches if p.new_commit and p.action != FOLD]
    subjects = [f"patch {n} (rebased onto {new.label})" for n in names]
    if len(subjects) != len(commits):
        subjects = [f"commit {c[:12]} of the rebased series" for c in commits]
    TreeJudge(git, new.commit, f"base {new.label}").judge_commits(git, commits, subjects)
    picked = [p for p in state.patches if p.outcome == PICKED]
    ids = commit_patch_ids(git, [c for p in picked for c in (p.old_commit, p.new_commit or "")])
    for patch in picked:
        same = ids.get(patch.old_commit) == ids.get(patch.new_commit or "")
        patch.outcome = CLEAN if same else THREE_WAY


def finish_tree(tree: Path, state: RebaseState, new: BaseRef) -> None:
    """The tree becomes the (last) new base's: its refs, branch and record."""
    git = Git(tree, env=TOOL_COMMITTER)
    git.run("update-ref", BASE_REF, new.commit)
    git.run("tag", "--force", BASE_TAG, new.commit)
    git.run("checkout", "--quiet", "-B", state.device)
    drop_rebase_refs(git)
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


def _result(tree: Path, state: RebaseState, new: BaseRef) -> RebaseResult:
    return RebaseResult(
        tree,
        state.original_base_id or state.old_base_id,
        new,
        tuple((p.name, p.outcome or "") for p in state.patches if p.action != FOLD),
        new.path / REPORT_FILE,
    )


# --------------------------------------------------------------------------- a new base


def finish_new_base(tree: Path, state: RebaseState, reporter: Reporter) -> RebaseResult:
    git = Git(tree, env=TOOL_COMMITTER)
    new = state.new_base
    stage = base_stage(new.path, state)
    remove_tree(stage)  # left by a killed run of this rebase
    written = state.folder_digest is not None and folder_digest(new.path) == state.folder_digest
    if state.phase == FINISHING and written:
        # A killed run had renamed the folder into the store already: only the
        # tree's steps below are left (each can be repeated).
        reporter.step(f"{new.path} is already written; finishing the build tree")
    else:
        _write_new_base(git, tree, state, new, stage, reporter)
    finish_tree(tree, state, new)
    state_path(tree).unlink(missing_ok=True)
    marker_path(tree).unlink(missing_ok=True)
    return _result(tree, state, new)


def _write_new_base(
    git: Git, tree: Path, state: RebaseState, new: BaseRef, stage: Path, reporter: Reporter
) -> None:
    """Assemble the new base folder beside its place and rename it in. Its digest is
    in the state before the rename, so a later run knows the folder for its own."""
    judge_and_classify(git, state, new)
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
        state.phase, state.folder_digest = FINISHING, folder_digest(folder)
        save_state(tree, state)
        kill_point("rebase:before-store-write")
        move_base_folder_in(folder, new.path)
        kill_point("rebase:store-written")
    finally:
        remove_tree(stage)


def abort_store(state: RebaseState, reporter: Reporter) -> None:
    """Put the store back: a folder this rebase wrote, unchanged since, goes
    (a new base) or is exchanged back with the one it replaced (a carry)."""
    new = state.new_base
    if state.carry:
        entries = {e["path"]: e for e in state.staged}
        for path in [*entries, str(new.path)]:
            folder = Path(path)
            stage = base_stage(folder, state)
            entry = entries.get(path)
            if (
                entry is not None
                and folder_digest(folder) == entry["new_digest"]
                and folder_digest(stage) == entry["old_digest"]
            ):
                reporter.step(f"putting {folder} back as it was before this rebase")
                exchange_paths(stage, folder)
                fsync_directory(folder.parent)
            remove_tree(stage)
        return
    stage = base_stage(new.path, state)
    remove_tree(stage)
    if state.folder_digest is not None and folder_digest(new.path) == state.folder_digest:
        # Killed after the new base folder was renamed into the store, before the
        # rebase ended: it holds exactly what this rebase wrote, so it goes.
        reporter.step(f"removing {new.path}, written by this unfinished rebase")
        move_base_folder_out(new.path, stage)
    elif state.folder_digest is not None and new.path.exists():
        reporter.warn(f"{new.path} is not what this rebase wrote; it is left as it is")


# --------------------------------------------------------------------------- a carry


def stage_carried(
    tree: Path, state: RebaseState, keyring: Keyring | None, reporter: Reporter
) -> None:
    """The target's updated folder assembled beside it (the store is not
    written yet), its digest and the old one's in the state."""
    git = Git(tree, env=TOOL_COMMITTER)
    target = state.new_base
    stage = base_stage(target.path, state)
    remove_tree(stage)
    state.staged = [e for e in state.staged if e["path"] != str(target.path)]
    judge_and_classify(git, state, target)
    reporter.step(f"exporting the carried series of {target.base_id}")
    device = Store(Path(state.store)).device(state.device)
    export = prepare_export(git, target, target.commit, device, recorded={}, keyring=keyring)
    patches = list(export.patches)
    files = _carried_files(state, target, export)
    names = {p.commit: name for p, (name, _) in zip(patches, files, strict=True)}
    private, ids = private_record(git, private_pairs(patches))
    state.private, state.private_patch_ids = private, list(ids)
    existing = (
        (target.path / REPORT_FILE).read_text("utf-8")
        if (target.path / REPORT_FILE).is_file()
        else ""
    )
    report = update_report(
        existing, git, state, target, names, {p.commit for p in patches if p.private}
    )
    header = parse_series(target).header
    stage.mkdir()
    listed = set(parse_series(target).names)
    for entry in sorted(target.path.iterdir()):
        if entry.name in listed or entry.name in (SERIES_FILE, REPORT_FILE):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, stage / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, stage / entry.name, follow_symlinks=False)
    for name, data in files:
        (stage / name).write_bytes(data)
    (stage / SERIES_FILE).write_bytes(render_series(header, [n for n, _ in files]))
    (stage / REPORT_FILE).write_text(report, "utf-8")
    fsync_directory(stage)
    git.run("update-ref", CARRIED_REF_PREFIX + target.base_id, "HEAD")
    state.staged.append(
        {
            "path": str(target.path),
            "base_id": target.base_id,
            "old_digest": folder_digest(target.path) or "",
            "new_digest": folder_digest(stage) or "",
        }
    )
    state.phase = NEXT if state.chain else FINISHING
    save_state(tree, state)
    kill_point("rebase:staged")


def _carried_files(
    state: RebaseState, target: BaseRef, export: PreparedExport
) -> list[tuple[str, bytes]]:
    """The files of the carried series: a patch kept unchanged is the target's
    file byte for byte (its name too); the others as the export would write them."""
    by_commit = {p.new_commit: p for p in state.patches if p.new_commit and p.action != FOLD}
    files = list(export.plan.files.items())
    for index, patch in enumerate(export.patches):
        planned = by_commit.get(patch.commit)
        if planned is not None and planned.outcome == UNCHANGED and planned.target_name:
            files[index] = (planned.target_name, (target.path / planned.target_name).read_bytes())
    return files


def finish_carry(tree: Path, state: RebaseState, reporter: Reporter) -> RebaseResult:
    """Every staged folder exchanged with the one it replaces, then the tree
    finished; a repeat after a kill skips what is done."""
    kill_point("rebase:before-store-write")
    for entry in state.staged:
        folder = Path(entry["path"])
        stage = base_stage(folder, state)
        now = folder_digest(folder)
        if now == entry["new_digest"]:
            continue
        if now != entry["old_digest"] or folder_digest(stage) != entry["new_digest"]:
            raise IntegrityError(
                f"{folder} changed while the rebase ran, or its staged update did",
                hint=f"Run `patchtool rebase -d {state.device} --abort` and start again.",
            )
        reporter.step(f"writing {folder}")
        exchange_paths(stage, folder)
        fsync_directory(folder.parent)
    kill_point("rebase:store-written")
    last = state.new_base
    finish_tree(tree, state, last)
    for entry in state.staged:
        remove_tree(base_stage(Path(entry["path"]), state))
    state_path(tree).unlink(missing_ok=True)
    marker_path(tree).unlink(missing_ok=True)
    result = _result(tree, state, last)
    store = Store(Path(state.store))
    carried = tuple(store.resolve_base(state.device, e["base_id"]) for e in state.staged)
    return RebaseResult(result.tree, result.old_base, last, result.outcomes, result.report, carried)
