"""Fixtures for the MetaX C550 series tests: the patched tree and the unpatched
base, made by patchtool from the real vLLM sdists (the wheel: tests/conftest.py).

A test marked `carried` (or a parameter of it marked so) runs on every base of
the store's metax_C550 (c550_bases.py), each tree built once per session (per
xdist worker); every other test runs on the 0.7.2 tree.

PATCHTOOL_C550_TREE / PATCHTOOL_VLLM_BASE_TREE point the tests at other trees
(a vendor's own checkout, or the device machine where the tool cannot run);
then every test runs on those two trees only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from c550_bases import HOME_BASE, found_in, is_carried, series_bases
from helpers import RealVllm, base_tree


def _given_tree() -> Path | None:
    tree = os.environ.get("PATCHTOOL_C550_TREE")
    return Path(tree) if tree else None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "prefill_kernel: needs the series' fused_moe_prefill_kernel "
        "(deselected for a tree the prefill patch has not been carried to)")
    config.addinivalue_line(
        "markers", "carried: runs on every base the C550 series is carried to, not on 0.7.2 "
        "only (on a test, or on a parameter of it)")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A carried test is parametrized over every base (c550_base); the collection
    then keeps, on the bases other than 0.7.2, the cases marked `carried`."""
    if "c550_base" in metafunc.fixturenames and _given_tree() is None \
            and is_carried(metafunc.definition.iter_markers()):  # fmt: skip
        metafunc.parametrize("c550_base", sorted(series_bases()), indirect=True,
                             scope="session", ids=lambda version: f"vllm-{version}")  # fmt: skip


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked vllm_08 exercise what fused_experts has from vLLM 0.8 on
    (expert parallelism, int8 w8a8), and tests marked prefill_kernel the
    series' prefill kernel and its default configs: each is deselected, not
    skipped, for a tree that lacks it (0.7.2 has the prefill kernel and no
    vLLM 0.8 code). The cross product of a carried test's parameters and the
    bases holds cases that are not carried (a shape without the mark, on
    0.8.5): those are deselected too, so that pytest's counts add up."""
    given = _given_tree()
    if given is not None:
        lacks = {HOME_BASE: found_in(given, HOME_BASE).lacks()}
    else:
        lacks = {version: base.lacks() for version, base in series_bases().items()}
    kept, deselected = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        version = callspec.params.get("c550_base", HOME_BASE) if callspec else HOME_BASE
        not_carried = version != HOME_BASE and not item.get_closest_marker("carried")
        if not_carried or any(item.get_closest_marker(name) for name in lacks[version]):
            deselected.append(item)
        else:
            kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    items[:] = kept


@pytest.fixture(scope="session")
def c550_base(request: pytest.FixtureRequest) -> str:
    """The vLLM version the C550 tree is made for: 0.7.2, or each base the series
    is carried to for a test marked `carried`."""
    return str(getattr(request, "param", HOME_BASE))


@pytest.fixture(scope="session")
def carried_trees(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, Path]]:  # fmt: skip
    """Build (once per version and session) the C550 tree and its unpatched base
    for a base of the store, e.g. carried_trees("0.8.5") -> (patched tree, base tree)."""
    world: RealVllm = request.getfixturevalue("real_vllm")
    made: dict[str, tuple[Path, Path]] = {}

    def build(version: str) -> tuple[Path, Path]:
        if version not in made:
            build_dir = tmp_path_factory.mktemp(f"carried-{version}")
            result = world.cli("unpatch", "--device-type", "metax_C550", "--commit-id", version,
                               "--dir", str(build_dir))
            assert result.code == 0, result.output
            tree = build_dir / "metax_C550" / "vllm"
            series_bases()[version].check(tree)
            base = base_tree(tree, tmp_path_factory.mktemp(f"carried-{version}") / "vllm")
            made[version] = (tree, base)
        return made[version]

    return build


@pytest.fixture(scope="session")
def c550_tree(request: pytest.FixtureRequest, c550_base: str) -> Path:
    """Root of the patched vLLM tree (the folder with setup.py and env.sh)."""
    given = _given_tree()
    if given is not None:
        return given
    if c550_base == HOME_BASE:
        tree: Path = request.getfixturevalue("real_vllm").tree
        series_bases()[HOME_BASE].check(tree)
        return tree
    return request.getfixturevalue("carried_trees")(c550_base)[0]


@pytest.fixture(scope="session")
def vllm_base_tree(request: pytest.FixtureRequest, c550_base: str) -> Path:
    """Root of the unpatched upstream tree the series applies to."""
    if os.environ.get("PATCHTOOL_VLLM_BASE_TREE"):
        return Path(os.environ["PATCHTOOL_VLLM_BASE_TREE"])
    if c550_base == HOME_BASE:
        base: Path = request.getfixturevalue("real_vllm_base_tree")
        return base
    return request.getfixturevalue("carried_trees")(c550_base)[1]
