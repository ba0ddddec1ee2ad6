#!/usr/bin/env python3
"""Benchmark `patchtool import --flagscale` against plain `git apply` of the same files.

A synthetic backend repository of N files (default 300, each 40 lines) and a
FlagScale per-file tree that changes every one of them (one hunk each,
`hardware/Metax_C550/vllm/<path>.patch`, grouped by patchtool into one patch
per component). Measured, warm (the backend's commit already in patchtool's
cache), each repetition into a fresh store and build folder:

- patchtool: `patchtool import --flagscale FS --git-url vllm=REPO` (CLI as a
  subprocess: reading and grouping the tree, creating the device and base,
  checking the tree out, applying each group with its safety checks,
  committing, exporting the series);
- plain: `git clone --quiet --no-checkout REPO X`, `git -C X checkout -q
  <commit>`, one `git -C X apply <all N files>` and one `git -C X commit -qam`
  (the same tree from the same files, without a store, checks or a series).

With --vllm-repo PATH (a clone or patchtool's cache repository, e.g.
`<cache>/repos/vllm.git`) and --commit (default: metax_C550's vllm-0.7.2 base),
the backend is the real vLLM tree instead, and the N files are its first N
Python files of 10 lines or more, each changed in its fifth line: the fixed
costs (cloning, checking out 1,300 files) are then those of the real job.

Usage: python benchmarks/bench_import.py [--files 300] [--repeat 5]
           [--vllm-repo PATH [--commit SHA]]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATCHTOOL = [sys.executable, "-m", "patchtool"]
COMPONENTS = ("vllm/model_executor", "vllm/attention", "vllm/platforms", "csrc", "tests")


def make_world(root: Path, count: int) -> tuple[Path, Path, str, list[Path]]:
    repo = root / "vllm-src"
    repo.mkdir()
    paths = [f"{COMPONENTS[i % len(COMPONENTS)]}/module_{i:04d}.py" for i in range(count)]
    for path in paths:
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text("".join(f"line {n}\n" for n in range(40)))
    env = {**os.environ, "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
           "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(["git", "commit", "-qm", "base"], cwd=repo, check=True, env=env)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout.strip()
    flagscale = root / "FlagScale"
    folder = flagscale / "hardware" / "Metax_C550" / "vllm"
    folder.mkdir(parents=True)
    (folder / "diff.yaml").write_text(
        f"backends_commit:\n  vllm: {commit}\nbackends_version:\n  vllm: 0.8.5\n"
        "commit: 1e5ead5bca0efbed0937d13b106e82326cd5754c\ncontact: 'dev@example.com'\n"
        "device_type: Metax_C550\nmodels:\n- deepseek_r1\ntask:\n- inference\n"
    )
    patch_files = []
    for path in paths:
        text = (f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
                "@@ -19,3 +19,3 @@\n line 18\n-line 19\n+line 19, changed\n line 20\n")
        target = folder / f"{path}.patch"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        patch_files.append(target)
    return repo, flagscale, commit, patch_files


def real_world(root: Path, count: int, repo: Path, commit: str) -> tuple[Path, list[Path]]:
    """Per-file patches against the real tree: line 5 of the first `count` Python files."""
    listing = subprocess.run(["git", "--git-dir", str(repo), "ls-tree", "-r", "--name-only",
                              commit], check=True, capture_output=True, text=True).stdout
    flagscale = root / "FlagScale"
    folder = flagscale / "hardware" / "Metax_C550" / "vllm"
    folder.mkdir(parents=True)
    (folder / "diff.yaml").write_text(
        f"backends_commit:\n  vllm: {commit}\nbackends_version:\n  vllm: 0.7.2\n"
        "commit: 1e5ead5bca0efbed0937d13b106e82326cd5754c\ncontact: 'dev@example.com'\n"
        "device_type: Metax_C550\nmodels:\n- deepseek_r1\ntask:\n- inference\n"
    )
    patch_files: list[Path] = []
    for path in sorted(p for p in listing.splitlines() if p.endswith(".py")):
        if len(patch_files) == count:
            break
        lines = subprocess.run(["git", "--git-dir", str(repo), "show", f"{commit}:{path}"],
                               check=True, capture_output=True, text=True).stdout.splitlines()
        if len(lines) < 10 or any("\t" in line or line != line.rstrip() for line in lines[:8]):
            continue
        hunk = (f"@@ -3,5 +3,5 @@\n {lines[2]}\n {lines[3]}\n-{lines[4]}\n"
                f"+{lines[4]}  # changed\n {lines[5]}\n {lines[6]}\n")
        target = folder / f"{path}.patch"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n{hunk}")
        patch_files.append(target)
    return flagscale, patch_files


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def base_commit() -> str:
    base = Path(__file__).resolve().parent.parent / "patches/metax_C550/vllm-0.7.2/base.toml"
    for line in base.read_text().splitlines():
        if line.startswith("commit = "):
            return line.split('"')[1]
    raise SystemExit(f"no commit in {base}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--vllm-repo", type=Path)
    parser.add_argument("--commit", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as scratch:
        root = Path(scratch)
        if args.vllm_repo is not None:
            repo = args.vllm_repo.resolve()
            commit = args.commit or base_commit()
            flagscale, patch_files = real_world(root, args.files, repo, commit)
        else:
            repo, flagscale, commit, patch_files = make_world(root, args.files)
        env = {**os.environ, "PATCHTOOL_CACHE_DIR": str(root / "cache"),
               "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
               "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}
        ours, plain = [], []
        for repetition in range(args.repeat + 1):  # the first warms the cache, untimed
            project = root / f"project-{repetition}"
            (project / "patches").mkdir(parents=True)
            elapsed = timed([*PATCHTOOL, "import", "--flagscale", str(flagscale),
                             "--git-url", f"vllm={repo}"], project, env)
            clone = root / f"plain-{repetition}"
            start = time.perf_counter()
            for command in (
                ["git", "clone", "--quiet", "--no-checkout", str(repo), str(clone)],
                ["git", "-C", str(clone), "checkout", "-q", commit],
                ["git", "-C", str(clone), "apply", *map(str, patch_files)],
                ["git", "-C", str(clone), "commit", "-qam", "FlagScale changes"],
            ):
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            plain_elapsed = time.perf_counter() - start
            if repetition:
                ours.append(elapsed)
                plain.append(plain_elapsed)
            shutil.rmtree(project)
            shutil.rmtree(clone)
    mine, theirs = statistics.median(ours), statistics.median(plain)
    kind = f"real vLLM at {commit[:12]}" if args.vllm_repo else "synthetic, 40-line files"
    print(f"files: {len(patch_files)} ({kind}), repetitions: {args.repeat}")
    print(f"patchtool import --flagscale: median {mine:.3f} s (min {min(ours):.3f})")
    print(f"clone + checkout + git apply + commit: median {theirs:.3f} s (min {min(plain):.3f})")
    print(f"ratio: {mine / theirs:.2f}")


if __name__ == "__main__":
    main()
