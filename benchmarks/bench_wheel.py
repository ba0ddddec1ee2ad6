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

Like bench_core.py, bytecode is cached (under the temporary folder) as on a
user's machine, even where PYTHONDONTWRITEBYTECODE is set; --as-is keeps the
environment as it is. The machine's load average is printed at the start and end.

Usage: python benchmarks/bench_wheel.py [--repeat 5] [--cache-dir DIR] [--sdist PATH] [--as-is]
                                        [--workdir DIR] [--json PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
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
# `python -m build` child took (timed where core/children.run starts it): [wall s, CPU s]
# per build.
TIMING_WRAPPER = """
import json, resource, sys, time
from patchtool.core import children
real_run = children.run  # every child of patchtool starts here (core/children.py)
spent = []
def cpu():
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime
def run(args, *rest, **options):
    start, start_cpu = time.perf_counter(), cpu()
    try:
        return real_run(args, *rest, **options)
    finally:
        if list(args[1:3]) == ["-m", "build"]:
            spent.append([time.perf_counter() - start, cpu() - start_cpu])
children.run = run
from patchtool.cli.app import main
try:
    main(sys.argv[2:])
finally:
    with open(sys.argv[1], "w") as handle:
        json.dump(spent, handle)
"""


def timed(command: list[str], env: dict[str, str] | None = None,
          cwd: Path | None = None) -> tuple[float, float]:
    """Wall and CPU time (user + system of the command and its children). On a shared
    machine the CPU time is the steadier measure: it leaves out waiting for a core."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=cwd, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache-dir")
    parser.add_argument("--sdist")
    parser.add_argument("--json", help="write the raw timings here")
    parser.add_argument("--workdir", help="parent of the temp folder (default: the system temp)")
    parser.add_argument("--as-is", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE/PYTHONPYCACHEPREFIX as they are")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="patchtool-bench-wheel-", dir=args.workdir))
    load_at_start = os.getloadavg()
    try:
        store = root / "patches"
        shutil.copytree(REPO / "patches", store)
        build = root / "build"
        env = dict(os.environ)
        if not args.as_is:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
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
        # [wall, CPU] per run
        plain: list[tuple[float, float]] = []
        full: list[tuple[float, float]] = []
        own: list[tuple[float, float]] = []
        unchanged: list[tuple[float, float]] = []
        for _ in range(args.repeat):
            subprocess.run(["git", "clean", "-ffdxq"], cwd=tree, check=True)
            plain.append(timed(plain_command, plain_env, cwd=tree))
            # the plain build rewrites the sdist's tracked vllm.egg-info: undo it
            subprocess.run(["git", "reset", "--quiet", "--hard"], cwd=tree, check=True)
            subprocess.run(["git", "clean", "-ffdxq"], cwd=tree, check=True)
            state.unlink(missing_ok=True)
            full.append(timed([*timed_patchtool, *wheel_args], env))
            builds = json.loads(build_time.read_text())
            own.append((full[-1][0] - sum(b[0] for b in builds),
                        full[-1][1] - sum(b[1] for b in builds)))
            unchanged.append(timed(wheel_command, env))
        wheels = sorted(out.glob("*.whl"))
        rows = [("plain python -m build", plain), ("patchtool build-wheel (full)", full),
                ("  of which patchtool's own", own),
                ("patchtool build-wheel (unchanged)", unchanged)]
        print(f"{'what':36} {'median s':>9} {'min s':>7} {'CPU med s':>10} {'CPU min s':>10}")
        for name, values in rows:
            walls, cpus = [v[0] for v in values], [v[1] for v in values]
            print(f"{name:36} {statistics.median(walls):9.2f} {min(walls):7.2f} "
                  f"{statistics.median(cpus):10.2f} {min(cpus):10.2f}")
        for kind, k in (("wall", 0), ("CPU", 1)):
            med = {name: statistics.median(v[k] for v in values)
                   for name, values in (("plain", plain), ("full", full), ("own", own),
                                        ("unchanged", unchanged))}
            print(f"{kind}: full / plain {med['full'] / med['plain']:.2f}  "
                  f"(plain + own) / plain {(med['plain'] + med['own']) / med['plain']:.2f}  "
                  "(target <= 1.15)  "
                  f"plain / unchanged {med['plain'] / med['unchanged']:.1f}x  (target >= 10)  "
                  f"full / unchanged {med['full'] / med['unchanged']:.1f}x")
        shown = (f"{wheels[0].name} sha256 {hashlib.sha256(wheels[0].read_bytes()).hexdigest()}"
                 if wheels else "none")
        print(f"wheel: {shown}")
        print("load average (1, 5, 15 min) at start / end: "
              + " / ".join(", ".join(f"{x:.2f}" for x in load)
                           for load in (load_at_start, os.getloadavg())))
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"plain": plain, "full": full, "own": own, "unchanged": unchanged,
                 "load": [load_at_start, os.getloadavg()]}, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
