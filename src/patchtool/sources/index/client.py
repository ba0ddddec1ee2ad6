"""The index client: finds a file by name on the indexes and find-links of pip's
settings, in pip's order, and downloads it atomically with its sha256 and size
checked. The network is reached through `transport.Transport` only.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from patchtool.core.errors import IntegrityError, NetworkError, NotFoundError
from patchtool.core.fsutil import new_file_mode, open_regular, read_regular_file
from patchtool.core.report import NullReporter, Reporter
from patchtool.core.values import canonical_name
from patchtool.sources.index.credentials import redact
from patchtool.sources.index.pages import ACCEPT_PAGE, files_on_page
from patchtool.sources.index.settings import IndexSettings, pip_default_index
from patchtool.sources.index.transport import (
    GENERAL_HINT,
    REMOTE_SCHEMES,
    Transport,
    content_length,
    shown_scheme,
)
from patchtool.sources.index.watch import Watch
from patchtool.store.model import DEFAULT_LIMITS, PatchLimits, limit_hint

PART_SUFFIX = ".part"
_BLOCK = 1 << 20

NOT_FOUND_HINT = (
    "Check the version and `pip config list`, or pass the file with --sdist PATH for an "
    "air-gapped site."
)


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


class IndexClient:
    """Finds files on the indexes and find-links of pip's settings and downloads them."""

    def __init__(
        self,
        settings: IndexSettings | None = None,
        reporter: Reporter | None = None,
        limits: PatchLimits = DEFAULT_LIMITS,
    ):
        self.transport = Transport(settings)
        self._reporter: Reporter = reporter or NullReporter()
        # index-page-bytes bounds a page, download-bytes a download (the device's,
        # or the defaults where no device is known).
        self.limits = limits

    @property
    def settings(self) -> IndexSettings:
        return self.transport.settings

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
            for name, url, listed, size in files_on_page(body, content_type, base_url):
                scheme = urllib.parse.urlsplit(url).scheme
                if remote and scheme not in REMOTE_SCHEMES:
                    if name == filename and not warned:
                        warned = True
                        self._reporter.warn(
                            f"skipped {filename} on {redact(page)}: it links to a "
                            f"{shown_scheme(scheme)} URL, and a page from the network may "
                            "only link to http and https"
                        )
                    continue
                found = IndexFile(url, listed, redact(origin), size)
                # A file:// index may list a file that is not there: not found, then.
                if name == filename and (found.local_path is None or found.local_path.is_file()):
                    return found
        except ValueError as error:
            raise NetworkError(
                self.transport.scrub(
                    f"{redact(page)}: the index's answer cannot be read ({error})"
                ),
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
        deadlines = self.settings.deadlines
        with self.transport.watch(f"the index page {redact(url)}", deadlines.page_seconds) as watch:
            response = self.transport.open(url, ACCEPT_PAGE, missing_ok=True, watch=watch)
            if response is None:
                return None
            with response:
                return self._read_page(url, response, watch, limit, hint)

    def _read_page(
        self, url: str, response: Any, watch: Watch, limit: int, hint: str
    ) -> tuple[bytes, str, str]:
        """The page's body, its content type and URL, within `limit` bytes."""
        announced = content_length(response)
        if announced is not None and announced > limit:
            raise IntegrityError(
                self.transport.scrub(
                    f"{redact(url)}: the index's page is {announced} bytes, more than the "
                    f"limit of {limit}"
                ),
                hint=hint,
            )
        body = bytearray()
        while True:
            try:
                block = response.read1(min(_BLOCK, limit + 1 - len(body)))
            except (OSError, http.client.HTTPException) as error:
                watch.check()
                raise self.transport.broken_off(url, error) from None
            watch.check()
            watch.count(len(block))
            if not block:
                break
            body += block
            if len(body) > limit:
                raise IntegrityError(
                    self.transport.scrub(
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
            with os.fdopen(fd, "wb") as out, self._stream(url) as (response, announced, watch):
                if announced is not None and announced > ceiling:
                    raise IntegrityError(
                        f"{shown}: {announced} bytes, more than the limit of {ceiling}",
                        hint=hint,
                    )
                while True:
                    try:
                        block = response.read1(_BLOCK)
                    except (OSError, http.client.HTTPException) as error:
                        if watch is not None:
                            watch.check()
                        raise self.transport.broken_off(url, error) from None
                    if watch is not None:
                        watch.check()
                        watch.count(len(block))
                    if not block:
                        # http.client ends a body cut short quietly: count what is missing.
                        missing = getattr(response, "length", None)
                        if missing:
                            missing_text = f"{missing} bytes missing"
                            raise self.transport.broken_off(url, missing_text) from None
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
    def _stream(self, url: str) -> Iterator[tuple[Any, int | None, Watch | None]]:
        """The body of `url`, the size it announces (None: not announced) and the
        watch of its reading (None for a local file)."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "file":
            path = Path(urllib.request.url2pathname(parts.path))
            with contextlib.ExitStack() as stack:
                try:
                    # Configured by the user: a link of theirs is followed.
                    handle, size = stack.enter_context(open_regular(path, follow_symlinks=True))
                except NotFoundError:
                    raise NotFoundError(f"{path} does not exist", hint=NOT_FOUND_HINT) from None
                yield handle, size, None
            return
        # A download has no total deadline (its size may be anything up to
        # download-bytes): only the low-speed floor.
        with self.transport.watch(f"the download of {redact(url)}", None) as watch:
            response = self.transport.open(url, "*/*", missing_ok=False, watch=watch)
            with response:
                yield response, content_length(response), watch


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
