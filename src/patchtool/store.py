"""The patch store: `patches/<device>/device.toml` and one folder per upstream base.

    patches/<device>/device.toml          the device's settings
    patches/<device>/<base-id>/base.toml  the upstream the series applies to
    patches/<device>/<base-id>/series     patch order, one file name a line
    patches/<device>/<base-id>/*.patch    git format-patch mbox files
    patches/<device>/<base-id>/*.patch.age  private patches: a clear header
                                          (subject, files, recipients) and
                                          the patch, encrypted with age

Files are parsed once, here, into frozen dataclasses. Unknown or misspelled keys
are errors that name the file, the key and the closest valid key.

The store is written here too, and only here: a new device's device.toml and a
new base's base.toml and series (`write_device_file`, `write_base_files`,
through `fsutil.atomic_write`), and a base folder's series and patch files as
one atomic change (`plan_export`, `write_plan`: staged beside the folder and
swapped in with one exchange). This module never runs git.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import hashlib
import os
import re
import shutil
import sys
import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import IntegrityError, NotFoundError, UnsafeInputError, UsageError, quoted
from .faults import kill_point
from .fsutil import (
    atomic_write,
    check_name,
    check_relative_path,
    exchange_paths,
    fsync_directory,
    new_file_mode,
    open_regular,
    read_regular_file,
    remove_tree,
    sha256_of,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICE_FILE = "device.toml"
BASE_FILE = "base.toml"
SERIES_FILE = "series"
PATCH_SUFFIX = ".patch"
PRIVATE_SUFFIX = ".patch.age"
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# A patch file named in `series`: one path component that no tool reads as an
# option, a hidden file or a path (quilt's names such as 0001-Fix_it.patch fit).
_PATCH_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._+@,=-]{0,199}$")
# The small files of a store (device.toml, base.toml, series) are read whole.
_SMALL_FILE_LIMIT = 1 << 20


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class BuildSettings:
    """What `build-wheel` needs to know about a device."""

    env_script: str = "env.sh"
    env_args: tuple[str, ...] = ()
    target_device: str = "empty"
    required_files: tuple[str, ...] = ()
    env_timeout: int = 300  # seconds env.sh may run before it is ended (exit 8)
    # [build-system] requires that the build for `target_device` never uses (e.g.
    # cmake and ninja when no extension is compiled): canonical project names.
    skip_build_requires: tuple[str, ...] = ()


_MIB = 1 << 20
_GIB = 1 << 30


def _limit(default: int, ceiling: int) -> Any:
    """A field of PatchLimits: its default, and the ceiling no device.toml can raise it past."""
    return field(default=default, metadata={"ceiling": ceiling})


@dataclass(frozen=True)
class PatchLimits:
    """How much of each input a device's commands read, inflate, download or
    unpack before they refuse it unread (exit 6). Each is checked before the
    bytes are produced: a patch's size before git reads it, a binary hunk's
    declared size before git inflates it, an sdist member's declared size
    before it is read, a page or download as it streams in.

    `[limits]` in device.toml raises or lowers them, each up to its ceiling
    (`ceiling`): a store arrives by pull request, and a value above the ceiling
    is an error, so a hostile store cannot lift its own bounds. Where no device
    is known (a new device's first import) the defaults apply. The defaults hold
    the real inputs several times over: the largest vendor patch seen is about
    2 MB touching about 400 files, the C550 series 12 patches, vLLM 0.8.5's
    sdist 7.3 MB (24 MB unpacked, 2694 members, none over 1 MB)."""

    # One patch, as git reads it.
    patch_bytes: int = _limit(16 * _MIB, 256 * _MIB)
    patch_files: int = _limit(2000, 100_000)
    patch_hunks: int = _limit(20_000, 1_000_000)
    # `GIT binary patch` data, inflated: one hunk (a literal's size, a delta's
    # size and the size of its result), all hunks of a patch, of a series.
    binary_hunk_bytes: int = _limit(64 * _MIB, 1 * _GIB)
    binary_patch_bytes: int = _limit(256 * _MIB, 2 * _GIB)
    binary_series_bytes: int = _limit(1 * _GIB, 8 * _GIB)
    # Patches one series lists.
    series_patches: int = _limit(1000, 10_000)
    # A released sdist, unpacked: all members, one member, how many members.
    sdist_bytes: int = _limit(256 * _MIB, 4 * _GIB)
    sdist_member_bytes: int = _limit(64 * _MIB, 1 * _GIB)
    sdist_members: int = _limit(50_000, 1_000_000)
    # What the package index sends: one page of its simple API, one download.
    index_page_bytes: int = _limit(32 * _MIB, 512 * _MIB)
    download_bytes: int = _limit(256 * _MIB, 4 * _GIB)

    @property
    def tree_file_bytes(self) -> int:
        """The largest file a tree made within these limits can hold (a patch's
        text, a binary hunk's result, an sdist member)."""
        return max(self.patch_bytes, self.binary_hunk_bytes, self.sdist_member_bytes)

    @staticmethod
    def ceiling(key: str) -> int:
        """The most `[limits]` may set `key` (a field name) to."""
        return int(_LIMIT_FIELDS[key].metadata["ceiling"])


_LIMIT_FIELDS = {f.name: f for f in fields(PatchLimits)}
DEFAULT_LIMITS = PatchLimits()
LIMITS_HINT = "A patch's limits are set under [limits] in device.toml."


def limit_hint(key: str, what: str) -> str:
    """The hint of an input refused by the limit `key` (a device.toml key):
    `what` says what to do instead of raising it."""
    return (
        f"{what}, or raise {key} under [limits] in the device's {DEVICE_FILE} "
        f"(at most {PatchLimits.ceiling(key.replace('-', '_'))}) if an input this large "
        "is intended."
    )


@dataclass(frozen=True)
class NamedRecipient:
    """One recipient of the device's private patches (`[private.recipients]`):
    a name for people to read, and an age public key (`age1...`) or an SSH
    public key (`ssh-ed25519 ...`, `ssh-rsa ...`)."""

    name: str
    key: str


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    display_name: str
    vendor: str
    build: BuildSettings
    path: Path
    limits: PatchLimits = field(default_factory=PatchLimits)
    # The base commands use when none is named (a folder name, version or commit,
    # resolved like --commit-id); None means the newest base.
    default_base: str | None = None
    # Who private patches are encrypted to, in device.toml's order.
    recipients: tuple[NamedRecipient, ...] = ()


@dataclass(frozen=True)
class PypiSource:
    """A released sdist, found on the user's package index by file name, checked by hash."""

    filename: str
    sha256: str
    kind: str = "pypi"


class GitUrl(str):
    """A git repository's address from a store file or the command line, parsed.

    Allowed: `https://`, `ssh://` (and `git+ssh://`), `git://` and `file://` URLs,
    scp-like `user@host:path`, and plain local paths. Refused: anything git would
    read as an option (a leading `-`, also in the host or user of an ssh address),
    remote-helper syntax (`ext::...`, `fd::...`), other schemes, control
    characters. gitops pins `protocol.allow` to the same schemes, and every git
    call passes the URL after `--`.
    """

    SCHEMES = ("https", "ssh", "git+ssh", "ssh+git", "git", "file")
    kind: str  # "url", "scp" or "path"

    def __new__(cls, value: str) -> GitUrl:
        problem = _git_url_problem(value)
        if problem is not None:
            raise UnsafeInputError(
                f"git URL {quoted(value)} {problem}",
                hint="Use an https://, ssh://, git:// or file:// URL, user@host:path, "
                "or a local path.",
            )
        url = super().__new__(cls, value)
        scp = _SCP_LIKE.match(value)
        is_scp = scp is not None and not (len(scp["host"]) == 1 and scp["host"].isalpha())
        url.kind = "url" if "://" in value else ("scp" if is_scp else "path")
        return url

    def location(self, relative_to: Path) -> str:
        """What git is given: a relative local path is taken from `relative_to`
        (the base folder holding base.toml) and made absolute."""
        if self.kind == "path" and not os.path.isabs(self):
            return str((relative_to / str(self)).resolve())
        return str(self)


_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>[^/:]+):(?!//)")


def _git_url_problem(value: str) -> str | None:
    if not value:
        return "is empty"
    if value.startswith("-"):
        return "starts with '-' (git would read it as an option)"
    if any(ord(char) < 32 or ord(char) == 127 for char in value):
        return "holds control characters"
    head = value.split("/", 1)[0]
    if "::" in head:
        return "uses a remote helper ('<transport>::'), which could run commands"
    if "://" in value:
        parsed = urllib.parse.urlsplit(value)
        scheme = parsed.scheme.lower()
        if scheme not in GitUrl.SCHEMES:
            return f"uses the scheme {quoted(scheme)}; allowed: https, ssh, git, file"
        netloc = parsed.netloc.rsplit("@", 1)
        if any(part.startswith("-") for part in netloc):
            return "has a host or user that starts with '-'"
        if scheme != "file" and not parsed.hostname:
            return "names no host"
        return None
    match = _SCP_LIKE.match(value)
    drive = match is not None and len(match["host"]) == 1 and match["host"].isalpha()
    if match and not drive and "-" in (match["host"][:1], (match["user"] or "")[:1]):
        return "has a host or user that starts with '-'"
    return None


@dataclass(frozen=True)
class GitSource:
    """A git repository (path or URL) holding `BaseRef.commit`."""

    url: GitUrl
    kind: str = "git"

    def __post_init__(self) -> None:
        if not isinstance(self.url, GitUrl):
            object.__setattr__(self, "url", GitUrl(self.url))


@dataclass(frozen=True)
class BaseOrigin:
    """Where a base's series was imported from (`[origin]` in base.toml): kept for
    reviewers and for the next import; no command acts on it."""

    source: str  # e.g. "FlagScale hardware/MetaX_C550/vllm"
    commit: str = ""  # the source's own commit
    contact: str = ""
    models: tuple[str, ...] = ()
    task: tuple[str, ...] = ()
    note: str = ""  # e.g. why the base differs from the one the source pins


@dataclass(frozen=True)
class BaseRef:
    """One upstream base of a device: where it comes from and its exact commit."""

    device: str
    base_id: str
    project: str
    version: str
    commit: str
    source: PypiSource | GitSource
    path: Path
    origin: BaseOrigin | None = None

    @property
    def label(self) -> str:
        return f"{self.project} {self.version}"


@dataclass(frozen=True)
class SeriesEntry:
    name: str
    line: int

    @property
    def private(self) -> bool:
        return self.name.endswith(PRIVATE_SUFFIX)


@dataclass(frozen=True)
class PatchSeries:
    """The ordered patches of one base, plus the comment lines that head `series`."""

    base: BaseRef
    entries: tuple[SeriesEntry, ...]
    header: tuple[str, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.entries]

    def paths(self) -> list[Path]:
        return [self.base.path / entry.name for entry in self.entries]


# --------------------------------------------------------------------------- schema checks


def _key(field_name: str) -> str:
    """A dataclass field as its store key: `env_script` is `env-script`."""
    return field_name.replace("_", "-")


def _keys(kind: type, *, leave_out: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> set[str]:
    """The keys a table may hold: its dataclass's fields (not those that are not
    read from the file), spelled as keys."""
    return {_key(f.name) for f in fields(kind) if f.name not in leave_out} | set(add)


# Key sets, from the dataclasses the tables are parsed into.
_DEVICE_KEYS = _keys(DeviceConfig, leave_out=("name", "path", "recipients"), add=("private",))
_PRIVATE_KEYS = {"recipients"}
_LIMIT_KEYS = _keys(PatchLimits)
_BUILD_KEYS = _keys(BuildSettings)
_BASE_KEYS = _keys(BaseRef, leave_out=("device", "base_id", "path"))
_ORIGIN_KEYS = _keys(BaseOrigin)
_PYPI_KEYS = _keys(PypiSource, leave_out=("kind",), add=("type",))
_GIT_KEYS = _keys(GitSource, leave_out=("kind",), add=("type",))
# age's X25519 recipient (Bech32, 58 data characters) and the SSH keys age takes.
_AGE_RECIPIENT = re.compile(r"^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$")
_SSH_RECIPIENT = re.compile(r"^(ssh-ed25519|ssh-rsa) [A-Za-z0-9+/]{16,2048}={0,2}( [ -~]{0,200})?$")
_RECIPIENT_LIMIT = 64
# A project name as PEP 508 spells it; at most this many in skip-build-requires.
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
_SKIP_BUILD_REQUIRES_LIMIT = 32
_ORIGIN_TEXT_LIMIT = 4096


def _check_keys(path: Path, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            suggestion = f"; did you mean {quoted(close[0])}?" if close else ""
            valid = ", ".join(sorted(allowed))
            raise IntegrityError(
                f"{path}: unknown key {where}{quoted(key)}{suggestion}",
                hint=f"Valid keys here: {valid}.",
            )


def _require(path: Path, table: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in table:
        raise IntegrityError(f"{path}: missing key {where}{quoted(key)}")
    value = table[key]
    if not isinstance(value, kind):
        raise IntegrityError(
            f"{path}: key {where}{quoted(key)} must be a {kind.__name__}, "
            f"not {type(value).__name__}"
        )
    return value


def _string_list(path: Path, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise IntegrityError(f"{path}: key {where}{quoted(key)} must be a list of strings")
    return tuple(value)


def _project_names(path: Path, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A short list of project names, canonical (PEP 503: `Setuptools_SCM` is
    `setuptools-scm`), each once."""
    names = _string_list(path, table, key, where)
    if len(names) > _SKIP_BUILD_REQUIRES_LIMIT:
        raise IntegrityError(
            f"{path}: key {where}{quoted(key)} lists {len(names)} names; "
            f"at most {_SKIP_BUILD_REQUIRES_LIMIT} are allowed"
        )
    canonical: list[str] = []
    for name in names:
        if not _PROJECT_NAME.match(name):
            raise IntegrityError(
                f"{path}: key {where}{quoted(key)} holds {quoted(name)}, "
                "which is not a project name",
                hint="Give names as in pyproject.toml's [build-system] requires, "
                'without versions, e.g. "cmake".',
            )
        name = re.sub(r"[-_.]+", "-", name).lower()
        if name not in canonical:
            canonical.append(name)
    return tuple(canonical)


def _bounded_int(
    path: Path,
    table: Mapping[str, Any],
    key: str,
    where: str,
    default: int,
    low: int,
    high: int,
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise IntegrityError(
            f"{path}: key {where}{quoted(key)} must be a whole number from {low} to {high}, "
            f"not {quoted(value)}"
        )
    return value


def read_store_file(path: Path, limit: int = _SMALL_FILE_LIMIT) -> bytes:
    """The bytes of a file of the store, which arrives by pull request: a regular
    file, not a symlink (it could point anywhere on the machine), not a FIFO (a
    read would hang CI), and at most `limit` bytes (fsutil.read_regular_file)."""
    return read_regular_file(
        path,
        limit,
        link_note="the store holds plain files only",
        link_hint="Replace the link by the file itself.",
        limit_hint=LIMITS_HINT,
    )


def _store_folder(path: Path) -> Path:
    """A device or base folder of the store: a real folder, never a symlink (a
    linked folder would make `patch` write wherever it points)."""
    if path.is_symlink():
        raise UnsafeInputError(
            f"{path} is a symlink; the store holds plain folders only",
            hint="Replace the link by the folder itself.",
        )
    return path


def _load_toml(path: Path) -> dict[str, Any]:
    data = read_store_file(path)
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise IntegrityError(f"{path}: not valid TOML: {error}") from error


def parse_device(path: Path, name: str) -> DeviceConfig:
    data = _load_toml(path)
    _check_keys(path, data, _DEVICE_KEYS, "")
    build_table = _table(path, data, "build")
    _check_keys(path, build_table, _BUILD_KEYS, "build.")
    defaults = BuildSettings()
    build = BuildSettings(
        env_script=_optional(path, build_table, "env-script", str, "build.", defaults.env_script),
        env_args=_string_list(path, build_table, "env-args", "build."),
        target_device=_optional(
            path, build_table, "target-device", str, "build.", defaults.target_device
        ),
        required_files=_string_list(path, build_table, "required-files", "build."),
        env_timeout=_bounded_int(
            path, build_table, "env-timeout", "build.", defaults.env_timeout, 1, 86400
        ),
        skip_build_requires=_project_names(path, build_table, "skip-build-requires", "build."),
    )
    for required in (build.env_script, *build.required_files):
        check_relative_path(f"{path}: path", required)
    limits = _parse_limits(path, _table(path, data, "limits"))
    return DeviceConfig(
        recipients=_parse_recipients(path, _table(path, data, "private")),
        name=check_name("device", name),
        display_name=_require(path, data, "display-name", str),
        vendor=_require(path, data, "vendor", str),
        build=build,
        path=path,
        limits=limits,
        default_base=(
            _safe(path, "default-base", _require(path, data, "default-base", str))
            if "default-base" in data
            else None
        ),
    )


def _parse_limits(path: Path, table: Mapping[str, Any]) -> PatchLimits:
    """[limits]: each key a whole number from 1 to its ceiling."""
    _check_keys(path, table, _LIMIT_KEYS, "limits.")
    values = {}
    for name, limit_field in _LIMIT_FIELDS.items():
        key, ceiling = _key(name), PatchLimits.ceiling(name)
        value = table.get(key, limit_field.default)
        if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
            raise IntegrityError(
                f"{path}: limits.{key} = {value} is above its ceiling of {ceiling}",
                hint="The ceilings bound what a store, which may come with a pull request, "
                "can ask of the machine that reads it; no device.toml can raise them. "
                "Split the input instead.",
            )
        values[name] = _bounded_int(path, table, key, "limits.", value, 1, ceiling)
    return PatchLimits(**values)


def _parse_recipients(path: Path, private: Mapping[str, Any]) -> tuple[NamedRecipient, ...]:
    _check_keys(path, private, _PRIVATE_KEYS, "private.")
    table = private.get("recipients", {})
    if not isinstance(table, dict):
        raise IntegrityError(
            f"{path}: [private.recipients] must be a table of name = public key",
            hint='For example: vendor-ci = "age1..."',
        )
    if len(table) > _RECIPIENT_LIMIT:
        raise IntegrityError(
            f"{path}: [private.recipients] names {len(table)} recipients; "
            f"at most {_RECIPIENT_LIMIT} are allowed"
        )
    return tuple(
        named_recipient(name, key, f"{path}: private.recipients.{name}")
        for name, key in table.items()
    )


def named_recipient(name: str, key: object, where: str) -> NamedRecipient:
    """A recipient as device.toml or `--recipient NAME=KEY` gives it, checked."""
    try:
        check_name("recipient name", name)
    except UnsafeInputError as error:
        raise UnsafeInputError(f"{where}: {error.message}", error.hint) from None
    if not isinstance(key, str) or not (_AGE_RECIPIENT.match(key) or _SSH_RECIPIENT.match(key)):
        raise IntegrityError(
            f"{where} is not an age or SSH public key",
            hint='Give an age recipient ("age1..." from `age-keygen`) or an SSH public '
            'key ("ssh-ed25519 AAAA..." or "ssh-rsa AAAA...").',
        )
    return NamedRecipient(name, key)


def _table(path: Path, data: Mapping[str, Any], key: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise IntegrityError(f"{path}: [{key}] must be a table")
    return table


def _optional(
    path: Path, table: Mapping[str, Any], key: str, kind: type, where: str, default: Any
) -> Any:
    return _require(path, table, key, kind, where) if key in table else default


def parse_base(path: Path, device: str, base_id: str) -> BaseRef:
    _store_folder(path.parent)
    data = _load_toml(path)
    _check_keys(path, data, _BASE_KEYS, "")
    commit = _require(path, data, "commit", str)
    if not _FULL_COMMIT.match(commit):
        raise IntegrityError(
            f"{path}: commit {quoted(commit)} is not a full 40-digit lower-case id"
        )
    source_table = _require(path, data, "source", dict)
    kind = _require(path, source_table, "type", str, "source.")
    source: PypiSource | GitSource
    if kind == "pypi":
        _check_keys(path, source_table, _PYPI_KEYS, "source.")
        sha256 = _require(path, source_table, "sha256", str, "source.")
        if not _SHA256.match(sha256):
            raise IntegrityError(f"{path}: source.sha256 is not 64 lower-case hex digits")
        filename = _safe(
            path, "source.filename", _require(path, source_table, "filename", str, "source.")
        )
        source = PypiSource(filename=filename, sha256=sha256)
    elif kind == "git":
        _check_keys(path, source_table, _GIT_KEYS, "source.")
        url = _require(path, source_table, "url", str, "source.")
        try:
            source = GitSource(url=GitUrl(url))
        except UnsafeInputError as error:
            raise UnsafeInputError(f"{path}: source.url: {error.message}", error.hint) from None
    else:
        close = difflib.get_close_matches(kind, ["pypi", "git"], n=1)
        suggestion = f"; did you mean {quoted(close[0])}?" if close else ""
        raise IntegrityError(f"{path}: unknown source.type {quoted(kind)}{suggestion}")
    return BaseRef(
        device=_safe(path, "device", device),
        base_id=_safe(path, "base folder", base_id),
        project=_safe(path, "project", _require(path, data, "project", str)),
        version=_safe(path, "version", _require(path, data, "version", str)),
        commit=commit,
        source=source,
        path=path.parent,
        origin=_parse_origin(path, data["origin"]) if "origin" in data else None,
    )


def _parse_origin(path: Path, table: object) -> BaseOrigin:
    if not isinstance(table, dict):
        raise IntegrityError(f"{path}: key 'origin' must be a table")
    _check_keys(path, table, _ORIGIN_KEYS, "origin.")

    def text(value: str, key: str) -> str:
        if len(value) > _ORIGIN_TEXT_LIMIT or any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise IntegrityError(
                f"{path}: key origin.{quoted(key)} must be text of at most "
                f"{_ORIGIN_TEXT_LIMIT} characters without control characters"
            )
        return value

    return BaseOrigin(
        source=text(_require(path, table, "source", str, "origin."), "source"),
        commit=text(_optional(path, table, "commit", str, "origin.", ""), "commit"),
        contact=text(_optional(path, table, "contact", str, "origin.", ""), "contact"),
        models=tuple(text(v, "models") for v in _string_list(path, table, "models", "origin.")),
        task=tuple(text(v, "task") for v in _string_list(path, table, "task", "origin.")),
        note=text(_optional(path, table, "note", str, "origin.", ""), "note"),
    )


def _safe(path: Path, kind: str, value: str) -> str:
    """A name that becomes a path component (cache repository, build tree, base
    folder): refused with the store file named."""
    try:
        return check_name(kind, value)
    except UnsafeInputError as error:
        raise UnsafeInputError(f"{path}: {error.message}", error.hint) from None


def render_base(base: BaseRef) -> str:
    """base.toml for `base`, as written for a new base (rebase, import --onto)."""
    source: dict[str, str] = {"type": base.source.kind}
    if isinstance(base.source, PypiSource):
        source.update(filename=base.source.filename, sha256=base.source.sha256)
    else:
        source["url"] = str(base.source.url)
    data: dict[str, Any] = {
        "project": base.project,
        "version": base.version,
        "commit": base.commit,
        "source": source,
    }
    if base.origin is not None:
        # Empty values are left out; the keys are the dataclass's, spelled with '-'.
        data["origin"] = {
            _key(f.name): list(value) if isinstance(value, tuple) else value
            for f in fields(BaseOrigin)
            if (value := getattr(base.origin, f.name))
        }
    return render_toml(data)


def render_device(display_name: str, vendor: str, recipients: Iterable[NamedRecipient]) -> str:
    """device.toml for a new device (import --create, import --flagscale)."""
    data: dict[str, Any] = {
        "display-name": display_name,
        "vendor": vendor,
        "build": {"env-script": BuildSettings().env_script},
    }
    named = {r.name: r.key for r in recipients}
    if named:
        data["private"] = {"recipients": named}
    return render_toml(data)


def render_toml(data: Mapping[str, Any]) -> str:
    """TOML as tomli_w writes it: every string quoted and escaped, so that no
    value can end a line or open a table."""
    import tomli_w

    return tomli_w.dumps(data)


def write_device_file(folder: Path, text: str) -> None:
    """A new device's device.toml (its folder exists, the file does not)."""
    atomic_write(folder / DEVICE_FILE, text.encode("utf-8"))


def write_base_note(base: BaseRef, name: str, text: str) -> None:
    """A file for readers in a base folder (rebase-report.md); no command reads it."""
    check_name("file", name)
    atomic_write(base.path / name, text.encode("utf-8"))


def move_base_folder_in(staged: Path, target: Path) -> None:
    """A base folder assembled aside enters the store in one rename."""
    fsync_directory(staged)
    os.rename(staged, target)
    fsync_directory(target.parent)


def move_base_folder_out(folder: Path, aside: Path) -> None:
    """A base folder leaves the store in one rename, then is removed."""
    os.rename(folder, aside)
    fsync_directory(folder.parent)
    remove_tree(aside)


def write_base_files(base: BaseRef, header: Iterable[str]) -> None:
    """A new base's base.toml and an empty series headed by `header`, in its folder."""
    atomic_write(base.path / BASE_FILE, render_base(base).encode("utf-8"))
    atomic_write(base.path / SERIES_FILE, render_series(header, []))


# --------------------------------------------------------------------------- series


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
        if not _PATCH_NAME.match(name) or ".." in name:
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


# --------------------------------------------------------------------------- private patches

ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
_AGE_MAGIC = b"age-encryption.org/v1\n"
_PRIVATE_HEADER_KEYS = {"subject", "files", "recipients"}
_PRIVATE_COMMENT = (
    "# A private patch: what it is, in clear (patchtool checks it against the patch\n"
    "# whenever it decrypts it); then the patch itself, encrypted with age.\n"
)
_ARMOR_LINE = re.compile(rb"^[A-Za-z0-9+/]{1,64}={0,2}$")
_TEXT_LIMIT = 4096


@dataclass(frozen=True)
class PrivatePatch:
    """A private patch file: what a reviewer without the key sees (the subject,
    the files it changes, the names of its recipients: claims until a decryption
    confirms them) and the age file itself, armored."""

    subject: str
    files: tuple[str, ...]
    recipients: tuple[str, ...]
    armored: bytes  # from the BEGIN line through the END line and its newline


def parse_private_patch(path: Path, data: bytes) -> PrivatePatch:
    """Read a `*.patch.age` file's clear header and check its age armor's shape
    (without a key nothing more can be checked: age itself refuses a changed or
    cut-short file on decryption)."""
    start = data.find(b"\n" + ARMOR_BEGIN + b"\n")
    if start < 0:
        raise IntegrityError(
            f"{path}: is not a private patch: no '{ARMOR_BEGIN.decode()}' line after its header",
            hint="Restore the file from the store's history, or export it again with "
            "`patchtool patch`.",
        )
    header, armored = data[: start + 1], data[start + 1 :]
    try:
        table = tomllib.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise IntegrityError(f"{path}: its header is not valid TOML: {error}") from error
    _check_keys(path, table, _PRIVATE_HEADER_KEYS, "")

    def text(value: str, key: str) -> str:
        if (
            not value
            or len(value) > _TEXT_LIMIT
            or any(ord(c) < 32 or ord(c) == 127 for c in value)
        ):
            raise IntegrityError(
                f"{path}: {key} must be one line of 1 to {_TEXT_LIMIT} characters "
                "without control characters"
            )
        return value

    subject = text(_require(path, table, "subject", str), "subject")
    files = tuple(text(f, "each of files") for f in _string_list(path, table, "files", ""))
    recipients = tuple(
        _safe(path, "recipient name", r) for r in _string_list(path, table, "recipients", "")
    )
    lines = armored.split(b"\n")
    body = lines[1:-2]
    if lines[-2:] != [ARMOR_END, b""] or not body or not all(_ARMOR_LINE.match(b) for b in body):
        raise IntegrityError(
            f"{path}: its age armor is damaged (it must end with "
            f"'{ARMOR_END.decode()}' and hold base64 lines of at most 64 characters)",
            hint="Restore the file from the store's history, or export it again with "
            "`patchtool patch`.",
        )
    first = body[0].rstrip(b"=")
    try:
        head = base64.b64decode(first[: len(first) // 4 * 4])
    except binascii.Error:  # pragma: no cover - the line is base64 by the pattern above
        head = b""
    if not head.startswith(_AGE_MAGIC):
        raise IntegrityError(f"{path}: its armor does not hold an age file (no age header)")
    return PrivatePatch(subject, files, recipients, armored)


def render_private_patch(patch: PrivatePatch) -> bytes:
    header = {
        "subject": patch.subject,
        "files": list(patch.files),
        "recipients": list(patch.recipients),
    }
    return (_PRIVATE_COMMENT + render_toml(header) + "\n").encode("utf-8") + patch.armored


# --------------------------------------------------------------------------- the store


@dataclass(frozen=True)
class Store:
    root: Path

    def device_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / DEVICE_FILE).is_file())

    def device(self, name: str) -> DeviceConfig:
        check_name("device", name)
        path = _store_folder(self.root / name) / DEVICE_FILE
        if not (path.is_file() or path.is_symlink()):
            known = self.device_names()
            close = difflib.get_close_matches(name, known, n=1)
            suggestion = f" Did you mean {quoted(close[0])}?" if close else ""
            raise NotFoundError(
                f"unknown device {quoted(name)}: {path} does not exist.{suggestion}",
                hint="Known devices: " + (", ".join(known) if known else "none") + ".",
            )
        return parse_device(path, name)

    def bases(self, device: str) -> list[BaseRef]:
        folder = _store_folder(self.root / check_name("device", device))
        found = []
        for child in sorted(folder.iterdir()) if folder.is_dir() else []:
            # Dot folders are patchtool's own staging folders, never bases.
            if not child.name.startswith(".") and (child / BASE_FILE).exists():
                found.append(parse_base(_store_folder(child) / BASE_FILE, device, child.name))
        return sorted(found, key=_version_key)

    def resolve_base(self, device: str, selector: str | None) -> BaseRef:
        """Find a base by full commit id, a unique prefix of 7+ hex digits, its folder
        name or its version label; with no selector, the device's default base
        (device.toml's `default-base`), else its newest base."""
        config = self.device(device)
        bases = self.bases(device)
        listing = ", ".join(f"{b.base_id} ({b.commit[:12]}, {b.version})" for b in bases)
        if not bases:
            raise NotFoundError(
                f"device {quoted(device)} has no bases under {self.root / device}",
                hint="Create one with a base.toml and a series file.",
            )
        if selector is None:
            if config.default_base is None:
                return bases[-1]
            try:
                return self.resolve_base(device, config.default_base)
            except NotFoundError as error:
                raise IntegrityError(
                    f"{config.path}: default-base {quoted(config.default_base)} names no base of "
                    f"{quoted(device)}",
                    hint=error.hint,
                ) from error
        wanted = selector.strip()
        exact = [b for b in bases if wanted in (b.commit, b.base_id, b.version)]
        if len(exact) == 1:
            return exact[0]
        matches = exact
        if not matches and re.fullmatch(r"[0-9a-fA-F]{7,40}", wanted):
            matches = [b for b in bases if b.commit.startswith(wanted.lower())]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            raise NotFoundError(
                f"device {quoted(device)} has no base matching {quoted(selector)}",
                hint=f"Bases of {device}: {listing}. Give a full id, a unique prefix of "
                "7+ hex digits, a folder name or a version.",
            )
        raise UsageError(
            f"{quoted(selector)} is ambiguous for device {quoted(device)}: it matches "
            + ", ".join(b.base_id for b in matches),
            hint=f"Bases of {device}: {listing}. Give more digits.",
        )


def _version_key(base: BaseRef) -> tuple[int, Any, str]:
    from packaging.version import InvalidVersion, Version

    try:
        return (1, Version(base.version), base.base_id)
    except InvalidVersion:
        return (0, base.version, base.base_id)


def find_store(start: Path, explicit: Path | None) -> Store:
    """The store is `--store`, else `patches/` in the nearest folder above `start` that has one."""
    if explicit is not None:
        if not explicit.is_dir():
            raise NotFoundError(f"store folder {explicit} does not exist")
        return Store(explicit.resolve())
    for folder in (start.resolve(), *start.resolve().parents):
        if (folder / "patches").is_dir():
            # Found, not chosen: a linked patches/ (it may come with a pull request)
            # could send exports anywhere. --store names one explicitly.
            _store_folder(folder / "patches")
            return Store((folder / "patches").resolve())
    raise NotFoundError(
        f"no patches/ folder in {start} or above it",
        hint="Run patchtool from the repository that holds the store, or pass --store.",
    )


# --------------------------------------------------------------------------- writing a series


@dataclass
class ExportPlan:
    """What writing a base folder's series changes: each patch file (name ->
    the bytes the store is to hold, in series order) and `series` itself."""

    base: BaseRef
    files: dict[str, bytes]
    series: bytes
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    series_changed: bool = False

    @property
    def is_noop(self) -> bool:
        return not (self.new or self.changed or self.removed or self.series_changed)

    def describe(self) -> list[str]:
        lines = [f"new patch {n}" for n in self.new]
        lines += [f"changed patch {n}" for n in self.changed]
        lines += [f"removed patch {n}" for n in self.removed]
        if self.series_changed:
            lines.append(f"{SERIES_FILE} order or content differs")
        return lines


def plan_export(base: BaseRef, files: Iterable[tuple[str, bytes]]) -> ExportPlan:
    """Compare the series to write (file names and bytes, in order) with the folder."""
    series = parse_series(base)
    wanted = dict(files)
    series_bytes = render_series(series.header, list(wanted))
    check_series_length(base.path / SERIES_FILE, len(wanted), device_limits(base))
    plan = ExportPlan(base=base, files=wanted, series=series_bytes)
    for name, data in wanted.items():
        path = base.path / name
        if not (path.exists() or path.is_symlink()):
            plan.new.append(name)
        elif not holds_bytes(path, data):
            plan.changed.append(name)
        else:
            plan.unchanged.append(name)
    plan.removed = [n for n in series.names if n not in wanted]
    plan.series_changed = not holds_bytes(base.path / SERIES_FILE, series_bytes)
    return plan


STAGE_SUFFIX = ".patchtool-export"


def staging_folder(base_folder: Path) -> Path:
    return base_folder.with_name(f".{base_folder.name}{STAGE_SUFFIX}")


def recover_export(base_folder: Path) -> None:
    """Undo what a killed export left: a staging folder beside the base folder.
    With the atomic exchange it holds either the unfinished new state or the
    old one already swapped out; either way the base folder is whole. Only the
    fallback (no renameat2) can leave the base folder missing: then the
    staging folder's `.old` twin is the complete previous state."""
    stage = staging_folder(base_folder)
    aside = stage.with_name(stage.name + ".old")
    if not base_folder.exists() and aside.is_dir():
        os.rename(aside, base_folder)
    for leftover in (stage, aside):
        if not remove_tree(leftover):
            raise IntegrityError(
                f"could not remove {leftover}, left by an interrupted export",
                hint="Remove it by hand (the base folder beside it is whole), then run again.",
            )


def write_plan(plan: ExportPlan) -> None:
    """Write the plan so that the base folder changes all at once: the new state
    is assembled in a staging folder (unchanged files hard-linked) and swapped
    with the base folder in one atomic exchange. A kill or a full disk at any
    moment leaves the old folder or the new one, never a mix."""
    folder = plan.base.path
    recover_export(folder)
    stage = staging_folder(folder)
    try:
        stage.mkdir()
        for entry in sorted(folder.iterdir()):
            if entry.name in plan.removed or entry.name in plan.new or entry.name in plan.changed:
                continue
            if entry.is_file() and not entry.is_symlink():
                os.link(entry, stage / entry.name)
            elif entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, stage / entry.name, symlinks=True)
            else:
                shutil.copy2(entry, stage / entry.name, follow_symlinks=False)
        kill_point("export:staged-unchanged")
        for name in (*plan.new, *plan.changed):
            _write_new(stage / name, plan.files[name], folder / name)
            kill_point("export:wrote-patch")
        if plan.series_changed:
            (stage / SERIES_FILE).unlink(missing_ok=True)
            _write_new(stage / SERIES_FILE, plan.series, folder / SERIES_FILE)
        fsync_directory(stage)
        kill_point("export:before-exchange")
        exchange_paths(stage, folder)
        kill_point("export:after-exchange")
        fsync_directory(folder.parent)
    except OSError as error:
        remove_tree(stage)
        where = error.filename or stage
        raise IntegrityError(
            f"could not write the export of {folder}: {where}: {error.strerror or error}",
            hint="Check free disk space and that the store is writable; the store is unchanged.",
        ) from error
    remove_tree(stage)


def _write_new(path: Path, data: bytes, shown_as: Path) -> None:
    try:
        with open(path, "xb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(path, new_file_mode())
    except OSError as error:
        error.filename = str(shown_as)
        raise
