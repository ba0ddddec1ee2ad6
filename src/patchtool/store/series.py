"""A base folder's `series`: parsed (at most `series-patches` patches, counted
before any patch file is looked at) and rendered; its digest; a new base's
base.toml and empty series; the plain files of a base folder, to compare with
patches. Never runs git.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from pathlib import Path

from patchtool.core.errors import IntegrityError, NotFoundError, UnsafeInputError, quoted
from patchtool.core.fsutil import atomic_write, open_regular, sha256_of
from patchtool.store.files import parse_device, read_store_file, render_base
from patchtool.store.model import (
    BASE_FILE,
    DEFAULT_LIMITS,
    DEVICE_FILE,
    SERIES_FILE,
    BaseRef,
    PatchLimits,
    PatchSeries,
    SeriesEntry,
    limit_hint,
)

# A patch file named in `series`: one path component that no tool reads as an
# option, a hidden file or a path (quilt's names such as 0001-Fix_it.patch fit).
# It has no '/', so it can never be the component '..'; two dots inside it are
# what `git format-patch` writes for a subject cut right after a dot
# (`0025-...-rocm_flash_attn..patch`), and are as safe as one.
_PATCH_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+@,=-]{0,199}$")


def write_base_files(base: BaseRef, header: Iterable[str]) -> None:
    """A new base's base.toml and an empty series headed by `header`, in its folder."""
    atomic_write(base.path / BASE_FILE, render_base(base).encode("utf-8"))
    atomic_write(base.path / SERIES_FILE, render_series(header, []))


def parse_series(base: BaseRef, limits: PatchLimits | None = None) -> PatchSeries:
    """The base folder's series. At most `limits.series_patches` patches (the
    device's limits: read from its device.toml when not given), counted before
    any patch file is looked at."""
    path = base.path / SERIES_FILE
    try:
        raw = read_store_file(path)
    except NotFoundError as error:
        raise NotFoundError(
            f"{path} does not exist",
            hint="Every base folder needs a series file (it may list no patches).",
        ) from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IntegrityError(f"{path}: not UTF-8 text ({error})") from error
    listed = sum(1 for line in text.splitlines() if line.strip()[:1] not in ("", "#"))
    check_series_length(path, listed, limits or device_limits(base))
    header: list[str] = []
    entries: list[SeriesEntry] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            if not entries:
                header.append(line)
            continue
        name = stripped.split("#", 1)[0].strip()
        if not _PATCH_NAME.match(name):
            raise UnsafeInputError(
                f"{path}:{number}: {quoted(name)} is not a plain patch file name",
                hint="series lists file names in its own folder, one a line: letters, "
                "digits and . _ + @ , = -, not starting with '.' or '-'.",
            )
        if name in seen:
            raise IntegrityError(
                f"{path}:{number}: {quoted(name)} is listed twice (first on line {seen[name]})"
            )
        seen[name] = number
        patch_path = base.path / name
        if patch_path.is_symlink() or (patch_path.exists() and not patch_path.is_file()):
            raise UnsafeInputError(
                f"{path}:{number}: patch file {quoted(name)} is a symlink or not a regular file",
                hint="The store holds plain files only.",
            )
        if not patch_path.is_file():
            raise NotFoundError(
                f"{path}:{number}: patch file {quoted(name)} is missing from {base.path}",
                hint="Restore the file, or remove its line from series.",
            )
        entries.append(SeriesEntry(name=name, line=number))
    while header and not header[-1].strip():
        header.pop()
    return PatchSeries(base=base, entries=tuple(entries), header=tuple(header))


def render_series(header: Iterable[str], names: Iterable[str]) -> bytes:
    lines = list(header)
    lines.extend(names)
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def check_series_length(path: Path, count: int, limits: PatchLimits) -> None:
    """Refuse a series of more than `series-patches` patches (exit 6)."""
    if count > limits.series_patches:
        raise IntegrityError(
            f"{path}: {count} patches, more than the limit of {limits.series_patches}",
            hint=limit_hint("series-patches", "Squash related patches"),
        )


def device_limits(base: BaseRef) -> PatchLimits:
    """The limits of the base's device (its device.toml beside the base folder);
    the defaults where there is none yet."""
    device_file = base.path.parent / DEVICE_FILE
    if not (device_file.exists() or device_file.is_symlink()):
        return DEFAULT_LIMITS
    return parse_device(device_file, base.device).limits


def series_digest(series: PatchSeries) -> str:
    """A hash over the patch names and bytes, in order: the series' identity."""
    digest = hashlib.sha256()
    for path in series.paths():
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(bytes.fromhex(sha256_of(path, follow_symlinks=False)))
    return digest.hexdigest()


def folder_file_bytes(folder: Path, limit: int, leave_out: Iterable[str] = ()) -> set[bytes]:
    """The bytes of each plain file of a base folder (but `leave_out`), to compare
    with patches: links, anything but a regular file and files larger than
    `limit` are left out unread (none of them can be a patch of its series)."""
    found: set[bytes] = set()
    for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
        if entry.name in leave_out or not entry.is_file() or entry.is_symlink():
            continue
        try:
            found.add(read_store_file(entry, limit))
        except (IntegrityError, NotFoundError, UnsafeInputError):
            continue
    return found


def holds_bytes(path: Path, data: bytes) -> bool:
    """Whether the store file `path` (a plain file, never followed) holds exactly
    `data`; it is read no further than that tells."""
    with open_regular(
        path,
        link_note="the store holds plain files only",
        link_hint="Replace the link by the file itself.",
    ) as (handle, size):
        return size == len(data) and handle.read(len(data) + 1) == data
