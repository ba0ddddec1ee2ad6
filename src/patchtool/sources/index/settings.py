"""pip's settings that decide where files come from and how they are fetched,
and patchtool's own deadlines for fetching.

pip's are read as the user's pip reads them: pip's public command line (`pip
config list`, which includes the PIP_* environment), run isolated (see
core/children.py), since pip's internals change without notice. When no setting
names an index, pip's own default is used (`pip_default_index`).

pip's `timeout` bounds one wait for the network, not a fetch: a server that sends
a byte a minute never trips it. `NetworkDeadlines` bound the whole fetch; pip has
no setting for them, so they are patchtool's, from the environment
(`network_deadlines`), and the same for the index and for git bases.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from patchtool.core import children
from patchtool.core.errors import UsageError, quoted

DEFAULT_TIMEOUT = 60.0  # seconds, when pip's settings name none
# Where a key is looked up, highest precedence first (pip's PIP_* environment is `:env:`).
SECTIONS = (":env:", "download", "install", "global")
_TRUE = ("1", "yes", "y", "true", "t", "on")
_FALSE = ("0", "no", "n", "false", "f", "off")


@dataclass(frozen=True)
class NetworkDeadlines:
    """How long a fetch may take, and how slow it may be, before it is stopped
    (exit 11). Each is set by its environment variable (`ENVIRONMENT`)."""

    # One page of an index (or find-links page), from the request to its last byte.
    page_seconds: float = 120.0
    # A download (an sdist), an index page and a git fetch over http(s) are
    # stopped when fewer than low_speed_limit bytes a second arrive, on average,
    # for low_speed_time seconds (git's http.lowSpeedLimit and http.lowSpeedTime).
    low_speed_limit: int = 1000
    low_speed_time: float = 60.0
    # One git fetch of a git base, whatever its transport (git://, ssh, http(s)).
    git_fetch_seconds: float = 3600.0


# The environment variable of each deadline.
ENVIRONMENT = {
    "page_seconds": "PATCHTOOL_PAGE_SECONDS",
    "low_speed_limit": "PATCHTOOL_LOW_SPEED_LIMIT",
    "low_speed_time": "PATCHTOOL_LOW_SPEED_TIME",
    "git_fetch_seconds": "PATCHTOOL_GIT_FETCH_SECONDS",
}


def network_deadlines() -> NetworkDeadlines:
    """The deadlines, from the environment where it sets them (else the defaults)."""
    return NetworkDeadlines(
        page_seconds=_positive("page_seconds"),
        low_speed_limit=int(_positive("low_speed_limit")),
        low_speed_time=_positive("low_speed_time"),
        git_fetch_seconds=_positive("git_fetch_seconds"),
    )


def _positive(name: str) -> float:
    variable = ENVIRONMENT[name]
    default = float(getattr(NetworkDeadlines(), name))
    value = os.environ.get(variable)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 < number < float("inf") or (name == "low_speed_limit" and number != int(number)):
        unit = "a whole number of bytes a second" if name == "low_speed_limit" else "seconds"
        raise UsageError(
            f"{variable}={quoted(value)} is not a positive number",
            hint=f"Set {variable} to {unit}, or unset it for the default ({default:g}).",
        )
    return number


@dataclass(frozen=True)
class IndexSettings:
    """pip's settings that decide where files come from and how they are fetched.

    URLs are kept as pip has them, credentials included: show them with `credentials.redact`.
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
    deadlines: NetworkDeadlines = field(default_factory=NetworkDeadlines)


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
    settings = parse_pip_config(listing)
    return dataclasses.replace(settings, deadlines=network_deadlines())


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

