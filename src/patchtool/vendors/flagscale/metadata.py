"""FlagScale's metadata files: a backend folder's diff.yaml and the tree's
patch_history.yaml, parsed into frozen values; what they say of a set's base.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from packaging.version import InvalidVersion, Version

from patchtool.core.errors import IntegrityError, quoted
from patchtool.core.fsutil import check_name
from patchtool.core.values import did_you_mean
from patchtool.vendors.flagscale.folders import Folder
from patchtool.vendors.flagscale.model import (
    BACKENDS,
    DIFF_YAML,
    FLAGSCALE_BACKEND,
    HISTORY_YAML,
    YAML_LIMIT,
)
from patchtool.vendors.flagscale.yamlvalues import (
    full_commit,
    items,
    line,
    load_yaml,
    mapping,
    string,
    string_keys,
    string_list,
)

_EMAIL = re.compile(r"^[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
DIFF_KEYS = (
    "backends_commit",
    "backends_version",
    "commit",
    "contact",
    "device_type",
    "models",
    "task",
)


def is_address(text: str) -> bool:
    return _EMAIL.match(text) is not None


@dataclass(frozen=True)
class DiffInfo:
    """diff.yaml, parsed."""

    device_type: str | None
    flagscale_commit: str
    backends_commit: Mapping[str, str]
    backends_version: Mapping[str, str]
    contact: str | None
    models: tuple[str, ...]
    task: tuple[str, ...]


def parse_diff_yaml(data: bytes, source: str) -> DiffInfo:
    loaded = load_yaml(data, source)
    if not isinstance(loaded, dict):
        raise IntegrityError(f"{source}: expected a mapping of {', '.join(DIFF_KEYS)}")
    table = string_keys(loaded, source, "")
    for name in table:
        if name not in DIFF_KEYS:
            raise IntegrityError(
                f"{source}: unknown key {quoted(name)}" + did_you_mean(name, list(DIFF_KEYS)),
                hint=f"{DIFF_YAML} holds {', '.join(DIFF_KEYS)}.",
            )
    commit = table.get("commit")
    if commit is None:
        raise IntegrityError(f"{source}: has no commit (FlagScale's base commit)")
    device_type = table.get("device_type")
    if device_type is not None:
        device_type = check_name(
            f"{source}: device_type", string(device_type, source, "device_type")
        )
    backends_commit = {
        check_name(f"{source}: backends_commit key", name): full_commit(
            value, source, f"backends_commit.{name}"
        )
        for name, value in string_keys(
            mapping(table.get("backends_commit"), source, "backends_commit"),
            source,
            "backends_commit",
        ).items()
    }
    backends_version = {
        check_name(f"{source}: backends_version key", name): line(
            string(value, source, f"backends_version.{name}").strip(),
            source,
            f"backends_version.{name}",
        )
        for name, value in string_keys(
            mapping(table.get("backends_version"), source, "backends_version"),
            source,
            "backends_version",
        ).items()
    }
    contact_value = table.get("contact")
    contact = None
    if contact_value is not None:
        contact = line(string(contact_value, source, "contact"), source, "contact").strip()
        contact = contact or None
    models = tuple(
        line(item, source, "models").strip()
        for item in string_list(table.get("models"), source, "models")
    )
    task = tuple(
        check_name(f"{source}: task", item)
        for item in string_list(table.get("task"), source, "task")
    )
    return DiffInfo(
        device_type=device_type,
        flagscale_commit=full_commit(commit, source, "commit"),
        backends_commit=backends_commit,
        backends_version=backends_version,
        contact=contact,
        models=models,
        task=task,
    )


@dataclass(frozen=True)
class BaseClaim:
    """What diff.yaml says a set's base is."""

    version: str | None  # a release version, normalized
    version_text: str | None  # the version as written when it is not a release ("main")
    commit: str | None


def backend_base(info: DiffInfo, backend: str, source: str, notes: list[str]) -> BaseClaim:
    raw = info.backends_version.get(backend)
    version = release_version(raw, backend, source, notes)
    commit = info.backends_commit.get(backend)
    if backend == FLAGSCALE_BACKEND and commit is None:
        commit = info.flagscale_commit
        notes.append(f"FlagScale's own patch applies to FlagScale at {DIFF_YAML}'s commit")
    known = BACKENDS.get(backend)
    if known is not None and known.sdist and version and commit:
        notes.append(
            f"{DIFF_YAML} names {backend} {version} and commit {commit}: the patch was made "
            f"on that commit, which need not be the {version} release"
        )
    if known is None or known.sdist is None:
        notes.append(
            f"{backend} publishes no sdist patchtool takes as a base: its base is taken from git"
            + (f" (commit {commit})" if commit else "")
        )
    if version is None and commit is None:
        notes.append(f"{DIFF_YAML} names neither a {backend} release nor a commit")
    return BaseClaim(version, raw if version is None else None, commit)


def release_version(value: str | None, backend: str, source: str, notes: list[str]) -> str | None:
    if value is None:
        return None
    try:
        normalized = str(Version(value))
    except InvalidVersion:
        notes.append(
            f"{backend} version {quoted(value)} in {DIFF_YAML} is a branch or tag, not a "
            "release: the base must be a commit"
        )
        return None
    check_name(f"{source}: {backend} version", normalized)
    if normalized != value:
        notes.append(f"{backend} version {quoted(value)} in {DIFF_YAML} is read as {normalized}")
    return normalized


# --------------------------------------------------------------------------- patch_history.yaml


@dataclass(frozen=True)
class History:
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


def read_history(hardware: Folder) -> History:
    kinds = dict(hardware.entries())
    if HISTORY_YAML not in kinds:
        return History()
    source = hardware.child(HISTORY_YAML)
    loaded = load_yaml(hardware.read(HISTORY_YAML, YAML_LIMIT), source)
    if loaded is None:
        return History()
    entries: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {}
    for device, tasks in string_keys(mapping(loaded, source, ""), source, "").items():
        check_name(f"{source}: device", device)
        entries[device] = {}
        for task, keys in string_keys(mapping(tasks, source, device), source, device).items():
            check_name(f"{source}: task under {device}", task)
            where = f"{device}.{task}"
            entries[device][task] = {}
            for key, commits in string_keys(mapping(keys, source, where), source, where).items():
                for part in key.split("+"):
                    check_name(f"{source}: backend under {where}", part)
                entries[device][task][key] = tuple(
                    full_commit(item, source, f"{where}.{key}")
                    for item in items(commits, source, f"{where}.{key}")
                )
    return History(entries)
