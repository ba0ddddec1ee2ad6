"""device.toml and base.toml, read and written.

Files are parsed once, here, into the frozen dataclasses of model.py. Unknown or
misspelled keys are errors that name the file, the key and the closest valid key
(patchtool.core.values).

A new device's device.toml and a new base's base.toml are written here, through
`fsutil.atomic_write`; so are notes for readers in a base folder, and a base
folder moves in or out of the store here, in one rename. This module never runs
git.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from patchtool.core.errors import IntegrityError, UnsafeInputError, quoted
from patchtool.core.fsutil import (
    atomic_write,
    check_name,
    check_relative_path,
    fsync_directory,
    read_regular_file,
    remove_tree,
)
from patchtool.core.values import (
    bounded_int,
    check_keys,
    did_you_mean,
    optional,
    project_names,
    require,
    safe_name,
    string_list,
    subtable,
)
from patchtool.store.model import (
    DEVICE_FILE,
    LIMIT_FIELDS,
    LIMITS_HINT,
    BaseOrigin,
    BaseRef,
    BuildSettings,
    DeviceConfig,
    GitSource,
    GitUrl,
    NamedRecipient,
    PatchLimits,
    PypiSource,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_FULL_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# The small files of a store (device.toml, base.toml, series) are read whole.
_SMALL_FILE_LIMIT = 1 << 20


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
_ORIGIN_TEXT_LIMIT = 4096


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


def store_folder(path: Path) -> Path:
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
    check_keys(path, data, _DEVICE_KEYS, "")
    build_table = subtable(path, data, "build")
    check_keys(path, build_table, _BUILD_KEYS, "build.")
    defaults = BuildSettings()
    build = BuildSettings(
        env_script=optional(path, build_table, "env-script", str, "build.", defaults.env_script),
        env_args=string_list(path, build_table, "env-args", "build."),
        target_device=optional(
            path, build_table, "target-device", str, "build.", defaults.target_device
        ),
        required_files=string_list(path, build_table, "required-files", "build."),
        env_timeout=bounded_int(
            path, build_table, "env-timeout", "build.", defaults.env_timeout, 1, 86400
        ),
        skip_build_requires=project_names(path, build_table, "skip-build-requires", "build."),
    )
    for required in (build.env_script, *build.required_files):
        check_relative_path(f"{path}: path", required)
    limits = _parse_limits(path, subtable(path, data, "limits"))
    return DeviceConfig(
        recipients=_parse_recipients(path, subtable(path, data, "private")),
        name=check_name("device", name),
        display_name=require(path, data, "display-name", str),
        vendor=require(path, data, "vendor", str),
        build=build,
        path=path,
        limits=limits,
        default_base=(
            safe_name(path, "default-base", require(path, data, "default-base", str))
            if "default-base" in data
            else None
        ),
    )


def _parse_limits(path: Path, table: Mapping[str, Any]) -> PatchLimits:
    """[limits]: each key a whole number from 1 to its ceiling."""
    check_keys(path, table, _LIMIT_KEYS, "limits.")
    values = {}
    for name, limit_field in LIMIT_FIELDS.items():
        key, ceiling = _key(name), PatchLimits.ceiling(name)
        value = table.get(key, limit_field.default)
        if isinstance(value, int) and not isinstance(value, bool) and value > ceiling:
            raise IntegrityError(
                f"{path}: limits.{key} = {value} is above its ceiling of {ceiling}",
                hint="The ceilings bound what a store, which may come with a pull request, "
                "can ask of the machine that reads it; no device.toml can raise them. "
                "Split the input instead.",
            )
        values[name] = bounded_int(path, table, key, "limits.", value, 1, ceiling)
    return PatchLimits(**values)


def _parse_recipients(path: Path, private: Mapping[str, Any]) -> tuple[NamedRecipient, ...]:
    check_keys(path, private, _PRIVATE_KEYS, "private.")
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


def parse_base(path: Path, device: str, base_id: str) -> BaseRef:
    store_folder(path.parent)
    data = _load_toml(path)
    check_keys(path, data, _BASE_KEYS, "")
    commit = require(path, data, "commit", str)
    if not _FULL_COMMIT.match(commit):
        raise IntegrityError(
            f"{path}: commit {quoted(commit)} is not a full 40-digit lower-case id"
        )
    source_table = require(path, data, "source", dict)
    kind = require(path, source_table, "type", str, "source.")
    source: PypiSource | GitSource
    if kind == "pypi":
        check_keys(path, source_table, _PYPI_KEYS, "source.")
        sha256 = require(path, source_table, "sha256", str, "source.")
        if not _SHA256.match(sha256):
            raise IntegrityError(f"{path}: source.sha256 is not 64 lower-case hex digits")
        filename = safe_name(
            path, "source.filename", require(path, source_table, "filename", str, "source.")
        )
        source = PypiSource(filename=filename, sha256=sha256)
    elif kind == "git":
        check_keys(path, source_table, _GIT_KEYS, "source.")
        url = require(path, source_table, "url", str, "source.")
        try:
            source = GitSource(url=GitUrl(url))
        except UnsafeInputError as error:
            raise UnsafeInputError(f"{path}: source.url: {error.message}", error.hint) from None
    else:
        suggestion = did_you_mean(kind, ["pypi", "git"])
        raise IntegrityError(f"{path}: unknown source.type {quoted(kind)}{suggestion}")
    return BaseRef(
        device=safe_name(path, "device", device),
        base_id=safe_name(path, "base folder", base_id),
        project=safe_name(path, "project", require(path, data, "project", str)),
        version=safe_name(path, "version", require(path, data, "version", str)),
        commit=commit,
        source=source,
        path=path.parent,
        origin=_parse_origin(path, data["origin"]) if "origin" in data else None,
    )


def _parse_origin(path: Path, table: object) -> BaseOrigin:
    if not isinstance(table, dict):
        raise IntegrityError(f"{path}: key 'origin' must be a table")
    check_keys(path, table, _ORIGIN_KEYS, "origin.")

    def text(value: str, key: str) -> str:
        if len(value) > _ORIGIN_TEXT_LIMIT or any(ord(c) < 32 and c not in "\n\t" for c in value):
            raise IntegrityError(
                f"{path}: key origin.{quoted(key)} must be text of at most "
                f"{_ORIGIN_TEXT_LIMIT} characters without control characters"
            )
        return value

    return BaseOrigin(
        source=text(require(path, table, "source", str, "origin."), "source"),
        commit=text(optional(path, table, "commit", str, "origin.", ""), "commit"),
        contact=text(optional(path, table, "contact", str, "origin.", ""), "contact"),
        models=tuple(text(v, "models") for v in string_list(path, table, "models", "origin.")),
        task=tuple(text(v, "task") for v in string_list(path, table, "task", "origin.")),
        note=text(optional(path, table, "note", str, "origin.", ""), "note"),
    )


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
