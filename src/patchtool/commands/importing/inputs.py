"""What `import` reads: mbox files (also one `format-patch --stdout` stream),
plain unified diffs and quilt series, each as a list of `Change`s with the
author, date and message the input gives (none invented here).

Only reading: nothing is applied (changes.py does that) and nothing is written
but the split mails, in the scratch folder the caller names (an mbox may hold a
private patch's plaintext, decrypted by `import --flagscale`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import NotFoundError, UsageError, quoted
from patchtool.core.fsutil import check_relative_path, read_regular_file, temporary_folder
from patchtool.core.gitops import Git
from patchtool.series.privacy import PRIVATE_TRAILER
from patchtool.store.model import DEFAULT_LIMITS, PatchLimits, limit_hint
from patchtool.store.series import check_series_length

AUTHOR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]+)>\s*$")
_PRIVATE = re.compile(rf"^{PRIVATE_TRAILER}:[ \t]*(yes|true)[ \t]*$", re.MULTILINE | re.IGNORECASE)


def marks_private(message: str) -> bool:
    """Whether a message carries the trailer that makes its commit a private patch."""
    return _PRIVATE.search(message) is not None


@dataclass(frozen=True)
class Change:
    """One change to import: the diff and whatever metadata its input carried."""

    origin: str  # what the user can find it by: "fixes.mbox, message 3 of 120"
    diff: bytes
    strip: int
    author: tuple[str, str] | None = None  # (name, email)
    date: str | None = None
    message: str | None = None
    # Where it came from, for the body of a message that has none: the input file
    # as given (its name when given by an absolute path), the mbox message, the
    # quilt series line.
    source: str = ""
    # Its commit becomes a private patch (the message's Patchtool-Private: trailer):
    # a failure to apply it is reported by file and position only.
    private: bool = False


def read_changes(
    inputs: tuple[Path, ...],
    strip: int,
    series_file: Path | None,
    scratch: Path,
    limits: PatchLimits = DEFAULT_LIMITS,
) -> list[Change]:
    """The changes the inputs hold, in order; mbox files are split in `scratch`.
    Every file is read once, through fsutil.read_regular_file: the files named
    on the command line as the user names them (links followed), a patch a
    quilt series names as input names it (a plain file in the series' folder or
    below it, never a link); each at most patch-bytes, and at most
    series-patches changes in all."""
    changes: list[Change] = []
    if series_file is not None:
        changes.extend(_read_quilt(series_file, strip, scratch, limits))
    for path in inputs:
        if path.is_dir():
            series = path / "series"
            if not series.is_file() and (path / "patches" / "series").is_file():
                series = path / "patches" / "series"
            if not series.is_file():
                raise NotFoundError(
                    f"{path} is a folder without a quilt series file",
                    hint="Name the series file with --series FILE.",
                )
            changes.extend(_read_quilt(series, strip, scratch, limits))
        else:
            data = read_regular_file(
                path,
                limits.patch_bytes,
                follow_symlinks=True,
                name=f"input {path}",
                limit_hint=_PATCH_HINT,
            )
            changes.extend(
                _read_file(path, data, path.name, strip, scratch, limits, source=_shown(path))
            )
        if len(changes) > limits.series_patches:
            check_series_length(path, len(changes), limits)
    if not changes:
        raise UsageError("nothing to import: give patch files, mbox files or a quilt folder")
    return changes


_PATCH_HINT = limit_hint("patch-bytes", "Nothing was imported. Split the file")
_SERIES_LIMIT = 1 << 20  # a quilt series file: one name a line


def _shown(path: Path) -> str:
    """A path as the user gave it, when that says no more than where it was read
    from (relative, not climbing); else its name. Goes into commit messages."""
    if path.is_absolute() or ".." in path.parts:
        return path.name
    return path.as_posix()


def _read_quilt(
    series: Path, default_strip: int, scratch: Path, limits: PatchLimits
) -> list[Change]:
    text = read_regular_file(
        series, _SERIES_LIMIT, follow_symlinks=True, name=f"quilt series file {series}"
    ).decode("utf-8")
    shown = _shown(series)
    if series.is_absolute() or ".." in series.parts:
        shown = f"{series.parent.name}/{series.name}"
    listed = [line for line in text.splitlines() if line.split("#", 1)[0].split()]
    check_series_length(series, len(listed), limits)
    changes = []
    for number, line in enumerate(text.splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        strip = default_strip
        for option in words[1:]:
            if re.fullmatch(r"-p\d+", option):
                strip = int(option[2:])
            else:
                raise UsageError(f"{series}:{number}: unknown quilt option {quoted(option)}")
        # A name the series gives: a file in its folder or below, as quilt has them.
        check_relative_path(f"{series}:{number}: patch", words[0])
        patch = series.parent / words[0]
        if not (patch.exists() or patch.is_symlink()):
            raise NotFoundError(f"{series}:{number}: patch {quoted(words[0])} does not exist")
        data = read_regular_file(
            patch,
            limits.patch_bytes,
            name=f"{series}:{number}: patch {quoted(words[0])}",
            link_note="a quilt series names plain files only",
            link_hint="Replace the link by the file itself.",
            limit_hint=_PATCH_HINT,
        )
        changes.extend(
            _read_file(
                patch,
                data,
                f"{series.name}:{number} {words[0]}",
                strip,
                scratch,
                limits,
                fallback_subject=patch.stem,
                source=f"{words[0]}, line {number} of the quilt series {shown}",
            )
        )
    return changes


def _looks_like_mail(data: bytes) -> bool:
    head = data.lstrip(b"\n")[:4096]
    if head.startswith(b"From "):
        return True
    first_block = head.split(b"\n\n", 1)[0]
    return bool(re.search(rb"^(From|Subject): ", first_block, re.M))


def _read_file(
    path: Path,
    data: bytes,
    origin: str,
    strip: int,
    scratch: Path,
    limits: PatchLimits,
    fallback_subject: str | None = None,
    source: str = "",
) -> list[Change]:
    if _looks_like_mail(data):
        return _read_mbox(path, data, origin, strip, scratch, limits, source or origin)
    first_diff = re.search(rb"^(diff |--- |Index: )", data, re.M)
    description = (
        data[: first_diff.start()].decode("utf-8", "replace").strip() if first_diff else ""
    )
    # A `---` line ends the description, as it ends a mail's message.
    description = re.split(r"^---[ \t]*$", description, maxsplit=1, flags=re.M)[0].strip()
    message = None
    if description:
        message = description
    elif fallback_subject is not None:
        message = fallback_subject
    return [Change(origin, data, strip, message=message, source=source or origin)]


def _read_mbox(
    path: Path,
    data: bytes,
    origin: str,
    strip: int,
    scratch: Path,
    limits: PatchLimits,
    source: str,
) -> list[Change]:
    """The mails of an mbox, split by git in `scratch` from the bytes that were
    read (on its standard input: git never opens the file itself); at most
    series-patches."""
    with temporary_folder(scratch, "mbox-") as folder:
        # git works in this empty folder and looks for no repository above it: the
        # input's own folder may hold a .git whose config (mailinfo.scissors,
        # i18n.commitEncoding, a broken line) would change or stop the reading.
        git = Git(folder, env={"GIT_CEILING_DIRECTORIES": str(folder.parent)})
        split = git.run("mailsplit", "-b", "--keep-cr", f"-o{folder}", input=data)
        count = int(split.text.strip() or 0)
        check_series_length(path, count, limits)
        changes = []
        for number in range(1, count + 1):
            mail = Path(folder, f"{number:04d}")
            message_file, patch_file = Path(folder, "msg"), Path(folder, "patch")
            info = git.run(
                "mailinfo", "-u", str(message_file), str(patch_file), input=mail.read_bytes()
            ).text
            fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
            body = message_file.read_text("utf-8", "replace").strip()
            subject = fields.get("Subject", "").strip()
            message = subject + ("\n\n" + body if body else "")
            author = (fields["Author"], fields["Email"]) if fields.get("Email") else None
            where = origin if count == 1 else f"{origin}, message {number} of {count}"
            source_here = source if count == 1 else f"{source}, message {number} of {count}"
            changes.append(
                Change(
                    where,
                    patch_file.read_bytes(),
                    strip,
                    author=author,
                    date=fields.get("Date"),
                    message=message or None,
                    source=source_here,
                    private=marks_private(message),
                )
            )
        return changes
