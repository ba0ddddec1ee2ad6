"""Helpers for tests: synthetic upstream sdists and stores, git and CLI runners."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from patchtool.core.gitops import Git
from patchtool.sources.sdist import import_sdist
from patchtool.store.model import PypiSource

SDIST_MTIME = 1738000000  # 2025-01-27


def git(cwd: Path, *args: str, input: bytes | None = None) -> str:
    """Run git as a user would in a test (their hermetic config), return stdout."""
    completed = subprocess.run(
        ["git", *args], cwd=cwd, input=input, capture_output=True, check=False
    )
    if completed.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {completed.stderr.decode()}")
    return completed.stdout.decode("utf-8", "surrogateescape")


def make_sdist(path: Path, top: str, files: dict[str, bytes | tuple[str, str]],
               modes: dict[str, int] | None = None) -> Path:
    """Write a .tar.gz whose members live under `top/`. A tuple value ('link', target)
    makes a symlink."""
    modes = modes or {}
    buffer = io.BytesIO()
    # The gzip header's time is fixed too: the same files give the same sdist bytes.
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=SDIST_MTIME) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            content = files[name]
            info = tarfile.TarInfo(f"{top}/{name}" if top else name)
            info.mtime = SDIST_MTIME
            if isinstance(content, tuple):
                info.type = tarfile.SYMTYPE
                info.linkname = content[1]
                tar.addfile(info)
            else:
                info.size = len(content)
                info.mode = modes.get(name, 0o644)
                tar.addfile(info, io.BytesIO(content))
    path.write_bytes(buffer.getvalue())
    return path


DEMO_FILES: dict[str, bytes | tuple[str, str]] = {
    "setup.py": b"from setuptools import setup\nsetup(name='demo', version='1.0')\n",
    "README.md": b"# demo\n\nA small upstream project for tests.\n",
    "demo/__init__.py": b"VERSION = '1.0'\n",
    "demo/core.py": b"".join(f"def function_{i}():\n    return {i}\n\n".encode() for i in range(40)),
    "demo/data.bin": bytes(range(256)) * 4,
    "demo/windows.txt": b"line one\r\nline two\r\n",
    "tools/run.sh": b"#!/bin/sh\necho run\n",
    "docs/link.md": ("link", "../README.md"),
}


def kill_points(points: Sequence[str]) -> list[Any]:
    """The parameters of a test that kills a command at each of `points`: the first
    point runs in the quick tier (`scripts/test --quick`), the others are marked
    `slow` and run in the whole suite, so that a quick run still kills each command
    once."""
    first, *others = points
    return [first, *(pytest.param(point, marks=pytest.mark.slow) for point in others)]


@dataclass
class SyntheticUpstream:
    root: Path
    store: Path
    build: Path
    sdist: Path
    sha256: str
    commit: str
    # How `cli` and `run` run patchtool: in this process or in a subprocess. The
    # `upstream` fixture sets it in modules marked `cli_in_process`.
    in_process: bool = False

    @property
    def base_folder(self) -> Path:
        return self.store / "devA" / "demo-1.0"

    @property
    def tree(self) -> Path:
        return self.build / "devA" / "demo"

    def cli(self, *args: str, env: dict[str, str] | None = None,
            in_process: bool | None = None) -> CliResult:  # fmt: skip
        """`patchtool --store STORE ARGS...`, in this process or in a subprocess:
        as `in_process` says, or else as the world's `in_process` says."""
        here = self.in_process if in_process is None else in_process
        runner = run_cli_in_process if here else run_cli
        return runner("--store", str(self.store), *args, env=env)

    def run(self, command: str, *extra: str, build: Path | None = None,
            env: dict[str, str] | None = None, in_process: bool | None = None) -> CliResult:  # fmt: skip
        """`patchtool --store STORE COMMAND --device-type devA --dir BUILD EXTRA...`:
        the build folder is `build` or the world's own; `check` takes no --dir. The
        one way to run a command on devA (`world.run("unpatch")`, not a helper of
        a test file's own)."""
        args = [command, "--device-type", "devA"]
        if command != "check":
            args += ["--dir", str(build or self.build)]
        return self.cli(*args, *extra, env=env, in_process=in_process)


def make_upstream(root: Path) -> SyntheticUpstream:
    sdists = root / "sdists"
    sdists.mkdir()
    sdist = make_sdist(sdists / "demo-1.0.tar.gz", "demo-1.0", DEMO_FILES,
                       modes={"tools/run.sh": 0o755})
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    scratch = root / "scratch.git"
    Git(root).run("init", "--quiet", "--bare", str(scratch))
    commit = import_sdist(sdist, scratch, "demo", "1.0", PypiSource("demo-1.0.tar.gz", sha))
    store = root / "patches"
    base = store / "devA" / "demo-1.0"
    base.mkdir(parents=True)
    (store / "devA" / "device.toml").write_text(
        'display-name = "Device A"\nvendor = "Example"\n\n[build]\nenv-script = "env.sh"\n'
    )
    write_base(base, "demo", "1.0", commit, sha)
    (base / "series").write_text("# demo series\n")
    return SyntheticUpstream(root, store, root / "build", sdist, sha, commit)


def series_names(world: SyntheticUpstream) -> list[str]:
    """The patch files devA's demo-1.0 series lists, in order."""
    lines = (world.base_folder / "series").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def store_and_tree(world: SyntheticUpstream) -> tuple[object, ...]:
    """What a refused command leaves as it was: the store's files, the tree's files
    and the tree's HEAD."""
    return (snapshot(world.store), snapshot(world.tree), git(world.tree, "rev-parse", "HEAD"))


def add_second_base(world: SyntheticUpstream) -> Path:
    """demo-1.1: a second released sdist (offered beside 1.0) and its base folder."""
    sdist = make_sdist(world.sdist.parent / "demo-1.1.tar.gz", "demo-1.1", DEMO_FILES)
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    scratch = world.root / "scratch-1.1.git"
    git(world.root, "init", "--quiet", "--bare", str(scratch))
    commit = import_sdist(sdist, scratch, "demo", "1.1", PypiSource("demo-1.1.tar.gz", sha))
    folder = world.store / "devA" / "demo-1.1"
    write_base(folder, "demo", "1.1", commit, sha)
    (folder / "series").write_text("# demo series\n")
    return folder


def add_git_base(world: SyntheticUpstream, origin: Path) -> str:
    """devA's base `git-base` (version 2.0.dev0): a git repository made at `origin`
    with one commit holding main.py; returns that commit."""
    origin.mkdir()
    git(origin, "init", "--quiet")
    (origin / "main.py").write_text("print('upstream')\n")
    git(origin, "add", ".")
    git(origin, "commit", "--quiet", "-m", "upstream")
    commit = git(origin, "rev-parse", "HEAD").strip()
    write_git_base(world, str(origin), commit, version="2.0.dev0")
    return commit


def write_git_base(world: SyntheticUpstream, url: str, commit: str, version: str = "2.0") -> Path:
    """devA's base folder `git-base` (empty series) whose source is git at `url`, written
    into base.toml as given: the trust-boundary tests pass hostile ones."""
    folder = world.store / "devA" / "git-base"
    folder.mkdir()
    (folder / "base.toml").write_text(
        f'project = "demo"\nversion = "{version}"\ncommit = "{commit}"\n\n'
        f'[source]\ntype = "git"\nurl = "{url}"\n'
    )
    (folder / "series").write_text("")
    return folder


# A mail patch whose hunk (demo/core.py, function_20) does not apply to the synthetic
# upstream: its context line says `return 2000`.
NON_APPLYING_PATCH = (
    "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
    "From: A <a@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
    "Subject: [PATCH] Change twenty\n\nWhy.\n---\n"
    "diff --git a/demo/core.py b/demo/core.py\n--- a/demo/core.py\n+++ b/demo/core.py\n"
    "@@ -58,3 +58,3 @@ def function_19():\n"
    " def function_20():\n-    return 2000\n+    return 20\n \n"
)


def write_base(folder: Path, project: str, version: str, commit: str, sha: str,
               filename: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.toml").write_text(
        f'project = "{project}"\nversion = "{version}"\ncommit = "{commit}"\n\n[source]\n'
        f'type = "pypi"\nfilename = "{filename or f"{project}-{version}.tar.gz"}"\n'
        f'sha256 = "{sha}"\n'
    )


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


# Rich renders for this width in both runners: no line of a message is wrapped.
CLI_ENVIRONMENT = {"COLUMNS": "200"}


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run the real console entry point in a subprocess (exit codes, stderr and all)."""
    completed = subprocess.run(
        [sys.executable, "-m", "patchtool", *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, **CLI_ENVIRONMENT, **(env or {})},
        check=False,
    )
    return CliResult(
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


# A run in this process that reached one of these points would kill or stop pytest.
_PROCESS_ONLY_VARIABLES = ("PATCHTOOL_KILL_AT", "PATCHTOOL_PAUSE_AT")


def run_cli_in_process(*args: str, cwd: Path | None = None,
                       env: dict[str, str] | None = None) -> CliResult:  # fmt: skip
    """`patchtool.cli.app.main(args)` in this process, seen as `run_cli` sees the real one:
    its stdout and stderr (encoded as a pipe would be, then decoded), and its exit
    status. `env` is set and `cwd` entered for the run only. It saves a Python start
    and patchtool's imports per run; use `run_cli` where the process itself is the
    point (exit through the console script, kill points, locks between processes,
    signals, what a process inherits)."""
    from patchtool.cli.app import main

    changes = {**CLI_ENVIRONMENT, **(env or {})}
    refused = [name for name in _PROCESS_ONLY_VARIABLES
               if changes.get(name, os.environ.get(name))]  # fmt: skip
    if refused:
        raise AssertionError(f"{', '.join(refused)} needs a process of its own: use run_cli")
    stdout, stderr = _pipe_like(errors="strict"), _pipe_like(errors="backslashreplace")
    with (
        _environment(changes),
        _working_folder(cwd),
        _fresh_process_caches(),
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        try:
            main(list(args))
            code = 0
        except SystemExit as exit:
            code = _exit_status(exit.code, stderr)
    stdout.flush()
    stderr.flush()
    return CliResult(code, _written(stdout), _written(stderr))


def _pipe_like(errors: str) -> io.TextIOWrapper:
    """A text stream like Python's own stdout (strict) or stderr (backslashreplace)
    on a pipe: UTF-8, not a terminal."""
    return io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors=errors, newline="\n")


def _written(stream: io.TextIOWrapper) -> str:
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8", "replace")


def _exit_status(code: object, stderr: io.TextIOWrapper) -> int:
    """What the interpreter makes of `sys.exit(code)` (None is 0, text is printed
    and 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    stderr.write(f"{code}\n")
    return 1


@contextlib.contextmanager
def _environment(changes: Mapping[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _working_folder(cwd: Path | None) -> Iterator[None]:
    """contextlib.chdir, which Python 3.10 lacks."""
    before = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _fresh_process_caches() -> Iterator[None]:
    """What patchtool keeps for the life of a process (pip's settings, read from
    the environment, and the build tree around the working folder) is read
    afresh by each run, as a new process would, and not left to the next test."""
    from patchtool.cli.app import clear_process_caches

    clear_process_caches()
    try:
        yield
    finally:
        clear_process_caches()


def error_lines(result: CliResult | str) -> list[str]:
    """The error patchtool ended with, as printed: stderr (a run's, or the text)
    from its `error:` line to the end (the message, any lines it holds, and the
    `hint:`)."""
    stderr = result if isinstance(result, str) else result.stderr
    lines = stderr.splitlines()
    starts = [number for number, line in enumerate(lines) if line.startswith("error: ")]
    assert starts, f"no error: line in stderr:\n{stderr}"
    return lines[starts[0]:]


def warning_lines(result: CliResult) -> list[str]:
    """The `warning:` lines a run printed on stderr, in order."""
    return [line for line in result.stderr.splitlines() if line.startswith("warning: ")]


def check_records(stdout: str) -> list[dict[str, Any]]:
    """`check --json`'s records in the serial order: the entries' records, each
    device's own record once."""
    records: list[dict[str, Any]] = []
    for entry in json.loads(stdout)["include"]:
        for record in entry["checks"]:
            if record["base"] or record not in records:
                records.append(record)
    return records


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (not .git) with its bytes, and link targets."""
    result: dict[str, bytes] = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if relative.parts[0] == ".git":
            continue
        if path.is_symlink():
            result[str(relative)] = b"link:" + os.readlink(path).encode()
        elif path.is_file():
            mode = b"x:" if os.access(path, os.X_OK) else b""
            result[str(relative)] = mode + path.read_bytes()
    return result


def commit_all(tree: Path, subject: str, body: str = "Because tests need it.\n\n"
               "Upstream-Status: Inappropriate [test]") -> None:
    git(tree, "add", "--all")
    git(tree, "commit", "--quiet", "-m", subject, "-m", body)


REPOSITORY = Path(__file__).resolve().parent.parent


def base_tree(tree: Path, target: Path) -> Path:
    """The files of a build tree's base commit (`patchtool/base`: the unpatched
    upstream) written into the new folder `target`."""
    archive = subprocess.run(["git", "archive", "--format=tar", "patchtool/base"],
                             cwd=tree, capture_output=True, check=True).stdout  # fmt: skip
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


@dataclass
class RealVllm:
    """A copy of the repository's store, a session-wide cache, and a build folder
    holding `metax_C550`'s tree made by `patchtool unpatch` from the real sdist."""

    store: Path
    build: Path
    cache: Path
    env: dict[str, str]

    @property
    def tree(self) -> Path:
        return self.build / "metax_C550" / "vllm"

    @property
    def base_folder(self) -> Path:
        return self.store / "metax_C550" / "vllm-0.7.2"

    def cli(self, *args: str) -> CliResult:
        return run_cli("--store", str(self.store), *args, env=self.env)
