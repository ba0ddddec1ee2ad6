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
(PATCHTOOL_C550_TREE / PATCHTOOL_VLLM_BASE_TREE point them elsewhere).
"""
import os

# Must be set before triton is imported anywhere in this process.
os.environ.setdefault("TRITON_INTERPRET", "1")

import inspect
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
    pytest.param(12, 96, 48, 20, 4, id="M12-H96-N48-E20-top4"),
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
    (1024, R1_TP8, _tile(64, 128, 64, 8, 3), _tile(64, 128, 64, 8, 3)),
    (4096, R1_TP8, _tile(128, 128, 64, 8, 3), _tile(128, 128, 64, 8, 3)),
    (1, MIXTRAL_TP8, _tile(16, 32, 256, 4, 3), _tile(16, 32, 256, 4, 3)),
    (64, MIXTRAL_TP8, _tile(32, 128, 128, 4, 4), _tile(32, 128, 128, 4, 4)),
]


@pytest.mark.parametrize("M,shape,stage1,stage2", DEFAULT_RULES)
def test_default_rules(fm, M, shape, stage1, stage2):
    E, N, K, topk = shape
    cfg = fm.get_default_config(M, E, N, K, topk, None, False)
    assert fm.get_stage_configs(cfg) == (stage1, stage2)
    # One alignment serves both GEMMs; the top level is the w1 tile, and
    # "stage2" appears only when the w2 tile differs.
    assert set(cfg) - set(stage1) == ({"stage2"} if stage2 != stage1 else
                                      set())


def test_default_rules_leave_fp32_to_upstream(fm):
    # The tiles are sized for 2-byte elements: fp32 keeps vLLM's default.
    assert fm.get_default_config(1, 256, 256, 7168, 8, "float32", False) == {
        "BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64,
        "GROUP_SIZE_M": 1}


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


def test_stage_config_resolution(fm):
    plain = dict(SMALL)
    s1, s2 = fm.get_stage_configs(plain)
    assert s1 is plain and s2 is plain
    s1, s2 = fm.get_stage_configs(dict(SMALL, stage2=LARGE_M))
    assert s1 == SMALL and s2 == LARGE_M
    with pytest.raises(ValueError):
        fm.get_stage_configs({"stage1": SMALL})


def test_split_k_one_is_upstream_launch(fm):
    # SPLIT_K=1 must take the unsplit launch: bit-identical to no key.
    inputs = make_inputs(5, 64, 32, 16, 8, torch.float16, seed=3)
    a = run_patched(fm, inputs, dict(SMALL))
    b = run_patched(fm, inputs, dict(SMALL, SPLIT_K=1))
    assert torch.equal(a, b)


def test_no_new_keys_bit_identical_to_base(fm, vllm_base_tree, tmp_path):
    # The unpatched tree runs in a subprocess (one vllm per process) on
    # the same saved inputs; with no new keys the outputs must be equal
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
