"""Hermetic test set-up: every test runs with its own HOME, no system or global git
config, fixed author and committer dates, and no editor, so git behaves the same
on every machine and nothing a test does can reach the user's own files."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import REPOSITORY, RealVllm, SyntheticUpstream, make_upstream

FIXED_DATE = "2025-02-01T12:00:00+00:00"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cli_in_process: the `upstream` world runs patchtool's CLI in the test's own process "
        "(helpers.run_cli_in_process), for modules where a real process is not the point",
    )


@pytest.fixture(autouse=True)
def hermetic_seal(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Test Author")
    monkeypatch.setenv("GIT_AUTHOR_EMAIL", "author@example.invalid")
    monkeypatch.setenv("GIT_COMMITTER_NAME", "Test Committer")
    monkeypatch.setenv("GIT_COMMITTER_EMAIL", "committer@example.invalid")
    monkeypatch.setenv("GIT_AUTHOR_DATE", FIXED_DATE)
    monkeypatch.setenv("GIT_COMMITTER_DATE", FIXED_DATE)
    monkeypatch.setenv("GIT_EDITOR", "false")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("PATCHTOOL_CACHE_DIR", str(home / "patchtool-cache"))
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH", raising=False)
    for variable in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        monkeypatch.delenv(variable, raising=False)
    return home


@pytest.fixture
def upstream(request: pytest.FixtureRequest, tmp_path: Path,
             monkeypatch: pytest.MonkeyPatch) -> SyntheticUpstream:  # fmt: skip
    """A small released 'demo 1.0' sdist, a store with device 'devA' on it, and a
    build folder; the sdist is offered as a local file (no network). Its CLI runs
    in a subprocess, or in this process where the test is marked `cli_in_process`."""
    world = make_upstream(tmp_path)
    world.in_process = request.node.get_closest_marker("cli_in_process") is not None
    monkeypatch.setenv("PATCHTOOL_SDIST_PATH", str(world.sdist.parent))
    return world


# --------------------------------------------------------------------------- the real vLLM

@pytest.fixture(scope="session")
def real_vllm(tmp_path_factory: pytest.TempPathFactory) -> RealVllm:
    """Session-wide: the first use downloads the vLLM 0.7.2 sdist through the user's
    pip index (PATCHTOOL_TEST_CACHE_DIR keeps it between runs)."""
    root = tmp_path_factory.mktemp("real-vllm")
    cache = Path(os.environ.get("PATCHTOOL_TEST_CACHE_DIR") or root / "cache")
    store = root / "patches"
    shutil.copytree(REPOSITORY / "patches", store)
    home = root / "home"
    home.mkdir()
    env = {
        "PATCHTOOL_CACHE_DIR": str(cache),
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": str(home / ".gitconfig"),
    }
    world = RealVllm(store=store, build=root / "build", cache=cache, env=env)
    result = world.cli("unpatch", "--device-type", "metax_C550", "--commit-id", "0.7.2",
                       "--dir", str(world.build))
    assert result.code == 0, result.output
    return world


@pytest.fixture(scope="session")
def real_vllm_base_tree(real_vllm: RealVllm, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The unpatched upstream tree (the base commit), checked out from the build tree."""
    target = tmp_path_factory.mktemp("vllm-base") / "vllm"
    archive = subprocess.run(["git", "archive", "--format=tar", "patchtool/base"],
                             cwd=real_vllm.tree, capture_output=True, check=True).stdout
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target
