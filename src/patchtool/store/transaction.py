"""A base folder's series and patch files written as one atomic change.

`plan_export` compares what is to be written with the folder; `write_plan`
assembles the new state in a staging folder beside it (unchanged files
hard-linked) and swaps it in with one exchange, so a kill or a full disk leaves
the old folder or the new one, never a mix; `recover_export` settles what a
killed export left. `write_plan` names each of its steps to the caller as it
reaches it (`reached`): the export pipeline (series/pipeline.py) makes them its
kill points, named for the command that exports.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from patchtool.core.errors import IntegrityError
from patchtool.core.fsutil import exchange_paths, fsync_directory, new_file_mode, remove_tree
from patchtool.store.model import SERIES_FILE, BaseRef
from patchtool.store.series import (
    check_series_length,
    device_limits,
    holds_bytes,
    parse_series,
    render_series,
)


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
    listed: tuple[str, ...] = ()  # the names `series` lists now, in its order
    # `series` is not as patchtool writes its own lines (spacing, comments among
    # the names), whatever else changes
    reformatted: bool = False

    @property
    def is_noop(self) -> bool:
        return not (self.new or self.changed or self.removed or self.series_changed)

    def describe(self) -> list[str]:
        lines = [f"new patch {n}" for n in self.new]
        lines += [f"changed patch {n}" for n in self.changed]
        lines += [f"removed patch {n}" for n in self.removed]
        if self.series_changed:
            lines += self._series_changes()
        return lines

    def _series_changes(self) -> list[str]:
        """What changes in `series` beyond the patches added and removed (which the
        lines before name): each kept patch that moves, and its comment lines."""
        wanted = list(self.files)
        kept_before = [n for n in self.listed if n in self.files]
        kept_after = [n for n in wanted if n in self.listed]
        lines = [
            f"{SERIES_FILE}: {name} moves from position {self.listed.index(name) + 1} to "
            f"{wanted.index(name) + 1}"
            for before, name in zip(kept_before, kept_after, strict=True)
            if before != name
        ]
        if self.reformatted or not (lines or self.new or self.removed):
            lines.append(f"{SERIES_FILE}: rewritten as patchtool writes it")
        return lines


def plan_export(base: BaseRef, files: Iterable[tuple[str, bytes]]) -> ExportPlan:
    """Compare the series to write (file names and bytes, in order) with the folder."""
    series = parse_series(base)
    wanted = dict(files)
    series_bytes = render_series(series.header, list(wanted))
    check_series_length(base.path / SERIES_FILE, len(wanted), device_limits(base))
    plan = ExportPlan(base=base, files=wanted, series=series_bytes, listed=tuple(series.names))
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
    plan.reformatted = plan.series_changed and not holds_bytes(
        base.path / SERIES_FILE, render_series(series.header, series.names)
    )
    return plan


STAGE_SUFFIX = ".patchtool-export"
# The steps write_plan names to its caller, in order (`reached`).
WRITE_STEPS = ("staged-unchanged", "wrote-patch", "before-exchange", "after-exchange")


def export_stage(base_folder: Path) -> Path:
    """The stage of a base folder's export: the folder its new state is assembled in."""
    return base_folder.with_name(f".{base_folder.name}{STAGE_SUFFIX}")


def export_leftovers(device_folder: Path) -> list[Path]:
    """The stages a killed export left in a device's folder (`.<base>.patchtool-export`
    and its `.old` twin): patchtool's own, never base folders, and removed by the
    next export of that base (`recover_export`). `check` names them, under the
    store's lock, where no export runs."""
    if not device_folder.is_dir() or device_folder.is_symlink():
        return []
    return sorted(
        child
        for child in device_folder.iterdir()
        if child.name.startswith(".")
        and child.name.endswith((STAGE_SUFFIX, STAGE_SUFFIX + ".old"))
        and (child.is_dir() or child.is_symlink())
    )


def recover_export(base_folder: Path) -> None:
    """Undo what a killed export left: a stage beside the base folder. With the
    atomic exchange it holds either the unfinished new state or the old one
    already swapped out; either way the base folder is whole. Only the fallback
    (no renameat2) can leave the base folder missing: then the stage's `.old`
    twin is the complete previous state."""
    stage = export_stage(base_folder)
    aside = stage.with_name(stage.name + ".old")
    if not base_folder.exists() and aside.is_dir():
        os.rename(aside, base_folder)
    for leftover in (stage, aside):
        if not remove_tree(leftover):
            raise IntegrityError(
                f"could not remove {leftover}, left by an interrupted export",
                hint="Remove it by hand (the base folder beside it is whole), then run again.",
            )


def write_plan(plan: ExportPlan, reached: Callable[[str], None]) -> None:
    """Write the plan so that the base folder changes all at once: the new state
    is assembled in a stage (unchanged files hard-linked) and swapped with the
    base folder in one atomic exchange. A kill or a full disk at any moment
    leaves the old folder or the new one, never a mix. `reached` is called with
    each of WRITE_STEPS as the write gets there."""
    folder = plan.base.path
    recover_export(folder)
    stage = export_stage(folder)
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
        reached("staged-unchanged")
        for name in (*plan.new, *plan.changed):
            _write_new(stage / name, plan.files[name], folder / name)
            reached("wrote-patch")
        if plan.series_changed:
            (stage / SERIES_FILE).unlink(missing_ok=True)
            _write_new(stage / SERIES_FILE, plan.series, folder / SERIES_FILE)
        fsync_directory(stage)
        reached("before-exchange")
        exchange_paths(stage, folder)
        reached("after-exchange")
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
