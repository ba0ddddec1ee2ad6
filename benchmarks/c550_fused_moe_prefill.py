#!/usr/bin/env python3
"""The fused-MoE kernel at prefill batch sizes against its floors (issue 24).

For each (shape, M) row it times, each GEMM alone and the two summed (the
clean-L2 method of docs/c550-fused-moe-h200.md: the call captured in a CUDA
graph, 1 GiB read before every replay, median of --reps replays;
moe_series_tuner.time_graph):

  tuned file      the tree's docs/h200-tunings entry (stage1/stage2 split
                  by the tree's get_stage_configs), when --tunings has one
  default         the tree's get_default_config
  best old        the fastest pair of fused_moe_kernel tiles in CANDIDATES
                  (one BLOCK_SIZE_M for both GEMMs, as the tuner pairs them)
  best new        the same with fused_moe_prefill_kernel (the
                  TAIL_BLOCK_SIZE_M or PERSISTENT key) allowed for either
                  GEMM
  grouped_mm      torch._grouped_mm (CUTLASS) on the same routing: rows
                  sorted by expert beforehand, w1 and w2 as column-major
                  views of the same weights
  dense           torch.mm of the same FLOPs (M*topk rows by one (K, 2N)
                  and one (N, K) matrix): the dense floor
  read            torch.sum over a copy of the weights of the experts the
                  batch selects: the read floor

floor = max(read, dense); ratio = time / floor.

Candidates compile first in --compile-workers processes (Triton's compile
is CPU-bound and single-threaded; they share its on-disk cache), so the
timing process finds every kernel compiled. Usage (GPU machine, repository
root, the tree in .gpu_payload/c550):

  python3 benchmarks/c550_fused_moe_prefill.py --tree .gpu_payload/c550 \\
      --out $OUT --rows r1tp8:2048,4096 mixtral:1024
"""
import argparse
import json
import math
import multiprocessing
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "metax_c550"))

SHAPES = {
    # name: (E, topk, N per rank = w2.shape[2], K = hidden)
    "r1tp8": (256, 8, 256, 7168),
    "r1tp4": (256, 8, 512, 7168),
    "mixtral": (8, 2, 1792, 4096),
}
TUNING_FILES = {
    "r1tp8": "E=256,N=256,device_name=NVIDIA_H200.json",
    "r1tp4": "E=256,N=512,device_name=NVIDIA_H200.json",
    "mixtral": "E=8,N=1792,device_name=NVIDIA_H200.json",
}
# (BLOCK_SIZE_M, BLOCK_SIZE_N, BLOCK_SIZE_K, num_warps, num_stages,
#  GROUP_SIZE_M)
TILES = [
    (32, 128, 64, 4, 4, 1), (32, 128, 128, 4, 4, 1), (32, 256, 64, 4, 3, 1),
    (64, 128, 64, 4, 4, 1), (64, 128, 128, 4, 3, 1), (64, 256, 64, 4, 3, 1),
    (64, 256, 64, 8, 3, 1),
    (128, 128, 64, 8, 3, 1), (128, 128, 64, 8, 4, 1), (128, 128, 64, 8, 3, 16),
    (128, 128, 64, 4, 4, 1), (128, 256, 64, 8, 3, 1), (128, 256, 64, 8, 4, 1),
    (128, 256, 64, 8, 3, 16), (128, 128, 128, 8, 3, 1),
    (128, 256, 64, 8, 4, 16), (128, 256, 128, 8, 2, 16),
    (256, 128, 64, 8, 3, 1), (256, 128, 64, 8, 3, 16),
]
TAILS = {32: (16, ), 64: (0, 16, 32), 128: (0, 32, 64), 256: (0, 32, 64)}
COMPILE_M = 512


def tile_config(tile, tail=None):
    bm, bn, bk, warps, stages, group = tile
    config = dict(BLOCK_SIZE_M=bm, BLOCK_SIZE_N=bn, BLOCK_SIZE_K=bk,
                  GROUP_SIZE_M=group, num_warps=warps, num_stages=stages)
    if tail is not None:
        config["TAIL_BLOCK_SIZE_M"] = tail
    return config


def candidates(shape_name, M, extra=()):
    """Old-kernel and prefill-kernel configs worth timing at M: a
    BLOCK_SIZE_M up to twice the rows per expert (as the tuner prunes)."""
    E, topk, _, _ = SHAPES[shape_name]
    rows = M * topk / E
    cap = max(32, 2 * (1 << max(0, math.ceil(math.log2(max(rows, 1))))))
    out = []
    for tile in TILES:
        if tile[0] > cap:
            continue
        out.append(tile_config(tile))
        out += [tile_config(tile, tail) for tail in TAILS[tile[0]]]
        out.append(dict(tile_config(tile), PERSISTENT=1))
        # The persistent walk carrying short blocks (issue 24, second
        # round): 128- and 256-row tiles, where a tail is most padding.
        out += [dict(tile_config(tile, tail), PERSISTENT=1)
                for tail in TAILS[tile[0]] if tail and tile[0] >= 128]
    out += [dict(c) for c in extra if c not in out]
    return out


def load_tree(tree):
    import vllm_loader
    fm = vllm_loader.load_fused_moe(tree)
    sys.path.insert(0, str(Path(tree) / "benchmarks" / "kernels"))
    import moe_series_tuner as mst
    return fm, mst


def _shape(mst, name, for_compile=False):
    E, topk, N, K = SHAPES[name]
    if for_compile and E > 16:
        # 16 experts compile the same kernels as 256 (the strides, and
        # whether each integer argument is a multiple of 16, are the same)
        # in a sixteenth of the memory.
        E = 16
    return mst.Shape(E, topk, N, K, torch.bfloat16)


def compile_worker(tree, jobs, queue):
    """Run every (shape, stage, config) once at COMPILE_M: Triton compiles
    it into the shared cache. Reports the ones that cannot run."""
    torch.set_default_device("cuda")
    _, mst = load_tree(tree)
    bad = []
    current, weights, benches = None, None, {}
    for name, stage, config in jobs:
        if name != current:
            weights = benches = None
            torch.cuda.empty_cache()
            current = name
            weights = mst.make_weights(_shape(mst, name, True), 0,
                                       fill=False)
            benches = {}
        if stage not in benches:
            benches[stage] = mst.StageBench(_shape(mst, name, True),
                                            COMPILE_M,
                                            stage, weights, 0)
        try:
            benches[stage].run(dict(config))
        except Exception as exc:
            bad.append((name, stage, config, repr(exc)[:200]))
    torch.cuda.synchronize()
    queue.put(bad)


def precompile(tree, jobs, workers):
    jobs = sorted({json.dumps(j, sort_keys=True): j
                   for j in jobs}.values(), key=lambda j: j[0])
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=compile_worker,
                         args=(tree, jobs[i::workers], queue))
             for i in range(workers)]
    for p in procs:
        p.start()
    bad = []
    for _ in procs:
        bad += queue.get()
    for p in procs:
        p.join()
    return bad


def grouped_mm_us(mst, bench, weights, stage, flush, reps):
    if not hasattr(torch, "_grouped_mm"):
        return None
    shape = bench.shape
    ids = bench.topk_ids.flatten().long()
    order = torch.argsort(ids, stable=True)
    offs = torch.cumsum(torch.bincount(ids, minlength=shape.E),
                        0).to(torch.int32)
    if stage == "stage1":
        a = bench.A[order // shape.topk].contiguous()
        b = weights["w1"].transpose(1, 2)
    else:
        a = bench.A.contiguous()
        b = weights["w2"].transpose(1, 2)
    for b_layout in (b, b.contiguous()):
        try:
            return mst.time_graph(
                lambda b_layout=b_layout: torch._grouped_mm(
                    a, b_layout, offs=offs), flush, reps)
        except Exception as exc:
            print(f"grouped_mm {stage} (b strides {b_layout.stride()}): "
                  f"{exc!r}"[:300], flush=True)
    return None


def dense_us(mst, bench, stage, flush, reps):
    n_out, k_in = bench.shape.gemm(stage)
    rows = bench.M * bench.shape.topk
    a = torch.randn(rows, k_in, dtype=torch.bfloat16) * k_in**-0.5
    b = torch.randn(k_in, n_out, dtype=torch.bfloat16)
    return mst.time_graph(lambda: torch.mm(a, b), flush, reps)


def time_stage(mst, bench, config, flush, reps):
    try:
        return mst.time_graph(lambda: bench.run(dict(config)), flush, reps)
    except Exception as exc:
        if "CUDA error" in str(exc):
            raise
        return None


def is_prefill(config):
    return "TAIL_BLOCK_SIZE_M" in config or "PERSISTENT" in config


def best_pair(timed, allow_new):
    """Fastest (stage1, stage2) pair of one BLOCK_SIZE_M."""
    best = None
    for c1, t1 in timed["stage1"]:
        if not allow_new and is_prefill(c1):
            continue
        for c2, t2 in timed["stage2"]:
            if not allow_new and is_prefill(c2):
                continue
            if c1["BLOCK_SIZE_M"] != c2["BLOCK_SIZE_M"]:
                continue
            if best is None or t1 + t2 < best[2] + best[3]:
                best = (c1, c2, t1, t2)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tree", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rows", nargs="+", required=True,
                    help="SHAPE:M,M,... (shapes: r1tp8 r1tp4 mixtral)")
    ap.add_argument("--tunings", default=str(ROOT / "docs" / "h200-tunings"))
    ap.add_argument("--reps", type=int, default=25)
    ap.add_argument("--compile-workers", type=int,
                    default=max(1, min(14, (os.cpu_count() or 4) - 2)))
    ap.add_argument("--no-sweep", action="store_true",
                    help="only the tuned file, the default and the floors")
    ap.add_argument("--configs", help="JSON {shape: {M: [[c1, c2], ...]}}: "
                    "pairs to time as well (e.g. chosen in a sweep)")
    ap.add_argument("--flush-mib", type=int, default=1024)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.rows:
        name, ms = spec.split(":")
        rows += [(name, int(m)) for m in ms.split(",")]
    extra = json.loads(Path(args.configs).read_text()) if args.configs else {}

    start = time.time()
    fm, mst = load_tree(args.tree)
    torch.set_default_device("cuda")
    tuned = {}
    for name in SHAPES:
        path = Path(args.tunings) / TUNING_FILES[name]
        if path.is_file():
            tuned[name] = {int(k): v
                           for k, v in json.loads(path.read_text()).items()}

    def fixed_configs(name, M):
        """(label, stage1, stage2) timed at every row besides the sweep."""
        E, topk, N, K = SHAPES[name]
        found = []
        if name in tuned:
            entry = tuned[name][min(tuned[name], key=lambda m: abs(m - M))]
            found.append(("tuned file", *fm.get_stage_configs(entry)))
        default = fm.get_default_config(M, E, N, K, topk, None, False)
        found.append(("default", *fm.get_stage_configs(default)))
        for i, (c1, c2) in enumerate(extra.get(name, {}).get(str(M), [])):
            found.append((f"given {i}", c1, c2))
        return found

    jobs = []
    for name, M in rows:
        stage_extra = {"stage1": [], "stage2": []}
        for _, c1, c2 in fixed_configs(name, M):
            stage_extra["stage1"].append(c1)
            stage_extra["stage2"].append(c2)
        for stage in ("stage1", "stage2"):
            configs = stage_extra[stage]
            if not args.no_sweep:
                configs = candidates(name, M, configs)
            jobs += [(name, stage, c) for c in configs]
    bad = precompile(args.tree, jobs, args.compile_workers)
    bad_keys = {json.dumps([n, s, c], sort_keys=True) for n, s, c, _ in bad}
    print(f"{len(jobs)} compile jobs, {len(bad)} cannot run, "
          f"{time.time() - start:.0f} s", flush=True)
    for b in bad[:12]:
        print("  cannot run:", b, flush=True)

    flush = torch.empty(args.flush_mib * 2**20 // 4,
                        dtype=torch.float32).uniform_()
    results = []
    current, weights = None, None
    for name, M in rows:
        if name != current:
            weights = None
            torch.cuda.empty_cache()
            weights = mst.make_weights(_shape(mst, name), 0)
            current = name
        shape = _shape(mst, name)
        bench = {s: mst.StageBench(shape, M, s, weights, 0)
                 for s in ("stage1", "stage2")}
        row = {"shape": name, "M": M, "timed": {}, "fixed": []}
        for label, c1, c2 in fixed_configs(name, M):
            t1 = time_stage(mst, bench["stage1"], c1, flush, args.reps)
            t2 = time_stage(mst, bench["stage2"], c2, flush, args.reps)
            row["fixed"].append((label, c1, c2, t1, t2))
        if not args.no_sweep:
            for s in ("stage1", "stage2"):
                timed = []
                for c in candidates(name, M):
                    if json.dumps([name, s, c], sort_keys=True) in bad_keys:
                        continue
                    t = time_stage(mst, bench[s], c, flush, args.reps)
                    if t is not None:
                        timed.append((c, t))
                row["timed"][s] = timed
            row["best_old"] = best_pair(row["timed"], False)
            row["best_new"] = best_pair(row["timed"], True)
        row["grouped_mm"] = [grouped_mm_us(mst, bench[s], weights, s, flush,
                                           args.reps)
                             for s in ("stage1", "stage2")]
        row["dense"] = [dense_us(mst, bench[s], s, flush, args.reps)
                        for s in ("stage1", "stage2")]
        used = bench["stage1"].topk_ids.unique().long()
        buf = torch.cat([weights["w1"][used].flatten(),
                         weights["w2"][used].flatten()])
        row["read"] = mst.time_graph(buf.sum, flush, args.reps)
        del buf
        results.append(row)
        (out / "prefill.json").write_text(json.dumps(
            {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
             "reps": args.reps, "rows": results}) + "\n")
        print(summary_line(row), flush=True)
    if not args.no_sweep:
        write_recordings(results, out, args.reps)
    print(f"GPU {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
          f"{time.time() - start:.0f} s")
    print(table(results))


def write_recordings(results, out, reps):
    """The sweep's per-GEMM times in the tuner's .timings.json.gz layout
    (what benchmarks/c550_default_rules.py reads), one file per shape."""
    import gzip

    import triton
    gpu = torch.cuda.get_device_name(0)
    for name, (E, topk, N, K) in SHAPES.items():
        rows = [r for r in results if r["shape"] == name and r["timed"]]
        if not rows:
            continue
        recording = {
            "method": {"timed": "one invoke_fused_moe_kernel call per GEMM "
                       "in a CUDA graph, median of replays "
                       "(benchmarks/c550_fused_moe_prefill.py)",
                       "l2_flush_mib_read": 1024, "reps": reps, "gpu": gpu,
                       "torch": torch.__version__,
                       "triton": triton.__version__},
            "shape": {"E": E, "topk": topk, "N": N, "K": K, "dtype": "bf16"},
            "timings": {str(r["M"]): {s: [[c, round(t, 2)]
                                          for c, t in r["timed"][s]]
                                      for s in ("stage1", "stage2")}
                        for r in rows},
        }
        path = out / f"{name}.timings.json.gz"
        path.write_bytes(gzip.compress(
            (json.dumps(recording) + "\n").encode(), mtime=0))


def _sum(pair):
    return None if None in pair else sum(pair)


def summary_line(row):
    parts = [f"{row['shape']} M={row['M']}"]
    for label, _c1, _c2, t1, t2 in row["fixed"]:
        parts.append(f"{label} {_fmt(_sum((t1, t2)))}")
    for key in ("best_old", "best_new"):
        if row.get(key):
            _c1, _c2, t1, t2 = row[key]
            parts.append(f"{key} {t1 + t2:.1f} ({t1:.1f}+{t2:.1f})")
    parts.append(f"grouped_mm {_fmt(_sum(row['grouped_mm']))}")
    parts.append(f"dense {_fmt(_sum(row['dense']))} read {row['read']:.1f}")
    return " | ".join(parts)


def _fmt(x):
    return "-" if x is None else f"{x:.1f}"


def table(results):
    lines = ["| shape | M | tuned file | best old | best new | default | "
             "floor (read, dense) | new/floor | grouped_mm |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in results:
        fixed = {label: _sum((t1, t2))
                 for label, _, _, t1, t2 in row["fixed"]}
        old = row.get("best_old")
        new = row.get("best_new")
        dense = _sum(row["dense"])
        floor = max(row["read"], dense or 0)
        best = new[2] + new[3] if new else fixed.get("default")
        lines.append(
            f"| {row['shape']} | {row['M']} | {_fmt(fixed.get('tuned file'))}"
            f" | {_fmt(old and old[2] + old[3])} | {_fmt(best)} | "
            f"{_fmt(fixed.get('default'))} | {floor:.0f} ({row['read']:.0f}, "
            f"{_fmt(dense)}) | {(best / floor if best else 0):.2f} | "
            f"{_fmt(_sum(row['grouped_mm']))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
