"""The base cache: every upstream base as a commit in a bare git repository,
filled from a released sdist (sdist.py) or fetched from git, and verified.

    <cache>/sdists/<sha256>/<file>     downloaded sdists, checked by hash
    <cache>/repos/<project>.git        a project's sdist imports, and nothing fetched
    <cache>/repos/<project>.lock       its lock (concurrent runs fill it in turn)
    <cache>/sources/<key>.git          one bare repository per git source: its fetches
    <cache>/sources/<key>.lock         its lock

`BaseCache.repository_for` is the one place that says which repository holds
a base; every command asks it (through `bases.ensure_base`, which returns it).

Why two kinds of repository: a git base's objects and refs come from whoever
wrote its URL, and a hostile store can point a git base at a repository of its
own, holding a commit whose message and author are exactly what the sdist
importer writes. The commit of a released sdist is therefore never found by
anything a fetch can bring (a message, a tree, a ref from the remote): it is
looked up under a key that only the importer writes (`sdist.import_key`,
`refs/patchtool/sdist/<sha256>/<digest of what else fixes the commit>` in the
project's repository) after it built that commit from those hash-checked
bytes, and fetches never go into that repository at all. A git source's
repository is keyed by a hash of its normalised location (`git_source_key`),
so one source's fetch cannot place refs or objects where another source's, or
an sdist's, lookup reads.

A cache written by an older patchtool (one `<project>.git` holding imports and
fetches, imports found by their message) keeps working: its repository holds
no import keys, so every sdist base in it is imported again from its cached
sdist (no network when `<cache>/sdists/` has the file) and compared with
base.toml before it is used; git bases are fetched again into their own
repositories. What earlier fetches left in the old repository is never looked
up. The import is deterministic, so an old cache gives the same commit ids.

The cache lives under the user's cache directory; PATCHTOOL_CACHE_DIR or
`--cache-dir` move it. With the cache warm no network is touched.

git does not re-hash objects when it reads them, so a cache object rewritten
in place would flow unnoticed into every build tree. A base taken from the
cache is therefore checked against its commit id first: every object of the
commit's tree is read and hashed again (`verify_base_objects`). Success is
remembered in `<repository>/patchtool-verified.json` together with a
fingerprint of the object files (path, size, mtime, inode), so a warm cache
pays for the full check once per state of its object files; `check` always
verifies in full. Before a git base is verified (which reads every object),
its tree is measured from the objects' headers (extent.py) and refused past
the device's limits; the record keeps that extent beside the commit, so a warm
run holds it against the limits of the device at hand without reading.

A `git` base is fetched from the recorded URL or path (`bases.fetch_git_commit`).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Literal

from patchtool.core.errors import IntegrityError, PatchtoolError
from patchtool.core.fsutil import atomic_write, read_regular_file
from patchtool.core.gitops import Git
from patchtool.core.report import Reporter
from patchtool.sources.extent import Extent
from patchtool.store.model import BaseRef, GitSource, PypiSource

CACHE_ENVIRONMENT_VARIABLE = "PATCHTOOL_CACHE_DIR"
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
    """`<root>/sdists/<sha256>/<file>`, `<root>/repos/<project>.git` (sdist imports)
    and `<root>/sources/<key>.git` (one per git source); see the module's docstring."""

    root: Path

    def repository_for(self, base: BaseRef) -> Path:
        """The repository that holds `base`: its project's import repository for a
        released sdist, its source's own repository for a git base."""
        if isinstance(base.source, PypiSource):
            return self.release_repository(base.project)
        key = git_source_key(base.source, base.path)
        return self.root / "sources" / f"{key}.git"

    def release_repository(self, project: str) -> Path:
        """Where `project`'s sdists are imported (use `repository_for` for a base)."""
        return self.root / "repos" / f"{project}.git"

    def sdist_path(self, source: PypiSource) -> Path:
        return self.root / "sdists" / source.sha256 / source.filename


def git_source_key(source: GitSource, base_folder: Path) -> str:
    """The name of a git source's cache repository: a hash of the location git is
    given (a local path made absolute and real, a URL without its password), so
    that every base naming that source shares one repository and no other."""
    location = source.url.location(base_folder)
    if source.url.kind == "path":
        location = os.path.realpath(location)
    elif source.url.kind == "url":
        scheme, separator, rest = location.partition("://")
        host, slash, path = rest.partition("/")
        user, at, address = host.rpartition("@")
        if at:  # the password is no part of which repository it is
            host = f"{user.partition(':')[0]}@{address}"
        location = f"{scheme.lower()}{separator}{host}{slash}{path}".rstrip("/")
    return hashlib.sha256(location.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def base_ref_name(commit: str) -> str:
    return f"refs/patchtool/bases/{commit}"


def read_refs(git: Git, *names: str) -> dict[str, str]:
    """The commits the refs `names` point at (one git call; absent refs left out)."""
    if not names:
        return {}
    listing = git.run("for-each-ref", "--format=%(refname) %(objectname)", *names).text
    found = dict(line.split(" ", 1) for line in listing.splitlines() if " " in line)
    return {name: found[name] for name in names if name in found}


@contextmanager
def locked_cache_repository(repository: Path) -> Iterator[Git]:
    """A bare cache repository (created if missing), held under its lock
    (`<repository minus .git>.lock`) so that concurrent runs never fill it at the
    same time."""
    from filelock import FileLock

    repository.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(repository.with_suffix(".lock"))):
        if not (repository / "HEAD").exists():
            Git(repository.parent).run("init", "--quiet", "--bare", str(repository))
        yield Git(repository)


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
    root = repository.parent.parent  # <root>/repos/<project>.git or <root>/sources/<key>.git
    return IntegrityError(
        f"the cache repository {repository} is damaged: {what}",
        hint=f"Remove it (`rm -rf {repository}`) or the whole cache ({root}, set by "
        f"{CACHE_ENVIRONMENT_VARIABLE} or --cache-dir) and run again; the base is then "
        "imported or fetched afresh.",
    )


def objects_fingerprint(repository: Path) -> str:
    """sha256 over (path, size, mtime_ns, inode) of every file under `objects/`,
    a pack's checksum trailer standing for its mtime.

    ctime is left out on purpose: `git clone --local` hard-links the packs, and
    that changes their ctime on every unpatch. A pack's mtime is left out too:
    git "freshens" a pack (sets its mtime to now) whenever it writes an object
    the pack already holds, and in a build tree whose packs are hard-linked to
    the cache's that happens on every import of a file the base has somewhere
    (an empty `__init__.py`), so the fingerprint would change on every run; the
    checksum git writes at a pack's end changes with its content instead. What
    this cannot see is a file rewritten in place that keeps its size and gets
    its mtime (or, for a pack, its trailer) set back; `check` verifies in full
    for that reason.
    """
    objects = repository / "objects"
    entries: list[tuple[str, int, int | bytes, int]] = []
    for folder, _, files in os.walk(objects):
        for name in files:
            path = os.path.join(folder, name)
            try:
                status = os.lstat(path)
                stamp: int | bytes = status.st_mtime_ns
                if name.endswith(".pack"):
                    stamp = _pack_trailer(path)
            except FileNotFoundError:  # gone since the walk listed it: a changed state anyway
                continue
            relative = os.path.relpath(path, objects)
            entries.append((relative, status.st_size, stamp, status.st_ino))
    digest = hashlib.sha256()
    for relative, size, stamp, inode in sorted(entries, key=lambda entry: entry[0]):
        shown = stamp.hex().encode() if isinstance(stamp, bytes) else b"%d" % stamp
        digest.update(b"%s\0%d\0%s\0%d\n" % (os.fsencode(relative), size, shown, inode))
    return digest.hexdigest()


def _pack_trailer(path: str) -> bytes:
    """The last 32 bytes of a pack: its checksum (20 bytes for SHA-1, 32 for SHA-256)."""
    with open(path, "rb") as pack:
        pack.seek(0, os.SEEK_END)
        pack.seek(max(0, pack.tell() - 32))
        return pack.read(32)


@dataclass(frozen=True)
class _VerifiedRecord:
    fingerprint: str
    commits: frozenset[str]
    extents: dict[str, Extent]


def _read_verified_record(repository: Path) -> _VerifiedRecord | None:
    """The record of earlier verifications; None if absent or unreadable (verify again)."""
    try:
        data = json.loads(read_regular_file(repository / VERIFIED_RECORD, _RECORD_LIMIT))
    except (OSError, ValueError, RecursionError, PatchtoolError):
        return None
    if not isinstance(data, dict):
        return None
    fingerprint, commits = data.get("fingerprint"), data.get("commits")
    if not isinstance(fingerprint, str) or not isinstance(commits, list):
        return None
    extents = {}
    found = data.get("extents")
    for commit, values in (found.items() if isinstance(found, dict) else ()):
        if (
            isinstance(values, list)
            and len(values) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) for v in values[:3])
            and isinstance(values[3], str)
        ):
            extents[commit] = Extent(*values)
    return _VerifiedRecord(
        fingerprint, frozenset(c for c in commits if isinstance(c, str)), extents
    )


# The record names a few commits; a file past this is not patchtool's.
_RECORD_LIMIT = 1 << 20


def recorded_as_verified(repository: Path, commit: str) -> bool:
    record = _read_verified_record(repository)
    return (
        record is not None
        and commit in record.commits
        and record.fingerprint == objects_fingerprint(repository)
    )


def recorded_extent(repository: Path, commit: str) -> Extent | None:
    """The extent recorded when `commit` (a git base) was last verified, if its
    objects are unchanged since (same fingerprint); None means measure again."""
    record = _read_verified_record(repository)
    if (
        record is None
        or commit not in record.commits
        or record.fingerprint != objects_fingerprint(repository)
    ):
        return None
    return record.extents.get(commit)


def verify_and_record(
    repository: Path, commit: str, reporter: Reporter, extent: Extent | None = None
) -> None:
    """Verify `commit` in the cache repository and remember it, with its extent
    where it was measured (a git base's, within the device's limits), for this
    state of its object files (the caller holds the cache lock)."""
    # Taken before the objects are read: a change while they are read shows next time.
    fingerprint = objects_fingerprint(repository)
    verify_base_objects(repository, commit)
    record = _read_verified_record(repository)
    same = record is not None and record.fingerprint == fingerprint
    commits = set(record.commits) if record and same else set()
    extents = dict(record.extents) if record and same else {}
    if commit in commits and (extent is None or extents.get(commit) == extent):
        return
    if extent is not None:
        extents[commit] = extent
    kept = commits | {commit}
    data: dict[str, object] = {"fingerprint": fingerprint, "commits": sorted(kept)}
    if any(c in kept for c in extents):  # a git base's; a repository of sdists has none
        data["extents"] = {c: list(astuple(e)) for c, e in sorted(extents.items()) if c in kept}
    try:
        atomic_write(repository / VERIFIED_RECORD, (json.dumps(data, indent=2) + "\n").encode())
    except IntegrityError as error:
        # The base is sound; only the memory of it is lost: the next run verifies again.
        reporter.warn(error.message)
