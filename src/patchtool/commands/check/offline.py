"""`check --offline`: which bases the cache or a local sdist proves without the
network, and the second wall (any connect or name lookup raises)."""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from patchtool.core.errors import (
    OfflineViolationError,
    SourceNotLocal,
    quoted,
)
from patchtool.core.fsutil import sha256_of
from patchtool.core.gitops import Git
from patchtool.sources.bases import held_in_cache
from patchtool.sources.cache import BaseCache, base_ref_name
from patchtool.sources.sdist import local_sdists
from patchtool.store.model import (
    BaseRef,
    PypiSource,
)


def local_source(
    base: BaseRef, cache: BaseCache, archive_paths: tuple[Path, ...]
) -> tuple[Path, ...]:
    """Offline: what to hand `ensure_base` so that it needs no network, or raise
    SourceNotLocal. `()` when the cache can prove the base by itself (bases.held_in_cache:
    ensure_base then compares and verifies); else exactly one existing sdist file,
    which obtain_sdist uses or refuses (a sha256 mismatch, a file gone) without
    looking further, and which ensure_base imports and compares."""
    if held_in_cache(base, cache):
        return ()
    if not isinstance(base.source, PypiSource):
        raise SourceNotLocal(
            f"skipped: {base.base_id}'s source is not in the cache (needs commit "
            f"{base.commit[:12]} from its git repository; run `patchtool check` once with "
            "network access)"
        )
    filename = base.source.filename
    cached = cache.sdist_path(base.source)
    if cached.is_file() and sha256_of(cached) == base.source.sha256:
        return (cached,)
    # --sdist and PATCHTOOL_SDIST_PATH, as online (a --sdist path that does not
    # exist raises here, and so do --sdist files none of which is this one). pip's
    # find-links are left out: they are read by the index client, which offline
    # never reaches.
    local = next(local_sdists(filename, archive_paths), None)
    if local is not None:
        return (local,)
    raise SourceNotLocal(
        f"skipped: {base.base_id}'s source is not in the cache (needs {filename}; run "
        "`patchtool check` once with network access or pass --sdist)"
    )


_OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("patchtool_offline", default=False)
_NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname")
_guard_installed = False


@contextmanager
def forbid_network(offline: bool) -> Iterator[None]:
    """While an offline check runs, any connect or name lookup raises."""
    global _guard_installed
    if not offline:
        yield
        return
    if not _guard_installed:
        sys.addaudithook(_refuse_network)  # process-wide and permanent, hence the flag
        _guard_installed = True
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def _refuse_network(event: str, args: tuple[Any, ...]) -> None:
    if event in _NETWORK_EVENTS and _OFFLINE.get():
        target = args[1] if event == "socket.connect" else args[0]
        raise OfflineViolationError(
            f"check --offline tried to open a network connection ({event} {quoted(target)})",
            hint="This is a bug in patchtool; run again with --debug and report it.",
        )


def source_problems(base: BaseRef, cache: BaseCache, repository: Path) -> list[str]:
    """What ensure_base's proof leaves to look at: the base ref it (re)wrote is
    there, and a cached sdist still matches its hash. (The commit is proven by
    ensure_base alone, the way a fresh cache would prove it: never by a message.)"""
    problems = []
    git = Git(repository)
    if git.rev_parse(base_ref_name(base.commit)) != base.commit:
        problems.append(f"the cache holds no base ref for {base.commit}")
    if isinstance(base.source, PypiSource):
        cached = cache.sdist_path(base.source)
        if cached.is_file() and sha256_of(cached) != base.source.sha256:
            problems.append(f"the cached {cached} does not match the recorded sha256")
    return problems
