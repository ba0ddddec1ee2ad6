#!/usr/bin/env python3
"""Benchmark `check` over a store of many devices: serial (`--jobs 1`) against
parallel (the default: one base per core), and the cost of each base.

A synthetic store on a small upstream (the tests' demo sdist: 7 files), 10
devices with 2 bases each (demo 1.0 and 1.1), each base with a series of 5
patches made by patchtool itself (unpatch, commit, patch). Warm: the cache
holds both bases before the timed runs. Each run is the CLI as a subprocess
with `--json`; the per-base cost is the sum of its records' `duration_s`.

Usage: python benchmarks/bench_check.py [--devices 10] [--repeat 3]
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
sys.path.insert(0, str(REPO / "tests"))

from helpers import add_second_base, make_upstream  # noqa: E402


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "patchtool", *args], env=env, cwd=cwd,
                          capture_output=True, text=True, check=False)


def build_store(root: Path, devices: int, env: dict[str, str]) -> Path:
    world = make_upstream(root)
    add_second_base(world)
    env["PATCHTOOL_SDIST_PATH"] = str(world.sdist.parent)
    for base in ("demo-1.0", "demo-1.1"):
        assert cli("unpatch", "-d", "devA", "--commit-id", base, env=env, cwd=root).returncode == 0
        tree = world.build / "devA" / "demo"
        for number in range(5):
            (tree / f"vendor_{number}.py").write_text(f"value = {number}\n")
            subprocess.run(["git", "add", "-A"], cwd=tree, check=True, env=env)
            subprocess.run(["git", "commit", "-qm", f"vendor: add module {number}", "-m",
                            "The device needs it.", "-m", "Upstream-Status: Inappropriate [x]"],
                           cwd=tree, check=True, env=env)
        assert cli("patch", "-d", "devA", env=env, cwd=root).returncode == 0
    shutil.rmtree(world.build)
    for number in range(1, devices):
        shutil.copytree(world.store / "devA", world.store / f"dev{number:02d}")
    return world.store


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-check-") as scratch:
        root = Path(scratch)
        env = {**os.environ, "PATCHTOOL_CACHE_DIR": str(root / "cache"),
               "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
               "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}
        store = build_store(root, args.devices, env)
        warm = cli("--store", str(store), "check", "--json", env=env, cwd=root)
        assert warm.returncode == 0, warm.stderr
        timings: dict[str, list[float]] = {"1": [], "default": []}
        per_base: list[float] = []
        outputs = set()
        for _ in range(args.repeat):
            for jobs in ("1", "default"):
                extra = ["--jobs", "1"] if jobs == "1" else []
                start = time.perf_counter()
                run = cli("--store", str(store), "check", "--json", *extra, env=env, cwd=root)
                timings[jobs].append(time.perf_counter() - start)
                assert run.returncode == 0, run.stderr
                entries = json.loads(run.stdout)["include"]
                outputs.add(json.dumps([[{k: v for k, v in r.items() if k != "duration_s"}
                                         for r in e["checks"]] for e in entries]))
                if jobs == "1":
                    # A base's own records (the device's record heads every entry).
                    per_base.extend(sum(r["duration_s"] for r in e["checks"] if r["base"])
                                    for e in entries)
        serial, parallel = statistics.median(timings["1"]), statistics.median(timings["default"])
        bases = len(per_base) // args.repeat
        print(f"{args.devices} devices, {bases} bases, {os.cpu_count()} cores, "
              f"{args.repeat} repetitions; identical reports: {len(outputs) == 1}")
        print(f"serial (--jobs 1): median {serial:.2f} s (min {min(timings['1']):.2f})")
        print(f"parallel (default): median {parallel:.2f} s (min {min(timings['default']):.2f})")
        print(f"speed-up: {serial / parallel:.2f}x")
        print(f"per base (serial, sum of its checks): median {statistics.median(per_base):.3f} s, "
              f"min {min(per_base):.3f}, max {max(per_base):.3f}")


if __name__ == "__main__":
    main()
