"""Integration: the real vLLM 0.7.2 sdist and the repository's metax_C550 series."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest
from helpers import REPOSITORY, RealVllm, commit_all, git, snapshot

pytestmark = pytest.mark.integration

DEVICE_FILES = {
    # What the series adds to the vllm package (the wheel carries them).
    "vllm/model_executor/layers/fused_moe/configs/E=256,N=256,device_name=Device_4000,dtype=int8_w8a8.json",
    "vllm/model_executor/layers/fused_moe/configs/E=256,N=256,device_name=Device_4000.json",
    "vllm/model_executor/layers/fused_moe/configs/E=256,N=512,device_name=Device_4000.json",
    "vllm/model_executor/layers/fused_moe/configs/NOTICE.metax_c550.md",
    "vllm/model_executor/layers/fused_moe/device_names.py",
    "vllm/platforms/maca_release.py",
    "vllm/platforms/metax_flaggems.py",
}


@pytest.fixture
def private_world(real_vllm: RealVllm, tmp_path: Path) -> RealVllm:
    """Its own store copy and build folder (tests here edit both), the shared cache."""
    store = tmp_path / "patches"
    shutil.copytree(REPOSITORY / "patches", store)
    return RealVllm(store=store, build=tmp_path / "build", cache=real_vllm.cache,
                    env=real_vllm.env)


def store_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_base_commit_is_the_one_base_toml_records(real_vllm: RealVllm) -> None:
    recorded = (real_vllm.base_folder / "base.toml").read_text()
    assert f'commit = "{git(real_vllm.tree, "rev-parse", "patchtool/base").strip()}"' in recorded


def test_series_applies_one_commit_per_patch(real_vllm: RealVllm) -> None:
    series = [line for line in (real_vllm.base_folder / "series").read_text().splitlines()
              if line and not line.startswith("#")]  # fmt: skip
    subjects = git(real_vllm.tree, "log", "--reverse", "--format=%s", "patchtool/base..HEAD")
    assert len(subjects.splitlines()) == len(series) >= 7


def test_unpatch_patch_edit_round_trip_on_the_real_source(private_world: RealVllm) -> None:
    world = private_world
    base_folder = world.base_folder
    assert world.cli("unpatch", "--device-type", "metax_C550", "-c", "0.7.2",
                     "--dir", str(world.build)).code == 0
    before = store_files(base_folder)
    result = world.cli("patch", "--device-type", "metax_C550", "--dir", str(world.build))
    assert result.code == 0, result.output
    assert "store unchanged" in result.stderr
    assert store_files(base_folder) == before

    readme = world.tree / "README.md"
    readme.write_text(readme.read_text() + "\nBuilt for the MetaX C550.\n")
    commit_all(world.tree, "docs: Mention the C550 build in the readme")
    assert world.cli("patch", "--device-type", "metax_C550", "--dir", str(world.build)).code == 0
    after = store_files(base_folder)
    assert set(after) - set(before) == {"docs-mention-the-c550-build-in-the-readme.patch"}
    assert set(before) - set(after) == set()
    assert after["series"] == before["series"] + b"docs-mention-the-c550-build-in-the-readme.patch\n"
    assert all(after[name] == before[name] for name in before if name != "series")

    edited = snapshot(world.tree)
    assert world.cli("unpatch", "--device-type", "metax_C550", "-c", "0.7.2",
                     "--dir", str(world.build)).code == 0
    assert snapshot(world.tree) == edited


def test_wheel_carries_exactly_the_devices_added_files(real_vllm: RealVllm, c550_wheel: Path) -> None:
    added = git(real_vllm.tree, "diff", "--name-only", "--diff-filter=A", "patchtool/base..HEAD")
    in_package = {p for p in added.split() if p.startswith("vllm/")}
    assert in_package == DEVICE_FILES
    names = set(zipfile.ZipFile(c550_wheel).namelist())
    assert names >= DEVICE_FILES
    upstream_configs = git(real_vllm.tree, "ls-tree", "--name-only", "patchtool/base",
                           "vllm/model_executor/layers/fused_moe/configs/").split()  # fmt: skip
    wheel_configs = {n for n in names if n.startswith("vllm/model_executor/layers/fused_moe/configs/")}
    assert wheel_configs - set(upstream_configs) == {
        p for p in DEVICE_FILES if "/configs/" in p
    }
    assert "env.sh" not in names  # a build-time file, not part of the package


def test_wheel_version_and_provenance(real_vllm: RealVllm, c550_wheel: Path) -> None:
    assert c550_wheel.name == "vllm-0.7.2+maca-py3-none-any.whl"
    with zipfile.ZipFile(c550_wheel) as archive:
        provenance = json.loads(archive.read("vllm-0.7.2+maca.dist-info/patchtool-provenance.json"))
        record = archive.read("vllm-0.7.2+maca.dist-info/RECORD").decode()
        metadata = archive.read("vllm-0.7.2+maca.dist-info/METADATA").decode()
    assert "\nVersion: 0.7.2+maca\n" in metadata
    assert "vllm-0.7.2+maca.dist-info/patchtool-provenance.json,sha256=" in record
    series = [line for line in (real_vllm.base_folder / "series").read_text().splitlines()
              if line and not line.startswith("#")]  # fmt: skip
    assert [p["name"] for p in provenance["patches"]] == series
    assert provenance["base_commit"] == git(real_vllm.tree, "rev-parse", "patchtool/base").strip()
    assert provenance["upstream"]["sha256"] == (
        "bdeeda5624182e6a93895cbb7e20b6e88b04d22b8272d8a255741b28b36ae941"
    )
    assert provenance["target_device"] == "empty"
    assert provenance["tree_state"] == "exported"
    assert len(provenance["env_script"]["sha256"]) == 64
    beside = json.loads(Path(str(c550_wheel) + ".provenance.json").read_text())
    assert beside["wheel_sha256"] == __import__("hashlib").sha256(c550_wheel.read_bytes()).hexdigest()


def test_two_builds_are_byte_identical_and_unchanged_rebuild_is_reused(
    real_vllm: RealVllm, c550_wheel: Path, tmp_path: Path
) -> None:
    again = real_vllm.cli("build-wheel", "--device-type", "metax_C550", "--dir",
                          str(real_vllm.build), "--out", str(tmp_path))  # fmt: skip
    assert again.code == 0, again.output
    assert Path(again.stdout.strip()).read_bytes() == c550_wheel.read_bytes()
    reused = real_vllm.cli("build-wheel", "--device-type", "metax_C550", "--dir",
                           str(real_vllm.build), "--out", str(tmp_path))  # fmt: skip
    assert reused.code == 0
    assert "reusing vllm-0.7.2+maca-py3-none-any.whl" in reused.stderr


def test_missing_required_config_fails_the_build_and_names_it(private_world: RealVllm,
                                                              tmp_path: Path) -> None:
    world = private_world
    assert world.cli("unpatch", "--device-type", "metax_C550", "-c", "0.7.2",
                     "--dir", str(world.build)).code == 0
    config = "vllm/model_executor/layers/fused_moe/configs/E=256,N=512,device_name=Device_4000.json"
    git(world.tree, "rm", "--quiet", config)
    commit_all(world.tree, "Drop the TP4 tuning")
    out = tmp_path / "out"
    refused = world.cli("build-wheel", "--device-type", "metax_C550", "--dir", str(world.build),
                        "--out", str(out))  # fmt: skip
    assert refused.code == 5 and "Drop the TP4 tuning" in refused.stderr
    result = world.cli("build-wheel", "--device-type", "metax_C550", "--dir", str(world.build),
                       "--out", str(out), "--allow-dirty")  # fmt: skip
    assert result.code == 8, result.output
    assert f"lacks file(s) that device.toml requires: {config}" in result.stderr
    assert not list(out.glob("*.whl"))


def test_failing_env_sh_is_a_build_error_with_its_stderr(private_world: RealVllm) -> None:
    world = private_world
    assert world.cli("unpatch", "--device-type", "metax_C550", "-c", "0.7.2",
                     "--dir", str(world.build)).code == 0
    (world.tree / "env.sh").write_text("echo 'cannot find MACA licence' >&2\nreturn 3\n")
    commit_all(world.tree, "Break env.sh")
    result = world.cli("build-wheel", "--device-type", "metax_C550", "--dir", str(world.build),
                       "--allow-dirty")  # fmt: skip
    assert result.code == 8
    assert "failed with status 3" in result.stderr and "cannot find MACA licence" in result.stderr


def test_build_without_torch_says_how_to_install_it(private_world: RealVllm, tmp_path: Path) -> None:
    world = private_world
    assert world.cli("unpatch", "--device-type", "metax_C550", "-c", "0.7.2",
                     "--dir", str(world.build)).code == 0
    venv = tmp_path / "venv"
    subprocess.run(["python3", "-m", "venv", "--without-pip", str(venv)], check=True)
    from patchtool.commands.build_wheel import WheelOptions, build_wheel
    from patchtool.core.errors import BuildError
    from patchtool.core.report import NullReporter
    from patchtool.store.resolve import Store

    options = WheelOptions(store=Store(world.store), build_dir=world.build, device="metax_C550",
                           out_dir=tmp_path / "out", python=str(venv / "bin" / "python"))  # fmt: skip
    with pytest.raises(BuildError) as caught:
        build_wheel(options, NullReporter())
    assert "has no torch installed" in caught.value.message
    assert "Install the torch your device uses" in (caught.value.hint or "")
