"""A FlagScale patch's file diffs, as git reads them.

What a patch touches is git's to say (core.gitpatch): a squashed diff.patch is
cut where its lines start with `diff --git` (a hunk's lines start with a space,
`+`, `-` or `\\`, and no base85 line of a binary hunk holds a space, so no
such line lies inside a section), and git reads the whole text once; the two
must agree, section for section, on how many file diffs there are and which
file each one changes, or the file is refused. Every name git reads is
checked (inside the tree, no control characters) before the set is used.
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import IntegrityError, UnsafeInputError, quoted
from patchtool.core.fsutil import path_problem
from patchtool.core.gitops import Git
from patchtool.core.gitpatch import PatchEntry, PatchReading, quote, read_patch
from patchtool.vendors.flagscale.model import SET_FILES_LIMIT, TEXT_LIMIT, FilePatch
from patchtool.vendors.flagscale.yamlvalues import text_problem

_DIFF_START = re.compile(rb"^diff --git ", re.MULTILINE)
_MAIL_SEPARATOR = re.compile(rb"^From [0-9a-f]{40} Mon Sep 17 00:00:00 2001$", re.MULTILINE)
_MAIL_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")


class PatchReader:
    """git, run in an empty folder of its own (no repository above it is found),
    reading patches from its standard input: nothing is written anywhere."""

    def __init__(self, folder: Path) -> None:
        self.git = Git(folder, env={"GIT_CEILING_DIRECTORIES": str(folder.parent)})

    def read(self, text: bytes, old_names: bool = False) -> PatchReading:
        return read_patch(self.git, 1, data=text, old_names=old_names)


@dataclass(frozen=True)
class DiffSection:
    """One file diff: git's reading of it and its text."""

    entry: PatchEntry
    text: bytes

    def file(self, source: str, strip_prefix: str = "") -> FilePatch:
        entry = self.entry
        path = entry.path[len(strip_prefix) :]
        old = entry.old_path[len(strip_prefix) :] if entry.old_path is not None else None
        if entry.created:
            status = "added"
        elif entry.removed:
            status = "deleted"
        elif old is not None:
            status = "renamed"
        else:
            status = "modified"
        return FilePatch(path, self.text, source, status, old)  # type: ignore[arg-type]


def check_text(data: bytes, source: str, decrypted: bool, starts: tuple[bytes, ...]) -> bytes:
    """A decrypted file must be UTF-8 text that starts as a patch does: for a
    decrypted file this (and git's reading) is the only check there is."""
    if not decrypted:
        return data
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IntegrityError(
            f"{source}: decrypts to bytes that are not UTF-8 text (byte {error.start})",
            hint="The file is damaged, or was encrypted for another key.",
        ) from error
    if not data.lstrip().startswith(starts):
        raise IntegrityError(
            f"{source}: decrypts to text that is not a git diff",
            hint="The file is damaged: FlagScale's encryption has no integrity check, so "
            "damage shows only here.",
        )
    return data


def cut(text: bytes) -> list[bytes]:
    """The text from each `diff --git` line to the next (text before the first
    is left out: git passes over it too); each piece ends with a newline."""
    starts = [match.start() for match in _DIFF_START.finditer(text)]
    pieces = []
    for number, start in enumerate(starts):
        end = starts[number + 1] if number + 1 < len(starts) else len(text)
        piece = text[start:end]
        pieces.append(piece if piece.endswith(b"\n") else piece + b"\n")
    return pieces


def read_sections(
    reader: PatchReader, text: bytes, source: str, old_names: bool = False
) -> list[DiffSection]:
    """Every file diff of a patch, with git's reading of each."""
    pieces = cut(text)
    if len(pieces) > SET_FILES_LIMIT:
        raise IntegrityError(f"{source}: more than {SET_FILES_LIMIT} file diffs")
    reading = reader.read(b"".join(pieces), old_names)
    if not reading.ok:
        raise _unreadable(source, reading)
    if len(reading.entries) != len(pieces):
        raise IntegrityError(
            f"{source}: git reads {len(reading.entries)} file diff(s) in it, of which "
            f"{len(pieces)} start with a 'diff --git' line",
            hint="FlagScale's patches are `git diff` output, where every file's diff starts "
            "with 'diff --git'.",
        )
    sections = []
    for entry, piece in zip(reading.entries, pieces, strict=True):
        if not _names(piece, entry):
            # git read the sections otherwise than they were cut: ask it of this one alone.
            alone = reader.read(piece, old_names)
            if not alone.ok or len(alone.entries) != 1 or alone.entries[0].path != entry.path:
                first = piece.split(b"\n", 1)[0]
                raise IntegrityError(
                    f"{source}: the file diff starting {quoted(first, 120)} "
                    "is not the one git reads there",
                    hint="The patch may have been edited by hand; write it again with git diff.",
                )
        check_names(source, entry)
        sections.append(DiffSection(entry, piece))
    return sections


def _names(piece: bytes, entry: PatchEntry) -> bool:
    """Whether the `diff --git` line names the file git read (its b/ side)."""
    first = piece.split(b"\n", 1)[0].decode("utf-8", "surrogateescape")
    return first.endswith((" b/" + entry.path, " " + quote("b/" + entry.path)))


def _unreadable(source: str, reading: PatchReading) -> IntegrityError:
    reason = reading.first_error()
    if reason.startswith("No valid patches in input"):
        return IntegrityError(f"{source}: holds no file diff git can read", hint="Is it a patch?")
    return IntegrityError(
        f"{source}: git cannot read it: {reason}",
        hint="FlagScale's patches are `git diff` output; this one is damaged or was edited "
        "by hand.",
    )


def check_names(source: str, entry: PatchEntry) -> None:
    for name in entry.names:
        problem = path_problem(name) or name_problem(name)
        if problem is not None:
            raise UnsafeInputError(
                f"{source}: the path {quoted(name)} {problem}",
                hint="A patch may only change files inside the backend's tree.",
            )


def name_problem(name: str) -> str | None:
    if any("\udc80" <= character <= "\udcff" for character in name):
        return "is not UTF-8"
    return text_problem(name)


def read_per_file(reader: PatchReader, files: Sequence[tuple[str, str, bytes]]) -> list[FilePatch]:
    """Per-file patches, (source, expected path, text) each: git reads them all
    at once; each must hold one file diff, of the file its place names."""
    if not files:
        return []
    pieces = [cut(text) for _, _, text in files]
    whole = b"".join(piece for found in pieces for piece in found)
    reading = reader.read(whole, old_names=True)
    if (
        not reading.ok
        or len(reading.entries) != len(files)
        or any(len(found) != 1 for found in pieces)
    ):
        for (source, _, text), found in zip(files, pieces, strict=True):
            _read_one(reader, source, text, found)
        raise _unreadable(files[0][0], reading)  # pragma: no cover - one of them fails above
    patches = []
    for (source, expected, _), [piece], entry in zip(files, pieces, reading.entries, strict=True):
        if not _names(piece, entry):
            entry = _read_one(reader, source, piece, [piece], old_names=True)
        if expected not in (entry.path, entry.old_path):  # a rename's may lie at its old name
            raise IntegrityError(
                f"{source}: its diff is for {quoted(entry.path)}, not {quoted(expected)} "
                "as its place says",
                hint="A per-file patch lies at <path>.patch for the file it changes.",
            )
        check_names(source, entry)
        patches.append(DiffSection(entry, piece).file(source))
    return patches


def _read_one(
    reader: PatchReader, source: str, text: bytes, pieces: list[bytes], old_names: bool = False
) -> PatchEntry:
    reading = reader.read(text, old_names)
    if not reading.ok:
        raise _unreadable(source, reading)
    if len(pieces) != 1 or len(reading.entries) != 1:
        count = max(len(pieces), len(reading.entries))
        raise IntegrityError(f"{source}: holds {count} file diffs; a per-file patch holds one")
    return reading.entries[0]


# --------------------------------------------------------------------------- legacy mails


@dataclass(frozen=True)
class Mail:
    author: str | None  # "Name <email>", when the mail names one
    date: str | None  # ISO 8601, when it names one
    subject: str | None
    diff: bytes


def read_mail(data: bytes, source: str) -> Mail:
    """One `git format-patch` mail: its author, date and subject, and the diff
    (everything from its first `diff --git` line)."""
    if len(_MAIL_SEPARATOR.findall(data)) > 1:
        raise IntegrityError(
            f"{source}: holds more than one mail; a legacy patch is one squashed format-patch"
        )
    lines = data.split(b"\n")
    start = 1 if lines and lines[0].startswith(b"From ") else 0
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    first_diff = _DIFF_START.search(data)
    diff = data[first_diff.start() :] if first_diff else b""
    if end == start or not _MAIL_HEADER.match(lines[start]):
        return Mail(None, None, None, diff)  # not a mail: a plain diff
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
        b"\n".join(lines[start:end]) + b"\n"
    )
    author = None
    name, address = email.utils.parseaddr(str(headers.get("From", "")))
    if address and _EMAIL.match(address):
        name = " ".join(name.split())
        if not name or text_problem(name) or "<" in name or ">" in name:
            name = address.split("@", 1)[0]
        author = f"{name[:TEXT_LIMIT]} <{address}>"
    date = None
    raw_date = str(headers.get("Date", ""))
    if raw_date:
        try:
            date = email.utils.parsedate_to_datetime(raw_date).isoformat()
        except (TypeError, ValueError):
            date = None
    subject = " ".join(str(headers.get("Subject", "")).split())
    subject = re.sub(r"^(\[[^\]]*\]\s*)+", "", subject)
    subject = "".join(c for c in subject if text_problem(c) is None)[:TEXT_LIMIT]
    return Mail(author, date, subject or None, diff)
