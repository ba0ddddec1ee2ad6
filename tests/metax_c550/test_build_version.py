"""Build: the +maca<release>torch<x.y> version suffix and the wheel."""

import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))
from c550_load import CONFIGS, find_function, load_by_path

torch = pytest.importorskip("torch")

RELEASE = "2.29.0.14"
TORCH_XY = ".".join(torch.__version__.split(".")[:2])


@pytest.fixture
def mr(c550_tree):
    return load_by_path(c550_tree / "vllm/platforms/maca_release.py")


@pytest.fixture
def fake_maca(tmp_path):
    maca = tmp_path / "maca"
    maca.mkdir()
    (maca / "Version.txt").write_text(f"Version:{RELEASE}\n")
    return maca


def test_suffix_with_maca(mr, fake_maca):
    assert mr.maca_version_suffix(str(fake_maca), "2.4.0+metax2.29", {}) \
        == f"maca{RELEASE}torch2.4"
    suffix = mr.maca_version_suffix(str(fake_maca), torch.__version__, {})
    assert suffix == f"maca{RELEASE}torch{TORCH_XY}"
    v = Version(f"0.7.2+{suffix}")
    assert v.public == "0.7.2" and v.local == suffix


def test_suffix_without_maca(mr):
    assert mr.maca_version_suffix(None, torch.__version__, {}) == "maca"
    assert mr.maca_version_suffix(None, "2.4.0",
                                  {"MACA_VERSION": RELEASE}) == "maca"


def test_release_from_env_when_no_version_file(mr, tmp_path):
    maca = tmp_path / "maca"
    maca.mkdir()
    assert mr.read_maca_release(str(maca), {}) is None
    assert mr.maca_version_suffix(str(maca), "2.6.0", {}) == "macatorch2.6"
    env = {"MACA_VERSION": "2.30.0.1"}
    assert mr.maca_version_suffix(str(maca), "2.6.0", env) == \
        "maca2.30.0.1torch2.6"


def test_version_file_wins_and_is_sanitised(mr, fake_maca):
    assert mr.read_maca_release(str(fake_maca),
                                {"MACA_VERSION": "9.9"}) == RELEASE
    (fake_maca / "Version.txt").write_text("\nVersion: 2.31.0-rc_1 \n")
    suffix = mr.maca_version_suffix(str(fake_maca), "2.6.1", {})
    assert suffix == "maca2.31.0.rc.1torch2.6"
    Version(f"0.7.2+{suffix}")  # valid PEP 440


def test_find_maca_path(mr, fake_maca, tmp_path):
    assert mr.find_maca_path({"MACA_PATH": str(fake_maca)}) == str(fake_maca)
    assert mr.find_maca_path({"MACA_PATH": str(tmp_path / "none")}) is None
    expected = "/opt/maca" if os.path.isdir("/opt/maca") else None
    assert mr.find_maca_path({}) == expected


def test_setup_py_uses_the_module(c550_tree):
    """get_vllm_version() appends the suffix from maca_release (loaded by
    path) and no longer appends +empty."""
    src = (c550_tree / "setup.py").read_text()
    assert "load_module_from_path(\n    'maca_release'" in src
    func = find_function(c550_tree / "setup.py", "get_vllm_version")
    body = ast.unparse(func)
    assert "maca_release.maca_version_suffix" in body
    assert "maca_release.find_maca_path" in body
    assert "empty'" not in body and 'empty"' not in body.replace(
        "_no_device", "")


def _build(tree: Path, out: Path, home: Path, maca: str | None) -> Path:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MACA_", "CUDA_", "CUCC_"))}
    env.update(VLLM_TARGET_DEVICE="empty",
               SETUPTOOLS_SCM_PRETEND_VERSION="0.7.2", HOME=str(home),
               MACA_PATH=maca or str(out / "no-maca"))
    res = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation",
         "--skip-dependency-check", "-o", str(out), "."],
        cwd=tree, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    return wheel


def test_wheel_build(c550_tree, fake_maca, tmp_path):
    """Real Python-only build of a copy of the tree: wheel name carries
    the suffix, the C550 tunings and notice are inside, and nothing is
    written to HOME."""
    tree = tmp_path / "tree"
    shutil.copytree(c550_tree, tree, symlinks=True, ignore=shutil.
                    ignore_patterns(".git", "build", "*.egg-info", "dist"))
    home = tmp_path / "home"
    home.mkdir()

    wheel = _build(tree, tmp_path / "w1", home, str(fake_maca))
    assert wheel.name == \
        f"vllm-0.7.2+maca{RELEASE}torch{TORCH_XY}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    cfg = "vllm/" + str(CONFIGS.relative_to("vllm")) + "/"
    for f in ("E=256,N=256,device_name=Device_4000.json",
              "E=256,N=512,device_name=Device_4000.json",
              "E=256,N=256,device_name=Device_4000,dtype=int8_w8a8.json",
              "NOTICE.metax_c550.md"):
        assert cfg + f in names
    assert "vllm/platforms/maca_release.py" in names

    shutil.rmtree(tree / "build")
    wheel = _build(tree, tmp_path / "w2", home, None)
    assert wheel.name == "vllm-0.7.2+maca-py3-none-any.whl"
    assert list(home.iterdir()) == []


def test_collect_env_reports_maca(c550_tree, fake_maca):
    """collect_env.py shows the MACA release (via maca_release)."""
    code = f"""
import importlib.util, sys, types
tree = {str(c550_tree)!r}
for name, sub in (("vllm", "vllm"), ("vllm.platforms", "vllm/platforms")):
    m = types.ModuleType(name); m.__path__ = [tree + "/" + sub]
    sys.modules[name] = m
spec = importlib.util.spec_from_file_location("vllm.envs",
                                              tree + "/vllm/envs.py")
envs = importlib.util.module_from_spec(spec); spec.loader.exec_module(envs)
sys.modules["vllm.envs"] = envs
spec = importlib.util.spec_from_file_location("ce", tree + "/collect_env.py")
ce = importlib.util.module_from_spec(spec); spec.loader.exec_module(ce)
print(ce.get_maca_version())
print("MACA Version: {{maca_version}}" in ce.env_info_fmt)
print("maca_version" in ce.SystemEnv._fields)
"""
    env = dict(os.environ, MACA_PATH=str(fake_maca))
    out = subprocess.run([sys.executable, "-c", code], env=env, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == [f"{RELEASE} ({fake_maca})",
                                          "True", "True"]
    env["MACA_PATH"] = str(fake_maca / "missing")
    out = subprocess.run([sys.executable, "-c", code], env=env, text=True,
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "N/A"
