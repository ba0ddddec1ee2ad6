"""The package index: pip's settings, and the one client that talks to an index.

unpatch, check, rebase and import reach a package index through this module and
nothing else. It reads the settings the user's pip reads (`pip config list`,
which includes the PIP_* environment), finds a file by name in find-links
folders and pages and on PEP 691 (JSON) and PEP 503 (HTML) simple indexes, and
downloads it atomically with its sha256 checked.

What pip honours is honoured here: credentials in index and find-links URLs and
in .netrc (sent only to the scheme, host and port they belong to, never across a
redirect to another host), `cert`, `client-cert`, `trusted-host`, `proxy` and
`timeout`. Plain http is used only for trusted hosts and this machine, as pip
does. pip itself is never imported: its internals change without notice, so its
public command line gives the settings (run isolated, see children.py); when
none names an index, pip's documented default is used.

No message built here holds a password: every URL and every exception text goes
through `redact` (and the known secrets are masked) before it reaches an error.

This module never prints; it raises `PatchtoolError`s and warns through a
`Reporter`.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import functools
import hashlib
import html.parser
import http.client
import ipaddress
import json
import netrc
import os
import posixpath
import re
import ssl
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from patchtool import __version__
from patchtool.core import children
from patchtool.core.errors import IntegrityError, NetworkError, NotFoundError, UsageError, quoted
from patchtool.core.fsutil import new_file_mode, open_regular, read_regular_file
from patchtool.core.report import NullReporter, Reporter
from patchtool.core.values import canonical_name
from patchtool.store.model import DEFAULT_LIMITS, PatchLimits, limit_hint

DEFAULT_TIMEOUT = 60.0  # seconds, when pip's settings name none
MASK = "****"
PART_SUFFIX = ".part"
# Where a key is looked up, highest precedence first (pip's PIP_* environment is `:env:`).
SECTIONS = (":env:", "download", "install", "global")
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# What a page or a redirect from an index on the network may lead to: a file:
# link there would make the run use a local file the index chose (issue 19).
# Only what the user configured (find-links folders and files, --sdist,
# PATCHTOOL_SDIST_PATH, a file:// index URL) is ever read locally.
REMOTE_SCHEMES = ("http", "https")
_ACCEPT_PAGE = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_USER_AGENT = f"patchtool/{__version__}"
_BLOCK = 1 << 20
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TRUE = ("1", "yes", "y", "true", "t", "on")
_FALSE = ("0", "no", "n", "false", "f", "off")

GENERAL_HINT = (
    "Check the settings `pip config list` shows (index-url, extra-index-url, proxy, cert, "
    "client-cert, trusted-host) and the network; on an air-gapped site pass the sdist "
    "with --sdist PATH."
)
CREDENTIALS_HINT = (
    "Fix the user and password (or token) in the index URL of pip's settings (`pip config "
    "list` shows where it is set) or in ~/.netrc; on an air-gapped site pass the sdist "
    "with --sdist PATH."
)
TLS_HINT = (
    "For an index with a private certificate authority, point pip's `cert` setting at its "
    "CA bundle (`pip config set global.cert /path/to/ca.pem`); a host you trust without "
    "verification goes in `trusted-host`. On an air-gapped site pass the sdist with "
    "--sdist PATH."
)
PROXY_HINT = (
    "Check pip's `proxy` setting and the http_proxy, https_proxy and no_proxy environment; "
    "on an air-gapped site pass the sdist with --sdist PATH."
)
NOT_FOUND_HINT = (
    "Check the version and `pip config list`, or pass the file with --sdist PATH for an "
    "air-gapped site."
)


# --------------------------------------------------------------------------- redaction

# scheme://userinfo@ — the userinfo runs to the last '@' before the path.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s?#]*)@")


def redact(url: str) -> str:
    """`url` (or any text holding URLs) with every password masked:
    `https://user:****@host/`; a token given alone (`https://TOKEN@host/`) becomes
    `https://****@host/`."""

    def mask(match: re.Match[str]) -> str:
        user, colon, _ = match["userinfo"].partition(":")
        return f"{match['scheme']}{user}:{MASK}@" if colon else f"{match['scheme']}{MASK}@"

    return _USERINFO.sub(mask, url)


# --------------------------------------------------------------------------- pip's settings


@dataclass(frozen=True)
class IndexSettings:
    """pip's settings that decide where files come from and how they are fetched.

    URLs are kept as pip has them, credentials included: show them with `redact`.
    """

    index_url: str | None = None  # None: pip's own default, asked for only when needed
    extra_index_urls: tuple[str, ...] = ()
    find_links: tuple[str, ...] = ()  # folders, file:// URLs, http(s) pages listing files
    no_index: bool = False
    cert: Path | None = None  # CA bundle (file or folder)
    client_cert: Path | None = None  # PEM holding the key and the certificate
    trusted_hosts: tuple[str, ...] = ()  # "host" (any port) or "host:port"
    proxy: str | None = None  # [scheme://][user:passwd@]host:port, for http and https
    timeout: float = DEFAULT_TIMEOUT


def parse_pip_config(listing: str) -> IndexSettings:
    """The settings in the output of `pip config list` (`section.key='value'` lines).
    A key set in several sections takes the value of the first of `SECTIONS`."""
    found: dict[tuple[str, str], str] = {}
    for line in listing.splitlines():
        key, separator, raw = line.partition("=")
        section, _, name = key.strip().rpartition(".")
        if separator and section:
            found[(section, name)] = _unquote(raw.strip())

    def lookup(*names: str) -> tuple[str, str] | None:
        for section in SECTIONS:
            for name in names:
                if (section, name) in found:
                    return f"{section}.{name}", found[(section, name)]
        return None

    def text(*names: str) -> str | None:
        entry = lookup(*names)
        return entry[1].strip() or None if entry else None

    def words(name: str) -> tuple[str, ...]:
        entry = lookup(name)
        return tuple(entry[1].split()) if entry else ()

    no_index = lookup("no-index")
    timeout = lookup("timeout", "default-timeout")
    cert, client_cert = text("cert"), text("client-cert")
    return IndexSettings(
        index_url=text("index-url"),
        extra_index_urls=words("extra-index-url"),
        find_links=words("find-links"),
        no_index=_boolean(*no_index) if no_index else False,
        cert=Path(cert).expanduser() if cert else None,
        client_cert=Path(client_cert).expanduser() if client_cert else None,
        trusted_hosts=words("trusted-host"),
        proxy=text("proxy"),
        timeout=_seconds(*timeout) if timeout else DEFAULT_TIMEOUT,
    )


def _unquote(raw: str) -> str:
    """pip prints each value as a Python literal (`repr`)."""
    if raw[:1] in ("'", '"'):
        with contextlib.suppress(ValueError, SyntaxError):
            value = ast.literal_eval(raw)
            if isinstance(value, str):
                return value
        return raw.strip("'\"")
    return raw


def _boolean(key: str, value: str) -> bool:
    if value.strip().lower() in _TRUE:
        return True
    if value.strip().lower() in _FALSE:
        return False
    raise UsageError(
        f"pip's setting {key}={quoted(value)} is not a yes/no value",
        hint="Fix it with `pip config set` or in the PIP_* environment; "
        "`pip config list` shows where it is set.",
    )


def _seconds(key: str, value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if seconds <= 0:
        raise UsageError(
            f"pip's setting {key}={quoted(value)} is not a number of seconds",
            hint="Fix it with `pip config set` or in the PIP_* environment; "
            "`pip config list` shows where it is set.",
        )
    return seconds


@functools.lru_cache(maxsize=1)
def load_settings() -> IndexSettings:
    """pip's settings as the user's pip reads them (its files and PIP_* variables)."""
    listing = _run_pip("config", "list")
    if listing is None:
        raise UsageError(
            f"`{sys.executable} -I -m pip config list` failed, so pip's index settings are "
            "unknown",
            hint="patchtool reads pip's settings through pip: install pip in this environment "
            "or fix the configuration it complains about; or pass the sdist with --sdist PATH.",
        )
    return parse_pip_config(listing)


@functools.lru_cache(maxsize=1)
def pip_default_index() -> str | None:
    """The index pip uses when its settings name none: pip's own constant, read from
    the pip of this interpreter (the one `_run_pip` asks for the settings). Read in
    this process, not asked of a child (one process less per run), and not written
    into patchtool, which names no index of its own."""
    try:
        from pip._internal.models.index import PyPI
    except ImportError:  # no pip here: _run_pip fails first and says so
        return None
    url = getattr(PyPI, "simple_url", None)
    return url if isinstance(url, str) else None


def _run_pip(*args: str) -> str | None:
    """`pip ARGS` in this interpreter, isolated (`-I`: no pip.py of the working
    folder, no PYTHON* variable adds code) and from the neutral folder. It
    inherits the rest of the environment: the PIP_* variables, HOME and the XDG
    folders are where the user's pip settings live, and those are what it reads."""
    try:
        completed = children.run(
            children.python_command("-m", "pip", *args),
            cwd=children.NEUTRAL_FOLDER,
            env=children.environment(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
    except (OSError, children.TimeoutExpired):
        return None
    return completed.stdout if completed.returncode == 0 else None


# --------------------------------------------------------------------------- credentials

Origin = tuple[str, str, int]  # scheme, lower-case host, port


def _origin(parts: urllib.parse.SplitResult) -> Origin:
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default


@dataclass(frozen=True)
class _Credential:
    username: str
    password: str = field(repr=False)
    source: str  # "pip's settings" or the .netrc file

    def header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode("ascii")
        return f"Basic {token}"

    def describe(self) -> str:
        if self.password or self.source != "pip's settings":
            return f"the credentials of user {quoted(self.username)} from {self.source}"
        return f"the token from {self.source}"  # a token given alone is a secret itself

    def secrets(self) -> tuple[str, ...]:
        if self.password:
            return (self.password,)
        return (self.username,) if self.source == "pip's settings" else ()


def split_credentials(url: str) -> tuple[str, _Credential | None]:
    """`url` without its userinfo, and the credentials the userinfo held."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    credential = _Credential(
        urllib.parse.unquote(user), urllib.parse.unquote(password), "pip's settings"
    )
    return clean, credential


def _netrc_path() -> Path:
    return Path(os.environ.get("NETRC") or "~/.netrc").expanduser()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- pages


class _AnchorParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href") or ""
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _listed_sha256(value: object) -> str | None:
    """A listed sha256, if it is one (anything else counts as no hash listed)."""
    if isinstance(value, str) and _SHA256.fullmatch(value):
        return value.lower()
    return None


def _listed_size(value: object) -> int | None:
    """A listed size (PEP 700's `size`), if it is one."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _files_on_page(
    body: bytes, content_type: str, base_url: str
) -> Iterator[tuple[str, str, str | None, int | None]]:
    """(file name, URL, listed sha256, listed size) for each file a PEP 691 or PEP
    503 page lists. Raises ValueError for a JSON page that is not valid."""
    if "json" in content_type:
        data = json.loads(body)
        files = data.get("files") if isinstance(data, dict) else None
        if not isinstance(files, list):
            raise ValueError("it has no list of files")
        for entry in files:
            if isinstance(entry, dict) and isinstance(entry.get("url"), str):
                hashes = entry.get("hashes")
                listed = _listed_sha256(hashes.get("sha256")) if isinstance(hashes, dict) else None
                url = urllib.parse.urljoin(base_url, entry["url"])
                size = _listed_size(entry.get("size"))
                yield str(entry.get("filename", "")), url.split("#", 1)[0], listed, size
        return
    parser = _AnchorParser()
    parser.feed(body.decode("utf-8", "replace"))
    for href, text in parser.links:
        url = urllib.parse.urljoin(base_url, href)
        address, _, fragment = url.partition("#")
        name = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(address).path))
        algorithm, _, value = fragment.partition("=")
        listed = _listed_sha256(value) if algorithm == "sha256" else None
        yield name, address, listed, None
        if text != name:
            yield text, address, listed, None


# --------------------------------------------------------------------------- the client


@dataclass(frozen=True)
class IndexFile:
    """A file found by name: where to fetch it, the sha256 its listing gives, and the
    index, find-links page or folder that listed it (redacted, for messages)."""

    url: str
    sha256: str | None
    origin: str
    size: int | None = None  # as the index lists it (PEP 700), if it does

    @property
    def local_path(self) -> Path | None:
        """The file itself, for a find-links folder or a file:// index."""
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme != "file":
            return None
        return Path(urllib.request.url2pathname(parts.path))


class _RequestGuard(urllib.request.BaseHandler):
    """Runs before every request, redirected ones included."""

    def __init__(self, prepare: Callable[[urllib.request.Request], urllib.request.Request]):
        self._prepare = prepare

    def http_request(self, request: urllib.request.Request) -> urllib.request.Request:
        return self._prepare(request)

    https_request = http_request


class _RedirectGuard(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to http or https. urllib's own handler would follow
    one to ftp:// too (through a proxy from ftp_proxy) and answers one to file:
    with a bare HTTP error; this says what happened."""

    def http_error_302(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
    ) -> Any:
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urllib.parse.urljoin(req.full_url, location)
            scheme = urllib.parse.urlsplit(target).scheme
            if scheme not in REMOTE_SCHEMES:
                fp.close()
                raise NetworkError(
                    f"{redact(req.full_url)}: redirects to a {_shown_scheme(scheme)} URL; "
                    "patchtool follows redirects to http and https only",
                    hint=GENERAL_HINT,
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _shown_scheme(scheme: str) -> str:
    """A URL scheme from the network, as a message shows it (bounded)."""
    return f"{scheme[:20]}:" if scheme else "scheme-less"


class _TlsHandler(urllib.request.HTTPSHandler):
    """HTTPS with a TLS context chosen per request: verified, or not for a trusted host.
    The target is read from the full URL, which is the index's even through a proxy."""

    def __init__(self, context_for: Callable[[str], ssl.SSLContext]) -> None:
        super().__init__()
        self._context_for = context_for

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        context = self._context_for(req.full_url)
        return self.do_open(http.client.HTTPSConnection, req, context=context)


class IndexClient:
    """Finds files on the indexes and find-links of pip's settings and downloads them."""

    def __init__(
        self,
        settings: IndexSettings | None = None,
        reporter: Reporter | None = None,
        limits: PatchLimits = DEFAULT_LIMITS,
    ):
        self._given = settings
        self._reporter: Reporter = reporter or NullReporter()
        # index-page-bytes bounds a page, download-bytes a download (the device's,
        # or the defaults where no device is known).
        self.limits = limits
        self._director: urllib.request.OpenerDirector | None = None
        self._contexts: dict[bool, ssl.SSLContext] = {}
        self._url_credentials: dict[Origin, _Credential] = {}
        self._netrc_credentials: dict[str, _Credential | None] = {}

    @functools.cached_property
    def settings(self) -> IndexSettings:
        return self._given if self._given is not None else load_settings()

    # ----------------------------------------------------------------- where to look

    def indexes(self) -> tuple[str, ...]:
        """The indexes to search, in pip's order (URLs as configured: show them redacted)."""
        if self.settings.no_index:
            return ()
        primary = self.settings.index_url or pip_default_index()
        urls = ([primary] if primary else []) + list(self.settings.extra_index_urls)
        return tuple(dict.fromkeys(urls))

    def searched(self) -> list[str]:
        """Every place `find` looks, redacted, for messages."""
        return [f"find-links {redact(link)}" for link in self.settings.find_links] + [
            redact(index) for index in self.indexes()
        ]

    def _find_links(self) -> Iterator[tuple[Literal["folder", "page"], str]]:
        for link in self.settings.find_links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme in ("http", "https"):
                yield "page", link
                continue
            if parts.scheme == "file":
                path = Path(urllib.request.url2pathname(parts.path))
            elif len(parts.scheme) <= 1:  # a path (or a drive letter)
                path = Path(link).expanduser()
            else:
                continue
            if path.is_dir():
                yield "folder", str(path)
            elif path.is_file():
                yield "page", path.resolve().as_uri()

    # ----------------------------------------------------------------- finding

    def find(self, project: str, filename: str) -> IndexFile | None:
        """`filename` in the find-links folders, then pages, then on each index, in
        pip's order; None if none lists it. An index that cannot be reached is skipped
        with a warning when a later one has the file; if none has it, the first such
        failure is raised (the file may be on that index)."""
        failures: list[NetworkError] = []
        links = list(self._find_links())
        for kind, location in links:
            candidate = Path(location) / filename
            if kind == "folder" and candidate.is_file():
                return IndexFile(candidate.absolute().as_uri(), None, location)
        pages = [(location, location) for kind, location in links if kind == "page"]
        pages += [
            (index.rstrip("/") + "/" + canonical_name(project) + "/", index)
            for index in self.indexes()
        ]
        for page, origin in pages:
            try:
                found = self._search_page(page, filename, origin)
            except NetworkError as error:
                failures.append(error)
                continue
            if found is not None:
                for failure in failures:
                    self._reporter.warn(f"skipped: {failure.message}")
                return found
        if failures:
            raise failures[0]
        return None

    def locate(self, project: str, filename: str, hint: str = NOT_FOUND_HINT) -> IndexFile:
        """Like `find`, but a file that is nowhere raises NotFoundError naming where it
        was looked for."""
        found = self.find(project, filename)
        if found is None:
            raise NotFoundError(
                f"{filename} was not found on any configured package index "
                f"(searched: {', '.join(self.searched()) or 'none'})",
                hint=hint,
            )
        return found

    def _search_page(self, page: str, filename: str, origin: str) -> IndexFile | None:
        fetched = self._fetch_page(page)
        if fetched is None:
            return None
        body, content_type, base_url = fetched
        remote = urllib.parse.urlsplit(base_url).scheme in REMOTE_SCHEMES
        warned = False
        try:
            for name, url, listed, size in _files_on_page(body, content_type, base_url):
                scheme = urllib.parse.urlsplit(url).scheme
                if remote and scheme not in REMOTE_SCHEMES:
                    if name == filename and not warned:
                        warned = True
                        self._reporter.warn(
                            f"skipped {filename} on {redact(page)}: it links to a "
                            f"{_shown_scheme(scheme)} URL, and a page from the network may "
                            "only link to http and https"
                        )
                    continue
                found = IndexFile(url, listed, redact(origin), size)
                # A file:// index may list a file that is not there: not found, then.
                if name == filename and (found.local_path is None or found.local_path.is_file()):
                    return found
        except ValueError as error:
            raise NetworkError(
                self._scrub(f"{redact(page)}: the index's answer cannot be read ({error})"),
                hint=GENERAL_HINT,
            ) from None
        return None

    def _fetch_page(self, url: str) -> tuple[bytes, str, str] | None:
        """(body, content type, URL after redirects); None where there is no such page.
        A page larger than index-page-bytes is refused (exit 6) as soon as that is
        known (its Content-Length, its file size, or the bytes read so far), never
        held whole."""
        limit = self.limits.index_page_bytes
        hint = limit_hint("index-page-bytes", "Check that the URL is a package index")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":
            path = Path(urllib.request.url2pathname(parts.path))
            if path.is_dir():
                path = path / "index.html"
            try:
                # Configured by the user: a link of theirs is followed.
                return (
                    read_regular_file(path, limit, follow_symlinks=True, limit_hint=hint),
                    "",
                    url,
                )
            except NotFoundError:
                return None
        response = self._open(url, _ACCEPT_PAGE, missing_ok=True)
        if response is None:
            return None
        with response:
            announced = _content_length(response)
            if announced is not None and announced > limit:
                raise IntegrityError(
                    self._scrub(
                        f"{redact(url)}: the index's page is {announced} bytes, more than the "
                        f"limit of {limit}"
                    ),
                    hint=hint,
                )
            body = bytearray()
            while True:
                try:
                    block = response.read(min(_BLOCK, limit + 1 - len(body)))
                except (OSError, http.client.HTTPException) as error:
                    raise self._broken_off(url, error) from None
                if not block:
                    break
                body += block
                if len(body) > limit:
                    raise IntegrityError(
                        self._scrub(
                            f"{redact(url)}: the index's page is more than the limit of "
                            f"{limit} bytes; it was not read further"
                        ),
                        hint=hint,
                    )
            return bytes(body), response.headers.get("Content-Type", ""), response.geturl()

    # ----------------------------------------------------------------- downloading

    def download(
        self,
        url: str,
        target: Path,
        expected_sha256: str | None,
        recorded_in: Path | None = None,
        expected_size: int | None = None,
    ) -> str:
        """Stream `url` into `target` and return the file's sha256.

        The bytes go to a `.part` file beside `target`, which is renamed into place only
        when complete and, if `expected_sha256` is given, matching it (IntegrityError
        otherwise, naming the origin and `recorded_in`). The `.part` file is removed on
        every failure, an interrupt included.

        At most download-bytes are written (exit 6 past them): a file the index lists
        (`expected_size`) or announces (Content-Length, a local file's size) as larger
        is refused before a byte is read, and one that goes on past that ceiling, or
        past the size the index lists, is cut off and removed.
        """
        shown = redact(url)
        ceiling = self.limits.download_bytes
        hint = limit_hint("download-bytes", "Nothing was kept. Check the index or mirror you use")
        if expected_size is not None and expected_size > ceiling:
            raise IntegrityError(
                f"{shown}: the index lists it at {expected_size} bytes, more than the limit "
                f"of {ceiling}",
                hint=hint,
            )
        fd, temporary = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=PART_SUFFIX
        )
        try:
            os.fchmod(fd, new_file_mode())
            digest = hashlib.sha256()
            written = 0
            with os.fdopen(fd, "wb") as out, self._stream(url) as (response, announced):
                if announced is not None and announced > ceiling:
                    raise IntegrityError(
                        f"{shown}: {announced} bytes, more than the limit of {ceiling}",
                        hint=hint,
                    )
                while True:
                    try:
                        block = response.read(_BLOCK)
                    except (OSError, http.client.HTTPException) as error:
                        raise self._broken_off(url, error) from None
                    if not block:
                        # http.client ends a body cut short quietly: count what is missing.
                        missing = getattr(response, "length", None)
                        if missing:
                            raise self._broken_off(url, f"{missing} bytes missing") from None
                        break
                    written += len(block)
                    if written > ceiling:
                        raise IntegrityError(
                            f"{shown}: more than the limit of {ceiling} bytes; the download "
                            "was stopped",
                            hint=hint,
                        )
                    if expected_size is not None and written > expected_size:
                        raise IntegrityError(
                            f"{shown}: more than the {expected_size} bytes the index lists; "
                            "the download was stopped",
                            hint="Nothing was kept. Check the index or mirror you use.",
                        )
                    digest.update(block)
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            actual = digest.hexdigest()
            if expected_sha256 is not None and actual != expected_sha256:
                where = f" recorded in {recorded_in}" if recorded_in is not None else ""
                raise IntegrityError(
                    f"{shown}: sha256 {actual} differs from {expected_sha256}{where}",
                    hint="Nothing was imported. Check the index or mirror you use.",
                )
            os.replace(temporary, target)
            return actual
        except OSError as error:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise IntegrityError(
                f"could not write {target}: {error.strerror or error}",
                hint="Check free disk space and permissions.",
            ) from None
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @contextlib.contextmanager
    def _stream(self, url: str) -> Iterator[tuple[IO[bytes], int | None]]:
        """The body of `url` and the size it announces (None: not announced)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":
            path = Path(urllib.request.url2pathname(parts.path))
            with contextlib.ExitStack() as stack:
                try:
                    # Configured by the user: a link of theirs is followed.
                    handle, size = stack.enter_context(open_regular(path, follow_symlinks=True))
                except NotFoundError:
                    raise NotFoundError(f"{path} does not exist", hint=NOT_FOUND_HINT) from None
                yield handle, size
            return
        response = self._open(url, "*/*", missing_ok=False)
        with response:
            yield response, _content_length(response)

    # ----------------------------------------------------------------- transport

    def _open(self, url: str, accept: str, missing_ok: bool) -> Any:
        """The response for `url`; None for a missing page (HTTP 404 or 410) if
        `missing_ok`. Every other failure is a NetworkError."""
        clean, credential = split_credentials(url)
        parts = urllib.parse.urlsplit(clean)
        if parts.scheme not in ("http", "https"):
            raise NetworkError(
                f"{redact(url)}: patchtool fetches only http, https and file URLs",
                hint=GENERAL_HINT,
            )
        if credential is not None:
            self._url_credentials[_origin(parts)] = credential
        request = urllib.request.Request(
            clean, headers={"Accept": accept, "User-Agent": _USER_AGENT}
        )
        try:
            return self._opener().open(request, timeout=self.settings.timeout)
        except urllib.error.HTTPError as error:
            error.close()
            if missing_ok and error.code in (404, 410):
                return None
            raise self._http_failure(error.geturl() or clean, error) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as error:
            raise self._connection_failure(clean, error) from None

    def _opener(self) -> urllib.request.OpenerDirector:
        if self._director is None:
            proxy = self._pip_proxy()
            director = urllib.request.OpenerDirector()
            for handler in (
                # pip's proxy for both schemes; else http_proxy, https_proxy, no_proxy.
                urllib.request.ProxyHandler({"http": proxy, "https": proxy})
                if proxy
                else urllib.request.ProxyHandler(),
                urllib.request.UnknownHandler(),
                urllib.request.HTTPHandler(),
                _TlsHandler(self._context_for),
                urllib.request.HTTPDefaultErrorHandler(),
                _RedirectGuard(),
                urllib.request.HTTPErrorProcessor(),
                _RequestGuard(self._prepare),
            ):
                director.add_handler(handler)
            for configured in (
                self.settings.index_url,
                *self.settings.extra_index_urls,
                *self.settings.find_links,
            ):
                clean, credential = split_credentials(configured or "")
                if credential is not None:
                    self._url_credentials[_origin(urllib.parse.urlsplit(clean))] = credential
            self._director = director
        return self._director

    def _prepare(self, request: urllib.request.Request) -> urllib.request.Request:
        """Refuse plain http to a host that is neither trusted nor this machine; add the
        credentials of the request's own scheme, host and port. They go in as an
        unredirected header, which urllib never copies onto a redirect, so a redirect
        to another host gets that host's credentials or none."""
        parts = urllib.parse.urlsplit(request.full_url)
        host = parts.hostname or ""
        if parts.scheme == "http" and not (_is_loopback(host) or self._trusted(parts)):
            raise NetworkError(
                f"{redact(request.full_url)}: plain http to {host}, which is not a trusted "
                "host; patchtool does not fetch over it",
                hint=f"Use the index's https address, or, if you trust the network to {host}, "
                f"add it to pip's trusted-host (`pip config set global.trusted-host {host}`).",
            )
        credential = self._credential_for(parts)
        if credential is not None and not request.has_header("Authorization"):
            request.add_unredirected_header("Authorization", credential.header())
        return request

    def _credential_for(self, parts: urllib.parse.SplitResult) -> _Credential | None:
        configured = self._url_credentials.get(_origin(parts))
        if configured is not None:
            return configured
        host = (parts.hostname or "").lower()
        if host not in self._netrc_credentials:
            self._netrc_credentials[host] = self._from_netrc(host)
        return self._netrc_credentials[host]

    @staticmethod
    def _from_netrc(host: str) -> _Credential | None:
        path = _netrc_path()
        try:
            # The path is passed, as requests does: a .netrc is used as it is.
            entry = netrc.netrc(str(path)).authenticators(host)
        except (OSError, netrc.NetrcParseError):
            return None
        if entry is None:
            return None
        login, _, password = entry
        return _Credential(login or "", password or "", str(path))

    def _trusted(self, parts: urllib.parse.SplitResult) -> bool:
        _, host, port = _origin(parts)
        for entry in self.settings.trusted_hosts:
            trusted = urllib.parse.urlsplit("//" + entry)
            try:
                trusted_port = trusted.port
            except ValueError:
                continue
            if (trusted.hostname or "").lower() == host and trusted_port in (None, port):
                return True
        return False

    def _context_for(self, url: str) -> ssl.SSLContext:
        verify = not self._trusted(urllib.parse.urlsplit(url))
        if verify not in self._contexts:
            self._contexts[verify] = self._tls_context(verify)
        return self._contexts[verify]

    def _tls_context(self, verify: bool) -> ssl.SSLContext:
        if verify:
            bundle, named_by = self.settings.cert, "pip's cert setting"
            for variable in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # as pip's requests
                if bundle is None and os.environ.get(variable):
                    bundle, named_by = Path(os.environ[variable]), variable
            try:
                if bundle is None:
                    context = ssl.create_default_context()
                elif bundle.is_dir():
                    context = ssl.create_default_context(capath=str(bundle))
                else:
                    context = ssl.create_default_context(cafile=str(bundle))
            except (OSError, ssl.SSLError) as error:
                raise NetworkError(
                    f"the CA bundle {bundle} ({named_by}) cannot be used: {_describe(error)}",
                    hint=TLS_HINT,
                ) from None
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.settings.client_cert is not None:
            try:
                context.load_cert_chain(str(self.settings.client_cert))
            except (OSError, ssl.SSLError) as error:
                raise NetworkError(
                    f"the client certificate {self.settings.client_cert} (pip's client-cert "
                    f"setting) cannot be used: {_describe(error)}",
                    hint="client-cert names one PEM file holding the private key and the "
                    "certificate.",
                ) from None
        return context

    def _pip_proxy(self) -> str | None:
        proxy = self.settings.proxy
        if proxy and "://" not in proxy:
            proxy = "http://" + proxy
        return proxy

    def _proxy_for(self, url: str) -> str | None:
        parts = urllib.parse.urlsplit(url)
        if urllib.request.proxy_bypass(parts.netloc):
            return None
        return self._pip_proxy() or urllib.request.getproxies().get(parts.scheme)

    # ----------------------------------------------------------------- failures

    def _scrub(self, text: str) -> str:
        """`text` with URL passwords and every known secret masked."""
        secrets: set[str] = set()
        for credential in (*self._url_credentials.values(), *self._netrc_credentials.values()):
            if credential is not None:
                secrets.update(credential.secrets())
        for url in (self.settings.proxy or "", *self._configured_urls()):
            _, credential = split_credentials(url if "://" in url else "http://" + url)
            if credential is not None:
                secrets.update(credential.secrets())
        text = redact(text)
        for secret in sorted(secrets, key=len, reverse=True):
            if len(secret) >= 4:  # shorter ones would mask ordinary words
                text = text.replace(secret, MASK)
        return text

    def _configured_urls(self) -> tuple[str, ...]:
        settings = self.settings
        return (settings.index_url or "", *settings.extra_index_urls, *settings.find_links)

    def _http_failure(self, url: str, error: urllib.error.HTTPError) -> NetworkError:
        status = f"HTTP {error.code} {error.reason}".strip()
        parts = urllib.parse.urlsplit(url)
        if error.code == 407:
            proxy = self._proxy_for(url)
            text = f"{redact(url)}: the proxy {redact(proxy or '?')} refused the request ({status})"
            hint = PROXY_HINT
        elif error.code in (401, 403):
            credential = self._credential_for(parts)
            if credential is not None:
                text = f"{redact(url)}: the index refused {credential.describe()} ({status})"
            else:
                text = (
                    f"{redact(url)}: the index asks for credentials and none are configured "
                    f"for {parts.hostname} ({status})"
                )
            hint = CREDENTIALS_HINT
        else:
            text, hint = f"{redact(url)}: the index answered {status}", GENERAL_HINT
        return NetworkError(self._scrub(text), hint=hint)

    def _connection_failure(self, url: str, error: BaseException) -> NetworkError:
        reason: object = error.reason if isinstance(error, urllib.error.URLError) else error
        proxy = self._proxy_for(url)
        where = f"cannot reach {redact(url)}"
        if proxy:
            where += f" through the proxy {redact(proxy)}"
        hint = PROXY_HINT if proxy else GENERAL_HINT
        if isinstance(reason, ssl.SSLCertVerificationError):
            text = f"{where}: TLS certificate verification failed ({reason.verify_message})"
            hint = TLS_HINT
        elif isinstance(reason, ssl.SSLError):
            text, hint = f"{where}: TLS failure ({reason.reason or reason})", TLS_HINT
        elif isinstance(reason, TimeoutError):
            text = f"{where}: no answer within {self.settings.timeout:g} s"
        else:
            text = f"{where}: {_describe(reason)}"
        return NetworkError(self._scrub(text), hint=hint)

    def _broken_off(self, url: str, error: object) -> NetworkError:
        return NetworkError(
            self._scrub(f"the download of {redact(url)} broke off: {_describe(error)}"),
            hint=GENERAL_HINT,
        )


def _content_length(response: Any) -> int | None:
    """The Content-Length a response announces, if it announces one."""
    value = (response.headers.get("Content-Length") or "").strip()
    if not (value.isascii() and value.isdigit()):
        return None
    return int(value) if len(value) <= 20 else 1 << 64


def _describe(reason: object) -> str:
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def remove_partial_downloads(folder: Path, name: str) -> None:
    """Remove the `.part` files of `name` that a killed download left in `folder`.

    The caller holds the lock that guards downloads into `folder`, so none of them
    belongs to a download still running."""
    prefix = f".{name}."
    with contextlib.suppress(FileNotFoundError), os.scandir(folder) as entries:
        for entry in entries:
            if entry.name.startswith(prefix) and entry.name.endswith(PART_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
