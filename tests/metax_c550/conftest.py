"""Fixtures for the MetaX C550 series tests: the patched tree, the unpatched base,
and the built wheel, all made by patchtool from the real vLLM 0.7.2 sdist.

PATCHTOOL_C550_TREE / PATCHTOOL_VLLM_BASE_TREE point the tests at other trees
(a vendor's own checkout, or the device machine where the tool cannot run)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def c550_tree(request: pytest.FixtureRequest) -> Path:
    """Root of the patched vLLM tree (the folder with setup.py and env.sh)."""
    if os.environ.get("PATCHTOOL_C550_TREE"):
        return Path(os.environ["PATCHTOOL_C550_TREE"])
    return request.getfixturevalue("real_vllm").tree


@pytest.fixture(scope="session")
def vllm_base_tree(request: pytest.FixtureRequest) -> Path:
    """Root of the unpatched upstream tree the series applies to."""
    if os.environ.get("PATCHTOOL_VLLM_BASE_TREE"):
        return Path(os.environ["PATCHTOOL_VLLM_BASE_TREE"])
    return request.getfixturevalue("real_vllm_base_tree")


@pytest.fixture(scope="session")
def c550_wheel(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel `patchtool build-wheel` makes from the C550 tree."""
    world = request.getfixturevalue("real_vllm")
    out = tmp_path_factory.mktemp("c550-wheel")
    result = world.cli("build-wheel", "--device-type", "metax_C550", "--dir", str(world.build),
                       "--out", str(out))
    assert result.code == 0, result.output
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def c550_wheel_tree(c550_wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel unpacked: the files exactly as an installed vLLM would load them."""
    target = tmp_path_factory.mktemp("c550-wheel-tree")
    with zipfile.ZipFile(c550_wheel) as archive:
        archive.extractall(target)
    return target
