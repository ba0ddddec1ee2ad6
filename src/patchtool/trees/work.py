"""The work a build tree holds that the store does not (`tree_work`,
`existing_work`), the one place that judges it: uncommitted files (those that
skip-worktree or assume-unchanged hide from git status too), stashes, any ref
but patchtool's own whose commits HEAD lacks (branches, tags, custom refs,
notes), and commits whose patch the store lacks. That work is refused without
--force. What patchtool cannot tell is saved elsewhere (ignored files, commits
only the reflog holds, the user's state under .git: hooks, config, info/,
rr-cache) is `kept`: a tree holding it goes to backups/, never deleted. And
git's lock files in a tree, which stop every command that would change or
replace it (`refuse_git_locks`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from patchtool.core.errors import IntegrityError, LockedError, NotFoundError, PatchtoolError
from patchtool.core.gitops import Git
from patchtool.series.pipeline import render_commits
from patchtool.series.privacy import Keyring, patch_ids, stored_limit
from patchtool.series.rendering import RenderedPatch
from patchtool.store.model import SERIES_FILE, BaseRef
from patchtool.store.resolve import Store
from patchtool.store.series import device_limits, folder_file_bytes
from patchtool.trees.picking import commit_patch_ids
from patchtool.trees.record import BASE_REF, BASE_TAG, METADATA_FILE, read_record

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
    """Work in a build tree that exists nowhere else (its truth: refused without
    --force), and what patchtool cannot tell is saved elsewhere (`kept`: the tree
    goes to backups/ rather than being deleted)."""

    uncommitted: list[str] = field(default_factory=list)
    unexported: list[str] = field(default_factory=list)  # "abc1234 subject"
    other: list[str] = field(default_factory=list)  # stashes, refs, hidden edits
    kept: list[str] = field(default_factory=list)  # ignored files, reflog, .git state

    def __bool__(self) -> bool:
        return bool(self.uncommitted or self.unexported or self.other)

    def describe(self) -> str:
        parts = []
        if self.uncommitted:
            parts.append("uncommitted changes: " + _some(self.uncommitted))
        if self.unexported:
            parts.append("commits not exported to the store: " + "; ".join(self.unexported))
        parts.extend(self.other)
        return "\n  ".join(parts)

    def describe_kept(self) -> str:
        return "; ".join(self.kept)


@dataclass(frozen=True)
class ExistingWork:
    """What replacing a tree would lose: `refused`, work that exists nowhere else
    (not replaced without --force; with it, moved to backups/); `kept`, what
    patchtool cannot tell is saved elsewhere (moved to backups/, and said so).
    Both empty: the tree may be replaced and removed."""

    refused: str = ""
    kept: str = ""


def _some(names: list[str]) -> str:
    return ", ".join(names[:10]) + (" …" if len(names) > 10 else "")


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
    """Stashes, and every ref but patchtool's own whose commits HEAD does not
    hold: branches, tags (annotated too), custom refs (refs/wip/x), notes."""
    notes = []
    if git.rev_parse("refs/stash") is not None:
        count = len(git.lines("stash", "list"))
        notes.append(f"{count} stash entr{'y' if count == 1 else 'ies'}")
    listing = git.lines("for-each-ref", "--format=%(refname)\t%(objecttype)\t%(*objecttype)")
    for line in listing:
        ref, own_type, peeled_type = [*line.split("\t"), "", ""][:3]
        if ref == "refs/stash" or _patchtool_ref(ref):
            continue
        if (peeled_type or own_type) != "commit":
            notes.append(f"{_ref_label(ref)} points to a {peeled_type or own_type}")
            continue
        ahead = int(git.text("rev-list", "--count", f"HEAD..{ref}"))
        if ahead:
            notes.append(f"{_ref_label(ref)} has {ahead} commit(s) not in HEAD")
    return notes


def _patchtool_ref(ref: str) -> bool:
    return ref.startswith("refs/patchtool/") or ref in (BASE_REF, f"refs/tags/{BASE_TAG}")


def _ref_label(ref: str) -> str:
    for prefix, kind in (("refs/heads/", "branch"), ("refs/tags/", "tag")):
        if ref.startswith(prefix):
            return f"{kind} {ref.removeprefix(prefix)}"
    if ref.startswith("refs/notes/"):
        return f"git notes {ref}"
    return f"ref {ref}"


def hidden_edits(git: Git) -> list[str]:
    """Files whose index entry has skip-worktree or assume-unchanged set (git
    status does not look at them) and whose content differs from the index."""
    flagged = []
    for entry in git.run("ls-files", "-v", "-z").stdout.split(b"\0"):
        if len(entry) > 2 and (entry[:1] == b"S" or entry[:1].islower()):
            flagged.append(entry[2:].decode("utf-8", "surrogateescape"))
    if not flagged:
        return []
    staged: dict[str, tuple[str, str]] = {}
    for entry in git.run("ls-files", "-s", "-z", "--", *flagged).stdout.split(b"\0"):
        if entry:
            stage_info, _, name = entry.partition(b"\t")
            fields = stage_info.decode().split()
            staged[name.decode("utf-8", "surrogateescape")] = (fields[0], fields[1])
    changed = []
    for path, (mode, blob) in sorted(staged.items()):
        file = git.cwd / path
        if mode == "120000":
            now = _link_blob(git, file)
        elif file.is_file() and not file.is_symlink():
            now = git.text("hash-object", "--path", path, "--", str(file))
        else:
            now = None
        if now != blob:
            changed.append(path)
    return changed


def _link_blob(git: Git, link: Path) -> str | None:
    if not link.is_symlink():
        return None
    target = os.fsencode(os.readlink(link))
    return git.run("hash-object", "--stdin", "--no-filters", input=target).text.strip()


def ignored_files(git: Git) -> list[str]:
    """Files git ignores (.gitignore, info/exclude): a user's secrets or .venv/."""
    out = git.run(
        "ls-files", "-z", "--others", "--ignored", "--exclude-standard", "--directory"
    ).stdout
    return [e.decode("utf-8", "surrogateescape") for e in out.split(b"\0") if e]


# What git and patchtool keep in a tree's .git: anything else there is the user's.
_GIT_OWN_ENTRIES = frozenset(
    {
        "HEAD", "config", "description", "hooks", "info", "logs", "objects", "refs",
        "index", "packed-refs", "branches", "worktrees", "ORIG_HEAD", "FETCH_HEAD",
        "COMMIT_EDITMSG", "AUTO_MERGE", "REBASE_HEAD", "MERGE_HEAD", "MERGE_MSG",
        "MERGE_MODE", "MERGE_RR", "CHERRY_PICK_HEAD", "REVERT_HEAD", "BISECT_LOG",
        "sequencer", "rebase-merge", "rebase-apply", "gc.pid", "gc.log", "shallow",
        METADATA_FILE, "patchtool-rebase-id",
    }
)  # fmt: skip
# The config keys `git clone` and `git init` write, on any platform.
_GIT_OWN_CONFIG = frozenset(
    {
        "core.repositoryformatversion", "core.filemode", "core.bare",
        "core.logallrefupdates", "core.symlinks", "core.ignorecase",
        "core.precomposeunicode", "extensions.objectformat", "extensions.worktreeconfig",
    }
)  # fmt: skip


def git_dir_state(git: Git) -> list[str]:
    """The user's own state under a tree's .git, which patchtool never writes:
    hooks, config keys beyond a clone's (remotes, aliases), info/ beyond git's
    commented template, rerere's resolutions, and any entry git does not make."""
    git_dir = git.cwd / ".git"
    found = []
    hooks = git_dir / "hooks"
    if hooks.is_dir():
        found += [
            f"hook {p.name}" for p in sorted(hooks.iterdir()) if not p.name.endswith(".sample")
        ]
    keys = sorted(
        {
            key
            for key in git.lines("config", "--local", "--name-only", "--list")
            if key.lower() not in _GIT_OWN_CONFIG
        }
    )
    if keys:
        found.append("git config " + _some(keys))
    info = git_dir / "info"
    if info.is_dir():
        for entry in sorted(info.iterdir()):
            if entry.name != "exclude" or _has_patterns(entry):
                found.append(f".git/info/{entry.name}")
    rerere = git_dir / "rr-cache"
    if rerere.is_dir() and any(rerere.iterdir()):
        found.append("recorded resolutions in .git/rr-cache")
    found += [
        f".git/{entry.name}"
        for entry in sorted(git_dir.iterdir())
        if entry.name not in _GIT_OWN_ENTRIES and entry.name != "rr-cache"
        and not entry.name.endswith(".lock")
    ]  # fmt: skip
    return found


def _has_patterns(exclude: Path) -> bool:
    try:
        text = exclude.read_bytes()
    except OSError:
        return True
    return any(line.strip() and not line.lstrip().startswith(b"#") for line in text.splitlines())


# Past this many commits only the reflog holds, they are counted, not compared.
_REFLOG_COMPARED = 200


def reflog_only_commits(
    git: Git,
    base_commit: str,
    known_bases: tuple[str, ...],
    stored: list[bytes],
    private_ids: tuple[str, ...],
) -> str | None:
    """Commits that only the reflog holds (an amended or reset commit) whose
    change is neither in HEAD's series nor in a patch of the store: a count."""
    present = [c for c in known_bases if git.rev_parse(f"{c}^{{commit}}") is not None]
    candidates = git.lines(
        "rev-list", "--reflog", "--no-merges", "--not", "--all", "HEAD", base_commit, *present
    )
    if not candidates:
        return None
    if len(candidates) <= _REFLOG_COMPARED:
        series = git.lines("rev-list", "--no-merges", f"{base_commit}..HEAD")
        known = set(commit_patch_ids(git, series).values()) | set(private_ids)
        known |= {i for i in patch_ids(git, stored) if i}
        lost = commit_patch_ids(git, candidates)
        candidates = [c for c in candidates if lost.get(c) not in known]
        if not candidates:
            return None
    return (
        f"{len(candidates)} commit(s) only the reflog holds, not in the store's series: "
        + ", ".join(c[:10] for c in candidates[:5])
        + (" …" if len(candidates) > 5 else "")
    )


def existing_work(
    target: Path, store: Store, device: str, keyring: Keyring | None = None
) -> ExistingWork:
    """What replacing an existing tree would lose (see ExistingWork); a folder
    that is not a tree patchtool made, or whose state cannot be read, is
    refused work. git's lock files there are LockedError (exit 9), see
    `refuse_git_locks`."""
    if not (target.exists() or target.is_symlink()):
        return ExistingWork()
    if target.is_symlink() or not target.is_dir():
        return ExistingWork(f"{target} is not a folder patchtool made")
    try:
        record = read_record(target)
    except NotFoundError:
        return ExistingWork(f"{target} is not a patchtool build tree (no .git/patchtool.json)")
    except IntegrityError as error:
        return ExistingWork(f"its record cannot be read ({error.message})")
    refuse_git_locks(target)
    git = Git(target)
    try:
        base: BaseRef | None = store.resolve_base(device, record.base_id)
    except PatchtoolError:
        base = None
    try:
        known_bases = tuple(b.commit for b in store.bases(device))
    except PatchtoolError:
        known_bases = ()
    try:
        work = tree_work(git, base, record.base_commit, keyring, known_bases)
    except PatchtoolError as error:
        return ExistingWork(f"its state could not be read ({error.message})")
    return ExistingWork(work.describe() if work else "", work.describe_kept())


def _stored_files(base: BaseRef) -> set[bytes]:
    # Any file of the base folder counts: a damaged series must not make
    # exported work look unexported (or the reverse).
    limit = stored_limit(device_limits(base))
    return folder_file_bytes(base.path, limit, leave_out=(SERIES_FILE, "base.toml"))


def unexported_commits(
    git: Git,
    base: BaseRef,
    base_commit: str,
    keyring: Keyring | None = None,
    stored: set[bytes] | None = None,
) -> list[str]:
    """Commits after the base whose patch is not byte-identical to a file of the
    store (for a private patch: to the plaintext of one, as the tree's record
    knows it). The commits are rendered by the export pipeline's first steps."""
    if stored is None:
        stored = _stored_files(base)
    try:
        record = read_record(git.cwd)
        recorded, left_out = record.private, record.skipped_private
    except (NotFoundError, IntegrityError):
        recorded, left_out = {}, ()
    rendered = render_commits(git, base, base_commit, recorded, keyring)
    unexported = rendered.unexported(stored)
    if left_out and unexported:
        unexported = _unchanged_by_public_only(git, unexported, stored)
    return [f"{p.commit[:10]} {p.subject}" for p in unexported]


def _unchanged_by_public_only(
    git: Git, patches: list[RenderedPatch], stored: set[bytes]
) -> list[RenderedPatch]:
    """In a tree made with --public-only, a patch after a private one left out is
    rendered with other blob ids and line numbers than its stored file: it is not
    new work when a stored file has its message and change (git's stable
    patch-id) both. The others are returned."""
    files = sorted(stored)
    known = {
        (_message_part(data), found)
        for data, found in zip(files, patch_ids(git, files), strict=True)
        if found is not None
    }
    ids = patch_ids(git, [p.data for p in patches])
    return [
        p
        for p, found in zip(patches, ids, strict=True)
        if found is None or (_message_part(p.data), found) not in known
    ]


def _message_part(data: bytes) -> bytes:
    """A patch mail's headers, message and diffstat: all before its first diff."""
    return data.split(b"\ndiff --git ", 1)[0]


def tree_work(
    git: Git,
    base: BaseRef | None,
    base_commit: str,
    keyring: Keyring | None = None,
    known_bases: tuple[str, ...] = (),
) -> TreeWork:
    """Everything a tree holds that replacing it would lose (TreeWork); the one
    judgement that unpatch, rebase, status and build-wheel read."""
    work = TreeWork(uncommitted=uncommitted_files(git), other=side_work(git))
    hidden = hidden_edits(git)
    if hidden:
        work.other.append(
            "edits git status does not show (skip-worktree or assume-unchanged): " + _some(hidden)
        )
    stored: set[bytes] = set()
    if base is None:
        count = int(git.text("rev-list", "--count", f"{base_commit}..HEAD"))
        if count:
            work.unexported.append(f"{count} commit(s) after the base (its store folder is gone)")
    else:
        stored = _stored_files(base)
        work.unexported = unexported_commits(git, base, base_commit, keyring, stored)
    ignored = ignored_files(git)
    if ignored:
        work.kept.append("ignored files: " + _some(ignored))
    try:
        private_ids = read_record(git.cwd).private_patch_ids
    except (NotFoundError, IntegrityError):
        private_ids = ()
    reflog = reflog_only_commits(git, base_commit, known_bases, sorted(stored), private_ids)
    if reflog is not None:
        work.kept.append(reflog)
    work.kept += git_dir_state(git)
    return work
