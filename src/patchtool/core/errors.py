"""The PatchtoolError family: one class per kind of failure, each with its exit code.

The core raises these and nothing else for expected failures; `cli/app.py` is
the one place that turns them into a message, a hint and an exit code. Exit codes
are part of the public interface (the README lists them): never renumber. An
error's exit code is its class's, never set on an instance: a failure that
gathers others (check's report, import --flagscale's sets) raises the class
of the code it ends with (`error_class`). Every PatchtoolError subclass is
defined here.
"""

from __future__ import annotations

import reprlib
from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug in patchtool: please report it
    USAGE = 2  # bad command line or bad option value
    NOT_FOUND = 3  # unknown device, base, build tree, patch file, package; no key for a patch
    CONFLICT = 4  # a patch does not apply
    DIRTY = 5  # a build tree holds uncommitted or unexported work
    INTEGRITY = 6  # hash mismatch, corrupt or invalid store/config files
    # The store needs work: it differs from a fresh export (`patch --check`, check's
    # export), a series lists the wrong files, a patch fails lint, or the store's
    # series changed since a tree read it (a lost update).
    STALE = 7
    BUILD = 8  # env.sh or the wheel build failed, or the wheel lacks a file
    # A lock is held: another patchtool run holds the device's (--no-wait), or git's
    # lock files in a build tree (a git command running there, or killed there).
    LOCKED = 9
    UNSAFE = 10  # input that would reach outside the tree (paths, links)
    NETWORK = 11  # the package index or git remote could not be reached


class PatchtoolError(Exception):
    """Base of every expected failure. `hint` says what to do next."""

    exit_code: ExitCode = ExitCode.INTERNAL

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(PatchtoolError):
    exit_code = ExitCode.USAGE


class NotFoundError(PatchtoolError):
    exit_code = ExitCode.NOT_FOUND


class ConflictError(PatchtoolError):
    exit_code = ExitCode.CONFLICT


class DirtyTreeError(PatchtoolError):
    exit_code = ExitCode.DIRTY


class IntegrityError(PatchtoolError):
    exit_code = ExitCode.INTEGRITY


class StaleStoreError(PatchtoolError):
    exit_code = ExitCode.STALE


class BuildError(PatchtoolError):
    exit_code = ExitCode.BUILD


class LockedError(PatchtoolError):
    exit_code = ExitCode.LOCKED


class UnsafeInputError(PatchtoolError):
    exit_code = ExitCode.UNSAFE


class NetworkError(PatchtoolError):
    exit_code = ExitCode.NETWORK


class MissingKeyError(NotFoundError):
    """A private patch is in the way and no identity that opens it was given (exit 3)."""


class ChangeConflict(ConflictError):
    """`import`: a change does not apply (exit 4). The message names every hunk and
    path that failed, not only the first, and what a 3-way merge (when asked for)
    left in conflict."""

    def __init__(
        self,
        message: str,
        hint: str,
        *,
        origin: str,
        number: int,
        failed_paths: tuple[str, ...],
        merge_conflicts: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, hint)
        self.origin = origin
        self.number = number  # 1-based, among the changes read
        self.failed_paths = failed_paths  # each path with a problem, once
        self.merge_conflicts = merge_conflicts


class LintError(StaleStoreError):
    """`patch --strict`: the patches would not pass `check`'s lint (exit 7, as in check)."""


class OfflineViolationError(PatchtoolError):
    """An offline check tried to reach the network. `check --offline` decides
    before it fetches that it needs no network; reaching it all the same is a bug
    in patchtool (exit 1), not a network failure."""

    exit_code = ExitCode.INTERNAL


class SourceNotLocal(Exception):
    """Not a failure: `check --offline` found a base's source neither in the cache
    nor in a local place, so the checks that need it are skipped (`reason` says
    why). Never leaves check."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class GitError(PatchtoolError):
    """A git command failed in a way no caller anticipated; keeps git's stderr."""

    exit_code = ExitCode.INTERNAL

    def __init__(self, args: list[str], returncode: int, stderr: str) -> None:
        shown = " ".join(args)
        super().__init__(
            f"git {shown} failed with status {returncode}:\n{stderr.strip()}",
            hint="This is unexpected; run again with --debug and report it.",
        )
        self.git_args = args
        self.returncode = returncode
        self.stderr = stderr


def error_class(code: ExitCode) -> type[PatchtoolError]:
    """The class whose exit code is `code`: what a failure that gathers others
    raises to end with their most serious code."""
    classes: tuple[type[PatchtoolError], ...] = (
        PatchtoolError,
        UsageError,
        NotFoundError,
        ConflictError,
        DirtyTreeError,
        IntegrityError,
        StaleStoreError,
        BuildError,
        LockedError,
        UnsafeInputError,
        NetworkError,
    )
    for kind in classes:
        if kind.exit_code == code:
            return kind
    raise ValueError(f"no error class has the exit code {code}")


# --------------------------------------------------------------------------- quoting input

QUOTED_LIMIT = 200  # characters of a value an error message quotes


def quoted(value: object, limit: int = QUOTED_LIMIT) -> str:
    """`value` as an error message quotes it: its repr, cut to about `limit`
    characters with the length of what was left out. Every message that quotes
    input goes through here, never through `repr` or `!r`: input decides how
    long a repr is, and a YAML alias bomb's repr alone is gigabytes."""
    if isinstance(value, str | bytes):
        if len(value) <= limit:
            return repr(value)
        unit = "characters" if isinstance(value, str) else "bytes"
        return f"{value[:limit]!r}… ({len(value) - limit} more {unit})"
    text = _ShortRepr(limit).repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class _ShortRepr(reprlib.Repr):
    """reprlib's bounded repr (a few items of each container, a few levels deep),
    with texts, bytes and integers bounded as well."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.maxlevel = 3
        self.maxtuple = self.maxlist = self.maxarray = self.maxdeque = 6
        self.maxdict = self.maxset = self.maxfrozenset = 6
        self.maxstring = self.maxother = limit
        self.limit = limit

    # Only items of containers come here: each gets a few characters.
    def repr_str(self, x: str, level: int) -> str:
        return quoted(x, min(self.limit, 40))

    def repr_bytes(self, x: bytes, level: int) -> str:
        return quoted(x, min(self.limit, 40))

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # repr itself refuses integers of 4300 digits and more
            return f"<an integer of {x.bit_length()} bits>"
        return repr(x)
