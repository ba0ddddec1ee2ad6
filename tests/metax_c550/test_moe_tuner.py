"""CPU tests of the series' fused-MoE tuner (benchmarks/kernels/moe_series_tuner.py).

What runs here is the tuner's own logic on the patched tree: the search space
and its pruning, the seeded cap, the finalist pairs and the choice of the
entry written to the config file. Timing needs a GPU and spreading needs Ray:
those ran on an H200 (docs/c550-fused-moe-h200.md), not here. The module
imports Ray only inside tune() and its workers, so it loads without it.
"""
import gzip
import importlib.util
import inspect
import json
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_loader  # noqa: E402


def load_script(path):
    """A script that is no package's module (the tree's benchmarks, ours)."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tuner(c550_tree):
    vllm_loader.load_fused_moe(c550_tree)
    had_ray = "ray" in sys.modules
    module = load_script(Path(c550_tree) / "benchmarks" / "kernels" / "moe_series_tuner.py")
    assert ("ray" in sys.modules) == had_ray  # Ray stays out of the import
    return module


def tile(bm, bn, bk, **extra):
    return dict({"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
                 "GROUP_SIZE_M": 1, "num_warps": 4, "num_stages": 3}, **extra)


def canon(pairs):
    return sorted(json.dumps(pair, sort_keys=True) for pair in pairs)


def r1_tp8(tuner):
    return tuner.Shape(256, 8, 256, 7168, torch.bfloat16)


def test_shape_is_16_bit_only(tuner):
    with pytest.raises(ValueError, match=re.escape(
            "the series search is for 16-bit weights, not torch.float32")):
        tuner.Shape(8, 2, 64, 128, torch.float32)
    assert r1_tp8(tuner).gemm("stage1") == (512, 7168)
    assert r1_tp8(tuner).gemm("stage2") == (7168, 256)


def test_decode_space(tuner):
    # M=1: one row per expert, so BLOCK_SIZE_M 16 only and one row block
    # (GROUP_SIZE_M 1 only). The w1 GEMM (512 columns) leaves the GPU idle,
    # so SPLIT_K joins, each split owning at least two K tiles; the w2 GEMM
    # (7168 columns) fills it and gets none.
    stage1 = tuner.candidates(r1_tp8(tuner), 1, "stage1", 132)
    stage2 = tuner.candidates(r1_tp8(tuner), 1, "stage2", 132)
    assert (len(stage1), len(stage2)) == (122, 56)
    assert {c["BLOCK_SIZE_M"] for c in stage1 + stage2} == {16}
    assert {c["GROUP_SIZE_M"] for c in stage1 + stage2} == {1}
    split = [c for c in stage1 if "SPLIT_K" in c]
    assert len(split) == 66
    assert {c["SPLIT_K"] for c in split} == {2, 4, 8, 16}
    assert all(2 * c["SPLIT_K"] * c["BLOCK_SIZE_K"] <= 7168 for c in split)
    assert not any("SPLIT_K" in c for c in stage2)
    # w2 reduces over 256: no BLOCK_SIZE_K beyond it.
    assert max(c["BLOCK_SIZE_K"] for c in stage2) == 256


def test_prefill_space(tuner):
    configs = tuner.candidates(r1_tp8(tuner), 4096, "stage1", 132)
    assert len(configs) == 1904
    assert {c["BLOCK_SIZE_M"] for c in configs} == {16, 32, 64, 128, 256}
    assert {c["GROUP_SIZE_M"] for c in configs} == {1, 16, 64}
    assert not any("SPLIT_K" in c for c in configs)
    for c in configs:
        rows = c["BLOCK_SIZE_M"] + c.get("TAIL_BLOCK_SIZE_M", 0)
        smem = (rows + c["BLOCK_SIZE_N"]) * c["BLOCK_SIZE_K"] * 2
        assert smem * c["num_stages"] <= 200 * 1024, c
        assert rows * c["BLOCK_SIZE_N"] / (32 * c["num_warps"]) <= 256, c
    # The prefill kernel's key, a quarter or half of BLOCK_SIZE_M (at
    # least 16), beside the plain tile it extends, alone and with the
    # persistent walk: 128 rows per expert.
    prefill = [c for c in configs if "TAIL_BLOCK_SIZE_M" in c]
    assert len(prefill) == 2 * 489
    assert len([c for c in prefill if "PERSISTENT" in c]) == 489
    assert {(c["BLOCK_SIZE_M"], c["TAIL_BLOCK_SIZE_M"]) for c in prefill} == {
        (32, 16), (64, 16), (64, 32), (128, 32), (128, 64), (256, 64), (256, 128)}
    plain = [json.dumps(c, sort_keys=True) for c in configs if c == tuner.plain(c)]
    assert all(json.dumps(tuner.plain(c), sort_keys=True) in plain for c in prefill)


@pytest.mark.parametrize("M,tails,persistent,carrying", [
    (256, set(), 0, 0),  # 8 rows per expert: BLOCK_SIZE_M 16 only, no tail
    (512, {(32, 16)}, 55, 52),  # 16 rows: BLOCK_SIZE_M 32 at most
    (1024, {(32, 16), (64, 16), (64, 32)}, 106, 138),
])
def test_prefill_keys_join_where_an_expert_fills_half_a_block(
        tuner, M, tails, persistent, carrying):
    # PERSISTENT joins beside each plain tile the tails join, and beside
    # each tail (the walk carrying short blocks), for short reductions (w2,
    # 256: at most 4 K steps) and long ones (w1, 7168) alike: on an H100
    # the walk was the fastest Mixtral w1 at M >= 2048 (64 K steps).
    for stage in ("stage2", "stage1"):
        configs = tuner.candidates(r1_tp8(tuner), M, stage, 132)
        assert {(c["BLOCK_SIZE_M"], c["TAIL_BLOCK_SIZE_M"]) for c in configs
                if "TAIL_BLOCK_SIZE_M" in c} == tails
        walking = [c for c in configs if "PERSISTENT" in c]
        assert all(c["PERSISTENT"] == 1 and c["BLOCK_SIZE_M"] >= 32
                   for c in walking)
        assert len([c for c in walking
                    if "TAIL_BLOCK_SIZE_M" not in c]) == persistent, stage
        assert len([c for c in walking
                    if "TAIL_BLOCK_SIZE_M" in c]) == carrying, stage


def test_choose_keeps_the_prefill_key_out_of_the_top_level(tuner):
    a, b = tile(128, 128, 64), tile(128, 256, 64)
    t = tile(128, 128, 64, TAIL_BLOCK_SIZE_M=32)
    pick = tuner.choose([(t, t, 90.0), (a, a, 100.0), (b, b, 95.0)])
    assert pick == {"entry": dict(b, stage1=t, stage2=t), "us": 90.0,
                    "upstream_us": 95.0}


def test_cap_is_a_seeded_sample(tuner):
    items = list(range(100))
    assert tuner.cap(items, 0, 1) is items
    assert tuner.cap(items, 200, 1) is items
    picked = tuner.cap(items, 10, 7)
    assert len(picked) == 10 == len(set(picked))
    assert picked == tuner.cap(items, 10, 7)
    assert picked != tuner.cap(items, 10, 8)


def test_finalists_pair_within_one_block_size_m(tuner):
    a, b, c = tile(16, 32, 256), tile(16, 128, 64), tile(32, 128, 64)
    d = tile(16, 64, 128, SPLIT_K=4)
    timed = {"stage1": [(a, 10.0), (b, 12.0), (c, 9.0), (d, 8.0)],
             "stage2": [(a, 8.0), (b, 5.0)]}
    pairs = tuner.finalists(timed, 2)
    # BLOCK_SIZE_M 16: the two fastest of each GEMM, crossed (d and a for
    # w1, b and a for w2); c has no w2 partner at BLOCK_SIZE_M 32; the two
    # best plain configs for both GEMMs (b: 17, a: 18) add (b, b).
    assert canon(pairs) == canon([(d, b), (d, a), (a, b), (a, a), (b, b)])


def test_choose_writes_stages_over_the_best_plain_pair(tuner):
    a, b = tile(16, 32, 256), tile(16, 128, 64)
    d = tile(16, 64, 128, SPLIT_K=4)
    pick = tuner.choose([(d, b, 14.0), (b, b, 15.0), (a, a, 16.0), (a, b, 14.5)])
    # The fastest pair wins; the top level is the best plain config used
    # for both GEMMs, never a series key (SPLIT_K) that readers without the
    # series would pass to Triton.
    assert pick == {"entry": dict(b, stage1=d, stage2=b), "us": 14.0,
                    "upstream_us": 15.0}


def test_choose_writes_a_flat_entry_when_one_config_wins(tuner):
    a, b = tile(16, 32, 256), tile(16, 128, 64)
    pick = tuner.choose([(a, a, 10.0), (a, b, 11.0), (b, b, 12.0)])
    assert pick == {"entry": a, "us": 10.0, "upstream_us": 10.0}
    with pytest.raises(RuntimeError, match="no config ran for both GEMMs"):
        tuner.choose([])


RULES = Path(__file__).resolve().parents[2] / "benchmarks" / "c550_default_rules.py"


def _judged(fm, rules, recordings):
    found = {}
    for recording in recordings:
        ratios = rules.evaluate(fm, json.loads(gzip.decompress(recording.read_bytes())))
        known = {M: r for M, r in ratios.items() if r is not None}
        found[recording.name.split(".timings")[0]] = (sorted(known), max(known.values()))
    return found


@pytest.mark.carried
@pytest.mark.prefill_kernel
def test_default_rules_hold_on_the_recorded_h200_searches(c550_tree):
    # The tree's default rules against every recorded tuner run, where it
    # timed the default's configs: R1 TP8 was searched whole, the other two
    # with --max-configs (a default config not sampled is unknown), and
    # from M = 1024 the defaults use the prefill kernel's keys, which these
    # runs predate (test_default_rules_hold_on_the_prefill_sweeps judges
    # those; a tree without the prefill patch deselects both). The issue's
    # bounds: 15% for R1 TP8, 25% for the others.
    rules = load_script(RULES)
    found = _judged(vllm_loader.load_fused_moe(c550_tree), rules, rules.RECORDINGS)
    decode = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256, 512]
    assert {name.split(",device_name")[0]: Ms for name, (Ms, _) in found.items()} == {
        "E=256,N=256": decode, "E=256,N=512": decode,
        "E=8,N=1792": [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 256]}
    worst = {name.split(",device_name")[0]: w for name, (_, w) in found.items()}
    assert worst["E=256,N=256"] <= 1.15
    assert worst["E=256,N=512"] <= 1.25 and worst["E=8,N=1792"] <= 1.25


@pytest.mark.carried
@pytest.mark.prefill_kernel
def test_default_rules_hold_on_the_prefill_sweeps(c550_tree):
    # The sweeps of both kernels at M >= 512 on an H100 and an H200
    # (docs/c550-fused-moe-h200.md, issue 24): the default configs, looked
    # up in each sweep, within 5% of its fastest per-GEMM configs.
    rules = load_script(RULES)
    found = _judged(vllm_loader.load_fused_moe(c550_tree), rules, rules.PREFILL_RECORDINGS)
    sizes = {"E=256,N=256": [512, 1024, 2048, 4096], "E=256,N=512": [2048, 4096],
             "E=8,N=1792": [512, 1024, 2048, 4096]}
    assert {name: Ms for name, (Ms, _) in found.items()} == {
        f"{shape},device_name={gpu}": Ms for shape, Ms in sizes.items()
        for gpu in ("NVIDIA_H100_80GB_HBM3", "NVIDIA_H200")}
    assert max(worst for _, worst in found.values()) <= 1.05


@pytest.mark.carried
def test_launch_arguments_bind_to_the_trees_kernel(tuner, c550_tree):
    # invoke_fused_moe_kernel's parameters moved between releases (0.8
    # dropped topk_ids and added use_int8_w8a8 and per_channel_quant): the
    # tuner calls it by name, with what this tree's signature has. A
    # positional call broke on 0.8.5 ("got multiple values for argument
    # 'compute_type'"), found on the H200.
    fm = vllm_loader.load_fused_moe(c550_tree)
    invoke = fm.invoke_fused_moe_kernel
    values = dict(A="A", B="B", C="C", topk_weights="w", topk_ids="ids",
                  sorted_token_ids="sorted", expert_ids="experts",
                  num_tokens_post_padded="padded", mul_routed_weight=True,
                  top_k=1, config={}, compute_type="bf16")
    arguments = tuner.launch_arguments(invoke, **values)
    bound = inspect.signature(invoke).bind(**arguments).arguments
    params = inspect.signature(invoke).parameters
    assert bound["sorted_token_ids"] == "sorted" and bound["compute_type"] == "bf16"
    assert ("topk_ids" in bound) == ("topk_ids" in params)
    quantised = {"A_scale", "B_scale", "B_zp", "block_shape"}
    flags = {"use_fp8_w8a8", "use_int8_w8a8", "use_int8_w8a16", "use_int4_w4a16",
             "per_channel_quant"}
    assert {name: bound[name] for name in quantised & bound.keys()} == dict.fromkeys(
        quantised & params.keys())
    assert {name: bound[name] for name in flags & bound.keys()} == dict.fromkeys(
        flags & params.keys(), False)

    def later_release(A, B, needs_this):
        pass

    with pytest.raises(TypeError, match="needs arguments the tuner does not know: needs_this"):
        tuner.launch_arguments(later_release, A=1, B=2)
