"""Upstream bases: index lookup (HTTP JSON and file:// HTML), hash checks, the
deterministic import, and git-source bases."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import (
    DEMO_FILES,
    SyntheticUpstream,
    add_git_base,
    git,
    make_sdist,
    snapshot,
    write_base,
)

from patchtool.core.gitops import Git
from patchtool.sources.index.client import IndexClient, IndexFile
from patchtool.sources.index.settings import IndexSettings
from patchtool.sources.sdist import import_sdist
from patchtool.store.model import PypiSource


class _Index(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    listed_sha: ClassVar[dict[str, str]] = {}
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path == "/simple/demo/":
            body = json.dumps({"meta": {"api-version": "1.0"}, "name": "demo", "files": [
                {"filename": name, "url": f"../../files/{name}",
                 "hashes": {"sha256": self.listed_sha.get(name)
                            or hashlib.sha256(data).hexdigest()}}
                for name, data in self.files.items()
            ]}).encode()  # fmt: skip
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
        elif self.path.startswith("/files/") and self.path[7:] in self.files:
            body = self.files[self.path[7:]]
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
        else:
            body = b"not found"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_index(upstream: SyntheticUpstream, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A PEP 691 JSON index on 127.0.0.1 serving demo-1.0.tar.gz; the local sdist
    path is withdrawn so the index is the only source."""
    _Index.files = {"demo-1.0.tar.gz": upstream.sdist.read_bytes()}
    _Index.listed_sha = {}
    _Index.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/simple"
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", url)
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    yield url
    server.shutdown()


def test_sdist_is_fetched_from_the_pip_index_and_verified(upstream: SyntheticUpstream,
                                                          http_index: str) -> None:
    result = upstream.run("unpatch")
    assert result.code == 0, result.output
    assert "/simple/demo/" in _Index.requests and "/files/demo-1.0.tar.gz" in _Index.requests
    assert git(upstream.tree, "rev-parse", "HEAD").strip() == upstream.commit
    _Index.requests.clear()
    assert upstream.run("unpatch").code == 0
    assert _Index.requests == []  # the second run uses the cache only


def test_index_listing_a_different_hash_stops_before_download(upstream: SyntheticUpstream,
                                                              http_index: str) -> None:
    _Index.listed_sha = {"demo-1.0.tar.gz": "1" * 64}
    result = upstream.run("unpatch")
    assert result.code == 6
    assert "the index lists demo-1.0.tar.gz with sha256 " + "1" * 64 in result.stderr
    assert "/files/demo-1.0.tar.gz" not in _Index.requests
    assert not upstream.tree.exists()


def test_downloaded_bytes_that_do_not_match_are_not_kept(upstream: SyntheticUpstream,
                                                         http_index: str,
                                                         hermetic_seal: Path) -> None:
    _Index.files = {"demo-1.0.tar.gz": b"tampered" + upstream.sdist.read_bytes()}
    _Index.listed_sha = {"demo-1.0.tar.gz": upstream.sha256}  # the index lies too
    result = upstream.run("unpatch")
    assert result.code == 6
    assert "differs from " + upstream.sha256 in result.stderr
    cached = list((hermetic_seal / "patchtool-cache").rglob("*.tar.gz"))
    assert cached == []
    assert not list((hermetic_seal / "patchtool-cache").rglob("*.part"))


def test_unknown_file_on_the_index_is_not_found(upstream: SyntheticUpstream, http_index: str) -> None:
    _Index.files = {"demo-0.9.tar.gz": b"other"}
    result = upstream.run("unpatch")
    assert result.code == 3
    assert "demo-1.0.tar.gz was not found on any configured package index" in result.stderr
    assert "--sdist" in result.stderr


def test_file_index_in_html_form(tmp_path: Path, upstream: SyntheticUpstream) -> None:
    files = tmp_path / "index" / "files"
    project = tmp_path / "index" / "simple" / "demo"
    files.mkdir(parents=True)
    project.mkdir(parents=True)
    (files / "demo-1.0.tar.gz").write_bytes(upstream.sdist.read_bytes())
    (project / "index.html").write_text(
        '<!DOCTYPE html><html><body><a href="../../files/demo-1.0.tar.gz#sha256='
        f'{upstream.sha256}">demo-1.0.tar.gz</a></body></html>'
    )
    index = (tmp_path / "index" / "simple").as_uri()
    client = IndexClient(IndexSettings(index_url=index))
    assert client.find("Demo", "demo-1.0.tar.gz") == IndexFile(
        (files / "demo-1.0.tar.gz").as_uri(), upstream.sha256, index
    )


def test_same_sdist_gives_the_same_commit_in_any_cache(tmp_path: Path) -> None:
    files = dict(DEMO_FILES)
    sdist = make_sdist(tmp_path / "demo-2.0.tar.gz", "demo-2.0", files, modes={"tools/run.sh": 0o755})
    source = PypiSource("demo-2.0.tar.gz", hashlib.sha256(sdist.read_bytes()).hexdigest())
    commits = set()
    for name in ("one.git", "two.git"):
        Git(tmp_path).run("init", "--quiet", "--bare", str(tmp_path / name))
        commits.add(import_sdist(sdist, tmp_path / name, "demo", "2.0", source))
    assert len(commits) == 1
    commit = commits.pop()
    listing = Git(tmp_path / "one.git").text("ls-tree", "-r", commit)
    assert "100755 blob" in listing.split("tools/run.sh")[0].splitlines()[-1]
    assert "120000 blob" in listing.split("docs/link.md")[0].splitlines()[-1]
    log = Git(tmp_path / "one.git").text("log", "-1", "--format=%an|%cn|%at|%ct|%s", commit)
    assert log == "patchtool|patchtool|1738000000|1738000000|Import demo 2.0 from demo-2.0.tar.gz"


@pytest.mark.parametrize("member,expected", [
    ("/etc/evil", "has an absolute path"),
    ("demo-1.0/../../evil", "climbs out with '..'"),
    ("other-top/file", "is outside the top folder"),
    ("demo-1.0/.git/config", "is inside a .git folder"),
])
def test_hostile_archive_members_are_refused(tmp_path: Path, member: str, expected: str) -> None:
    import io
    import tarfile

    archive = tmp_path / "x.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        ok = tarfile.TarInfo("demo-1.0/setup.py")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"x\n"))
        bad = tarfile.TarInfo(member)
        bad.size = 1
        tar.addfile(bad, io.BytesIO(b"x"))
    Git(tmp_path).run("init", "--quiet", "--bare", str(tmp_path / "r.git"))
    from patchtool.core.errors import UnsafeInputError

    with pytest.raises(UnsafeInputError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        import_sdist(archive, tmp_path / "r.git", "demo", "1.0", PypiSource("x.tar.gz", "0" * 64))
    assert Git(tmp_path / "r.git").run("rev-parse", "--verify", "-q", "HEAD", check=False).returncode


def test_git_source_base(tmp_path: Path, upstream: SyntheticUpstream) -> None:
    commit = add_git_base(upstream, tmp_path / "origin")
    result = upstream.cli("unpatch", "--device-type", "devA", "--dir", str(upstream.build),
                          "--commit-id", commit[:9])  # fmt: skip
    assert result.code == 0, result.output
    assert snapshot(upstream.tree) == {"main.py": b"print('upstream')\n"}
    assert git(upstream.tree, "rev-parse", "HEAD").strip() == commit


def test_base_toml_commit_that_the_sdist_does_not_give_is_refused(upstream: SyntheticUpstream) -> None:
    write_base(upstream.base_folder, "demo", "1.0", "a" * 40, upstream.sha256)
    result = upstream.run("unpatch")
    assert result.code == 6
    assert "imports as commit " + upstream.commit in result.stderr and "a" * 40 in result.stderr

