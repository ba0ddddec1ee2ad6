"""What a patch series does to a tree, as git reads it, and whether that is safe.

patchtool has no patch parser of its own for this: a second reader disagrees
with git somewhere (git still honours the old `rename old`/`rename new`
spellings, later lines overriding earlier ones), and every such place is a way
past the check. So the verdict comes from git:

1. `check_size` bounds a patch before git reads it (privacy.load_series reads
   every patch of a series as a regular file, not a symlink or a FIFO, and a
   private one decrypted): within the device's limits on bytes, sections and
   hunks, and on what its `GIT binary patch` hunks declare they inflate to
   (`[limits]` in device.toml); a mail that git would decode before reading
   (a transfer encoding, format=flowed, MIME parts) is refused, as what git
   reads would not be what was measured. This is a resource limit, not a
   reading: what the patch does is still for git to say. Before git applies a
   series, copies.check_copies bounds what its copy and rename sections make git
   read and write again (each counted at the largest size its source can have).
2. git applies the series (applying.py) with `core.protectHFS`/`core.protectNTFS`
   on (gitops pins both on every call), so git itself refuses `.git` in every
   spelling and any write beyond a symlink; `git_refusal` turns such a refusal
   into `UnsafeInputError` naming the patch. The tree it applies into is a
   staging folder inside the build folder, or `check`'s scratch folder under
   the cache. Before git writes, applying.py judges the paths git reads from
   the whole series (`paths_git_reads`), so that a path too deep never reaches
   the disk.
3. `TreeJudge` reads the result from git's own records, with modes and blob ids:
   the base tree (`ls-tree`) and each commit's changed entries (`diff-tree
   --raw`, renames and copies as a deletion and an addition), and judges them:
   every path (no `.git` component in any spelling, nothing absolute or
   climbing, nothing deeper or longer than fsutil's limits), every symlink's
   target resolved as the kernel would, through the tree's other symlinks,
   after every patch (it must stay inside the tree and out of `.git`), no
   symlinked `.gitmodules`/`.gitattributes`, and a
   `.gitmodules`, read by `git config --blob`, that points nowhere outside.
   The same judge runs on every base, sdist or git, before it is checked out.

Unsafe input is `UnsafeInputError` (exit 10), damaged input `IntegrityError`
(exit 6); both name the patch file or base and the path. Nothing here writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import IntegrityError, UnsafeInputError, quoted
from patchtool.core.fsutil import MAX_PATH_BYTES, folds_to, path_problem, shown_path
from patchtool.core.gitops import Git
from patchtool.core.gitpatch import PatchReading, git_text, read_patch
from patchtool.series.binary import binary_hunks
from patchtool.series.mail import check_mail_encoding
from patchtool.store.model import DEVICE_FILE, GitUrl, PatchLimits, limit_hint

# The most files a TreeJudge listing holds: no base within any device's limits
# has more (a git base was measured before, sources/extent.py; an sdist bounded
# as it was imported). One entry of `ls-tree -r -z` is at most its mode, type,
# id and a path within fsutil's limits (a longer path is refused with it).
_MOST_PATHS = max(PatchLimits.ceiling("git_base_paths"), PatchLimits.ceiling("sdist_members"))
_LONGEST_RECORD = 6 + 1 + 6 + 1 + 64 + 1 + 4 * MAX_PATH_BYTES

SYMLINK_MODE = "120000"
GITLINK_MODE = "160000"
_KNOWN_MODES = {"100644", "100755", SYMLINK_MODE, GITLINK_MODE}
# Files git reads from the tree itself; as symlinks they would make git read
# whatever they point at (git refuses them too, since 2.32).
_NO_SYMLINK_NAMES = (".gitmodules", ".gitattributes", ".gitignore", ".mailmap")
_MAX_LINK_HOPS = 40  # as Linux's MAXSYMLINKS

UNSAFE_HINT = (
    "Nothing was applied and no build tree was changed. patchtool refuses patches that "
    "could write outside the tree, into .git or through a symlink: fix or remove the "
    "patch (and its line in series)."
)
CORRUPT_HINT = (
    "Nothing was applied. The patch file is damaged: restore it from version control, "
    "or export it again with `patchtool patch`."
)


# --------------------------------------------------------------------------- before git reads


@dataclass(frozen=True)
class PatchSize:
    bytes: int
    sections: int
    hunks: int
    binary: int = 0  # what its `GIT binary patch` hunks declare, inflated, together


def measure_patch(data: bytes) -> PatchSize:
    """Upper bounds on a patch's file sections and hunks, by counting the lines
    that start them (git's reading decides what they are; this only bounds work)."""
    lines = b"\n" + data
    sections = max(lines.count(b"\n" + b"diff --git "), lines.count(b"\n+++ "))
    return PatchSize(len(data), sections, lines.count(b"\n@@ "))


def check_size(
    subject: str, data: bytes, limits: PatchLimits, *, private: bool = False
) -> PatchSize:
    """Refuse a patch past the device's limits before git reads it (exit 6): its
    bytes, file sections and hunks, what its binary hunks inflate to, and a mail
    that git would decode before reading the patch (then what git reads is not
    what was measured). Returns what was measured. `private`: `data` is a
    private patch's plaintext, which no message quotes (CI logs are public)."""
    size = measure_patch(data)
    for what, count, limit, key in (
        ("bytes", size.bytes, limits.patch_bytes, "patch-bytes"),
        ("file sections", size.sections, limits.patch_files, "patch-files"),
        ("hunks", size.hunks, limits.patch_hunks, "patch-hunks"),
    ):
        if count > limit:
            raise IntegrityError(
                f"{subject}: {count} {what}, more than the limit of {limit}",
                hint=f"Nothing was applied. Split the patch, or raise {key} under [limits] "
                f"in the device's {DEVICE_FILE} if a patch this large is intended.",
            )
    check_mail_encoding(subject, data, private)
    binary = 0
    for hunk in binary_hunks(data):
        if hunk.kind == "delta" and hunk.result is None:
            raise IntegrityError(
                f"{subject}: line {hunk.line}: a binary delta whose header cannot be read "
                "(so neither can the size of its result)",
                hint=CORRUPT_HINT,
            )
        for what, declared in hunk.sizes():
            if declared > limits.binary_hunk_bytes:
                raise IntegrityError(
                    f"{subject}: line {hunk.line}: {what} of {declared} bytes, more than the "
                    f"limit of {limits.binary_hunk_bytes}",
                    hint=limit_hint("binary-hunk-bytes", BINARY_WHAT),
                )
            binary += declared
        if binary > limits.binary_patch_bytes:
            raise IntegrityError(
                f"{subject}: binary hunks of {binary} bytes together (inflated), more than "
                f"the limit of {limits.binary_patch_bytes}",
                hint=limit_hint("binary-patch-bytes", BINARY_WHAT),
            )
    return PatchSize(size.bytes, size.sections, size.hunks, binary)


def check_series_binary(subject: str, total: int, limits: PatchLimits) -> None:
    """Refuse a series whose binary hunks inflate past `binary-series-bytes` together."""
    if total > limits.binary_series_bytes:
        raise IntegrityError(
            f"{subject}: binary hunks of {total} bytes together (inflated), more than the "
            f"limit of {limits.binary_series_bytes}",
            hint=limit_hint("binary-series-bytes", BINARY_WHAT),
        )


BINARY_WHAT = (
    "Nothing was applied. git inflates binary data in memory and writes it into the "
    "tree: leave the file out of the patch"
)

# --------------------------------------------------------------------------- git's refusals


def git_refusal(stderr: str) -> tuple[str, str] | None:
    """(path, reason) when git refused to apply a patch for safety's sake."""
    for line in stderr.splitlines():
        text = line.removeprefix("error: ")
        if text.startswith("invalid path '") and text.endswith("'"):
            path = text[len("invalid path '") : -1]
            return path, _why_invalid(path)
        marker = "' is beyond a symbolic link"
        if text.startswith("affected file '") and text.endswith(marker):
            path = text[len("affected file '") : -len(marker)]
            return path, "is written through a symlink"
    return None


def _why_invalid(path: str) -> str:
    problem = path_problem(path)
    if problem is None and any(folds_to(p, ".gitmodules") for p in path.split("/")):
        problem = "names .gitmodules in a spelling git refuses"
    return problem or "is refused by git as an invalid path"


def unsafe(subject: str, problem: str) -> UnsafeInputError:
    return UnsafeInputError(f"{subject}: {problem}", hint=UNSAFE_HINT)


# --------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class ChangedEntry:
    """One changed entry of a commit, as `diff-tree --raw --no-renames` gives it."""

    path: str
    mode: str  # the new mode; "000000" for a deletion
    oid: str

    @property
    def deleted(self) -> bool:
        return self.mode == "000000"


class TreeJudge:
    """A tree as git holds it (path -> mode, blob id, link target), judged once
    whole and then after every commit applied on top of it."""

    def __init__(self, git: Git, commit: str, subject: str) -> None:
        """Load and judge the tree of `commit` in `git`'s repository (bare or not);
        `subject` names it in errors ("base vllm 0.7.2"). The listing is read as
        it streams and never holds more than the files a base within the
        ceilings can have: a base was bounded before (sources/extent.py,
        sources/sdist.py); a build tree's commit was not."""
        self.entries: dict[str, tuple[str, str]] = {}
        self.targets: dict[str, str] = {}
        for record in _listing(git, commit, subject):
            meta, _, raw_path = record.partition(b"\t")
            mode, _, oid = meta.decode("ascii", "replace").split(" ")
            path = git_text(raw_path)
            self._judge_entry(subject, path, mode)
            self.entries[path] = (mode, oid)
            if len(self.entries) > _MOST_PATHS:
                raise IntegrityError(
                    f"{subject}: its tree lists more than {_MOST_PATHS} files, more than "
                    "any device's limits allow a base",
                    hint="Nothing was checked out. Check that it is the tree you mean.",
                )
        links = {p: oid for p, (mode, oid) in self.entries.items() if mode == SYMLINK_MODE}
        self.targets = _read_blobs(git, links)
        self._judge_links(subject, self.targets)
        if ".gitmodules" in self.entries:
            self._judge_gitmodules(git, subject, self.entries[".gitmodules"][1])

    def judge_commits(self, git: Git, commits: Sequence[str], subjects: Sequence[str]) -> None:
        """Judge each commit's changes in order; `subjects[i]` names commit i
        (the patch file it came from)."""
        if not commits:
            return
        changes = _commit_changes(git, commits)
        new_links = {
            change.oid: change.oid
            for changed in changes.values()
            for change in changed
            if change.mode == SYMLINK_MODE
        }
        blobs = _read_blobs(git, new_links)
        for commit, subject in zip(commits, subjects, strict=True):
            changed = changes.get(commit, [])
            for change in changed:
                if change.deleted:
                    self.entries.pop(change.path, None)
                    self.targets.pop(change.path, None)
                    continue
                self._judge_entry(subject, change.path, change.mode)
                self.entries[change.path] = (change.mode, change.oid)
                if change.mode == SYMLINK_MODE:
                    self.targets[change.path] = blobs[change.oid]
                else:
                    self.targets.pop(change.path, None)
            if changed:
                # A new folder or link can change where an older link leads: judge all.
                self._judge_links(subject, self.targets)
            if any(c.path == ".gitmodules" and not c.deleted for c in changed):
                self._judge_gitmodules(git, subject, self.entries[".gitmodules"][1])

    # ----------------------------------------------------------------- rules

    def _judge_entry(self, subject: str, path: str, mode: str) -> None:
        problem = path_problem(path)
        if problem is not None:
            raise unsafe(subject, f"path {shown_path(path)} {problem}")
        if mode not in _KNOWN_MODES:
            raise unsafe(subject, f"path {shown_path(path)} has the unknown mode {mode}")
        name = path.rsplit("/", 1)[-1]
        if mode == SYMLINK_MODE and any(folds_to(name, n) for n in _NO_SYMLINK_NAMES):
            raise unsafe(
                subject, f"path {shown_path(path)} is a symlink, which git must not follow"
            )

    def _judge_links(self, subject: str, links: dict[str, str]) -> None:
        for link in sorted(links):
            problem = self._link_problem(link)
            if problem is not None:
                raise unsafe(subject, f"symlink {quoted(link)} -> {quoted(links[link])} {problem}")

    def _link_problem(self, link: str) -> str | None:
        """Follow the link as the kernel would, through the tree's other links."""
        target = self.targets[link]
        if target == "":
            return "has an empty target"
        folder = link.split("/")[:-1]
        pending = target.split("/")
        hops = 0
        if target.startswith("/"):
            return "points to an absolute path"
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not folder:
                    return "points outside the tree"
                folder.pop()
                continue
            if folds_to(part, ".git"):
                return "points into .git"
            folder.append(part)
            through = "/".join(folder)
            next_target = self.targets.get(through)
            if next_target is None:
                continue
            hops += 1
            if hops > _MAX_LINK_HOPS:
                return "goes through too many symlinks (a loop)"
            if next_target.startswith("/"):
                return (
                    f"passes through the symlink {quoted(through)}, "
                    "which points to an absolute path"
                )
            folder.pop()
            pending = next_target.split("/") + pending
        return None

    def _judge_gitmodules(self, git: Git, subject: str, oid: str) -> None:
        listing = git.run("config", "--blob", oid, "--list", "-z", check=False)
        if listing.returncode != 0:
            raise unsafe(subject, f".gitmodules cannot be read by git: {listing.stderr.strip()}")
        for record in listing.stdout.split(b"\0"):
            key, _, raw = record.partition(b"\n")
            name, value = git_text(key), git_text(raw)
            section, _, rest = name.partition(".")
            if section != "submodule" or "." not in rest:
                continue
            module, _, field = rest.rpartition(".")
            where = f".gitmodules: submodule {quoted(module)}"
            if path_problem(module) is not None:
                raise unsafe(subject, f"{where} has a name that is not a safe path")
            if field == "path" and path_problem(value) is not None:
                raise unsafe(subject, f"{where}: path {quoted(value)} {path_problem(value)}")
            if field == "url":
                try:
                    GitUrl(value)
                except UnsafeInputError as error:
                    raise unsafe(subject, f"{where}: {error.message}") from None
            if field == "update" and value.startswith("!"):
                raise unsafe(subject, f"{where}: update runs a command ({quoted(value)})")


def _listing(git: Git, commit: str, subject: str) -> Iterator[bytes]:
    """`ls-tree -r -z` of `commit`, an entry at a time as git writes it."""
    records = git.records("ls-tree", "-r", "-z", "--full-tree", commit, longest=_LONGEST_RECORD)
    while True:
        try:
            record = next(records, None)
        except IntegrityError:  # a record past `longest`: a path no tree may hold
            raise unsafe(
                subject, f"a path of more than {_LONGEST_RECORD} bytes is in its tree"
            ) from None
        if record is None:
            return
        if record:
            yield record


def _commit_changes(git: Git, commits: Sequence[str]) -> dict[str, list[ChangedEntry]]:
    """Each commit's changed entries against its parent, in one git call."""
    out = git.run(
        "diff-tree",
        "--stdin",
        "-r",
        "-z",
        "--raw",
        "--no-renames",
        "--no-abbrev",
        input=("\n".join(commits) + "\n").encode(),
    ).stdout
    changes: dict[str, list[ChangedEntry]] = {}
    current: list[ChangedEntry] = []
    fields = out.split(b"\0")
    index = 0
    while index < len(fields):
        field = fields[index]
        if field.startswith(b":"):
            _, new_mode, _, new_oid, _ = field[1:].decode().split(" ")
            current.append(ChangedEntry(git_text(fields[index + 1]), new_mode, new_oid))
            index += 2
            continue
        if field:
            current = changes.setdefault(field.decode(), [])
        index += 1
    return changes


def _read_blobs(git: Git, wanted: dict[str, str]) -> dict[str, str]:
    """key -> the text of blob `wanted[key]` (link targets), in one git call."""
    if not wanted:
        return {}
    keys = list(wanted)
    out = git.run(
        "cat-file", "--batch", input=("\n".join(wanted[k] for k in keys) + "\n").encode()
    ).stdout
    texts: dict[str, str] = {}
    position = 0
    for key in keys:
        header_end = out.index(b"\n", position)
        header = out[position:header_end].split(b" ")
        if len(header) != 3:
            raise IntegrityError(
                f"git cannot read object {wanted[key]} ({git_text(out[position:header_end])})"
            )
        size = int(header[2])
        start = header_end + 1
        texts[key] = git_text(out[start : start + size])
        position = start + size + 1
    return texts


# --------------------------------------------------------------------------- without applying


def paths_git_reads(git: Git, patch: Path, strip: int = 1, data: bytes | None = None) -> list[str]:
    """Every path name git reads from a patch (core.gitpatch's reading), without
    applying it: for patches that cannot be applied, so that their paths can
    still be judged. `data`, when given, is the patch (read from standard input;
    `patch` then only names it). Raises IntegrityError when git cannot read it."""
    reading = read_patch(git, strip, patch=patch if data is None else None, data=data)
    return names_read(patch, reading)


def names_read(patch: Path, reading: PatchReading) -> list[str]:
    """The names in git's reading of `patch`; IntegrityError when git could not read it."""
    if not reading.ok:
        reason = reading.first_error()
        if reason.startswith("No valid patches in input"):
            raise IntegrityError(
                f"patch {patch}: is an empty patch: it changes no file", CORRUPT_HINT
            )
        raise IntegrityError(f"patch {patch}: git cannot read it: {reason}", hint=CORRUPT_HINT)
    return reading.names


def judge_paths(subject: str, paths: Iterable[str]) -> None:
    for path in paths:
        problem = path_problem(path)
        if problem is not None:
            raise unsafe(subject, f"path {shown_path(path)} {problem}")
