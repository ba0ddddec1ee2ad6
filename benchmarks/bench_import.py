#!/usr/bin/env python3
"""Benchmark `patchtool import --flagscale` against the plain git commands making the same tree.

The set has the shape of Cambricon_MLU's vllm set in FlagScale's hardware/ tree
(per-file layout, 171 files): one deletion (`pyproject.toml`), 20 changed
files of the real vLLM tree (one hunk each), and 150 new files of about 8 KiB
under `vllm_mlu/` in five sub-folders (1.2 MB in all), against the real vLLM
release sdist (diff.yaml names the version, no commit). Measured warm (the
cache holds the sdist's import), each repetition into a fresh store and build
folder, with pip's index pointing at a closed port: a warm import must not
need the network, and any lookup would fail the run.

- patchtool: `patchtool import --flagscale FS` (CLI as a subprocess: reading the
  tree with git, grouping it into a reviewable series, creating the device and
  the base, checking the base out, applying each group with its safety checks,
  committing, exporting the series into the store);
- plain: `git clone --quiet --no-checkout REPO X`, `git -C X checkout -q <commit>`,
  one `git -C X apply --index <all 171 files>` and one `git -C X commit -qm`:
  the same tree from the same files, without a store, checks or a series.

REPO is the cache's own repository of the sdist import, so both start from the
same objects.

Usage: python benchmarks/bench_import.py --cache PATCHTOOL_CACHE [--version 0.8.5]
           [--repeat 5] [--group-bytes 262144]
The cache is copied first (it is only read): a patchtool cache that holds the
vLLM sdist of that version and its import, such as PATCHTOOL_TEST_CACHE_DIR.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PATCHTOOL = [sys.executable, "-m", "patchtool"]
SUBFOLDERS = ("attention", "distributed", "model_executor", "worker", "ops")


def git(*args: str, cwd: Path | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout  # fmt: skip


def closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


def sdist_commit(cache: Path, version: str) -> tuple[Path, str]:
    """The cache's vLLM repository and the commit its import of `version` made."""
    repo = cache / "repos" / "vllm.git"
    for line in git("--git-dir", str(repo), "for-each-ref",
                    "--format=%(objectname) %(refname)", "refs/patchtool/sdist/").splitlines():  # fmt: skip
        commit = line.split()[0]
        if f"vllm {version} " in git("--git-dir", str(repo), "log", "-1", "--format=%s", commit):
            return repo, commit
    raise SystemExit(f"{repo} holds no import of vllm {version}")


def make_set(root: Path, repo: Path, commit: str, version: str) -> tuple[Path, list[Path]]:
    flagscale = root / "FlagScale"
    folder = flagscale / "hardware" / "Cambricon_MLU" / "vllm"
    folder.mkdir(parents=True)
    (folder / "diff.yaml").write_text(
        f"backends_commit: {{}}\nbackends_version:\n  vllm: {version}\n"
        "commit: 0cd3bbc6287361b9a09bc0584294f3cc9f5e60aa\ncontact: ''\n"
        "device_type: Cambricon_MLU\nmodels:\n- qwen3\ntask:\n- inference\n"
    )
    files: list[Path] = []

    def add(path: str, text: str) -> None:
        target = folder / f"{path}.patch"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text + "\n")  # FlagScale ends every per-file patch with a blank line
        files.append(target)

    pyproject = git("--git-dir", str(repo), "show", f"{commit}:pyproject.toml")
    lines = pyproject.splitlines()
    add("pyproject.toml", "diff --git a/pyproject.toml b/pyproject.toml\n"
        "deleted file mode 100644\n--- a/pyproject.toml\n+++ /dev/null\n"
        f"@@ -1,{len(lines)} +0,0 @@\n" + "".join(f"-{line}\n" for line in lines))  # fmt: skip
    listing = git("--git-dir", str(repo), "ls-tree", "-r", "--name-only", commit).splitlines()
    changed = 0
    for path in sorted(p for p in listing if p.startswith("vllm/") and p.endswith(".py")):
        if changed == 20:
            break
        text = git("--git-dir", str(repo), "show", f"{commit}:{path}").splitlines()
        if len(text) < 10 or any("\t" in line or line != line.rstrip() for line in text[:8]):
            continue
        add(path, f"diff --git a/{path} b/{path}\n--- a/{path}\n+++ b/{path}\n"
            f"@@ -3,5 +3,5 @@\n {text[2]}\n {text[3]}\n-{text[4]}\n+{text[4]}  # mlu\n"
            f" {text[5]}\n {text[6]}\n")  # fmt: skip
        changed += 1
    for number in range(150):
        path = f"vllm_mlu/{SUBFOLDERS[number % len(SUBFOLDERS)]}/module_{number:03d}.py"
        body = [f"def mlu_function_{number}_{n}(x):" if n % 4 == 0 else f"    return x + {n}"
                for n in range(320)]  # fmt: skip
        add(path, f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n"
            f"+++ b/{path}\n@@ -0,0 +1,{len(body)} @@\n" + "".join(f"+{b}\n" for b in body))  # fmt: skip
    return flagscale, files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--version", default="0.8.5")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--group-bytes", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-import-") as scratch:
        root = Path(scratch)
        cache = root / "cache"
        shutil.copytree(args.cache / "repos", cache / "repos")
        shutil.copytree(args.cache / "sdists", cache / "sdists")
        repo, commit = sdist_commit(cache, args.version)
        flagscale, patch_files = make_set(root, repo, commit, args.version)
        size = sum(path.stat().st_size for path in patch_files)
        sdists = [p for p in (cache / "sdists").rglob(f"vllm-{args.version}.tar.gz")]
        env = {**os.environ, "PATCHTOOL_CACHE_DIR": str(cache),
               "PIP_INDEX_URL": f"http://127.0.0.1:{closed_port()}/simple",
               "PIP_CONFIG_FILE": os.devnull, "PIP_FIND_LINKS": "",
               "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
               "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}  # fmt: skip
        extra = ["--group-bytes", str(args.group_bytes)] if args.group_bytes else []
        ours, plain = [], []
        for repetition in range(args.repeat + 1):  # the first warms the cache, untimed
            project = root / f"project-{repetition}"
            (project / "patches").mkdir(parents=True)
            warm_up = ["--sdist", str(sdists[0].parent)] if repetition == 0 else []
            start = time.perf_counter()
            subprocess.run([*PATCHTOOL, "import", "--flagscale", str(flagscale), *warm_up, *extra],
                           cwd=project, env=env, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)  # fmt: skip
            elapsed = time.perf_counter() - start
            clone = root / f"plain-{repetition}"
            start = time.perf_counter()
            for command in (
                ["git", "clone", "--quiet", "--no-checkout", str(repo), str(clone)],
                ["git", "-C", str(clone), "checkout", "-q", commit],
                ["git", "-C", str(clone), "apply", "--index", *map(str, patch_files)],
                ["git", "-C", str(clone), "commit", "-qm", "FlagScale changes"],
            ):
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
            plain_elapsed = time.perf_counter() - start
            if repetition:
                ours.append(elapsed)
                plain.append(plain_elapsed)
            series = (project / "patches" / "Cambricon_MLU" / f"vllm-{args.version}" / "series")
            patches = len([line for line in series.read_text().splitlines()
                           if line and not line.startswith("#")])  # fmt: skip
            shutil.rmtree(project)
            shutil.rmtree(clone)
    mine, theirs = statistics.median(ours), statistics.median(plain)
    print(f"files: {len(patch_files)} ({size} bytes of patches; {patches} patches), "
          f"vLLM {args.version} sdist import, repetitions: {args.repeat}")  # fmt: skip
    print(f"patchtool import --flagscale: median {mine:.3f} s (min {min(ours):.3f}, "
          f"max {max(ours):.3f})")  # fmt: skip
    print(f"clone + checkout + git apply --index + commit: median {theirs:.3f} s "
          f"(min {min(plain):.3f}, max {max(plain):.3f})")  # fmt: skip
    print(f"ratio: {mine / theirs:.2f}")


if __name__ == "__main__":
    main()
