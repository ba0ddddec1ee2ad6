"""Sourcing a device's env.sh in a bash subprocess and capturing what it exports.

env.sh is the vendor's own code, and it runs with the user's rights. The run
isolates only what keeps a build repeatable and the user's settings untouched:

- HOME, the XDG config and cache folders and git's global config are moved to a
  throw-away folder, and git's system config is turned off
  (`sandbox_environment`);
- its working folder is the build tree, and its stdin is /dev/null;
- the caller's PYTHON* variables and shell start-up hooks (BASH_ENV, exported
  functions, ...) are removed and PATH keeps its absolute entries only
  (children.py), so what env.sh exports is the build's only PYTHON* setting;
- bash runs `--noprofile --norc` as the leader of its own process group (a new
  session), and that group is ended (SIGTERM, then SIGKILL) when env.sh returns,
  fails or runs past `env-timeout` seconds (device.toml, default 300; exit 8).

It is NOT a sandbox: env.sh can read and write the whole file system that the
user can, reach the network, use the user's other credentials (ssh agent, tokens
in other files or environment variables) and read every environment variable
patchtool was given. A process that deliberately leaves the process group
(`setsid`, `setpgid`) is not ended.

env.sh's stdout is sent to stderr so that the environment dump that follows it
stays clean; both are written to temporary files, not pipes, so that a
background child holding them open cannot keep the run waiting. The result is
the set of variables env.sh added, changed or removed. This module raises and
never prints.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from patchtool.core import children
from patchtool.core.errors import BuildError, NotFoundError

# The name a device's env script has by custom (a device.toml names its own).
CONVENTIONAL_ENV_SCRIPT = "env.sh"
_MARKER = b"\0--patchtool-env-sh-sourced--\0"
# Variables bash itself changes on every run: not env.sh's doing.
_BASH_OWN = {"_", "SHLVL", "PWD", "OLDPWD"}
# How long processes left in env.sh's group get to exit after SIGTERM before
# SIGKILL, and how long SIGKILL then gets to take effect.
_TERM_GRACE_SECONDS = 2.0
_KILL_GRACE_SECONDS = 5.0
_POLL_SECONDS = 0.02

_PROGRAM = r"""
env -0
printf '\0--patchtool-env-sh-sourced--\0'
script=$1; shift
source "$script" "$@" >&2 || { status=$?; echo "env.sh returned status $status" >&2; exit $status; }
env -0
"""


@dataclass(frozen=True)
class SourcedEnvironment:
    script: Path | None  # None: the device has no env script (nothing_sourced)
    arguments: tuple[str, ...]
    changed: dict[str, str]  # added or changed by env.sh
    removed: tuple[str, ...]
    environment: dict[str, str]  # the whole environment after sourcing
    stderr: str


def _parse(block: bytes) -> dict[str, str]:
    values = {}
    for item in block.split(b"\0"):
        if b"=" in item:
            key, _, value = item.partition(b"=")
            values[key.decode("utf-8", "surrogateescape")] = value.decode(
                "utf-8", "surrogateescape"
            )
    return values


def nothing_sourced(environment: Mapping[str, str]) -> SourcedEnvironment:
    """The environment of a device without an env script: the sandboxed one as it is."""
    return SourcedEnvironment(None, (), {}, (), dict(environment), "")


def source_env_script(
    tree: Path,
    script: str,
    arguments: tuple[str, ...],
    environment: Mapping[str, str],
    timeout: int,
) -> SourcedEnvironment:
    """Source `tree/script` with `arguments` in bash and return what it exported.

    Raises BuildError when env.sh fails or runs longer than `timeout` seconds;
    either way, and on success, every process left in its process group is ended
    before this returns."""
    path = tree / script
    if not path.is_file():
        raise NotFoundError(
            f"env script {path} does not exist",
            hint="The device's series should add it; check build.env-script in device.toml.",
        )
    shown = " ".join((str(path), *arguments))
    with tempfile.TemporaryFile() as stdout_file, tempfile.TemporaryFile() as stderr_file:
        returncode = _run_in_own_group(
            [
                "bash",
                "--noprofile",
                "--norc",
                "-c",
                _PROGRAM,
                "patchtool-env",
                str(path),
                *arguments,
            ],
            tree,
            environment,
            stdout_file,
            stderr_file,
            timeout,
        )
        stdout = _read(stdout_file)
        stderr = _read(stderr_file).decode("utf-8", "replace")
    if returncode is None:
        raise BuildError(
            f"sourcing {shown} did not finish within {timeout} s and was stopped, with its "
            "whole process group; nothing was built"
            + (f"\nits output until then:\n{stderr.strip()}" if stderr.strip() else ""),
            hint="Fix env.sh so that it returns (it is sourced: nothing in it may wait for "
            "input or keep running), or raise the limit with `env-timeout = <seconds>` "
            "under [build] in device.toml (default 300).",
        )
    if returncode != 0 or _MARKER not in stdout:
        raise BuildError(
            f"sourcing {shown} failed with status {returncode}:\n"
            + (stderr.strip() or "(no output on stderr)"),
            hint="Fix env.sh or pass the right --env-arg; nothing was built.",
        )
    before_raw, _, after_raw = stdout.partition(_MARKER)
    before, after = _parse(before_raw), _parse(after_raw)
    changed = {
        key: value
        for key, value in after.items()
        if key not in _BASH_OWN and before.get(key) != value
    }
    removed = tuple(sorted(k for k in before if k not in after and k not in _BASH_OWN))
    for key in _BASH_OWN:
        after.pop(key, None)
    return SourcedEnvironment(path, arguments, changed, removed, after, stderr)


def _run_in_own_group(
    command: list[str],
    cwd: Path,
    environment: Mapping[str, str],
    stdout: IO[bytes],
    stderr: IO[bytes],
    timeout: int,
) -> int | None:
    """Run `command` as the leader of a new session; its exit status, or None when it
    ran past `timeout` seconds. The whole group is ended before this returns, even
    when the wait is interrupted (Ctrl-C cannot reach a process in another session)."""
    # The working folder is the build tree: env.sh is the tree's and is written for it.
    # The environment is the one given less the caller's shell start-up hooks and
    # PYTHON* (children.py): bash would source BASH_ENV before env.sh, and a python
    # that env.sh starts would take the caller's PYTHONPATH.
    process = children.start(
        command,
        cwd=cwd,
        env=children.environment(environment),
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    try:
        # Wait on bash itself, not on its output: a background child may keep
        # the files open long after env.sh returned.
        return process.wait(timeout=timeout)
    except children.TimeoutExpired:
        return None
    finally:
        # With start_new_session the group's id is bash's pid. The kernel keeps
        # that number reserved while any process of the group exists, even after
        # bash itself has been reaped, so the signals cannot reach a stranger.
        _end_group(process.pid)
        process.wait()


def _end_group(group: int) -> None:
    """SIGTERM every process of `group`, SIGKILL what is left after a grace period,
    and wait (bounded) until none is left alive."""
    steps = ((signal.SIGTERM, _TERM_GRACE_SECONDS), (signal.SIGKILL, _KILL_GRACE_SECONDS))
    for sig, grace in steps:
        if not _group_alive(group):
            return
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            return
        except PermissionError:  # only processes of another user are left (sudo)
            return
        deadline = time.monotonic() + grace
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)


def _group_alive(group: int) -> bool:
    """Whether a process of `group` is still running. An exited process whose parent
    has not reaped it yet (a zombie: its new parent is often a container's init,
    which may never reap it) still counts for killpg(group, 0), so on Linux /proc
    decides; elsewhere killpg does."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text("ascii", "replace")
        except OSError:  # exited while we looked
            continue
        # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
            return True
    return False


def _read(file: IO[bytes]) -> bytes:
    file.seek(0)
    return file.read()


def sandbox_environment(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """`base` with HOME, the XDG config and cache folders and git's global config
    moved to the throw-away folder `home`, git's system config turned off, and
    variables that would point git at another repository removed.

    This keeps env.sh from changing the user's settings by accident; it is not a
    sandbox. Every other variable of `base` (credentials and tokens included) is
    passed on, and nothing here limits the file system or the network."""
    home.mkdir(parents=True, exist_ok=True)
    gitconfig = home / ".gitconfig"
    gitconfig.touch()
    env = dict(base)
    env.update(
        {
            "HOME": str(home),
            "GIT_CONFIG_GLOBAL": str(gitconfig),
            "GIT_CONFIG_NOSYSTEM": "1",
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "PIP_NO_INPUT": "1",
        }
    )
    for leaky in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(leaky, None)
    return env


def current_environment() -> dict[str, str]:
    return dict(os.environ)
