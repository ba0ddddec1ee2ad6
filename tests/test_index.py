"""The package-index client: pip's settings, credentials, TLS, proxies, redirects,
redaction and downloads, against real servers on this machine (threads).

pip's settings reach every test through PIP_* variables only (PIP_CONFIG_FILE is
os.devnull unless a test writes a file), and the settings caches are cleared
around each test."""

from __future__ import annotations

import base64
import hashlib
import http.client
import http.server
import json
import os
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme
from helpers import SyntheticUpstream, git, make_sdist

from patchtool.core.errors import IntegrityError, NetworkError, NotFoundError, UsageError
from patchtool.core.report import RecordingReporter
from patchtool.sources.bases import NewBaseSpec, resolve_new_base
from patchtool.sources.cache import BaseCache, cache_root
from patchtool.sources.index.client import IndexClient, IndexFile
from patchtool.sources.index.credentials import redact
from patchtool.sources.index.pages import JSON_TYPE
from patchtool.sources.index.settings import (
    IndexSettings,
    load_settings,
    parse_pip_config,
    pip_default_index,
)
from patchtool.sources.index.transport import CREDENTIALS_HINT, TLS_HINT
from patchtool.sources.sdist import obtain_sdist
from patchtool.store.model import BaseRef, PypiSource
from patchtool.store.resolve import Store

# The CLI runs in this process: the servers are threads of it.
pytestmark = pytest.mark.cli_in_process

PASSWORD = "s3cret-Pa55"
TINY = "demo-2.0.tar.gz"


@pytest.fixture(autouse=True)
def pip_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No pip setting, proxy, CA bundle or .netrc of this machine reaches a test."""
    for name in list(os.environ):
        if (
            name.startswith("PIP_")
            or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
            or name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC")
        ):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Site:
    """A package index: a page for project demo (PEP 691 JSON with hashes, or PEP 503
    HTML without), its files, and every request's path and Authorization header."""

    files: dict[str, bytes]
    credentials: tuple[str, str] | None = None
    html: bool = False
    redirects: dict[str, str] = field(default_factory=dict)
    status: int | None = None  # answer every request with this status
    truncate: bool = False  # announce more bytes of a file than are sent
    pages: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # path: (body, type), as is
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                authorization = self.headers.get("Authorization")
                site.requests.append((self.path, authorization))
                if site.status is not None:
                    self.answer(site.status, b"broken", "text/plain")
                elif self.path in site.pages:
                    self.answer(200, *site.pages[self.path])
                elif self.path in site.redirects:
                    self.answer(302, b"", "text/plain", Location=site.redirects[self.path])
                elif site.credentials and authorization != basic(*site.credentials):
                    self.answer(401, b"who are you?", "text/plain",
                                **{"WWW-Authenticate": 'Basic realm="index"'})  # fmt: skip
                elif self.path == "/simple/demo/" and site.html:
                    links = "".join(f'<a href="../../files/{n}">{n}</a>' for n in site.files)
                    self.answer(200, f"<html><body>{links}</body></html>".encode(), "text/html")
                elif self.path == "/simple/demo/":
                    page = {"meta": {"api-version": "1.0"}, "name": "demo", "files": [
                        {"filename": n, "url": f"../../files/{n}",
                         "hashes": {"sha256": hashlib.sha256(d).hexdigest()}}
                        for n, d in site.files.items()]}  # fmt: skip
                    self.answer(200, json.dumps(page).encode(), "application/vnd.pypi.simple.v1+json")
                elif self.path.startswith("/files/") and self.path[7:] in site.files:
                    body = site.files[self.path[7:]]
                    if site.truncate:
                        self.answer(200, body[:10], "application/octet-stream",
                                    length=len(body))  # fmt: skip
                    else:
                        self.answer(200, body, "application/octet-stream")
                else:
                    self.answer(404, b"not found", "text/plain")

            def answer(self, status: int, body: bytes, kind: str, length: int | None = None,
                       **headers: str) -> None:  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@dataclass
class Proxy:
    """An HTTP proxy: forwards absolute-URI GETs to 127.0.0.1 on the URL's port, and
    records each request's target and Proxy-Authorization header."""

    seen: list[tuple[str, str | None]] = field(default_factory=list)

    def handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                proxy.seen.append((self.path, self.headers.get("Proxy-Authorization")))
                target = urllib.parse.urlsplit(self.path)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-authorization", "connection")}  # fmt: skip
                upstream = http.client.HTTPConnection("127.0.0.1", target.port)
                upstream.request("GET", target.path, headers=headers)
                response = upstream.getresponse()
                body = response.read()
                self.send_response(response.status)
                self.send_header("Content-Type", response.getheader("Content-Type", ""))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                upstream.close()

            def log_message(self, *args: object) -> None:
                pass

        return Handler


Serve = Callable[..., int]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """Start a threaded server for a handler (TLS with `tls`); return its port."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(handler: type[http.server.BaseHTTPRequestHandler],
              tls: ssl.SSLContext | None = None) -> int:  # fmt: skip
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tiny_sdist(tmp_path: Path) -> bytes:
    """A tiny sdist, demo-2.0.tar.gz."""
    made = tmp_path / "made"
    made.mkdir()
    return make_sdist(made / TINY, "demo-2.0", {"setup.py": b"# demo 2.0\n"}).read_bytes()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- redaction


@pytest.mark.parametrize("text,expected", [
    ("https://user:secret@mirror.example.invalid/simple",
     "https://user:****@mirror.example.invalid/simple"),
    ("https://TOKEN123@mirror.example.invalid/simple", "https://****@mirror.example.invalid/simple"),
    ("http://u%40corp:p%40ss@127.0.0.1:8080/x/", "http://u%40corp:****@127.0.0.1:8080/x/"),
    ("https://user:p@ss@mirror.example.invalid/", "https://user:****@mirror.example.invalid/"),
    ("https://user:@mirror.example.invalid/", "https://user:****@mirror.example.invalid/"),
    ("https://mirror.example.invalid/simple", "https://mirror.example.invalid/simple"),
    ("cannot reach https://a:b@one.invalid/ or http://c@two.invalid/ (mail me@three.invalid)",
     "cannot reach https://a:****@one.invalid/ or http://****@two.invalid/ (mail me@three.invalid)"),
    ("/srv/sdists@2/demo.tar.gz", "/srv/sdists@2/demo.tar.gz"),
    ("git@host.invalid:vllm.git", "git@host.invalid:vllm.git"),
])  # fmt: skip
def test_redact_masks_every_password_and_lone_token(text: str, expected: str) -> None:
    assert redact(text) == expected


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("sections,expected", [
    ((":env:", "download", "install", "global"), ":env:"),
    (("download", "install", "global"), "download"),
    (("install", "global"), "install"),
    (("global", "wheel"), "global"),
    (("wheel",), None),
])  # fmt: skip
def test_a_key_takes_the_value_of_the_strongest_section(sections: tuple[str, ...],
                                                        expected: str | None) -> None:  # fmt: skip
    listing = "".join(
        f"{section}.index-url='https://{section.strip(':')}.invalid/simple'\n"
        for section in sections
    )
    settings = parse_pip_config(listing)
    assert settings.index_url == (f"https://{expected.strip(':')}.invalid/simple"
                                  if expected else None)  # fmt: skip


def test_every_setting_is_parsed() -> None:
    listing = (
        ":env:.config-file='/dev/null'\n"
        "global.index-url='https://alice:pw@one.invalid/simple'\n"
        "global.extra-index-url='https://two.invalid/simple\\nhttps://three.invalid/simple'\n"
        "global.find-links='/srv/wheels file:///srv/more'\n"
        "install.no-index='true'\n"
        "global.cert='/etc/ca.pem'\n"
        "download.client-cert='/etc/client.pem'\n"
        ":env:.trusted-host='one.invalid two.invalid:8443'\n"
        "global.proxy='proxy.invalid:3128'\n"
        "global.timeout='7'\n"
        ":env:.default-timeout='30.5'\n"
    )
    assert parse_pip_config(listing) == IndexSettings(
        index_url="https://alice:pw@one.invalid/simple",
        extra_index_urls=("https://two.invalid/simple", "https://three.invalid/simple"),
        find_links=("/srv/wheels", "file:///srv/more"),
        no_index=True,
        cert=Path("/etc/ca.pem"),
        client_cert=Path("/etc/client.pem"),
        trusted_hosts=("one.invalid", "two.invalid:8443"),
        proxy="proxy.invalid:3128",
        timeout=30.5,
    )
    assert parse_pip_config("") == IndexSettings()


def test_a_setting_that_is_not_yes_or_no_is_refused() -> None:
    with pytest.raises(UsageError) as refused:
        parse_pip_config(":env:.no-index='maybe'\n")
    assert refused.value.message == "pip's setting :env:.no-index='maybe' is not a yes/no value"


def test_settings_come_from_pip_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pip.conf"
    config.write_text(
        "[global]\nindex-url = https://global.invalid/simple\ntimeout = 9\n"
        "[install]\nindex-url = https://install.invalid/simple\n"
        "extra-index-url =\n    https://two.invalid/simple\n    https://three.invalid/simple\n"
    )
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_TRUSTED_HOST", "two.invalid three.invalid:8443")
    settings = load_settings()
    assert settings.index_url == "https://install.invalid/simple"
    assert settings.extra_index_urls == ("https://two.invalid/simple", "https://three.invalid/simple")
    assert settings.trusted_hosts == ("two.invalid", "three.invalid:8443")
    assert settings.timeout == 9.0
    assert load_settings() is settings  # asked once


def test_pip_default_index_is_pips_own_and_only_a_fallback() -> None:
    from pip._internal.models.index import PyPI

    assert pip_default_index() == PyPI.simple_url
    configured = IndexClient(IndexSettings(index_url="https://one.invalid/simple",
                                           extra_index_urls=("https://two.invalid/simple",)))  # fmt: skip
    assert configured.indexes() == ("https://one.invalid/simple", "https://two.invalid/simple")
    assert IndexClient(IndexSettings()).indexes() == (PyPI.simple_url,)
    assert IndexClient(IndexSettings(no_index=True)).indexes() == ()


# --------------------------------------------------------------------------- credentials


def test_an_index_behind_basic_auth_takes_the_password_from_the_index_url(
    upstream: SyntheticUpstream, serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    site = Site({"demo-1.0.tar.gz": upstream.sdist.read_bytes()}, credentials=("alice", PASSWORD))
    port = serve(site.handler())
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://alice:{PASSWORD}@127.0.0.1:{port}/simple")
    result = upstream.run("unpatch")
    assert result.code == 0, result.stderr
    assert f"downloading demo-1.0.tar.gz from http://alice:****@127.0.0.1:{port}/simple" in result.stderr
    assert site.requests == [("/simple/demo/", basic("alice", PASSWORD)),
                             ("/files/demo-1.0.tar.gz", basic("alice", PASSWORD))]  # fmt: skip
    assert git(upstream.tree, "rev-parse", "HEAD").strip() == upstream.commit
    assert PASSWORD not in result.output


def test_a_wrong_password_is_a_network_error_that_never_shows_it(
    upstream: SyntheticUpstream, serve: Serve,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    site = Site({"demo-1.0.tar.gz": upstream.sdist.read_bytes()}, credentials=("alice", PASSWORD))
    port = serve(site.handler())
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://alice:wrong-{PASSWORD}@127.0.0.1:{port}/simple")
    result = upstream.run("unpatch")
    assert result.code == 11
    assert result.stderr.splitlines()[-2:] == [
        f"error: http://127.0.0.1:{port}/simple/demo/: the index refused the credentials of "
        "user 'alice' from pip's settings (HTTP 401 Unauthorized)",
        f"hint: {CREDENTIALS_HINT}",
    ]
    assert PASSWORD not in result.output
    assert not upstream.tree.exists()


def test_an_index_that_asks_for_credentials_when_none_are_configured(
    tmp_path: Path, serve: Serve, tiny_sdist: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = serve(Site({TINY: tiny_sdist}, credentials=("alice", PASSWORD)).handler())
    client = IndexClient(IndexSettings(index_url=f"http://127.0.0.1:{port}/simple"))
    with pytest.raises(NetworkError) as refused:
        client.find("demo", TINY)
    assert refused.value.message == (
        f"http://127.0.0.1:{port}/simple/demo/: the index asks for credentials and none are "
        "configured for 127.0.0.1 (HTTP 401 Unauthorized)"
    )


def test_netrc_credentials_are_used_for_their_host(
    tmp_path: Path, serve: Serve, tiny_sdist: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = Site({TINY: tiny_sdist}, credentials=("bob", PASSWORD))
    port = serve(site.handler())
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1 login bob password {PASSWORD}\n")
    monkeypatch.setenv("NETRC", str(netrc))
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    client = IndexClient()
    found = client.locate("demo", TINY)
    target = tmp_path / TINY
    assert client.download(found.url, target, found.sha256) == sha(tiny_sdist)
    assert target.read_bytes() == tiny_sdist
    assert [auth for _, auth in site.requests] == [basic("bob", PASSWORD)] * 2
    netrc.write_text("machine 127.0.0.1 login bob password wrong-password\n")
    with pytest.raises(NetworkError) as refused:
        IndexClient().find("demo", TINY)
    assert refused.value.message == (
        f"http://127.0.0.1:{port}/simple/demo/: the index refused the credentials of user "
        f"'bob' from {netrc} (HTTP 401 Unauthorized)"
    )
    assert "wrong-password" not in refused.value.message + str(refused.value.hint)


def test_a_redirect_to_another_host_does_not_carry_the_credentials(
    tmp_path: Path, serve: Serve, tiny_sdist: bytes
) -> None:
    files = Site({TINY: tiny_sdist})
    files_port = serve(files.handler())
    site = Site({TINY: tiny_sdist}, credentials=("alice", PASSWORD), redirects={
        f"/files/{TINY}": f"http://localhost:{files_port}/files/{TINY}"})  # fmt: skip
    port = serve(site.handler())
    client = IndexClient(IndexSettings(index_url=f"http://alice:{PASSWORD}@127.0.0.1:{port}/simple"))
    found = client.locate("demo", TINY)
    assert client.download(found.url, tmp_path / TINY, sha(tiny_sdist)) == sha(tiny_sdist)
    assert site.requests == [("/simple/demo/", basic("alice", PASSWORD)),
                             (f"/files/{TINY}", basic("alice", PASSWORD))]  # fmt: skip
    assert files.requests == [(f"/files/{TINY}", None)]


# --------------------------------------------------------------------------- TLS


@pytest.fixture
def tls_index(serve: Serve, tiny_sdist: bytes, tmp_path: Path) -> tuple[int, Path, trustme.CA]:
    """An HTTPS index with a certificate of its own CA; (port, the CA's file, the CA)."""
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    port = serve(Site({TINY: tiny_sdist}).handler(), tls=context)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    return port, ca_file, authority


def fetch_tiny(tmp_path: Path) -> str:
    """Find and download demo-2.0.tar.gz as pip's settings say; its sha256."""
    client = IndexClient()
    found = client.locate("demo", TINY)
    target = tmp_path / "downloads" / TINY
    target.parent.mkdir(exist_ok=True)
    return client.download(found.url, target, found.sha256)


def test_https_index_with_its_ca_in_pip_cert(tls_index: tuple[int, Path, trustme.CA],
                                             tmp_path: Path, tiny_sdist: bytes,
                                             monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    port, ca_file, _ = tls_index
    monkeypatch.setenv("PIP_INDEX_URL", f"https://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_CERT", str(ca_file))
    assert fetch_tiny(tmp_path) == sha(tiny_sdist)


def test_https_index_with_an_unknown_ca_is_a_certificate_failure(
    tls_index: tuple[int, Path, trustme.CA], upstream: SyntheticUpstream, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    port, _, _ = tls_index
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"https://127.0.0.1:{port}/simple")
    result = upstream.run("unpatch")
    assert result.code == 11
    assert result.stderr.splitlines()[-2:] == [
        f"error: cannot reach https://127.0.0.1:{port}/simple/demo/: TLS certificate "
        "verification failed (unable to get local issuer certificate)",
        f"hint: {TLS_HINT}",
    ]


def test_https_index_on_a_trusted_host_is_not_verified(
    tls_index: tuple[int, Path, trustme.CA], tmp_path: Path, tiny_sdist: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    port, _, _ = tls_index
    monkeypatch.setenv("PIP_INDEX_URL", f"https://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_TRUSTED_HOST", f"other.invalid 127.0.0.1:{port}")
    assert fetch_tiny(tmp_path) == sha(tiny_sdist)


def test_requests_ca_bundle_is_the_fallback_for_pip_cert(
    tls_index: tuple[int, Path, trustme.CA], tmp_path: Path, tiny_sdist: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    port, ca_file, _ = tls_index
    monkeypatch.setenv("PIP_INDEX_URL", f"https://127.0.0.1:{port}/simple")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(ca_file))
    assert fetch_tiny(tmp_path) == sha(tiny_sdist)


def test_an_index_that_requires_a_client_certificate(
    serve: Serve, tiny_sdist: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    authority = trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    authority.issue_cert("127.0.0.1").configure_cert(context)
    authority.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    port = serve(Site({TINY: tiny_sdist}).handler(), tls=context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    authority.issue_cert("vendor-ci").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "client.pem"))  # fmt: skip
    monkeypatch.setenv("PIP_INDEX_URL", f"https://127.0.0.1:{port}/simple")
    monkeypatch.setenv("PIP_CERT", str(tmp_path / "ca.pem"))
    monkeypatch.setenv("PIP_CLIENT_CERT", str(tmp_path / "client.pem"))
    assert fetch_tiny(tmp_path) == sha(tiny_sdist)


# --------------------------------------------------------------------------- proxies and http


def test_pip_proxy_carries_every_request(serve: Serve, tiny_sdist: bytes, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The index's host name exists only for the proxy, which sends it to 127.0.0.1."""
    port = serve(Site({TINY: tiny_sdist}).handler())
    proxy = Proxy()
    proxy_port = serve(proxy.handler())
    monkeypatch.setenv("PIP_INDEX_URL", f"http://packages.invalid:{port}/simple")
    monkeypatch.setenv("PIP_TRUSTED_HOST", "packages.invalid")
    monkeypatch.setenv("PIP_PROXY", f"http://carol:{PASSWORD}@127.0.0.1:{proxy_port}")
    assert fetch_tiny(tmp_path) == sha(tiny_sdist)
    assert proxy.seen == [
        (f"http://packages.invalid:{port}/simple/demo/", basic("carol", PASSWORD)),
        (f"http://packages.invalid:{port}/files/{TINY}", basic("carol", PASSWORD)),
    ]


def test_an_unreachable_proxy_is_named_without_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_INDEX_URL", "https://packages.invalid/simple")
    monkeypatch.setenv("PIP_PROXY", f"carol:{PASSWORD}@127.0.0.1:9")  # nothing listens there
    with pytest.raises(NetworkError) as failed:
        IndexClient().find("demo", TINY)
    assert failed.value.message == (
        "cannot reach https://packages.invalid/simple/demo/ through the proxy "
        "http://carol:****@127.0.0.1:9: Connection refused"
    )


def test_plain_http_to_a_host_that_is_not_trusted_is_refused() -> None:
    client = IndexClient(IndexSettings(index_url="http://packages.invalid/simple"))
    with pytest.raises(NetworkError) as refused:
        client.find("demo", TINY)
    assert refused.value.message == (
        "http://packages.invalid/simple/demo/: plain http to packages.invalid, which is not a "
        "trusted host; patchtool does not fetch over it"
    )
    assert refused.value.hint == (
        "Use the index's https address, or, if you trust the network to packages.invalid, "
        "add it to pip's trusted-host (`pip config set global.trusted-host packages.invalid`)."
    )


def test_a_server_error_names_the_page_and_the_status(serve: Serve, tiny_sdist: bytes) -> None:
    port = serve(Site({TINY: tiny_sdist}, status=503).handler())
    client = IndexClient(IndexSettings(index_url=f"http://127.0.0.1:{port}/simple"))
    with pytest.raises(NetworkError) as failed:
        client.find("demo", TINY)
    assert failed.value.message == (
        f"http://127.0.0.1:{port}/simple/demo/: the index answered HTTP 503 Service Unavailable"
    )


# --------------------------------------------------------------------------- where files are


def test_an_unreachable_index_is_skipped_when_a_later_one_has_the_file(
    serve: Serve, tiny_sdist: bytes
) -> None:
    port = serve(Site({TINY: tiny_sdist}).handler())
    reporter = RecordingReporter()
    client = IndexClient(IndexSettings(
        index_url="http://127.0.0.1:9/simple",  # nothing listens there
        extra_index_urls=(f"http://127.0.0.1:{port}/missing", f"http://127.0.0.1:{port}/simple"),
    ), reporter)  # fmt: skip
    assert client.find("Demo", TINY) == IndexFile(
        f"http://127.0.0.1:{port}/files/{TINY}", sha(tiny_sdist), f"http://127.0.0.1:{port}/simple"
    )
    assert reporter.lines == [
        ("warn", "skipped: cannot reach http://127.0.0.1:9/simple/demo/: Connection refused")
    ]


def test_no_index_with_find_links_folder_and_page(serve: Serve, tiny_sdist: bytes,
                                                  tmp_path: Path) -> None:  # fmt: skip
    folder = tmp_path / "wheels"
    folder.mkdir()
    (folder / TINY).write_bytes(tiny_sdist)
    settings = IndexSettings(index_url="http://127.0.0.1:9/simple", no_index=True,
                             find_links=(str(folder),))  # fmt: skip
    assert IndexClient(settings).find("demo", TINY) == IndexFile(
        (folder / TINY).as_uri(), None, str(folder))
    page = Site({TINY: tiny_sdist}, html=True)
    port = serve(page.handler())
    settings = IndexSettings(no_index=True, find_links=(
        str(tmp_path / "missing"), f"http://127.0.0.1:{port}/simple/demo/"))  # fmt: skip
    assert IndexClient(settings).find("demo", TINY) == IndexFile(
        f"http://127.0.0.1:{port}/files/{TINY}", None, f"http://127.0.0.1:{port}/simple/demo/")
    with pytest.raises(NotFoundError) as missing:
        IndexClient(settings).locate("demo", "demo-3.0.tar.gz")
    assert missing.value.message == (
        "demo-3.0.tar.gz was not found on any configured package index (searched: find-links "
        f"{tmp_path / 'missing'}, find-links http://127.0.0.1:{port}/simple/demo/)"
    )


def test_a_file_on_no_index_lists_the_indexes_redacted(serve: Serve, tiny_sdist: bytes,
                                                       upstream: SyntheticUpstream,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    port = serve(Site({TINY: tiny_sdist}, credentials=("alice", PASSWORD)).handler())
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://alice:{PASSWORD}@127.0.0.1:{port}/simple")
    result = upstream.run("unpatch")
    assert result.code == 3
    assert result.stderr.splitlines()[-2:] == [
        "error: demo-1.0.tar.gz was not found on any configured package index (searched: "
        f"http://alice:****@127.0.0.1:{port}/simple)",
        "hint: Check `pip config list`, or pass the file with --sdist PATH (or set "
        "PATCHTOOL_SDIST_PATH) for an air-gapped site.",
    ]
    assert PASSWORD not in result.output


# --------------------------------------------------------------------------- downloads


def parts_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.name.endswith(".part"))


def test_a_download_cut_short_leaves_nothing(serve: Serve, tiny_sdist: bytes, tmp_path: Path) -> None:
    port = serve(Site({TINY: tiny_sdist}, truncate=True).handler())
    client = IndexClient(IndexSettings(index_url=f"http://127.0.0.1:{port}/simple"))
    with pytest.raises(NetworkError) as failed:
        client.download(f"http://127.0.0.1:{port}/files/{TINY}", tmp_path / TINY, None)
    assert failed.value.message == (
        f"the download of http://127.0.0.1:{port}/files/{TINY} broke off: "
        f"{len(tiny_sdist) - 10} bytes missing"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "made"]


def test_a_download_that_does_not_match_or_is_interrupted_leaves_nothing(
    serve: Serve, tiny_sdist: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = serve(Site({TINY: tiny_sdist}).handler())
    client = IndexClient(IndexSettings(index_url=f"http://127.0.0.1:{port}/simple"))
    url = f"http://127.0.0.1:{port}/files/{TINY}"
    target = tmp_path / "cache" / TINY
    target.parent.mkdir()
    with pytest.raises(IntegrityError) as mismatch:
        client.download(url, target, "0" * 64, Path("/store/base.toml"))
    assert mismatch.value.message == (
        f"{url}: sha256 {sha(tiny_sdist)} differs from {'0' * 64} recorded in /store/base.toml"
    )

    def interrupt(fd: int) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as patched:
        patched.setattr(os, "fsync", interrupt)
        with pytest.raises(KeyboardInterrupt):
            client.download(url, target, sha(tiny_sdist))
    assert list(target.parent.iterdir()) == []


def test_obtain_sdist_removes_a_killed_runs_part_file(serve: Serve, upstream: SyntheticUpstream,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    port = serve(Site({"demo-1.0.tar.gz": upstream.sdist.read_bytes()}).handler())
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    cache = BaseCache(cache_root())
    base = BaseRef("devA", "demo-1.0", "demo", "1.0", upstream.commit,
                   PypiSource("demo-1.0.tar.gz", upstream.sha256), upstream.base_folder)  # fmt: skip
    folder = cache.sdist_path(PypiSource("demo-1.0.tar.gz", upstream.sha256)).parent
    folder.mkdir(parents=True)
    (folder / ".demo-1.0.tar.gz.killed.part").write_bytes(b"half")
    (folder / ".other.tar.gz.live.part").write_bytes(b"someone else's")
    reporter = RecordingReporter()
    archive = obtain_sdist(base, cache, reporter, ())
    assert archive.read_bytes() == upstream.sdist.read_bytes()
    assert sorted(p.name for p in folder.iterdir()) == [".other.tar.gz.live.part", "demo-1.0.tar.gz"]
    assert reporter.lines == [
        ("step", f"downloading demo-1.0.tar.gz from http://127.0.0.1:{port}/simple")
    ]


def test_rebase_downloads_an_unhashed_sdist_into_the_cache(serve: Serve, upstream: SyntheticUpstream,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    data = make_sdist(upstream.root / "demo-1.1.tar.gz", "demo-1.1",
                      {"setup.py": b"# demo 1.1\n"}).read_bytes()  # fmt: skip
    site = Site({"demo-1.1.tar.gz": data}, html=True)  # PEP 503, no hash listed
    port = serve(site.handler())
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    cache = BaseCache(cache_root())
    staging = cache.root / "sdists" / ".unverified"
    staging.mkdir(parents=True)
    (staging / ".demo-1.1.tar.gz.killed.part").write_bytes(b"half")
    reporter = RecordingReporter()
    base = resolve_new_base(NewBaseSpec("demo", "1.1"), Store(upstream.store), "devA", cache,
                            reporter)  # fmt: skip
    assert base.source == PypiSource("demo-1.1.tar.gz", sha(data))
    assert cache.sdist_path(PypiSource("demo-1.1.tar.gz", sha(data))).read_bytes() == data
    assert list(staging.iterdir()) == []
    assert site.requests == [("/simple/demo/", None), ("/files/demo-1.1.tar.gz", None)]
    assert ("step", f"http://127.0.0.1:{port}/simple lists no hash for demo-1.1.tar.gz: "
            "downloading it") in reporter.lines  # fmt: skip


# --------------------------------------------------------------------------- links to local files

PASSWD_PAGE = b'<html><body><a href="file:///etc/passwd">demo-9.9.9.tar.gz</a></body></html>'


def skipped_link(page: str, filename: str, scheme: str) -> str:
    return (f"skipped {filename} on {page}: it links to a {scheme}: URL, and a page from the "
            "network may only link to http and https")  # fmt: skip


def test_a_remote_index_page_never_names_a_local_file(serve: Serve, upstream: SyntheticUpstream,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """issue 19 §7: `<a href="file:///etc/passwd">demo-9.9.9.tar.gz</a>` on an http index
    made `rebase --onto 9.9.9` print `using local sdist /etc/passwd` and import it."""
    assert upstream.run("unpatch").code == 0
    site = Site({}, pages={"/simple/demo/": (PASSWD_PAGE, "text/html")})
    port = serve(site.handler())
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    result = upstream.run("rebase", "--onto", "9.9.9")
    assert result.code == 3, result.output
    assert "using local sdist" not in result.stderr and "/etc/passwd" not in result.stderr
    assert result.stderr.splitlines()[-3:] == [
        "warning: " + skipped_link(f"http://127.0.0.1:{port}/simple/demo/",
                                   "demo-9.9.9.tar.gz", "file"),
        "error: demo-9.9.9.tar.gz was not found on any configured package index (searched: "
        f"http://127.0.0.1:{port}/simple)",
        "hint: Check the version, `pip config list`, or pass the file with --sdist PATH.",
    ]
    assert site.requests == [("/simple/demo/", None)]
    assert not (upstream.store / "devA" / "demo-9.9.9").exists()
    sdists = BaseCache(cache_root()).root / "sdists"
    assert [p.name for p in sdists.rglob("*") if p.is_file()] == ["demo-1.0.tar.gz"]


@pytest.mark.parametrize("link", ["file:///etc/passwd", "file:demo-2.0.tar.gz",
                                  "ftp://127.0.0.1/demo-2.0.tar.gz", "data:,not-an-sdist"])  # fmt: skip
def test_a_find_links_page_over_http_may_only_link_to_http(
    serve: Serve, tiny_sdist: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, link: str
) -> None:
    """A find-links *page* on the network, as HTML and as PEP 691 JSON, listing the
    file at another scheme (a relative-looking `file:` would be the working folder's
    file): skipped with a warning, and the next place that has the file is used."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / TINY).write_bytes(b"the working folder's file")
    good = serve(Site({TINY: tiny_sdist}, html=True).handler())
    html = f'<a href="{link}">{TINY}</a><a href="{link}">other.tar.gz</a>'.encode()
    listing = json.dumps({"meta": {"api-version": "1.0"}, "name": "demo",
                          "files": [{"filename": TINY, "url": link, "hashes": {}}]}).encode()  # fmt: skip
    port = serve(Site({}, pages={"/links.html": (html, "text/html"),
                                 "/links.json": (listing, JSON_TYPE)}).handler())  # fmt: skip
    scheme = link.partition(":")[0]
    for page in (f"http://127.0.0.1:{port}/links.html", f"http://127.0.0.1:{port}/links.json"):
        reporter = RecordingReporter()
        settings = IndexSettings(find_links=(page,), index_url=f"http://127.0.0.1:{good}/simple")
        found = IndexClient(settings, reporter).find("demo", TINY)
        assert found == IndexFile(f"http://127.0.0.1:{good}/files/{TINY}", None,
                                  f"http://127.0.0.1:{good}/simple")  # fmt: skip
        assert found.local_path is None
        assert reporter.lines == [("warn", skipped_link(page, TINY, scheme))]


def test_a_local_find_links_page_may_name_local_files(tmp_path: Path, tiny_sdist: bytes) -> None:
    """What the user configured may be local: a find-links file on this machine
    listing a file: URL is followed."""
    (tmp_path / TINY).write_bytes(tiny_sdist)
    page = tmp_path / "links.html"
    page.write_text(f'<a href="{(tmp_path / TINY).as_uri()}">{TINY}</a>')
    found = IndexClient(IndexSettings(no_index=True, find_links=(str(page),))).find("demo", TINY)
    assert found is not None and found.local_path == tmp_path / TINY


@pytest.mark.parametrize("target", ["ftp://127.0.0.1:9/demo-2.0.tar.gz", "file:///etc/passwd"])
def test_a_redirect_leads_only_to_http_or_https(serve: Serve, tmp_path: Path, target: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """urllib follows a redirect to ftp:// by default (through ftp_proxy, if set)."""
    proxy = Proxy()
    monkeypatch.setenv("ftp_proxy", f"http://127.0.0.1:{serve(proxy.handler())}")
    site = Site({}, redirects={"/simple/demo/": target, f"/files/{TINY}": target})
    port = serve(site.handler())
    client = IndexClient(IndexSettings(index_url=f"http://127.0.0.1:{port}/simple"))
    scheme = target.partition(":")[0]
    with pytest.raises(NetworkError) as page:
        client.find("demo", TINY)
    assert page.value.message == (
        f"http://127.0.0.1:{port}/simple/demo/: redirects to a {scheme}: URL; patchtool "
        "follows redirects to http and https only"
    )
    with pytest.raises(NetworkError) as download:
        client.download(f"http://127.0.0.1:{port}/files/{TINY}", tmp_path / TINY, None)
    assert download.value.message == (
        f"http://127.0.0.1:{port}/files/{TINY}: redirects to a {scheme}: URL; patchtool "
        "follows redirects to http and https only"
    )
    assert proxy.seen == []
    assert not (tmp_path / TINY).exists()
