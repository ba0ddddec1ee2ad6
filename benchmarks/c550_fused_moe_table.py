#!/usr/bin/env python3
"""The fused-MoE table for one shape on a GPU: default, tuned, read floor.

Per batch size M it times the two expert GEMMs of fused_experts_impl (the
two invoke_fused_moe_kernel calls, w1 then w2) captured together in one
CUDA graph, L2 emptied before every replay by reading a 1 GiB buffer,
median of --reps replays (moe_series_tuner.time_graph: the tuner's own
method), for:

  upstream default   vLLM 0.7.2's get_default_config (no tuned file)
  series default     the tree's get_default_config (the series' rules)
  tuned upstream     the best plain config of the tuner's search, one
                     config for both GEMMs (the top level of the entry)
  tuned series       the tuned entry with its stage1/stage2 configs
  read floor         torch.sum over the weights of the experts the
                     batch selects, copied into one buffer: one kernel
                     that only reads what the two GEMMs must read

The tree is loaded with tests/metax_c550/vllm_loader.py (no vLLM build
needed); routing is uniform, distinct experts per token, as in the tuner.
Usage (GPU machine, from the repository root):

  python3 benchmarks/c550_fused_moe_table.py --tree TREE \
      --tuned E=256,N=256,device_name=NVIDIA_H200.json \
      --experts 256 --topk 8 --intermediate 256 --hidden 7168
"""
import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "metax_c550"))


def upstream_default(M: int, E: int) -> dict:
    """vLLM 0.7.2's get_default_config for unquantised weights."""
    if M <= E:
        return {"BLOCK_SIZE_M": 16, "BLOCK_SIZE_N": 32, "BLOCK_SIZE_K": 64,
                "GROUP_SIZE_M": 1}
    return {"BLOCK_SIZE_M": 64, "BLOCK_SIZE_N": 64, "BLOCK_SIZE_K": 32,
            "GROUP_SIZE_M": 8}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True)
    ap.add_argument("--tuned", help="the tuner's JSON for this shape")
    ap.add_argument("--experts", type=int, required=True)
    ap.add_argument("--topk", type=int, required=True)
    ap.add_argument("--intermediate", type=int, required=True,
                    help="per rank: w2.shape[2]")
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--batch-sizes", type=int, nargs="+",
                    default=[1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 256,
                             512, 1024, 1536, 2048, 3072, 4096])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--flush-mib", type=int, default=1024)
    ap.add_argument("--json", help="write the rows here too")
    args = ap.parse_args()

    import vllm_loader
    fm = vllm_loader.load_fused_moe(args.tree)
    sys.path.insert(0, str(Path(args.tree) / "benchmarks" / "kernels"))
    import moe_series_tuner as mst

    torch.set_default_device("cuda")
    shape = mst.Shape(args.experts, args.topk, args.intermediate,
                      args.hidden, torch.bfloat16)
    weights = mst.make_weights(shape, seed=0)
    flush = torch.empty(args.flush_mib * 2**20 // 4,
                        dtype=torch.float32).uniform_()
    tuned = {}
    if args.tuned:
        tuned = {int(k): v for k, v in
                 json.loads(Path(args.tuned).read_text()).items()}

    def time_entry(b1, b2, config):
        c1, c2 = fm.get_stage_configs(config)
        b1.run(c1)
        b2.run(c2)
        return mst.time_graph(lambda: (b1.run(c1), b2.run(c2)), flush,
                              args.reps)

    rows = []
    print(f"GPU {torch.cuda.get_device_name(0)}, shape E={shape.E} "
          f"topk={shape.topk} N={shape.N} K={shape.K} bf16; us, median of "
          f"{args.reps} graph replays, {args.flush_mib} MiB read before each")
    print("| M | upstream default | series default | tuned upstream | "
          "tuned series | read floor | series default / tuned series |")
    print("|---|---|---|---|---|---|---|")
    for M in args.batch_sizes:
        b1 = mst.StageBench(shape, M, "stage1", weights, seed=0)
        b2 = mst.StageBench(shape, M, "stage2", weights, seed=0)
        row = {"M": M}
        row["upstream_default"] = time_entry(
            b1, b2, upstream_default(M, shape.E))
        default = fm.get_default_config(M, shape.E, shape.N, shape.K,
                                        shape.topk, None, False)
        row["series_default"] = time_entry(b1, b2, default)
        row["series_default_config"] = default
        if tuned:
            entry = tuned[min(tuned, key=lambda m: abs(m - M))]
            top = {k: v for k, v in entry.items()
                   if k not in ("stage1", "stage2")}
            row["tuned_upstream"] = time_entry(b1, b2, top)
            row["tuned_series"] = time_entry(b1, b2, entry)
        used = b1.topk_ids.unique().long()
        buf = torch.cat([weights["w1"][used].flatten(),
                         weights["w2"][used].flatten()])
        row["read_floor"] = mst.time_graph(buf.sum, flush, args.reps)
        del buf
        rows.append(row)
        t_up = f"{row['tuned_upstream']:.1f}" if tuned else "-"
        t_se = f"{row['tuned_series']:.1f}" if tuned else "-"
        ratio = (f"{row['series_default'] / row['tuned_series']:.2f}"
                 if tuned else "-")
        print(f"| {M} | {row['upstream_default']:.1f} | "
              f"{row['series_default']:.1f} | {t_up} | {t_se} | "
              f"{row['read_floor']:.1f} | {ratio} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
