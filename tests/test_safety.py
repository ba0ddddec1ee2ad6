"""unpatch refuses every hostile or malformed input of tests/corpus, and changes nothing.

Each case first makes a clean build tree, then sets up its bad input and runs
`patchtool unpatch` in a subprocess: the exit code and message must match the
manifest, the previous tree must be byte-identical (files, links, modes, HEAD),
and nothing may be written outside build/<device>/ but the cache.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import SyntheticUpstream, git, snapshot, write_base

from patchtool.core.gitops import Git
from patchtool.sources.sdist import import_sdist
from patchtool.store.model import PypiSource

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CORPUS = Path(__file__).parent / "corpus"
CASES: list[dict[str, Any]] = tomllib.loads((CORPUS / "manifest.toml").read_text())["case"]


def _sdists() -> Any:
    spec = importlib.util.spec_from_file_location("corpus_sdists", CORPUS / "sdists.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def use_good_base(world: SyntheticUpstream, name: str) -> None:
    """Point base.toml at a good corpus sdist (imported here to learn its commit)."""
    path, sha = _sdists().build(name, world.sdist.parent)
    scratch = world.root / f"{name}.git"
    Git(world.root).run("init", "--quiet", "--bare", str(scratch))
    commit = import_sdist(path, scratch, "demo", "1.0", PypiSource(path.name, sha))
    write_base(world.base_folder, "demo", "1.0", commit, sha, filename=path.name)


def outside_state(world: SyntheticUpstream, home: Path) -> dict[str, bytes]:
    """Everything a run could touch besides build/devA/ and the base cache."""
    state = {f"root/{k}": v for k, v in snapshot(world.root).items()
             if not k.startswith(("build/devA/", "build/devA"))}  # fmt: skip
    state.update({f"home/{k}": v for k, v in snapshot(home).items()
                  if not k.startswith("patchtool-cache")})  # fmt: skip
    return state


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_corpus_case(upstream: SyntheticUpstream, hermetic_seal: Path,
                     case: dict[str, Any]) -> None:  # fmt: skip
    if "base" in case:
        use_good_base(upstream, case["base"])
    first = upstream.run("unpatch")
    assert first.code == 0, first.output
    tree_before = snapshot(upstream.tree)
    head_before = git(upstream.tree, "rev-parse", "HEAD")
    refs_before = git(upstream.tree, "for-each-ref")
    series = upstream.base_folder / "series"
    for name in case.get("patches", []):
        shutil.copyfile(CORPUS / "patches" / name, upstream.base_folder / name)
        with series.open("a") as handle:
            handle.write(name + "\n")
    if "series" in case:
        shutil.copyfile(CORPUS / case["series"], series)
    if "sdist" in case:
        path, sha = _sdists().build(case["sdist"], upstream.sdist.parent)
        write_base(upstream.base_folder, "demo", "1.0", "1" * 40, sha, filename=path.name)
    outside_before = outside_state(upstream, hermetic_seal)

    result = upstream.run("unpatch")

    assert result.code == case["exit"], result.output
    assert case["message"] in result.stderr
    if case["exit"] == 0:
        return
    assert "Traceback" not in result.output
    if case.get("patches"):
        assert case["patches"][-1] in result.stderr  # the refused patch file is named
    assert snapshot(upstream.tree) == tree_before
    assert git(upstream.tree, "rev-parse", "HEAD") == head_before
    assert git(upstream.tree, "for-each-ref") == refs_before
    assert sorted(p.name for p in upstream.tree.parent.iterdir()) == [".patchtool.lock", "demo"]
    assert outside_state(upstream, hermetic_seal) == outside_before


def test_corpus_lists_every_file_and_refuses_most_cases() -> None:
    listed = {name for case in CASES for name in case.get("patches", [])}
    assert listed == {p.name for p in (CORPUS / "patches").iterdir()}
    refused = [c for c in CASES if c["exit"] != 0]
    assert len(refused) >= 25 and all(c["exit"] in (6, 10) for c in refused
                                      if c["name"] != "mismatched-header")  # fmt: skip
