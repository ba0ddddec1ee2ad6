#!/usr/bin/env python3
"""Benchmark patchtool's core (unpatch, patch) against the plain git commands.

Speed is measured here, never in the test suite. One run prints a table and,
with --json PATH, writes every raw timing.

What is measured, on the real vLLM 0.7.2 base and the metax_C550 series
(always on a COPY of the store in a temp folder: the repository's store is
never touched):

 1. warm `patchtool unpatch` (CLI as a subprocess, what users pay), both into
    an empty build folder ("fresh") and over the tree of the previous run
    ("replace": the normal repeat, which first checks the old tree for
    unexported work and sets it aside, and removes the tree the previous run
    set aside if it is unchanged), against
        git clone --local --no-checkout <cache>/repos/vllm.git X
        git -C X checkout -b dev <base commit>
        git -C X am <series patches>
    plus the fixed cost of Python itself: `python -c pass`,
    `python -c "import patchtool.cli.app"` and `patchtool --version`.
 2. `patchtool patch` on an unchanged tree against
    `git format-patch <base>..HEAD -o DIR`, and the number of store files
    rewritten (inode, mtime and size compared before and after: must be 0).
 3. cold `patchtool unpatch` (empty cache): once through the normal path
    (the package index, i.e. the network), then from a local sdist (--sdist).
 4. scaling: synthetic series of 0, 10, 100, 1000 small patches against the
    same base (made by committing in a build tree and running `patchtool
    patch`): unpatch total time and per-patch slope (least squares), for
    patchtool and for plain `git am` of the same files.
 5. an in-process breakdown of one warm unpatch and one no-op patch (wall time
    per phase and per git sub-command) and the biggest imports.

Usage:
    python benchmarks/bench_core.py [--repeat 5] [--json out.json]
        [--cache-dir DIR] [--sdist PATH] [--sizes 10,100,1000] [--keep]

With --cache-dir, an existing warm cache is reused for the warm runs (cold runs
always use fresh empty caches). Without network, pass --sdist PATH
(vllm-0.7.2.tar.gz): the cold "download" run is then skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEVICE = "metax_C550"
BASE_ID = "vllm-0.7.2"
PROJECT = "vllm"

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost.invalid",
}


# --------------------------------------------------------------------------- helpers


def clean_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATCHTOOL_")}
    env.update(GIT_IDENTITY)
    return env


ENV = clean_environment()


def run(cmd: list[str], cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    completed = subprocess.run(cmd, cwd=cwd, env=ENV, capture_output=True, stdin=subprocess.DEVNULL)
    if check and completed.returncode != 0:
        raise RuntimeError(
            f"command failed ({completed.returncode}): {' '.join(map(str, cmd))}\n"
            f"{completed.stderr.decode(errors='replace')[-2000:]}"
        )
    return completed


def timed(cmds: list[list[str]], cwd: Path | None = None) -> float:
    """Wall time of a sequence of commands (as a shell `&&` chain would run them)."""
    os.sync()  # start every measurement with no dirty pages left by the previous one
    start = time.perf_counter()
    for cmd in cmds:
        run(cmd, cwd=cwd)
    return time.perf_counter() - start


def patchtool_command() -> list[str]:
    script = Path(sys.executable).with_name("patchtool")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "patchtool"]


PT = patchtool_command()


def summary(times: list[float]) -> dict:
    return {
        "median": statistics.median(times),
        "min": min(times),
        "max": max(times),
        "runs": len(times),
        "times": times,
    }


def store_snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns, p.stat().st_size)
        for p in root.rglob("*")
        if p.is_file()
    }


def snapshot_diff(before: dict, after: dict) -> int:
    keys = set(before) | set(after)
    return sum(1 for k in keys if before.get(k) != after.get(k))


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) by least squares."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - slope * mx, slope


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the benchmark


def remove_tree(path: Path) -> None:
    """rmtree that tolerates files vanishing under it: patchtool deletes a
    replaced tree in a detached process, which may still be running."""
    for _ in range(50):
        shutil.rmtree(path, ignore_errors=True)
        if not os.path.exists(path):
            return
        time.sleep(0.1)
    shutil.rmtree(path)


class Bench:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.store = root / "store" / "patches"
        shutil.copytree(REPO / "patches", self.store, symlinks=True)
        # Only the 0.7.2 base is measured: drop the device's other bases so that
        # every command (which defaults to the newest base) works on it.
        for other in (self.store / DEVICE).iterdir():
            if other.is_dir() and other.name != "vllm-0.7.2":
                remove_tree(other)
        self.cache = Path(args.cache_dir).resolve() if args.cache_dir else root / "cache"
        self.cache.mkdir(parents=True, exist_ok=True)
        base_toml = (self.store / DEVICE / BASE_ID / "base.toml").read_text()
        self.base_commit = re.search(r'^commit\s*=\s*"([0-9a-f]{40})"', base_toml, re.M).group(1)
        self.sdist_name = re.search(r'^filename\s*=\s*"([^"]+)"', base_toml, re.M).group(1)
        self.sdist: Path | None = Path(args.sdist).resolve() if args.sdist else None
        self.results: dict = {}
        self.counter = 0

    def fresh(self, name: str) -> Path:
        self.counter += 1
        path = self.root / "scratch" / f"{name}-{self.counter}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def pt(self, *args: str, store: Path | None = None, cache: Path | None = None) -> list[str]:
        return [*PT, "--quiet", "--store", str(store or self.store),
                "--cache-dir", str(cache or self.cache), *args]  # fmt: skip

    @property
    def cache_repo(self) -> Path:
        return self.cache / "repos" / f"{PROJECT}.git"

    def series_files(self, base_dir: Path) -> list[str]:
        names = [
            line.strip()
            for line in (base_dir / "series").read_text().splitlines()
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return [str(base_dir / n) for n in names]

    def git_unpatch_cmds(self, target: Path, patches: list[str]) -> list[list[str]]:
        cmds = [
            ["git", "clone", "--quiet", "--local", "--no-checkout", str(self.cache_repo), str(target)],
            ["git", "-C", str(target), "checkout", "--quiet", "-b", "dev", self.base_commit],
        ]
        if patches:
            cmds.append(["git", "-C", str(target), "am", "--quiet", *patches])
        return cmds

    # ----------------------------------------------------------------- 0. python

    def bench_python(self) -> None:
        n = self.args.repeat
        log("python start-up")
        out = {}
        for label, cmd in (
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import patchtool.cli.app'", [sys.executable, "-c", "import patchtool.cli.app"]),
            ("patchtool --version", [*PT, "--version"]),
        ):
            run(cmd)  # warm the page cache / .pyc files
            out[label] = summary([timed([cmd]) for _ in range(n)])
        # what a run pays when no bytecode can be cached (PYTHONDONTWRITEBYTECODE=1 and
        # no __pycache__ next to the sources): every patchtool module compiled each time
        saved = dict(ENV)
        ENV["PYTHONDONTWRITEBYTECODE"] = "1"
        ENV["PYTHONPYCACHEPREFIX"] = str(self.fresh("no-pyc"))
        cmd = [sys.executable, "-c", "import patchtool.cli.app"]
        out["import patchtool.cli.app, no bytecode cache"] = summary([timed([cmd]) for _ in range(n)])
        ENV.clear()
        ENV.update(saved)
        self.results["python"] = out

    # ----------------------------------------------------------------- 3. cold

    def bench_cold(self) -> None:
        log("cold unpatch")
        out: dict = {}
        # (a) the normal path: the package index / network
        if not self.args.no_network:
            cache = self.fresh("cold-net-cache")
            build = self.fresh("cold-net-build")
            start = time.perf_counter()
            done = run(self.pt("unpatch", "-d", DEVICE, "--dir", str(build), cache=cache), check=False)
            elapsed = time.perf_counter() - start
            if done.returncode == 0:
                out["download"] = summary([elapsed])
                downloaded = next((cache / "sdists").rglob(self.sdist_name), None)
                if self.sdist is None and downloaded is not None:
                    self.sdist = self.root / self.sdist_name
                    shutil.copy2(downloaded, self.sdist)
                if not (self.cache_repo / "HEAD").exists():
                    shutil.rmtree(self.cache, ignore_errors=True)
                    shutil.copytree(cache, self.cache)
            else:
                out["download_error"] = done.stderr.decode(errors="replace")[-500:]
                log("cold download failed (no network?); use --sdist PATH")
            shutil.rmtree(build, ignore_errors=True)
        if self.sdist is None:
            raise SystemExit("no sdist: the download failed and --sdist was not given")
        # (b) from a local sdist: hash check + import into an empty cache + unpatch
        times, gits = [], []
        for _ in range(self.args.cold_repeat):
            cache, build = self.fresh("cold-local-cache"), self.fresh("cold-local-build")
            times.append(timed([self.pt("unpatch", "-d", DEVICE, "--dir", str(build), "--sdist",
                                        str(self.sdist), cache=cache)]))  # fmt: skip
            if not (self.cache_repo / "HEAD").exists():
                shutil.rmtree(self.cache, ignore_errors=True)
                shutil.copytree(cache, self.cache)
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(build, ignore_errors=True)
            # reference: what unpacking alone costs
            unpack = self.fresh("tar")
            unpack.mkdir()
            gits.append(timed([["tar", "-xzf", str(self.sdist), "-C", str(unpack)]]))
            shutil.rmtree(unpack, ignore_errors=True)
        out["local_sdist"] = summary(times)
        out["reference_tar_xzf"] = summary(gits)
        self.results["cold"] = out

    def ensure_warm(self) -> None:
        if (self.cache_repo / "HEAD").exists():
            found = run(["git", "--git-dir", str(self.cache_repo), "cat-file", "-e",
                         self.base_commit + "^{commit}"], check=False)  # fmt: skip
            if found.returncode == 0:
                return
        log("warming the cache")
        build = self.fresh("warmup")
        extra = ["--sdist", str(self.sdist)] if self.sdist else []
        run(self.pt("unpatch", "-d", DEVICE, "--dir", str(build), *extra))
        shutil.rmtree(build, ignore_errors=True)

    # ----------------------------------------------------------------- 1. warm unpatch

    def unpatch_runs(self, store: Path, device: str, base_dir: Path, repeat: int) -> dict:
        patches = self.series_files(base_dir)
        fresh_t, replace_t, git_t = [], [], []
        build_replace = self.fresh(f"replace-{device}")
        run(self.pt("unpatch", "-d", device, "--dir", str(build_replace), store=store))
        for _ in range(repeat):
            # interleaved, so that drift hits all three alike
            target = self.fresh("git")
            git_t.append(timed(self.git_unpatch_cmds(target, patches)))
            remove_tree(target)
            build = self.fresh("fresh")
            fresh_t.append(timed([self.pt("unpatch", "-d", device, "--dir", str(build), store=store)]))
            remove_tree(build)
            replace_t.append(timed([self.pt("unpatch", "-d", device, "--dir", str(build_replace),
                                            store=store)]))  # fmt: skip
        remove_tree(build_replace)
        return {
            "patches": len(patches),
            "patchtool_fresh": summary(fresh_t),
            "patchtool_replace": summary(replace_t),
            "git": summary(git_t),
        }

    def bench_warm(self) -> None:
        log("warm unpatch")
        before = store_snapshot(self.store)
        self.results["unpatch_warm"] = self.unpatch_runs(
            self.store, DEVICE, self.store / DEVICE / BASE_ID, self.args.repeat
        )
        self.results["unpatch_warm"]["store_files_rewritten"] = snapshot_diff(
            before, store_snapshot(self.store)
        )

    # ----------------------------------------------------------------- 2. patch

    def patch_runs(self, store: Path, device: str, repeat: int) -> dict:
        build = self.fresh(f"patch-{device}")
        run(self.pt("unpatch", "-d", device, "--dir", str(build), store=store))
        tree = build / device / PROJECT
        before = store_snapshot(store)
        pt_t, git_t = [], []
        for _ in range(repeat):
            out = self.fresh("format-patch")
            git_t.append(timed([["git", "-C", str(tree), "format-patch", "--quiet", "-o", str(out),
                                 f"{self.base_commit}..HEAD"]]))  # fmt: skip
            shutil.rmtree(out, ignore_errors=True)
            pt_t.append(timed([self.pt("patch", "-d", device, "--dir", str(build), store=store)]))
        rewritten = snapshot_diff(before, store_snapshot(store))
        remove_tree(build)
        return {"patchtool": summary(pt_t), "git": summary(git_t), "store_files_rewritten": rewritten}

    def bench_patch(self) -> None:
        log("patch on an unchanged tree")
        self.results["patch_noop"] = self.patch_runs(self.store, DEVICE, self.args.repeat)

    # ----------------------------------------------------------------- 4. scaling

    def make_synthetic(self, n: int) -> tuple[Path, str, float]:
        """A store whose device bench_n<n> has n small patches, made the normal way:
        commits in a build tree, then `patchtool patch`."""
        store = self.root / f"synthetic-{n}" / "patches"
        device = f"bench_n{n}"
        (store / device / BASE_ID).mkdir(parents=True)
        shutil.copy2(self.store / DEVICE / "device.toml", store / device / "device.toml")
        shutil.copy2(self.store / DEVICE / BASE_ID / "base.toml", store / device / BASE_ID / "base.toml")
        (store / device / BASE_ID / "series").write_text(f"# synthetic series of {n} patches\n")
        build = self.fresh(f"gen-{n}")
        run(self.pt("unpatch", "-d", device, "--dir", str(build), store=store))
        tree = build / device / PROJECT
        if n:
            stream = bytearray()
            for i in range(n):
                if i % 2 == 0:  # add a new small file
                    path, text = f"patchtool_bench/f{i:04d}.txt", f"file {i}\n"
                    subject = f"bench: add file {i}"
                else:  # change the file the previous patch added
                    path, text = f"patchtool_bench/f{i - 1:04d}.txt", f"file {i - 1}\nchanged by {i}\n"
                    subject = f"bench: change file {i - 1} in patch {i}"
                message = f"{subject}\n\nSynthetic patch {i} of {n}.\n".encode()
                date = f"{1738000000 + i} +0000"
                stream += f"commit refs/heads/{device}\n".encode()
                stream += f"author bench <bench@localhost.invalid> {date}\n".encode()
                stream += f"committer bench <bench@localhost.invalid> {date}\n".encode()
                stream += b"data %d\n%s\n" % (len(message), message)
                if i == 0:
                    stream += f"from {self.base_commit}\n".encode()
                data = text.encode()
                stream += f"M 100644 inline {path}\n".encode() + b"data %d\n%s\n" % (len(data), data)
            stream += b"done\n"
            subprocess.run(["git", "fast-import", "--quiet", "--done", "--force"], cwd=tree,
                           input=bytes(stream), check=True, env=ENV)  # fmt: skip
            run(["git", "reset", "--quiet", "--hard", device], cwd=tree)
        export = timed([self.pt("patch", "-d", device, "--dir", str(build), store=store)])
        count = len(self.series_files(store / device / BASE_ID))
        assert count == n, (count, n)
        remove_tree(build)
        return store, device, export

    def bench_scaling(self) -> None:
        out = {}
        for n in self.args.sizes:
            log(f"scaling: {n} patches")
            store, device, export = self.make_synthetic(n)
            repeat = self.args.repeat if n <= 100 else max(1, min(self.args.repeat, self.args.big_repeat))
            entry = self.unpatch_runs(store, device, store / device / BASE_ID, repeat)
            entry["export_new_patches_s"] = export
            entry["patch_noop"] = self.patch_runs(store, device, repeat) if n else None
            out[str(n)] = entry
            remove_tree(store.parent)
        ns = [int(k) for k in out]
        fits = {}
        for key in ("patchtool_fresh", "patchtool_replace", "git"):
            intercept, slope = linear_fit(ns, [out[str(k)][key]["median"] for k in ns])
            fits[key] = {"intercept_s": intercept, "slope_ms_per_patch": slope * 1000}
        pn = [k for k in ns if out[str(k)]["patch_noop"]]
        for key in ("patchtool", "git"):
            if len(pn) >= 2:
                intercept, slope = linear_fit(pn, [out[str(k)]["patch_noop"][key]["median"] for k in pn])
                fits[f"patch_noop_{key}"] = {"intercept_s": intercept, "slope_ms_per_patch": slope * 1000}
        self.results["scaling"] = {"sizes": out, "fit": fits}

    # ----------------------------------------------------------------- 5. breakdown

    def bench_profile(self) -> None:
        """Phases of one warm unpatch (replace) and one no-op patch, measured in-process,
        plus the top imports. Runs in a child so the wrappers cannot leak."""
        log("in-process breakdown")
        build = self.fresh("profile")
        script = PROFILE_SCRIPT
        done = run([sys.executable, "-c", script, str(self.store), str(self.cache), str(build), DEVICE])
        self.results["breakdown"] = json.loads(done.stdout)
        done = run([sys.executable, "-X", "importtime", "-c", "import patchtool.cli.app"])
        imports = []
        for line in done.stderr.decode().splitlines():
            m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
            if m and len(m.group(3)) <= 3:  # top-level imports only
                imports.append((m.group(4), int(m.group(2)) / 1e6))
        imports.sort(key=lambda x: -x[1])
        self.results["imports_top"] = imports[:10]
        shutil.rmtree(build, ignore_errors=True)

    def all(self) -> None:
        self.bench_python()
        if not self.args.skip_cold:
            self.bench_cold()
        self.ensure_warm()
        self.bench_warm()
        self.bench_patch()
        self.bench_profile()
        if self.args.sizes:
            self.bench_scaling()


PROFILE_SCRIPT = r'''
import contextlib, io, json, os, shutil, subprocess, sys, time
from collections import defaultdict
from pathlib import Path
import patchtool.trees.building as apply, patchtool.core.gitops as gitops
import patchtool.trees.staging as staging, patchtool.trees.work as work
import patchtool.series.safety as safety, patchtool.series.pipeline as pipeline
from patchtool.cli.app import main

store, cache, build, device = sys.argv[1:5]
phases = defaultdict(float)
gits = defaultdict(lambda: [0, 0.0])

def wrap(module, name, label):
    original = getattr(module, name)
    def wrapper(*a, **k):
        start = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            phases[label] += time.perf_counter() - start
    setattr(module, name, wrapper)

original_run = gitops.Git.run
def git_run(self, *args, **kwargs):
    start = time.perf_counter()
    try:
        return original_run(self, *args, **kwargs)
    finally:
        entry = gits[args[0]]
        entry[0] += 1
        entry[1] += time.perf_counter() - start
gitops.Git.run = git_run

wrap(apply, "existing_work", "existing-tree check (status + render old patches), twice")
wrap(apply, "ensure_base", "ensure_base (cache lookup + verification record)")
wrap(apply, "TreeJudge", "judge the base tree (ls-tree, before checkout)")
wrap(apply, "checkout_base", "clone + checkout of the base")
wrap(apply, "apply_series", "apply_series: limits + git am + judging the commits")
wrap(apply, "load_series", "read the series (limits; private patches decrypted)")
wrap(safety.TreeJudge, "judge_commits", "  of which: judging the commits (diff-tree)")
wrap(apply, "exchange_paths", "atomic swap (renameat2)")
wrap(apply, "tree_state", "the old tree's state (stat walk), at the check and after the swap")
wrap(apply, "set_aside", "set the old tree aside (rename)")
wrap(apply, "recover_interrupted", "recover_interrupted (judges the tree set aside last time)")
wrap(staging, "discard", "  of which: discard an unchanged old tree (rename + detached rm)")
wrap(pipeline, "render_patches", "render_patches (one git log + format-patch)")
wrap(work, "uncommitted_files", "git status (uncommitted files)")
wrap(work, "side_work", "side work (stash, branches)")

def call(argv):
    os.sync()
    phases.clear(); gits.clear()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            main(argv)
    except SystemExit as e:
        assert not e.code, e.code
    total = time.perf_counter() - start
    return {"total_s": total, "phases": dict(phases),
            "git": {k: {"calls": v[0], "s": v[1]} for k, v in gits.items()}}

common = ["--quiet", "--store", store, "--cache-dir", cache]
main_args = [*common, "unpatch", "-d", device, "--dir", build]
call(main_args)   # first tree
out = {"unpatch_replace": call(main_args)}
shutil.rmtree(build, ignore_errors=True)
out["unpatch_fresh"] = call(main_args)
out["patch_noop"] = call([*common, "patch", "-d", device, "--dir", build])
print(json.dumps(out))
'''


# --------------------------------------------------------------------------- report


def fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:7.3f}"


def render(results: dict) -> str:
    lines = []
    add = lines.append
    env = results["environment"]
    add(f"patchtool core benchmark  {env['date']}  {env['cpus']} CPUs  {env['git']}  "
        f"Python {env['python']}")  # fmt: skip
    add("")
    add(f"{'measurement':58} {'median':>8} {'min':>8} {'git med':>8} {'git min':>8} "
        f"{'ratio med':>9} {'ratio min':>9} {'target':>6}")  # fmt: skip

    def row(label, ours, git=None, target=""):
        ratio_med = ratio_min = ""
        if git:
            ratio_med = f"{ours['median'] / git['median']:9.2f}"
            ratio_min = f"{ours['min'] / git['min']:9.2f}"
        add(f"{label:58} {fmt(ours['median']):>8} {fmt(ours['min']):>8} "
            f"{fmt(git['median'] if git else None):>8} {fmt(git['min'] if git else None):>8} "
            f"{ratio_med:>9} {ratio_min:>9} {target:>6}")  # fmt: skip

    for label, value in results.get("python", {}).items():
        row(f"start-up: {label}", value)
    warm = results.get("unpatch_warm")
    if warm:
        n = warm["patches"]
        row(f"unpatch warm, fresh dir ({n} patches) vs clone+checkout+am", warm["patchtool_fresh"],
            warm["git"], "<=1.2")  # fmt: skip
        row(f"unpatch warm, replace tree ({n} patches) vs same", warm["patchtool_replace"],
            warm["git"], "<=1.2")  # fmt: skip
    noop = results.get("patch_noop")
    if noop:
        row("patch, unchanged tree vs git format-patch", noop["patchtool"], noop["git"], "<=1.2")
        add(f"  store files rewritten by patch: {noop['store_files_rewritten']} (must be 0); "
            f"by unpatch: {warm['store_files_rewritten'] if warm else '-'}")  # fmt: skip
    cold = results.get("cold", {})
    if "download" in cold:
        row("unpatch cold, download via the package index", cold["download"])
    if "download_error" in cold:
        add(f"  cold download failed: {cold['download_error'].strip().splitlines()[-1:]}")
    if "local_sdist" in cold:
        row("unpatch cold, --sdist (verify + import + unpatch)", cold["local_sdist"])
        row("  reference: tar -xzf of the sdist", cold["reference_tar_xzf"])
    scaling = results.get("scaling")
    if scaling:
        add("")
        add("scaling (synthetic series, each patch adds or changes one small file)")
        add(f"{'patches':>8} {'pt fresh':>9} {'pt replace':>10} {'git am':>8} {'ratio fr':>8} "
            f"{'ratio rep':>9} {'patch noop':>10} {'fmt-patch':>9} {'export new':>10}")  # fmt: skip
        for n, e in scaling["sizes"].items():
            pn = e["patch_noop"]
            add(f"{n:>8} {fmt(e['patchtool_fresh']['median']):>9} "
                f"{fmt(e['patchtool_replace']['median']):>10} {fmt(e['git']['median']):>8} "
                f"{e['patchtool_fresh']['median'] / e['git']['median']:8.2f} "
                f"{e['patchtool_replace']['median'] / e['git']['median']:9.2f} "
                f"{fmt(pn['patchtool']['median'] if pn else None):>10} "
                f"{fmt(pn['git']['median'] if pn else None):>9} {fmt(e['export_new_patches_s']):>10}")  # fmt: skip
        for key, fit in scaling["fit"].items():
            add(f"  fit {key:22}: {fit['intercept_s']:6.3f} s + {fit['slope_ms_per_patch']:7.2f} ms/patch")
    breakdown = results.get("breakdown")
    if breakdown:
        add("")
        add("in-process breakdown (wall s; phases can nest: rmtree is inside none of the others)")
        for name, data in breakdown.items():
            add(f"  {name}: total {data['total_s']:.3f}")
            for phase, s in sorted(data["phases"].items(), key=lambda x: -x[1]):
                add(f"    {phase:58} {s:7.3f}")
            gits = ", ".join(f"{k} {v['calls']}x {v['s']:.3f}" for k, v in
                             sorted(data["git"].items(), key=lambda x: -x[1]["s"]))  # fmt: skip
            add(f"    git sub-commands: {gits}")
    if results.get("imports_top"):
        add("  top imports of patchtool.cli.app (cumulative s): " + ", ".join(
            f"{m} {s:.3f}" for m, s in results["imports_top"][:6]))  # fmt: skip
    return "\n".join(lines)


def environment() -> dict:
    cpu = ""
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as info:
        cpu = next(x.split(":", 1)[1].strip() for x in info if x.startswith("model name"))
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "git": subprocess.run(["git", "--version"], capture_output=True, text=True).stdout.strip(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "patchtool_command": PT,
        "pythondontwritebytecode": ENV.get("PYTHONDONTWRITEBYTECODE"),
        "pythonpycacheprefix": ENV.get("PYTHONPYCACHEPREFIX"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="repetitions per measurement")
    parser.add_argument("--cold-repeat", type=int, default=3, help="repetitions of the cold --sdist run")
    parser.add_argument("--big-repeat", type=int, default=3, help="repetitions for the 1000-patch series")
    parser.add_argument("--sizes", default="0,10,100,1000",
                        help="synthetic series sizes, comma-separated ('' to skip)")
    parser.add_argument("--cache-dir", help="reuse this cache for the warm runs (default: a temp one)")
    parser.add_argument("--sdist", help="local vllm-0.7.2.tar.gz (for sites without network)")
    parser.add_argument("--no-network", action="store_true", help="skip the cold download run")
    parser.add_argument("--skip-cold", action="store_true")
    parser.add_argument("--workdir", help="parent of the temp folder (default: the system temp)")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    parser.add_argument("--json", help="write all results here")
    parser.add_argument("--as-is", action="store_true",
                        help="keep PYTHONDONTWRITEBYTECODE/PYTHONPYCACHEPREFIX as they are")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if args.sdist and not args.no_network:
        args.no_network = True
    root = Path(tempfile.mkdtemp(prefix="patchtool-bench-", dir=args.workdir)).resolve()
    log(f"working in {root}")
    if not args.as_is:
        # Users' Pythons cache bytecode; this machine may not (PYTHONDONTWRITEBYTECODE).
        # Cache it under the temp folder, never next to the sources.
        ENV.pop("PYTHONDONTWRITEBYTECODE", None)
        ENV["PYTHONPYCACHEPREFIX"] = str(root / "pycache")
    bench = Bench(args, root)
    bench.results["environment"] = environment()
    try:
        bench.all()
    finally:
        bench.results["environment"]["finished"] = datetime.datetime.now(
            datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")  # fmt: skip
        if args.json:
            Path(args.json).write_text(json.dumps(bench.results, indent=2) + "\n")
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(render(bench.results))


if __name__ == "__main__":
    main()
