"""The config vLLM loads for the C550, from the built wheel: for each name the
C550 reports (and the override), the tuned file exists in the wheel at the path
vLLM reads it from, and try_get_optimal_moe_config returns its entries.

Each case runs in a subprocess: a process holds one vllm package, and the
choice of config file is cached per process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Each case's subprocess imports vllm_loader, which needs torch.
pytest.importorskip("torch")

HERE = Path(__file__).resolve().parent
CONFIGS = Path("vllm/model_executor/layers/fused_moe/configs")

PROGRAM = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import vllm_loader
fm = vllm_loader.load_fused_moe(sys.argv[2])
reported = sys.argv[3]
fm.current_platform.get_device_name = lambda device_id=0: reported
K = 7168
results = []
for shape in sys.argv[4:]:
    E, N, dtype = shape.split(":")
    E, N, dtype = int(E), int(N), dtype or None
    result = {"file": fm.get_config_file_name(E, N, dtype), "configs": {}}
    for M in (1, 3, 64, 100, 4096):
        result["configs"][str(M)] = fm.try_get_optimal_moe_config(
            (E, 2 * N, K), (E, K, N), 8, dtype, M)
    results.append(result)
print(json.dumps(results))
"""


def choose(wheel_tree: Path, reported: str, override: str | None,
           shapes: list[tuple[int, int, str]]) -> list[dict]:  # type: ignore[type-arg]
    env = {k: v for k, v in os.environ.items() if k != "VLLM_FUSED_MOE_DEVICE_NAME"}
    if override:
        env["VLLM_FUSED_MOE_DEVICE_NAME"] = override
    completed = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(HERE), str(wheel_tree), reported,
         *(f"{E}:{N}:{dtype}" for E, N, dtype in shapes)],
        capture_output=True, text=True, env=env, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])

CASES = [
    pytest.param("Device 4000", None, id="Device-4000"),
    pytest.param("MXC550", None, id="MXC550"),
    pytest.param("Future SKU", "MXC550", id="override"),
]
SHAPES = [(256, 256, ""), (256, 512, ""), (256, 256, "int8_w8a8")]


@pytest.mark.parametrize("reported,override", CASES)
def test_wheel_config_is_found_and_used(c550_wheel_tree: Path, reported: str,
                                        override: str | None) -> None:
    results = choose(c550_wheel_tree, reported, override, SHAPES)
    for (E, N, dtype), result in zip(SHAPES, results, strict=True):
        suffix = f",dtype={dtype}" if dtype else ""
        assert result["file"] == f"E={E},N={N},device_name=Device_4000{suffix}.json"
        shipped = c550_wheel_tree / CONFIGS / result["file"]
        assert shipped.is_file()
        table = {int(k): v for k, v in json.loads(shipped.read_text()).items()}
        for M, config in result["configs"].items():
            nearest = min(table, key=lambda key: abs(key - int(M)))
            assert config == table[nearest], (result["file"], M, nearest)


def test_other_devices_still_fall_back_to_upstream_default(c550_wheel_tree: Path) -> None:
    (result,) = choose(c550_wheel_tree, "Unknown GPU", None, [(256, 256, "")])
    assert result["file"] == "E=256,N=256,device_name=Unknown_GPU.json"
    assert not (c550_wheel_tree / CONFIGS / result["file"]).exists()
    # upstream's default for small M: BLOCK_SIZE_M 16
    assert result["configs"]["1"]["BLOCK_SIZE_M"] == 16
