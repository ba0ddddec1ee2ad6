"""Fused-MoE config key for the C550 device names and the override."""

import ast
import logging
import sys
from pathlib import Path
from typing import Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from c550_load import CONFIGS, FUSED_MOE, find_function, load_by_path, load_envs

OVERRIDE = "VLLM_FUSED_MOE_DEVICE_NAME"
SHAPES = [(256, 256, None), (256, 512, None), (256, 256, "int8_w8a8")]


@pytest.fixture
def dn(c550_tree):
    return load_by_path(c550_tree / FUSED_MOE / "device_names.py")


@pytest.mark.parametrize("reported,key", [
    ("Device 4000", "Device_4000"),
    ("MXC550", "Device_4000"),
    ("NVIDIA H200", "NVIDIA_H200"),
    ("AMD Instinct MI300X", "AMD_Instinct_MI300X"),
    ("Device 4001", "Device_4001"),
])
def test_alias(dn, reported, key):
    assert dn.moe_config_device_name(reported) == key
    assert dn.moe_config_device_name(reported, None) == key
    assert dn.moe_config_device_name(reported, "") == key


@pytest.mark.parametrize("override,key", [
    ("Device_4000", "Device_4000"),
    ("Device 4000", "Device_4000"),
    ("MXC550", "Device_4000"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA_H100_80GB_HBM3"),
])
def test_override_wins(dn, override, key):
    for reported in ("MXC560", "NVIDIA H200", "Device 4000"):
        assert dn.moe_config_device_name(reported, override) == key


def test_override_registered_in_envs(c550_tree, monkeypatch):
    envs = load_envs(c550_tree)
    assert OVERRIDE in envs.environment_variables
    monkeypatch.delenv(OVERRIDE, raising=False)
    assert envs.VLLM_FUSED_MOE_DEVICE_NAME is None
    monkeypatch.setenv(OVERRIDE, "")
    assert envs.VLLM_FUSED_MOE_DEVICE_NAME is None
    monkeypatch.setenv(OVERRIDE, "MXC550")
    assert envs.VLLM_FUSED_MOE_DEVICE_NAME == "MXC550"


def test_choice_logged_with_reason(dn, caplog):
    with caplog.at_level(logging.INFO, logger=dn.__name__):
        dn.moe_config_device_name("MXC550")
        dn.moe_config_device_name("MXC550")  # logged once
        dn.moe_config_device_name("MXC560", "Device_4000")
    msgs = [r.getMessage() for r in caplog.records
            if r.name == dn.__name__ and r.levelno == logging.INFO]
    assert len(msgs) == 2
    assert "Device_4000" in msgs[0] and "'MXC550'" in msgs[0]
    assert "alias of MXC550" in msgs[0]
    assert OVERRIDE in msgs[1] and "'MXC560'" in msgs[1]


class _Platform:
    def __init__(self, name):
        self.name = name

    def get_device_name(self):
        return self.name


def _real_get_config_file_name(tree, dn, device, override, monkeypatch):
    """fused_moe.get_config_file_name() as written in the tree, executed
    with a platform reporting ``device`` (importing fused_moe.py itself
    needs the compiled vLLM ops)."""
    if override is None:
        monkeypatch.delenv(OVERRIDE, raising=False)
    else:
        monkeypatch.setenv(OVERRIDE, override)
    func = find_function(tree / FUSED_MOE / "fused_moe.py",
                         "get_config_file_name")
    ns = {"current_platform": _Platform(device), "envs": load_envs(tree),
          "moe_config_device_name": dn.moe_config_device_name,
          "Optional": Optional, "List": list}
    exec(compile(ast.Module([func], []), "fused_moe.py", "exec"), ns)
    return ns["get_config_file_name"]


@pytest.mark.parametrize("device,override", [
    ("Device 4000", None), ("MXC550", None),
    ("MXC560", "Device_4000"), ("NVIDIA H200", "MXC550"),
])
@pytest.mark.parametrize("E,N,dtype", SHAPES)
def test_c550_config_files_found(c550_tree, dn, monkeypatch, device,
                                 override, E, N, dtype):
    get_name = _real_get_config_file_name(c550_tree, dn, device, override,
                                          monkeypatch)
    name = get_name(E, N, dtype)
    assert "device_name=Device_4000" in name
    assert (c550_tree / CONFIGS / name).is_file(), name


def test_other_device_unchanged(c550_tree, dn, monkeypatch):
    get_name = _real_get_config_file_name(c550_tree, dn, "NVIDIA H200",
                                          None, monkeypatch)
    assert get_name(256, 256, None) == \
        "E=256,N=256,device_name=NVIDIA_H200.json"
    assert get_name(256, 256, "fp8_w8a8", [128, 128]) == \
        "E=256,N=256,device_name=NVIDIA_H200,dtype=fp8_w8a8," \
        "block_shape=[128,128].json"


def test_resolver_imported_by_config_module(c550_tree):
    src = (c550_tree / FUSED_MOE / "fused_moe.py").read_text()
    assert ("from vllm.model_executor.layers.fused_moe.device_names import"
            in src)
