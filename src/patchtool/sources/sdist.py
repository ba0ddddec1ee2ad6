"""Released sdists as bases: found, checked by hash, imported as one commit.

A `pypi` base is an sdist found on the index the user's pip is configured for
(sources/index/: their index, extra indexes, find-links folders and proxies apply),
or in a local file or folder for air-gapped sites (--sdist,
PATCHTOOL_SDIST_PATH). It is checked against the sha256 in base.toml before
anything reads it, then imported into the cache's bare repository as one
deterministic commit (fixed author, committer, date and message, file modes
kept), so that the same sdist gives the same commit id on every machine. The
import is recorded under a key only the importer writes (`import_key`; cache.py
says why); the message is never read back.
Archives with absolute or climbing member names, links out of the tree, hard
links or device files are refused, and so are archives past the device's limits
(members, their declared sizes, the decompressed stream), before they unpack.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import io
import lzma
import os
import posixpath
import re
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from patchtool.core.errors import IntegrityError, NotFoundError, UnsafeInputError, quoted
from patchtool.core.fsutil import path_problem, sha256_of
from patchtool.core.gitops import Git, tool_identity
from patchtool.core.report import Reporter
from patchtool.sources.cache import BaseCache, base_ref_name
from patchtool.store.model import DEFAULT_LIMITS, BaseRef, PatchLimits, PypiSource, limit_hint

ARCHIVE_ENVIRONMENT_VARIABLE = "PATCHTOOL_SDIST_PATH"


def import_message(project: str, version: str, source: PypiSource) -> str:
    """The message of an sdist's import commit; part of what fixes its id."""
    return f"Import {project} {version} from {source.filename}\n\nsha256 {source.sha256}\n"


_SHA256 = re.compile(r"[0-9a-f]{64}")


def import_key(project: str, version: str, source: PypiSource) -> str:
    """The ref naming the commit that `import_sdist` built from exactly these bytes
    (the sha256) for this project, version and file name (which its message holds:
    the same bytes under another version label are another commit). Only
    `import_sdist` writes it, after the import; nothing a fetch brings can."""
    if not _SHA256.fullmatch(source.sha256):
        raise IntegrityError(f"sha256 {quoted(source.sha256, 80)} is not 64 lower-case hex digits")
    message = import_message(project, version, source).encode("utf-8", "surrogateescape")
    return f"refs/patchtool/sdist/{source.sha256}/{hashlib.sha256(message).hexdigest()[:32]}"


# --------------------------------------------------------------------------- sdist import


def import_sdist(
    archive: Path,
    repository: Path,
    project: str,
    version: str,
    source: PypiSource,
    limits: PatchLimits = DEFAULT_LIMITS,
) -> str:
    """Import an sdist as one deterministic commit; return its id. Its import key
    (`import_key`) then names that commit: the cache finds an import by that key
    only.

    The archive is read once, as a stream, within the limits (sdist-members,
    sdist-member-bytes, sdist-bytes): each member's declared size, and the sum
    so far, are checked before the member is read, and the decompressed stream
    itself stops at the sum's bound plus its headers' share, so neither a sparse
    member declaring a gigabyte nor a compressed stream that never ends is
    unpacked. Each member becomes a blob of fast-import's input as it is read;
    the commit that names them all comes last."""
    stream = io.BytesIO()  # its getvalue() hands over its buffer: no second copy
    entries: list[bytes] = []
    newest = 0.0
    for mark, (member, content) in enumerate(_read_members(archive, limits), start=1):
        newest = max(newest, member.mtime)
        stream.write(b"blob\nmark :%d\ndata %d\n" % (mark, len(content)))
        stream.write(content)
        stream.write(b"\n")
        executable = member.mode & 0o111
        mode = b"120000" if member.issym() else b"100755" if executable else b"100644"
        entries.append(b"M %s :%d %s\n" % (mode, mark, _fast_import_path(member.path)))
    date = f"{int(newest)} +0000"
    message = import_message(project, version, source).encode()
    identity = tool_identity(date)
    stream.write(b"commit refs/patchtool/import\n")
    stream.write(
        f"author {identity['GIT_AUTHOR_NAME']} <{identity['GIT_AUTHOR_EMAIL']}> {date}\n".encode()
    )
    committer = f"{identity['GIT_COMMITTER_NAME']} <{identity['GIT_COMMITTER_EMAIL']}>"
    stream.write(f"committer {committer} {date}\n".encode())
    stream.write(b"data %d\n" % len(message) + message)
    stream.write(b"deleteall\n")
    stream.write(b"".join(entries))
    stream.write(b"done\n")
    git = Git(repository)
    git.run("fast-import", "--quiet", "--done", "--force", input=stream.getvalue())
    commit = git.text("rev-parse", "refs/patchtool/import")
    git.run("update-ref", "-d", "refs/patchtool/import")
    # The import key says "these bytes import as this commit": it is written only
    # for bytes that are the release's, and it is the only way a later run finds
    # an import (cache.py says why no message or fetched ref may serve).
    actual = sha256_of(archive)
    if actual != source.sha256:
        raise IntegrityError(
            f"{archive}: sha256 {actual} differs from {source.sha256}, the release it was "
            "imported as",
            hint="Nothing was recorded in the cache; use the exact released file.",
        )
    git.run("update-ref", import_key(project, version, source), commit)
    git.run("update-ref", base_ref_name(commit), commit)
    return commit


@dataclass(frozen=True)
class _Member:
    path: str  # relative to the sdist's top folder
    mode: int
    mtime: float
    linkname: str
    original: tarfile.TarInfo

    def issym(self) -> bool:
        return self.original.issym()


def _read_members(archive: Path, limits: PatchLimits) -> Iterator[tuple[_Member, bytes]]:
    """The archive's files below its one top folder, each with its content (a
    symlink's: its target), in archive order, each read once. Refused: anything
    that could reach outside the tree or is not a plain file or an in-tree
    symlink; a member, or all of them, past the limits, before it is read."""
    top: str | None = None
    seen: set[str] = set()
    count = total = 0
    with _open_tar(archive, limits) as tar:
        while True:
            try:
                info = tar.next()
            except _HeaderRecordTooLarge as error:
                raise _record_too_large(archive, error) from None
            except _ARCHIVE_ERRORS as error:
                raise IntegrityError(f"{archive}: corrupt or truncated archive: {error}") from error
            if info is None:
                return
            count += 1
            if count > limits.sdist_members:
                raise IntegrityError(
                    f"{archive}: more than {limits.sdist_members} members",
                    hint=limit_hint("sdist-members", _SDIST_WHAT),
                )
            if info.isreg():  # sparse members too: their size is the size unpacked
                if info.size > limits.sdist_member_bytes:
                    raise IntegrityError(
                        f"{archive}: member {quoted(info.name)} is {info.size} bytes unpacked, "
                        f"more than the limit of {limits.sdist_member_bytes}",
                        hint=limit_hint("sdist-member-bytes", _SDIST_WHAT),
                    )
                total += info.size
                if total > limits.sdist_bytes:
                    raise IntegrityError(
                        f"{archive}: members of more than {limits.sdist_bytes} bytes together "
                        "unpacked",
                        hint=limit_hint("sdist-bytes", _SDIST_WHAT),
                    )
            parts = [p for p in info.name.split("/") if p not in ("", ".")]
            top = parts[0] if top is None and parts else top
            member = _safe_member(archive, info, top, seen)
            if member is None:
                continue
            if member.issym():
                yield member, member.linkname.encode("utf-8", "surrogateescape")
                continue
            try:
                handle = tar.extractfile(info)
                assert handle is not None
                content = handle.read(info.size)
            except _ARCHIVE_ERRORS as error:
                raise IntegrityError(f"{archive}: corrupt or truncated archive: {error}") from error
            if len(content) != info.size:
                raise IntegrityError(
                    f"{archive}: corrupt or truncated archive: member {quoted(info.name)} "
                    f"ends after {len(content)} of {info.size} bytes"
                )
            yield member, content


def _safe_member(
    archive: Path, info: tarfile.TarInfo, top: str | None, seen: set[str]
) -> _Member | None:
    """The member below the archive's top folder (None for a folder or the top
    itself), refusing anything that could reach outside the tree or is not a
    plain file or an in-tree symlink."""
    name = info.name
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise UnsafeInputError(f"{archive}: member {quoted(name)} has an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeInputError(f"{archive}: member {quoted(name)} climbs out with '..'")
    if not parts:
        return None
    if top is not None and parts[0] != top:
        raise UnsafeInputError(
            f"{archive}: member {quoted(name)} is outside the top folder {quoted(top)}"
        )
    relative = parts[1:]
    if info.isdir() or not relative:
        return None
    if ".git" in relative:
        raise UnsafeInputError(f"{archive}: member {quoted(name)} is inside a .git folder")
    path = "/".join(relative)
    if info.ischr() or info.isblk() or info.isfifo() or info.isdev():
        raise UnsafeInputError(f"{archive}: member {quoted(name)} is a device or fifo")
    if info.islnk():
        raise UnsafeInputError(
            f"{archive}: member {quoted(name)} is a hard link",
            hint="sdists hold plain files and symlinks only.",
        )
    if info.issym():
        target = posixpath.normpath(posixpath.join(posixpath.dirname(path), info.linkname))
        if info.linkname.startswith("/") or target == ".." or target.startswith("../"):
            raise UnsafeInputError(
                f"{archive}: symlink {quoted(name)} points outside the tree "
                f"({quoted(info.linkname)})"
            )
    elif not info.isfile():
        raise UnsafeInputError(f"{archive}: member {quoted(name)} is not a regular file")
    problem = path_problem(path)
    if problem is not None:
        raise UnsafeInputError(f"{archive}: member {quoted(name)}: its path {problem}")
    if path in seen:
        raise UnsafeInputError(f"{archive}: member {quoted(name)} appears twice")
    seen.add(path)
    return _Member(path, info.mode, float(info.mtime), info.linkname, info)


_ARCHIVE_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError)
_SDIST_WHAT = "Nothing was imported. Check that the file is the released sdist"
# Every member's header, and a pax header's, and the padding of each to 512 bytes:
# what the decompressed stream holds beside the members' bytes, at most.
_HEADER_SHARE = 1536


@contextlib.contextmanager
def _open_tar(archive: Path, limits: PatchLimits) -> Iterator[tarfile.TarFile]:
    """The archive as a tar stream (read once, front to back), decompressed here
    (gzip, bzip2, xz or none, by its first bytes) through `_Bounded`."""
    limit = limits.sdist_bytes + _HEADER_SHARE * limits.sdist_members
    with contextlib.ExitStack() as stack:
        try:
            raw = stack.enter_context(open(archive, "rb"))
            magic = raw.read(6)
            raw.seek(0)
            inner: _Readable
            if magic.startswith(b"\x1f\x8b"):
                inner = stack.enter_context(gzip.GzipFile(fileobj=raw, mode="rb"))
            elif magic.startswith(b"BZh"):
                inner = stack.enter_context(bz2.BZ2File(raw))
            elif magic.startswith(b"\xfd7zXZ\x00"):
                inner = stack.enter_context(lzma.LZMAFile(raw))
            else:
                inner = raw
            bounded = _Bounded(inner, limit, archive)
            tar = stack.enter_context(
                tarfile.open(fileobj=bounded, mode="r|", tarinfo=_BoundedTarInfo)  # type: ignore[call-overload]
            )
        except _HeaderRecordTooLarge as error:
            raise _record_too_large(archive, error) from None
        except _ARCHIVE_ERRORS as error:
            raise IntegrityError(f"{archive}: not a readable sdist archive: {error}") from error
        yield tar


# The most bytes one extended header record may hold (a GNU long name or link
# name, a PAX header): a path within fsutil's limits and a few PAX keys fit
# many times over. tarfile reads such a record whole into memory, so it is
# refused by its declared size before it is read.
LONGEST_HEADER_RECORD = 64 * 1024
_HEADER_RECORDS = {
    tarfile.GNUTYPE_LONGNAME: "a long name",
    tarfile.GNUTYPE_LONGLINK: "a long link name",
    tarfile.XHDTYPE: "a PAX header",
    tarfile.XGLTYPE: "a global PAX header",
    tarfile.SOLARIS_XHDTYPE: "a PAX header",
}


class _HeaderRecordTooLarge(Exception):
    """An extended header record past LONGEST_HEADER_RECORD (its words, no archive)."""


class _BoundedTarInfo(tarfile.TarInfo):
    """tarfile's member, whose extended header records are bounded before they are
    read (`_proc_member` is the hook tarfile names for subclasses)."""

    def _proc_member(self, stream: tarfile.TarFile) -> tarfile.TarInfo:
        what = _HEADER_RECORDS.get(self.type)
        if what is not None and self.size > LONGEST_HEADER_RECORD:
            raise _HeaderRecordTooLarge(
                f"{what} of {self.size} bytes, more than the limit of {LONGEST_HEADER_RECORD}; "
                "it was not read"
            )
        return super()._proc_member(stream)  # type: ignore[misc,no-any-return]


def _record_too_large(archive: Path, error: _HeaderRecordTooLarge) -> IntegrityError:
    return IntegrityError(
        f"{archive}: {error}",
        hint="Nothing was imported. Check that the file is the released sdist: no name or "
        "header of a real one is this large.",
    )


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


class _Bounded:
    """A decompressed stream that stops at `limit` bytes: whatever the archive's
    headers declare, no more than that is ever inflated."""

    def __init__(self, inner: _Readable, limit: int, archive: Path) -> None:
        self._inner = inner
        self._left = limit
        self._limit = limit
        self._archive = archive

    def read(self, size: int = -1) -> bytes:
        size = 1 << 20 if size < 0 else size
        data = self._inner.read(min(size, self._left + 1))
        self._left -= len(data)
        if self._left < 0:
            raise IntegrityError(
                f"{self._archive}: unpacks to more than {self._limit} bytes (its members "
                "and their headers); it was not read further",
                hint=limit_hint("sdist-bytes", _SDIST_WHAT),
            )
        return data


def _fast_import_path(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    if b"\n" in raw or raw.startswith(b'"') or b"\\" in raw:
        escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")
        return b'"' + escaped + b'"'
    return raw


# --------------------------------------------------------------------------- obtaining sdists


def obtain_sdist(
    base: BaseRef,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...],
    limits: PatchLimits = DEFAULT_LIMITS,
) -> Path:
    """A verified copy of the base's sdist in the cache, from the cache, local paths,
    pip's find-links or the package index, in that order (the caller holds the
    cache lock). Pages and downloads are bounded by `limits` (the device's)."""
    assert isinstance(base.source, PypiSource)
    source = base.source
    recorded_in = base.path / "base.toml"
    cached = cache.sdist_path(source)
    if cached.is_file():
        actual = sha256_of(cached)
        if actual == source.sha256:
            return cached
        reporter.warn(f"cached {cached} has sha256 {actual}; discarding it and fetching again")
        cached.unlink()
    # The index client (http, TLS, email headers) is imported only when a run needs it.
    from patchtool.sources.index.client import IndexClient, remove_partial_downloads

    cached.parent.mkdir(parents=True, exist_ok=True)
    # A killed run's half-written file; the lock the caller holds rules out a live one.
    remove_partial_downloads(cached.parent, cached.name)
    client = IndexClient(reporter=reporter, limits=limits)
    local = next(local_sdists(source.filename, archive_paths), None)
    found = None
    if local is None:
        found = client.locate(
            base.project,
            source.filename,
            hint=f"Check `pip config list`, or pass the file with --sdist PATH "
            f"(or set {ARCHIVE_ENVIRONMENT_VARIABLE}) for an air-gapped site.",
        )
        local = found.local_path
    if local is not None:
        actual = sha256_of(local, limit=limits.download_bytes, limit_hint=_LOCAL_HINT)
        if actual != source.sha256:
            raise IntegrityError(
                f"{local}: sha256 {actual} differs from {source.sha256} recorded in {recorded_in}",
                hint="Use the exact released file; nothing was imported.",
            )
        reporter.step(f"using local sdist {local}")
        client.download(local.absolute().as_uri(), cached, source.sha256, recorded_in)
        return cached
    assert found is not None
    if found.sha256 is not None and found.sha256 != source.sha256:
        raise IntegrityError(
            f"the index lists {source.filename} with sha256 {found.sha256}, but "
            f"{recorded_in} records {source.sha256}",
            hint="Check that your index mirrors the real release; nothing was fetched.",
        )
    reporter.step(f"downloading {source.filename} from {found.origin}")
    client.download(found.url, cached, source.sha256, recorded_in, expected_size=found.size)
    return cached


_LOCAL_HINT = limit_hint("download-bytes", "Nothing was imported. Pass the released sdist itself")


def local_sdists(filename: str, archive_paths: tuple[Path, ...]) -> Iterator[Path]:
    """`filename` in the --sdist paths and PATCHTOOL_SDIST_PATH, in that order; pip's
    find-links are the index client's.

    Each path is a folder, whose file of that name is a candidate, or a file, which
    is a candidate when it has that name: --sdist may be given once per base a run
    needs (`rebase` needs the old base's sdist and the new one's). A --sdist path
    that does not exist is NotFoundError; so is a lookup that finds no candidate when
    --sdist named files (those were meant for this run; the index is not asked).
    PATCHTOOL_SDIST_PATH is a standing setting: its files of other names are only
    not candidates."""
    paths = list(archive_paths)
    from_environment = os.environ.get(ARCHIVE_ENVIRONMENT_VARIABLE)
    if from_environment:
        paths.extend(Path(p) for p in from_environment.split(os.pathsep) if p)
    named: list[Path] = []
    for path in paths:
        if path.is_dir():
            candidate = path / filename
            if candidate.is_file():
                yield candidate
        elif path.is_file():
            if path.name == filename:
                yield path
            elif path in archive_paths and path not in named:
                named.append(path)
        elif archive_paths and path in archive_paths:
            raise NotFoundError(f"sdist path {path} does not exist")
    if named:
        raise NotFoundError(
            f"{filename} is not among the files given with --sdist "
            f"({', '.join(str(path) for path in named)})",
            hint=f"Pass the file named {filename} (or a folder holding it) with --sdist too; "
            "--sdist may be given once for each sdist the run needs.",
        )
