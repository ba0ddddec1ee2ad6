"""Helpers for tests: synthetic upstream sdists and stores, git and CLI runners."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchtool.gitops import Git
from patchtool.sdist import import_sdist
from patchtool.store import PypiSource

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
    with tarfile.open(fileobj=buffer, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
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


@dataclass
class SyntheticUpstream:
    root: Path
    store: Path
    build: Path
    sdist: Path
    sha256: str
    commit: str

    @property
    def base_folder(self) -> Path:
        return self.store / "devA" / "demo-1.0"

    @property
    def tree(self) -> Path:
        return self.build / "devA" / "demo"

    def cli(self, *args: str) -> CliResult:
        return run_cli("--store", str(self.store), *args)


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


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> CliResult:
    """Run the real console entry point in a subprocess (exit codes, stderr and all)."""
    completed = subprocess.run(
        [sys.executable, "-m", "patchtool", *args],
        cwd=cwd,
        capture_output=True,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
    return CliResult(
        completed.returncode,
        completed.stdout.decode("utf-8", "replace"),
        completed.stderr.decode("utf-8", "replace"),
    )


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
