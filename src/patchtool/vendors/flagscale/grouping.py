"""A set's files as a reviewable series: groups, subjects, bodies, authors.

Files group by component (their first path component, or the first two under
the backend's own package folder, e.g. `vllm/model_executor`), in a fixed
order. A group whose patch would be larger than the limit (import
--group-bytes) is split by its sub-folders, and a folder still too large into
consecutive parts, so that no patch is a megabyte nobody reviews. Each patch's
subject says what its files do ("add vllm_mlu/ (150 new files)", "change 3
files in csrc/"), from git's reading of them; its author and date are those
of the FlagScale commit that last touched its source files where the
checkout's history has it, else the body says plainly that they are unknown.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from patchtool.core.fsutil import check_name
from patchtool.vendors.flagscale.history import GitHistory, LastTouch
from patchtool.vendors.flagscale.layouts import ReadSet
from patchtool.vendors.flagscale.metadata import is_address
from patchtool.vendors.flagscale.model import (
    BACKENDS,
    DIFF_YAML,
    PLACEHOLDER_AUTHOR,
    PLACEHOLDER_DATE,
    UPSTREAM_STATUS,
    Authorship,
    BackendSet,
    FilePatch,
    PatchGroup,
    store_device,
    vendor_of,
)

_STATUS_LETTER = {"added": "A", "deleted": "D", "modified": "M", "renamed": "R"}


def component_of(backend: str, path: str) -> str:
    """The group a file belongs to: its first path component, or under the backend's
    package folder the first two (a file right in that folder groups as the folder)."""
    parts = path.split("/")
    known = BACKENDS.get(backend)
    for package in known.package_folders if known else ():
        depth = package.count("/") + 1
        if "/".join(parts[:depth]) == package and len(parts) > depth:
            return package if len(parts) == depth + 1 else "/".join(parts[: depth + 1])
    return parts[0]


def split_to_fit(files: Sequence[FilePatch], level: int, limit: int) -> list[list[FilePatch]]:
    """`files` (sorted by path, all below one folder of `level` components) as
    parts of at most `limit` bytes of patch: by their sub-folders first, small
    neighbours joined again, then a folder's files in consecutive runs. A single
    file larger than the limit is a part of its own."""
    if _size(files) <= limit or len(files) == 1:
        return [list(files)]
    buckets: dict[str, list[FilePatch]] = {}
    for file in files:
        parts = file.path.split("/")
        key = "/".join(parts[: level + 1]) if len(parts) > level + 1 else ""
        buckets.setdefault(key, []).append(file)
    if len(buckets) == 1 and "" not in buckets:
        return split_to_fit(files, level + 1, limit)  # one sub-folder: look deeper
    parts_found: list[list[FilePatch]] = []
    for key in sorted(buckets):
        if key:
            parts_found.extend(split_to_fit(buckets[key], level + 1, limit))
        else:
            parts_found.extend(_runs(buckets[key], limit))
    joined: list[list[FilePatch]] = []
    for part in parts_found:
        if joined and _size(joined[-1]) + _size(part) <= limit:
            joined[-1].extend(part)
        else:
            joined.append(list(part))
    return joined


def _runs(files: Sequence[FilePatch], limit: int) -> list[list[FilePatch]]:
    runs: list[list[FilePatch]] = []
    for file in files:
        if runs and _size(runs[-1]) + len(file.text) <= limit:
            runs[-1].append(file)
        else:
            runs.append([file])
    return runs


def _size(files: Sequence[FilePatch]) -> int:
    return sum(len(file.text) for file in files)


def subject_of(files: Sequence[FilePatch]) -> str:
    """What the files do, in a subject line: their common folder and what
    happens to them (new, removed, changed, renamed)."""
    if len(files) == 1:
        only = files[0]
        if only.status == "renamed":
            return f"rename {only.old_path} to {only.path}"
        verb = {"added": "add", "deleted": "remove", "modified": "change"}[only.status]
        return f"{verb} {only.path}"
    folder = _common_folder([f.path for f in files])
    place = f"{folder}/" if folder else "the top folder"
    count = len(files)
    statuses = [f.status for f in files]
    if all(s == "added" for s in statuses):
        return f"add {place} ({count} new files)"
    if all(s == "deleted" for s in statuses):
        return f"remove {count} files from {place}"
    if all(s == "modified" for s in statuses):
        return f"change {count} files in {place}"
    kinds = (
        ("added", "new"),
        ("modified", "changed"),
        ("renamed", "renamed"),
        ("deleted", "removed"),
    )
    counts = [f"{statuses.count(status)} {word}" for status, word in kinds if status in statuses]
    return f"update {place}: {', '.join(counts)} files"


def _common_folder(paths: Sequence[str]) -> str:
    folders = [path.split("/")[:-1] for path in paths]
    common: list[str] = []
    for parts in zip(*folders, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common)


def build_set(
    found: ReadSet,
    *,
    flagscale_device: str,
    backend: str,
    source: str,
    history: GitHistory,
    group_bytes: int,
) -> BackendSet:
    """The series of a set that was read: its groups with subjects, bodies and
    authors, and the set's values for the store."""
    notes = list(found.notes)
    device = check_name("device", store_device(flagscale_device))
    if device != flagscale_device:
        notes.insert(0, f"FlagScale's {flagscale_device} is patchtool's device {device}")
    vendor = vendor_of(flagscale_device)
    if vendor is None:
        notes.append(
            f"FlagScale says nothing of who makes {flagscale_device}: the device's vendor is "
            "written as unknown (set `vendor` in its device.toml)"
        )
    by_component: dict[str, list[FilePatch]] = {}
    for file in found.files:
        by_component.setdefault(component_of(backend, file.path), []).append(file)
    planned: list[tuple[str, list[FilePatch]]] = []
    for component in sorted(by_component):
        members = sorted(by_component[component], key=lambda file: file.path)
        level = component.count("/") + (0 if component == members[0].path else 1)
        planned.extend((component, part) for part in split_to_fit(members, level, group_bytes))
    subjects = [subject_of(files) for _, files in planned]
    groups: list[PatchGroup] = []
    for (component, files), subject in zip(planned, subjects, strict=True):
        same = [i for i, other in enumerate(subjects) if other == subject]
        if len(same) > 1:
            subject += f" (part {same.index(len(groups)) + 1} of {len(same)})"
        authorship = _authorship(found, files, source, history)
        groups.append(
            PatchGroup(
                component=component,
                subject=subject,
                body=_body(found, files, flagscale_device, backend, authorship),
                files=tuple(files),
                authorship=authorship,
            )
        )
    if found.encrypted_unread:
        count = len(found.encrypted_unread)
        skipped = [
            f"{count} encrypted patch file(s) under {source}, and {found.keys_note}: the set "
            "is not imported (pass the vendor's key with --private-key to read it)"
        ]
    else:
        skipped = []
    return BackendSet(
        device=device,
        flagscale_device=flagscale_device,
        backend=backend,
        source=source,
        layout=found.layout,
        vendor=vendor,
        version=found.claim.version,
        version_text=found.claim.version_text,
        commit=found.claim.commit,
        flagscale_commit=found.flagscale_commit,
        history_commit=found.history_commit,
        strip=found.strip,
        contact=found.contact,
        models=found.models,
        task=found.task,
        groups=tuple(groups),
        skipped=tuple(skipped + found.skipped),
        notes=tuple(notes),
        encrypted_unread=bool(found.encrypted_unread),
    )


def _authorship(
    found: ReadSet, files: Sequence[FilePatch], folder: str, history: GitHistory
) -> Authorship:
    sources = sorted({file.source for file in files})
    touches = [history.last_touch(folder, source) for source in sources]
    known = [touch for touch in touches if touch is not None]
    if known and len(known) == len(touches):
        newest = max(known, key=_when)
        which = (
            sources[touches.index(newest)]
            if len(sources) == 1
            else f"the newest of the commits that last changed its {len(sources)} source files"
        )
        if len(sources) == 1:
            which = f"the last to change {which}"
        return Authorship(
            newest.author,
            newest.date,
            True,
            f"Author and date: FlagScale commit {newest.commit}, {which}.",
        )
    if found.mail_author is not None and found.mail_date is not None:
        return Authorship(
            found.mail_author, found.mail_date, True, f"Author and date: from {sources[0]}."
        )
    why = (
        "FlagScale records neither outside git, and the checkout it was imported from has "
        "no git history of " + ("this file" if len(sources) == 1 else "these files")
    )
    if found.contact is not None and is_address(found.contact):
        author = f"{found.contact.split('@', 1)[0]} <{found.contact}>"
        return Authorship(
            author,
            PLACEHOLDER_DATE,
            False,
            f"Author: {DIFF_YAML}'s contact, an address only. Date unknown ({why}): "
            f"{PLACEHOLDER_DATE} stands for it.",
        )
    return Authorship(
        PLACEHOLDER_AUTHOR,
        PLACEHOLDER_DATE,
        False,
        f"Author and date unknown ({why}): {PLACEHOLDER_AUTHOR} and {PLACEHOLDER_DATE} "
        "stand for them.",
    )


def _when(touch: LastTouch) -> datetime:
    try:
        return datetime.fromisoformat(touch.date)
    except ValueError:
        return datetime.fromisoformat(PLACEHOLDER_DATE.replace("Z", "+00:00"))


def _body(
    found: ReadSet,
    files: Sequence[FilePatch],
    flagscale_device: str,
    backend: str,
    authorship: Authorship,
) -> str:
    lines = [
        f"{flagscale_device}'s changes to {backend} as FlagScale keeps them in its hardware",
        f"folder, from {found.origin}.",
        "",
        "Files (A new, M changed, R renamed, D removed):",
    ]
    for file in files:
        shown = f"{file.old_path} -> {file.path}" if file.old_path else file.path
        lines.append(f"  {_STATUS_LETTER[file.status]} {shown}")
    lines += [
        "",
        authorship.how,
        f"FlagScale commit: {found.flagscale_commit or 'not recorded'}",
        "",
        f"Upstream-Status: {UPSTREAM_STATUS}",
    ]
    return "\n".join(lines) + "\n"
