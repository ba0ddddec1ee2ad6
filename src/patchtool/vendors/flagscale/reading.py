"""The entry point: every device and backend of a FlagScale tree, read into
`BackendSet`s, and the plan `import --flagscale --dry-run` prints.

Each backend folder is judged on its own: one that cannot be read (a missing
patch, a damaged file, a path that climbs out of the tree) is a set with its
reason (`BackendSet.problem`), and the others are read as if it were not
there. Only what concerns the whole tree stops the reading: no hardware/
folder, a damaged patch_history.yaml, a filter that selects nothing, a key
file that is not a key.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from patchtool.core.errors import NotFoundError, PatchtoolError, UnsafeInputError, quoted
from patchtool.core.fsutil import check_name, temporary_folder
from patchtool.core.values import did_you_mean
from patchtool.vendors.flagscale.decryption import VendorKeys, load_private_keys
from patchtool.vendors.flagscale.folders import Folder, open_hardware
from patchtool.vendors.flagscale.grouping import build_set
from patchtool.vendors.flagscale.history import GitHistory
from patchtool.vendors.flagscale.layouts import read_current, read_legacy
from patchtool.vendors.flagscale.metadata import History, read_history
from patchtool.vendors.flagscale.model import (
    DEFAULT_GROUP_BYTES,
    HARDWARE,
    HISTORY_YAML,
    LEGACY_BACKEND,
    BackendSet,
    canonical_backend,
    store_device,
    vendor_of,
)
from patchtool.vendors.flagscale.sections import PatchReader

_LEGACY_FOLDER = re.compile(r"^[0-9a-f]{6,40}$")


def read_flagscale(
    root: Path,
    device: str | None = None,
    backend: str | None = None,
    private_keys: Sequence[Path] = (),
    group_bytes: int = DEFAULT_GROUP_BYTES,
) -> list[BackendSet]:
    """Every device and backend of the FlagScale checkout at `root` (or of its
    `hardware/` folder itself), filtered by FlagScale's or patchtool's device name
    and by backend. `private_keys` are PEM RSA private keys, or folders holding
    `private_key.pem` as FlagScale's --key-path does; a set encrypted to none of
    them is skipped."""
    keys = load_private_keys(private_keys)
    history = GitHistory(_checkout(root))
    with (
        open_hardware(root) as hardware,
        temporary_folder(Path(tempfile.gettempdir()), "patchtool-read-") as scratch,
    ):
        reader = PatchReader(scratch)
        patch_history = read_history(hardware)
        devices = _select_devices(hardware, device)
        sets: list[BackendSet] = []
        matched_backend = False
        for name in devices:
            try:
                with hardware.folder(name) as folder:
                    entries = _device_entries(folder, backend)
                    for entry, legacy in entries:
                        matched_backend = True
                        sets.append(
                            _read_entry(
                                folder,
                                name,
                                entry,
                                legacy,
                                patch_history,
                                keys,
                                reader,
                                history,
                                group_bytes,
                            )
                        )
            except PatchtoolError as error:  # the device folder itself
                matched_backend = matched_backend or backend is None
                sets.append(_unreadable(name, "-", f"{HARDWARE}/{name}", error))
        if backend is not None and not matched_backend:
            available = sorted({b for name in devices for b in _backends_of(hardware, name)})
            raise NotFoundError(
                f"no backend {quoted(backend)} under "
                f"{', '.join(f'{HARDWARE}/{d}' for d in devices)}"
                + did_you_mean(backend, available),
                hint=f"Backends there: {', '.join(available) or 'none'}.",
            )
    return sets


def _checkout(root: Path) -> Path | None:
    """The folder that holds hardware/ (where FlagScale's git history is read)."""
    if (root / HARDWARE).is_dir():
        return root
    if root.resolve().name == HARDWARE:
        return root.resolve().parent
    return None


def _read_entry(
    device_folder: Folder,
    flagscale_device: str,
    name: str,
    legacy: bool,
    patch_history: History,
    keys: VendorKeys,
    reader: PatchReader,
    history: GitHistory,
    group_bytes: int,
) -> BackendSet:
    backend = LEGACY_BACKEND if legacy else name
    source = device_folder.child(name)
    try:
        with device_folder.folder(name) as folder:
            if legacy:
                found = read_legacy(folder, name, keys, reader)
            else:
                found = read_current(folder, flagscale_device, name, patch_history, keys, reader)
        return build_set(
            found,
            flagscale_device=flagscale_device,
            backend=backend,
            source=source,
            history=history,
            group_bytes=group_bytes,
        )
    except PatchtoolError as error:
        return _unreadable(flagscale_device, backend, source, error)


def _unreadable(
    flagscale_device: str, backend: str, source: str, error: PatchtoolError
) -> BackendSet:
    return BackendSet(
        device=store_device(flagscale_device),
        flagscale_device=flagscale_device,
        backend=backend,
        source=source,
        vendor=vendor_of(flagscale_device),
        problem=error.message,
        problem_hint=error.hint,
        problem_code=int(error.exit_code),
    )


# --------------------------------------------------------------------------- devices and backends


def _select_devices(hardware: Folder, wanted: str | None) -> list[str]:
    names = [name for name, kind in hardware.entries() if kind in ("dir", "link")]
    devices = [name for name in names if not name.startswith(".")]
    if wanted is None:
        for name in devices:
            check_name("FlagScale device folder", name)
        if not devices:
            raise NotFoundError(f"{hardware.shown}/ holds no device folder")
        return devices
    exact = [name for name in devices if wanted in (name, store_device(name))]
    if not exact:
        exact = [
            name
            for name in devices
            if wanted.casefold() in (name.casefold(), store_device(name).casefold())
        ]
    if len(exact) != 1:
        raise NotFoundError(
            f"no device {quoted(wanted)} in {hardware.shown}/" + did_you_mean(wanted, devices),
            hint=f"Devices there: {', '.join(devices) or 'none'}.",
        )
    return [check_name("FlagScale device folder", exact[0])]


def _is_legacy(name: str) -> bool:
    return _LEGACY_FOLDER.match(name) is not None


def _device_entries(folder: Folder, wanted: str | None) -> list[tuple[str, bool]]:
    """The backend and legacy folders of a device that the filter selects, each
    with whether it is a legacy folder. Plain files beside them (a README) are
    not FlagScale patches and are passed over."""
    chosen: list[tuple[str, bool]] = []
    for name, kind in folder.entries():
        if kind == "file" or name.startswith("."):
            continue
        legacy = _is_legacy(name)
        if wanted is not None:
            backend = LEGACY_BACKEND if legacy else name
            if canonical_backend(backend) != canonical_backend(wanted) and backend != wanted:
                continue
        if kind == "link":
            raise UnsafeInputError(
                f"{folder.child(name)} is a symlink; patchtool reads plain folders only",
                hint="Replace the link by the folder itself.",
            )
        if kind != "dir":
            raise UnsafeInputError(f"{folder.child(name)} is neither a file nor a folder")
        check_name("FlagScale backend folder", name)
        chosen.append((name, legacy))
    return chosen


def _backends_of(hardware: Folder, device: str) -> list[str]:
    with hardware.folder(device) as folder:
        return sorted(
            {
                LEGACY_BACKEND if _is_legacy(name) else name
                for name, kind in folder.entries()
                if kind == "dir" and not name.startswith(".")
            }
        )


# --------------------------------------------------------------------------- the plan


def render_plan(sets: list[BackendSet]) -> list[str]:
    """The `--dry-run` report: for each device and backend its base, source, patches
    with their files, author and date, what was skipped and the notes; then one
    summary line."""
    lines: list[str] = []
    for found in sets:
        if found.problem is not None:
            lines.append(f"{found.source}: device {found.device}, backend {found.backend}")
            lines.append(f"  cannot be imported: {found.problem}")
            continue
        lines.append(
            f"{found.source}: device {found.device}, backend {found.backend}, layout {found.layout}"
        )
        lines.append(f"  base: {describe_base(found)}")
        flagscale = found.flagscale_commit or "not recorded"
        if found.history_commit is not None:
            flagscale += f" (newest in {HISTORY_YAML}: {found.history_commit})"
        lines.append(f"  FlagScale commit: {flagscale}")
        total = len(found.groups)
        for number, group in enumerate(found.groups, start=1):
            size = sum(len(file.text) for file in group.files)
            by = group.authorship
            lines.append(
                f"  patch {number}/{total}: {group.subject} ({_files(len(group.files))}, "
                f"{size} bytes; {by.author}, {by.date}" + ("" if by.known else ", unknown") + ")"
            )
            lines.extend(f"    {file.path}" for file in group.files)
        lines.extend(f"  skipped: {reason}" for reason in found.skipped)
        lines.extend(f"  note: {note}" for note in found.notes)
    devices = sorted({found.device for found in sets})
    patches = sum(len(found.groups) for found in sets)
    files = sum(found.files for found in sets)
    skipped = sum(len(found.skipped) for found in sets)
    refused = sum(1 for found in sets if found.problem is not None)
    lines.append(
        f"{patches} patch(es), {_files(files)}, {skipped} skipped, "
        + (f"{refused} folder(s) that cannot be imported, " if refused else "")
        + f"from {len(sets)} FlagScale folder(s) of {len(devices)} device(s)"
        + (f": {', '.join(devices)}" if devices else "")
    )
    return lines


def describe_base(found: BackendSet) -> str:
    name = found.project
    if found.version and found.commit:
        return f"{name} {found.version} at {found.commit}"
    if found.version:
        return f"{name} {found.version} (no commit recorded)"
    if found.commit:
        named = f" ({found.version_text})" if found.version_text else ""
        return f"{name} at {found.commit}{named}"
    if found.version_text:
        return f"{name} {quoted(found.version_text)}, a branch or tag, no commit recorded"
    return f"{name}, not recorded (name one with --onto or --commit-id)"


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"
