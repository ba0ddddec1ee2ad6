#!/usr/bin/env python3
"""GPU correctness check of the C550 fused-MoE series (bf16, DeepSeek-R1 TP8).

Runs the patched tree's fused_experts_impl (real Triton kernel and
invoke_fused_moe_kernel, loaded by tests/metax_c550/vllm_loader.py) at
E=256, top-8, hidden 7168, N=256 per rank (w1 [256, 512, 7168], w2
[256, 7168, 256]) against a plain torch fp32 reference, for
M in 1, 4, 16, 64, 256, 1024, 4096 with:
  * the tree's default config (the series' rules: a w1 tile, and a w2
    tile under "stage2" where it differs),
  * SPLIT_K=4 on both stages (M <= 256),
  * stage1/stage2 sub-configs with different BLOCK_SIZE_M and split-K.
vLLM's compiled ops do not exist here; the loader's pure-torch stand-ins
replace moe_align_block_size / silu_and_mul / moe_sum (as in the CPU test).

and for M >= 512 the prefill kernel (TAIL_BLOCK_SIZE_M: an expert's
short last block carried by the block before it, or a small tile), with
several tiles per GEMM; then Mixtral 8x7B TP8 (E=8, top-2, hidden 4096,
N=1792) at M = 1 ... 4096 with its default and prefill configs.

Then one case past 2^31 elements: M=40960 tokens in one chunk, so the w2
output cache (M, 8, 7168) holds 2.35e9 elements and the rows of tokens
>= 37450 start beyond 2^31. Only 64-bit offsets get those rows right. With
--base-tree the same case is run on the unpatched tree in a subprocess.

Tolerance (bf16): the kernel rounds to bf16 (8 bits of mantissa) after the
w1 GEMM, after silu_and_mul and after each expert's w2 GEMM; outputs are
O(0.5). We require max |out - ref| <= 0.05 + 0.05 * |ref| elementwise and
a relative Frobenius error ||out - ref|| / ||ref|| <= 1e-2 (a wrong block
or a dropped expert gives errors of order 1 and > 0.1 respectively).
"""
import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "metax_c550"))
import vllm_loader  # noqa: E402

E, TOPK, HIDDEN, N = 256, 8, 7168, 256
MS = [1, 4, 16, 64, 256, 1024, 4096]
ATOL, RTOL, REL_FRO = 0.05, 0.05, 1e-2
BIG_M = 40960


def make_weights(seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    w1 = torch.randn(E, 2 * N, HIDDEN, device="cuda", generator=g,
                     dtype=torch.bfloat16) * HIDDEN**-0.5
    w2 = torch.randn(E, HIDDEN, N, device="cuda", generator=g,
                     dtype=torch.bfloat16) * N**-0.5
    return w1, w2


def make_tokens(M, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(M, HIDDEN, device="cuda", generator=g,
                    dtype=torch.bfloat16)
    scores = torch.rand(M, E, device="cuda", generator=g)
    topk_weights, topk_ids = torch.topk(scores, TOPK, dim=-1)
    topk_weights = topk_weights / topk_weights.sum(-1, keepdim=True)
    return x, topk_weights.float(), topk_ids.to(torch.int32)


def reference(x, w1, w2, topk_weights, topk_ids, rows=None):
    """fp32 torch reference; `rows` restricts it to some tokens."""
    if rows is not None:
        x, topk_weights, topk_ids = x[rows], topk_weights[rows], topk_ids[
            rows]
    out = torch.zeros(x.shape[0], HIDDEN, device=x.device)
    xf = x.float()
    for e in topk_ids.unique().tolist():
        tok, slot = torch.nonzero(topk_ids == e, as_tuple=True)
        h = xf[tok] @ w1[e].float().T
        h = torch.nn.functional.silu(h[:, :N]) * h[:, N:]
        out.index_add_(0, tok,
                       (h @ w2[e].float().T) * topk_weights[tok, slot, None])
    return out


def compare(out, ref):
    diff = (out.float() - ref).abs()
    bad = (diff > ATOL + RTOL * ref.abs()).sum().item()
    rel = ((out.float() - ref).norm() / ref.norm()).item()
    ok = bad == 0 and rel <= REL_FRO
    return ok, diff.max().item(), rel, bad


def run(fm, config, x, w1, w2, tw, ti):
    with vllm_loader.override_config(config):
        out = fm.fused_experts_impl(x, w1, w2, tw, ti)
    torch.cuda.synchronize()
    return out


def check_shapes(fm):
    w1, w2 = make_weights()
    failures = 0
    print(f"{'M':>5} {'config':<28} {'max|err|':>9} {'rel_fro':>9} "
          f"{'#bad':>5}  result")
    for M in MS:
        x, tw, ti = make_tokens(M, seed=M)
        ref = reference(x, w1, w2, tw, ti)
        default = fm.get_default_config(M, E, N, HIDDEN, TOPK, None, False)
        cases = [("tree default", default)]
        if M <= 256:
            cases.append(("SPLIT_K=4", dict(default, SPLIT_K=4)))
        cases.append(("stage1 BM16/SK2, stage2 BM64", dict(
            default,
            stage1={"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 64,
                    "BLOCK_SIZE_K": 128, "GROUP_SIZE_M": 1, "SPLIT_K": 2},
            stage2={"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 128,
                    "BLOCK_SIZE_K": 64, "GROUP_SIZE_M": 8})))
        if M >= 512:
            cases += PREFILL_CASES
        for name, cfg in cases:
            out = run(fm, cfg, x, w1, w2, tw, ti)
            ok, mx, rel, bad = compare(out, ref)
            failures += not ok
            print(f"{M:>5} {name:<28} {mx:>9.2e} {rel:>9.2e} {bad:>5}  "
                  f"{'PASS' if ok else 'FAIL'}", flush=True)
    return failures


def _prefill(bm, bn, bk, warps, stages, tail, **stage2):
    config = {"BLOCK_SIZE_M": bm, "BLOCK_SIZE_N": bn, "BLOCK_SIZE_K": bk,
              "GROUP_SIZE_M": 1, "num_warps": warps, "num_stages": stages,
              "TAIL_BLOCK_SIZE_M": tail}
    if stage2:
        config["stage2"] = dict(config, **stage2)
    return config


PREFILL_CASES = [
    ("prefill BM128 tail32", _prefill(128, 256, 64, 8, 3, 32,
                                      BLOCK_SIZE_N=128)),
    ("prefill BM128 tail64", _prefill(128, 128, 64, 8, 3, 64)),
    ("prefill BM64 tail16/32", _prefill(64, 128, 128, 4, 3, 16,
                                        TAIL_BLOCK_SIZE_M=32)),
    ("prefill BM128 tail0", _prefill(128, 128, 64, 4, 4, 0)),
    ("persistent BM128", dict(_prefill(128, 128, 64, 8, 3, 0),
                              PERSISTENT=1)),
    ("persistent w2, carry w1", _prefill(64, 128, 64, 4, 3, 32,
                                          TAIL_BLOCK_SIZE_M=0, PERSISTENT=1)),
    ("persistent carrying BM128", dict(_prefill(128, 256, 64, 8, 3, 64),
                                       PERSISTENT=1)),
    ("persistent carrying BM256", dict(_prefill(256, 128, 64, 8, 3, 64),
                                       PERSISTENT=1)),
]
MIXTRAL = (8, 2, 4096, 1792)  # E, top-k, hidden, N per rank


def check_mixtral(fm):
    """The default and prefill configs at Mixtral's shape (few experts,
    many rows each: several full blocks per expert and a short one)."""
    global E, TOPK, HIDDEN, N
    saved = E, TOPK, HIDDEN, N
    E, TOPK, HIDDEN, N = MIXTRAL
    try:
        w1, w2 = make_weights(seed=1)
        failures = 0
        for M in MS:
            x, tw, ti = make_tokens(M, seed=100 + M)
            ref = reference(x, w1, w2, tw, ti)
            cases = [("mixtral default", fm.get_default_config(
                M, E, N, HIDDEN, TOPK, None, False))]
            if M >= 512:
                cases += [("mixtral " + n, c) for n, c in PREFILL_CASES]
            for name, cfg in cases:
                out = run(fm, cfg, x, w1, w2, tw, ti)
                ok, mx, rel, bad = compare(out, ref)
                failures += not ok
                print(f"{M:>5} {name:<28} {mx:>9.2e} {rel:>9.2e} {bad:>5}  "
                      f"{'PASS' if ok else 'FAIL'}", flush=True)
        return failures
    finally:
        E, TOPK, HIDDEN, N = saved


def check_big(fm, label, config=None):
    """M=40960 in one chunk: rows of the w2 output cache pass 2^31."""
    os.environ["VLLM_FUSED_MOE_CHUNK_SIZE"] = str(2 * BIG_M)
    w1, w2 = make_weights()
    x, tw, ti = make_tokens(BIG_M, seed=7)
    numel = BIG_M * TOPK * HIDDEN
    first_big = -(-2**31 // (TOPK * HIDDEN))
    print(f"[{label}] M={BIG_M}: w2 output cache numel={numel} "
          f"(2^31={2**31}); tokens >= {first_big} start past 2^31",
          flush=True)
    cfg = config or fm.get_default_config(BIG_M, E, N, HIDDEN, TOPK, None,
                                          False)
    print(f"[{label}] config {cfg}", flush=True)
    t0 = time.time()
    out = run(fm, cfg, x, w1, w2, tw, ti)
    print(f"[{label}] fused_experts_impl done in {time.time() - t0:.1f}s",
          flush=True)
    low = torch.arange(0, 256, device="cuda")
    high = torch.arange(BIG_M - 512, BIG_M, device="cuda")
    okl, mxl, rell, _ = compare(out[low], reference(x, w1, w2, tw, ti, low))
    okh, mxh, relh, badh = compare(out[high],
                                   reference(x, w1, w2, tw, ti, high))
    print(f"[{label}] tokens 0..255 (below 2^31): max|err|={mxl:.2e} "
          f"rel_fro={rell:.2e} {'PASS' if okl else 'FAIL'}")
    print(f"[{label}] tokens {BIG_M - 512}..{BIG_M - 1} (past 2^31): "
          f"max|err|={mxh:.2e} rel_fro={relh:.2e} bad={badh} "
          f"{'PASS' if okh else 'FAIL'}", flush=True)
    return okl and okh


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True, help="patched vLLM tree")
    ap.add_argument("--base-tree", help="unpatched vLLM tree (optional)")
    ap.add_argument("--big-only", action="store_true",
                    help="only the > 2^31 case (used for the base tree)")
    ap.add_argument("--label", default="patched")
    args = ap.parse_args()

    fm = vllm_loader.load_fused_moe(args.tree)
    print(f"torch {torch.__version__}, GPU {torch.cuda.get_device_name()}, "
          f"tree {args.tree}", flush=True)
    if args.big_only:
        sys.exit(0 if check_big(fm, args.label) else 1)

    failures = check_shapes(fm)
    failures += check_mixtral(fm)
    big_ok = check_big(fm, args.label)
    if hasattr(fm, "fused_moe_prefill_kernel"):
        big_ok &= check_big(fm, args.label + ", prefill",
                            PREFILL_CASES[0][1])
        big_ok &= check_big(fm, args.label + ", persistent",
                            PREFILL_CASES[4][1])
        big_ok &= check_big(fm, args.label + ", persistent carrying",
                            PREFILL_CASES[6][1])
    print(f"shape checks: {failures} failure(s); >2^31 case: "
          f"{'PASS' if big_ok else 'FAIL'}", flush=True)
    if args.base_tree:
        del fm
        torch.cuda.empty_cache()
        proc = subprocess.run([
            sys.executable, __file__, "--tree", args.base_tree,
            "--big-only", "--label", "unpatched"
        ], capture_output=True, text=True, timeout=400)
        lines = [ln for ln in (proc.stdout + proc.stderr).splitlines()
                 if ln.startswith("[unpatched]") or "Error" in ln]
        print("\n".join(lines[-12:]))
        print(f"unpatched >2^31 case: exit code {proc.returncode} "
              f"({'passed' if proc.returncode == 0 else 'failed'})")
    sys.exit(1 if failures or not big_ok else 0)


if __name__ == "__main__":
    main()
