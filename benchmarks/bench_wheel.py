#!/usr/bin/env python3
"""Benchmark `patchtool build-wheel` against the plain PEP 517 command on the same tree.

Measured on the real vLLM 0.7.2 base with the metax_C550 series (a temporary
copy of the store and a temporary build folder; the repository is not touched):

  plain      VLLM_TARGET_DEVICE=empty SETUPTOOLS_SCM_PRETEND_VERSION=0.7.2 \\
             python -m build --wheel --no-isolation --skip-dependency-check TREE
             (the tree cleaned with `git clean -ffdx` before each run, untimed)
  full       patchtool build-wheel, with its last-build record removed so it builds
  own        of a full run, the time outside its `python -m build` subprocess: what
             patchtool adds, without the build's own run-to-run noise
  unchanged  patchtool build-wheel again: nothing that feeds the build changed

Usage: python benchmarks/bench_wheel.py [--repeat 5] [--cache-dir DIR] [--sdist PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVICE = "metax_C550"
# `python -m patchtool ARGS`, but it also writes to the file in argv[1] how long its
# `python -m build` subprocess took.
TIMING_WRAPPER = """
import json, subprocess, sys, time
real_run = subprocess.run
spent = []
def run(args, *rest, **options):
    start = time.perf_counter()
    try:
        return real_run(args, *rest, **options)
    finally:
        if list(args[1:3]) == ["-m", "build"]:
            spent.append(time.perf_counter() - start)
subprocess.run = run
from patchtool.cli.app import main
try:
    main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as handle:
        json.dump(spent, handle)
"""


def timed(command: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache-dir")
    parser.add_argument("--sdist")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="patchtool-bench-wheel-"))
    try:
        store = root / "patches"
        shutil.copytree(REPO / "patches", store)
        build = root / "build"
        env = dict(os.environ)
        if args.cache_dir:
            env["PATCHTOOL_CACHE_DIR"] = str(Path(args.cache_dir).resolve())
        patchtool = [sys.executable, "-m", "patchtool", "--quiet", "--store", str(store)]
        build_time = root / "build-time.json"
        timed_patchtool = [sys.executable, "-c", TIMING_WRAPPER, str(build_time), "--quiet",
                           "--store", str(store)]
        unpatch = [*patchtool, "unpatch", "-d", DEVICE, "-c", "0.7.2", "--dir", str(build)]
        if args.sdist:
            unpatch += ["--sdist", args.sdist]
        subprocess.run(unpatch, check=True, env=env)
        tree = build / DEVICE / "vllm"
        out = root / "out"
        wheel_args = ["build-wheel", "-d", DEVICE, "--dir", str(build), "--out", str(out)]
        wheel_command = [*patchtool, *wheel_args]
        plain_env = {**env, "VLLM_TARGET_DEVICE": "empty",
                     "SETUPTOOLS_SCM_PRETEND_VERSION": "0.7.2"}
        plain_command = [sys.executable, "-m", "build", "--wheel", "--no-isolation",
                         "--skip-dependency-check", "--outdir", str(root / "plain"), str(tree)]
        state = out / f".{DEVICE}.patchtool-last-build.json"
        plain: list[float] = []
        full: list[float] = []
        own: list[float] = []
        unchanged: list[float] = []
        for _ in range(args.repeat):
            subprocess.run(["git", "clean", "-ffdxq"], cwd=tree, check=True)
            plain.append(timed(plain_command, plain_env, cwd=tree))
            # the plain build rewrites the sdist's tracked vllm.egg-info: undo it
            subprocess.run(["git", "reset", "--quiet", "--hard"], cwd=tree, check=True)
            subprocess.run(["git", "clean", "-ffdxq"], cwd=tree, check=True)
            state.unlink(missing_ok=True)
            full.append(timed([*timed_patchtool, *wheel_args], env))
            own.append(full[-1] - sum(json.loads(build_time.read_text())))
            unchanged.append(timed(wheel_command, env))
        wheels = sorted(out.glob("*.whl"))
        rows = [("plain python -m build", plain), ("patchtool build-wheel (full)", full),
                ("  of which patchtool's own", own),
                ("patchtool build-wheel (unchanged)", unchanged)]
        print(f"{'what':36} {'median s':>9} {'min s':>7}")
        for name, values in rows:
            print(f"{name:36} {statistics.median(values):9.2f} {min(values):7.2f}")
        print(f"ratio full / plain (median): {statistics.median(full) / statistics.median(plain):.2f}"
              "  (target <= 1.15)")
        print(f"ratio (plain + own) / plain (medians): "
              f"{(statistics.median(plain) + statistics.median(own)) / statistics.median(plain):.2f}")
        print(f"ratio plain / unchanged (median): "
              f"{statistics.median(plain) / statistics.median(unchanged):.1f}x  (target >= 10)")
        print(f"ratio full / unchanged (median): "
              f"{statistics.median(full) / statistics.median(unchanged):.1f}x")
        print(f"wheel: {wheels[0].name if wheels else 'none'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
