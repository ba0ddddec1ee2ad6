"""rebase on the real metax_C550 move from vLLM 0.7.2 to 0.7.3, against plain git.

Both sides carry the same 0.7.2 series onto 0.7.3 from a warm cache (both
sdists already imported into PATCHTOOL_CACHE_DIR) and meet the same conflict
(the device-name patch and 0.7.3's new variables in vllm/envs.py), resolved by
the same script, whose time is left out of both.

  patchtool   `rebase --onto 0.7.3` (stops at the conflict) + `rebase --continue`;
              the sdist is passed with --sdist so the index is not asked (its
              lookup is network time, measured once on its own).
  git, full   what the tool does, by hand: clone the cache, check out 0.7.2,
              `git am` the series, `git rebase --onto`, resolve, `--continue`,
              `git format-patch` the result.
  git, rebase only  `git rebase --onto <new> <old> <branch>` + `--continue` in a
              clone that already holds both bases and the applied series.

With --update: the carry of one new patch onto an existing base against a
full rebase of the same series (both from a fresh build folder, warm cache):

  update      `rebase -c 0.7.2 --onto 0.7.3` where 0.7.3 holds the 12 patches it
              had before patch 13 (the store as of main before the carry): 12
              kept byte for byte, 1 picked.
  full        `rebase -c 0.7.2 --onto 0.7.3` of the same 13 patches into a store
              without 0.7.3, its one conflict resolved by the script, + --continue.

With --forecast: `rebase -c 0.8.5 --onto 0.9.0 --dry-run` (the C550 series onto
the next release) against `git rebase` of the same commits in a scratch clone:
clone the cache, check out 0.8.5, `git am` the series, `git rebase --onto 0.9.0`
going on with `--skip` at every conflict, as the forecast does.

Usage: python benchmarks/bench_rebase.py [--runs 5] [--update] [--forecast]
Needs PATCHTOOL_CACHE_DIR holding vllm 0.7.2 and 0.7.3 (run the rebase once),
and for --forecast 0.8.5 and 0.9.0 (run the forecast once).
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

REPOSITORY = Path(__file__).resolve().parent.parent
UNION = ("import re,sys\nfor p in sys.argv[1:]:\n s=open(p).read()\n"
         " s=re.sub(r'^<<<<<<< [^\\n]*\\n(.*?)^=======\\n(.*?)^>>>>>>> [^\\n]*\\n',"
         " lambda m:m[1]+m[2],s,flags=re.S|re.M)\n open(p,'w').write(s)\n")  # fmt: skip
OLD = "73c931f648191e88eb50ad4cf5ddb0b6ac58ed02"


def git_env(home: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_AUTHOR_NAME": "bench",
            "GIT_AUTHOR_EMAIL": "bench@localhost", "GIT_COMMITTER_NAME": "bench",
            "GIT_COMMITTER_EMAIL": "bench@localhost", "GIT_EDITOR": "true"}  # fmt: skip


def run(args: list[str], cwd: Path, env: dict[str, str], ok: tuple[int, ...] = (0,)) -> None:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True)
    if result.returncode not in ok:
        raise SystemExit(f"{args} failed ({result.returncode}): {result.stderr.decode()[-2000:]}")


def resolve(tree: Path, env: dict[str, str]) -> float:
    """The conflict resolution both sides need; returns its time (subtracted)."""
    start = time.perf_counter()
    run([sys.executable, "-c", UNION, "vllm/envs.py"], tree, env)
    run(["git", "add", "vllm/envs.py"], tree, env)
    return time.perf_counter() - start


def bench_tool(work: Path, cache: Path, sdist: Path) -> float:
    store = work / "patches"
    shutil.copytree(REPOSITORY / "patches" / "metax_C550" / "vllm-0.7.2",
                    store / "metax_C550" / "vllm-0.7.2")  # fmt: skip
    shutil.copy(REPOSITORY / "patches" / "metax_C550" / "device.toml", store / "metax_C550")
    env = {**git_env(work), "PATCHTOOL_CACHE_DIR": str(cache)}
    tool = [sys.executable, "-m", "patchtool", "--store", str(store), "rebase", "-d", "metax_C550",
            "--dir", str(work / "build")]  # fmt: skip
    start = time.perf_counter()
    run([*tool, "-c", "0.7.2", "--onto", "0.7.3", "--sdist", str(sdist)], work, env, ok=(4,))
    spent = resolve(work / "build" / "metax_C550" / "vllm", env)
    run([*tool, "--continue"], work, env)
    return time.perf_counter() - start - spent


def new_commit(cache: Path) -> str:
    out = subprocess.run(["git", "--git-dir", str(cache / "repos" / "vllm.git"), "for-each-ref",
                          "--format=%(objectname) %(contents:subject)", "refs/patchtool/bases/"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return next(line.split()[0] for line in out.splitlines() if "vllm 0.7.3" in line)


def prepare_clone(work: Path, cache: Path, env: dict[str, str]) -> Path:
    tree = work / "vllm"
    run(["git", "clone", "--quiet", "--local", "--no-checkout", str(cache / "repos" / "vllm.git"),
         str(tree)], work, env)  # fmt: skip
    run(["git", "fetch", "--quiet", str(cache / "repos" / "vllm.git"),
         "+refs/patchtool/bases/*:refs/bases/*"], tree, env)  # fmt: skip
    run(["git", "checkout", "--quiet", "-b", "series", OLD], tree, env)
    folder = REPOSITORY / "patches" / "metax_C550" / "vllm-0.7.2"
    names = [n for n in (folder / "series").read_text().splitlines() if n and not n.startswith("#")]
    run(["git", "am", "--quiet", "--committer-date-is-author-date", *[str(folder / n) for n in names]],
        tree, env)  # fmt: skip
    return tree


def bench_git(work: Path, cache: Path, full: bool) -> float:
    env = git_env(work)
    new = new_commit(cache)
    if not full:
        tree = prepare_clone(work, cache, env)
    start = time.perf_counter()
    if full:
        tree = prepare_clone(work, cache, env)
    run(["git", "rebase", "--quiet", "--onto", new, OLD, "series"], tree, env, ok=(1,))
    spent = resolve(tree, env)
    run(["git", "rebase", "--continue"], tree, env)
    if full:
        run(["git", "format-patch", "--quiet", "--zero-commit", "-o", str(work / "out"),
             f"{new}..HEAD"], tree, env)  # fmt: skip
    return time.perf_counter() - start - spent


BEFORE_CARRY = "87e663d"  # main before patch 13 was carried: 0.7.3 with 12 patches


def store_at(work: Path, revision: str, bases: tuple[str, ...]) -> Path:
    """The metax_C550 store as it was at `revision`, those bases only."""
    store = work / "patches"
    (store / "metax_C550").mkdir(parents=True)
    listing = subprocess.run(["git", "ls-tree", "-r", "--name-only", revision, "patches/metax_C550"],
                             cwd=REPOSITORY, capture_output=True, text=True, check=True).stdout  # fmt: skip
    for name in listing.split():
        parts = Path(name).parts
        if len(parts) == 3 or parts[2] in bases:
            data = subprocess.run(["git", "show", f"{revision}:{name}"], cwd=REPOSITORY,
                                  capture_output=True, check=True).stdout  # fmt: skip
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return store


def bench_update(work: Path, cache: Path, full: bool) -> float:
    """One carry of patch 13 onto 0.7.3 (full: a rebase of all 13 onto a store
    without 0.7.3); a fresh build folder either way."""
    bases = ("vllm-0.7.2",) if full else ("vllm-0.7.2", "vllm-0.7.3")
    store = store_at(work, BEFORE_CARRY, bases)
    shutil.rmtree(store / "metax_C550" / "vllm-0.7.2")
    shutil.copytree(REPOSITORY / "patches" / "metax_C550" / "vllm-0.7.2",
                    store / "metax_C550" / "vllm-0.7.2")  # fmt: skip
    env = {**git_env(work), "PATCHTOOL_CACHE_DIR": str(cache)}
    tool = [sys.executable, "-m", "patchtool", "--store", str(store), "rebase", "-d", "metax_C550",
            "--dir", str(work / "build")]  # fmt: skip
    start = time.perf_counter()
    if not full:
        run([*tool, "-c", "0.7.2", "--onto", "0.7.3"], work, env)
        return time.perf_counter() - start
    sdist = next((cache / "sdists").glob("*/vllm-0.7.3.tar.gz"))
    run([*tool, "-c", "0.7.2", "--onto", "0.7.3", "--sdist", str(sdist)], work, env, ok=(4,))
    spent = resolve(work / "build" / "metax_C550" / "vllm", env)
    run([*tool, "--continue"], work, env)
    return time.perf_counter() - start - spent


def bench_forecast(work: Path, cache: Path, sdist: Path, tool: bool) -> float:
    """The forecast of the 0.8.5 series onto 0.9.0, or git's rebase of it."""
    env = {**git_env(work), "PATCHTOOL_CACHE_DIR": str(cache)}
    folder = REPOSITORY / "patches" / "metax_C550" / "vllm-0.8.5"
    if tool:
        command = [sys.executable, "-m", "patchtool", "--store", str(REPOSITORY / "patches"),
                   "rebase", "-d", "metax_C550", "--dir", str(work / "build"), "-c", "0.8.5",
                   "--onto", "0.9.0", "--dry-run", "--sdist", str(sdist)]  # fmt: skip
        start = time.perf_counter()
        run(command, work, env, ok=(0, 4))
        return time.perf_counter() - start
    old, new = (base_commit(cache, f"vllm {v}") for v in ("0.8.5", "0.9.0"))
    names = [n for n in (folder / "series").read_text().splitlines() if n and not n.startswith("#")]
    start = time.perf_counter()
    tree = work / "vllm"
    run(["git", "clone", "--quiet", "--local", "--no-checkout", str(cache / "repos" / "vllm.git"),
         str(tree)], work, env)  # fmt: skip
    run(["git", "checkout", "--quiet", "-b", "series", old], tree, env)
    run(["git", "am", "--quiet", "--committer-date-is-author-date",
         *[str(folder / n) for n in names]], tree, env)  # fmt: skip
    step = subprocess.run(["git", "rebase", "--quiet", "--onto", new, old, "series"], cwd=tree,
                          env=env, capture_output=True)  # fmt: skip
    while step.returncode != 0:
        step = subprocess.run(["git", "rebase", "--skip"], cwd=tree, env=env, capture_output=True)
    return time.perf_counter() - start


def base_commit(cache: Path, subject: str) -> str:
    out = subprocess.run(["git", "--git-dir", str(cache / "repos" / "vllm.git"), "for-each-ref",
                          "--format=%(objectname) %(contents:subject)", "refs/patchtool/bases/"],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return next(line.split()[0] for line in out.splitlines() if f" {subject} from " in line)


def report(results: dict[str, list[float]], baselines: tuple[str, ...]) -> None:
    medians = {name: statistics.median(times) for name, times in results.items()}
    for name, times in results.items():
        print(f"{name:18} median {medians[name]:.2f} s  runs " + " ".join(f"{t:.2f}" for t in times))
    first = next(iter(results))
    for baseline in baselines:
        print(f"ratio {first} / {baseline}: {medians[first] / medians[baseline]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--update", action="store_true")
    parser.add_argument("--forecast", action="store_true")
    arguments = parser.parse_args()
    cache = Path(os.environ.get("PATCHTOOL_CACHE_DIR", "")).resolve()
    if arguments.update or arguments.forecast:
        times: dict[str, list[float]] = (
            {"update": [], "full rebase": []} if arguments.update else {"forecast": [], "git rebase": []}
        )
        sdist = next((cache / "sdists").glob("*/vllm-0.9.0.tar.gz"), None)
        for _ in range(arguments.runs):
            for name in times:
                with tempfile.TemporaryDirectory(prefix="bench-rebase-") as folder:
                    if arguments.update:
                        times[name].append(bench_update(Path(folder), cache, name == "full rebase"))
                    else:
                        assert sdist is not None, "run the forecast onto 0.9.0 once"
                        times[name].append(bench_forecast(Path(folder), cache, sdist,
                                                          name == "forecast"))  # fmt: skip
        report(times, (list(times)[1],))
        return
    sdists = list((cache / "sdists").glob("*/vllm-0.7.3.tar.gz"))
    if not sdists or not (cache / "repos" / "vllm.git").is_dir():
        raise SystemExit("PATCHTOOL_CACHE_DIR must hold vllm 0.7.2 and 0.7.3 (run rebase once)")
    results: dict[str, list[float]] = {"patchtool": [], "git, full": [], "git, rebase only": []}
    for _ in range(arguments.runs):
        for name in results:
            with tempfile.TemporaryDirectory(prefix="bench-rebase-") as folder:
                work = Path(folder)
                if name == "patchtool":
                    results[name].append(bench_tool(work, cache, sdists[0]))
                else:
                    results[name].append(bench_git(work, cache, full=name == "git, full"))
    report(results, ("git, full", "git, rebase only"))


if __name__ == "__main__":
    main()
