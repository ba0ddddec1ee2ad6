"""The PatchtoolError family: one class per kind of failure, each with its exit code.

The core raises these and nothing else for expected failures; `cli.py` is the
one place that turns them into a message, a hint and an exit code. Exit codes
are part of the public interface (the README lists them): never renumber.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1  # a bug in patchtool: please report it
    USAGE = 2  # bad command line or bad option value
    NOT_FOUND = 3  # unknown device, base, build tree, patch file, package
    CONFLICT = 4  # a patch does not apply
    DIRTY = 5  # a build tree holds uncommitted or unexported work
    INTEGRITY = 6  # hash mismatch, corrupt or invalid store/config files
    STALE = 7  # `patch --check`: the store differs from a fresh export
    BUILD = 8  # env.sh or the wheel build failed, or the wheel lacks a file
    LOCKED = 9  # another run holds the device's lock (--no-wait)
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
