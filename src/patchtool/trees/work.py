"""The work a build tree holds that the store does not (`tree_work`,
`existing_work`): uncommitted files, side branches and stashes, and commits
whose patch the store lacks; and git's lock files in a tree, which stop every
command that would change or replace it (`refuse_git_locks`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from patchtool.core.errors import IntegrityError, LockedError, NotFoundError, PatchtoolError
from patchtool.core.gitops import Git
from patchtool.series.pipeline import render_commits
from patchtool.series.privacy import Keyring, stored_limit
from patchtool.store.model import SERIES_FILE, BaseRef
from patchtool.store.resolve import Store
from patchtool.store.series import device_limits, folder_file_bytes
from patchtool.trees.record import read_record

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
    knows it). The commits are rendered by the export pipeline's first steps."""
    # Any file of the base folder counts: a damaged series must not make
    # exported work look unexported (or the reverse).
    limit = stored_limit(device_limits(base))
    stored = folder_file_bytes(base.path, limit, leave_out=(SERIES_FILE, "base.toml"))
    try:
        recorded = read_record(git.cwd).private
    except (NotFoundError, IntegrityError):
        recorded = {}
    rendered = render_commits(git, base, base_commit, recorded, keyring)
    return [f"{p.commit[:10]} {p.subject}" for p in rendered.unexported(stored)]


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
