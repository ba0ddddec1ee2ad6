"""What a user reads when a command fails, pinned word for word: one failure per
exit code of README's table (1, an internal error, is a bug and has none), through
the real console entry point, its `error:` and `hint:` lines compared with
tests/golden/errors/<code>-<name>.txt.

Paths, commit ids and hashes that change from run to run are written there as
placeholders (<root>, <home>, <commit>, <sha256>, ...). After a deliberate change
of a message, rewrite the files with

    PATCHTOOL_UPDATE_GOLDEN=1 pytest tests/test_errors_golden.py

and review the diff; without the variable the test only compares."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock
from helpers import (
    NON_APPLYING_PATCH,
    CliResult,
    SyntheticUpstream,
    commit_all,
    error_lines,
    snapshot,
    write_base,
)

from patchtool.core.errors import ExitCode

GOLDEN = Path(__file__).parent / "golden" / "errors"
CORPUS = Path(__file__).parent / "corpus"
UPDATE = os.environ.get("PATCHTOOL_UPDATE_GOLDEN") == "1"


def golden_name(code: ExitCode) -> str:
    return f"{int(code)}-{code.name.lower().replace('_', '-')}.txt"


def golden_text(result: CliResult, world: SyntheticUpstream, home: Path) -> str:
    """The error and hint lines, with this run's own values as placeholders:
    longest first, so that a path is never cut by a shorter one."""
    values = {str(world.root): "<root>", str(home): "<home>", world.sha256: "<sha256>",
              world.commit: "<commit>", world.commit[:12]: "<commit:12>"}  # fmt: skip
    text = "\n".join(error_lines(result)) + "\n"
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, values[value])
    return text


def assert_golden(code: ExitCode, result: CliResult, world: SyntheticUpstream,
                  home: Path) -> None:  # fmt: skip
    assert result.code == code, result.output
    path = GOLDEN / golden_name(code)
    text = golden_text(result, world, home)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.is_file(), f"no golden file {path}: run with PATCHTOOL_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"stderr differs from {path}:\n{result.stderr}"


def test_2_usage_a_build_folder_that_is_the_store(upstream: SyntheticUpstream,
                                                  hermetic_seal: Path) -> None:  # fmt: skip
    before = snapshot(upstream.root)
    result = upstream.run("unpatch", build=upstream.store)
    assert_golden(ExitCode.USAGE, result, upstream, hermetic_seal)
    assert snapshot(upstream.root) == before


def test_3_not_found_an_unknown_device(upstream: SyntheticUpstream, hermetic_seal: Path) -> None:
    result = upstream.cli("unpatch", "--device-type", "devB", "--dir", str(upstream.build))
    assert_golden(ExitCode.NOT_FOUND, result, upstream, hermetic_seal)
    assert not upstream.build.exists()


def test_4_conflict_a_patch_that_does_not_apply(upstream: SyntheticUpstream,
                                                hermetic_seal: Path) -> None:  # fmt: skip
    (upstream.base_folder / "bad.patch").write_text(NON_APPLYING_PATCH)
    (upstream.base_folder / "series").write_text("# demo series\nbad.patch\n")
    result = upstream.run("unpatch")
    assert_golden(ExitCode.CONFLICT, result, upstream, hermetic_seal)
    assert not upstream.tree.exists()


def test_5_dirty_uncommitted_work_in_the_tree(upstream: SyntheticUpstream,
                                              hermetic_seal: Path) -> None:  # fmt: skip
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "setup.py").write_text("# local edit\n")
    before = snapshot(upstream.tree)
    result = upstream.run("unpatch")
    assert_golden(ExitCode.DIRTY, result, upstream, hermetic_seal)
    assert snapshot(upstream.tree) == before


def test_6_integrity_an_sdist_of_another_hash(upstream: SyntheticUpstream,
                                              hermetic_seal: Path) -> None:  # fmt: skip
    write_base(upstream.base_folder, "demo", "1.0", upstream.commit, "0" * 64)
    result = upstream.run("unpatch")
    assert_golden(ExitCode.INTEGRITY, result, upstream, hermetic_seal)
    assert not upstream.tree.exists()


def test_7_stale_a_commit_not_exported(upstream: SyntheticUpstream, hermetic_seal: Path) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "x.txt").write_text("x\n")
    commit_all(upstream.tree, "Add x")
    before = snapshot(upstream.store)
    result = upstream.run("patch", "--check")
    assert_golden(ExitCode.STALE, result, upstream, hermetic_seal)
    assert snapshot(upstream.store) == before


def test_8_build_an_env_sh_that_fails(upstream: SyntheticUpstream, hermetic_seal: Path) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "env.sh").write_text('echo "env.sh: no compiler for $1" >&2\nreturn 3\n')
    commit_all(upstream.tree, "Add env.sh")
    assert upstream.run("patch").code == 0
    result = upstream.run("build-wheel", "--env-arg", "fast", "--out", str(upstream.root / "out"))
    assert_golden(ExitCode.BUILD, result, upstream, hermetic_seal)
    assert not list((upstream.root / "out").glob("*.whl"))


def test_9_locked_another_run_holds_the_build_folder(upstream: SyntheticUpstream,
                                                     hermetic_seal: Path) -> None:  # fmt: skip
    # The lock is held by this process, the run is another one (upstream.run's default).
    (upstream.build / "devA").mkdir(parents=True)
    with FileLock(str(upstream.build / "devA" / ".patchtool.lock")):
        result = upstream.run("unpatch", "--no-wait")
    assert_golden(ExitCode.LOCKED, result, upstream, hermetic_seal)
    assert not upstream.tree.exists()


def test_10_unsafe_a_patch_that_writes_into_git(upstream: SyntheticUpstream,
                                                hermetic_seal: Path) -> None:  # fmt: skip
    shutil.copyfile(CORPUS / "patches" / "git-hooks.patch", upstream.base_folder / "git-hooks.patch")
    (upstream.base_folder / "series").write_text("git-hooks.patch\n")
    result = upstream.run("unpatch")
    assert_golden(ExitCode.UNSAFE, result, upstream, hermetic_seal)
    assert not upstream.tree.exists()


def test_11_network_an_index_that_cannot_be_reached(upstream: SyntheticUpstream,
                                                    hermetic_seal: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for name in list(os.environ):  # no pip setting or proxy of this machine
        if name.startswith("PIP_") or name.lower().endswith("_proxy") or name == "NETRC":
            monkeypatch.delenv(name)
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    result = upstream.run("unpatch")
    assert_golden(ExitCode.NETWORK, result, upstream, hermetic_seal)
    assert not (upstream.build / "devA" / "demo").exists()


def test_placeholders_stand_for_this_runs_values(upstream: SyntheticUpstream,
                                                 hermetic_seal: Path) -> None:  # fmt: skip
    commit = upstream.commit
    result = CliResult(3, "", f"» step\nerror: {upstream.root}/x at {commit} ({commit[:12]}), "
                              f"{upstream.sha256} in {hermetic_seal}\nhint: h\n")  # fmt: skip
    assert golden_text(result, upstream, hermetic_seal) == (
        "error: <root>/x at <commit> (<commit:12>), <sha256> in <home>\nhint: h\n"
    )


def test_every_exit_code_but_internal_has_a_golden_file() -> None:
    expected = {golden_name(code) for code in ExitCode
                if code not in (ExitCode.OK, ExitCode.INTERNAL)}  # fmt: skip
    assert sorted(path.name for path in GOLDEN.iterdir()) == sorted(expected)
