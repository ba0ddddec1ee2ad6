"""The pages that list an index's files: PEP 691 (JSON) and PEP 503 (HTML) simple
pages and find-links pages, read into (name, URL, listed sha256, listed size).
Reading only: fetching them is the client's.
"""

from __future__ import annotations

import html.parser
import json
import posixpath
import re
import urllib.parse
from collections.abc import Iterator

JSON_TYPE = "application/vnd.pypi.simple.v1+json"
# What a page request accepts: JSON first, HTML from older indexes and find-links pages.
ACCEPT_PAGE = f"{JSON_TYPE}, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.1"
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


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


def files_on_page(
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

