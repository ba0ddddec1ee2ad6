"""The fused-MoE kernel tests, run on the series as carried to newer vLLM bases.

`patchtool rebase` carried the C550 series from vLLM 0.7.2 to 0.7.3 and
0.8.5, with the fused-MoE patches resolved by hand on 0.8.5. For each carried
base this builds the patched tree and its unpatched base from the real sdist
(the session fixture carried_trees) and runs test_fused_moe_kernel.py against
them in a subprocess (vllm_loader allows one vLLM tree per process), with
PATCHTOOL_C550_TREE / PATCHTOOL_VLLM_BASE_TREE pointing at the two trees.

A representative subset keeps each version under about two minutes on two
cores under Triton's interpreter: the largest shape (H=96: three K tiles, so
SPLIT_K=4 leaves one split without a tile) for the default path, split-K and
stage configs; the config resolution; SPLIT_K=1 bit-identical to no key; no
new keys bit-identical to the unpatched base; the default rules (and one
kernel run with a w2 tile of its own); and the vLLM >= 0.8 paths
(expert parallelism and block-quantized int8 under split-K), which skip
themselves on 0.7.x.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

KERNEL_TESTS = Path(__file__).resolve().parent / "test_fused_moe_kernel.py"
TUNER_TESTS = Path(__file__).resolve().parent / "test_moe_tuner.py"

SUBSET = ("M12 or test_stage_config_resolution or test_split_k_one_is_upstream_launch"
          " or test_no_new_keys_bit_identical_to_base or test_expert_parallel"
          " or test_split_k_block_quant_clamps_block_size_k"
          " or test_default_rules or test_default_stage2_matches_reference"
          " or test_launch_arguments_bind_to_the_trees_kernel")

# version -> (passed, deselected by marker) of SUBSET. 8 M12 cases + 3
# single tests + the default rules (8 shapes, fp32, one kernel run) + from
# test_moe_tuner.py the tuner's call of invoke_fused_moe_kernel run
# everywhere; the prefill kernel's tests (4 M12 cases, the 5 default rules
# from M = 512 on and the two judgements of the rules against recorded
# runs: 11) run on both since the prefill patch (0.7.2 patch 13) was carried
# with `rebase -c 0.7.2 --onto 0.7.3,0.8.5`. The 3 expert-parallel cases,
# the block-quant case and the prefill kernel's 4 expert-parallel cases need
# the expert_map / use_int8_w8a8 parameters that fused_experts_impl has from
# 0.8, and are deselected (not skipped) before it.
EXPECTED = {
    "0.7.3": (33, 8),
    "0.8.5": (41, 0),
}


def _count(summary: str, word: str) -> int:
    found = re.search(rf"(\d+) {word}", summary)
    return int(found.group(1)) if found else 0


@pytest.mark.parametrize("version", sorted(EXPECTED))
def test_kernel_tests_pass_on_carried_base(carried_trees, version: str) -> None:  # type: ignore[no-untyped-def]
    tree, base = carried_trees(version)
    env = dict(os.environ, PATCHTOOL_C550_TREE=str(tree),
               PATCHTOOL_VLLM_BASE_TREE=str(base), TRITON_INTERPRET="1")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(KERNEL_TESTS), str(TUNER_TESTS), "-q",
         "-p", "no:cacheprovider",
         "-k", SUBSET],
        cwd=KERNEL_TESTS.parent, env=env, capture_output=True, text=True, timeout=900)
    output = proc.stdout + proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    summary = lines[-1] if lines else ""
    assert proc.returncode == 0, output[-5000:]
    passed, _ = EXPECTED[version]
    assert _count(summary, "failed") == 0 and _count(summary, "error") == 0, summary
    assert _count(summary, "passed") == passed, summary
    assert _count(summary, "skipped") == 0, summary
