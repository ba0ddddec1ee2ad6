"""The FlagScale tree, read safely: folders opened through their parent's
descriptor without following links, files read up to a limit.

The root the user names may be reached through links; nothing below it is
followed. A folder swapped for a link while it is read is refused, not
followed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from patchtool.core.errors import IntegrityError, NotFoundError, UnsafeInputError
from patchtool.core.fsutil import read_regular_file
from patchtool.vendors.flagscale.model import HARDWARE


class Folder:
    """An open folder of the FlagScale tree. Children are opened through its
    descriptor with O_NOFOLLOW, so no symlink anywhere below the root is followed,
    and a folder swapped for a link while it is read is refused, not followed."""

    def __init__(self, fd: int, shown: str) -> None:
        self.fd = fd
        self.shown = shown  # FlagScale-relative, for messages

    def __enter__(self) -> Folder:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def child(self, name: str) -> str:
        return f"{self.shown}/{name}" if self.shown else name

    def entries(self) -> list[tuple[str, str]]:
        """(name, kind) sorted by name; kind is "dir", "file", "link" or "other"."""
        found: list[tuple[str, str]] = []
        with os.scandir(self.fd) as listing:
            for entry in listing:
                if entry.is_symlink():
                    kind = "link"
                elif entry.is_dir(follow_symlinks=False):
                    kind = "dir"
                elif entry.is_file(follow_symlinks=False):
                    kind = "file"
                else:
                    kind = "other"
                found.append((entry.name, kind))
        return sorted(found)

    def folder(self, name: str) -> Folder:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self.fd)
        except FileNotFoundError as error:
            raise NotFoundError(f"{self.child(name)} does not exist") from error
        except OSError as error:
            raise self.refusal(name, error, "folder") from error
        return Folder(fd, self.child(name))

    def read(self, name: str, limit: int) -> bytes:
        return read_regular_file(
            Path(name),
            limit,
            dir_fd=self.fd,
            name=self.child(name),
            link_note="patchtool reads plain files and folders only",
            link_hint="A link in the hardware folder could point anywhere on this machine: "
            "replace it by what it points to.",
            kind_hint="FlagScale's hardware folder holds plain files and folders only.",
        )

    def refusal(self, name: str, error: OSError, wanted: str) -> Exception:
        try:
            info = os.lstat(name, dir_fd=self.fd)
        except OSError:
            info = None
        if info is not None and stat.S_ISLNK(info.st_mode):
            return UnsafeInputError(
                f"{self.child(name)} is a symlink; patchtool reads plain files and folders only",
                hint="A link in the hardware folder could point anywhere on this machine: "
                "replace it by what it points to.",
            )
        if error.errno == errno.ENOTDIR or (info is not None and wanted == "folder"):
            return IntegrityError(f"{self.child(name)} is not a {wanted}")
        return IntegrityError(f"{self.child(name)} cannot be read: {error.strerror or error}")


def open_hardware(root: Path) -> Folder:
    """The `hardware/` folder of a FlagScale checkout (the root the user named may be
    reached through links; nothing below it is)."""
    try:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError as error:
        raise NotFoundError(f"{root} does not exist", hint="Name a FlagScale checkout.") from error
    except OSError as error:
        raise NotFoundError(
            f"{root} is not a readable folder: {error.strerror or error}",
            hint="Name a FlagScale checkout.",
        ) from error
    top = Folder(fd, "")  # names below it are shown FlagScale-relative
    with top:
        names = dict(top.entries())
        if HARDWARE in names:
            folder = top.folder(HARDWARE)
            folder.shown = HARDWARE
            return folder
    if root.resolve().name == HARDWARE:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return Folder(fd, HARDWARE)
    raise NotFoundError(
        f"{root} holds no {HARDWARE}/ folder",
        hint="Name the root of a FlagScale checkout (or its hardware/ folder).",
    )
