"""What runs leave in `<dir>/<device>/` for the next one: the tree a finished
`unpatch` replaced, set aside with its state at its last check (`TreeState`),
the staging folders of a killed run, backups, and import's scratch folders;
`recover_interrupted` settles them (the locks are in patchtool.core.locks).

It never deletes anything outside `<dir>/<device>/`, and never a tree that
changed after its last check: that one goes to `backups/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from patchtool.core import children
from patchtool.core.errors import PatchtoolError
from patchtool.core.faults import pause_point
from patchtool.core.fsutil import atomic_write, check_name, read_json_object, remove_tree
from patchtool.core.report import Reporter
from patchtool.core.scratch import remove_dead_scratch

STAGE_PREFIX = ".patchtool-stage-"
WHEEL_STAGE_PREFIX = ".patchtool-wheel-"
TRASH_PREFIX = ".patchtool-trash-"
# Beside a trash folder: the pid of the background removal working on it.
REMOVAL_SUFFIX = ".removing"
# A tree a finished unpatch replaced, kept for the next run to judge; its record
# (in it, beside the tree) holds the tree's state at the last check.
PREVIOUS_PREFIX = ".patchtool-previous-"
PREVIOUS_RECORD = ".patchtool-previous.json"
BACKUP_FOLDER = "backups"
# Scratch folders of `import` (and `import --flagscale`), which may hold a private
# patch's plaintext: locked by their owner (scratch.py), so that the recovery of
# another command, even one the import itself runs (unpatch), removes only dead ones.
SCRATCH_FOLDER = ".patchtool-scratch"


def recover_interrupted(device_dir: Path, reporter: Reporter) -> None:
    """Settle what earlier runs left in a device's folder. Called with the
    device's lock held, so no live run owns any of it; it never raises.

    - `.patchtool-previous-*`: a tree a finished unpatch replaced, set aside with
      its state at the last check. Removed, without a word (it is routine), when
      it is unchanged; moved to `backups/`, with a warning naming the backup,
      when anything was written in it since.
    - `.patchtool-stage-*`, `.patchtool-wheel-*`: a killed run's staging folders,
      removed and reported as such. A stage killed right after its swap holds
      the replaced tree and its record: that tree is settled as above.
    - `.patchtool-trash-*`: folders a finished run verified (after their
      rename) and handed to a background removal: left alone while it runs;
      else removed only if what is left is that verified tree, unchanged, and
      moved to `backups/` otherwise (a write from a shell inside, or what a
      killed removal left).
    - `.patchtool-scratch/`: the scratch folders of imports that were killed
      (those whose lock is free; a live one is left alone).

    A folder that cannot be removed is reported and left for the next run."""
    if not device_dir.is_dir():
        return
    for name in remove_dead_scratch(device_scratch(device_dir)):
        reporter.info(f"removing {SCRATCH_FOLDER}/{name}, left by an interrupted run")
    for child in sorted(device_dir.iterdir()):
        name = child.name
        if name.startswith(PREVIOUS_PREFIX):
            _settle_previous(child, device_dir, reporter)
        elif name.startswith((STAGE_PREFIX, WHEEL_STAGE_PREFIX)):
            reporter.info(f"removing {name}, left by an interrupted run")
            _settle_previous(child, device_dir, reporter)
        elif name.startswith(TRASH_PREFIX) and name.endswith(REMOVAL_SUFFIX):
            if not child.with_name(name.removesuffix(REMOVAL_SUFFIX)).exists():
                child.unlink(missing_ok=True)
        elif name.startswith(TRASH_PREFIX):
            _settle_trash(child, device_dir, reporter)


def _remove(folder: Path, reporter: Reporter) -> None:
    if not remove_tree(folder):
        reporter.warn(f"could not remove {folder} entirely; the next run tries again")


def _settle_previous(folder: Path, device_dir: Path, reporter: Reporter) -> None:
    """Remove `folder`, unless it holds a replaced tree that changed after its
    last check: that tree goes to backups/ first. An unchanged tree is renamed to
    its trash name and checked again there (a shell inside it follows the
    rename): only then is it handed to the background removal."""
    previous = _previous_tree(folder)
    if previous is None:
        _remove(folder, reporter)
        return
    old, seen = previous
    if seen is not None and tree_state(old) == seen:
        # The common case, on every unpatch: let it go in the background.
        trash = _trash_name(folder)
        try:
            os.rename(folder, trash)
        except OSError:
            trash = folder
        pause_point("unpatch:trash-renamed")
        if tree_state(trash / old.name) == seen:
            _remove_in_background(trash)
            return
        folder, old = trash, trash / old.name
    backup = backup_path(device_dir, old.name)
    try:
        backup.parent.mkdir(parents=True, exist_ok=True)
        os.rename(old, backup)
    except OSError as error:
        reporter.warn(
            f"{old} was changed after an earlier unpatch replaced it, and could not be "
            f"moved to {backup} ({error.strerror or error}); it is left where it is"
        )
        return
    why = "was changed after its last check" if seen is not None else "could not be read whole"
    reporter.warn(f"the tree an earlier unpatch replaced {why}; it was moved to {backup}")
    _remove(folder, reporter)


def _settle_trash(trash: Path, device_dir: Path, reporter: Reporter) -> None:
    """A trash folder an earlier run handed to its background removal. Still
    being removed: left alone. Otherwise removed only when what it holds is the
    tree that run verified, unchanged (the removal never started); anything
    else in it (a file a shell inside wrote, what a killed removal left) goes
    to backups/, never removed unseen."""
    if _removal_running(trash):
        return
    marker = _removal_marker(trash)
    previous = _previous_tree(trash)
    verified = previous is not None and previous[1] is not None
    if (verified and previous and tree_state(previous[0]) == previous[1]) or _empty(trash):
        _remove(trash, reporter)
    else:
        backup = backup_path(device_dir, trash.name.removeprefix("."))
        try:
            backup.parent.mkdir(parents=True, exist_ok=True)
            os.rename(trash, backup)
        except OSError as error:
            reporter.warn(
                f"could not move {trash} to {backup} ({error.strerror or error}); "
                "it is left where it is"
            )
            return
        reporter.warn(
            f"a removal of a replaced tree did not finish, or something was written in it "
            f"while it ran; what was left of it was moved to {backup}"
        )
    marker.unlink(missing_ok=True)


def _empty(folder: Path) -> bool:
    try:
        return not folder.is_dir() or folder.is_symlink() or not any(folder.iterdir())
    except OSError:
        return False


def _trash_name(folder: Path) -> Path:
    return folder.with_name(f"{TRASH_PREFIX}{os.getpid()}-{time.monotonic_ns()}")


def _removal_marker(trash: Path) -> Path:
    return trash.with_name(trash.name + REMOVAL_SUFFIX)


def _removal_running(trash: Path) -> bool:
    """Whether the background removal the marker beside `trash` names still runs."""
    try:
        pid = int(_removal_marker(trash).read_text().strip())
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return False
    return os.fsencode(str(trash)) in command


def record_previous(stage: Path, tree: Path, state: TreeState | None) -> None:
    """Before a swap puts the tree at `tree` into `stage`: record which tree it is
    (the inode of its folder) and its state at the last check, so that whatever
    happens next (a kill included) the run that finds it can judge it."""
    info = os.lstat(tree)
    record = {
        "project": tree.name,
        "inode": info.st_ino,
        "state": None if state is None else asdict(state),
    }
    atomic_write(stage / PREVIOUS_RECORD, (json.dumps(record, sort_keys=True) + "\n").encode())


def set_aside(stage: Path) -> Path | None:
    """After a run: a stage that holds the tree it replaced is renamed to a
    `.patchtool-previous-*` folder, for a later run to judge (return it); any
    other stage (a failed build, a tree moved to backups) is removed."""
    if _previous_tree(stage) is None:
        remove_tree(stage)
        return None
    kept = stage.with_name(f"{PREVIOUS_PREFIX}{os.getpid()}-{time.monotonic_ns()}")
    os.rename(stage, kept)
    return kept


def _previous_tree(folder: Path) -> tuple[Path, TreeState | None] | None:
    """The replaced tree `folder` holds and its state at the last check; None when
    it holds none (a stage killed before its swap holds the new tree only)."""
    try:
        record = read_json_object(folder / PREVIOUS_RECORD)
        tree = folder / check_name("project", str(record["project"]))
        if os.lstat(tree).st_ino != record["inode"]:
            return None
        state = record["state"]
        return tree, None if state is None else TreeState(**state)
    except (OSError, PatchtoolError, KeyError, TypeError, ValueError):
        return None


def discard(folder: Path) -> None:
    """Remove a folder patchtool made (a stage, a tree that holds nothing to
    keep) without making the user wait: it is renamed to a trash name at once and
    deleted by a detached process."""
    if not folder.exists():
        return
    trash = _trash_name(folder)
    try:
        os.rename(folder, trash)
    except OSError:
        remove_tree(folder)
        return
    _remove_in_background(trash)


def _remove_in_background(trash: Path) -> None:
    """`rm -rf` of a trash folder in a detached process, its pid beside the
    folder so that the next run's recovery leaves a running removal alone. If it
    dies, that recovery judges what is left (`_settle_trash`)."""
    try:
        # Needs nothing of the caller: the neutral folder (it outlives this run and
        # must hold no folder of the user's) and an environment whose PATH has no
        # relative entry, so an `rm` in the working folder or the tree never runs.
        process = children.start(
            ["rm", "-rf", "--", str(trash)],
            cwd=children.NEUTRAL_FOLDER,
            env=children.environment(),
            stdout=children.DEVNULL,
            stderr=children.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        remove_tree(trash)
        return
    with contextlib.suppress(OSError):
        atomic_write(_removal_marker(trash), f"{process.pid}\n".encode())


def device_scratch(device_dir: Path) -> Path:
    """Where `import` keeps its scratch folders (scratch.scratch_folder's root)."""
    return device_dir / SCRATCH_FOLDER


_BACKUP_STAMP = "%Y%m%dT%H%M%SZ"
_BACKUP_NAME = re.compile(r"-(\d{8}T\d{6}Z)(?:-\d+)?$")


def backup_made(backup: Path) -> str | None:
    """When a backup was made, as its name (backup_path) says: '2025-02-01 12:00:00
    UTC'; None for a name backup_path did not make."""
    found = _BACKUP_NAME.search(backup.name)
    if found is None:
        return None
    try:
        made = time.strptime(found.group(1), _BACKUP_STAMP)
    except ValueError:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", made)


def is_backup(tree: Path) -> bool:
    """Whether `tree` is a build tree kept in `<dir>/<device>/backups/`."""
    return tree.parent.name == BACKUP_FOLDER


def backup_path(device_dir: Path, project: str) -> Path:
    stamp = time.strftime(_BACKUP_STAMP, time.gmtime())
    candidate = device_dir / BACKUP_FOLDER / f"{project}-{stamp}"
    suffix = 1
    while candidate.exists():
        suffix += 1
        candidate = device_dir / BACKUP_FOLDER / f"{project}-{stamp}-{suffix}"
    return candidate


def new_stage(device_dir: Path) -> Path:
    stage = device_dir / f"{STAGE_PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    stage.mkdir(parents=True)
    return stage


@dataclass(frozen=True)
class TreeState:
    """A build tree's whole state as the file system shows it, from stats alone:
    which folder it is, every entry below it (working files, untracked ones,
    HEAD, refs, logs, the stash, a rebase or merge in progress: all but git's
    object store, whose new objects count only once a ref or the index names
    them) and the index. Any write in the tree changes it: an edit, a new file,
    a `git add`, a commit, a checkout."""

    inode: int  # of the tree's folder: the same folder after it was renamed
    entries: str  # sha256 over each entry's path, mode, size, mtime_ns and inode
    index: str  # .git/index's size, mtime_ns and inode

    def with_index_of(self, tree: Path) -> TreeState:
        """This state with the index as it is now: `git status` (a check) may
        rewrite the index with fresher stats and nothing else."""
        return replace(self, index=_index_stamp(tree))


# Not in a tree's state: the object store (see TreeState) and the index, which
# is stamped apart.
_UNSTATED = (".git/objects", ".git/index")


def tree_state(tree: Path) -> TreeState | None:
    """The tree's state (a walk of stats, no file read); None when some of it
    cannot be read, which no state equals. Iterative: any depth, no recursion."""
    try:
        inode = os.lstat(tree).st_ino
    except OSError:
        return None
    digest = hashlib.sha256()
    pending = [""]
    while pending:
        relative = pending.pop()
        try:
            with os.scandir(os.path.join(tree, relative)) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
            for entry in entries:
                path = f"{relative}/{entry.name}" if relative else entry.name
                if path in _UNSTATED:
                    continue
                info = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    # A folder's own mtime moves when git makes and removes a
                    # scratch file in it; what it holds is listed anyway.
                    pending.append(path)
                    fields: tuple[object, ...] = (path, info.st_mode, info.st_ino)
                else:
                    fields = (path, info.st_mode, info.st_size, info.st_mtime_ns, info.st_ino)
                record = "\0".join(str(field) for field in fields)
                digest.update(record.encode("utf-8", "surrogateescape") + b"\0\0")
        except OSError:
            return None
    return TreeState(inode, digest.hexdigest(), _index_stamp(tree))


def _index_stamp(tree: Path) -> str:
    try:
        info = os.lstat(tree / ".git" / "index")
    except OSError:
        return "none"
    return f"{info.st_size} {info.st_mtime_ns} {info.st_ino}"
