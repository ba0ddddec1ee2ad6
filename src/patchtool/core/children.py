"""How patchtool starts a child process: the one place that does.

Every child (git, pip, the build interpreter, bash for env.sh, rm) is started
by `run` or `start`, which take the working folder and the environment as
required arguments, so no call site can inherit either by accident. What a
child needs from the caller is decided here, once:

- **The environment** (`environment`) is the caller's, less what would make a
  child load code that nobody asked for:
  - every `PYTHON*` variable (PYTHONPATH, PYTHONSTARTUP, PYTHONHOME,
    PYTHONUSERBASE, PYTHONINSPECT, PYTHONBREAKPOINT, PYTHONWARNINGS, which
    imports the module a category names, PYTHONSAFEPATH, ...). They are
    switches of the interpreter patchtool runs in; a child interpreter is
    another program, and a relative PYTHONPATH entry would name a folder of
    the child's working folder. `-I` (below) makes one interpreter ignore
    them; removing them also keeps them from its own children (pip's, the
    build backend, a python that env.sh or a git helper starts);
  - the start-up hooks of shells: BASH_ENV and ENV (a file sourced before
    any script), exported functions (`BASH_FUNC_*`, which can replace any
    command a script calls), SHELLOPTS and BASHOPTS (xtrace with PS4 runs
    command substitutions), PS4, CDPATH and GLOBIGNORE;
  - every entry of PATH and LD_LIBRARY_PATH that is not absolute: an empty or
    relative entry is searched in the child's working folder, which may be a
    build tree that a patch wrote (a `git` or `rm` of its own). When no
    entry is left, PATH is the system's default path.
  Everything else is kept: PIP_* and pip's config files (the settings
  sources/index/ reads are the user's), HOME, proxies and credentials, git's own
  variables (gitops.py removes the ones that would point git elsewhere).
- **Python children** of patchtool's own interpreter run as
  `python_command(...)`: `sys.executable -I`, isolated, so neither the working
  folder (`-m` and `-c` would put it first on sys.path, where a `pip.py`
  would shadow pip), nor PYTHON* variables, nor the user's site-packages add
  code. The build interpreter is the exception (build_wheel.py, buildenv.py): it
  must see what the device's env.sh exported, PYTHONPATH included, so it runs
  with that environment, which derives from `environment()`, and in an
  `empty_folder()`, which is what stands in for `-I`'s "not the working
  folder" there (`-P` would do it too, but only from Python 3.11 on).
- **The working folder** of a child that needs no particular one is
  `NEUTRAL_FOLDER` ("/"): nothing there is the input's, and a detached child
  (staging.discard's rm) holds no folder that someone may want to remove or
  unmount. A Python child that cannot run isolated gets `empty_folder()`, a
  fresh private temporary folder, instead: it is what its sys.path[0] becomes.

- **Cancellation** (core/cancel.py): a child that `run` waits for is terminated
  when the run is cancelled (SIGTERM, then SIGKILL after `STOP_GRACE` seconds),
  and no child starts after that: `run` raises `cancel.Cancelled` instead of
  returning what a killed child left.

This module starts processes and does nothing else: it never prints, never
reads the store and raises only what `subprocess` raises (and `Cancelled`).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from patchtool.core import cancel
from patchtool.core.fsutil import temporary_folder

# Re-exported so that call sites need no `import subprocess` of their own.
DEVNULL = subprocess.DEVNULL
PIPE = subprocess.PIPE
STDOUT = subprocess.STDOUT
CompletedProcess = subprocess.CompletedProcess
Popen = subprocess.Popen
TimeoutExpired = subprocess.TimeoutExpired

NEUTRAL_FOLDER = Path(os.sep)
# Seconds a cancelled child has between SIGTERM and SIGKILL.
STOP_GRACE = 3.0

# Read by shells at start-up or before every command: a script would run code
# that is neither its own nor patchtool's.
_SHELL_START_UP = ("BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PS4", "CDPATH", "GLOBIGNORE")
_SHELL_FUNCTION_PREFIX = "BASH_FUNC_"
_PYTHON_PREFIX = "PYTHON"
# Search paths for programs and shared libraries: entries must be absolute.
_SEARCH_PATHS = ("PATH", "LD_LIBRARY_PATH")


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """`base` (default: this process's environment) as a child may inherit it:
    without PYTHON* variables and shell start-up hooks, and with only absolute
    entries on PATH and LD_LIBRARY_PATH (see the module's docstring)."""
    source = os.environ if base is None else base
    env = {
        key: value
        for key, value in source.items()
        if not key.startswith((_PYTHON_PREFIX, _SHELL_FUNCTION_PREFIX))
        and key not in _SHELL_START_UP
    }
    for key in _SEARCH_PATHS:
        if key in env:
            kept = [entry for entry in env[key].split(os.pathsep) if os.path.isabs(entry)]
            if kept:
                env[key] = os.pathsep.join(kept)
            elif key == "PATH":
                env[key] = os.defpath
            else:
                del env[key]
    return env


def python_command(*args: str) -> list[str]:
    """The command line for patchtool's own interpreter, isolated (`-I`)."""
    return [sys.executable, "-I", *args]


@contextlib.contextmanager
def empty_folder() -> Iterator[Path]:
    """A fresh, private, empty folder for a child's working folder; removed after."""
    with temporary_folder(Path(tempfile.gettempdir()), "patchtool-child-") as folder:
        yield folder


def run(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    input: Any = None,
    capture_output: bool = False,
    timeout: float | None = None,
    check: bool = False,
    **options: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run` with an explicit working folder and environment. stdin is
    /dev/null unless `options` give input or stdin: no child reads the terminal.
    A cancelled run terminates the child; in a worker thread, `run` then raises
    `cancel.Cancelled`, and starts no child after the run was cancelled."""
    cancel.raise_if_requested()
    if input is not None:
        options["stdin"] = subprocess.PIPE
    else:
        options.setdefault("stdin", DEVNULL)
    if capture_output:
        options["stdout"] = options["stderr"] = subprocess.PIPE
    with (
        subprocess.Popen(list(command), cwd=cwd, env=dict(env), **options) as process,
        cancel.on_cancel(lambda: _stop(process)),
    ):
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as expired:
            process.kill()
            expired.output, expired.stderr = process.communicate()
            raise
        except BaseException:
            process.kill()
            raise
        returncode = process.poll()
    cancel.raise_if_requested()
    assert returncode is not None
    if check and returncode:
        raise subprocess.CalledProcessError(returncode, process.args, stdout, stderr)
    return subprocess.CompletedProcess(process.args, returncode, stdout, stderr)


def _stop(process: subprocess.Popen[Any]) -> None:
    """SIGTERM now, SIGKILL after STOP_GRACE seconds if it is still there (from a
    timer: this runs in the thread that cancels, which must not wait)."""
    with contextlib.suppress(OSError):
        process.terminate()
    timer = threading.Timer(STOP_GRACE, _kill, (process,))
    timer.daemon = True
    timer.start()


def _kill(process: subprocess.Popen[Any]) -> None:
    if process.returncode is None:
        with contextlib.suppress(OSError):
            process.kill()


def start(
    command: Sequence[str], *, cwd: Path, env: Mapping[str, str], **options: Any
) -> subprocess.Popen[Any]:
    """`subprocess.Popen` with an explicit working folder and environment (stdin as
    in `run`)."""
    options.setdefault("stdin", DEVNULL)
    return subprocess.Popen(list(command), cwd=cwd, env=dict(env), **options)
