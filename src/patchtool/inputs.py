"""What `import` reads: mbox files (also one `format-patch --stdout` stream),
plain unified diffs and quilt series, each as a list of `Change`s with the
author, date and message the input gives (none invented here).

Only reading: nothing is applied (importer.py does that) and nothing is written
but the split mails, in the scratch folder the caller names (an mbox may hold a
private patch's plaintext, decrypted by `import --flagscale`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import NotFoundError, UsageError
from .fsutil import temporary_folder
from .gitops import Git

AUTHOR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]+)>\s*$")


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


def read_changes(
    inputs: tuple[Path, ...], strip: int, series_file: Path | None, scratch: Path
) -> list[Change]:
    """Every change of the inputs, in order; mbox files are split in `scratch`."""
    changes: list[Change] = []
    if series_file is not None:
        changes.extend(_read_quilt(series_file, strip, scratch))
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
            changes.extend(_read_quilt(series, strip, scratch))
        elif path.is_file():
            changes.extend(_read_file(path, path.name, strip, scratch, source=_shown(path)))
        else:
            raise NotFoundError(f"input {path} does not exist")
    if not changes:
        raise UsageError("nothing to import: give patch files, mbox files or a quilt folder")
    return changes


def _shown(path: Path) -> str:
    """A path as the user gave it, when that says no more than where it was read
    from (relative, not climbing); else its name. Goes into commit messages."""
    if path.is_absolute() or ".." in path.parts:
        return path.name
    return path.as_posix()


def _read_quilt(series: Path, default_strip: int, scratch: Path) -> list[Change]:
    if not series.is_file():
        raise NotFoundError(f"quilt series file {series} does not exist")
    shown = _shown(series)
    if series.is_absolute() or ".." in series.parts:
        shown = f"{series.parent.name}/{series.name}"
    changes = []
    for number, line in enumerate(series.read_text("utf-8").splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        strip = default_strip
        for option in words[1:]:
            if re.fullmatch(r"-p\d+", option):
                strip = int(option[2:])
            else:
                raise UsageError(f"{series}:{number}: unknown quilt option {option!r}")
        patch = series.parent / words[0]
        if not patch.is_file():
            raise NotFoundError(f"{series}:{number}: patch {words[0]!r} does not exist")
        changes.extend(
            _read_file(
                patch,
                f"{series.name}:{number} {words[0]}",
                strip,
                scratch,
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
    origin: str,
    strip: int,
    scratch: Path,
    fallback_subject: str | None = None,
    source: str = "",
) -> list[Change]:
    data = path.read_bytes()
    if _looks_like_mail(data):
        return _read_mbox(path, origin, strip, source or origin, scratch)
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


def _read_mbox(path: Path, origin: str, strip: int, source: str, scratch: Path) -> list[Change]:
    git = Git(path.parent)
    with temporary_folder(scratch, "mbox-") as folder:
        count = int(
            git.text("mailsplit", "-b", "--keep-cr", f"-o{folder}", str(path.resolve())) or 0
        )
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
                )
            )
        return changes
