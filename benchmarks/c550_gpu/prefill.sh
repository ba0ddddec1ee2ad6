#!/bin/bash
# Issue 24's GPU run: correctness (bf16, M = 1 ... 4096, > 2^31 elements),
# the prefill sweep (benchmarks/c550_fused_moe_prefill.py) and the decode
# rows of the series before and after the prefill patch, in one call.
# Run from a folder laid out like the repository (benchmarks/, scripts/,
# tests/metax_c550/, docs/h200-tunings/) holding the patched tree's vllm/
# and benchmarks/kernels/ in c550/ and the tree without the prefill patch
# in base/; pyzmq for vllm/utils.py on PYTHONPATH.
# usage: prefill.sh OUTDIR [SWEEP ROWS...]
set -o pipefail
out=$1
shift
rows=("$@")
[ ${#rows[@]} -gt 0 ] || rows=(r1tp8:512,1024,2048,4096 r1tp4:2048,4096
                               mixtral:512,1024,2048,4096)
export PYTHONUNBUFFERED=1
quiet() { grep -v -e ' INFO ' -e 'WARNING'; }
{
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,driver_version \
        --format=csv
    python3 -c 'import torch, triton; print("torch", torch.__version__,
"triton", triton.__version__)'
} > "$out/sweep.log" 2>&1
timeout 300 python3 scripts/c550_fused_moe_gpu_check.py --tree c550 \
    2>&1 | quiet > "$out/check.log"
echo "check: exit $?; $(grep -c PASS "$out/check.log") PASS, $(grep -c FAIL \
    "$out/check.log") FAIL"
grep -e 'shape checks' -e 'past 2^31' "$out/check.log"
timeout 330 python3 benchmarks/c550_fused_moe_prefill.py --tree c550 \
    --out "$out" --rows "${rows[@]}" 2>&1 | quiet | tee -a "$out/sweep.log" |
    grep -v '^  cannot run' | cut -c1-300
decode=(r1tp8:1,2,4,8,16,32,64,128,256 r1tp4:1,16,64,256 mixtral:1,16,64,256)
mkdir -p /tmp/extra
for tree in c550 base; do
    timeout 150 python3 benchmarks/c550_fused_moe_prefill.py --tree $tree \
        --out /tmp/extra/decode-$tree --rows "${decode[@]}" --no-sweep \
        --compile-workers 4 --reps 50 2>&1 | quiet |
        tail -20 > /tmp/extra/decode-$tree.log
    echo "decode, $tree:"
    grep '^|' /tmp/extra/decode-$tree.log | cut -d'|' -f2,3,4,7 | tr -s ' '
done
mv "$out"/*.timings.json.gz /tmp/extra/ 2>/dev/null
tar -czf "$out/extra.tar.gz" -C /tmp/extra .
