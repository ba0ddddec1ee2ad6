"""Reading FlagScale's `hardware/` folder: vendor patches for vLLM and other backends.

FlagScale keeps each vendor's changes as patches in its own repository. Three
layouts are read (the folder names are FlagScale's, such as `Metax_C550`):

    hardware/<Device>/<backend>/diff.yaml           the metadata of the current layout
    hardware/<Device>/<backend>/diff.patch          one squashed `git diff --binary`, -p1
    hardware/<Device>/<backend>/diff.patch.encrypted  the same, encrypted (see below)
    hardware/<Device>/<backend>/<path>.patch        or one single-file `git diff` per
                                                    changed file (`.patch.encrypted` too)
    hardware/<Device>/<commit>/<commit>.patch       legacy: one squashed `git
                                                    format-patch` against FlagScale's root,
                                                    vLLM under `vllm/`
    hardware/patch_history.yaml                     <Device>: <task>: <backends>: [commits]

A backend folder in the short-lived layout between those (`<commit7>.patch` beside
`<commit7>.yaml`, no diff.yaml) is refused with a message that says so.

An encrypted file is `iv (16 bytes) || RSA-OAEP-SHA256(AES-256 key) || AES-256-CBC(patch,
PKCS#7)`; the RSA block is as long as the key (512 bytes for FlagScale's 4096-bit keys).
It has no integrity check, so a damaged file decrypts to garbage: bad padding, text that
is not UTF-8 or not a diff are refused with the file's name.

The tree is untrusted input. Everything it holds is parsed here, once, into frozen
dataclasses whose values are already safe: names are single path components, commits
are full 40-digit ids, every path a patch names lies inside the backend's root. Files and
folders are opened through their parent folder's descriptor without following symlinks,
and read up to a size limit (fsutil.read_regular_file); YAML is read with PyYAML's
safe loader, anchors and aliases refused.

Each backend's changes become one series, one patch per component (the first path
component, or the first two under the backend's own package folder, e.g.
`vllm/model_executor`), in a fixed order. This module only reads: it never writes a file
(a decrypted patch stays in memory), never runs git and never prints. The hand-made
reading of `diff --git` sections here is for grouping and early refusal only: what a
patch touches is still for git to say when the patches are imported
(`safety.paths_git_reads`).
"""

from __future__ import annotations

import email.parser
import email.policy
import email.utils
import errno
import functools
import importlib
import os
import re
import stat
import unicodedata
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from patchtool.core.errors import (
    IntegrityError,
    NotFoundError,
    UnsafeInputError,
    UsageError,
    quoted,
)
from patchtool.core.fsutil import check_name, path_problem, read_regular_file
from patchtool.core.values import did_you_mean

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

Layout = Literal["diff", "encrypted", "per-file", "legacy"]

HARDWARE = "hardware"
DIFF_YAML = "diff.yaml"
DIFF_PATCH = "diff.patch"
ENCRYPTED_SUFFIX = ".encrypted"
PATCH_SUFFIX = ".patch"
HISTORY_YAML = "patch_history.yaml"
KEY_FILE = "private_key.pem"  # what FlagScale's --key-path folder holds

# Used when the tree does not say: `notes` of the set says so.
PLACEHOLDER_AUTHOR = "FlagScale vendor <vendor@flagscale.invalid>"
PLACEHOLDER_DATE = "1970-01-01T00:00:00Z"
UPSTREAM_STATUS = "Pending"

# patchtool's store already names some devices FlagScale also carries; those
# FlagScale folders import into the existing device (keys compared casefolded).
DEVICE_NAMES: Mapping[str, str] = {"metax_c550": "metax_C550"}

# The package each backend's release is published as (its sdist is a base source);
# the others are taken from git.
PROJECTS: Mapping[str, str] = {"vllm": "vllm", "sglang": "sglang"}
# The backend's own package folder(s): under them, files group by the second level too.
PACKAGE_FOLDERS: Mapping[str, tuple[str, ...]] = {
    "vllm": ("vllm",),
    "sglang": ("python/sglang", "sglang"),
    "Megatron-LM": ("megatron",),
    "FlagScale": ("flagscale",),
}
# FlagScale's own spellings of backend names (tools/patch normalizes them the same way).
BACKEND_ALIASES: Mapping[str, str] = {
    "megatron": "Megatron-LM",
    "megatron-lm": "Megatron-LM",
    "energon": "Megatron-Energon",
    "megatron-energon": "Megatron-Energon",
    "fs": "FlagScale",
    "flagscale": "FlagScale",
    "vllm": "vllm",
    "sglang": "sglang",
}
FLAGSCALE_BACKEND = "FlagScale"
LEGACY_BACKEND = "vllm"
LEGACY_PREFIX = "vllm/"

# Bounds on the work an untrusted tree can cause.
YAML_LIMIT = 1 << 20
KEY_LIMIT = 1 << 20
PATCH_LIMIT = 16 << 20  # one patch file (the store's default patch-bytes)
SET_BYTES_LIMIT = 256 << 20  # all patch files of one device and backend together
SET_FILES_LIMIT = 20000  # changed files of one device and backend
DEPTH_LIMIT = 32  # folder levels of a per-file layout
TEXT_LIMIT = 200  # characters of a model, task or contact value

_FULL_COMMIT = re.compile(r"^[0-9a-fA-F]{40}$")
_LEGACY_FOLDER = re.compile(r"^[0-9a-f]{6,40}$")
_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
_MAIL_SEPARATOR = re.compile(rb"^From [0-9a-f]{40} Mon Sep 17 00:00:00 2001$", re.MULTILINE)
_MAIL_HEADER = re.compile(rb"^[A-Za-z][A-Za-z0-9-]*: ")
_HUNK = re.compile(rb"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DIFF_KEYS = (
    "backends_commit",
    "backends_version",
    "commit",
    "contact",
    "device_type",
    "models",
    "task",
)
# Extended header lines of a `diff --git` section, as git writes them.
_HEADER_PREFIXES = (
    b"old mode ",
    b"new mode ",
    b"deleted file mode ",
    b"new file mode ",
    b"similarity index ",
    b"dissimilarity index ",
    b"index ",
    b"rename from ",
    b"rename to ",
    b"rename old ",
    b"rename new ",
    b"copy from ",
    b"copy to ",
    b"--- ",
    b"+++ ",
    b"Binary files ",
)


# git still reads the old spellings of a rename's lines; the lines that name a file.
_SYNONYMS = {b"rename old ": b"rename from ", b"rename new ": b"rename to "}
_NAME_FIELDS = (b"--- ", b"+++ ", b"rename from ", b"rename to ", b"copy from ", b"copy to ")


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class FilePatch:
    """One file's change."""

    path: str  # backend-relative, after stripping: the new name (the old one for a deletion)
    text: bytes  # a single-file `git diff` section, -p1 against the backend's root
    source: str  # the FlagScale-relative file it came from


@dataclass(frozen=True)
class PatchGroup:
    """One patch of the new series: the files of one component."""

    component: str  # e.g. "vllm/model_executor", "csrc", "setup.py"
    subject: str
    body: str  # names the sources and the FlagScale commit; ends with Upstream-Status:
    files: tuple[FilePatch, ...]

    def diff(self) -> bytes:
        """The group's files as one `git diff` text."""
        return b"".join(file.text for file in self.files)

    @property
    def message(self) -> str:
        return f"{self.subject}\n\n{self.body}"

    @property
    def encrypted(self) -> bool:
        """Some of its files came from FlagScale's encrypted files: it becomes a
        private patch of the store (privacy.py)."""
        return any(f.source.endswith(ENCRYPTED_SUFFIX) for f in self.files)


@dataclass(frozen=True)
class BackendSet:
    """One device and backend of the FlagScale tree, ready to become a series."""

    device: str  # patchtool's device name (see DEVICE_NAMES)
    flagscale_device: str  # FlagScale's folder name
    backend: str  # FlagScale's backend folder name: vllm, sglang, Megatron-LM, FlagScale
    project: str | None  # the package a released sdist is named by; None: git only
    version: str | None  # the backend's release version, normalized
    commit: str | None  # the backend's full commit the patch was made on
    flagscale_commit: str | None  # diff.yaml's `commit`: FlagScale's base
    history_commit: str | None  # the newest commit patch_history.yaml lists for it
    layout: Layout
    source: str  # the FlagScale-relative folder read, e.g. "hardware/Metax_C550/vllm"
    author: str  # "Name <email>"
    date: str  # ISO 8601
    contact: str | None
    models: tuple[str, ...]
    task: tuple[str, ...]
    groups: tuple[PatchGroup, ...]
    skipped: tuple[str, ...]  # what was not read, and why
    notes: tuple[str, ...]  # where a value is a placeholder or was interpreted

    @property
    def files(self) -> int:
        return sum(len(group.files) for group in self.groups)


# --------------------------------------------------------------------------- entry points


def read_flagscale(
    root: Path,
    device: str | None = None,
    backend: str | None = None,
    private_key: Path | None = None,
) -> list[BackendSet]:
    """Every device and backend of the FlagScale checkout at `root` (or of its
    `hardware/` folder itself), filtered by FlagScale's or patchtool's device name and
    by backend. `private_key` is a PEM RSA private key, or a folder holding
    `private_key.pem` as FlagScale's --key-path does; without it, encrypted patches are
    listed in `skipped`."""
    key = _load_private_key(private_key) if private_key is not None else None
    with _open_hardware(root) as hardware:
        history = _read_history(hardware)
        devices = _select_devices(hardware, device)
        sets: list[BackendSet] = []
        matched_backend = False
        for name in devices:
            with hardware.folder(name) as folder:
                for entry in _device_entries(folder, backend):
                    matched_backend = True
                    sets.extend(_read_entry(folder, name, entry, history, key))
        if backend is not None and not matched_backend:
            available = sorted({b for name in devices for b in _backends_of(hardware, name)})
            raise NotFoundError(
                f"no backend {quoted(backend)} under "
                f"{', '.join(f'{HARDWARE}/{d}' for d in devices)}"
                + did_you_mean(backend, available),
                hint=f"Backends there: {', '.join(available) or 'none'}.",
            )
    return sets


def render_plan(sets: list[BackendSet]) -> list[str]:
    """The `--dry-run` report: for each device and backend its base, source, patches
    with their files, what was skipped and the notes; then one summary line."""
    lines: list[str] = []
    for found in sets:
        lines.append(
            f"{found.source}: device {found.device}, backend {found.backend}, layout {found.layout}"
        )
        lines.append(f"  base: {describe_base(found)}")
        flagscale = found.flagscale_commit or "not recorded"
        if found.history_commit is not None:
            flagscale += f" (newest in {HISTORY_YAML}: {found.history_commit})"
        lines.append(f"  FlagScale commit: {flagscale}")
        lines.append(f"  author: {found.author}, date {found.date}")
        total = len(found.groups)
        for number, group in enumerate(found.groups, start=1):
            lines.append(f"  patch {number}/{total}: {group.subject} ({_files(len(group.files))})")
            lines.extend(f"    {file.path}" for file in group.files)
        lines.extend(f"  skipped: {reason}" for reason in found.skipped)
        lines.extend(f"  note: {note}" for note in found.notes)
    devices = sorted({found.device for found in sets})
    patches = sum(len(found.groups) for found in sets)
    files = sum(found.files for found in sets)
    skipped = sum(len(found.skipped) for found in sets)
    lines.append(
        f"{patches} patch(es), {_files(files)}, {skipped} skipped, from {len(sets)} FlagScale "
        f"folder(s) of {len(devices)} device(s)" + (f": {', '.join(devices)}" if devices else "")
    )
    return lines


def describe_base(found: BackendSet) -> str:
    name = found.project or found.backend
    if found.version and found.commit:
        return f"{name} {found.version} at {found.commit}"
    if found.version:
        return f"{name} {found.version} (no commit recorded)"
    if found.commit:
        return f"{name} at {found.commit}"
    return f"{name}, not recorded (name one with --commit-id)"


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


# --------------------------------------------------------------------------- the tree, safely


class _Folder:
    """An open folder of the FlagScale tree. Children are opened through its
    descriptor with O_NOFOLLOW, so no symlink anywhere below the root is followed,
    and a folder swapped for a link while it is read is refused, not followed."""

    def __init__(self, fd: int, shown: str) -> None:
        self.fd = fd
        self.shown = shown  # FlagScale-relative, for messages

    def __enter__(self) -> _Folder:
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

    def folder(self, name: str) -> _Folder:
        flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(name, flags, dir_fd=self.fd)
        except FileNotFoundError as error:
            raise NotFoundError(f"{self.child(name)} does not exist") from error
        except OSError as error:
            raise self._refusal(name, error, "folder") from error
        return _Folder(fd, self.child(name))

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

    def _refusal(self, name: str, error: OSError, wanted: str) -> Exception:
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


def _open_hardware(root: Path) -> _Folder:
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
    top = _Folder(fd, "")  # names below it are shown FlagScale-relative
    with top:
        names = dict(top.entries())
        if HARDWARE in names:
            folder = top.folder(HARDWARE)
            folder.shown = HARDWARE
            return folder
    if root.resolve().name == HARDWARE:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return _Folder(fd, HARDWARE)
    raise NotFoundError(
        f"{root} holds no {HARDWARE}/ folder",
        hint="Name the root of a FlagScale checkout (or its hardware/ folder).",
    )


# --------------------------------------------------------------------------- devices and backends


def _select_devices(hardware: _Folder, wanted: str | None) -> list[str]:
    names = [name for name, kind in hardware.entries() if kind in ("dir", "link")]
    devices = [name for name in names if not name.startswith(".")]
    if wanted is None:
        for name in devices:
            check_name("FlagScale device folder", name)
        if not devices:
            raise NotFoundError(f"{hardware.shown}/ holds no device folder")
        return devices
    exact = [name for name in devices if wanted in (name, _store_device(name))]
    if not exact:
        exact = [
            name
            for name in devices
            if wanted.casefold() in (name.casefold(), _store_device(name).casefold())
        ]
    if len(exact) != 1:
        raise NotFoundError(
            f"no device {quoted(wanted)} in {hardware.shown}/" + did_you_mean(wanted, devices),
            hint=f"Devices there: {', '.join(devices) or 'none'}.",
        )
    return [check_name("FlagScale device folder", exact[0])]


def _store_device(flagscale_device: str) -> str:
    return DEVICE_NAMES.get(flagscale_device.casefold(), flagscale_device)


def _canonical_backend(name: str) -> str:
    return BACKEND_ALIASES.get(name.casefold(), name)


@dataclass(frozen=True)
class _Entry:
    name: str
    legacy: bool


def _device_entries(folder: _Folder, wanted: str | None) -> list[_Entry]:
    """The backend and legacy folders of a device that the filter selects. Plain
    files beside them (a README) are not FlagScale patches and are passed over."""
    chosen: list[_Entry] = []
    for name, kind in folder.entries():
        if kind == "file" or name.startswith("."):
            continue
        legacy = _LEGACY_FOLDER.match(name) is not None
        if wanted is not None:
            backend = LEGACY_BACKEND if legacy else name
            if _canonical_backend(backend) != _canonical_backend(wanted) and backend != wanted:
                continue
        if kind == "link":
            raise UnsafeInputError(
                f"{folder.child(name)} is a symlink; patchtool reads plain folders only",
                hint="Replace the link by the folder itself.",
            )
        if kind != "dir":
            raise UnsafeInputError(f"{folder.child(name)} is neither a file nor a folder")
        check_name("FlagScale backend folder", name)
        chosen.append(_Entry(name, legacy))
    return chosen


def _backends_of(hardware: _Folder, device: str) -> list[str]:
    with hardware.folder(device) as folder:
        return sorted(
            {
                LEGACY_BACKEND if _LEGACY_FOLDER.match(name) else name
                for name, kind in folder.entries()
                if kind == "dir" and not name.startswith(".")
            }
        )


def _read_entry(
    device_folder: _Folder,
    flagscale_device: str,
    entry: _Entry,
    history: _History,
    key: _Key | None,
) -> list[BackendSet]:
    with device_folder.folder(entry.name) as folder:
        if entry.legacy:
            return [_read_legacy(folder, flagscale_device, entry.name, key)]
        return [_read_current(folder, flagscale_device, entry.name, history, key)]


# --------------------------------------------------------------------------- the current layout


@dataclass(frozen=True)
class _DiffInfo:
    """diff.yaml, parsed."""

    device_type: str | None
    flagscale_commit: str
    backends_commit: Mapping[str, str]
    backends_version: Mapping[str, str]
    contact: str | None
    models: tuple[str, ...]
    task: tuple[str, ...]


def _read_current(
    folder: _Folder, flagscale_device: str, backend: str, history: _History, key: _Key | None
) -> BackendSet:
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
            hint="Select the other devices or backends to read them; this folder needs "
            f"FlagScale's current layout ({DIFF_YAML} beside diff.patch or per-file patches).",
        )
    if names[DIFF_YAML] != "file":
        raise UnsafeInputError(f"{folder.child(DIFF_YAML)} is not a regular file")
    info = _parse_diff_yaml(folder.read(DIFF_YAML, YAML_LIMIT), folder.child(DIFF_YAML))
    others = {name: kind for name, kind in names.items() if name != DIFF_YAML}
    notes: list[str] = []
    skipped: list[str] = []
    layout: Layout
    patch_like = {
        name
        for name, kind in others.items()
        if kind != "file" or name.endswith((PATCH_SUFFIX, PATCH_SUFFIX + ENCRYPTED_SUFFIX))
    }
    squashed = patch_like in ({DIFF_PATCH}, {DIFF_PATCH + ENCRYPTED_SUFFIX})
    if squashed:
        skipped.extend(
            f"{folder.child(name)}: not a patch; FlagScale does not apply it either"
            for name in sorted(set(others) - patch_like)
        )
    if squashed and DIFF_PATCH in patch_like:
        layout = "diff"
        source = folder.child(DIFF_PATCH)
        text = _text_of(folder.read(DIFF_PATCH, PATCH_LIMIT), source, decrypted=False)
        files = _squashed_files(text, source)
    elif squashed:
        layout = "encrypted"
        source = folder.child(DIFF_PATCH + ENCRYPTED_SUFFIX)
        data = folder.read(DIFF_PATCH + ENCRYPTED_SUFFIX, PATCH_LIMIT)
        if key is None:
            files = []
            skipped.append(f"{source}: encrypted; pass the vendor's private key to read it")
        else:
            text = _text_of(key.decrypt(data, source), source, decrypted=True)
            files = _squashed_files(text, source)
    elif others:
        layout = "per-file"
        files = _per_file(folder, key, skipped)
    else:
        raise IntegrityError(f"{folder.shown} holds {DIFF_YAML} but no patch")

    version, commit = _backend_base(info, backend, folder.child(DIFF_YAML), notes)
    if info.device_type is not None and info.device_type != flagscale_device:
        notes.append(
            f"{DIFF_YAML} names device_type {info.device_type}, but lies in "
            f"{HARDWARE}/{flagscale_device}: the folder's name is used"
        )
    history_commit = history.newest(flagscale_device, info.task, backend, notes)
    author = _author_from_contact(info.contact, notes)
    notes.append(
        f"date is the placeholder {PLACEHOLDER_DATE}: FlagScale records no date outside git"
        + (
            f" (git dates FlagScale commit {history_commit}, which brought it)"
            if history_commit
            else ""
        )
    )
    return _build_set(
        flagscale_device=flagscale_device,
        backend=backend,
        version=version,
        commit=commit,
        flagscale_commit=info.flagscale_commit,
        history_commit=history_commit,
        layout=layout,
        source=folder.shown,
        author=author,
        date=PLACEHOLDER_DATE,
        contact=info.contact,
        models=info.models,
        task=info.task,
        files=files,
        skipped=skipped,
        notes=notes,
        origin=_origin_phrase(layout, folder.shown),
    )


def _origin_phrase(layout: Layout, folder: str) -> str:
    if layout == "per-file":
        return f"the per-file patches under {folder}/"
    if layout == "encrypted":
        return f"the encrypted squashed patch {folder}/{DIFF_PATCH}{ENCRYPTED_SUFFIX}"
    return f"the squashed patch {folder}/{DIFF_PATCH}"


def _backend_base(
    info: _DiffInfo, backend: str, source: str, notes: list[str]
) -> tuple[str | None, str | None]:
    raw_version = info.backends_version.get(backend)
    version = _release_version(raw_version, backend, source, notes)
    commit = info.backends_commit.get(backend)
    if backend == FLAGSCALE_BACKEND and commit is None:
        commit = info.flagscale_commit
        notes.append(f"FlagScale's own patch applies to FlagScale at {DIFF_YAML}'s commit")
    if backend in PROJECTS and version and commit:
        notes.append(
            f"{DIFF_YAML} names {backend} {version} and commit {commit}: the patch was made "
            f"on that commit, which need not be the {version} release"
        )
    if backend not in PROJECTS:
        notes.append(
            f"{backend} has no released sdist patchtool fetches: its base is taken from git"
            + (f" (commit {commit})" if commit else "")
        )
    if version is None and commit is None:
        notes.append(f"{DIFF_YAML} names neither a {backend} version nor a commit")
    return version, commit


def _release_version(value: str | None, backend: str, source: str, notes: list[str]) -> str | None:
    if value is None:
        return None
    from packaging.version import InvalidVersion, Version

    try:
        normalized = str(Version(value))
    except InvalidVersion:
        notes.append(
            f"{backend} version {quoted(value)} in {DIFF_YAML} is not a release (a branch?); "
            "the base must be a commit"
        )
        return None
    check_name(f"{source}: {backend} version", normalized)
    if normalized != value:
        notes.append(f"{backend} version {quoted(value)} in {DIFF_YAML} is read as {normalized}")
    return normalized


def _author_from_contact(contact: str | None, notes: list[str]) -> str:
    if contact is not None and _EMAIL.match(contact):
        notes.append(
            f"author from {DIFF_YAML}'s contact, an address only: the name is its local part"
        )
        return f"{contact.split('@', 1)[0]} <{contact}>"
    why = "names no contact" if contact is None else f"contact {quoted(contact)} is not an address"
    notes.append(f"{DIFF_YAML} {why}: the author is the placeholder {PLACEHOLDER_AUTHOR}")
    return PLACEHOLDER_AUTHOR


def _parse_diff_yaml(data: bytes, source: str) -> _DiffInfo:
    loaded = _load_yaml(data, source)
    if not isinstance(loaded, dict):
        raise IntegrityError(f"{source}: expected a mapping of {', '.join(_DIFF_KEYS)}")
    table = _string_keys(loaded, source, "")
    for name in table:
        if name not in _DIFF_KEYS:
            raise IntegrityError(
                f"{source}: unknown key {quoted(name)}" + did_you_mean(name, list(_DIFF_KEYS)),
                hint=f"{DIFF_YAML} holds {', '.join(_DIFF_KEYS)}.",
            )
    commit = table.get("commit")
    if commit is None:
        raise IntegrityError(f"{source}: has no commit (FlagScale's base commit)")
    device_type = table.get("device_type")
    if device_type is not None:
        device_type = check_name(
            f"{source}: device_type", _string(device_type, source, "device_type")
        )
    backends_commit = {
        check_name(f"{source}: backends_commit key", name): _full_commit(
            value, source, f"backends_commit.{name}"
        )
        for name, value in _string_keys(
            _mapping(table.get("backends_commit"), source, "backends_commit"),
            source,
            "backends_commit",
        ).items()
    }
    backends_version = {
        check_name(f"{source}: backends_version key", name): _line(
            _string(value, source, f"backends_version.{name}"), source, f"backends_version.{name}"
        )
        for name, value in _string_keys(
            _mapping(table.get("backends_version"), source, "backends_version"),
            source,
            "backends_version",
        ).items()
    }
    contact_value = table.get("contact")
    contact = None
    if contact_value is not None:
        contact = _line(_string(contact_value, source, "contact"), source, "contact").strip()
        contact = contact or None
    models = tuple(
        _line(item, source, "models")
        for item in _string_list(table.get("models"), source, "models")
    )
    task = tuple(
        check_name(f"{source}: task", item)
        for item in _string_list(table.get("task"), source, "task")
    )
    return _DiffInfo(
        device_type=device_type,
        flagscale_commit=_full_commit(commit, source, "commit"),
        backends_commit=backends_commit,
        backends_version=backends_version,
        contact=contact,
        models=models,
        task=task,
    )


# --------------------------------------------------------------------------- patch_history.yaml


@dataclass(frozen=True)
class _History:
    """patch_history.yaml: device -> task -> backends ("FlagScale+vllm") -> commits,
    oldest first."""

    entries: Mapping[str, Mapping[str, Mapping[str, tuple[str, ...]]]] = field(default_factory=dict)

    def newest(
        self, device: str, tasks: tuple[str, ...], backend: str, notes: list[str]
    ) -> str | None:
        by_task = self.entries.get(device, {})
        for task in tasks:
            by_backends = by_task.get(task, {})
            keys = (
                [backend]
                if backend in by_backends
                else sorted(key for key in by_backends if backend in key.split("+"))
            )
            for key in keys:
                commits = by_backends[key]
                if commits:
                    notes.append(
                        f"{HISTORY_YAML} lists {len(commits)} commit(s) under "
                        f"{device}/{task}/{key}; the newest carries this patch"
                    )
                    return commits[-1]
        return None


def _read_history(hardware: _Folder) -> _History:
    kinds = dict(hardware.entries())
    if HISTORY_YAML not in kinds:
        return _History()
    source = hardware.child(HISTORY_YAML)
    loaded = _load_yaml(hardware.read(HISTORY_YAML, YAML_LIMIT), source)
    if loaded is None:
        return _History()
    entries: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {}
    for device, tasks in _string_keys(_mapping(loaded, source, ""), source, "").items():
        check_name(f"{source}: device", device)
        entries[device] = {}
        for task, keys in _string_keys(_mapping(tasks, source, device), source, device).items():
            check_name(f"{source}: task under {device}", task)
            where = f"{device}.{task}"
            entries[device][task] = {}
            for key, commits in _string_keys(_mapping(keys, source, where), source, where).items():
                for part in key.split("+"):
                    check_name(f"{source}: backend under {where}", part)
                entries[device][task][key] = tuple(
                    _full_commit(item, source, f"{where}.{key}")
                    for item in _list(commits, source, f"{where}.{key}")
                )
    return _History(entries)


# --------------------------------------------------------------------------- typed YAML values


def _load_yaml(data: bytes, source: str) -> object:
    """A YAML file of the tree, read with PyYAML's safe loader and without anchors
    and aliases: an alias repeats a node without its bytes, so a file of a few
    hundred bytes nests aliases into billions of values (FlagScale's files have
    no use for them)."""
    yaml = importlib.import_module("yaml")
    yaml_error: type[Exception] = yaml.YAMLError
    text = _text_of(data, source, decrypted=False, diff=False).decode("utf-8")
    try:
        loader = _no_alias_loader()(text)
        try:
            loaded: object = loader.get_single_data()
        finally:
            loader.dispose()
        return loaded
    except _AliasRefused as refused:
        raise IntegrityError(
            f"{source}: line {refused.line}: {refused.what}; patchtool reads YAML without "
            "anchors and aliases",
            hint="Write the value out where it is used: an alias can make a small file "
            "expand without bound.",
        ) from None
    except yaml_error as error:
        detail = str(error).splitlines()
        raise IntegrityError(f"{source}: not valid YAML: {' '.join(detail[:2])}") from error
    except RecursionError as error:
        raise IntegrityError(f"{source}: YAML nested too deeply") from error
    except ValueError as error:  # an integer of more digits than Python converts
        raise IntegrityError(f"{source}: not valid YAML: {quoted(str(error), 80)}") from error


class _AliasRefused(Exception):
    def __init__(self, line: int, what: str) -> None:
        super().__init__(what)
        self.line = line
        self.what = what


@functools.cache
def _no_alias_loader() -> Any:
    """PyYAML's SafeLoader with a composer that refuses an alias (`*name`) or an
    anchor (`&name`) where it meets one, before any node is built from it."""
    yaml: Any = importlib.import_module("yaml")  # PyYAML ships without type information

    class NoAliasLoader(yaml.SafeLoader):  # type: ignore[misc]
        def compose_node(self, parent: Any, index: Any) -> Any:
            event: Any = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                name = quoted("*" + event.anchor, 40)
                raise _AliasRefused(event.start_mark.line + 1, f"the alias {name}")
            if getattr(event, "anchor", None) is not None:
                name = quoted("&" + event.anchor, 40)
                raise _AliasRefused(event.start_mark.line + 1, f"the anchor {name}")
            return super().compose_node(parent, index)

    return NoAliasLoader


def _mapping(value: object, source: str, key: str) -> dict[object, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IntegrityError(f"{source}: {key or 'the file'} must be a mapping")
    return value


def _string_keys(value: dict[object, object], source: str, key: str) -> dict[str, object]:
    for name in value:
        if not isinstance(name, str):
            raise IntegrityError(
                f"{source}: {key or 'the file'} has a key {quoted(name)} that is not text"
            )
    return {str(name): item for name, item in value.items()}


def _list(value: object, source: str, key: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise IntegrityError(f"{source}: {key} must be a list")
    return value


def _string(value: object, source: str, key: str) -> str:
    if not isinstance(value, str):
        kind = "a number" if isinstance(value, (int, float)) else type(value).__name__
        raise IntegrityError(
            f"{source}: {key} is {kind} ({quoted(value)}), not text",
            hint="Quote the value in the YAML file (a version such as 0.10 reads as a number).",
        )
    return value


def _string_list(value: object, source: str, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [_string(item, source, key) for item in _list(value, source, key)]


def _line(value: str, source: str, key: str) -> str:
    """Free text from the tree that reaches messages and the terminal: one line, no
    control or format characters, bounded."""
    problem = _text_problem(value)
    if problem is None and len(value) > TEXT_LIMIT:
        problem = f"is longer than {TEXT_LIMIT} characters"
    if problem is not None:
        raise IntegrityError(f"{source}: {key} {quoted(value, 40)} {problem}")
    return value


def _text_problem(value: str) -> str | None:
    for character in value:
        category = unicodedata.category(character)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"holds the control character U+{ord(character):04X}"
    return None


def _full_commit(value: object, source: str, key: str) -> str:
    if not isinstance(value, str) or not _FULL_COMMIT.match(value):
        raise IntegrityError(
            f"{source}: {key} {quoted(value)} is not a full 40-digit commit id",
            hint="FlagScale records full commit ids; a short one is ambiguous.",
        )
    return value.lower()



# --------------------------------------------------------------------------- per-file patches


def _per_file(folder: _Folder, key: _Key | None, skipped: list[str]) -> list[FilePatch]:
    files: list[FilePatch] = []
    budget = [SET_BYTES_LIMIT]
    prefix_length = len(folder.shown) + 1
    for source, data, encrypted in _walk_patches(folder, 0, skipped, budget):
        relative = source[prefix_length:]
        suffix = PATCH_SUFFIX + (ENCRYPTED_SUFFIX if encrypted else "")
        expected = _safe_path(relative[: -len(suffix)], source)
        if encrypted:
            if key is None:
                skipped.append(f"{source}: encrypted; pass the vendor's private key to read it")
                continue
            data = key.decrypt(data, source)
        text = _text_of(data, source, decrypted=encrypted)
        sections = _sections(text, source, mail=False)
        if len(sections) != 1:
            raise IntegrityError(
                f"{source}: holds {len(sections)} file diffs; a per-file patch holds one",
            )
        section = sections[0]
        if expected not in (section.new, section.old):
            raise IntegrityError(
                f"{source}: its diff is for {quoted(section.path)}, not {quoted(expected)} "
                "as its place says",
                hint="A per-file patch lies at <path>.patch for the file it changes.",
            )
        files.append(FilePatch(section.path, section.text, source))
        if len(files) > SET_FILES_LIMIT:
            raise IntegrityError(f"{folder.shown}: more than {SET_FILES_LIMIT} patch files")
    _refuse_duplicates(files)
    return files


def _walk_patches(
    folder: _Folder, depth: int, skipped: list[str], budget: list[int]
) -> Iterator[tuple[str, bytes, bool]]:
    if depth > DEPTH_LIMIT:
        raise IntegrityError(f"{folder.shown}: folders nested more than {DEPTH_LIMIT} deep")
    for name, kind in folder.entries():
        shown = folder.child(name)
        if depth == 0 and name == DIFF_YAML:
            continue
        _name_text(name, shown)
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


def _name_text(name: str, shown: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as error:
        raise IntegrityError(f"{quoted(shown)}: a file name that is not UTF-8") from error


def _refuse_duplicates(files: list[FilePatch]) -> None:
    seen: dict[str, str] = {}
    for file in files:
        if file.path in seen:
            raise IntegrityError(
                f"{file.source} and {seen[file.path]} both change {file.path}",
                hint="Keep one patch per file.",
            )
        seen[file.path] = file.source


# --------------------------------------------------------------------------- legacy patches


def _read_legacy(
    folder: _Folder, flagscale_device: str, commit_folder: str, key: _Key | None
) -> BackendSet:
    notes: list[str] = []
    skipped: list[str] = []
    kinds = dict(folder.entries())
    plain, encrypted = commit_folder + PATCH_SUFFIX, commit_folder + PATCH_SUFFIX + ENCRYPTED_SUFFIX
    files: list[FilePatch] = []
    author, date, subject = PLACEHOLDER_AUTHOR, PLACEHOLDER_DATE, None
    read: str | None = None
    for name, kind in kinds.items():
        if name not in (plain, encrypted):
            skipped.append(f"{folder.child(name)}: not {plain}; a legacy folder holds that only")
        elif kind != "file":
            raise UnsafeInputError(
                f"{folder.child(name)} is not a regular file"
                + ("; patchtool does not follow symlinks" if kind == "link" else "")
            )
    if plain in kinds:
        read = plain
        data = folder.read(plain, PATCH_LIMIT)
    elif encrypted in kinds:
        read = encrypted
        data = folder.read(encrypted, PATCH_LIMIT)
        if key is None:
            skipped.append(
                f"{folder.child(encrypted)}: encrypted; pass the vendor's private key to read it"
            )
            read = None
        else:
            data = key.decrypt(data, folder.child(encrypted))
    else:
        raise IntegrityError(
            f"{folder.shown} holds no {plain}",
            hint="A legacy FlagScale folder holds <commit>/<commit>.patch.",
        )
    if read is not None:
        source = folder.child(read)
        text = _text_of(data, source, read == encrypted, starts=(b"From ", b"diff --git "))
        mail = _read_mail(text, source)
        author, date, subject = mail.author, mail.date, mail.subject
        for section in _sections(mail.diff, source, mail=True, offset=mail.offset):
            moved = _legacy_section(section, source)
            if isinstance(moved, str):
                skipped.append(moved)
            else:
                files.append(moved)
        _refuse_duplicates(files)
        if author == PLACEHOLDER_AUTHOR:
            notes.append(f"the patch's mail names no author: the placeholder {PLACEHOLDER_AUTHOR}")
        if date == PLACEHOLDER_DATE:
            notes.append(f"the patch's mail names no date: the placeholder {PLACEHOLDER_DATE}")
    notes.append(
        f"legacy layout: FlagScale base commit {commit_folder} (an abbreviated id); vLLM under "
        f"{LEGACY_PREFIX} of FlagScale, read with {LEGACY_PREFIX} stripped"
    )
    notes.append("legacy patches name no vLLM version or commit: choose the base with --commit-id")
    origin = f"the legacy squashed patch {folder.shown}/{read or plain}"
    if subject:
        origin += f" (FlagScale base {commit_folder}, message {quoted(subject)})"
    return _build_set(
        flagscale_device=flagscale_device,
        backend=LEGACY_BACKEND,
        version=None,
        commit=None,
        flagscale_commit=None,
        history_commit=None,
        layout="legacy",
        source=folder.shown,
        author=author,
        date=date,
        contact=None,
        models=(),
        task=(),
        files=files,
        skipped=skipped,
        notes=notes,
        origin=origin,
    )


@dataclass(frozen=True)
class _Mail:
    author: str
    date: str
    subject: str | None
    diff: bytes
    offset: int  # line number of the diff's first line in the file


def _read_mail(data: bytes, source: str) -> _Mail:
    """One `git format-patch` mail: its author, date and subject, and the diff."""
    if len(_MAIL_SEPARATOR.findall(data)) > 1:
        raise IntegrityError(
            f"{source}: holds more than one mail; a legacy patch is one squashed format-patch"
        )
    lines = _lines(data)
    start = 1 if lines and lines[0].startswith(b"From ") else 0
    end = start
    while end < len(lines) and lines[end].strip():
        end += 1
    if end == start or not _MAIL_HEADER.match(lines[start]):
        # Not a mail: a plain diff, read without author or date.
        return _Mail(PLACEHOLDER_AUTHOR, PLACEHOLDER_DATE, None, data, 0)
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(
        b"".join(lines[start:end])
    )
    author = PLACEHOLDER_AUTHOR
    name, address = email.utils.parseaddr(str(headers.get("From", "")))
    if address and _EMAIL.match(address):
        name = " ".join(name.split())
        if not name or _text_problem(name) or "<" in name or ">" in name:
            name = address.split("@", 1)[0]
        author = f"{name[:TEXT_LIMIT]} <{address}>"
    date = PLACEHOLDER_DATE
    raw_date = str(headers.get("Date", ""))
    if raw_date:
        try:
            date = email.utils.parsedate_to_datetime(raw_date).isoformat()
        except (TypeError, ValueError):
            date = PLACEHOLDER_DATE
    subject = " ".join(str(headers.get("Subject", "")).split())
    subject = re.sub(r"^(\[[^\]]*\]\s*)+", "", subject)
    subject = "".join(c for c in subject if _text_problem(c) is None)[:TEXT_LIMIT]
    body_start = end + 1
    return _Mail(author, date, subject or None, b"".join(lines[body_start:]), body_start)


def _legacy_section(section: _Section, source: str) -> FilePatch | str:
    """The section with vllm/ stripped from its paths, or why it is not imported."""
    names = [name for name in (section.old, section.new) if name is not None]
    inside = [name.startswith(LEGACY_PREFIX) for name in names]
    if not any(inside):
        return f"{source}: {section.path} lies outside {LEGACY_PREFIX} (not vLLM), not imported"
    if not all(inside):
        return (
            f"{source}: {section.old} -> {section.new} moves a file across {LEGACY_PREFIX}, "
            "not imported"
        )
    stripped = _restrip(section, len(LEGACY_PREFIX), source)
    return FilePatch(stripped.path, stripped.text, source)


# --------------------------------------------------------------------------- diff sections


@dataclass(frozen=True)
class _Section:
    """One `diff --git` section: the file's old and new name (None for /dev/null)."""

    old: str | None
    new: str | None
    text: bytes
    header_end: int  # lines of `text` that are header lines (names are rewritten there)

    @property
    def path(self) -> str:
        name = self.new if self.new is not None else self.old
        assert name is not None
        return name


def _squashed_files(text: bytes, source: str) -> list[FilePatch]:
    files = [
        FilePatch(section.path, section.text, source)
        for section in _sections(text, source, mail=False)
    ]
    if len(files) > SET_FILES_LIMIT:
        raise IntegrityError(f"{source}: more than {SET_FILES_LIMIT} file diffs")
    return files


def _text_of(
    data: bytes,
    source: str,
    decrypted: bool,
    diff: bool = True,
    starts: tuple[bytes, ...] = (b"diff --git ",),
) -> bytes:
    """Refuse what is not UTF-8 text or, for a decrypted patch, does not start as a
    patch does. FlagScale writes both as UTF-8; for a decrypted file this (and the
    reading of its sections) is the only check there is."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        what = "decrypts to bytes that are not UTF-8 text" if decrypted else "is not UTF-8 text"
        raise IntegrityError(
            f"{source}: {what} (byte {error.start})",
            hint="The file is damaged"
            + (", or was encrypted for another key." if decrypted else "."),
        ) from error
    if diff and decrypted and not data.lstrip().startswith(starts):
        raise IntegrityError(
            f"{source}: decrypts to text that is not a git diff",
            hint="The file is damaged: FlagScale's encryption has no integrity check, so "
            "damage shows only here.",
        )
    return data


def _lines(data: bytes) -> list[bytes]:
    """Lines split at '\\n' only (a '\\r' belongs to the line), each keeping its end."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _sections(data: bytes, source: str, mail: bool, offset: int = 0) -> list[_Section]:
    """The `diff --git` sections of a patch, each exactly as long as its hunks say
    (so a removed line "-- " is never taken for a mail signature). Between sections
    only blank lines may stand, and at the end a format-patch signature; text before
    the first section only in a mail. A binary section runs to the next section."""
    lines = _lines(data)
    count = len(lines)
    index = 0
    while index < count and not lines[index].startswith(b"diff --git "):
        if not mail and lines[index].strip():
            raise IntegrityError(
                f"{source}, line {offset + index + 1}: text before the first 'diff --git' line",
                hint="FlagScale's patches are plain `git diff` output.",
            )
        index += 1
    sections: list[_Section] = []
    while index < count:
        start = index
        index += 1
        while index < count and lines[index].startswith(_HEADER_PREFIXES):
            index += 1
        header_end = index - start
        binary = index < count and lines[index].startswith(b"GIT binary patch")
        if binary:
            while index < count and not lines[index].startswith(b"diff --git "):
                index += 1
            # Base85 lines never start with "-": a "-- " line ends the mail at the end.
            end = _without_signature(lines, start, index) if index == count else index
        else:
            index = _hunks(lines, index, source, offset)
            end = index
        section = _parse_header(lines[start : start + header_end], source, offset + start + 1)
        index = _between(lines, index, source, offset, section.path, binary)
        text = b"".join(lines[start:end])
        if not text.endswith(b"\n"):
            text += b"\n"
        sections.append(_Section(section.old, section.new, text, header_end))
    if not sections:
        raise IntegrityError(f"{source}: holds no 'diff --git' section", hint="Is it a patch?")
    return sections


def _hunks(lines: list[bytes], index: int, source: str, offset: int) -> int:
    count = len(lines)
    while index < count and lines[index].startswith(b"@@ "):
        match = _HUNK.match(lines[index])
        if match is None:
            raise IntegrityError(f"{source}, line {offset + index + 1}: a malformed hunk header")
        old = int(match[2]) if match[2] is not None else 1
        new = int(match[4]) if match[4] is not None else 1
        first = index
        index += 1
        while old > 0 or new > 0:
            if index >= count:
                raise IntegrityError(
                    f"{source}, line {offset + first + 1}: the hunk is cut short by the end"
                )
            kind = lines[index][:1]
            if kind in (b" ", b"\n"):  # git reads an empty line as empty context
                old, new = old - 1, new - 1
            elif kind == b"-":
                old -= 1
            elif kind == b"+":
                new -= 1
            elif kind != b"\\":
                raise IntegrityError(
                    f"{source}, line {offset + index + 1}: the hunk at line {offset + first + 1} "
                    "ends before its line counts say"
                )
            if old < 0 or new < 0:
                raise IntegrityError(
                    f"{source}, line {offset + first + 1}: the hunk holds more lines than its "
                    "header says"
                )
            index += 1
        while index < count and lines[index].startswith(b"\\"):
            index += 1
    return index


def _between(
    lines: list[bytes], index: int, source: str, offset: int, path: str, binary: bool
) -> int:
    """Skip what follows a section up to the next: blank lines, or a signature at the end."""
    count = len(lines)
    while index < count and not lines[index].startswith(b"diff --git "):
        line = lines[index]
        if line.rstrip(b"\r\n") == b"-- ":
            if any(later.startswith(b"diff --git ") for later in lines[index:]):
                raise IntegrityError(
                    f"{source}, line {offset + index + 1}: a signature before a later diff"
                )
            return count
        if line.strip() and not binary:
            raise IntegrityError(
                f"{source}, line {offset + index + 1}: text after the diff of {path} that "
                "belongs to no file's diff",
                hint="A hunk's line counts may be wrong, or the patch was edited by hand.",
            )
        index += 1
    return index


def _without_signature(lines: list[bytes], start: int, end: int) -> int:
    for index in range(start, end):
        if lines[index].rstrip(b"\r\n") == b"-- ":
            return index
    return end


@dataclass(frozen=True)
class _Names:
    old: str | None
    new: str | None

    @property
    def path(self) -> str:
        name = self.new if self.new is not None else self.old
        assert name is not None
        return name


def _parse_header(header: list[bytes], source: str, line_number: int) -> _Names:
    """A section's old and new names from its `diff --git` line and extended header,
    which must agree. Names are checked: inside the tree, no control characters."""
    where = f"{source}, line {line_number}"
    if header[0].endswith(b"\r\n"):
        raise IntegrityError(
            f"{where}: the diff has CRLF line ends", hint="git writes patches with LF line ends."
        )
    fields: dict[bytes, bytes] = {}
    for line in header[1:]:
        for prefix in _HEADER_PREFIXES:
            if line.startswith(prefix):
                key = _SYNONYMS.get(prefix, prefix)
                if key in fields and key in _NAME_FIELDS:
                    raise IntegrityError(f"{where}: two {quoted(key.decode().strip())} lines")
                fields[key] = line[len(prefix) :].rstrip(b"\n")
                break
    created = b"new file mode " in fields
    deleted = b"deleted file mode " in fields
    moved_from = fields.get(b"rename from ") or fields.get(b"copy from ")
    moved_to = fields.get(b"rename to ") or fields.get(b"copy to ")
    names = _git_names(header[0][len(b"diff --git ") :].rstrip(b"\n"))
    minus = _side_name(fields.get(b"--- "), "a/", where)
    plus = _side_name(fields.get(b"+++ "), "b/", where)
    old = new = None
    if names is not None:
        old = _strip_prefix(_unquote(names[0], where), "a/", where)
        new = _strip_prefix(_unquote(names[1], where), "b/", where)
    old = old or (_unquote(moved_from, where) if moved_from else None) or minus
    new = new or (_unquote(moved_to, where) if moved_to else None) or plus
    if old is None or new is None:
        raise IntegrityError(
            f"{where}: cannot tell which file the diff changes",
            hint="Paths with spaces need the ---/+++ lines git writes.",
        )
    for name, agrees in (
        (minus, old),
        (plus, new),
        (_unquote(moved_from, where) if moved_from else None, old),
        (_unquote(moved_to, where) if moved_to else None, new),
    ):
        if name is not None and name != agrees:
            raise IntegrityError(
                f"{where}: the header names {quoted(agrees)} here and {quoted(name)} there"
            )
    if old != new and moved_from is None:
        raise IntegrityError(
            f"{where}: names two files ({quoted(old)}, {quoted(new)}) without a rename"
        )
    if (created and fields.get(b"--- ", b"/dev/null") != b"/dev/null") or (
        deleted and fields.get(b"+++ ", b"/dev/null") != b"/dev/null"
    ):
        raise IntegrityError(f"{where}: a new or deleted file with two sides")
    old_path = None if created else _safe_path(old, where)
    new_path = None if deleted else _safe_path(new, where)
    if created and deleted:
        raise IntegrityError(f"{where}: a file both created and deleted")
    if old_path is None and new_path is None:  # pragma: no cover - excluded above
        raise IntegrityError(f"{where}: names no file")
    return _Names(old_path, new_path)


def _side_name(value: bytes | None, prefix: str, where: str) -> str | None:
    if value is None:
        return None
    value = value.removesuffix(b"\t")  # git adds a tab after a name with a space
    if value == b"/dev/null":
        return None
    return _strip_prefix(_unquote(value, where), prefix, where)


def _strip_prefix(name: str, prefix: str, where: str) -> str:
    if not name.startswith(prefix):
        raise IntegrityError(
            f"{where}: the name {quoted(name)} lacks git's {prefix} prefix",
            hint="FlagScale's patches are `git diff` output, read with -p1.",
        )
    return name[len(prefix) :]


def _git_names(rest: bytes) -> tuple[bytes, bytes] | None:
    """The two names of a `diff --git` line, still quoted where git quoted them.
    Unquoted names with spaces are split where both halves name the same file;
    None when that cannot be told (the extended header says then)."""
    if rest.startswith(b'"'):
        first = _quoted_end(rest)
        if first is None or rest[first : first + 1] != b" ":
            return None
        return rest[:first], rest[first + 1 :]
    if rest.endswith(b'"'):
        split = rest.rfind(b' "')
        return (rest[:split], rest[split + 1 :]) if split > 0 else None
    if len(rest) % 2 == 1:
        half = len(rest) // 2
        a, b = rest[:half], rest[half + 1 :]
        if rest[half : half + 1] == b" " and a[2:] == b[2:]:
            return a, b
    if rest.count(b" b/") == 1:
        split = rest.index(b" b/")
        return rest[:split], rest[split + 1 :]
    return None


def _quoted_end(raw: bytes) -> int | None:
    """The index just past the closing quote of a C-quoted name at the start of raw."""
    index = 1
    while index < len(raw):
        if raw[index : index + 1] == b"\\":
            index += 2
            continue
        if raw[index : index + 1] == b'"':
            return index + 1
        index += 1
    return None


_ESCAPES = {b"a": 7, b"b": 8, b"t": 9, b"n": 10, b"v": 11, b"f": 12, b"r": 13, b'"': 34, b"\\": 92}


def _unquote(raw: bytes, where: str) -> str:
    """A name as git wrote it (C-quoted when it holds special bytes), as text."""
    if raw.startswith(b'"'):
        if len(raw) < 2 or not raw.endswith(b'"') or _quoted_end(raw) != len(raw):
            raise IntegrityError(f"{where}: a badly quoted name {quoted(raw)}")
        out = bytearray()
        index = 1
        while index < len(raw) - 1:
            byte = raw[index : index + 1]
            if byte != b"\\":
                out += byte
                index += 1
                continue
            escape = raw[index + 1 : index + 2]
            if escape in _ESCAPES:
                out.append(_ESCAPES[escape])
                index += 2
            elif re.fullmatch(rb"[0-3][0-7][0-7]", raw[index + 1 : index + 4]):
                out.append(int(raw[index + 1 : index + 4], 8))
                index += 4
            else:
                raise IntegrityError(f"{where}: a badly quoted name {quoted(raw)}")
        raw = bytes(out)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IntegrityError(f"{where}: the name {quoted(raw)} is not UTF-8") from error


def _quote(name: str) -> bytes:
    """A name as git writes it: C-quoted when it holds '"', '\\\\', control or non-ASCII."""
    raw = name.encode("utf-8")
    if not any(byte < 0x20 or byte >= 0x7F or byte in b'"\\' for byte in raw):
        return raw
    reverse = {value: key for key, value in _ESCAPES.items()}
    out = bytearray(b'"')
    for byte in raw:
        if byte in reverse:
            out += b"\\" + reverse[byte]
        elif byte < 0x20 or byte >= 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def _safe_path(name: str, where: str) -> str:
    problem = path_problem(name) or _text_problem(name)
    if problem is not None:
        raise UnsafeInputError(
            f"{where}: the path {quoted(name)} {problem}",
            hint="A patch may only change files inside the backend's tree.",
        )
    return name


def _restrip(section: _Section, length: int, source: str) -> _Section:
    """The section with the first `length` characters of every name removed (the
    legacy `vllm/`), its header rewritten the way git would write it."""
    old = section.old[length:] if section.old is not None else None
    new = section.new[length:] if section.new is not None else None
    old = _safe_path(old, source) if old is not None else None
    new = _safe_path(new, source) if new is not None else None
    left = old if old is not None else new
    right = new if new is not None else old
    assert left is not None and right is not None
    lines = _lines(section.text)
    rewritten = [b"diff --git " + _quote("a/" + left) + b" " + _quote("b/" + right) + b"\n"]
    for line in lines[1 : section.header_end]:
        if line.startswith(b"--- ") and old is not None and not line.startswith(b"--- /dev/null"):
            line = b"--- " + _quote("a/" + old) + (b"\t" if " " in old else b"") + b"\n"
        elif line.startswith(b"+++ ") and new is not None and not line.startswith(b"+++ /dev/null"):
            line = b"+++ " + _quote("b/" + new) + (b"\t" if " " in new else b"") + b"\n"
        else:
            for prefix, name in (
                (b"rename from ", old),
                (b"rename old ", old),
                (b"copy from ", old),
                (b"rename to ", new),
                (b"rename new ", new),
                (b"copy to ", new),
            ):
                if line.startswith(prefix) and name is not None:
                    line = prefix + _quote(name) + b"\n"
                    break
        rewritten.append(line)
    text = b"".join(rewritten + lines[section.header_end :])
    return _Section(old, new, text, section.header_end)


# --------------------------------------------------------------------------- grouping


def component_of(backend: str, path: str) -> str:
    """The group a file belongs to: its first path component, or under the backend's
    package folder the first two (a file right in that folder groups as the folder)."""
    parts = path.split("/")
    for package in PACKAGE_FOLDERS.get(backend, ()):
        depth = package.count("/") + 1
        if "/".join(parts[:depth]) == package and len(parts) > depth:
            return package if len(parts) == depth + 1 else "/".join(parts[: depth + 1])
    return parts[0]


def _short_component(backend: str, component: str) -> str:
    for package in PACKAGE_FOLDERS.get(backend, ()):
        if component.startswith(package + "/"):
            return component[len(package) + 1 :]
    return component


def _build_set(
    *,
    flagscale_device: str,
    backend: str,
    version: str | None,
    commit: str | None,
    flagscale_commit: str | None,
    history_commit: str | None,
    layout: Layout,
    source: str,
    author: str,
    date: str,
    contact: str | None,
    models: tuple[str, ...],
    task: tuple[str, ...],
    files: list[FilePatch],
    skipped: list[str],
    notes: list[str],
    origin: str,
) -> BackendSet:
    device = _store_device(flagscale_device)
    if device != flagscale_device:
        notes.insert(0, f"FlagScale's {flagscale_device} is patchtool's device {device}")
    project = PROJECTS.get(backend)
    by_component: dict[str, list[FilePatch]] = {}
    for file in files:
        by_component.setdefault(component_of(backend, file.path), []).append(file)
    groups: list[PatchGroup] = []
    for component in sorted(by_component):
        members = tuple(sorted(by_component[component], key=lambda file: file.path))
        subject = f"{_short_component(backend, component)}: {device} changes from FlagScale"
        groups.append(
            PatchGroup(
                component=component,
                subject=subject,
                body=_body(component, members, origin, flagscale_commit, layout, flagscale_device),
                files=members,
            )
        )
    return BackendSet(
        device=check_name("device", device),
        flagscale_device=flagscale_device,
        backend=backend,
        project=project,
        version=version,
        commit=commit,
        flagscale_commit=flagscale_commit,
        history_commit=history_commit,
        layout=layout,
        source=source,
        author=author,
        date=date,
        contact=contact,
        models=models,
        task=task,
        groups=tuple(groups),
        skipped=tuple(skipped),
        notes=tuple(notes),
    )


def _body(
    component: str,
    files: tuple[FilePatch, ...],
    origin: str,
    flagscale_commit: str | None,
    layout: Layout,
    flagscale_device: str,
) -> str:
    lines = [
        f"The {component} part of {flagscale_device}'s changes in FlagScale's hardware",
        f"folder, from {origin}.",
        "",
        f"FlagScale commit: {flagscale_commit or 'not recorded'}",
    ]
    if layout == "per-file":
        lines.append("Sources:")
        lines.extend(f"  {file.source}" for file in files)
    else:
        lines.append("Files:")
        lines.extend(f"  {file.path}" for file in files)
    lines += ["", f"Upstream-Status: {UPSTREAM_STATUS}"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- decryption


class _Key:
    """The vendor's RSA private key, and FlagScale's hybrid decryption, in memory."""

    def __init__(self, key: RSAPrivateKey, shown: str) -> None:
        self.key = key
        self.shown = shown

    def decrypt(self, data: bytes, source: str) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives.padding import PKCS7

        wrapped_length = (self.key.key_size + 7) // 8
        body_length = len(data) - 16 - wrapped_length
        if body_length < 16 or body_length % 16:
            raise IntegrityError(
                f"{source}: {len(data)} bytes is not an IV, a {wrapped_length}-byte key block "
                "and whole AES blocks",
                hint=f"The file is damaged, or was encrypted for another key than {self.shown}.",
            )
        iv = data[:16]
        wrapped = data[16 : 16 + wrapped_length]
        body = data[16 + wrapped_length :]
        try:
            aes_key = self.key.decrypt(
                wrapped,
                padding.OAEP(
                    mgf=padding.MGF1(algorithm=hashes.SHA256()),
                    algorithm=hashes.SHA256(),
                    label=None,
                ),
            )
        except ValueError as error:
            raise IntegrityError(
                f"{source}: its AES key cannot be decrypted with {self.shown}",
                hint="The file was encrypted for another key, or is damaged.",
            ) from error
        if len(aes_key) != 32:
            raise IntegrityError(f"{source}: its AES key is {len(aes_key)} bytes, not 32")
        decryptor = Cipher(algorithms.AES(aes_key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(body) + decryptor.finalize()
        unpadder = PKCS7(128).unpadder()
        try:
            return unpadder.update(padded) + unpadder.finalize()
        except ValueError as error:
            raise IntegrityError(
                f"{source}: decrypts with a bad PKCS#7 padding",
                hint="The file is damaged (FlagScale's encryption has no integrity check).",
            ) from error


def _load_private_key(path: Path) -> _Key:
    if path.is_dir():
        path = path / KEY_FILE
    # Named by the user (a link of theirs is followed), read as every named file is.
    data = read_regular_file(
        path,
        KEY_LIMIT,
        follow_symlinks=True,
        name=f"private key {path}",
        limit_hint="A PEM private key is a few KiB: name the key file itself.",
    )
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(data, password=None)
    except TypeError as error:
        raise UsageError(
            f"private key {path} is protected by a password",
            hint="Give an unencrypted copy of the key, kept outside the repository.",
        ) from error
    except (ValueError, UnsupportedAlgorithm) as error:
        raise UsageError(f"{path} is not a PEM private key") from error
    if not isinstance(key, RSAPrivateKey):
        raise UsageError(f"{path} is not an RSA private key; FlagScale encrypts with RSA")
    return _Key(key, str(path))
