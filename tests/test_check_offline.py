"""check --offline: with an empty cache it checks what needs no download, records the
rest as skipped (exit 0) and opens no connection; with the source in the cache, or
given with --sdist, it checks fully; a real failure still fails."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CliResult,
    SyntheticUpstream,
    add_git_base,
    check_records,
    commit_all,
    run_cli,
    snapshot,
)

from patchtool.commands.check.offline import forbid_network
from patchtool.commands.check.records import CHECKS
from patchtool.core.errors import OfflineViolationError

SKIPPED_SOURCE = (
    "skipped: demo-1.0's source is not in the cache (needs demo-1.0.tar.gz; run "
    "`patchtool check` once with network access or pass --sdist)"
)
SKIPPED_TREE = "skipped: needs demo-1.0's source (see its source record)"
SUMMARY = (
    "warning: offline: the source, safety, apply and export checks of 1 base(s) were "
    "skipped, their source is not in the cache: devA/demo-1.0"
)


@dataclass
class CountingIndex:
    """A local 'package index' that counts connections and hangs up on each."""

    url: str
    connections: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
def index() -> Iterator[CountingIndex]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    counting = CountingIndex(f"http://127.0.0.1:{listener.getsockname()[1]}/simple/")

    def serve() -> None:
        while True:
            try:
                connection, peer = listener.accept()
            except OSError:  # the listener was shut down: the test is over
                return
            counting.connections.append(peer)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield counting
    listener.shutdown(socket.SHUT_RDWR)
    listener.close()
    thread.join()


@pytest.fixture
def good(upstream: SyntheticUpstream, monkeypatch: pytest.MonkeyPatch) -> SyntheticUpstream:
    """One well-formed patch in the store (unpatch filled the default cache); the
    build folder removed and the local sdist no longer offered."""
    cli = ("--device-type", "devA", "--dir", str(upstream.build))
    assert upstream.cli("unpatch", *cli).code == 0
    core = upstream.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 3\n", "return 33\n"))
    commit_all(upstream.tree, "Make function 3 return 33")
    assert upstream.cli("patch", *cli).code == 0
    shutil.rmtree(upstream.build)
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    return upstream


def run_check(
    world: SyntheticUpstream, index: CountingIndex, cache: Path | None, *args: str
) -> CliResult:
    env = {"PIP_INDEX_URL": index.url, "PIP_CONFIG_FILE": "/dev/null"}
    if cache is not None:
        env["PATCHTOOL_CACHE_DIR"] = str(cache)
    before = snapshot(world.store)
    result = run_cli("--store", str(world.store), "check", *args, env=env)
    assert snapshot(world.store) == before
    return result


def by_check(result: CliResult) -> list[tuple[str, str, Any, bool]]:
    return [
        (r["base"], r["check"], r["ok"], r.get("skipped", False))
        for r in check_records(result.stdout)
    ]


def test_offline_with_an_empty_cache_skips_what_needs_the_source_and_opens_nothing(
    good: SyntheticUpstream, index: CountingIndex, tmp_path: Path
) -> None:
    empty = tmp_path / "empty-cache"
    result = run_check(good, index, empty, "--offline")
    assert result.code == 0, result.output
    assert result.stdout.splitlines() == [
        "ok    devA  -  config",
        "ok    devA  demo-1.0  config",
        "skip  devA  demo-1.0  source",
        f"        {SKIPPED_SOURCE}",
        "ok    devA  demo-1.0  series",
        "skip  devA  demo-1.0  safety",
        f"        {SKIPPED_TREE}",
        "skip  devA  demo-1.0  apply",
        f"        {SKIPPED_TREE}",
        "skip  devA  demo-1.0  export",
        f"        {SKIPPED_TREE}",
        "ok    devA  demo-1.0  lint",
    ]
    assert result.stderr.splitlines()[-1] == f"{SUMMARY}; every check that ran passed"
    assert index.connections == []
    assert not empty.exists()  # offline does not even create the cache

    as_json = run_check(good, index, empty, "--offline", "--json")
    assert as_json.code == 0, as_json.output
    assert by_check(as_json) == [
        ("", "config", True, False),
        ("demo-1.0", "config", True, False),
        ("demo-1.0", "source", None, True),
        ("demo-1.0", "series", True, False),
        ("demo-1.0", "safety", None, True),
        ("demo-1.0", "apply", None, True),
        ("demo-1.0", "export", None, True),
        ("demo-1.0", "lint", True, False),
    ]
    assert index.connections == []

    # The same check online goes to the index: the counter would have seen a connection.
    online = run_check(good, index, empty)
    assert online.code == 11, online.output
    assert len(index.connections) >= 1


def test_offline_with_the_source_in_the_cache_checks_fully(
    good: SyntheticUpstream, index: CountingIndex
) -> None:
    every = [("", "config", True, False)] + [("demo-1.0", c, True, False) for c in CHECKS]
    result = run_check(good, index, None, "--offline", "--json")  # the cache unpatch filled
    assert result.code == 0, result.output
    assert by_check(result) == every
    assert "offline" not in result.stderr
    # Only the cached sdist left, no cache repository: re-imported, still no network.
    cache = Path(os.environ["PATCHTOOL_CACHE_DIR"])
    shutil.rmtree(cache / "repos")
    result = run_check(good, index, None, "--offline", "--json")
    assert result.code == 0, result.output
    assert by_check(result) == every
    assert index.connections == []


def test_offline_with_sdist_checks_fully_from_the_given_file(
    good: SyntheticUpstream, index: CountingIndex, tmp_path: Path
) -> None:
    result = run_check(good, index, tmp_path / "empty", "--offline", "--sdist", str(good.sdist))
    assert result.code == 0, result.output
    assert [line for line in result.stdout.splitlines() if not line.startswith("ok")] == []
    assert index.connections == []


def test_offline_still_fails_on_a_real_failure(
    good: SyntheticUpstream, index: CountingIndex, tmp_path: Path
) -> None:
    patch = good.base_folder / "make-function-3-return-33.patch"
    patch.write_bytes(patch.read_bytes().replace(b"Upstream-Status: Inappropriate [test]\n", b""))
    result = run_check(good, index, tmp_path / "empty", "--offline")
    assert result.code == 7, result.output
    assert "FAIL  devA  demo-1.0  lint\n        make-function-3-return-33.patch: has no " \
        "Upstream-Status: trailer\n" in result.stdout  # fmt: skip
    lines = result.stderr.splitlines()
    assert SUMMARY in lines  # without "every check that ran passed"
    assert "error: 1 check(s) failed: devA/demo-1.0 lint" in lines
    assert index.connections == []


def test_a_git_base_is_skipped_offline_until_the_cache_holds_its_commit(
    good: SyntheticUpstream, index: CountingIndex, tmp_path: Path
) -> None:
    commit = add_git_base(good, tmp_path / "origin")
    cache = tmp_path / "cache"
    args = ("--device-type", "devA", "--commit-id", "git-base")
    offline = run_check(good, index, cache, "--offline", *args)
    assert offline.code == 0, offline.output
    assert offline.stdout.splitlines()[2:4] == [
        "skip  devA  git-base  source",
        f"        skipped: git-base's source is not in the cache (needs commit {commit[:12]} "
        "from its git repository; run `patchtool check` once with network access)",
    ]
    assert offline.stderr.splitlines()[-1] == (
        "warning: offline: the source, safety, apply and export checks of 1 base(s) were "
        "skipped, their source is not in the cache: devA/git-base; every check that ran passed"
    )
    assert run_check(good, index, cache, *args).code == 0  # fetches from the local origin
    filled = run_check(good, index, cache, "--offline", *args)
    assert filled.code == 0, filled.output
    assert "skip" not in filled.stdout and "offline" not in filled.stderr
    assert index.connections == []


def test_the_second_wall_refuses_any_connection_while_offline() -> None:
    with forbid_network(True), pytest.raises(OfflineViolationError, match="getaddrinfo"):
        socket.getaddrinfo("127.0.0.1", 9)
    socket.getaddrinfo("127.0.0.1", 9)  # outside an offline check nothing is refused
