"""Upstream bases: a released sdist from the package index, or a git commit.

A `pypi` base is an sdist found on the index the user's pip is configured for
(their index, extra indexes, find-links folders and proxies apply), or in a
local file or folder for air-gapped sites. It is checked against the sha256 in
base.toml before anything reads it, then imported into a cached bare git
repository as one deterministic commit (fixed author, committer, date and
message, file modes kept), so that the same sdist gives the same commit id on
every machine.

A `git` base is fetched from the recorded URL or path into the same cache.

The cache lives under the user's cache directory; PATCHTOOL_CACHE_DIR or
`--cache-dir` move it. With the cache warm no network is touched.

git does not re-hash objects when it reads them, so a cache object rewritten
in place would flow unnoticed into every build tree. A base taken from the
cache is therefore checked against its commit id first: every object of the
commit's tree is read and hashed again (`verify_base_objects`). Success is
remembered in `<repository>/patchtool-verified.json` together with a
fingerprint of the object files (path, size, mtime, inode), so a warm cache
pays for the full check once per state of its object files; `check` always
verifies in full.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import IntegrityError, NetworkError, NotFoundError, UnsafeInputError
from .fsutil import atomic_write, sha256_of
from .gitops import Git, run_plain, tool_identity
from .index import IndexClient, redact, remove_partial_downloads
from .report import Reporter
from .store import BaseRef, GitSource, PypiSource

CACHE_ENVIRONMENT_VARIABLE = "PATCHTOOL_CACHE_DIR"
ARCHIVE_ENVIRONMENT_VARIABLE = "PATCHTOOL_SDIST_PATH"
VERIFIED_RECORD = "patchtool-verified.json"  # in each cache repository

# "recorded": trust an earlier verification while the object files are unchanged;
# "full": hash every object of the base again (check, the CI gate).
Verification = Literal["recorded", "full"]


def cache_root(explicit: Path | None = None) -> Path:
    if explicit is not None:
        return explicit.expanduser().resolve()
    from_environment = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if from_environment:
        return Path(from_environment).expanduser().resolve()
    import platformdirs

    return Path(platformdirs.user_cache_dir("patchtool", appauthor=False))


@dataclass(frozen=True)
class BaseCache:
    """`<root>/sdists/<sha256>/<file>` and `<root>/repos/<project>.git`."""

    root: Path

    def repository(self, project: str) -> Path:
        return self.root / "repos" / f"{project}.git"

    def sdist_path(self, source: PypiSource) -> Path:
        return self.root / "sdists" / source.sha256 / source.filename

    def lock_path(self, project: str) -> Path:
        return self.root / "repos" / f"{project}.lock"


def base_ref_name(commit: str) -> str:
    return f"refs/patchtool/bases/{commit}"


@contextmanager
def locked_cache_repository(cache: BaseCache, project: str) -> Iterator[Git]:
    """The project's bare cache repository (created if missing), held under the
    cache lock so that concurrent runs never import into it at the same time."""
    from filelock import FileLock

    repository = cache.repository(project)
    repository.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache.lock_path(project))):
        if not (repository / "HEAD").exists():
            Git(repository.parent).run("init", "--quiet", "--bare", str(repository))
        yield Git(repository)


def import_message(project: str, version: str, source: PypiSource) -> str:
    """The message of an sdist's import commit; part of what fixes its id."""
    return f"Import {project} {version} from {source.filename}\n\nsha256 {source.sha256}\n"


def ensure_base(
    base: BaseRef,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...] = (),
    verify: Verification = "recorded",
) -> Path:
    """Make sure the cache repository holds `base.commit`, intact; return that repository.

    `verify="recorded"` trusts an earlier verification of the same commit while
    the object files are unchanged; `verify="full"` hashes every object again.
    """
    repository = cache.repository(base.project)
    with locked_cache_repository(cache, base.project) as git:
        if git.rev_parse(base.commit) is None:
            _fill_base(base, cache, reporter, archive_paths, repository)
        if verify == "full" or not _recorded_as_verified(repository, base.commit):
            reporter.step(f"verifying {base.label} ({base.commit[:12]}) in the cache")
            verify_and_record(repository, base.commit, reporter)
        return repository


def _fill_base(
    base: BaseRef,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...],
    repository: Path,
) -> None:
    """Import or fetch `base.commit` into the cache repository (the caller holds its lock)."""
    if isinstance(base.source, PypiSource):
        archive = obtain_sdist(base, cache, reporter, archive_paths)
        reporter.step(f"importing {archive.name} into the cache")
        commit = import_sdist(archive, repository, base.project, base.version, base.source)
        if commit != base.commit:
            raise IntegrityError(
                f"{base.path / 'base.toml'}: the sdist {base.source.filename} imports as "
                f"commit {commit}, but base.toml records {base.commit}",
                hint="The sdist matched its sha256, so base.toml's commit is wrong or "
                "was written by an incompatible patchtool; fix the commit line.",
            )
    else:
        fetch_git_commit(base, repository, reporter)


# --------------------------------------------------------------------------- cache verification


def verify_base_objects(repository: Path, commit: str) -> None:
    """Hash every object of `commit` and its tree again; raise IntegrityError for
    the first one whose content does not match its id, or that is missing.

    Only the commit and its tree are read, not its history: the tree is all a
    build tree is made of, and a git base may carry a long history.
    """
    # Replace refs would let git answer for one object with another's content.
    git = Git(repository, env={"GIT_NO_REPLACE_OBJECTS": "1"})
    listing = git.run(
        "rev-list", "--objects", "--no-walk", "--missing=print", commit, "--", check=False
    )
    if listing.returncode != 0:
        raise _damaged(
            repository,
            f"the objects of commit {commit} cannot be listed: {_last_line(listing.stderr)}",
        )
    width = len(commit)
    objects: list[tuple[bytes, str | None]] = []  # (id, path from rev-list; None if missing)
    for line in listing.stdout.split(b"\n"):
        if line.startswith(b"?"):
            objects.append((line[1:], None))
        elif line:
            objects.append((line[:width], line[width + 1 :].decode("utf-8", "replace")))
    batch = git.run(
        "cat-file", "--batch", input=b"".join(oid + b"\n" for oid, _ in objects), check=False
    )
    # The batch is parsed by the sizes in its headers: content may hold any byte.
    data = batch.stdout
    view = memoryview(data)
    algorithm = "sha1" if width == 40 else "sha256"
    position = 0
    for oid, path in objects:
        name = oid.decode("ascii", "replace")
        end = data.find(b"\n", position)
        header = data[position:end].split(b" ") if end >= 0 else []
        if header[1:] == [b"missing"] or path is None:
            # git also answers "missing" for a loose object it cannot inflate.
            kind, path = _locate_missing(git, commit, name)
            what = _describe(kind, name, path, commit)
            reason = _reason(batch.stderr, name)
            raise _damaged(
                repository, f"{what} cannot be read: {reason}" if reason else f"{what} is missing"
            )
        if len(header) != 3 or header[0] != oid or not header[2].isdigit():
            what = _describe("object", name, path, commit)
            reason = _reason(batch.stderr, name) or _last_line(batch.stderr)
            raise _damaged(repository, f"{what} cannot be read: {reason}")
        kind = header[1].decode("ascii", "replace")
        size = int(header[2])
        start, stop = end + 1, end + 1 + size
        if data[stop : stop + 1] != b"\n":
            what = _describe(kind, name, path, commit)
            reason = _reason(batch.stderr, name) or _last_line(batch.stderr)
            raise _damaged(repository, f"{what} cannot be read: {reason}")
        digest = hashlib.new(algorithm, b"%s %d\0" % (header[1], size))
        digest.update(view[start:stop])
        if digest.hexdigest() != name:
            what = _describe(kind, name, path, commit)
            raise _damaged(repository, f"{what} holds content that hashes to {digest.hexdigest()}")
        position = stop + 1


def _describe(kind: str, oid: str, path: str, commit: str) -> str:
    if oid == commit:
        return f"commit {oid}"
    return f"{kind} {oid} ({path or 'the top folder'}) of commit {commit}"


def _locate_missing(git: Git, commit: str, oid: str) -> tuple[str, str]:
    """The kind and path of a missing object, from the trees that name it (error path only)."""
    listing = git.run("ls-tree", "-r", "-t", "-z", "--full-tree", commit, check=False)
    for entry in listing.stdout.split(b"\0"):
        info, _, path = entry.partition(b"\t")
        fields = info.split(b" ")
        if len(fields) == 3 and fields[2].decode("ascii", "replace") == oid:
            return fields[1].decode("ascii", "replace"), path.decode("utf-8", "replace")
    return "object", "?"


def _reason(stderr: str, oid: str) -> str:
    """git's complaint about `oid`: its messages up to the first that names it. The
    objects before it read cleanly, so the lines before that one are about it too."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for number, line in enumerate(lines):
        if oid in line:
            return "; ".join(lines[: number + 1])
    return ""


def _last_line(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    return lines[-1] if lines else "git gave no reason"


def _damaged(repository: Path, what: str) -> IntegrityError:
    root = repository.parent.parent  # <root>/repos/<project>.git, see BaseCache
    return IntegrityError(
        f"the cache repository {repository} is damaged: {what}",
        hint=f"Remove it (`rm -rf {repository}`) or the whole cache ({root}, set by "
        f"{CACHE_ENVIRONMENT_VARIABLE} or --cache-dir) and run again; the base is then "
        "imported or fetched afresh.",
    )


def objects_fingerprint(repository: Path) -> str:
    """sha256 over (path, size, mtime_ns, inode) of every file under `objects/`.

    ctime is left out on purpose: `git clone --local` hard-links the packs, and
    that changes their ctime on every unpatch. What this cannot see is a file
    rewritten in place that keeps its size and gets its mtime set back; `check`
    verifies in full for that reason.
    """
    objects = repository / "objects"
    entries: list[tuple[str, int, int, int]] = []
    for folder, _, files in os.walk(objects):
        for name in files:
            path = os.path.join(folder, name)
            try:
                status = os.lstat(path)
            except FileNotFoundError:  # gone since the walk listed it: a changed state anyway
                continue
            relative = os.path.relpath(path, objects)
            entries.append((relative, status.st_size, status.st_mtime_ns, status.st_ino))
    digest = hashlib.sha256()
    for relative, size, mtime, inode in sorted(entries):
        digest.update(b"%s\0%d\0%d\0%d\n" % (os.fsencode(relative), size, mtime, inode))
    return digest.hexdigest()


@dataclass(frozen=True)
class _VerifiedRecord:
    fingerprint: str
    commits: frozenset[str]


def _read_verified_record(repository: Path) -> _VerifiedRecord | None:
    """The record of earlier verifications; None if absent or unreadable (verify again)."""
    try:
        data = json.loads((repository / VERIFIED_RECORD).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    fingerprint, commits = data.get("fingerprint"), data.get("commits")
    if not isinstance(fingerprint, str) or not isinstance(commits, list):
        return None
    return _VerifiedRecord(fingerprint, frozenset(c for c in commits if isinstance(c, str)))


def _recorded_as_verified(repository: Path, commit: str) -> bool:
    record = _read_verified_record(repository)
    return (
        record is not None
        and commit in record.commits
        and record.fingerprint == objects_fingerprint(repository)
    )


def verify_and_record(repository: Path, commit: str, reporter: Reporter) -> None:
    """Verify `commit` in the cache repository and remember it for this state of its
    object files (the caller holds the cache lock)."""
    # Taken before the objects are read: a change while they are read shows next time.
    fingerprint = objects_fingerprint(repository)
    verify_base_objects(repository, commit)
    record = _read_verified_record(repository)
    commits = set(record.commits) if record and record.fingerprint == fingerprint else set()
    if commit in commits:
        return
    data = {"fingerprint": fingerprint, "commits": sorted(commits | {commit})}
    try:
        atomic_write(repository / VERIFIED_RECORD, (json.dumps(data, indent=2) + "\n").encode())
    except IntegrityError as error:
        # The base is sound; only the memory of it is lost: the next run verifies again.
        reporter.warn(error.message)


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
                raise UnsafeInputError(f"{archive}: member {name!r} has an absolute path")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if ".." in parts:
                raise UnsafeInputError(f"{archive}: member {name!r} climbs out with '..'")
            if not parts:
                continue
            if top is None:
                top = parts[0]
            elif parts[0] != top:
                raise UnsafeInputError(
                    f"{archive}: member {name!r} is outside the top folder {top!r}"
                )
            relative = parts[1:]
            if info.isdir() or not relative:
                continue
            if ".git" in relative:
                raise UnsafeInputError(f"{archive}: member {name!r} is inside a .git folder")
            path = "/".join(relative)
            if info.ischr() or info.isblk() or info.isfifo() or info.isdev():
                raise UnsafeInputError(f"{archive}: member {name!r} is a device or fifo")
            if info.islnk():
                raise UnsafeInputError(
                    f"{archive}: member {name!r} is a hard link",
                    hint="sdists hold plain files and symlinks only.",
                )
            if info.issym():
                target = posixpath.normpath(posixpath.join(posixpath.dirname(path), info.linkname))
                if info.linkname.startswith("/") or target == ".." or target.startswith("../"):
                    raise UnsafeInputError(
                        f"{archive}: symlink {name!r} points outside the tree ({info.linkname!r})"
                    )
            elif not info.isfile():
                raise UnsafeInputError(f"{archive}: member {name!r} is not a regular file")
            if path in seen:
                raise UnsafeInputError(f"{archive}: member {name!r} appears twice")
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


# --------------------------------------------------------------------------- git bases


def fetch_git_commit(base: BaseRef, repository: Path, reporter: Reporter) -> None:
    """Fetch `base.commit` from the base's git source. The URL is a parsed
    `GitUrl` (no option, no remote helper, an allowed scheme), is passed after
    `--`, and git runs with `protocol.allow` pinned to the same schemes."""
    assert isinstance(base.source, GitSource)
    url = base.source.url.location(base.path)
    reporter.step(f"fetching {base.commit[:12]} from {redact(url)}")
    git_dir = ["--git-dir", str(repository)]
    try:
        run_plain([*git_dir, "fetch", "--quiet", "--no-tags", "--", url, base.commit], repository)
    except Exception:
        # Servers that refuse fetch-by-id: take their branches and tags instead.
        try:
            run_plain(
                [
                    *git_dir,
                    "fetch",
                    "--quiet",
                    "--",
                    url,
                    "+refs/heads/*:refs/patchtool/remote/heads/*",
                    "+refs/tags/*:refs/patchtool/remote/tags/*",
                ],
                repository,
            )
        except Exception as error:
            raise NetworkError(f"cannot fetch from {redact(url)}: {redact(str(error))}") from error
    git = Git(repository)
    if git.rev_parse(base.commit) is None:
        raise NotFoundError(
            f"commit {base.commit} is not in {redact(url)}",
            hint=f"Check source.url and commit in {base.path / 'base.toml'}.",
        )
    git.run("update-ref", base_ref_name(base.commit), base.commit)
