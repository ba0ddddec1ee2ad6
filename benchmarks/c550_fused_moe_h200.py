#!/usr/bin/env python3
"""Benchmark the C550 fused-MoE series on an H200 (bf16, DeepSeek-R1 TP8).

Shapes: E=256, top-8, hidden 7168, N=256 per rank (w1 [256, 512, 7168],
w2 [256, 7168, 256]); M in 1, 4, 16, 64, 256, 1024, 4096; routing is
uniform random (distinct experts per token), same seed for every run.

What is timed: the two Triton GEMMs of fused_experts_impl, i.e. the two
invoke_fused_moe_kernel calls (w1: hidden -> 2N, w2 with routed weights:
N -> hidden), called exactly as fused_experts_impl calls them. The routing
alignment (moe_align_block_size), silu_and_mul and moe_sum are done once
outside the timed region. With SPLIT_K > 1 the timed region includes what
invoke_fused_moe_kernel adds for it (fp32 partial buffer, the sum over
splits and the cast into the output). Each measured region is captured in
a CUDA graph (no Python launch overhead, as in vLLM's decode graphs) and
timed with triton.testing.do_bench (median; L2 flushed before each replay).

Parts:
 1. patched vs unpatched tree, same config (the tree's default config, no
    new keys), per M: ratio of times (expected 1.00: the int64 change only).
 2. M <= 64: per stage, SPLIT_K in {1, 2, 4, 8} on (a) the default tiles and
    (b) a few other small-M tiles; best vs none (default, no SPLIT_K).
 3. Memory bandwidth for M <= 64: bytes of the weights of the experts
    actually selected (unique experts) / kernel time, against 4.8 TB/s.

Each tree runs in its own worker process (vLLM registers torch ops under
fixed names, so one tree per process).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "metax_c550"))
import vllm_loader  # noqa: E402
from c550_fused_moe_table import upstream_default  # noqa: E402  (beside this file)

E, TOPK, HIDDEN, N = 256, 8, 7168, 256
MS = [1, 4, 16, 64, 256, 1024, 4096]
SMALL_MS = [m for m in MS if m <= 64]
SPLITS = [1, 2, 4, 8]
PEAK_BW = 4.8e12
EXPERT_BYTES = {1: 2 * N * HIDDEN * 2, 2: HIDDEN * N * 2}  # per stage, bf16
SMALL_TILES = [
    # (BLOCK_SIZE_N, BLOCK_SIZE_K, num_warps, num_stages)
    (64, 128, 4, 4),
    (128, 128, 4, 3),
    (32, 256, 4, 3),
]


def setup(fm, M, seed=1234):
    g = torch.Generator(device="cuda").manual_seed(0)
    w1 = torch.randn(E, 2 * N, HIDDEN, device="cuda", generator=g,
                     dtype=torch.bfloat16) * HIDDEN**-0.5
    w2 = torch.randn(E, HIDDEN, N, device="cuda", generator=g,
                     dtype=torch.bfloat16) * N**-0.5
    g.manual_seed(seed + M)
    x = torch.randn(M, HIDDEN, device="cuda", generator=g,
                    dtype=torch.bfloat16)
    tw, ti = torch.topk(torch.rand(M, E, device="cuda", generator=g), TOPK)
    return dict(x=x, w1=w1, w2=w2, tw=(tw / tw.sum(-1, keepdim=True)).float(),
                ti=ti.to(torch.int32))


def stage_fn(fm, d, stage, cfg):
    """A closure running one stage's invoke_fused_moe_kernel like
    fused_experts_impl does (alignment and inputs prepared here)."""
    M = d["x"].shape[0]
    sorted_ids, expert_ids, ntp = fm.moe_align_block_size(
        d["ti"], cfg["BLOCK_SIZE_M"], E)
    if stage == 1:
        A, B = d["x"], d["w1"]
        C = torch.empty(M, TOPK, 2 * N, device="cuda", dtype=torch.bfloat16)
        mul, top_k = False, TOPK
    else:
        A = torch.randn(M * TOPK, N, device="cuda", dtype=torch.bfloat16)
        B = d["w2"]
        C = torch.empty(M, TOPK, HIDDEN, device="cuda", dtype=torch.bfloat16)
        mul, top_k = True, 1

    def fn():
        fm.invoke_fused_moe_kernel(A, B, C, None, None, None, d["tw"],
                                   d["ti"], sorted_ids, expert_ids, ntp, mul,
                                   top_k, cfg, compute_type=fm.tl.bfloat16,
                                   use_fp8_w8a8=False, use_int8_w8a16=False,
                                   use_int4_w4a16=False, block_shape=None)
    return fn


def time_us(fn):
    import triton
    fn()  # compile
    torch.cuda.synchronize()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        fn()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    ms = triton.testing.do_bench(graph.replay, warmup=10, rep=60,
                                 return_mode="median")
    return ms * 1e3


def worker(tree, out_path, sweep):
    fm = vllm_loader.load_fused_moe(tree)
    res = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(),
           "default": {}, "sweep": {}, "unique_experts": {}}
    import triton
    res["triton"] = triton.__version__
    for M in MS:
        d = setup(fm, M)
        # vLLM 0.7.2's own default, which both trees used when this
        # comparison was made: the same config on both sides.
        cfg = upstream_default(M, E)
        t1 = time_us(stage_fn(fm, d, 1, cfg))
        t2 = time_us(stage_fn(fm, d, 2, cfg))
        res["default"][M] = {"cfg": cfg, "t1": t1, "t2": t2}
        res["unique_experts"][M] = int(d["ti"].unique().numel())
        print(f"M={M} default {cfg}: w1 {t1:.1f}us w2 {t2:.1f}us",
              flush=True)
        if not sweep or M > 64:
            continue
        rows = []
        tiles = [(cfg["BLOCK_SIZE_N"], cfg["BLOCK_SIZE_K"], None, None)]
        tiles += SMALL_TILES
        for stage in (1, 2):
            for bn, bk, nw, ns in tiles:
                for sk in SPLITS:
                    c = dict(cfg, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk)
                    if nw:
                        c.update(num_warps=nw, num_stages=ns)
                    if sk > 1:
                        c["SPLIT_K"] = sk
                    t = time_us(stage_fn(fm, d, stage, c))
                    rows.append({"stage": stage, "cfg": c, "us": t,
                                 "default_tiles": nw is None})
        res["sweep"][M] = rows
        torch.cuda.empty_cache()
    Path(out_path).write_text(json.dumps(res))


def report(base, patched):
    print(f"\nGPU {patched['gpu']}, torch {patched['torch']}, "
          f"triton {patched['triton']}")
    print("\n## 1. patched vs unpatched, same (default) config; "
          "w1+w2 GEMM time, us")
    print("| M | config (BM,BN,BK,GROUP) | unpatched | patched | "
          "patched/unpatched |")
    print("|---|---|---|---|---|")
    for M in MS:
        b, p = base["default"][str(M)], patched["default"][str(M)]
        c = p["cfg"]
        tb, tp = b["t1"] + b["t2"], p["t1"] + p["t2"]
        print(f"| {M} | {c['BLOCK_SIZE_M']},{c['BLOCK_SIZE_N']},"
              f"{c['BLOCK_SIZE_K']},{c['GROUP_SIZE_M']} | {tb:.1f} | "
              f"{tp:.1f} | {tp / tb:.3f} |")
    print("\n## 2. split-K, M <= 64 (patched tree), us per stage")
    print("| M | stage | default (no SPLIT_K) | best SPLIT_K, default tiles |"
          " best of sweep (tiles, SPLIT_K) | speed-up vs default |")
    print("|---|---|---|---|---|---|")
    best_total = {}
    for M in SMALL_MS:
        rows = patched["sweep"][str(M)]
        d = patched["default"][str(M)]
        tot = 0.0
        for stage in (1, 2):
            t0 = d[f"t{stage}"]
            st = [r for r in rows if r["stage"] == stage]
            bd = min((r for r in st if r["default_tiles"]),
                     key=lambda r: r["us"])
            ba = min(st, key=lambda r: r["us"])
            tot += ba["us"]
            c = ba["cfg"]
            print(f"| {M} | w{stage} | {t0:.1f} | {bd['us']:.1f} "
                  f"(SPLIT_K={bd['cfg'].get('SPLIT_K', 1)}) | {ba['us']:.1f} "
                  f"(BN{c['BLOCK_SIZE_N']} BK{c['BLOCK_SIZE_K']} "
                  f"w{c.get('num_warps', '-')} s{c.get('num_stages', '-')} "
                  f"SK{c.get('SPLIT_K', 1)}) | {t0 / ba['us']:.2f}x |")
        best_total[M] = tot
    print("\n## 3. achieved memory bandwidth, M <= 64 (weights of the "
          "unique selected experts / time; peak 4.8 TB/s)")
    print("| M | unique experts | MB read (w1+w2) | default: us, TB/s, "
          "% peak | best sweep: us, TB/s, % peak |")
    print("|---|---|---|---|---|")
    for M in SMALL_MS:
        u = patched["unique_experts"][str(M)]
        nbytes = u * (EXPERT_BYTES[1] + EXPERT_BYTES[2])
        d = patched["default"][str(M)]
        t0 = d["t1"] + d["t2"]
        tb = best_total[M]
        bw0, bwb = nbytes / (t0 * 1e-6), nbytes / (tb * 1e-6)
        print(f"| {M} | {u} | {nbytes / 1e6:.0f} | {t0:.1f}, "
              f"{bw0 / 1e12:.2f}, {100 * bw0 / PEAK_BW:.0f}% | {tb:.1f}, "
              f"{bwb / 1e12:.2f}, {100 * bwb / PEAK_BW:.0f}% |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True)
    ap.add_argument("--base-tree", required=True)
    ap.add_argument("--worker", choices=["base", "patched"])
    ap.add_argument("--out")
    ap.add_argument("--json-dir", help="keep the raw results here")
    args = ap.parse_args()
    if args.worker:
        tree = args.tree if args.worker == "patched" else args.base_tree
        worker(tree, args.out, sweep=args.worker == "patched")
        return
    outdir = Path(args.json_dir or tempfile.mkdtemp())
    outdir.mkdir(parents=True, exist_ok=True)
    results = {}
    for which in ("base", "patched"):
        out = outdir / f"bench_{which}.json"
        subprocess.run([
            sys.executable, __file__, "--tree", args.tree, "--base-tree",
            args.base_tree, "--worker", which, "--out", str(out)
        ], check=True)
        results[which] = json.loads(out.read_text())
    report(results["base"], results["patched"])


if __name__ == "__main__":
    main()
