"""Sourcing a device's env.sh in a bash subprocess and capturing what it exports.

env.sh runs in `bash --noprofile --norc` with the build tree as its working
folder, a throw-away HOME and git config (so it cannot touch the user's), and
its stdout sent to stderr so that the environment dump that follows it stays
clean. The result is the set of variables it added, changed or removed.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import BuildError, NotFoundError

_MARKER = b"\0--patchtool-env-sh-sourced--\0"
# Variables bash itself changes on every run: not env.sh's doing.
_BASH_OWN = {"_", "SHLVL", "PWD", "OLDPWD"}

_PROGRAM = r"""
env -0
printf '\0--patchtool-env-sh-sourced--\0'
script=$1; shift
source "$script" "$@" >&2 || { status=$?; echo "env.sh returned status $status" >&2; exit $status; }
env -0
"""


@dataclass(frozen=True)
class SourcedEnvironment:
    script: Path
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


def source_env_script(
    tree: Path,
    script: str,
    arguments: tuple[str, ...],
    environment: Mapping[str, str],
) -> SourcedEnvironment:
    path = tree / script
    if not path.is_file():
        raise NotFoundError(
            f"env script {path} does not exist",
            hint="The device's series should add it; check build.env-script in device.toml.",
        )
    completed = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", _PROGRAM, "patchtool-env", str(path), *arguments],
        cwd=tree,
        env=dict(environment),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        check=False,
        timeout=300,
    )
    stderr = completed.stderr.decode("utf-8", "replace")
    if completed.returncode != 0 or _MARKER not in completed.stdout:
        raise BuildError(
            f"sourcing {path} {' '.join(arguments)} failed with status {completed.returncode}:\n"
            + (stderr.strip() or "(no output on stderr)"),
            hint="Fix env.sh or pass the right --env-arg; nothing was built.",
        )
    before_raw, _, after_raw = completed.stdout.partition(_MARKER)
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


def sandbox_environment(base: Mapping[str, str], home: Path) -> dict[str, str]:
    """`base` with HOME and git's global config moved to a throw-away folder."""
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
