"""Fixtures for the MetaX C550 series tests: the patched tree, the unpatched base,
and the built wheel, all made by patchtool from the real vLLM 0.7.2 sdist.

PATCHTOOL_C550_TREE / PATCHTOOL_VLLM_BASE_TREE point the tests at other trees
(a vendor's own checkout, or the device machine where the tool cannot run)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest

FUSED_MOE = Path("vllm/model_executor/layers/fused_moe/fused_moe.py")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "prefill_kernel: needs the series' fused_moe_prefill_kernel "
        "(deselected for a tree the prefill patch has not been carried to)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked vllm_08 exercise what fused_experts has from vLLM 0.8 on
    (expert parallelism, int8 w8a8), and tests marked prefill_kernel the
    series' prefill kernel and its default configs: each is deselected, not
    skipped, for a tree that lacks it. The default tree is the 0.7.2 series',
    which has both the prefill kernel and no vLLM 0.8 code."""
    tree = os.environ.get("PATCHTOOL_C550_TREE")
    source = (Path(tree) / FUSED_MOE).read_text("utf-8") if tree else ""
    missing = []
    if "expert_map" not in source:
        missing.append("vllm_08")
    if tree and "fused_moe_prefill_kernel" not in source:
        missing.append("prefill_kernel")
    deselected = [item for item in items
                  if any(item.get_closest_marker(name) for name in missing)]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]


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


@pytest.fixture(scope="session")
def carried_trees(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Build (once per version) the C550 tree and its unpatched base for any base
    of the store, e.g. carried_trees("0.8.5") -> (patched tree, base tree)."""
    import subprocess

    world = request.getfixturevalue("real_vllm")
    made: dict[str, tuple[Path, Path]] = {}

    def build(version: str) -> tuple[Path, Path]:
        if version not in made:
            build_dir = tmp_path_factory.mktemp(f"carried-{version}")
            result = world.cli("unpatch", "--device-type", "metax_C550", "--commit-id", version,
                               "--dir", str(build_dir))
            assert result.code == 0, result.output
            tree = build_dir / "metax_C550" / "vllm"
            base = tmp_path_factory.mktemp(f"carried-{version}-base")
            archive = subprocess.run(["git", "archive", "--format=tar", "patchtool/base"],
                                     cwd=tree, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            made[version] = (tree, base)
        return made[version]

    return build
