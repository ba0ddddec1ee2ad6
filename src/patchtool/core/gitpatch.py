"""git's reading of a patch: the one parser of `git apply --numstat -z` output
and the one decoder of the C-quoted names git writes in its messages.

What a patch touches is git's to say, never a hand-made diff parser's (git
still honours spellings a second parser reads differently, such as `rename
old`). Every module that needs to know which files a patch changes asks git
through `read_patch` here; every module that reads a path out of git's
messages decodes it with `unquote`. This module runs git only through the
`Git` it is given and never applies anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from patchtool.core.gitops import Git


@dataclass(frozen=True)
class PatchEntry:
    """One file section of a patch, as git reads it with the `-p` it was given."""

    path: str  # the file's name after the change (its old name for a deletion)
    old_path: str | None  # a rename's or copy's old name (when asked for); else None
    added: int | None  # lines added; None for a binary section
    deleted: int | None  # lines removed; None for a binary section
    created: bool = False
    removed: bool = False

    @property
    def binary(self) -> bool:
        return self.added is None

    @property
    def names(self) -> tuple[str, ...]:
        """Every name git reads from the section (both of a rename)."""
        return (self.old_path, self.path) if self.old_path is not None else (self.path,)


@dataclass(frozen=True)
class PatchReading:
    """What `git apply --numstat --summary -z` made of a patch: its sections in
    order, or (when git cannot read it) git's error output."""

    entries: tuple[PatchEntry, ...]
    returncode: int
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def paths(self) -> list[str]:
        """One path per section (the new name of a rename), in order."""
        return [entry.path for entry in self.entries]

    @property
    def names(self) -> list[str]:
        """Every name git reads (both names of a rename), in order."""
        return [name for entry in self.entries for name in entry.names]

    def first_error(self) -> str:
        return first_error(self.stderr)


def first_error(stderr: str) -> str:
    """git's first complaint, without its `error:` or `fatal:` prefix."""
    lines = [line.removeprefix("error: ").removeprefix("fatal: ") for line in stderr.splitlines()]
    chosen = [line for line in lines if line and not line.startswith("hint:")]
    return chosen[0].rstrip(": ") if chosen else "git gave no reason"


def read_patch(
    git: Git,
    strip: int = 1,
    *,
    patch: Path | None = None,
    data: bytes | None = None,
    excludes: Sequence[str] = (),
    old_names: bool = False,
) -> PatchReading:
    """git's reading of a patch, given by its path or (`data`) on standard input,
    with `-p<strip>` and git apply's `--exclude` globs. Nothing is applied; a
    patch git cannot read comes back with `ok` false and git's reason.

    git's numstat names a renamed file by its new name only; `old_names` asks
    git again for the patch read in reverse (`-R`), whose names are the old
    ones, to fill in `old_path` where the two differ."""
    reading = _read(git, strip, patch, data, excludes, (), None)
    if not (old_names and reading.ok):
        return reading
    reverse = _read(git, strip, patch, data, excludes, ("-R",), None)
    if not reverse.ok or len(reverse.entries) != len(reading.entries):
        return PatchReading((), reverse.returncode or 1, reverse.stderr)
    # git lists a reversed patch's sections last first.
    entries = tuple(
        replace(entry, old_path=old.path) if old.path != entry.path else entry
        for entry, old in zip(reading.entries, reversed(reverse.entries), strict=True)
    )
    return PatchReading(entries, 0, reading.stderr)


def apply_to_index(
    git: Git, index: Path, strip: int, patch: Path, excludes: Sequence[str] = ()
) -> PatchReading:
    """Apply a patch to the index file `index` alone (no file of the tree is
    written) and read it in the same git call: git's reading of what it
    applied, or `ok` false (and the index as it was) when it does not apply."""
    return _read(git, strip, patch, None, excludes, ("--cached", "--apply"), index)


def _read(
    git: Git,
    strip: int,
    patch: Path | None,
    data: bytes | None,
    excludes: Sequence[str],
    extra: tuple[str, ...],
    index: Path | None,
) -> PatchReading:
    args = [
        "apply",
        *extra,
        f"-p{strip}",
        *(f"--exclude={glob}" for glob in excludes),
        "--numstat",
        "--summary",
        "-z",
    ]
    env = {"GIT_INDEX_FILE": str(index)} if index is not None else None
    if data is not None:
        result = git.run(*args, input=data, check=False, env=env)
    else:
        assert patch is not None
        result = git.run(*args, "--", str(patch), check=False, env=env)
    if result.returncode != 0:
        return PatchReading((), result.returncode, result.stderr)
    return PatchReading(parse_numstat(result.stdout), 0, result.stderr)


def parse_numstat(output: bytes) -> tuple[PatchEntry, ...]:
    """`git apply --numstat -z` records (each ended by NUL; git apply names a
    rename by its new name, git diff as "added TAB deleted TAB NUL old NUL new
    NUL"), optionally followed by
    `--summary` lines, which git ends with a newline and writes unquoted: of
    those, the `create mode` and `delete mode` lines mark what a section
    creates or removes (matched by name against the records)."""
    end = output.rfind(b"\0") + 1
    fields = output[:end].split(b"\0")[:-1] if end else []
    created, removed = _summary(output[end:])
    entries: list[PatchEntry] = []
    index = 0
    while index < len(fields):
        parts = fields[index].split(b"\t", 2)
        index += 1
        if len(parts) != 3:
            continue
        added, deleted, name = _count(parts[0]), _count(parts[1]), parts[2]
        if not name:  # `git diff --numstat -z` spelling of a rename: old and new follow
            name = fields[index + 1] if index + 1 < len(fields) else b""
            index += 2
        path = git_text(name)
        entries.append(
            PatchEntry(path, None, added, deleted, created=path in created, removed=path in removed)
        )
    return tuple(entries)


def _summary(text: bytes) -> tuple[set[str], set[str]]:
    created: set[str] = set()
    removed: set[str] = set()
    for line in text.split(b"\n"):
        for prefix, found in ((b" create mode ", created), (b" delete mode ", removed)):
            if line.startswith(prefix):
                # " create mode 100644 NAME": the mode is six digits and a space.
                found.add(git_text(line[len(prefix) + 7 :]))
    return created, removed


def _count(text: bytes) -> int | None:
    return int(text) if text.isdigit() else None


def git_text(raw: bytes) -> str:
    """Bytes git wrote (a name, a line) as text: UTF-8, any other byte kept as a
    surrogate escape, so that it goes back to git unchanged."""
    return raw.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------- quoted names

_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def unquote(name: str) -> str:
    """A name as git writes it in a message: C-quoted ("a\\tb", octal bytes for
    non-ASCII) when it holds special characters, else as it is. A name that is
    not well quoted is returned as it is."""
    if len(name) < 2 or not (name.startswith('"') and name.endswith('"')):
        return name
    out = bytearray()
    body = name[1:-1]
    index = 0
    while index < len(body):
        character = body[index]
        if character != "\\":
            out += character.encode("utf-8", "surrogateescape")
            index += 1
            continue
        escape = body[index + 1 : index + 2]
        octal = body[index + 1 : index + 4]
        if escape in _ESCAPES:
            out.append(_ESCAPES[escape])
            index += 2
        elif len(octal) == 3 and all(c in "01234567" for c in octal) and octal[0] in "0123":
            out.append(int(octal, 8))
            index += 4
        else:
            return name
    return out.decode("utf-8", "surrogateescape")


def quote(name: str) -> str:
    """A name as git writes it with core.quotePath on: C-quoted when it holds a
    control character, a double quote, a backslash or a byte past ASCII."""
    raw = name.encode("utf-8", "surrogateescape")
    if not any(byte < 0x20 or byte >= 0x7F or byte in b'"\\' for byte in raw):
        return name
    letters = {value: key for key, value in _ESCAPES.items()}
    out = ['"']
    for byte in raw:
        if byte in letters:
            out.append("\\" + letters[byte])
        elif byte < 0x20 or byte >= 0x7F:
            out.append(f"\\{byte:03o}")
        else:
            out.append(chr(byte))
    return "".join(out) + '"'
