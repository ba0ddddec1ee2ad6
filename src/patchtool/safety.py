"""Refuse hostile or corrupt patch files before git touches a tree.

`git am` already refuses some of this (paths beyond a symlink, a few `.git`
spellings), but what it accepts depends on its version and its config, and its
messages do not name the store's patch file. So every patch of a series is read
here first, and one that could write outside the build tree, into `.git`, or
through a symlink is refused with `UnsafeInputError` (exit 10); one that is
damaged (no diff, wrong hunk line counts, cut short, empty) with
`IntegrityError` (exit 6). Both name the patch file and the path.

The reader works on bytes, line by line, the way `git apply` splits a patch:
binary patches and non-UTF-8 content are normal, and hunk line counts must be
checked exactly (unidiff stops at the first bad hunk with a message that names
no file). It also keeps the added lines, for the lint in `check.py`.

This module reads patch files and asks git for a tree's symlinks; it writes
nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import IntegrityError, UnsafeInputError
from .gitops import Git
from .store import PatchSeries

SYMLINK_MODE = "120000"
DEV_NULL = "/dev/null"
_HUNK_HEADER = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@(.*)$")
_BINARY_BLOCK = re.compile(rb"^(literal|delta) (\d+)$")
_INDEX_LINE = re.compile(rb"^index [0-9a-fA-F]+\.\.[0-9a-fA-F]+(?: ([0-7]{6}))?$")
_MODE = re.compile(rb"^[0-7]{6}$")
_UNSAFE_HINT = (
    "Nothing was applied and no build tree was changed. patchtool refuses patches that "
    "could write outside the tree, into .git or through a symlink: fix or remove the "
    "patch (and its line in series)."
)
_CORRUPT_HINT = (
    "Nothing was applied. The patch file is damaged: restore it from version control, "
    "or export it again with `patchtool patch`."
)


# --------------------------------------------------------------------------- data model


@dataclass
class Hunk:
    header: str
    line: int  # 1-based line of the @@ header in the patch file
    removed: list[bytes] = field(default_factory=list)
    added: list[tuple[int, bytes]] = field(default_factory=list)  # (patch line, content)


@dataclass
class FileChange:
    """One `diff --git` section: names as git will use them (prefix stripped)."""

    line: int
    old_path: str | None  # None for a creation
    new_path: str | None  # None for a deletion
    old_mode: str | None = None
    new_mode: str | None = None
    renamed: bool = False
    copied: bool = False
    binary: bool = False
    hunks: list[Hunk] = field(default_factory=list)

    @property
    def created(self) -> bool:
        return self.old_path is None

    @property
    def deleted(self) -> bool:
        return self.new_path is None

    @property
    def paths(self) -> list[str]:
        return [p for p in dict.fromkeys((self.old_path, self.new_path)) if p is not None]

    def added_text(self) -> bytes:
        return b"\n".join(content for hunk in self.hunks for _, content in hunk.added)


@dataclass
class ParsedPatch:
    path: Path
    message: bytes  # the mail header and body, up to the first `diff --git`
    files: list[FileChange]


# --------------------------------------------------------------------------- reading


def _unsafe(patch: Path, problem: str) -> UnsafeInputError:
    return UnsafeInputError(f"patch {patch}: {problem}", hint=_UNSAFE_HINT)


def _corrupt(patch: Path, problem: str) -> IntegrityError:
    return IntegrityError(f"patch {patch}: {problem}", hint=_CORRUPT_HINT)


def _show(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


_C_ESCAPES = {
    b"a": 7,
    b"b": 8,
    b"t": 9,
    b"n": 10,
    b"v": 11,
    b"f": 12,
    b"r": 13,
    b'"': 34,
    b"\\": 92,
}


def _parse_quoted(raw: bytes, patch: Path, line: int) -> tuple[bytes, int]:
    """A C-quoted name as git writes it (core.quotePath); return it and the index after."""
    assert raw[:1] == b'"'
    out = bytearray()
    index = 1
    while index < len(raw):
        char = raw[index : index + 1]
        if char == b'"':
            return bytes(out), index + 1
        if char == b"\\":
            escape = raw[index + 1 : index + 2]
            if escape in _C_ESCAPES:
                out.append(_C_ESCAPES[escape])
                index += 2
                continue
            digits = raw[index + 1 : index + 4]
            if len(digits) == 3 and all(48 <= d <= 55 for d in digits):
                out.append(int(digits, 8) & 0xFF)
                index += 4
                continue
            raise _corrupt(patch, f"line {line}: bad escape in quoted name {_show(raw)!r}")
        out += char
        index += 1
    raise _corrupt(patch, f"line {line}: unterminated quoted name {_show(raw)!r}")


def _strip_prefix(name: bytes, patch: Path, line: int) -> str:
    """`git apply -p1`: drop everything up to the first '/'."""
    text = _show(name)
    if "/" not in text:
        raise _corrupt(patch, f"line {line}: name {text!r} has no a/ or b/ prefix")
    return text.split("/", 1)[1]


def _header_name(value: bytes, patch: Path, line: int) -> str | None:
    """A name from `--- X`, `+++ X`, `rename from X`: None for /dev/null."""
    if value.startswith(b'"'):
        raw, _ = _parse_quoted(value, patch, line)
        return None if raw == DEV_NULL.encode() else raw.decode("utf-8", "surrogateescape")
    value = value.split(b"\t", 1)[0]  # GNU diff puts a timestamp after a tab
    if value == DEV_NULL.encode():
        return None
    return _show(value)


def _git_header_names(rest: bytes, patch: Path, line: int) -> tuple[str, str] | None:
    """The two names of `diff --git A B`, prefixes stripped; None when names with
    spaces make the split ambiguous (the ---/+++ or rename lines then decide)."""
    if rest.startswith(b'"'):
        first, end = _parse_quoted(rest, patch, line)
        remainder = rest[end:]
        if not remainder.startswith(b" "):
            raise _corrupt(patch, f"line {line}: malformed 'diff --git' line")
        remainder = remainder[1:]
        if remainder.startswith(b'"'):
            second, end = _parse_quoted(remainder, patch, line)
            if remainder[end:].strip():
                raise _corrupt(patch, f"line {line}: malformed 'diff --git' line")
        else:
            second = remainder
        return _strip_prefix(first, patch, line), _strip_prefix(second, patch, line)
    if rest.endswith(b'"') and b' "' in rest:
        # Unquoted names never hold '"' (git quotes those), so the split is certain.
        split = rest.index(b' "')
        second, _ = _parse_quoted(rest[split + 1 :], patch, line)
        return _strip_prefix(rest[:split], patch, line), _strip_prefix(second, patch, line)
    spaces = [i for i, byte in enumerate(rest) if byte == 0x20]
    candidates = []
    for index in spaces:
        left, right = rest[:index], rest[index + 1 :]
        if b"/" in left and b"/" in right:
            candidates.append((left.split(b"/", 1)[1], right.split(b"/", 1)[1]))
    same = [pair for pair in candidates if pair[0] == pair[1]]
    chosen = same if len(same) == 1 else candidates if len(candidates) == 1 else []
    if not chosen:
        return None
    return _show(chosen[0][0]), _show(chosen[0][1])


def parse_patch_file(path: Path) -> ParsedPatch:
    """Read a git format-patch file; raise IntegrityError when it is damaged and
    UnsafeInputError for a diff git would apply without a `diff --git` header."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise _corrupt(path, f"cannot be read: {error.strerror or error}") from error
    return _Reader(path, data).read()


class _Reader:
    def __init__(self, path: Path, data: bytes) -> None:
        self.path = path
        self.ends_with_newline = data.endswith(b"\n")
        self.lines = data.split(b"\n")
        if self.ends_with_newline:
            self.lines.pop()

    def read(self) -> ParsedPatch:
        lines = self.lines
        first = next((i for i, ln in enumerate(lines) if ln.startswith(b"diff --git ")), None)
        if first is None:
            self._refuse_traditional(0, len(lines))
            looks_like_mail = any(
                ln.startswith((b"Subject:", b"From:", b"From ")) for ln in lines[:50]
            )
            if looks_like_mail:
                raise _corrupt(
                    self.path, "is an empty patch: it changes no file (no 'diff --git' section)"
                )
            raise _corrupt(self.path, "is not a git patch: it holds no 'diff --git' section")
        self._refuse_traditional(0, first)
        files: list[FileChange] = []
        index = first
        while index < len(lines):
            if lines[index].startswith(b"diff --git "):
                change, index = self._section(index)
                files.append(change)
            else:
                # Text between sections (the signature, say) is skipped by git apply,
                # unless it holds a traditional diff: that it would apply.
                self._refuse_traditional(index, index + 1)
                index += 1
        if not self.ends_with_newline:
            raise _corrupt(self.path, "does not end with a newline: the file is truncated")
        return ParsedPatch(self.path, b"\n".join(lines[:first]), files)

    def _refuse_traditional(self, start: int, stop: int) -> None:
        lines = self.lines
        for index in range(start, min(stop, len(lines))):
            if (
                lines[index].startswith(b"--- ")
                and index + 2 < len(lines)
                and lines[index + 1].startswith(b"+++ ")
                and lines[index + 2].startswith(b"@@ -")
            ):
                raise _unsafe(
                    self.path,
                    f"line {index + 1}: a diff without a 'diff --git' header "
                    f"({_show(lines[index])!r}); git would apply it unchecked",
                )

    def _section(self, start: int) -> tuple[FileChange, int]:
        lines, path = self.lines, self.path
        number = start + 1
        names = _git_header_names(lines[start][len(b"diff --git ") :], path, number)
        git_old, git_new = names if names else (None, None)
        minus: tuple[str | None] | None = None
        plus: tuple[str | None] | None = None
        rename_from = rename_to = copy_from = copy_to = None
        old_mode = new_mode = index_mode = None
        created = deleted = binary = False
        index = start + 1
        while index < len(lines):
            line = lines[index]
            at = index + 1
            if line.startswith(b"old mode "):
                old_mode = self._mode(line[9:], at)
            elif line.startswith(b"new mode "):
                new_mode = self._mode(line[9:], at)
            elif line.startswith(b"deleted file mode "):
                old_mode, deleted = self._mode(line[18:], at), True
            elif line.startswith(b"new file mode "):
                new_mode, created = self._mode(line[14:], at), True
            elif line.startswith(b"rename from "):
                rename_from = self._extended_name(line[12:], at)
            elif line.startswith(b"rename to "):
                rename_to = self._extended_name(line[10:], at)
            elif line.startswith(b"copy from "):
                copy_from = self._extended_name(line[10:], at)
            elif line.startswith(b"copy to "):
                copy_to = self._extended_name(line[8:], at)
            elif line.startswith((b"similarity index ", b"dissimilarity index ")):
                pass
            elif line.startswith(b"index "):
                match = _INDEX_LINE.match(line)
                if not match:
                    raise _corrupt(path, f"line {at}: malformed index line {_show(line)!r}")
                if match[1]:
                    index_mode = match[1].decode()
            elif line.startswith(b"--- ") and minus is None:
                minus = (_header_name(line[4:], path, at),)
            elif line.startswith(b"+++ ") and plus is None:
                if minus is None:
                    raise _corrupt(path, f"line {at}: '+++' without a '---' line before it")
                plus = (_header_name(line[4:], path, at),)
            elif line.startswith(b"Binary files "):
                binary = True
                index += 1
                break
            elif line == b"GIT binary patch":
                binary = True
                index = self._binary(index + 1)
                break
            else:
                break
            index += 1
        if (minus is None) != (plus is None):
            raise _corrupt(path, f"line {number}: a '---' line without its '+++' line")
        hunks: list[Hunk] = []
        while index < len(lines) and lines[index].startswith(b"@@") and not binary:
            hunk, index = self._hunk(index)
            hunks.append(hunk)
        if minus is not None and not hunks and not binary:
            raise _corrupt(
                path,
                f"line {number}: '---'/'+++' lines with no hunk after them (the file is truncated)",
            )

        def stripped(value: tuple[str | None] | None) -> str | None:
            if value is None or value[0] is None:
                return None
            return _strip_prefix(value[0].encode("utf-8", "surrogateescape"), path, number)

        minus_name, plus_name = stripped(minus), stripped(plus)
        if minus is not None and minus[0] is None:
            created = True
        if plus is not None and plus[0] is None:
            deleted = True
        if created and deleted:
            raise _corrupt(path, f"line {number}: a section that both creates and deletes a file")
        for label, header_name, git_name in (
            ("---", minus_name, git_old),
            ("+++", plus_name, git_new),
        ):
            if header_name is not None and git_name is not None and header_name != git_name:
                raise _unsafe(
                    path,
                    f"line {number}: 'diff --git' names {git_name!r} but its "
                    f"'{label}' line names {header_name!r}",
                )
        moved_from, moved_to = rename_from or copy_from, rename_to or copy_to
        if (moved_from is None) != (moved_to is None):
            raise _corrupt(path, f"line {number}: a rename or copy with only one of from/to")
        for label, moved, git_name in (("from", moved_from, git_old), ("to", moved_to, git_new)):
            if moved is not None and git_name is not None and moved != git_name:
                raise _unsafe(
                    path,
                    f"line {number}: 'diff --git' names {git_name!r} but "
                    f"'rename/copy {label}' names {moved!r}",
                )
        old_name = moved_from or minus_name or git_old
        new_name = moved_to or plus_name or git_new
        if (
            moved_from is None
            and old_name is not None
            and new_name is not None
            and old_name != new_name
            and not created
            and not deleted
        ):
            raise _unsafe(
                path,
                f"line {number}: 'diff --git' names {old_name!r} and "
                f"{new_name!r} but the section is no rename or copy",
            )
        if old_name is None and new_name is None:
            raise _corrupt(path, f"line {number}: cannot tell which file the section changes")
        if old_name is None:
            old_name = new_name
        if new_name is None:
            new_name = old_name
        change = FileChange(
            line=number,
            old_path=None if created else old_name,
            new_path=None if deleted else new_name,
            old_mode=old_mode or (None if created else index_mode),
            new_mode=new_mode or (None if deleted else index_mode),
            renamed=rename_from is not None,
            copied=copy_from is not None,
            binary=binary,
            hunks=hunks,
        )
        mode_change = old_mode is not None and new_mode is not None and old_mode != new_mode
        if not (hunks or binary or created or deleted or moved_from or mode_change):
            raise _corrupt(path, f"line {number}: the section for {new_name!r} changes nothing")
        return change, index

    def _mode(self, raw: bytes, line: int) -> str:
        if not _MODE.match(raw):
            raise _corrupt(self.path, f"line {line}: bad file mode {_show(raw)!r}")
        return raw.decode()

    def _extended_name(self, raw: bytes, line: int) -> str:
        if raw.startswith(b'"'):
            name, _ = _parse_quoted(raw, self.path, line)
            return name.decode("utf-8", "surrogateescape")
        return _show(raw)

    def _hunk(self, start: int) -> tuple[Hunk, int]:
        lines, path = self.lines, self.path
        match = _HUNK_HEADER.match(lines[start])
        if not match:
            raise _corrupt(path, f"line {start + 1}: malformed hunk header {_show(lines[start])!r}")
        old_left = int(match[2]) if match[2] is not None else 1
        new_left = int(match[4]) if match[4] is not None else 1
        header = _show(lines[start])
        hunk = Hunk(header=header, line=start + 1)
        if old_left == 0 and new_left == 0:
            raise _corrupt(path, f"line {start + 1}: hunk {header!r} has no lines")
        index = start + 1
        while old_left > 0 or new_left > 0:
            if index >= len(lines):
                raise _corrupt(
                    path, f"is truncated: it ends inside hunk {header!r} (line {start + 1})"
                )
            line = lines[index]
            kind = line[:1]
            if kind == b" " or line == b"":
                old_left, new_left = old_left - 1, new_left - 1
            elif kind == b"-":
                old_left -= 1
                hunk.removed.append(line[1:])
            elif kind == b"+":
                new_left -= 1
                hunk.added.append((index + 1, line[1:]))
            elif kind == b"\\":
                pass
            else:
                old_left = new_left = -1
            if old_left < 0 or new_left < 0:
                raise _corrupt(
                    path,
                    f"line {index + 1}: hunk {header!r} (line {start + 1}) "
                    "has line counts that do not match its body",
                )
            index += 1
        while index < len(lines) and lines[index].startswith(b"\\"):
            index += 1
        return hunk, index

    def _binary(self, index: int) -> int:
        lines, path = self.lines, self.path
        blocks = 0
        while index < len(lines) and _BINARY_BLOCK.match(lines[index]):
            index += 1
            while True:
                if index >= len(lines):
                    raise _corrupt(path, "is truncated: it ends inside a binary patch")
                line = lines[index]
                index += 1
                if line == b"":
                    break
                first = line[0]
                if 65 <= first <= 90:
                    size = first - 64
                elif 97 <= first <= 122:
                    size = first - 96 + 26
                else:
                    raise _corrupt(path, f"line {index}: corrupt binary patch data")
                if len(line) != 1 + (size + 3) // 4 * 5:
                    raise _corrupt(path, f"line {index}: corrupt binary patch data")
            blocks += 1
        if blocks == 0:
            raise _corrupt(path, f"line {index + 1}: 'GIT binary patch' with no data")
        return index


# --------------------------------------------------------------------------- safety rules


def _check_path(patch: Path, path: str, line: int) -> None:
    where = f"line {line}: path {path!r}"
    if path == "":
        raise _unsafe(patch, f"line {line}: a path is empty")
    if path.startswith("/"):
        raise _unsafe(patch, f"{where} is absolute")
    parts = path.split("/")
    if ".." in parts:
        raise _unsafe(patch, f"{where} climbs out of the tree with '..'")
    if "" in parts or "." in parts:
        raise _unsafe(patch, f"{where} has an empty or '.' component")
    for part in parts:
        # Also the spellings that name .git on case-insensitive, NTFS or 8.3 file systems.
        folded = part.casefold()
        if folded.rstrip(". ") == ".git" or folded == "git~1":
            raise _unsafe(patch, f"{where} points into .git")


def _check_link_target(patch: Path, link: str, target: str, links: set[str], line: int) -> None:
    where = f"line {line}: symlink {link!r} -> {target!r}"
    if target == "":
        raise _unsafe(patch, f"{where} has an empty target")
    if target.startswith("/"):
        raise _unsafe(patch, f"{where} points to an absolute path")
    stack = link.split("/")[:-1]
    parts = [p for p in target.split("/") if p not in ("", ".")]
    for position, part in enumerate(parts):
        if part == "..":
            if not stack:
                raise _unsafe(patch, f"{where} points outside the tree")
            stack.pop()
            continue
        if part.casefold().rstrip(". ") == ".git":
            raise _unsafe(patch, f"{where} points into .git")
        stack.append(part)
        if position < len(parts) - 1 and "/".join(stack) in links:
            # The kernel follows that link first; its target, not the text, decides.
            raise _unsafe(patch, f"{where} passes through the symlink {'/'.join(stack)!r}")


def _parent_link(path: str, links: set[str]) -> str | None:
    parts = path.split("/")
    for end in range(1, len(parts)):
        prefix = "/".join(parts[:end])
        if prefix in links:
            return prefix
    return None


def check_patch(parsed: ParsedPatch, symlinks: Iterable[str]) -> set[str]:
    """Refuse an unsafe patch; return the tree's symlinks after it applies."""
    patch = parsed.path
    before = set(symlinks)
    removed: set[str] = set()
    added: set[str] = set()
    for change in parsed.files:
        for path in change.paths:
            _check_path(patch, path, change.line)
        if (
            change.old_path is not None
            and change.old_path in before
            and (change.deleted or change.renamed or (change.new_mode not in (None, SYMLINK_MODE)))
        ):
            removed.add(change.old_path)
        if change.new_path is not None and _becomes_symlink(change, before):
            added.add(change.new_path)
    during = (before - removed) | added
    for change in parsed.files:
        for path in change.paths:
            link = _parent_link(path, during)
            if link is not None:
                raise _unsafe(
                    patch,
                    f"line {change.line}: path {path!r} is written through the symlink {link!r}",
                )
        if change.new_path is None or not _becomes_symlink(change, before):
            continue
        if change.binary:
            raise _unsafe(
                patch, f"line {change.line}: symlink {change.new_path!r} has a binary target"
            )
        if not change.hunks:
            if change.renamed or change.copied:
                raise _unsafe(
                    patch,
                    f"line {change.line}: symlink {change.old_path!r} is moved "
                    f"to {change.new_path!r} without showing its target",
                )
            continue  # a mode change only: the target is the file's unchanged text
        target = _show(change.added_text())
        _check_link_target(patch, change.new_path, target, during, change.line)
    return during


def _becomes_symlink(change: FileChange, links: set[str]) -> bool:
    if change.new_mode is not None:
        return change.new_mode == SYMLINK_MODE
    return change.old_path is not None and change.old_path in links


def check_patch_file(path: Path, tree_symlinks: Iterable[str]) -> set[str]:
    """Read and check one patch file; return the symlinks after it applies."""
    return check_patch(parse_patch_file(path), tree_symlinks)


def check_series(series: PatchSeries, base_symlinks: Iterable[str]) -> set[str]:
    """Check every patch in order, each against the symlinks the ones before it left."""
    links = set(base_symlinks)
    for path in series.paths():
        links = check_patch_file(path, links)
    return links


def tree_symlinks(git: Git, treeish: str | None = None) -> set[str]:
    """Symlinks (mode 120000) of the index, or of `treeish` in a bare repository."""
    if treeish is None:
        out = git.run("ls-files", "-s", "-z").stdout  # "mode sha stage\tpath"
    else:
        out = git.run("ls-tree", "-r", "-z", treeish).stdout  # "mode type sha\tpath"
    links = set()
    for entry in out.split(b"\0"):
        meta, _, name = entry.partition(b"\t")
        if meta.split(b" ", 1)[0] == SYMLINK_MODE.encode():
            links.add(name.decode("utf-8", "surrogateescape"))
    return links
