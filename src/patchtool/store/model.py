"""The store's data model: the frozen dataclasses its files are parsed into
(`DeviceConfig`, `BaseRef`, `PatchSeries`, ...), the limits with their
ceilings, the allowed git URLs, and the store's file names.

Reads no file: parsing and writing are files.py's, series.py's and
private_file.py's.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from patchtool.core.errors import UnsafeInputError, quoted

DEVICE_FILE = "device.toml"
BASE_FILE = "base.toml"
SERIES_FILE = "series"
PATCH_SUFFIX = ".patch"
PRIVATE_SUFFIX = ".patch.age"


@dataclass(frozen=True)
class BuildSettings:
    """What `build-wheel` needs to know about a device."""

    # The script build-wheel sources in the tree (build.env-script); None: the
    # device has none, and the build runs without one.
    env_script: str | None = None
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
    before it is read, a git base's tree by its objects' headers before it is
    listed or checked out, a page or download as it streams in.

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
    # What a patch's `copy from`/`rename from` sections make git read and write
    # again (each its source's size): in one patch, in a series.
    copy_patch_bytes: int = _limit(256 * _MIB, 2 * _GIB)
    copy_series_bytes: int = _limit(1 * _GIB, 8 * _GIB)
    # Patches one series lists.
    series_patches: int = _limit(1000, 10_000)
    # A released sdist, unpacked: all members, one member, how many members.
    sdist_bytes: int = _limit(256 * _MIB, 4 * _GIB)
    sdist_member_bytes: int = _limit(64 * _MIB, 1 * _GIB)
    sdist_members: int = _limit(50_000, 1_000_000)
    # A git base's tree as it would be checked out, measured from its objects'
    # headers before anything lists or checks it out: its files together, its
    # largest file, its paths (files, links and folders, a folder named twice
    # counted twice).
    git_base_bytes: int = _limit(256 * _MIB, 4 * _GIB)
    git_base_file_bytes: int = _limit(64 * _MIB, 1 * _GIB)
    git_base_paths: int = _limit(100_000, 2_000_000)
    # What the package index sends: one page of its simple API, one download.
    index_page_bytes: int = _limit(32 * _MIB, 512 * _MIB)
    download_bytes: int = _limit(256 * _MIB, 4 * _GIB)

    @property
    def tree_file_bytes(self) -> int:
        """The largest file a tree made within these limits can hold (a patch's
        text, a binary hunk's result, a base's file)."""
        return max(
            self.patch_bytes,
            self.binary_hunk_bytes,
            self.sdist_member_bytes,
            self.git_base_file_bytes,
        )

    @staticmethod
    def ceiling(key: str) -> int:
        """The most `[limits]` may set `key` (a field name) to."""
        return int(LIMIT_FIELDS[key].metadata["ceiling"])


LIMIT_FIELDS = {f.name: f for f in fields(PatchLimits)}
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
        try:
            parsed = urllib.parse.urlsplit(value)
            hostname = parsed.hostname
        except ValueError:  # Python's words for it vary by version ("Invalid IPv6 URL")
            return "cannot be read as a URL: a host in brackets must be an IPv6 address"
        scheme = parsed.scheme.lower()
        if scheme not in GitUrl.SCHEMES:
            return f"uses the scheme {quoted(scheme)}; allowed: https, ssh, git, file"
        netloc = parsed.netloc.rsplit("@", 1)
        if any(part.lstrip("[").startswith("-") for part in netloc):
            return "has a host or user that starts with '-'"
        if scheme != "file" and not hostname:
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
