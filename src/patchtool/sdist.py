"""Released sdists as bases: found, checked by hash, imported as one commit.

A `pypi` base is an sdist found on the index the user's pip is configured for
(index.py: their index, extra indexes, find-links folders and proxies apply),
or in a local file or folder for air-gapped sites (--sdist,
PATCHTOOL_SDIST_PATH). It is checked against the sha256 in base.toml before
anything reads it, then imported into the cache's bare repository as one
deterministic commit (fixed author, committer, date and message, file modes
kept), so that the same sdist gives the same commit id on every machine.
Archives with absolute or climbing member names, links out of the tree, hard
links or device files are refused.
"""

from __future__ import annotations

import io
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .cache import BaseCache, base_ref_name
from .errors import IntegrityError, NotFoundError, UnsafeInputError, quoted
from .fsutil import sha256_of
from .gitops import Git, tool_identity
from .index import IndexClient, remove_partial_downloads
from .report import Reporter
from .store import BaseRef, PypiSource

ARCHIVE_ENVIRONMENT_VARIABLE = "PATCHTOOL_SDIST_PATH"


def import_message(project: str, version: str, source: PypiSource) -> str:
    """The message of an sdist's import commit; part of what fixes its id."""
    return f"Import {project} {version} from {source.filename}\n\nsha256 {source.sha256}\n"


# --------------------------------------------------------------------------- sdist import


def import_sdist(
    archive: Path, repository: Path, project: str, version: str, source: PypiSource
) -> str:
    """Import an sdist as one deterministic commit; return its id."""
    members = list(_safe_members(archive))
    newest = max((m.mtime for m in members), default=0)
    date = f"{int(newest)} +0000"
    message = import_message(project, version, source).encode()
    identity = tool_identity(date)
    stream = io.BytesIO()
    stream.write(b"commit refs/patchtool/import\n")
    stream.write(
        f"author {identity['GIT_AUTHOR_NAME']} <{identity['GIT_AUTHOR_EMAIL']}> {date}\n".encode()
    )
    committer = f"{identity['GIT_COMMITTER_NAME']} <{identity['GIT_COMMITTER_EMAIL']}>"
    stream.write(f"committer {committer} {date}\n".encode())
    stream.write(b"data %d\n" % len(message) + message)
    stream.write(b"deleteall\n")
    with tarfile.open(archive, "r:*") as tar:
        for member in members:
            if member.issym():
                mode = b"120000"
                content = member.linkname.encode("utf-8", "surrogateescape")
            else:
                mode = b"100755" if member.mode & 0o111 else b"100644"
                handle = tar.extractfile(member.original)
                assert handle is not None
                content = handle.read()
            path = _fast_import_path(member.path)
            stream.write(b"M " + mode + b" inline " + path + b"\n")
            stream.write(b"data %d\n" % len(content) + content + b"\n")
    stream.write(b"done\n")
    git = Git(repository)
    git.run("fast-import", "--quiet", "--done", "--force", input=stream.getvalue())
    commit = git.text("rev-parse", "refs/patchtool/import")
    git.run("update-ref", base_ref_name(commit), commit)
    git.run("update-ref", "-d", "refs/patchtool/import")
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


def _safe_members(archive: Path) -> Iterator[_Member]:
    """The archive's files below its one top folder, refusing anything that could
    reach outside the tree or is not a plain file or an in-tree symlink."""
    try:
        tar = tarfile.open(archive, "r:*")  # noqa: SIM115 - closed by the `with tar` below
    except (tarfile.TarError, OSError) as error:
        raise IntegrityError(f"{archive}: not a readable sdist archive: {error}") from error
    with tar:
        top: str | None = None
        seen: set[str] = set()
        try:
            infos = tar.getmembers()
        except (tarfile.TarError, EOFError, OSError) as error:
            raise IntegrityError(f"{archive}: corrupt or truncated archive: {error}") from error
        for info in infos:
            name = info.name
            if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
                raise UnsafeInputError(f"{archive}: member {quoted(name)} has an absolute path")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if ".." in parts:
                raise UnsafeInputError(f"{archive}: member {quoted(name)} climbs out with '..'")
            if not parts:
                continue
            if top is None:
                top = parts[0]
            elif parts[0] != top:
                raise UnsafeInputError(
                    f"{archive}: member {quoted(name)} is outside the top folder {quoted(top)}"
                )
            relative = parts[1:]
            if info.isdir() or not relative:
                continue
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
            if path in seen:
                raise UnsafeInputError(f"{archive}: member {quoted(name)} appears twice")
            seen.add(path)
            yield _Member(path, info.mode, float(info.mtime), info.linkname, info)


def _fast_import_path(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    if b"\n" in raw or raw.startswith(b'"') or b"\\" in raw:
        escaped = raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")
        return b'"' + escaped + b'"'
    return raw


# --------------------------------------------------------------------------- obtaining sdists


def obtain_sdist(
    base: BaseRef, cache: BaseCache, reporter: Reporter, archive_paths: tuple[Path, ...]
) -> Path:
    """A verified copy of the base's sdist in the cache, from the cache, local paths,
    pip's find-links or the package index, in that order (the caller holds the
    cache lock)."""
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
    cached.parent.mkdir(parents=True, exist_ok=True)
    # A killed run's half-written file; the lock the caller holds rules out a live one.
    remove_partial_downloads(cached.parent, cached.name)
    client = IndexClient(reporter=reporter)
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
        actual = sha256_of(local)
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
    client.download(found.url, cached, source.sha256, recorded_in)
    return cached


def local_sdists(filename: str, archive_paths: tuple[Path, ...]) -> Iterator[Path]:
    """`filename` in the --sdist paths and PATCHTOOL_SDIST_PATH (files or folders), in
    that order; pip's find-links are the index client's."""
    paths = list(archive_paths)
    from_environment = os.environ.get(ARCHIVE_ENVIRONMENT_VARIABLE)
    if from_environment:
        paths.extend(Path(p) for p in from_environment.split(os.pathsep) if p)
    for path in paths:
        if path.is_dir():
            candidate = path / filename
            if candidate.is_file():
                yield candidate
        elif path.is_file():
            if path.name != filename:
                raise IntegrityError(
                    f"{path}: expected a file named {filename}",
                )
            yield path
        elif archive_paths and path in archive_paths:
            raise NotFoundError(f"sdist path {path} does not exist")
