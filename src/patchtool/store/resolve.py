"""The store as a whole: finding it (`find_store`), its devices, its bases in
version order, and one base by full commit id, unique prefix, folder name or
version (`Store.resolve_base`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchtool.core.errors import IntegrityError, NotFoundError, UsageError, quoted
from patchtool.core.fsutil import check_name
from patchtool.core.values import did_you_mean
from patchtool.store.files import parse_base, parse_device, store_folder
from patchtool.store.model import BASE_FILE, DEVICE_FILE, BaseRef, DeviceConfig


@dataclass(frozen=True)
class Store:
    root: Path

    def device_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / DEVICE_FILE).is_file())

    def device(self, name: str) -> DeviceConfig:
        check_name("device", name)
        path = store_folder(self.root / name) / DEVICE_FILE
        if not (path.is_file() or path.is_symlink()):
            known = self.device_names()
            suggestion = did_you_mean(name, known)
            raise NotFoundError(
                f"unknown device {quoted(name)}: {path} does not exist{suggestion}",
                hint="Known devices: " + (", ".join(known) if known else "none") + ".",
            )
        return parse_device(path, name)

    def bases(self, device: str) -> list[BaseRef]:
        folder = store_folder(self.root / check_name("device", device))
        found = []
        for child in sorted(folder.iterdir()) if folder.is_dir() else []:
            # Dot folders are patchtool's own staging folders, never bases.
            if not child.name.startswith(".") and (child / BASE_FILE).exists():
                found.append(parse_base(store_folder(child) / BASE_FILE, device, child.name))
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
            store_folder(folder / "patches")
            return Store((folder / "patches").resolve())
    raise NotFoundError(
        f"no patches/ folder in {start} or above it",
        hint="Run patchtool from the repository that holds the store, or pass --store.",
    )
