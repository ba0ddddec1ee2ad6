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
   reading: what the patch does is still for git to say.
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

import base64
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import IntegrityError, UnsafeInputError, quoted
from patchtool.core.fsutil import folds_to, path_problem, shown_path
from patchtool.core.gitops import Git
from patchtool.store.model import DEVICE_FILE, GitUrl, PatchLimits, limit_hint

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


def check_size(subject: str, data: bytes, limits: PatchLimits) -> PatchSize:
    """Refuse a patch past the device's limits before git reads it (exit 6): its
    bytes, file sections and hunks, what its binary hunks inflate to, and a mail
    that git would decode before reading the patch (then what git reads is not
    what was measured). Returns what was measured."""
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
    _check_mail_encoding(subject, data)
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

# --------------------------------------------------------------------------- binary hunks

# How git reads `GIT binary patch` data (apply.c): after that line, a hunk is a
# `literal <size>` or `delta <size>` line (the size as C's strtoul reads it),
# base85 lines (the first character gives the line's byte count: A-Z 1-26,
# a-z 27-52) and an empty line; a second hunk (the reverse) may follow. git
# inflates every hunk to exactly its declared size; a delta then makes a result
# of the size in its own header (two varints: the source's size, the result's).
_BINARY_START = re.compile(rb"^GIT binary patch\r?$", re.M)
_HUNK_HEAD = re.compile(rb"(literal|delta) ([^\n]*)")
_STRTOUL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]*)")
_ULONG = 1 << 64
_DELTA_HEADER = 32  # inflated bytes that hold both varints of a delta's header
# The data lines read for a delta's header: far more than git ever needs; a delta
# whose header is not in them is refused as unreadable.
_DELTA_LINES = 4096


@dataclass(frozen=True)
class BinaryHunk:
    line: int  # of its literal/delta line, from 1
    kind: str  # "literal" or "delta"
    size: int  # the declared inflated size
    result: int | None = None  # a delta's result size, from its header (None: unreadable)

    def sizes(self) -> list[tuple[str, int]]:
        """What git allocates for this hunk, each with what to call it."""
        if self.kind == "literal":
            return [("a binary literal", self.size)]
        assert self.result is not None
        return [("a binary delta", self.size), ("the result of a binary delta", self.result)]


def binary_hunks(data: bytes) -> Iterator[BinaryHunk]:
    """Every binary hunk git could read from `data`, with its declared sizes, read
    without inflating more than a delta's header (`result` is None for a delta
    whose header cannot be read). Each line is looked at once."""
    counted, lines = 0, 1  # line numbers, counted once through the data
    for start in _BINARY_START.finditer(data):
        position = start.end() + 1
        while position < len(data):
            end = _line_end(data, position)
            head = _HUNK_HEAD.match(data, position, end)
            if head is None:
                break
            first = position
            body: list[bytes] = []
            position = end + 1
            while position < len(data) and data[position : position + 1] != b"\n":
                end = _line_end(data, position)
                if len(body) < _DELTA_LINES:
                    body.append(data[position:end])
                position = end + 1
            position += 1  # the empty line that ends the hunk
            lines += data.count(b"\n", counted, first)
            counted = first
            size = _strtoul(head[2])
            if head[1] == b"literal":
                yield BinaryHunk(lines, "literal", size)
            else:
                yield BinaryHunk(lines, "delta", size, _delta_result_size(body))


def _line_end(data: bytes, position: int) -> int:
    end = data.find(b"\n", position)
    return len(data) if end < 0 else end


def _strtoul(text: bytes) -> int:
    """`text` as C's strtoul(text, NULL, 10) reads it on a 64-bit machine."""
    match = _STRTOUL.match(text)
    assert match is not None  # every part of the pattern may be empty
    sign, digits = match[1], match[2].lstrip(b"0")
    value = _ULONG - 1 if len(digits) > 20 else min(int(digits or b"0"), _ULONG - 1)
    return (_ULONG - value) % _ULONG if sign == b"-" and value != _ULONG - 1 else value


def _delta_result_size(lines: list[bytes]) -> int | None:
    """The result size in a binary delta's header, inflating its first bytes only
    (None when its data ends, or cannot be decoded, before the header does)."""
    inflater = zlib.decompressobj()
    header = b""
    for line in lines:
        if not line:
            break
        count = line[0] - 64 if 65 <= line[0] <= 90 else line[0] - 70 if 97 <= line[0] <= 122 else 0
        try:
            chunk = base64.b85decode(line[1:].rstrip(b"\r"))[:count]
            header += inflater.decompress(
                inflater.unconsumed_tail + chunk, _DELTA_HEADER - len(header)
            )
        except (ValueError, zlib.error):
            return None
        while inflater.unconsumed_tail and len(header) < _DELTA_HEADER:
            try:
                header += inflater.decompress(inflater.unconsumed_tail, _DELTA_HEADER - len(header))
            except zlib.error:
                return None
        decoded = _two_varints(header)
        if decoded is not None:
            return decoded
        if len(header) >= _DELTA_HEADER or inflater.eof:
            return None
    return None


def _two_varints(data: bytes) -> int | None:
    """The second of two little-endian base-128 varints at the start of `data`
    (a delta's result size); 2**64 for one longer than ten bytes, which no
    64-bit size is; None while `data` ends before it does."""
    position, value = 0, 0
    for _ in range(2):
        value, shift = 0, 0
        while True:
            if position >= len(data):
                return None
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift >= 70:
                return _ULONG
    return value


_MAIL_HEADER = re.compile(rb"(?:>?From |[\x21-\x39\x3b-\x7e]*:)")
_MAIL_START = re.compile(rb"^From ", re.M)


def _check_mail_encoding(subject: str, data: bytes) -> None:
    """Refuse a mail whose headers make git decode or reflow its body before it
    reads the patch in it (a transfer encoding, format=flowed, MIME parts):
    then git would read another text than the one these limits measured. git
    reads headers at the start of every mail: the start of the data and, as
    `git mailsplit` splits an mbox, every line that starts with "From ". Each
    line is looked at once, whatever the data holds."""
    starts = [len(data) - len(data.lstrip())]
    starts += [match.start() for match in _MAIL_START.finditer(data) if match.start()]
    examined = 0  # the headers before this offset were read already
    for start in starts:
        if start < examined:
            continue
        headers, examined = _content_headers(data, start)
        for position, name, value in headers:
            encoded = b"=?" in value  # git decodes RFC 2047 words before it looks
            if (
                name == b"content-transfer-encoding"
                and (encoded or b"base64" in value or b"quoted-printable" in value)
            ) or (
                name == b"content-type"
                and (encoded or b"format=flowed" in value or b"boundary=" in value)
            ):
                line = data.count(b"\n", 0, position) + 1
                shown = data[position:].split(b"\n", 1)[0].rstrip().decode("utf-8", "replace")
                raise IntegrityError(
                    f"{subject}: line {line}: the mail header {quoted(shown, 80)} makes git "
                    "decode or reflow the patch before it reads it",
                    hint="Nothing was applied. Patches are bounded by the text git reads: "
                    "export the patch again with `patchtool patch` (git format-patch writes "
                    "it as it is).",
                )


_CONTENT_HEADERS = (b"content-type", b"content-transfer-encoding")


def _content_headers(data: bytes, start: int) -> tuple[list[tuple[int, bytes, bytes]], int]:
    """The Content-Type and Content-Transfer-Encoding headers of the mail at
    `start` as `git mailinfo` reads its header block (up to the first line that
    is empty or no header; folded lines joined): (offset, name in lower case,
    value in lower case) each; and the offset where the block ends."""
    found: list[tuple[int, bytes, bytes]] = []
    parts: list[bytes] = []  # the header being read, when it is one of those
    position = start
    while position < len(data):
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end
        text = data[position:end].rstrip()
        if data[position : position + 1] in (b" ", b"\t") and position > start:
            if parts:
                parts.append(text.strip())  # a folded line
        else:
            if parts:
                found[-1] = (found[-1][0], found[-1][1], b" ".join(parts).lower())
                parts = []
            if not text or not _MAIL_HEADER.match(text):
                return found, position
            name, _, value = text.partition(b":")
            if name.strip().lower() in _CONTENT_HEADERS:
                found.append((position, name.strip().lower(), b""))
                parts = [value]
        position = end + 1
    if parts:
        found[-1] = (found[-1][0], found[-1][1], b" ".join(parts).lower())
    return found, position


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
        `subject` names it in errors ("base vllm 0.7.2")."""
        self.entries: dict[str, tuple[str, str]] = {}
        self.targets: dict[str, str] = {}
        listing = git.run("ls-tree", "-r", "-z", "--full-tree", commit).stdout
        for record in listing.split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, _, oid = meta.decode().split(" ")
            self.entries[_decode(raw_path)] = (mode, oid)
        for path, (mode, _) in self.entries.items():
            self._judge_entry(subject, path, mode)
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
            name, value = _decode(key), _decode(raw)
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


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


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
            current.append(ChangedEntry(_decode(fields[index + 1]), new_mode, new_oid))
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
                f"git cannot read object {wanted[key]} ({_decode(out[position:header_end])})"
            )
        size = int(header[2])
        start = header_end + 1
        texts[key] = _decode(out[start : start + size])
        position = start + size + 1
    return texts


# --------------------------------------------------------------------------- without applying


def paths_git_reads(git: Git, patch: Path, strip: int = 1, data: bytes | None = None) -> list[str]:
    """Every path name git reads from a patch (`git apply --numstat -z`), without
    applying it: for patches that cannot be applied, so that their paths can
    still be judged. `data`, when given, is the patch (read from standard input;
    `patch` then only names it). Raises IntegrityError when git cannot read it."""
    numstat_args = ("apply", f"-p{strip}", "--numstat", "-z")
    if data is not None:
        numstat = git.run(*numstat_args, input=data, check=False)
    else:
        numstat = git.run(*numstat_args, "--", str(patch), check=False)
    if numstat.returncode != 0:
        reason = first_error(numstat.stderr)
        if reason.startswith("No valid patches in input"):
            raise IntegrityError(
                f"patch {patch}: is an empty patch: it changes no file", CORRUPT_HINT
            )
        raise IntegrityError(f"patch {patch}: git cannot read it: {reason}", hint=CORRUPT_HINT)
    names: list[str] = []
    for field in numstat.stdout.split(b"\0"):
        parts = field.split(b"\t")
        name = parts[-1]
        if name:
            names.append(_decode(name))
    return names


def judge_paths(subject: str, paths: Iterable[str]) -> None:
    for path in paths:
        problem = path_problem(path)
        if problem is not None:
            raise unsafe(subject, f"path {shown_path(path)} {problem}")


def first_error(stderr: str) -> str:
    lines = [line.removeprefix("error: ").removeprefix("fatal: ") for line in stderr.splitlines()]
    chosen = [line for line in lines if line and not line.startswith("hint:")]
    return chosen[0].rstrip(": ") if chosen else "git gave no reason"
