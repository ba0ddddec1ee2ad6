#!/usr/bin/env python3
"""How close the series' default configs come to tuned, on recorded tuner runs.

The rules in the C550 series' get_default_config (patch
fused-moe-choose-default-tiles-per-gemm-when-no-tuned-file) were read off
benchmark_moe.py --tune runs on an H200, whose every measurement is kept in
docs/h200-tunings/*.timings.json.gz. This script needs no GPU: for each
recorded shape and batch size it asks the tree's own get_default_config for
the two GEMMs' configs, looks their per-GEMM times up in the recording, and
prints (w1 + w2 time) / (fastest w1 + fastest w2 time of the whole search).
A config the run did not time (runs capped with --max-configs sample the
space, and the tuner runs predate the prefill kernel's keys) is shown as
"-". docs/prefill-sweeps/ holds sweeps of both kernels at M >= 512 in the
same layout. The GPU tables in docs/c550-fused-moe-h200.md time
the same configs directly.

  python benchmarks/c550_default_rules.py --tree build/metax_C550/vllm
"""
from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = sorted((ROOT / "docs" / "h200-tunings").glob("*.timings.json.gz"))
# Sweeps of both fused-MoE kernels at M >= 512 (benchmarks/
# c550_fused_moe_prefill.py), in the same layout; the tuner runs above
# predate the prefill kernel's keys, so they judge the rules below M = 512.
PREFILL_RECORDINGS = sorted((ROOT / "docs" / "prefill-sweeps").glob("*.timings.json.gz"))


def _key(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def evaluate(fm: Any, recording: dict[str, Any]) -> dict[int, float | None]:
    """Batch size -> default / tuned time ratio (None: a config not timed)."""
    shape = recording["shape"]
    ratios: dict[int, float | None] = {}
    for m_text, stages in recording["timings"].items():
        M = int(m_text)
        config = fm.get_default_config(M, shape["E"], shape["N"], shape["K"],
                                       shape["topk"], None, False)
        picked = dict(zip(("stage1", "stage2"), fm.get_stage_configs(config), strict=True))
        default: float | None = 0.0
        best = 0.0
        for stage, rows in stages.items():
            times = {_key(c): t for c, t in rows}
            best += min(times.values())
            time = times.get(_key(picked[stage]))
            default = None if default is None or time is None else default + time
        ratios[M] = None if default is None else default / best
    return ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tree", required=True, help="a C550 build tree (0.7.2 or later)")
    parser.add_argument("recordings", nargs="*", type=Path,
                        default=RECORDINGS + PREFILL_RECORDINGS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "tests" / "metax_c550"))
    import vllm_loader

    fm = vllm_loader.load_fused_moe(args.tree)
    for path in args.recordings:
        recording = json.loads(gzip.decompress(path.read_bytes()))
        ratios = evaluate(fm, recording)
        known = [r for r in ratios.values() if r is not None]
        print(f"{path.name}: worst {max(known):.3f} over {len(known)} of {len(ratios)} "
              "batch sizes")
        print("  " + " ".join(f"{M}:{'-' if r is None else f'{r:.2f}'}"
                              for M, r in sorted(ratios.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
