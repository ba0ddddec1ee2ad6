"""One backend folder of the FlagScale tree, in each layout FlagScale has used,
read into its files and metadata (`ReadSet`); grouping.py makes the series.

The current layout is diff.yaml beside one squashed diff.patch (or its
encrypted twin) or beside per-file `<path>.patch` files; the legacy layout is
`<commit>/<commit>.patch`, one format-patch against FlagScale's root with
vLLM under `vllm/` (read with that prefix stripped: `-p2`). A backend folder
in the short-lived layout between those (`<commit7>.patch` beside
`<commit7>.yaml`, no diff.yaml) is refused with a message that says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from patchtool.core.errors import IntegrityError, UnsafeInputError, quoted
from patchtool.core.fsutil import path_problem
from patchtool.vendors.flagscale.decryption import VendorKeys
from patchtool.vendors.flagscale.folders import Folder
from patchtool.vendors.flagscale.metadata import (
    BaseClaim,
    History,
    backend_base,
    parse_diff_yaml,
)
from patchtool.vendors.flagscale.model import (
    DEPTH_LIMIT,
    DIFF_PATCH,
    DIFF_YAML,
    ENCRYPTED_SUFFIX,
    HARDWARE,
    LEGACY_BACKEND,
    LEGACY_PREFIX,
    PATCH_LIMIT,
    PATCH_SUFFIX,
    SET_BYTES_LIMIT,
    SET_FILES_LIMIT,
    YAML_LIMIT,
    FilePatch,
    Layout,
)
from patchtool.vendors.flagscale.sections import (
    PatchReader,
    check_text,
    name_problem,
    read_mail,
    read_per_file,
    read_sections,
)


@dataclass
class ReadSet:
    """What one folder holds, before grouping."""

    layout: Layout
    origin: str  # how the patch bodies name where the files came from
    files: list[FilePatch] = field(default_factory=list)
    claim: BaseClaim = field(default_factory=lambda: BaseClaim(None, None, None))
    strip: int = 1
    flagscale_commit: str | None = None
    history_commit: str | None = None
    contact: str | None = None
    models: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    encrypted_unread: list[str] = field(default_factory=list)  # files no key opens
    keys_note: str = ""  # why they were not opened
    mail_author: str | None = None  # a legacy mail's author and date, when it names them
    mail_date: str | None = None


def read_current(
    folder: Folder,
    flagscale_device: str,
    backend: str,
    history: History,
    keys: VendorKeys,
    reader: PatchReader,
) -> ReadSet:
    names = dict(folder.entries())
    if DIFF_YAML not in names:
        older = sorted(name for name in names if name.endswith(".yaml"))
        raise IntegrityError(
            f"{folder.shown} has no {DIFF_YAML}"
            + (
                f" (it holds {', '.join(older)}: an older layout patchtool does not read)"
                if older
                else ""
            ),
            hint="This folder needs FlagScale's current layout "
            f"({DIFF_YAML} beside diff.patch or per-file patches).",
        )
    if names[DIFF_YAML] != "file":
        raise UnsafeInputError(f"{folder.child(DIFF_YAML)} is not a regular file")
    info = parse_diff_yaml(folder.read(DIFF_YAML, YAML_LIMIT), folder.child(DIFF_YAML))
    others = {name: kind for name, kind in names.items() if name != DIFF_YAML}
    patch_like = {
        name
        for name, kind in others.items()
        if kind != "file" or name.endswith((PATCH_SUFFIX, PATCH_SUFFIX + ENCRYPTED_SUFFIX))
    }
    squashed = patch_like in ({DIFF_PATCH}, {DIFF_PATCH + ENCRYPTED_SUFFIX})
    if squashed:
        found = ReadSet("diff", f"the squashed patch {folder.shown}/{DIFF_PATCH}")
        found.skipped.extend(
            f"{folder.child(name)}: not a patch; FlagScale does not apply it either"
            for name in sorted(set(others) - patch_like)
        )
        if DIFF_PATCH in patch_like:
            source = folder.child(DIFF_PATCH)
            text = folder.read(DIFF_PATCH, PATCH_LIMIT)
            found.files = [
                s.file(source) for s in read_sections(reader, text, source, old_names=True)
            ]
        else:
            found.layout = "encrypted"
            found.origin = (
                f"the encrypted squashed patch {folder.shown}/{DIFF_PATCH}{ENCRYPTED_SUFFIX}"
            )
            source = folder.child(DIFF_PATCH + ENCRYPTED_SUFFIX)
            plain = keys.decrypt(folder.read(DIFF_PATCH + ENCRYPTED_SUFFIX, PATCH_LIMIT), source)
            if plain is None:
                found.encrypted_unread.append(source)
                found.keys_note = keys.describe()
            else:
                text = check_text(plain, source, True, (b"diff --git ",))
                found.files = [
                s.file(source) for s in read_sections(reader, text, source, old_names=True)
            ]
    elif others:
        found = ReadSet("per-file", f"the per-file patches under {folder.shown}/")
        found.files = _per_file(folder, keys, reader, found)
    else:
        raise IntegrityError(
            f"{folder.shown} holds {DIFF_YAML} but no patch",
            hint=f"FlagScale keeps a backend's changes beside {DIFF_YAML} as {DIFF_PATCH} or "
            "per-file <path>.patch files; this folder's are missing.",
        )
    found.claim = backend_base(info, backend, folder.child(DIFF_YAML), found.notes)
    if info.device_type is not None and info.device_type != flagscale_device:
        found.notes.append(
            f"{DIFF_YAML} names device_type {info.device_type}, but lies in "
            f"{HARDWARE}/{flagscale_device}: the folder's name is used"
        )
    found.history_commit = history.newest(flagscale_device, info.task, backend, found.notes)
    found.flagscale_commit = info.flagscale_commit
    found.contact, found.models, found.task = info.contact, info.models, info.task
    return found


def _per_file(
    folder: Folder, keys: VendorKeys, reader: PatchReader, found: ReadSet
) -> list[FilePatch]:
    wanted: list[tuple[str, str, bytes]] = []
    prefix_length = len(folder.shown) + 1
    for source, data, encrypted in _walk_patches(folder, 0, found.skipped, [SET_BYTES_LIMIT]):
        relative = source[prefix_length:]
        suffix = PATCH_SUFFIX + (ENCRYPTED_SUFFIX if encrypted else "")
        expected = relative[: -len(suffix)]
        problem = path_problem(expected) or name_problem(expected)
        if problem is not None:
            raise UnsafeInputError(
                f"{source}: the path {quoted(expected)} {problem}",
                hint="A patch may only change files inside the backend's tree.",
            )
        if encrypted:
            plain = keys.decrypt(data, source)
            if plain is None:
                found.encrypted_unread.append(source)
                continue
            data = check_text(plain, source, True, (b"diff --git ",))
        wanted.append((source, expected, data))
        if len(wanted) > SET_FILES_LIMIT:
            raise IntegrityError(f"{folder.shown}: more than {SET_FILES_LIMIT} patch files")
    if found.encrypted_unread:
        found.keys_note = keys.describe()
        return []  # a part of the vendor's changes is not its series: the set is skipped
    files = read_per_file(reader, wanted)
    _refuse_duplicates(files)
    return files


def _walk_patches(
    folder: Folder, depth: int, skipped: list[str], budget: list[int]
) -> Iterator[tuple[str, bytes, bool]]:
    if depth > DEPTH_LIMIT:
        raise IntegrityError(f"{folder.shown}: folders nested more than {DEPTH_LIMIT} deep")
    for name, kind in folder.entries():
        shown = folder.child(name)
        if depth == 0 and name == DIFF_YAML:
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError as error:
            raise IntegrityError(f"{quoted(shown)}: a file name that is not UTF-8") from error
        if kind == "dir":
            with folder.folder(name) as child:
                yield from _walk_patches(child, depth + 1, skipped, budget)
        elif kind == "link":
            raise UnsafeInputError(
                f"{shown} is a symlink; patchtool reads plain files and folders only",
                hint="A link in the hardware folder could point anywhere: replace it by the file.",
            )
        elif kind != "file":
            raise UnsafeInputError(f"{shown} is not a regular file")
        elif name.endswith(PATCH_SUFFIX) or name.endswith(PATCH_SUFFIX + ENCRYPTED_SUFFIX):
            data = folder.read(name, PATCH_LIMIT)
            budget[0] -= len(data)
            if budget[0] < 0:
                raise IntegrityError(
                    f"{folder.shown}: patch files larger than {SET_BYTES_LIMIT} bytes together"
                )
            yield shown, data, name.endswith(ENCRYPTED_SUFFIX)
        else:
            skipped.append(f"{shown}: not a .patch file; FlagScale does not apply it either")


def _refuse_duplicates(files: list[FilePatch]) -> None:
    seen: dict[str, str] = {}
    for file in files:
        if file.path in seen:
            raise IntegrityError(
                f"{file.source} and {seen[file.path]} both change {file.path}",
                hint="Keep one patch per file.",
            )
        seen[file.path] = file.source


# --------------------------------------------------------------------------- legacy


def read_legacy(
    folder: Folder, commit_folder: str, keys: VendorKeys, reader: PatchReader
) -> ReadSet:
    kinds = dict(folder.entries())
    plain, encrypted = commit_folder + PATCH_SUFFIX, commit_folder + PATCH_SUFFIX + ENCRYPTED_SUFFIX
    found = ReadSet("legacy", "", strip=2)
    for name, kind in kinds.items():
        if name not in (plain, encrypted):
            found.skipped.append(
                f"{folder.child(name)}: not {plain}; a legacy folder holds that only"
            )
        elif kind != "file":
            raise UnsafeInputError(
                f"{folder.child(name)} is not a regular file"
                + ("; patchtool does not follow symlinks" if kind == "link" else "")
            )
    if plain in kinds:
        read = plain
        data: bytes | None = folder.read(plain, PATCH_LIMIT)
    elif encrypted in kinds:
        read = encrypted
        data = keys.decrypt(folder.read(encrypted, PATCH_LIMIT), folder.child(encrypted))
        if data is None:
            found.encrypted_unread.append(folder.child(encrypted))
            found.keys_note = keys.describe()
        else:
            data = check_text(data, folder.child(encrypted), True, (b"From ", b"diff --git "))
    else:
        raise IntegrityError(
            f"{folder.shown} holds no {plain}",
            hint="A legacy FlagScale folder holds <commit>/<commit>.patch.",
        )
    source = folder.child(read)
    found.origin = f"the legacy squashed patch {source}"
    if data is not None:
        mail = read_mail(data, source)
        found.mail_author, found.mail_date = mail.author, mail.date
        if mail.subject:
            found.origin += f" (FlagScale base {commit_folder}, message {quoted(mail.subject)})"
        for section in read_sections(reader, mail.diff, source, old_names=True):
            entry = section.entry
            names = entry.names
            inside = [name.startswith(LEGACY_PREFIX) for name in names]
            if not any(inside):
                found.skipped.append(
                    f"{source}: {entry.path} lies outside {LEGACY_PREFIX} (not vLLM), not imported"
                )
            elif not all(inside):
                found.skipped.append(
                    f"{source}: {entry.old_path} -> {entry.path} moves a file across "
                    f"{LEGACY_PREFIX}, not imported"
                )
            else:
                found.files.append(section.file(source, LEGACY_PREFIX))
        _refuse_duplicates(found.files)
    found.notes.append(
        f"legacy layout: FlagScale base commit {commit_folder} (an abbreviated id); vLLM under "
        f"{LEGACY_PREFIX} of FlagScale, read with {LEGACY_PREFIX} stripped"
    )
    found.notes.append(
        f"legacy patches name no {LEGACY_BACKEND} release or commit: name the base with "
        "--onto VERSION (a new base) or --commit-id BASE (one the device has)"
    )
    return found
