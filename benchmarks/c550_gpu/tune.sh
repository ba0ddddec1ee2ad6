#!/bin/bash
# Tune one MoE shape with the series' tuner (benchmark_moe.py --tune) on a
# GPU machine, after `source benchmarks/c550_gpu/setup.sh`; copies the
# config file and its timings to OUTDIR as NAME.json / NAME.timings.json.gz.
# usage: tune.sh NAME EXPERTS TOPK INTERMEDIATE TP HIDDEN OUTDIR [EXTRA...]
set -o pipefail
name=$1 experts=$2 topk=$3 inter=$4 tp=$5 hidden=$6 out=$7
shift 7
work=/tmp/tune-$name
mkdir -p "$work" "$out"
(cd "$C550_VLLM_TREE" && python3 benchmarks/kernels/benchmark_moe.py --tune \
    --num-experts "$experts" --topk "$topk" --intermediate-size "$inter" \
    --tp-size "$tp" --hidden-size "$hidden" --save-dir "$work" "$@") 2>&1 |
    grep -v -e ' INFO ' -e 'WARNING' | tee "$out/tune-$name.log" | tail -25
status=$?
for f in "$work"/*.json "$work"/*.timings.json.gz; do
    case $f in
    *.timings.json.gz) cp "$f" "$out/$name.timings.json.gz" ;;
    *.json) cp "$f" "$out/$name.json" ;;
    esac
done
exit $status
