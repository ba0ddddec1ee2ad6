"""Issue 22, speed: a warm import, unpatch, check or rebase opens no network
connection when the cache holds what the base names. pip's index points at a
closed port here: any lookup would fail the command.

Also: a build tree's commits may write objects the cache's packs already hold
(an empty `__init__.py`), which makes git touch the shared pack; that does not
cost the next run a full re-verification of the base."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from helpers import make_sdist, run_cli
from test_flagscale import create, diff_yaml, modify, write
from test_flagscale_import import ORIGINAL

VERSIONS = ("9.9.8", "9.9.9")


def closed_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return int(listener.getsockname()[1])


@pytest.fixture
def offline_index(monkeypatch: pytest.MonkeyPatch) -> str:
    """pip's settings: only an index on a port nothing listens on."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    url = f"http://127.0.0.1:{closed_port()}/simple"
    monkeypatch.setenv("PIP_INDEX_URL", url)
    return url


def flagscale_tree(root: Path, version: str) -> Path:
    return write(root, {
        "hardware/Cambricon_MLU/vllm/diff.yaml": diff_yaml("Cambricon_MLU", "vllm", version,
                                                           commit=None),
        "hardware/Cambricon_MLU/vllm/vllm/envs.py.patch": modify("vllm/envs.py", 0),
        "hardware/Cambricon_MLU/vllm/vllm_mlu/__init__.py.patch": create("vllm_mlu/__init__.py")
        .replace("@@ -0,0 +1 @@\n+hello\n", "").replace("index 0000000..3333333\n", ""),
    })  # fmt: skip


def project(root: Path) -> Path:
    (root / "patches").mkdir(parents=True)
    return root


def test_a_warm_import_unpatch_check_and_rebase_need_no_index(
    tmp_path: Path, offline_index: str
) -> None:
    sdists = tmp_path / "sdists"
    sdists.mkdir()
    for version in VERSIONS:
        files = {path: text.encode() for path, text in ORIGINAL.items()}
        files["vllm/version.py"] = version.encode()
        make_sdist(sdists / f"vllm-{version}.tar.gz", f"vllm-{version}", files)
    # Cold: the sdists come from --sdist; the cache imports them.
    cold = project(tmp_path / "cold")
    for version in VERSIONS:
        tree = flagscale_tree(tmp_path / f"FlagScale-{version}", version)
        result = run_cli("import", "--flagscale", str(tree), "--sdist", str(sdists), cwd=cold)
        assert result.code == 0, result.output
        run_cli("unpatch", "-d", "Cambricon_MLU", "--commit-id", f"vllm-{version}", cwd=cold)
    # Warm, into a new store: no --sdist, and the index is unreachable.
    warm = project(tmp_path / "warm")
    tree = tmp_path / "FlagScale-9.9.8"
    imported = run_cli("import", "--flagscale", str(tree), cwd=warm)
    assert imported.code == 0, imported.output
    assert "using vllm-9.9.8.tar.gz imported earlier (sha256 " in imported.stderr
    assert "127.0.0.1" not in imported.output
    for command in (
        ("unpatch", "-d", "Cambricon_MLU"),
        ("check", "-d", "Cambricon_MLU"),
        ("rebase", "-d", "Cambricon_MLU", "--onto", "9.9.9"),
        ("check", "-d", "Cambricon_MLU"),
    ):
        result = run_cli(*command, cwd=warm)
        assert result.code == 0, (command, result.output)
        assert "127.0.0.1" not in result.output
    # Nothing above made the cache's verification of either base stale: git
    # touched the shared pack (the empty __init__.py), and no run re-verified.
    again = run_cli("unpatch", "-d", "Cambricon_MLU", "--commit-id", "vllm-9.9.9", "--force",
                    cwd=warm)  # fmt: skip
    assert again.code == 0, again.output
    assert "verifying" not in again.stderr


def test_a_cold_import_asks_the_index_and_says_it_cannot_reach_it(
    tmp_path: Path, offline_index: str
) -> None:
    cold = project(tmp_path / "cold")
    tree = flagscale_tree(tmp_path / "FlagScale", "9.9.9")
    result = run_cli("import", "--flagscale", str(tree), cwd=cold)
    assert result.code == 11, result.output
    assert result.stdout.splitlines()[1:] == [
        "Cambricon_MLU  vllm     vllm-9.9.9  2      2        0      0      0",
        f"Cambricon_MLU/vllm: cannot reach {offline_index}/vllm/: Connection refused",
        "  Check the settings `pip config list` shows (index-url, extra-index-url, proxy, cert, "
        "client-cert, trusted-host) and the network; on an air-gapped site pass the sdist with "
        "--sdist PATH.",
    ]
