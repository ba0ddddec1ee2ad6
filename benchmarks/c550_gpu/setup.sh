# Source on the GPU machine, from the repository root, before the C550
# fused-MoE scripts: installs the carried wheels (.whl/, made on a machine
# with an index: Ray stripped to its core, its missing dependencies, pyzmq
# and cachetools for vllm/utils.py) into /tmp/site and points Python at the
# tree in .gpu_payload/$1 (default c550) through sitecustomize.py here.
mkdir -p /tmp/site
if [ ! -d /tmp/site/ray ]; then
    tar -xJf .whl/ray-core.tar.xz -C /tmp/site || return 1
    python3 -m pip install -q --no-index --no-deps --no-compile \
        --target /tmp/site .whl/*.whl || return 1
fi
export PYTHONPATH="/tmp/site:$PWD/benchmarks/c550_gpu"
export C550_VLLM_TREE="$PWD/.gpu_payload/${1:-c550}"
export C550_LOADER_DIR="$PWD/tests/metax_c550"
export PYTHONUNBUFFERED=1
# A Ray cluster left by an earlier run on a warm machine blocks the next
# ray.init(): end it (its daemons run in sessions of their own).
pkill -9 -f 'ray/core/src/ray/(raylet|gcs)' 2>/dev/null
pkill -9 -f 'ray::|ray/_private/workers|ray/dashboard|ray/autoscaler' 2>/dev/null
rm -rf /tmp/ray
true
