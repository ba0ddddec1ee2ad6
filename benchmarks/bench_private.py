#!/usr/bin/env python3
"""Benchmark what private patches cost `unpatch`: the C550 series on the real
vLLM 0.7.2 sdist, as the repository stores it against the same series with two
of its patches private (the split-K kernel change and the DeepSeek-R1 tunings,
encrypted with age to one recipient).

Both stores are made from the repository's own: the private one by marking the
two commits with `Patchtool-Private: yes` and exporting with `patchtool patch`.
Warm: the base is in the cache before the timed runs. Each run is
`patchtool unpatch --force` as a subprocess (replacing the tree, as a vendor
engineer would); the runs alternate between the two stores. The plain git
reference is `git am` of the same ten patch files onto a fresh clone of the
cached base, which is what unpatch's work mostly is.

Usage: python benchmarks/bench_private.py [--repeat 7]
(PATCHTOOL_CACHE_DIR may name a cache that already holds vLLM 0.7.2.)
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

REPO = Path(__file__).resolve().parent.parent
DEVICE = "metax_C550"
PRIVATE = (
    "fused-moe-add-optional-split-k-to-fused-moe-kernel.patch",
    "fused-moe-add-metax-c550-tunings-for-deepseek-r1-experts.patch",
)
TRAILER = "Patchtool-Private: yes"


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "patchtool", *args], env=env,
                          capture_output=True, text=True, check=False)


def make_private_store(root: Path, env: dict[str, str], recipient: str) -> Path:
    store = root / "private" / "patches"
    shutil.copytree(REPO / "patches", store)
    device = store / DEVICE / "device.toml"
    device.write_text(device.read_text() + f'\n[private.recipients]\nci = "{recipient}"\n')
    build = root / "private" / "build"
    made = cli("--store", str(store), "unpatch", "-d", DEVICE, "--dir", str(build), env=env)
    assert made.returncode == 0, made.stderr
    tree = build / DEVICE / "vllm"
    subjects = []
    for name in PRIVATE:
        text = (store / DEVICE / "vllm-0.7.2" / name).read_text()
        subject = next(line for line in text.splitlines() if line.startswith("Subject: "))
        subjects.append(subject.removeprefix("Subject: [PATCH] "))
    # Amend the two commits: an `exec` after each in an interactive rebase.
    editor = root / "sequence-editor.py"
    editor.write_text(
        "import sys, subprocess\n"
        f"subjects = {subjects!r}\n"
        "path = sys.argv[1]\n"
        "out = []\n"
        "for line in open(path):\n"
        "    out.append(line)\n"
        "    if line.startswith('pick '):\n"
        "        sha = line.split()[1]\n"
        "        subject = subprocess.run(['git', 'log', '-1', '--format=%s', sha],\n"
        "                                 capture_output=True, text=True).stdout.strip()\n"
        "        if subject in subjects:\n"
        f"            out.append(\"exec git commit -q --amend --no-edit --trailer '{TRAILER}'\\n\")\n"
        "open(path, 'w').writelines(out)\n"
    )
    rebase_env = {**env, "GIT_SEQUENCE_EDITOR": f"{sys.executable} {editor}"}
    subprocess.run(["git", "rebase", "-q", "-i", "patchtool/base"], cwd=tree, env=rebase_env,
                   check=True)
    exported = cli("--store", str(store), "patch", "-d", DEVICE, "--dir", str(build), env=env)
    assert exported.returncode == 0, exported.stderr
    private = sorted(p.name for p in (store / DEVICE / "vllm-0.7.2").glob("*.patch.age"))
    assert len(private) == 2, private
    shutil.rmtree(build)
    return store


def plain_git_am(root: Path, cache: Path, store: Path, env: dict[str, str]) -> float:
    """`git clone` of the cached base and `git am` of the public series' files."""
    from patchtool.sources.cache import BaseCache

    repository = BaseCache(cache).release_repository("vllm")
    base = (store / DEVICE / "vllm-0.7.2" / "base.toml").read_text()
    commit = base.split('commit = "')[1].split('"')[0]
    series = (store / DEVICE / "vllm-0.7.2" / "series").read_text().splitlines()
    patches = [str(store / DEVICE / "vllm-0.7.2" / n) for n in series if n and n[0] != "#"]
    target = root / "plain" / "vllm"
    shutil.rmtree(target.parent, ignore_errors=True)
    target.parent.mkdir()
    start = time.perf_counter()
    # The cache repository has no branches (git says "empty"); its objects come along.
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repository), str(target)],
                   check=True, env=env, stderr=subprocess.DEVNULL)
    subprocess.run(["git", "checkout", "-q", "-b", "work", commit], cwd=target, check=True,
                   env=env)
    subprocess.run(["git", "am", "-q", "--keep-cr", *patches], cwd=target, check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    import pyrage

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-private-") as scratch:
        root = Path(scratch)
        cache = Path(os.environ.get("PATCHTOOL_CACHE_DIR") or root / "cache")
        env = {**os.environ, "PATCHTOOL_CACHE_DIR": str(cache),
               "GIT_AUTHOR_NAME": "b", "GIT_AUTHOR_EMAIL": "b@example.invalid",
               "GIT_COMMITTER_NAME": "b", "GIT_COMMITTER_EMAIL": "b@example.invalid"}
        identity = pyrage.x25519.Identity.generate()
        key = root / "ci.key"
        key.write_text(f"{identity}\n")
        private_store = make_private_store(root, env, str(identity.to_public()))
        public_store = REPO / "patches"
        runs = {
            "public": ("--store", str(public_store)),
            "private": ("--store", str(private_store), "--identity", str(key)),
        }
        times: dict[str, list[float]] = {name: [] for name in runs}
        build = root / "build"
        for _ in range(args.repeat):
            for name, options in runs.items():
                start = time.perf_counter()
                done = cli(*options[:2], "unpatch", "-d", DEVICE, "--dir", str(build), "--force",
                           *options[2:], env=env)
                times[name].append(time.perf_counter() - start)
                assert done.returncode == 0, done.stderr
        plain = [plain_git_am(root, cache, public_store, env) for _ in range(args.repeat)]
        public, private = statistics.median(times["public"]), statistics.median(times["private"])
        print(f"unpatch {DEVICE} vllm-0.7.2, {args.repeat} runs each, alternating, warm cache")
        print(f"public series:            median {public:.3f} s (min {min(times['public']):.3f})")
        print(f"two patches private:      median {private:.3f} s "
              f"(min {min(times['private']):.3f})")
        print(f"added by decryption:      {100 * (private / public - 1):+.1f}% "
              f"(min to min {100 * (min(times['private']) / min(times['public']) - 1):+.1f}%)")
        print(f"plain git clone + am:     median {statistics.median(plain):.3f} s; "
              f"unpatch / plain git = {public / statistics.median(plain):.2f}x")


if __name__ == "__main__":
    main()
