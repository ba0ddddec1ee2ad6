"""Hermetic test set-up: every test runs with its own HOME, no system or global git
config, fixed author and committer dates, and no editor, so git behaves the same
on every machine and nothing a test does can reach the user's own files."""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import REPOSITORY, RealVllm, SyntheticUpstream, base_tree, make_upstream

FIXED_DATE = "2025-02-01T12:00:00+00:00"


# The fixtures made from the real vLLM sdists (here and in metax_c550/conftest.py):
# a test that asks for one, directly or through a fixture of its own, is marked
# `integration` when collected, so that the quick tier (`scripts/test --quick`)
# leaves it out without each file having to say so.
REAL_VLLM_FIXTURES = frozenset({
    "real_vllm", "real_vllm_base_tree", "c550_wheel", "c550_wheel_tree",
    "c550_base", "c550_tree", "vllm_base_tree", "carried_trees",
})  # fmt: skip


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cli_in_process: the `upstream` world runs patchtool's CLI in the test's own process "
        "(helpers.run_cli_in_process), for modules where a real process is not the point",
    )


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REAL_VLLM_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


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
# Built once per session, which is once per worker under pytest-xdist (`-n`): a
# session fixture holds a tree its worker's tests may change. What no test
# changes (the downloaded sdists, the wheel) is made once per run, shared by
# the workers.


def shared_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of this run that all its xdist workers share (each worker's own
    temporary folder lies in it); without xdist, the run's temporary folder."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def once_per_run(tmp_path_factory: pytest.TempPathFactory, name: str,
                 make: Callable[[Path], Path]) -> Path:  # fmt: skip
    """What `make(folder)` returns, made by the first worker of this run that asks
    (into the shared folder `name`); the others wait for it and get the same. The
    result must be something no test changes."""
    from filelock import FileLock

    folder = shared_folder(tmp_path_factory) / name
    made = folder / ".made"
    with FileLock(f"{folder}.lock"):
        if made.is_file():
            return Path(made.read_text())
        folder.mkdir(exist_ok=True)  # a worker whose make() failed may have left it
        result = make(folder)
        made.write_text(str(result))
        return result


@pytest.fixture(scope="session")
def real_vllm(tmp_path_factory: pytest.TempPathFactory) -> RealVllm:
    """Session-wide: the first use downloads the vLLM 0.7.2 sdist through the user's
    pip index into the cache, PATCHTOOL_TEST_CACHE_DIR (kept between runs) or a
    folder of this run; the workers share it (patchtool's cache locks let one
    fill it while the others wait)."""
    root = tmp_path_factory.mktemp("real-vllm")
    cache = Path(os.environ.get("PATCHTOOL_TEST_CACHE_DIR")
                 or shared_folder(tmp_path_factory) / "vllm-cache")  # fmt: skip
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
    return base_tree(real_vllm.tree, tmp_path_factory.mktemp("vllm-base") / "vllm")


@pytest.fixture(scope="session")
def c550_wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `patchtool build-wheel` makes from the C550 tree on vLLM 0.7.2:
    built once per run, by the first worker that needs it."""

    def build(out: Path) -> Path:
        world: RealVllm = request.getfixturevalue("real_vllm")
        result = world.cli("build-wheel", "--device-type", "metax_C550", "--dir",
                           str(world.build), "--out", str(out))  # fmt: skip
        assert result.code == 0, result.output
        return Path(result.stdout.strip())

    return once_per_run(tmp_path_factory, "c550-wheel", build)


@pytest.fixture(scope="session")
def c550_wheel_tree(c550_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked: the files exactly as an installed vLLM would load them."""
    target = tmp_path_factory.mktemp("c550-wheel-tree")
    with zipfile.ZipFile(c550_wheel) as archive:
        archive.extractall(target)
    return target
