"""Small file-system helpers: atomic writes, the atomic folder exchange, folder
removal, JSON records, name and path checks, and the one bounded reader of
files that input names (`read_regular_file`, `open_regular`).

Every file patchtool writes is written whole or not at all: a single file with
`atomic_write` (a temporary file renamed over it), a folder's new state with
`exchange_paths` (built beside it and swapped in with one renameat2). store/
uses both for the store; a killed run or a full disk leaves the old state or
the new one, never a half-written file.

Every folder patchtool removes goes through `remove_tree`, which works at any
depth without recursion, never follows a symlink, holds a bounded number of
file descriptors and reports a failure instead of raising it: a tree that a
hostile patch (or a user) made deep can neither crash a run nor wedge the next
one. `temporary_folder` is the scratch folder that uses it, made where the
caller says (never in the shared temporary folder by default).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import itertools
import json
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from patchtool.core.errors import (
    IntegrityError,
    NotFoundError,
    UnsafeInputError,
    UsageError,
    quoted,
)

# Device names and base ids become folder names: keep them to a portable set.
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,99}$")


def check_name(kind: str, value: str) -> str:
    if not _NAME_PATTERN.match(value) or value in (".", "..") or ".." in value:
        raise UnsafeInputError(
            f"{kind} {quoted(value)} is not a valid name",
            hint=f"A {kind} is 1-100 characters of letters, digits, '.', '_', '+' and '-', "
            "starting with a letter or digit, and never contains '..'.",
        )
    return value


# Code points HFS+ ignores in names (git's is_hfs_dotgit list): ".g\u200cit" is ".git".
_HFS_IGNORED = frozenset(
    [0x200C, 0x200D, 0x200E, 0x200F, 0xFEFF, *range(0x202A, 0x202F), *range(0x206A, 0x2070)]
)


def folds_to(component: str, name: str) -> bool:
    """Whether a path component names `name` (".git", ".gitmodules") on some file
    system git protects against: case-insensitive, HFS+ (ignorable code points),
    NTFS (trailing dots and spaces, an alternate data stream such as
    `::$INDEX_ALLOCATION`, the 8.3 short name such as `GIT~1`)."""
    hfs = "".join(c for c in component if ord(c) not in _HFS_IGNORED).casefold()
    if hfs == name:
        return True
    ntfs = component.split(":", 1)[0].rstrip(" .").casefold()
    if ntfs == name:
        return True
    short = name.lstrip(".")[:6] + "~1"
    return ntfs == short


# How deep and how long a path inside a tree may be. Linux refuses a path of
# 4096 bytes or more (PATH_MAX) and a name of more than 255 (NAME_MAX); a tree
# lives some folders down (`<dir>/<device>/<project>/`, a wheel build adds its
# own), so a path inside it keeps a quarter of PATH_MAX and leaves the rest to
# the folders above. The deepest path of vLLM 0.7.2 to 0.8.5 has 7 components
# and 145 bytes: the limits are about 9 and 7 times that, and they keep every
# walk of a tree (removal, fingerprints) short.
MAX_PATH_COMPONENTS = 64
MAX_PATH_BYTES = 1024
MAX_NAME_BYTES = 255


def path_problem(path: str) -> str | None:
    """Why a path inside a tree is unsafe to write (None when it is fine): empty,
    absolute, climbing, an empty or '.' component, a backslash (a separator on
    Windows), a `.git` component in any spelling, or deeper or longer than the
    limits above."""
    if path == "":
        return "is empty"
    if path.startswith("/"):
        return "is absolute"
    parts = path.split("/")
    if ".." in parts:
        return "climbs out of the tree with '..'"
    if "" in parts or "." in parts:
        return "has an empty or '.' component"
    if "\\" in path:
        return "holds a backslash, a path separator on Windows"
    # Every spelling of .git holds "git" but for ignorable non-ASCII code points.
    if not (path.isascii() and "git" not in path.lower()) and any(
        folds_to(part, ".git") for part in parts
    ):
        return "points into .git"
    return _size_problem(path, parts)


def _size_problem(path: str, parts: list[str]) -> str | None:
    if len(parts) > MAX_PATH_COMPONENTS:
        return f"has {len(parts)} components, more than the limit of {MAX_PATH_COMPONENTS}"
    if len(path) <= MAX_NAME_BYTES // 4:
        return None  # no UTF-8 spelling of it can exceed a limit
    size = len(_utf8(path))
    if size > MAX_PATH_BYTES:
        return f"is {size} bytes long, more than the limit of {MAX_PATH_BYTES}"
    longest = max(len(_utf8(part)) for part in parts)
    if longest > MAX_NAME_BYTES:
        return f"has a name of {longest} bytes, more than the limit of {MAX_NAME_BYTES}"
    return None


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def shown_path(path: str) -> str:
    """A path for a message: quoted, and shortened in the middle when it is long
    (a hostile path can be thousands of characters)."""
    return quoted(path if len(path) <= 120 else path[:60] + "…" + path[-40:], 120)


def check_relative_path(where: str, path: str) -> str:
    """A path a store file names inside the build tree (env.sh, a required file)."""
    problem = path_problem(path)
    if problem is not None:
        raise UnsafeInputError(
            f"{where} {quoted(path)} {problem}", hint="Name a file inside the tree, relative to it."
        )
    return path


T = TypeVar("T")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON object patchtool wrote (a tree's record, a rebase's state). A missing
    file is FileNotFoundError, for the caller to word; one that is not a JSON
    object is IntegrityError (exit 6) naming it."""
    text = path.read_text("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError as error:
        raise IntegrityError(f"{path} is damaged: {error}") from error
    if not isinstance(data, dict):
        raise IntegrityError(f"{path} is damaged: not a JSON object")
    return data


def read_json_record(path: Path, build: Callable[[dict[str, Any]], T], hint: str) -> T:
    """A record patchtool wrote, as `build` makes it of the JSON object. A missing
    file is FileNotFoundError, for the caller to word; a damaged one (not a JSON
    object, or one `build` cannot use: KeyError, TypeError, ValueError) is
    IntegrityError (exit 6) naming the file, with `hint`."""
    try:
        return build(read_json_object(path))
    except IntegrityError as error:
        raise IntegrityError(error.message, hint=hint) from error
    except (KeyError, TypeError, ValueError) as error:
        raise IntegrityError(f"{path} is damaged: {error}", hint=hint) from error


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that readers see the old or the new file, never a mix."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file 0600; give it the mode an ordinary write would.
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = new_file_mode()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise IntegrityError(
            f"could not write {path}: {error.strerror or error}",
            hint="Check free disk space and permissions; the previous file is unchanged.",
        ) from error


def new_file_mode() -> int:
    """The mode an ordinary `open(path, "w")` would give a new file (0666 less umask)."""
    current = os.umask(0)
    os.umask(current)
    return 0o666 & ~current


def fsync_directory(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_build_dir(build_dir: Path, protected: list[Path]) -> Path:
    """Refuse a `--dir` that is the filesystem root, the home folder or a protected folder
    (the repository root, the store): patchtool replaces trees below it."""
    resolved = build_dir.resolve()
    forbidden = {Path("/").resolve(), Path.home().resolve(), *(p.resolve() for p in protected)}
    if resolved in forbidden:
        raise UsageError(
            f"--dir {build_dir} is not a usable build folder ({resolved} is protected)",
            hint="Use a folder of its own, such as the default 'build'.",
        )
    for parent in forbidden:
        if parent != Path("/").resolve() and resolved in parent.parents:
            raise UsageError(
                f"--dir {build_dir} lies above a protected folder ({parent})",
                hint="Use a folder of its own, such as the default 'build'.",
            )
    return resolved


def exchange_paths(source: Path, target: Path) -> None:
    """Swap two folders atomically (Linux renameat2 RENAME_EXCHANGE): readers and
    a killed run see the old folder or the new one, never neither. Elsewhere,
    three renames, with a short window in which a kill leaves the old folder
    beside its place under a `.old` name."""
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is not None:
            at_fdcwd, rename_exchange = -100, 2
            if (
                renameat2(
                    at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), rename_exchange
                )
                == 0
            ):
                return
    aside = source.with_name(source.name + ".old")
    os.rename(target, aside)
    os.rename(source, target)
    os.rename(aside, source)


def sha256_of(
    path: Path,
    *,
    follow_symlinks: bool = True,
    limit: int | None = None,
    limit_hint: str | None = None,
) -> str:
    """The file's sha256, read in 1 MiB blocks: a regular file (`open_regular`),
    at most `limit` bytes if one is given."""
    digest = hashlib.sha256()
    with open_regular(path, follow_symlinks=follow_symlinks) as (handle, size):
        if limit is not None and size > limit:
            raise IntegrityError(
                f"{path} is {size} bytes, more than the limit of {limit}", hint=limit_hint
            )
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- bounded reading


@contextlib.contextmanager
def open_regular(
    path: Path,
    *,
    follow_symlinks: bool = False,
    dir_fd: int | None = None,
    name: str | None = None,
    link_note: str = "",
    link_hint: str | None = None,
    kind_hint: str | None = None,
) -> Iterator[tuple[BinaryIO, int]]:
    """A file that input names, opened for reading, with its size: a regular
    file, or refused before a byte is read. The open never blocks (O_NONBLOCK:
    a FIFO opens at once and is then refused, as are devices such as /dev/zero
    and sockets), and, unless `follow_symlinks`, a symlink is refused rather
    than followed (O_NOFOLLOW: it could point anywhere on the machine). Files
    the user names on the command line or in settings may be links
    (`follow_symlinks`); files a store, a patch or a tree names may not.

    `path` is taken relative to `dir_fd` when one is given. `name` is how
    messages call the file (default: the path); `link_note` says after "is a
    symlink; " why links are refused here. NotFoundError (exit 3) for a missing
    file, UnsafeInputError (exit 10) for a link or not a regular file,
    IntegrityError (exit 6) for one that cannot be read."""
    shown = name if name is not None else str(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    if not follow_symlinks:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except FileNotFoundError as error:
        raise NotFoundError(f"{shown} does not exist") from error
    except OSError as error:
        try:
            info: os.stat_result | None = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode) and not follow_symlinks:
            note = f"; {link_note}" if link_note else ""
            raise UnsafeInputError(f"{shown} is a symlink{note}", hint=link_hint) from error
        if info is not None and not stat.S_ISREG(info.st_mode) and not stat.S_ISLNK(info.st_mode):
            raise UnsafeInputError(f"{shown} is not a regular file", hint=kind_hint) from error
        raise IntegrityError(f"{shown} cannot be read: {error.strerror or error}") from error
    # Asked before the descriptor becomes a file object: Python refuses to make one
    # of a folder (IsADirectoryError), which O_RDONLY opens without complaint.
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        folder = stat.S_ISDIR(info.st_mode)
        what = "a folder, not a regular file" if folder else "not a regular file"
        raise UnsafeInputError(f"{shown} is {what}", hint=kind_hint)
    with os.fdopen(fd, "rb") as handle:
        yield handle, info.st_size


def read_regular_file(
    path: Path,
    limit: int,
    *,
    follow_symlinks: bool = False,
    dir_fd: int | None = None,
    name: str | None = None,
    link_note: str = "",
    link_hint: str | None = None,
    kind_hint: str | None = None,
    limit_hint: str | None = None,
) -> bytes:
    """The bytes of a file that input names, at most `limit` of them: opened as
    `open_regular` opens it, refused by its size before it is read (exit 6, with
    `limit_hint`), and never read past `limit` (a file that grows while it is
    read is refused too). The one way patchtool reads such a file."""
    shown = name if name is not None else str(path)
    with open_regular(
        path,
        follow_symlinks=follow_symlinks,
        dir_fd=dir_fd,
        name=name,
        link_note=link_note,
        link_hint=link_hint,
        kind_hint=kind_hint,
    ) as (handle, size):
        if size > limit:
            raise IntegrityError(
                f"{shown} is {size} bytes, more than the limit of {limit}", hint=limit_hint
            )
        try:
            data = handle.read(limit + 1)
        except OSError as error:
            raise IntegrityError(f"{shown} cannot be read: {error.strerror or error}") from error
    if len(data) > limit:
        raise IntegrityError(
            f"{shown} grew past the limit of {limit} bytes while read", hint=limit_hint
        )
    return data
# --------------------------------------------------------------------------- removal

# Folders held open at once by remove_tree: two descriptors each (the folder and
# its listing). A subfolder found deeper is moved up to the top folder by one
# rename and removed from there later, so a tree of any depth costs this many.
_OPEN_FOLDERS = 32
_DEEP_PREFIX = ".patchtool-deep-"
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: Path) -> bool:
    """Remove `path` and everything below it; True when it is gone (or was never
    there), False when some of it could not be removed (it never raises).

    Iterative, so depth costs no stack (shutil.rmtree and os.walk recurse: a
    tree 1000 folders deep is a RecursionError); every step works relative to
    an open folder (O_NOFOLLOW, unlinkat), so a symlink anywhere is removed,
    never followed, and no path grows past PATH_MAX; at most `_OPEN_FOLDERS`
    folders are open at a time. A symlink at `path` itself is removed."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        if not stat.S_ISDIR(info.st_mode):
            os.unlink(path)
            return True
        top = os.open(path, _DIRECTORY_FLAGS)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        emptied = _empty_folder(top)
    finally:
        os.close(top)
    if not emptied:
        return False
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def _empty_folder(top: int) -> bool:
    """Remove everything in the open folder `top`; False if something stayed."""
    token = f"{_DEEP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    names = (f"{token}-{n}" for n in itertools.count())
    while True:
        moved, failed = _empty_pass(top, names)
        if failed:
            return False
        if not moved:
            return True
        # Subfolders moved up to `top` may have been missed by its listing:
        # list it again, until a pass moves nothing.


def _empty_pass(top: int, names: Iterator[str]) -> tuple[int, bool]:
    """One depth-first pass over `top` (folders as a stack of open descriptors
    and listings); returns how many subfolders were moved up, and whether
    anything could not be removed."""
    moved, failed = 0, False
    # Each level: (descriptor, its listing, the name of the folder in its parent).
    stack: list[tuple[int, Iterator[os.DirEntry[str]], str]] = []
    try:
        stack.append((top, os.scandir(top), ""))
    except OSError:
        return 0, True
    try:
        while stack:
            fd, listing, _ = stack[-1]
            try:
                entry = next(listing, None)
            except OSError:
                entry, failed = None, True
            if entry is None:
                _, done, name = stack.pop()
                _close_listing(done)
                if stack:
                    os.close(fd)
                    try:
                        os.rmdir(name, dir_fd=stack[-1][0])
                    except FileNotFoundError:
                        pass
                    except OSError:
                        failed = True
                continue
            try:
                is_folder = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_folder = False
            if not is_folder:
                try:
                    os.unlink(entry.name, dir_fd=fd)
                except FileNotFoundError:
                    pass
                except OSError:
                    failed = True
                continue
            if len(stack) >= _OPEN_FOLDERS:
                try:
                    os.rename(entry.name, next(names), src_dir_fd=fd, dst_dir_fd=top)
                    moved += 1
                except OSError:
                    failed = True
                continue
            try:
                child = os.open(entry.name, _DIRECTORY_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                continue
            except OSError:
                # Replaced by a file or a link under us, or an unreadable folder
                # (which can still go if it is empty).
                try:
                    os.unlink(entry.name, dir_fd=fd)
                except IsADirectoryError:
                    try:
                        os.rmdir(entry.name, dir_fd=fd)
                    except OSError:
                        failed = True
                except FileNotFoundError:
                    pass
                except OSError:
                    failed = True
                continue
            try:
                stack.append((child, os.scandir(child), entry.name))
            except OSError:
                os.close(child)
                failed = True
    finally:
        for fd, listing, _ in stack:
            _close_listing(listing)
            if fd != top:
                os.close(fd)
    return moved, failed


def _close_listing(listing: Iterator[os.DirEntry[str]]) -> None:
    close = getattr(listing, "close", None)
    if close is not None:
        close()


@contextlib.contextmanager
def temporary_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder in `parent` (always named: never the shared temporary folder
    by default), removed with `remove_tree` when the block ends, however it ends.
    What a killed run leaves is the caller's recovery to remove (trees/staging.py's
    `recover_interrupted` knows the build folder's prefixes)."""
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        remove_tree(folder)
