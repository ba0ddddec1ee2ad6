"""How large a base is as it would be checked out, measured from git's object
headers before anything lists, verifies or checks it out.

A git tree names each folder by its object id, so a few objects can name one
folder a billion times (ten entries of the same folder, nine levels down: 11
objects, 1e9 files), and a blob is as large as its header says, whatever the
repository's size on disk (2 GiB of zeros pack into a few MB). A git base's
commit comes from whoever wrote its URL, so neither a listing (`ls-tree -r`)
nor a checkout nor a verification that reads every object may come first.

`measure_base` reads each distinct tree object once, level by level (`git
cat-file --batch-check` for its size first, then `--batch` for its entries),
takes every blob's size from its header (`--batch-check`: never its content),
and adds up, memoised per tree, the paths and bytes each tree stands for
wherever it appears: the tree bomb above costs 11 reads and two git calls a
level. It refuses (exit 6) as soon as what it has seen passes the device's
limits: `git-base-paths` (files, links and folders, as checked out),
`git-base-file-bytes` (one file) and `git-base-bytes` (all files together);
the tree objects it reads are bounded before they are read by what a tree of
`git-base-paths` entries can hold. Nothing is checked out or listed by path.

An sdist base is bounded as it is imported (sdist.py). cache.py records a git
base's extent with its verification, so a warm cache compares the record with
the device's limits and reads nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from patchtool.core.errors import IntegrityError, UnsafeInputError
from patchtool.core.fsutil import MAX_NAME_BYTES, MAX_PATH_COMPONENTS, shown_path
from patchtool.core.gitops import Git
from patchtool.store.model import PatchLimits, limit_hint

_TREE_MODE = b"40000"
_GITLINK_MODE = b"160000"
# The most bytes one entry of a tree object takes when its name is within
# fsutil's limit: a mode of six digits, a space, the name, a NUL, a sha256 id.
_ENTRY_BYTES = 6 + 1 + MAX_NAME_BYTES + 1 + 32
_WHAT = "Nothing was checked out. Check that base.toml names the upstream commit you mean"


@dataclass(frozen=True)
class Extent:
    """A base's tree as it would be checked out."""

    paths: int  # files, links, submodules and folders, every appearance counted
    bytes: int  # all files (and link targets) together
    largest: int  # the largest file's size
    largest_path: str  # one path where it appears ("" for an empty tree)


def base_subject(base_file: str, commit: str) -> str:
    """How messages about a base's tree name it: its base.toml and its commit."""
    return f"{base_file}: commit {commit[:12]}"


def check_extent(extent: Extent, limits: PatchLimits, subject: str) -> None:
    """Refuse an extent (recorded earlier, or just measured) past `limits`."""
    _check_largest(extent.largest, extent.largest_path, limits, subject)
    _check_paths(extent.paths, limits, subject)
    _check_bytes(extent.bytes, limits, subject)


def measure_base(git: Git, commit: str, limits: PatchLimits, subject: str) -> Extent:
    """The extent of `commit`'s tree in `git`'s repository, refused (IntegrityError,
    exit 6) as soon as it is known to pass `limits`; `subject` starts every
    message (the base.toml and the commit: `base_subject`)."""
    git = Git(git.cwd, env={"GIT_NO_REPLACE_OBJECTS": "1"})
    root = git.run("rev-parse", "--verify", "--quiet", f"{commit}^{{tree}}", check=False)
    if root.returncode != 0:
        raise IntegrityError(f"{subject}: git cannot read its tree")
    walk = _Walk(git, root.text.strip(), limits, subject)
    walk.read_trees()
    return walk.total()


@dataclass(frozen=True)
class _TreeEntry:
    kind: str  # "tree", "blob" (files and links) or "gitlink"
    name: bytes
    oid: str


class _Walk:
    """The distinct trees below one root, read a level at a time, and the sizes of
    the blobs they name; then the totals, memoised per tree."""

    def __init__(self, git: Git, root: str, limits: PatchLimits, subject: str) -> None:
        self.git = git
        self.root = root
        self.limits = limits
        self.subject = subject
        self.width = len(root) // 2  # raw id bytes in a tree entry
        self.trees: dict[str, list[_TreeEntry]] = {}
        self.sizes: dict[str, int] = {}  # blob -> its size
        # Where each tree or blob was first seen: (the tree naming it, its name).
        self.found_in: dict[str, tuple[str, bytes]] = {}
        self.entries = 0  # entries of the distinct trees read so far
        self.tree_bytes = 0
        self.tree_budget = _ENTRY_BYTES * limits.git_base_paths

    # ----------------------------------------------------------------- reading

    def read_trees(self) -> None:
        level: list[str] = [self.root]
        blobs: list[str] = []
        seen = {self.root}
        depth = 0
        while level or blobs:
            if level and depth > MAX_PATH_COMPONENTS:
                # The path rule (fsutil.path_problem), met before the deeper levels are read.
                raise UnsafeInputError(
                    f"{self.subject}: path {shown_path(self._path(level[0]))} has more than "
                    f"{MAX_PATH_COMPONENTS} components, the limit",
                    hint=f"{_WHAT}: no path of a tree may be deeper.",
                )
            headers = self._headers([*level, *blobs])
            for oid in blobs:
                self._blob_size(oid, headers[oid])
            for oid in level:
                self._tree_size(oid, headers[oid])
            contents = self._contents(level, headers) if level else {}
            next_level: list[str] = []
            blobs = []
            for oid in level:
                entries = self._parse(oid, contents[oid])
                self.trees[oid] = entries
                self.entries += len(entries)
                if self.entries > self.limits.git_base_paths:
                    _check_paths(self.entries, self.limits, self.subject)
                for entry in entries:
                    if entry.kind == "gitlink" or entry.oid in seen:
                        continue
                    seen.add(entry.oid)
                    self.found_in[entry.oid] = (oid, entry.name)
                    (next_level if entry.kind == "tree" else blobs).append(entry.oid)
            level = next_level
            depth += 1

    def _headers(self, oids: list[str]) -> dict[str, tuple[str, int]]:
        """oid -> (type, size), from one `cat-file --batch-check`."""
        out = self.git.run("cat-file", "--batch-check", input=_lines(oids)).stdout
        headers: dict[str, tuple[str, int]] = {}
        for oid, line in zip(oids, out.split(b"\n"), strict=False):
            fields = line.decode("ascii", "replace").split(" ")
            if len(fields) != 3 or fields[0] != oid or not fields[2].isdigit():
                raise self._damaged(oid, "missing" if line.endswith(b" missing") else "unreadable")
            headers[oid] = (fields[1], int(fields[2]))
        if len(headers) != len(oids):
            raise self._damaged(oids[len(headers)], "unreadable")
        return headers

    def _blob_size(self, oid: str, header: tuple[str, int]) -> None:
        kind, size = header
        if kind != "blob":
            raise self._damaged(oid, f"a {kind} where its tree names a file")
        self.sizes[oid] = size
        _check_largest(size, self._path(oid), self.limits, self.subject)

    def _tree_size(self, oid: str, header: tuple[str, int]) -> None:
        kind, size = header
        if kind != "tree":
            raise self._damaged(oid, f"a {kind} where a folder is named")
        self.tree_bytes += size
        if self.tree_bytes > self.tree_budget:
            raise IntegrityError(
                f"{self.subject}: its tree objects hold more than {self.tree_budget} bytes, "
                f"more than a tree of at most {self.limits.git_base_paths} paths can",
                hint=limit_hint("git-base-paths", _WHAT),
            )

    def _contents(self, oids: list[str], headers: dict[str, tuple[str, int]]) -> dict[str, bytes]:
        """oid -> content of each tree, from one `cat-file --batch` (sizes known and
        bounded already)."""
        out = self.git.run("cat-file", "--batch", input=_lines(oids)).stdout
        contents: dict[str, bytes] = {}
        position = 0
        for oid in oids:
            size = headers[oid][1]
            end = out.find(b"\n", position)
            start = end + 1
            if end < 0 or out[start + size : start + size + 1] != b"\n":
                raise self._damaged(oid, "unreadable")
            contents[oid] = out[start : start + size]
            position = start + size + 1
        return contents

    def _parse(self, oid: str, data: bytes) -> list[_TreeEntry]:
        """A tree object's entries: `<mode> <name>\\0<raw id>` each."""
        entries: list[_TreeEntry] = []
        position = 0
        while position < len(data):
            space = data.find(b" ", position)
            nul = data.find(b"\0", space + 1)
            end = nul + 1 + self.width
            if space < 0 or nul < 0 or end > len(data):
                raise self._damaged(oid, "a tree git cannot read")
            mode, name = data[position:space], data[space + 1 : nul]
            kind = "tree" if mode == _TREE_MODE else "gitlink" if mode == _GITLINK_MODE else "blob"
            entries.append(_TreeEntry(kind, name, data[nul + 1 : end].hex()))
            position = end
        return entries

    # ----------------------------------------------------------------- totals

    def total(self) -> Extent:
        """The root's extent, each tree's counted once and reused wherever it appears;
        iterative, so depth costs no stack."""
        memo: dict[str, tuple[int, int, int, str]] = {}  # paths, bytes, largest, its blob
        pending = [(self.root, False)]
        open_trees: set[str] = set()
        while pending:
            oid, children_done = pending.pop()
            if oid in memo:
                continue
            entries = self.trees[oid]
            if not children_done:
                open_trees.add(oid)
                pending.append((oid, True))
                for entry in entries:
                    if entry.kind == "tree" and entry.oid not in memo:
                        if entry.oid in open_trees:  # only a tampered object can do this
                            raise self._damaged(entry.oid, "a folder that holds itself")
                        pending.append((entry.oid, False))
                continue
            open_trees.discard(oid)
            paths = size = largest = 0
            largest_blob = ""
            for entry in entries:
                paths += 1
                if entry.kind == "tree":
                    sub_paths, sub_bytes, sub_largest, sub_blob = memo[entry.oid]
                    paths += sub_paths
                    size += sub_bytes
                    if sub_largest > largest:
                        largest, largest_blob = sub_largest, sub_blob
                elif entry.kind == "blob":
                    blob = self.sizes[entry.oid]
                    size += blob
                    if blob > largest or not largest_blob:
                        largest, largest_blob = blob, entry.oid
            _check_paths(paths, self.limits, self.subject)
            _check_bytes(size, self.limits, self.subject)
            memo[oid] = (paths, size, largest, largest_blob)
        paths, size, largest, largest_blob = memo[self.root]
        return Extent(paths, size, largest, self._path(largest_blob) if largest_blob else "")

    # ----------------------------------------------------------------- naming

    def _path(self, oid: str) -> str:
        """A path where `oid` appears (the first found), for messages (its last
        components only, past the depth limit)."""
        names: list[bytes] = []
        while oid in self.found_in and len(names) <= MAX_PATH_COMPONENTS:
            oid, name = self.found_in[oid]
            names.append(name)
        return b"/".join(reversed(names)).decode("utf-8", "surrogateescape")

    def _damaged(self, oid: str, what: str) -> IntegrityError:
        where = self._path(oid)
        shown = f" ({shown_path(where)})" if where else ""
        repository = self.git.cwd
        return IntegrityError(
            f"{self.subject}: object {oid}{shown} of its tree is {what} in the cache "
            f"repository {repository}",
            hint=f"Remove that repository (`rm -rf {repository}`) and run again: the base is "
            "then fetched or imported afresh.",
        )


def _lines(oids: Iterable[str]) -> bytes:
    return "".join(f"{oid}\n" for oid in oids).encode("ascii")


def _check_largest(size: int, path: str, limits: PatchLimits, subject: str) -> None:
    if size > limits.git_base_file_bytes:
        raise IntegrityError(
            f"{subject}: file {shown_path(path)} is {size} bytes, more than the limit of "
            f"{limits.git_base_file_bytes}",
            hint=limit_hint("git-base-file-bytes", _WHAT),
        )


def _check_paths(paths: int, limits: PatchLimits, subject: str) -> None:
    if paths > limits.git_base_paths:
        raise IntegrityError(
            f"{subject}: its tree has more than {limits.git_base_paths} paths (files and folders, "
            "as checked out)",
            hint=limit_hint("git-base-paths", _WHAT),
        )


def _check_bytes(size: int, limits: PatchLimits, subject: str) -> None:
    if size > limits.git_base_bytes:
        raise IntegrityError(
            f"{subject}: its files hold more than {limits.git_base_bytes} bytes together",
            hint=limit_hint("git-base-bytes", _WHAT),
        )
