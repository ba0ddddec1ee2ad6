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

This module also owns the recovery of folders left by a killed run (the locks
are in locks.py). It never deletes anything outside `<dir>/<device>/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path

from . import children
from .errors import IntegrityError, NotFoundError, PatchtoolError, UsageError, quoted
from .fsutil import atomic_write, check_name, read_json_record
from .gitops import Git
from .privacy import Keyring, private_record, stored_limit
from .rendering import RenderedPatch, known_plaintexts, private_pairs, render_patches
from .report import Reporter
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
BACKUP_FOLDER = "backups"


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
    """Remove staging folders a killed run left behind. Called with the lock held,
    so no live run owns them."""
    if not device_dir.is_dir():
        return
    for child in device_dir.iterdir():
        if (
            child.name.startswith((STAGE_PREFIX, WHEEL_STAGE_PREFIX, TRASH_PREFIX))
            and child.is_dir()
        ):
            reporter.info(f"removing {child.name}, left by an interrupted run")
            shutil.rmtree(child, ignore_errors=True)


def discard(folder: Path) -> None:
    """Remove a folder patchtool made (a staging folder, a replaced tree) without
    making the user wait: it is renamed to a trash name at once and deleted by a
    detached process. If that process dies, the next run's recovery removes it."""
    if not folder.exists():
        return
    trash = folder.with_name(f"{TRASH_PREFIX}{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(folder, trash)
    except OSError:
        shutil.rmtree(folder, ignore_errors=True)
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
        shutil.rmtree(trash, ignore_errors=True)


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


def tree_fingerprint(tree: Path) -> tuple[object, ...]:
    """What changes when git commits, moves HEAD or a ref in a tree (cheap: stats
    only). Not the index: `git status` itself may rewrite it."""
    git_dir = tree / ".git"
    stats = []
    for name in ("HEAD", "packed-refs", "logs/HEAD"):
        try:
            info = (git_dir / name).stat()
        except OSError:
            continue
        stats.append((name, info.st_size, info.st_mtime_ns, info.st_ino))
    refs = git_dir / "refs"
    if refs.is_dir():
        for path in sorted(refs.rglob("*")):
            info = path.stat()
            # Relative: the tree is compared with itself after it moved (the swap).
            name = str(path.relative_to(git_dir))
            stats.append((name, info.st_size, info.st_mtime_ns, info.st_ino))
    return tuple(stats)


def existing_work(target: Path, store: Store, device: str, keyring: Keyring | None = None) -> str:
    """Describe work in an existing tree that the store does not hold ('' if none)."""
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
    locks = git_lock_files(target)
    if locks:
        return (
            "git's lock files are there (a git command runs in the tree, or one was "
            "killed): " + ", ".join(locks)
        )
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
