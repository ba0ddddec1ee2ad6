"""The bases the C550 series is carried to, and what the kernel tests assume of them.

`patchtool rebase` carried the series from vLLM 0.7.2 to 0.7.3 and 0.8.5, with
the fused-MoE patches resolved by hand on 0.8.5. The kernel tests marked
`carried` run on each base's tree, in this process (conftest.py parametrizes
them over c550_base; vllm_loader switches trees): for the default path, split-K
and stage configs the largest shape (H=96: three K tiles, so SPLIT_K=4 leaves
one split without a tile); the config resolution; SPLIT_K=1 bit-identical to
no key; no new keys bit-identical to the unpatched base; the default rules (and
one kernel run with a w2 tile of its own); the tuner's call of
invoke_fused_moe_kernel; and the vLLM >= 0.8 paths (expert parallelism and
block-quantized int8 under split-K). What each base lacks is deselected, not
skipped, before any tree is built, from what the store says; these tests pin
that reading, and the fixtures hold each built tree to it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import test_fused_moe_kernel
import test_moe_tuner
from c550_bases import HOME_BASE, SeriesBase, is_carried, series_bases


def test_the_series_bases_and_what_their_trees_have() -> None:
    # The prefill kernel (0.7.2's patch 13) was carried to 0.7.3 and 0.8.5 with
    # `rebase -c 0.7.2 --onto 0.7.3,0.8.5`: its tests (4 M12 cases, the 5 default
    # rules from M = 512 on, the two judgements of the rules against recorded
    # runs) run on every base. The vLLM 0.8 tests (expert parallelism, int8 w8a8
    # under split-K) are deselected on 0.7.x.
    assert series_bases() == {
        "0.7.2": SeriesBase("0.7.2", vllm_08=False, prefill_kernel=True),
        "0.7.3": SeriesBase("0.7.3", vllm_08=False, prefill_kernel=True),
        "0.8.5": SeriesBase("0.8.5", vllm_08=True, prefill_kernel=True),
    }
    assert HOME_BASE == "0.7.2"


def test_the_tests_that_run_on_every_base() -> None:
    carried = {
        module.__name__: sorted(name for name, function in vars(module).items()
                                if name.startswith("test_")
                                and is_carried(getattr(function, "pytestmark", [])))
        for module in (test_fused_moe_kernel, test_moe_tuner)
    }  # fmt: skip
    assert carried == {
        "test_fused_moe_kernel": [
            "test_default_path_matches_reference",  # M12 only
            "test_default_rules",
            "test_default_rules_leave_fp32_to_upstream",
            "test_default_stage2_matches_reference",
            "test_expert_parallel_matches_reference",
            "test_expert_parallel_prefill_kernel_matches_reference",
            "test_no_new_keys_bit_identical_to_base",
            "test_prefill_kernel_matches_reference",  # M12 only
            "test_split_k_block_quant_clamps_block_size_k",
            "test_split_k_matches_reference",  # M12 only
            "test_split_k_one_is_upstream_launch",
            "test_stage_config_resolution",
            "test_stage_configs_match_reference",  # M12 only
        ],
        "test_moe_tuner": [
            "test_default_rules_hold_on_the_prefill_sweeps",
            "test_default_rules_hold_on_the_recorded_h200_searches",
            "test_launch_arguments_bind_to_the_trees_kernel",
        ],
    }


@pytest.mark.parametrize("version", sorted(set(series_bases()) - {HOME_BASE}))
def test_a_carried_tree_has_what_the_collection_assumed(
    carried_trees: Callable[[str], tuple[Path, Path]], version: str
) -> None:
    tree, base = carried_trees(version)  # carried_trees checks the tree too
    series_bases()[version].check(tree)
    assert (tree / "env.sh").is_file() and not (base / "env.sh").exists()  # base: unpatched
