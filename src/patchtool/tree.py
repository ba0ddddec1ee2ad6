"""Build trees: `<dir>/<device>/<project>`, what they record and what work they hold.

A build tree is a self-contained git repository: the base commit (marked by
`refs/patchtool/base-commit` and the tag `patchtool/base`) and one commit per patch.
`.git/patchtool.json` records which device and base it was made from (and
what it knows of the series' private patches).

This is the layer every command stands on to find a tree (`find_tree`,
`enclosing_tree`), read and write its record, and say what work it holds that
the store does not (`tree_work`, `existing_work`): uncommitted files, side
branches and stashes, and commits whose patch the store lacks. Making a tree
is applying.py's; turning its commits into patches is rendering.py's.

This module also owns what runs leave in `<dir>/<device>/` for the next one:
the tree a finished `unpatch` replaced, set aside with its state at its last
check (`TreeState`), and the staging folders of a killed run;
`recover_interrupted` settles them (the locks are in locks.py). It never
deletes anything outside `<dir>/<device>/`, and never a tree that changed
after its last check: that one goes to `backups/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path

from . import children
from .errors import IntegrityError, LockedError, NotFoundError, PatchtoolError, UsageError, quoted
from .fsutil import atomic_write, check_name, read_json_object, read_json_record, remove_tree
from .gitops import Git
from .privacy import Keyring, private_record, stored_limit
from .rendering import RenderedPatch, known_plaintexts, private_pairs, render_patches
from .report import Reporter
from .scratch import remove_dead_scratch
from .store import (
    SERIES_FILE,
    BaseRef,
    PatchSeries,
    Store,
    device_limits,
    folder_file_bytes,
    series_digest,
)

METADATA_FILE = "patchtool.json"
BASE_REF = "refs/patchtool/base-commit"
BASE_TAG = "patchtool/base"
STAGE_PREFIX = ".patchtool-stage-"
WHEEL_STAGE_PREFIX = ".patchtool-wheel-"
TRASH_PREFIX = ".patchtool-trash-"
# A tree a finished unpatch replaced, kept for the next run to judge; its record
# (in it, beside the tree) holds the tree's state at the last check.
PREVIOUS_PREFIX = ".patchtool-previous-"
PREVIOUS_RECORD = ".patchtool-previous.json"
BACKUP_FOLDER = "backups"
# Scratch folders of `import` (and `import --flagscale`), which may hold a private
# patch's plaintext: locked by their owner (scratch.py), so that the recovery of
# another command, even one the import itself runs (unpatch), removes only dead ones.
SCRATCH_FOLDER = ".patchtool-scratch"


@dataclass(frozen=True)
class TreeRecord:
    device: str
    base_id: str
    project: str
    version: str
    base_commit: str
    # The store's series (store.series_digest) as this tree last read or wrote
    # it: `patch` refuses to export over a series that changed since.
    # Empty for trees made before patchtool recorded it.
    store_digest: str = ""
    # The store the tree was made from (its absolute path): commands run inside
    # the tree find it here. Empty for trees made before patchtool recorded it.
    store: str = ""
    # The private patches (privacy.py) the tree was made or last exported with:
    # the sha256 of each stored file -> the sha256 of its plaintext, so that
    # commands tell exported work from new without a key; and the patch-ids of
    # their changes, so that `patch` notices a private change about to be
    # exported in clear.
    private: dict[str, str] = field(default_factory=dict)
    private_patch_ids: tuple[str, ...] = ()
    # Private patches `unpatch --public-only` left out (their file names).
    skipped_private: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class TreeLocation:
    build_dir: Path
    device: str
    project: str

    @property
    def device_dir(self) -> Path:
        return self.build_dir / check_name("device", self.device)

    @property
    def tree(self) -> Path:
        return self.device_dir / check_name("project", self.project)


DAMAGED_RECORD_HINT = (
    "Recreate the tree with `patchtool unpatch --force` (the tree is kept in backups/)."
)


def read_record(tree: Path) -> TreeRecord:
    """The tree's record: NotFoundError (exit 3) when it has none, IntegrityError
    (exit 6) when it is damaged."""
    path = tree / ".git" / METADATA_FILE
    try:
        return read_json_record(path, _record_from, DAMAGED_RECORD_HINT)
    except FileNotFoundError as error:
        raise NotFoundError(
            f"{tree} is not a patchtool build tree ({path} is missing)",
            hint="Create it with `patchtool unpatch`.",
        ) from error


def _record_from(data: dict[str, object]) -> TreeRecord:
    values: dict[str, object] = {}
    for key, spec in TreeRecord.__dataclass_fields__.items():
        if key not in data:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise KeyError(key)
            continue
        value = data[key]
        if key == "private":
            if not isinstance(value, dict):
                raise TypeError("'private' is not an object")
            values[key] = {str(k): str(v) for k, v in value.items()}
        elif key in ("private_patch_ids", "skipped_private"):
            if not isinstance(value, list):
                raise TypeError(f"{quoted(key)} is not a list")
            values[key] = tuple(str(v) for v in value)
        else:
            values[key] = str(value)
    return TreeRecord(**values)  # type: ignore[arg-type]


def write_record(tree: Path, record: TreeRecord) -> None:
    atomic_write(tree / ".git" / METADATA_FILE, record.to_json().encode("utf-8"))


# The lock files git leaves when one of its commands is killed (or still runs).
_GIT_LOCK_NAMES = (
    "index.lock",
    "HEAD.lock",
    "ORIG_HEAD.lock",
    "CHERRY_PICK_HEAD.lock",
    "packed-refs.lock",
    "config.lock",
    "shallow.lock",
)


def git_lock_files(tree: Path) -> list[str]:
    """git's lock files in a tree's .git, relative to the tree: a git command
    was killed there, or one is running right now."""
    git_dir = tree / ".git"
    found = [f".git/{name}" for name in _GIT_LOCK_NAMES if (git_dir / name).exists()]
    refs = git_dir / "refs"
    if refs.is_dir():
        found += sorted(str(p.relative_to(tree)) for p in refs.rglob("*.lock"))
    return found


def refuse_git_locks(tree: Path) -> None:
    """What git's lock files in a build tree mean, for every command that would
    change or replace the tree (unpatch, rebase): a git command runs there or
    was killed there, so the command stops with exit 9 (LockedError), names
    them, and removes none of them."""
    locks = git_lock_files(tree) if (tree / ".git").is_dir() and not tree.is_symlink() else []
    if locks:
        named = ", ".join(locks)
        raise LockedError(
            f"a git command was killed, or is still running, in the build tree {tree}: "
            f"it left {named}",
            hint=f"If no git command is running there, delete {named} and run the same "
            "patchtool command again.",
        )


def enclosing_tree(start: Path) -> Path | None:
    """The build tree that holds `start` (the folder itself or one above it), if any:
    a folder whose `.git` is a directory with patchtool's record in it."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git" / METADATA_FILE).is_file() and (folder / ".git").is_dir():
            return folder
    return None


def find_tree(build_dir: Path, device: str) -> Path:
    """The one build tree of a device (its project folder)."""
    device_dir = build_dir / check_name("device", device)
    trees = (
        [p for p in sorted(device_dir.iterdir()) if (p / ".git" / METADATA_FILE).is_file()]
        if device_dir.is_dir()
        else []
    )
    if not trees:
        raise NotFoundError(
            f"no build tree for device {quoted(device)} under {device_dir}",
            hint=f"Create one with `patchtool unpatch --device-type {device}`.",
        )
    if len(trees) > 1:
        raise UsageError(
            f"several build trees under {device_dir}: " + ", ".join(p.name for p in trees)
        )
    return trees[0]


@dataclass
class TreeWork:
    """Work in a build tree that exists nowhere else."""

    uncommitted: list[str] = field(default_factory=list)
    unexported: list[str] = field(default_factory=list)  # "abc1234 subject"
    other: list[str] = field(default_factory=list)  # stashes, other branches

    def __bool__(self) -> bool:
        return bool(self.uncommitted or self.unexported or self.other)

    def describe(self) -> str:
        parts = []
        if self.uncommitted:
            parts.append(
                "uncommitted changes: "
                + ", ".join(self.uncommitted[:10])
                + (" …" if len(self.uncommitted) > 10 else "")
            )
        if self.unexported:
            parts.append("commits not exported to the store: " + "; ".join(self.unexported))
        parts.extend(self.other)
        return "\n  ".join(parts)


def uncommitted_files(git: Git) -> list[str]:
    out = git.run("status", "--porcelain=v1", "-z", "--untracked-files=all").stdout
    entries = [e for e in out.split(b"\0") if e]
    files: list[str] = []
    skip_next = False
    for entry in entries:
        if skip_next:
            skip_next = False
            continue
        status, path = entry[:2], entry[3:]
        if status[:1] in (b"R", b"C"):
            skip_next = True
        files.append(path.decode("utf-8", "surrogateescape"))
    return files


def side_work(git: Git) -> list[str]:
    """Stashes and branches whose commits HEAD does not hold."""
    notes = []
    if git.rev_parse("refs/stash") is not None:
        count = len(git.lines("stash", "list"))
        notes.append(f"{count} stash entr{'y' if count == 1 else 'ies'}")
    for branch in git.lines("for-each-ref", "--format=%(refname:short)", "refs/heads"):
        ahead = int(git.text("rev-list", "--count", f"HEAD..refs/heads/{branch}"))
        if ahead:
            notes.append(f"branch {branch} has {ahead} commit(s) not in HEAD")
    return notes


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
    - `.patchtool-trash-*`: folders a finished run handed to a background
      removal that has not ended (or was killed): removed without a word.
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
        elif name.startswith(TRASH_PREFIX):
            _remove(child, reporter)


def _remove(folder: Path, reporter: Reporter) -> None:
    if not remove_tree(folder):
        reporter.warn(f"could not remove {folder} entirely; the next run tries again")


def _settle_previous(folder: Path, device_dir: Path, reporter: Reporter) -> None:
    """Remove `folder`, unless it holds a replaced tree that changed after its
    last check: that tree goes to backups/ first."""
    previous = _previous_tree(folder)
    if previous is None:
        _remove(folder, reporter)
        return
    old, seen = previous
    if seen is not None and tree_state(old) == seen:
        # The common case, on every unpatch: let it go in the background.
        discard(folder)
        return
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
    """Remove a folder patchtool made (a replaced tree that was found unchanged)
    without making the user wait: it is renamed to a trash name at once and
    deleted by a detached process. If that process dies, the next run's recovery
    removes it."""
    if not folder.exists():
        return
    trash = folder.with_name(f"{TRASH_PREFIX}{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, trash)
    except OSError:
        remove_tree(folder)
        return
    try:
        # Needs nothing of the caller: the neutral folder (it outlives this run and
        # must hold no folder of the user's) and an environment whose PATH has no
        # relative entry, so an `rm` in the working folder or the tree never runs.
        children.start(
            ["rm", "-rf", "--", str(trash)],
            cwd=children.NEUTRAL_FOLDER,
            env=children.environment(),
            stdout=children.DEVNULL,
            stderr=children.DEVNULL,
            start_new_session=True,
        )
    except OSError:
        remove_tree(trash)


def device_scratch(device_dir: Path) -> Path:
    """Where `import` keeps its scratch folders (scratch.scratch_folder's root)."""
    return device_dir / SCRATCH_FOLDER


def backup_path(device_dir: Path, project: str) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
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


def existing_work(target: Path, store: Store, device: str, keyring: Keyring | None = None) -> str:
    """Describe work in an existing tree that the store does not hold ('' if none).
    git's lock files there are LockedError (exit 9), see `refuse_git_locks`."""
    if not (target.exists() or target.is_symlink()):
        return ""
    if target.is_symlink() or not target.is_dir():
        return f"{target} is not a folder patchtool made"
    try:
        record = read_record(target)
    except NotFoundError:
        return f"{target} is not a patchtool build tree (no .git/patchtool.json)"
    except IntegrityError as error:
        return f"its record cannot be read ({error.message})"
    refuse_git_locks(target)
    git = Git(target)
    try:
        base: BaseRef | None = store.resolve_base(device, record.base_id)
    except PatchtoolError:
        base = None
    try:
        work = tree_work(git, base, record.base_commit, keyring)
    except PatchtoolError as error:
        return f"its state could not be read ({error.message})"
    return work.describe() if work else ""


def unexported_commits(
    git: Git, base: BaseRef, base_commit: str, keyring: Keyring | None = None
) -> list[str]:
    """Commits after the base whose patch is not byte-identical to a file of the
    store (for a private patch: to the plaintext of one, as the tree's record
    knows it)."""
    # Any file of the base folder counts: a damaged series must not make
    # exported work look unexported (or the reverse).
    limit = stored_limit(device_limits(base))
    stored = folder_file_bytes(base.path, limit, leave_out=(SERIES_FILE, "base.toml"))
    try:
        recorded = read_record(git.cwd).private
    except (NotFoundError, IntegrityError):
        recorded = {}
    known = known_plaintexts(base, recorded, keyring)
    plaintexts = {known[d] for d in (hashlib.sha256(b).hexdigest() for b in stored) if d in known}
    return [
        f"{p.commit[:10]} {p.subject}"
        for p in render_patches(git, base_commit)
        if (
            hashlib.sha256(p.data).hexdigest() not in plaintexts
            if p.private
            else p.data not in stored
        )
    ]


def tree_work(
    git: Git, base: BaseRef | None, base_commit: str, keyring: Keyring | None = None
) -> TreeWork:
    work = TreeWork(uncommitted=uncommitted_files(git), other=side_work(git))
    if base is None:
        count = int(git.text("rev-list", "--count", f"{base_commit}..HEAD"))
        if count:
            work.unexported.append(f"{count} commit(s) after the base (its store folder is gone)")
    else:
        work.unexported = unexported_commits(git, base, base_commit, keyring)
    return work


def remember_series(
    tree: Path,
    record: TreeRecord,
    series: PatchSeries,
    git: Git | None = None,
    patches: list[RenderedPatch] | None = None,
) -> None:
    """Record in the tree which state of the store's series it now matches (and,
    given the exported patches, the plaintexts of its private ones)."""
    updated = replace(record, store_digest=series_digest(series))
    if git is not None and patches is not None:
        private, ids = private_record(git, private_pairs(patches))
        updated = replace(updated, private=private, private_patch_ids=ids)
    if updated != record:
        write_record(tree, updated)
