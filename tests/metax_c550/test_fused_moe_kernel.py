"""CPU tests of the C550 fused-MoE series, run under Triton's interpreter.

The code under test is the patched tree's own
vllm/model_executor/layers/fused_moe/fused_moe.py (Triton kernel,
invoke_fused_moe_kernel, fused_experts_impl), loaded by vllm_loader without
vllm/__init__.py. vLLM's compiled ops (moe_align_block_size, silu_and_mul,
moe_sum) do not exist without a built vLLM and 0.7.2 has no Python fallback
for them, so vllm_loader registers pure-torch STAND-INS for those three ops
only (see vllm_loader.install_compiled_op_standins).

The Triton interpreter's bf16 dot is wrong, so only fp16 and fp32 are used.

The trees come from conftest.py: c550_tree is the tree `patchtool unpatch`
builds from the real sdist and the store, vllm_base_tree its base commit
(PATCHTOOL_C550_TREE / PATCHTOOL_VLLM_BASE_TREE point them elsewhere). The
tests marked `carried` (and the M12 shape) run on every base the series is
carried to (c550_bases.py), in this process: vllm_loader loads one tree at a
time and switches when a test asks for another.
"""
import os

# Must be set before triton is imported anywhere in this process.
os.environ.setdefault("TRITON_INTERPRET", "1")

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vllm_loader  # noqa: E402  (it imports torch: only after the skip above)

LOADER = Path(vllm_loader.__file__).resolve()

# The interpreter emits a numpy DeprecationWarning per scalar index.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

# Tolerances against the fp32 torch reference.
# fp32: the kernel accumulates in fp32 like the reference; only summation
#   order differs (and split-K sums partials in another order), so errors
#   are a few ulps of O(1) values.
# fp16: the kernel rounds to fp16 three times (w1 GEMM output, silu_and_mul
#   output, each expert's w2 output before the top-k sum); with O(1) values
#   that is a few 1e-3 absolute, so 1e-2 leaves margin without hiding a
#   wrong block (which gives O(1) errors).
TOL = {
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
}

# (M tokens, hidden size, intermediate size N per expert, E experts, top-k)
# Kept small: the interpreter runs every program instance in Python.
SHAPES = [
    pytest.param(1, 64, 32, 8, 2, id="M1-H64-N32-E8-top2"),
    pytest.param(5, 64, 32, 16, 8, id="M5-H64-N32-E16-top8"),
    # The largest (three K tiles, so SPLIT_K=4 leaves one split without a
    # tile) also runs on every base the series is carried to.
    pytest.param(12, 96, 48, 20, 4, id="M12-H96-N48-E20-top4",
                 marks=pytest.mark.carried),
]
DTYPES = [pytest.param(torch.float16, id="fp16"),
          pytest.param(torch.float32, id="fp32")]

SMALL = {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 32,
         "GROUP_SIZE_M": 1}
LARGE_M = {"BLOCK_SIZE_M": 32, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 16,
           "GROUP_SIZE_M": 4}


@pytest.fixture(scope="session")
def fm(c550_tree):
    return vllm_loader.load_fused_moe(c550_tree)


def make_inputs(M, H, N, E, topk, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, H, generator=g).to(dtype)
    # Scaled so every intermediate value is O(1).
    w1 = (torch.randn(E, 2 * N, H, generator=g) / H**0.5).to(dtype)
    w2 = (torch.randn(E, H, N, generator=g) / N**0.5).to(dtype)
    # Distinct experts per token, as a real router gives.
    topk_ids = torch.stack([
        torch.randperm(E, generator=g)[:topk] for _ in range(M)
    ]).to(torch.int32)
    topk_weights = torch.rand(M, topk, generator=g, dtype=torch.float32)
    topk_weights /= topk_weights.sum(dim=-1, keepdim=True)
    return x, w1, w2, topk_weights, topk_ids


def torch_moe_reference(x, w1, w2, topk_weights, topk_ids):
    """sum_k w[t,k] * (silu_and_mul(x[t] @ w1[e].T) @ w2[e].T), in fp32."""
    xf, w1f, w2f = x.float(), w1.float(), w2.float()
    out = torch.zeros(x.shape[0], w2.shape[1])
    for e in topk_ids.unique().tolist():
        tok, slot = torch.nonzero(topk_ids == e, as_tuple=True)
        h = xf[tok] @ w1f[e].T
        d = h.shape[1] // 2
        h = torch.nn.functional.silu(h[:, :d]) * h[:, d:]
        y = (h @ w2f[e].T) * topk_weights[tok, slot, None]
        out.index_add_(0, tok, y)
    return out


def run_patched(fm, inputs, config):
    with vllm_loader.override_config(config):
        return fm.fused_experts_impl(*inputs)


def default_config(fm, M, H, N, E, topk, dtype):
    # The tree's own fallback config (no tuned file on this platform).
    dtype_str = "float32" if dtype == torch.float32 else None
    return fm.get_default_config(M, E, N, H, topk, dtype_str, False)


def check(out, ref, dtype):
    assert out.dtype == dtype
    torch.testing.assert_close(out.float(), ref, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,H,N,E,topk", SHAPES)
def test_default_path_matches_reference(fm, M, H, N, E, topk, dtype):
    # The tree's defaults (the series' rules for fp16, vLLM's for fp32):
    # upstream's kernel path, with the int64 offsets of the first patch
    # (which must not change any value) and no split-K.
    inputs = make_inputs(M, H, N, E, topk, dtype)
    cfg = default_config(fm, M, H, N, E, topk, dtype)
    assert "SPLIT_K" not in cfg
    check(run_patched(fm, inputs, cfg), torch_moe_reference(*inputs), dtype)


def _tile(bm, bn, bk, warps, stages):
    return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
            "GROUP_SIZE_M": 1, "num_warps": warps, "num_stages": stages}


R1_TP8 = (256, 256, 7168, 8)  # E, N (w2.shape[2]), K (hidden), top-k
MIXTRAL_TP8 = (8, 1792, 4096, 2)

# The series' default rules (fused-moe-choose-default-tiles-...): M ->
# (w1 tile, w2 tile). BLOCK_SIZE_M by rows per expert (M * topk / E: 16 up
# to 8, 32 up to 24, 64 up to 48, 128 above), the tile by the GEMM's
# reduction length (w1: K, w2: N).
DEFAULT_RULES = [
    (1, R1_TP8, _tile(16, 32, 256, 4, 3), _tile(16, 128, 64, 4, 3)),
    (16, R1_TP8, _tile(16, 32, 256, 4, 3), _tile(16, 128, 64, 4, 3)),
    (32, R1_TP8, _tile(16, 32, 128, 4, 3), _tile(16, 128, 64, 4, 3)),
    (256, R1_TP8, _tile(16, 32, 128, 4, 3), _tile(16, 128, 64, 4, 3)),
    (512, R1_TP8, _tile(32, 128, 128, 4, 4), _tile(32, 128, 64, 4, 4)),
    (1, MIXTRAL_TP8, _tile(16, 32, 256, 4, 3), _tile(16, 32, 256, 4, 3)),
    (64, MIXTRAL_TP8, _tile(32, 128, 128, 4, 4), _tile(32, 128, 128, 4, 4)),
    # 64 rows per expert, but below M = 512: no prefill keys yet.
    (256, MIXTRAL_TP8, _tile(128, 128, 64, 8, 3), _tile(128, 128, 64, 8, 3)),
]


def _walk(bm, bn, bk, warps, stages, group):
    return dict(_tile(bm, bn, bk, warps, stages), GROUP_SIZE_M=group,
                PERSISTENT=1)


def _carry(bm, bn, bk, warps, stages, group, tail):
    return dict(_tile(bm, bn, bk, warps, stages), GROUP_SIZE_M=group,
                TAIL_BLOCK_SIZE_M=tail)


# From M = 512 with 64 or 128 rows a block (more than 24 rows per expert),
# the prefill kernel: a short reduction (w2 here, 256) walks persistently
# at 64 rows a block, and at 128 runs 128x128 tiles up to 96 rows per
# expert, 128x256 carrying short blocks above; a long one (w1, 7168; both
# of Mixtral's) walks 128x256 tiles persistently from about 256 tiles (R1:
# (M * 8 / 128 + 128) * 2), and carries short blocks below (Mixtral at
# M=512: (512 * 2 / 128 + 4) * 14 = 168 tiles).
PREFILL_DEFAULT_RULES = [
    (1024, R1_TP8, _walk(64, 128, 128, 4, 3, 1), _walk(64, 256, 64, 8, 3, 1)),
    (2048, R1_TP8, _walk(128, 256, 64, 8, 3, 16),
     _carry(128, 128, 64, 8, 3, 16, 0)),
    (4096, R1_TP8, _walk(128, 256, 64, 8, 3, 16),
     _carry(128, 256, 64, 8, 3, 16, 64)),
    (512, MIXTRAL_TP8, _carry(128, 256, 64, 8, 4, 1, 64),
     _carry(128, 256, 64, 8, 4, 1, 64)),
    (1024, MIXTRAL_TP8, _walk(128, 256, 64, 8, 3, 16),
     _walk(128, 256, 64, 8, 3, 16)),
]


@pytest.mark.carried
@pytest.mark.parametrize("M,shape,stage1,stage2", DEFAULT_RULES + [
    pytest.param(*rule, marks=pytest.mark.prefill_kernel)
    for rule in PREFILL_DEFAULT_RULES])
def test_default_rules(fm, M, shape, stage1, stage2):
    E, N, K, topk = shape
    cfg = fm.get_default_config(M, E, N, K, topk, None, False)
    assert fm.get_stage_configs(cfg) == (stage1, stage2)
    # One alignment serves both GEMMs; the top level is the w1 tile, and
    # "stage2" appears only when the w2 tile differs.
    assert set(cfg) - set(stage1) == ({"stage2"} if stage2 != stage1 else
                                      set())


@pytest.mark.carried
def test_default_rules_leave_fp32_to_upstream(fm):
    # The tiles are sized for 2-byte elements: fp32 keeps vLLM's default.
    assert fm.get_default_config(1, 256, 256, 7168, 8, "float32", False) == {
        "BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64,
        "GROUP_SIZE_M": 1}


@pytest.mark.prefill_kernel
def test_default_prefill_configs_match_reference(fm):
    # A batch the prefill defaults cover (M >= 512, 64 rows per expert:
    # BLOCK_SIZE_M 128, a long reduction walked persistently and a short
    # one on 128x128 tiles), run on a small shape with the default
    # config of R1 TP8 at M=2048.
    cfg = fm.get_default_config(2048, *R1_TP8[:3], R1_TP8[3], None, False)
    inputs = make_inputs(20, 64, 32, 4, 2, torch.float16, seed=28)
    check(run_patched(fm, inputs, cfg), torch_moe_reference(*inputs),
          torch.float16)


@pytest.mark.carried
def test_default_stage2_matches_reference(fm):
    # H=640 > 512 and N=32: the w1 GEMM gets the long-reduction tile
    # (BLOCK_SIZE_N 32, BLOCK_SIZE_K 256) and the w2 GEMM its own
    # (BLOCK_SIZE_N 128, BLOCK_SIZE_K 64) through "stage2".
    inputs = make_inputs(1, 640, 32, 8, 2, torch.float16, seed=6)
    cfg = default_config(fm, 1, 640, 32, 8, 2, torch.float16)
    assert cfg["BLOCK_SIZE_K"] == 256 and cfg["stage2"]["BLOCK_SIZE_N"] == 128
    check(run_patched(fm, inputs, cfg), torch_moe_reference(*inputs),
          torch.float16)


@pytest.mark.parametrize("split_k", [2, 4])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,H,N,E,topk", SHAPES)
def test_split_k_matches_reference(fm, M, H, N, E, topk, dtype, split_k):
    # H=96 with BLOCK_SIZE_K=32 gives 3 K tiles and H=64 two: with
    # SPLIT_K=4 some splits own no tile and must contribute zeros.
    inputs = make_inputs(M, H, N, E, topk, dtype, seed=1)
    out = run_patched(fm, inputs, dict(SMALL, SPLIT_K=split_k))
    check(out, torch_moe_reference(*inputs), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,H,N,E,topk", SHAPES)
def test_stage_configs_match_reference(fm, M, H, N, E, topk, dtype):
    # Different BLOCK_SIZE_M per stage forces a second alignment; stage2
    # also uses split-K with a different BLOCK_SIZE_K.
    inputs = make_inputs(M, H, N, E, topk, dtype, seed=2)
    ref = torch_moe_reference(*inputs)
    cfg = dict(SMALL, stage1=dict(SMALL), stage2=dict(LARGE_M, SPLIT_K=2))
    check(run_patched(fm, inputs, cfg), ref, dtype)
    cfg = {"stage1": dict(LARGE_M, SPLIT_K=4), "stage2": dict(SMALL)}
    check(run_patched(fm, inputs, cfg), ref, dtype)


@pytest.mark.carried
def test_stage_config_resolution(fm):
    plain = dict(SMALL)
    s1, s2 = fm.get_stage_configs(plain)
    assert s1 is plain and s2 is plain
    s1, s2 = fm.get_stage_configs(dict(SMALL, stage2=LARGE_M))
    assert s1 == SMALL and s2 == LARGE_M
    with pytest.raises(ValueError):
        fm.get_stage_configs({"stage1": SMALL})


@pytest.mark.carried
def test_split_k_one_is_upstream_launch(fm):
    # SPLIT_K=1 must take the unsplit launch: bit-identical to no key.
    inputs = make_inputs(5, 64, 32, 16, 8, torch.float16, seed=3)
    a = run_patched(fm, inputs, dict(SMALL))
    b = run_patched(fm, inputs, dict(SMALL, SPLIT_K=1))
    assert torch.equal(a, b)


@pytest.mark.carried
def test_no_new_keys_bit_identical_to_base(fm, vllm_base_tree, tmp_path):
    # The unpatched tree runs in a subprocess (this process holds the
    # patched one) on the same saved inputs; with no new keys the outputs must be equal
    # bit for bit (the int64 change only touches address arithmetic).
    cases = [((5, 64, 32, 16, 8), torch.float16, dict(SMALL)),
             ((12, 96, 48, 20, 4), torch.float32, dict(LARGE_M)),
             ((12, 96, 48, 20, 4), torch.float16, dict(LARGE_M))]
    saved, mine = [], []
    for i, (shape, dtype, cfg) in enumerate(cases):
        inputs = make_inputs(*shape, dtype, seed=10 + i)
        mine.append(run_patched(fm, inputs, cfg))
        saved.append(
            dict(hidden_states=inputs[0], w1=inputs[1], w2=inputs[2],
                 topk_weights=inputs[3], topk_ids=inputs[4], config=cfg))
    case, res = tmp_path / "cases.pt", tmp_path / "base.pt"
    torch.save(saved, case)
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([
        sys.executable, str(LOADER), "--run-case",
        str(vllm_base_tree), str(case), str(res)
    ], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    base = torch.load(res)
    for (shape, dtype, cfg), a, b in zip(cases, mine, base, strict=True):
        assert torch.equal(a, b), (shape, dtype, cfg)


def _impl_params(fm):
    return inspect.signature(fm.fused_experts_impl).parameters


def _poison_allocator():
    # Free NaN-filled blocks of many sizes so that a torch.empty buffer the
    # kernel forgets to write shows up as NaN instead of stale zeros.
    blocks = [torch.full((n, ), float("nan")) for n in range(256, 65536, 256)]
    del blocks


@pytest.mark.carried
@pytest.mark.parametrize("cfg", [
    pytest.param(dict(SMALL), id="plain"),
    pytest.param(dict(SMALL, SPLIT_K=2), id="split2"),
    pytest.param(dict(SMALL, stage1=dict(LARGE_M, SPLIT_K=4),
                      stage2=dict(SMALL, SPLIT_K=2)), id="stages-split"),
])
@pytest.mark.vllm_08
def test_expert_parallel_matches_reference(fm, cfg):
    # vLLM >= 0.8: with an expert_map, blocks of experts not on this rank
    # get expert id -1 and the kernel writes zeros for them. Under split-K
    # every split must write those zeros into its own slice of the
    # (uninitialised) partial buffer.
    assert "expert_map" in _impl_params(fm)
    M, H, N, E, topk = 12, 96, 48, 20, 4
    x, w1, w2, tw, ti = make_inputs(M, H, N, E, topk, torch.float32, seed=4)
    local = torch.arange(E) % 2 == 0
    expert_map = torch.full((E, ), -1, dtype=torch.int32)
    expert_map[local] = torch.arange(int(local.sum()), dtype=torch.int32)
    ref = torch_moe_reference(x, w1, w2, tw * local[ti.long()], ti)
    _poison_allocator()
    with vllm_loader.override_config(cfg):
        out = fm.fused_experts_impl(x, w1[local].contiguous(),
                                    w2[local].contiguous(), tw, ti,
                                    global_num_experts=E,
                                    expert_map=expert_map)
    check(out, ref, torch.float32)


def _block_quant_int8(w, block):
    E, R, C = w.shape
    blk = w.reshape(E, R // block, block, C // block, block)
    scale = blk.abs().amax(dim=(2, 4)) / 127
    q = torch.round(blk / scale[:, :, None, :, None]).clamp(-127, 127)
    return q.to(torch.int8).reshape(E, R, C), scale.float()


@pytest.mark.carried
@pytest.mark.vllm_08
def test_split_k_block_quant_clamps_block_size_k(fm):
    # vLLM >= 0.8 clamps BLOCK_SIZE_K to the quantization block in the
    # unsplit launch (the kernel loads one scale per K tile); the split-K
    # launch must do the same. BLOCK_SIZE_K=64 over 32-wide blocks.
    assert "use_int8_w8a8" in _impl_params(fm)
    M, H, N, E, topk, block = 5, 128, 64, 8, 2, 32
    x, w1, w2, tw, ti = make_inputs(M, H, N, E, topk, torch.float32, seed=5)
    (q1, s1), (q2, s2) = _block_quant_int8(w1, block), _block_quant_int8(
        w2, block)
    cfg = dict(SMALL, BLOCK_SIZE_K=64)

    def run(config):
        with vllm_loader.override_config(config):
            return fm.fused_experts_impl(x, q1, q2, tw, ti,
                                         use_int8_w8a8=True, w1_scale=s1,
                                         w2_scale=s2,
                                         block_shape=[block, block])

    unsplit = run(cfg)
    # Dequantized reference: int8 activations add a quantization error of
    # ~1e-2 on O(1) outputs; a misapplied scale gives O(1) errors.
    ref = torch_moe_reference(x, q1.float().reshape(E, 2 * N // block, block,
                                                    H // block, block).mul(
        s1[:, :, None, :, None]).reshape(E, 2 * N, H),
        q2.float().reshape(E, H // block, block, N // block, block).mul(
            s2[:, :, None, :, None]).reshape(E, H, N), tw, ti)
    torch.testing.assert_close(unsplit, ref, atol=5e-2, rtol=5e-2)
    # Split partial sums may flip one int8 rounding of the stage-2 input.
    torch.testing.assert_close(run(dict(cfg, SPLIT_K=2)), unsplit,
                               atol=1e-2, rtol=1e-2)


# ---------------------------------------------------------------------------
# The prefill kernel (fused_moe_prefill_kernel, selected by the
# TAIL_BLOCK_SIZE_M or PERSISTENT key). Marked prefill_kernel: deselected for trees
# without it (the series on a base it has not been carried to yet).
# ---------------------------------------------------------------------------
def _prefill(bm, bn, bk, tail, group=1):
    return {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
            "GROUP_SIZE_M": group, "TAIL_BLOCK_SIZE_M": tail}


def routed_inputs(counts, H, N, dtype, seed):
    """Inputs with top-1 routing and exactly counts[e] tokens on expert e,
    in a shuffled token order."""
    M, E = sum(counts), len(counts)
    x, w1, w2, _, _ = make_inputs(M, H, N, E, 1, dtype, seed=seed)
    g = torch.Generator().manual_seed(seed)
    experts = torch.cat([torch.full((c, ), e) for e, c in enumerate(counts)])
    topk_ids = experts[torch.randperm(M, generator=g)].to(torch.int32)[:, None]
    topk_weights = torch.rand(M, 1, generator=g) + 0.5
    return x, w1, w2, topk_weights, topk_ids


class TileSpy:
    """Records each _fused_moe_prefill_tile call of the interpreted kernel
    as (first row, expert, ROWS, MORE_ROWS). The interpreter looks the
    helper up in fused_moe.py's globals on every call, so a wrapper there
    sees them all."""

    def __init__(self, fm, monkeypatch):
        self.calls = []
        tile = fm._fused_moe_prefill_tile

        def spy(*args):
            self.calls.append(tuple(int(a) for a in args[5:7] + args[18:20]))
            return tile(*args)

        monkeypatch.setattr(fm, "_fused_moe_prefill_tile", spy)


# Top-1 routing, BLOCK_SIZE_M 32, TAIL_BLOCK_SIZE_M 16. Expert rows after
# alignment: 0: 40 tokens -> rows 0-31 full, 32-39 a short block carried by
# block 0 (one pass over expert 0's weights for 48 rows); 1: 10 tokens ->
# one short block, a 16-row tile of its own; 2: 32 -> one full block; 3: 60
# -> two full blocks (the second has 28 real rows: not short); 4: none;
# 5: 17 -> one block, not short (its 17th row is past the tail).
PREFILL_COUNTS = [40, 10, 32, 60, 0, 17]
PREFILL_TILES = {(0, 0, 32, 16), (64, 1, 16, 0), (96, 2, 32, 0),
                 (128, 3, 32, 0), (160, 3, 32, 0), (192, 5, 32, 0)}


@pytest.mark.prefill_kernel
@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_kernel_carries_short_blocks(fm, monkeypatch, dtype):
    spy = TileSpy(fm, monkeypatch)
    inputs = routed_inputs(PREFILL_COUNTS, 64, 32, dtype, seed=20)
    out = run_patched(fm, inputs, _prefill(32, 32, 32, 16))
    check(out, torch_moe_reference(*inputs), dtype)
    # Both GEMMs: w1 (2N = 64 columns, 2 column blocks of 32) and w2 (64
    # columns, 2 blocks); the short block of expert 0 (rows 32-47) runs
    # no program of its own.
    assert sorted(spy.calls) == sorted(list(PREFILL_TILES) * 4)


@pytest.mark.prefill_kernel
def test_prefill_kernel_without_tail_runs_full_tiles(fm, monkeypatch):
    spy = TileSpy(fm, monkeypatch)
    inputs = routed_inputs(PREFILL_COUNTS, 64, 32, torch.float16, seed=21)
    out = run_patched(fm, inputs, _prefill(32, 32, 32, 0, group=2))
    check(out, torch_moe_reference(*inputs), torch.float16)
    assert sorted(set(spy.calls)) == [(0, 0, 32, 0), (32, 0, 32, 0),
                                      (64, 1, 32, 0), (96, 2, 32, 0),
                                      (128, 3, 32, 0), (160, 3, 32, 0),
                                      (192, 5, 32, 0)]


@pytest.mark.carried
@pytest.mark.prefill_kernel
@pytest.mark.vllm_08
@pytest.mark.parametrize("schedule", [
    pytest.param(_prefill(32, 32, 32, 16), id="tail16"),
    pytest.param(dict(_prefill(32, 32, 32, 0, group=4), PERSISTENT=1),
                 id="persistent"),
])
@pytest.mark.parametrize("parity", [0, 1], ids=["even-local", "odd-local"])
def test_expert_parallel_prefill_kernel_matches_reference(fm, schedule, parity):
    # vLLM >= 0.8: with an expert_map, blocks of experts not on this rank
    # get expert id -1; the prefill kernel writes zeros for them as
    # fused_moe_kernel does (never reading expert -1's weights), and never
    # carries a short block across them. PREFILL_COUNTS: expert 0's short
    # block is carried by its full block when expert 0 is local
    # (even-local), and both are -1 blocks when it is not (odd-local).
    assert "expert_map" in _impl_params(fm)
    inputs = routed_inputs(PREFILL_COUNTS, 64, 32, torch.float32, seed=23)
    x, w1, w2, tw, ti = inputs
    E = len(PREFILL_COUNTS)
    local = torch.arange(E) % 2 == parity
    expert_map = torch.full((E, ), -1, dtype=torch.int32)
    expert_map[local] = torch.arange(int(local.sum()), dtype=torch.int32)
    ref = torch_moe_reference(x, w1, w2, tw * local[ti.long()], ti)
    _poison_allocator()
    with vllm_loader.override_config(schedule):
        out = fm.fused_experts_impl(x, w1[local].contiguous(),
                                    w2[local].contiguous(), tw, ti,
                                    global_num_experts=E,
                                    expert_map=expert_map)
    check(out, ref, torch.float32)


@pytest.mark.prefill_kernel
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("M,H,N,E,topk", SHAPES)
@pytest.mark.parametrize("schedule", [
    pytest.param({"TAIL_BLOCK_SIZE_M": 16}, id="tail16"),
    pytest.param({"PERSISTENT": 1}, id="persistent"),
    pytest.param({"PERSISTENT": 1, "TAIL_BLOCK_SIZE_M": 16},
                 id="persistent-tail16"),
])
def test_prefill_kernel_matches_reference(fm, M, H, N, E, topk, dtype,
                                          schedule):
    # Random top-k routing; H=96 and 64 with BLOCK_SIZE_K 64: K not a
    # multiple of the tile in one GEMM (masked K loop, EVEN_K false) and a
    # multiple in another; N=48 leaves a partial column block.
    inputs = make_inputs(M, H, N, E, topk, dtype, seed=22)
    config = dict(_prefill(32, 32, 64, 0), **schedule)
    check(run_patched(fm, inputs, config), torch_moe_reference(*inputs),
          dtype)


@pytest.mark.prefill_kernel
def test_persistent_walks_every_tile_once(fm, monkeypatch):
    # The interpreter's persistent launch has 3 programs (a GPU's: one per
    # compute unit); each walks tiles program id, + 3, ... in the grouped
    # order, over the aligned blocks only. Both GEMMs have 2 column blocks
    # of 32 and the seven blocks of PREFILL_COUNTS at BLOCK_SIZE_M 32.
    assert fm._persistent_programs(torch.device("cpu")) == 3
    spy = TileSpy(fm, monkeypatch)
    inputs = routed_inputs(PREFILL_COUNTS, 64, 32, torch.float16, seed=27)
    config = dict(_prefill(32, 32, 32, 0, group=4), PERSISTENT=1)
    check(run_patched(fm, inputs, config), torch_moe_reference(*inputs),
          torch.float16)
    blocks = [(0, 0), (32, 0), (64, 1), (96, 2), (128, 3), (160, 3), (192, 5)]
    assert sorted(spy.calls) == sorted(
        [(row, expert, 32, 0) for row, expert in blocks] * 4)


@pytest.mark.prefill_kernel
def test_persistent_walk_carries_short_blocks(fm, monkeypatch):
    # PERSISTENT with TAIL_BLOCK_SIZE_M: the walk visits every aligned
    # block, and runs exactly the tiles of the one-program-a-tile grid
    # (PREFILL_TILES): expert 0's short block is carried by its full block,
    # expert 1's short block alone is one 16-row tile.
    spy = TileSpy(fm, monkeypatch)
    inputs = routed_inputs(PREFILL_COUNTS, 64, 32, torch.float16, seed=28)
    config = dict(_prefill(32, 32, 32, 16, group=4), PERSISTENT=1)
    check(run_patched(fm, inputs, config), torch_moe_reference(*inputs),
          torch.float16)
    assert sorted(spy.calls) == sorted(list(PREFILL_TILES) * 4)


@pytest.mark.prefill_kernel
def test_prefill_stage_mixes_kernels_and_block_sizes(fm):
    # w1 on the prefill kernel at BLOCK_SIZE_M 64 (tail 32), w2 on
    # fused_moe_kernel at 16 with split-K: two alignments, two kernels.
    inputs = routed_inputs([70, 5, 33, 64], 96, 48, torch.float16, seed=23)
    cfg = {"stage1": _prefill(64, 32, 32, 32),
           "stage2": dict(SMALL, SPLIT_K=2)}
    check(run_patched(fm, inputs, cfg), torch_moe_reference(*inputs),
          torch.float16)
    cfg = {"stage1": dict(LARGE_M), "stage2": _prefill(64, 64, 16, 16)}
    check(run_patched(fm, inputs, cfg), torch_moe_reference(*inputs),
          torch.float16)


@pytest.mark.prefill_kernel
@pytest.mark.parametrize("config,message", [
    (_prefill(32, 32, 32, 32), "TAIL_BLOCK_SIZE_M must be 0 or a power of "
     "two from 16 to BLOCK_SIZE_M / 2, not 32 (BLOCK_SIZE_M 32)"),
    (_prefill(64, 32, 32, 24), "not 24 (BLOCK_SIZE_M 64)"),
    (_prefill(64, 32, 32, 8), "not 8 (BLOCK_SIZE_M 64)"),
    (dict(_prefill(64, 32, 32, 16), SPLIT_K=2),
     "a fused MoE config cannot combine SPLIT_K > 1 with TAIL_BLOCK_SIZE_M "
     "or PERSISTENT"),
    ({**SMALL, "PERSISTENT": 2}, "PERSISTENT must be 0 or 1, not 2"),
])
def test_prefill_key_is_checked(fm, config, message):
    inputs = make_inputs(5, 64, 32, 16, 8, torch.float16, seed=24)
    with pytest.raises(ValueError, match=re.escape(message)):
        run_patched(fm, inputs, config)


def _invoke(fm, A, B, C, topk_weights, topk_ids, config, mul_routed_weight,
            top_k):
    """One GEMM through the tree's invoke_fused_moe_kernel, by name (its
    parameters differ between vLLM releases), unquantised."""
    sorted_ids, expert_ids, padded = fm.moe_align_block_size(
        topk_ids, config["BLOCK_SIZE_M"], B.shape[0])
    values = dict(A=A, B=B, C=C, A_scale=None, B_scale=None, B_zp=None,
                  topk_weights=topk_weights, topk_ids=topk_ids,
                  sorted_token_ids=sorted_ids, expert_ids=expert_ids,
                  num_tokens_post_padded=padded,
                  mul_routed_weight=mul_routed_weight, top_k=top_k,
                  config=dict(config), compute_type=fm.tl.float16,
                  use_fp8_w8a8=False, use_int8_w8a8=False,
                  use_int8_w8a16=False, use_int4_w4a16=False,
                  per_channel_quant=False, block_shape=None)
    params = inspect.signature(fm.invoke_fused_moe_kernel).parameters
    fm.invoke_fused_moe_kernel(
        **{k: v for k, v in values.items() if k in params})


def _sparse_rows(path, rows, row_stride, width, dtype):
    """A (rows, width) view whose row r starts at element r * row_stride
    of a sparse file: far past 2^31 elements with only the rows' pages
    ever touched."""
    numel = (rows - 1) * row_stride + width
    with open(path, "wb") as f:
        f.truncate(numel * torch.finfo(dtype).bits // 8)
    storage = torch.from_file(str(path), shared=True, size=numel, dtype=dtype)
    return storage.as_strided((rows, width), (row_stride, 1))


@pytest.mark.parametrize("config", [
    pytest.param(dict(SMALL), id="fused_moe_kernel"),
    pytest.param(_prefill(32, 32, 32, 16), id="prefill",
                 marks=pytest.mark.prefill_kernel),
    pytest.param(dict(SMALL, PERSISTENT=1), id="persistent",
                 marks=pytest.mark.prefill_kernel),
    pytest.param(dict(_prefill(32, 32, 32, 16), PERSISTENT=1),
                 id="persistent-tail", marks=pytest.mark.prefill_kernel),
])
def test_rows_past_2_31_elements(fm, tmp_path, config):
    # The w2 GEMM's A (rows of silu_and_mul output) and C (the (M, topk, H)
    # output cache) with a row stride of 2^28 elements: rows 8 and later of
    # both start past 2^31, as in a batch of 37450+ DeepSeek-R1 tokens at
    # TP8 (docs/c550-fused-moe-h200.md). Only 64-bit row offsets reach them;
    # 32-bit ones wrap to another address.
    M, topk, H, N, E = 5, 3, 64, 32, 4
    stride = 2**28
    assert (M * topk - 1) * stride > 2**31
    _, _, w2, topk_weights, topk_ids = make_inputs(M, H, N, E, topk,
                                                   torch.float16, seed=25)
    A = _sparse_rows(tmp_path / "a", M * topk, stride, N, torch.float16)
    rows = torch.randn(M * topk, N, generator=torch.Generator().manual_seed(
        26)).to(torch.float16)
    A.copy_(rows)
    C = _sparse_rows(tmp_path / "c", M * topk, stride, H, torch.float16)
    C.fill_(float("nan"))
    C3 = C.as_strided((M, topk, H), (topk * stride, stride, 1))
    _invoke(fm, A, w2, C3, topk_weights, topk_ids, config, True, 1)
    ids = topk_ids.flatten().long()
    ref = torch.einsum("rn,rhn->rh", rows.float(), w2[ids].float())
    ref *= topk_weights.flatten()[:, None]
    torch.testing.assert_close(C.float(), ref, **TOL[torch.float16])
