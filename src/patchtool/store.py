"""The patch store: `patches/<device>/device.toml` and one folder per upstream base.

    patches/<device>/device.toml          the device's settings
    patches/<device>/<base-id>/base.toml  the upstream the series applies to
    patches/<device>/<base-id>/series     patch order, one file name a line
    patches/<device>/<base-id>/*.patch    git format-patch mbox files

Files are parsed once, here, into frozen dataclasses. Unknown or misspelled keys
are errors that name the file, the key and the closest valid key. This module
reads the store and writes only through `fsutil.atomic_write`; it never runs git.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import IntegrityError, NotFoundError, UsageError
from .fsutil import check_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEVICE_FILE = "device.toml"
BASE_FILE = "base.toml"
SERIES_FILE = "series"
PATCH_SUFFIX = ".patch"
_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------- data model


@dataclass(frozen=True)
class BuildSettings:
    """What `build-wheel` needs to know about a device."""

    env_script: str = "env.sh"
    env_args: tuple[str, ...] = ()
    target_device: str = "empty"
    required_files: tuple[str, ...] = ()
    env_timeout: int = 300  # seconds env.sh may run before it is ended (exit 8)


@dataclass(frozen=True)
class DeviceConfig:
    name: str
    display_name: str
    vendor: str
    build: BuildSettings
    path: Path


@dataclass(frozen=True)
class PypiSource:
    """A released sdist, found on the user's package index by file name, checked by hash."""

    filename: str
    sha256: str
    kind: str = "pypi"


@dataclass(frozen=True)
class GitSource:
    """A git repository (path or URL) holding `BaseRef.commit`."""

    url: str
    kind: str = "git"


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

    @property
    def label(self) -> str:
        return f"{self.project} {self.version}"


@dataclass(frozen=True)
class SeriesEntry:
    name: str
    line: int


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

_DEVICE_KEYS = {"display-name", "vendor", "build"}
_BUILD_KEYS = {"env-script", "env-args", "target-device", "required-files", "env-timeout"}
_BASE_KEYS = {"project", "version", "commit", "source"}
_PYPI_KEYS = {"type", "filename", "sha256"}
_GIT_KEYS = {"type", "url"}


def _check_keys(path: Path, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(allowed), n=1)
            suggestion = f"; did you mean {close[0]!r}?" if close else ""
            valid = ", ".join(sorted(allowed))
            raise IntegrityError(
                f"{path}: unknown key {where}{key!r}{suggestion}",
                hint=f"Valid keys here: {valid}.",
            )


def _require(path: Path, table: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in table:
        raise IntegrityError(f"{path}: missing key {where}{key!r}")
    value = table[key]
    if not isinstance(value, kind):
        raise IntegrityError(
            f"{path}: key {where}{key!r} must be a {kind.__name__}, not {type(value).__name__}"
        )
    return value


def _string_list(path: Path, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise IntegrityError(f"{path}: key {where}{key!r} must be a list of strings")
    return tuple(value)


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
            f"{path}: key {where}{key!r} must be a whole number from {low} to {high}, "
            f"not {value!r}"
        )
    return value


def _load_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise NotFoundError(f"{path} does not exist") from error
    try:
        return tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise IntegrityError(f"{path}: not valid TOML: {error}") from error


def parse_device(path: Path, name: str) -> DeviceConfig:
    data = _load_toml(path)
    _check_keys(path, data, _DEVICE_KEYS, "")
    build_table = data.get("build", {})
    if not isinstance(build_table, dict):
        raise IntegrityError(f"{path}: [build] must be a table")
    _check_keys(path, build_table, _BUILD_KEYS, "build.")
    defaults = BuildSettings()
    build = BuildSettings(
        env_script=str(build_table.get("env-script", defaults.env_script)),
        env_args=_string_list(path, build_table, "env-args", "build."),
        target_device=str(build_table.get("target-device", defaults.target_device)),
        required_files=_string_list(path, build_table, "required-files", "build."),
        env_timeout=_bounded_int(
            path, build_table, "env-timeout", "build.", defaults.env_timeout, 1, 86400
        ),
    )
    for required in (build.env_script, *build.required_files):
        if required.startswith("/") or ".." in Path(required).parts:
            raise IntegrityError(f"{path}: path {required!r} must be relative and stay inside")
    return DeviceConfig(
        name=name,
        display_name=_require(path, data, "display-name", str),
        vendor=_require(path, data, "vendor", str),
        build=build,
        path=path,
    )


def parse_base(path: Path, device: str, base_id: str) -> BaseRef:
    data = _load_toml(path)
    _check_keys(path, data, _BASE_KEYS, "")
    commit = _require(path, data, "commit", str)
    if not _FULL_COMMIT.match(commit):
        raise IntegrityError(f"{path}: commit {commit!r} is not a full 40-digit lower-case id")
    source_table = _require(path, data, "source", dict)
    kind = _require(path, source_table, "type", str, "source.")
    source: PypiSource | GitSource
    if kind == "pypi":
        _check_keys(path, source_table, _PYPI_KEYS, "source.")
        sha256 = _require(path, source_table, "sha256", str, "source.")
        if not _SHA256.match(sha256):
            raise IntegrityError(f"{path}: source.sha256 is not 64 lower-case hex digits")
        filename = _require(path, source_table, "filename", str, "source.")
        if "/" in filename or filename in ("", ".", ".."):
            raise IntegrityError(f"{path}: source.filename {filename!r} must be a plain name")
        source = PypiSource(filename=filename, sha256=sha256)
    elif kind == "git":
        _check_keys(path, source_table, _GIT_KEYS, "source.")
        source = GitSource(url=_require(path, source_table, "url", str, "source."))
    else:
        close = difflib.get_close_matches(kind, ["pypi", "git"], n=1)
        suggestion = f"; did you mean {close[0]!r}?" if close else ""
        raise IntegrityError(f"{path}: unknown source.type {kind!r}{suggestion}")
    return BaseRef(
        device=device,
        base_id=base_id,
        project=_require(path, data, "project", str),
        version=_require(path, data, "version", str),
        commit=commit,
        source=source,
        path=path.parent,
    )


def render_base(base: BaseRef) -> str:
    lines = [
        f"project = {toml_string(base.project)}",
        f"version = {toml_string(base.version)}",
        f"commit = {toml_string(base.commit)}",
        "",
        "[source]",
        f"type = {toml_string(base.source.kind)}",
    ]
    if isinstance(base.source, PypiSource):
        lines.append(f"filename = {toml_string(base.source.filename)}")
        lines.append(f"sha256 = {toml_string(base.source.sha256)}")
    else:
        lines.append(f"url = {toml_string(base.source.url)}")
    return "\n".join(lines) + "\n"


def toml_string(value: str) -> str:
    """`value` as a quoted TOML basic string."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# --------------------------------------------------------------------------- series


def parse_series(base: BaseRef) -> PatchSeries:
    path = base.path / SERIES_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError as error:
        raise NotFoundError(
            f"{path} does not exist",
            hint="Every base folder needs a series file (it may list no patches).",
        ) from error
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IntegrityError(f"{path}: not UTF-8 text ({error})") from error
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
        if "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
            raise IntegrityError(
                f"{path}:{number}: {name!r} is not a plain patch file name",
                hint="series lists file names in its own folder, one a line.",
            )
        if name in seen:
            raise IntegrityError(
                f"{path}:{number}: {name!r} is listed twice (first on line {seen[name]})"
            )
        seen[name] = number
        if not (base.path / name).is_file():
            raise NotFoundError(
                f"{path}:{number}: patch file {name!r} is missing from {base.path}",
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


def series_digest(series: PatchSeries) -> str:
    """A hash over the patch names and bytes, in order: the series' identity."""
    digest = hashlib.sha256()
    for path in series.paths():
        digest.update(path.name.encode("utf-8") + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


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
        path = self.root / name / DEVICE_FILE
        if not path.is_file():
            known = self.device_names()
            close = difflib.get_close_matches(name, known, n=1)
            suggestion = f" Did you mean {close[0]!r}?" if close else ""
            raise NotFoundError(
                f"unknown device {name!r}: {path} does not exist.{suggestion}",
                hint="Known devices: " + (", ".join(known) if known else "none") + ".",
            )
        return parse_device(path, name)

    def bases(self, device: str) -> list[BaseRef]:
        folder = self.root / check_name("device", device)
        found = []
        for child in sorted(folder.iterdir()) if folder.is_dir() else []:
            # Dot folders are patchtool's own staging folders, never bases.
            if not child.name.startswith(".") and (child / BASE_FILE).is_file():
                found.append(parse_base(child / BASE_FILE, device, child.name))
        return sorted(found, key=_version_key)

    def resolve_base(self, device: str, selector: str | None) -> BaseRef:
        """Find a base by full commit id, a unique prefix of 7+ hex digits, its folder
        name or its version label; with no selector, the newest base."""
        self.device(device)
        bases = self.bases(device)
        listing = ", ".join(f"{b.base_id} ({b.commit[:12]}, {b.version})" for b in bases)
        if not bases:
            raise NotFoundError(
                f"device {device!r} has no bases under {self.root / device}",
                hint="Create one with a base.toml and a series file.",
            )
        if selector is None:
            return bases[-1]
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
                f"device {device!r} has no base matching {selector!r}",
                hint=f"Bases of {device}: {listing}. Give a full id, a unique prefix of "
                "7+ hex digits, a folder name or a version.",
            )
        raise UsageError(
            f"{selector!r} is ambiguous for device {device!r}: it matches "
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
            return Store((folder / "patches").resolve())
    raise NotFoundError(
        f"no patches/ folder in {start} or above it",
        hint="Run patchtool from the repository that holds the store, or pass --store.",
    )
