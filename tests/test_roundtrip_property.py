"""Property: any sequence of edits, commits, renames, deletions, binary, mode and
symlink changes in a build tree survives patch → unpatch exactly, and a second
patch changes no byte."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers import git, make_upstream, snapshot
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from patchtool.commands.export import ExportOptions, export_series
from patchtool.commands.unpatch import UnpatchOptions, unpatch
from patchtool.core.report import NullReporter
from patchtool.sources.cache import BaseCache
from patchtool.store.resolve import Store

POOL = ["a.txt", "dir/b.txt", "dir/c.bin", "other/d.txt", "setup.py", "demo/core.py",
        "demo/data.bin", "tools/run.sh", "docs/link.md", "demo/windows.txt"]  # fmt: skip

CONTENTS = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=200)
    .map(lambda t: t.encode("utf-8")),
    st.binary(max_size=300),
    st.lists(st.sampled_from([b"alpha", b"beta", b"gamma \t", b""]), max_size=8)
    .map(lambda lines: b"\r\n".join(lines)),
    st.sampled_from([b"", b"no newline", "caf\xe9\n".encode("latin-1"), b"\x00\xff" * 40]),
)

OPERATIONS = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(POOL), CONTENTS),
    st.tuples(st.just("delete"), st.sampled_from(POOL), st.none()),
    st.tuples(st.just("rename"), st.sampled_from(POOL), st.sampled_from(POOL)),
    st.tuples(st.just("chmod"), st.sampled_from(POOL), st.none()),
    st.tuples(st.just("symlink"), st.sampled_from(POOL), st.sampled_from(POOL)),
    st.tuples(st.just("commit"), st.none(), st.none()),
)


def apply_operation(tree: Path, operation: tuple[str, str | None, object]) -> None:
    kind, name, argument = operation
    path = tree / name if name else tree
    if kind == "write":
        assert isinstance(argument, bytes)
        if path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(argument)
    elif kind == "delete" and (path.exists() or path.is_symlink()):
        path.unlink()
    elif kind == "rename" and (path.is_file() or path.is_symlink()) and argument != name:
        target = tree / str(argument)
        # Move a link but keep it pointing at the same file: a relative link
        # moved as-is to another folder could point out of the tree, which
        # unpatch rightly refuses. A link moved onto the file it points at
        # would point at itself (a loop, refused too): not an edit to make.
        pointed = (path.parent / os.readlink(path)).resolve() if path.is_symlink() else None
        if pointed == target.resolve():
            return
        if target.exists() or target.is_symlink():
            target.unlink()
        target.parent.mkdir(parents=True, exist_ok=True)
        if pointed is not None:
            path.unlink()
            os.symlink(os.path.relpath(pointed, target.parent), target)
        else:
            os.rename(path, target)
    elif kind == "chmod" and path.is_file() and not path.is_symlink():
        path.chmod(path.stat().st_mode ^ 0o111)
    elif kind == "symlink" and argument != name:
        if path.exists() or path.is_symlink():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(tree / str(argument), path.parent), path)
    elif kind == "commit":
        commit(tree)


def commit(tree: Path) -> None:
    git(tree, "add", "--all")
    if git(tree, "status", "--porcelain"):
        count = git(tree, "rev-list", "--count", "HEAD").strip()
        git(tree, "commit", "--quiet", "-m", f"Change number {count}", "-m", "Why: a test.")


# derandomize: CI runs the same 30 sequences every time (a new random draw on
# each run made a landing depend on luck); the @example pins a sequence a
# random draw found that broke the generator (a link renamed onto its target).
@pytest.mark.slow
@settings(max_examples=30, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(OPERATIONS, min_size=1, max_size=14))
@example(operations=[("symlink", "dir/b.txt", "a.txt"), ("rename", "dir/b.txt", "a.txt")])
def test_any_edit_sequence_round_trips(operations: list[tuple[str, str | None, object]]) -> None:
    root = Path(tempfile.mkdtemp(prefix="patchtool-property-"))
    try:
        world = make_upstream(root)
        os.environ["PATCHTOOL_SDIST_PATH"] = str(world.sdist.parent)
        unpatch_options = UnpatchOptions(store=Store(world.store), build_dir=world.build,
                                         device="devA", cache=BaseCache(root / "cache"))  # fmt: skip
        export_options = ExportOptions(store=Store(world.store), build_dir=world.build,
                                       device="devA")  # fmt: skip
        unpatch(unpatch_options, NullReporter())
        for operation in operations:
            apply_operation(world.tree, operation)
        commit(world.tree)
        expected = snapshot(world.tree)
        export_series(export_options, NullReporter())
        store_after_first = {p.name: p.read_bytes() for p in world.base_folder.iterdir()}
        unpatch(unpatch_options, NullReporter())
        assert snapshot(world.tree) == expected
        second = export_series(export_options, NullReporter())
        assert second.plan.is_noop and not second.written
        assert {p.name: p.read_bytes() for p in world.base_folder.iterdir()} == store_after_first
    finally:
        os.environ.pop("PATCHTOOL_SDIST_PATH", None)
        shutil.rmtree(root, ignore_errors=True)
