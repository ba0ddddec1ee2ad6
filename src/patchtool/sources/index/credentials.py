"""Credentials for an index: read from the URLs of pip's settings and from .netrc,
each sent only to the scheme, host and port it belongs to; and redaction, so that
no message shows a password or a token.
"""

from __future__ import annotations

import base64
import netrc
import os
import re
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from patchtool.core.errors import quoted

MASK = "****"

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


Origin = tuple[str, str, int]  # scheme, lower-case host, port


def origin(parts: urllib.parse.SplitResult) -> Origin:
    try:
        port = parts.port
    except ValueError:
        port = None
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme.lower(), (parts.hostname or "").lower(), port or default


@dataclass(frozen=True)
class Credential:
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


def split_credentials(url: str) -> tuple[str, Credential | None]:
    """`url` without its userinfo, and the credentials the userinfo held."""
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url, None
    user, _, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit(parts._replace(netloc=hostport))
    credential = Credential(
        urllib.parse.unquote(user), urllib.parse.unquote(password), "pip's settings"
    )
    return clean, credential


class Credentials:
    """The credentials a client has met: those of the URLs it was given or configured
    with, by origin (scheme, host, port), and those .netrc holds, by host."""

    def __init__(self) -> None:
        self._by_origin: dict[Origin, Credential] = {}
        self._netrc: dict[str, Credential | None] = {}

    def remember(self, url: str) -> None:
        """The credentials in `url`'s userinfo, if any, for `url`'s origin."""
        clean, credential = split_credentials(url)
        if credential is not None:
            self._by_origin[origin(urllib.parse.urlsplit(clean))] = credential

    def for_url(self, parts: urllib.parse.SplitResult) -> Credential | None:
        """The credentials for a request to `parts`: its origin's from a URL, else its
        host's from .netrc (read once per host)."""
        configured = self._by_origin.get(origin(parts))
        if configured is not None:
            return configured
        host = (parts.hostname or "").lower()
        if host not in self._netrc:
            self._netrc[host] = credential_from_netrc(host)
        return self._netrc[host]

    def secrets(self) -> set[str]:
        """What must never be shown: every password (and token) met so far."""
        found: set[str] = set()
        for credential in (*self._by_origin.values(), *self._netrc.values()):
            if credential is not None:
                found.update(credential.secrets())
        return found


def mask_secrets(text: str, secrets: set[str]) -> str:
    """`text` redacted, and each secret in it masked."""
    text = redact(text)
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:  # shorter ones would mask ordinary words
            text = text.replace(secret, MASK)
    return text


def credential_from_netrc(host: str) -> Credential | None:
    """The credentials .netrc (or the file NETRC names) holds for `host`, if any."""
    path = Path(os.environ.get("NETRC") or "~/.netrc").expanduser()
    try:
        # The path is passed, as requests does: a .netrc is used as it is.
        entry = netrc.netrc(str(path)).authenticators(host)
    except (OSError, netrc.NetrcParseError):
        return None
    if entry is None:
        return None
    login, _, password = entry
    return Credential(login or "", password or "", str(path))

