#!/bin/bash
# The default / tuned / read-floor table for one shape (see
# benchmarks/c550_fused_moe_table.py), with NAME.json from tune.sh if any.
# usage: table.sh NAME EXPERTS TOPK INTERMEDIATE_PER_RANK HIDDEN OUTDIR [EXTRA...]
set -o pipefail
name=$1 experts=$2 topk=$3 inter=$4 hidden=$5 out=$6
shift 6
tuned=()
tuned_dir=${TUNED_DIR:-$out}
[ -f "$tuned_dir/$name.json" ] && tuned=(--tuned "$tuned_dir/$name.json")
python3 benchmarks/c550_fused_moe_table.py --tree "$C550_VLLM_TREE" \
    "${tuned[@]}" --experts "$experts" --topk "$topk" \
    --intermediate "$inter" --hidden "$hidden" \
    --json "$out/table-$name.json" "$@" 2>&1 |
    grep -v -e ' INFO ' -e 'WARNING' | tee "$out/table-$name.log"
