"""`import --flagscale`: a FlagScale `hardware/` tree into the store.

flagscale.py reads the tree (every layout, decryption in memory) into typed
`BackendSet`s; this module turns each into a device and a base of the store
through the import that `import` runs (`changes.import_changes_locked`: this
module holds the device's locks, per device), so every patch passes the same
safety checks and is written by the export pipeline that `patch` uses,
byte-stable:

- the device is created when the store lacks it (display name: FlagScale's
  folder name; vendor: the part of that name before the first `_`);
- the base is the backend's git commit that diff.yaml pins (`backends_commit`),
  fetched from the backend's repository (`--git-url NAME=URL` overrides it, for
  a mirror or a local clone). When that commit cannot be fetched (no network,
  or a commit the repository no longer has), the released sdist of
  `backends_version` is taken instead and base.toml's `[origin] note` says so;
- each component group becomes one patch, with the author and date that
  diff.yaml and patch_history.yaml give (or flagscale.py's stated placeholder),
  a body naming its FlagScale sources and an `Upstream-Status:` trailer;
- diff.yaml's contact, models and task are kept in base.toml's `[origin]`;
- a group made from FlagScale's encrypted files (read with the vendor's RSA
  key) becomes a private patch: its commit gets the `Patchtool-Private: yes`
  trailer, so the export encrypts it with age to the device's recipients
  (`--recipient NAME=KEY` for a new device). Its plaintext is written only
  into the build folder (the mails the importer reads sit in a scratch folder
  there, `<dir>/<device>/.patchtool-scratch/`, locked while the run lives and
  removed when it ends), never into the temporary folder or the store.

Each device and base is imported whole or not at all (the import removes
what it created when a change fails); one that fails does not stop the others.
The result is one row per device and backend for the summary table.
This module never prints; it reports through a `Reporter`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.header import Header
from pathlib import Path

from patchtool.commands.importing.changes import ImportOptions, import_changes_locked
from patchtool.commands.jobs import CacheJob
from patchtool.core.errors import (
    ChangeConflict,
    ExitCode,
    NetworkError,
    NotFoundError,
    PatchtoolError,
    UsageError,
    quoted,
)
from patchtool.core.gitops import Git
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.core.scratch import scratch_folder
from patchtool.series.privacy import PRIVATE_TRAILER
from patchtool.series.safety import check_size
from patchtool.sources.bases import ensure_base, parse_onto, resolve_new_base
from patchtool.store.model import DEFAULT_LIMITS, DEVICE_FILE, BaseOrigin, GitUrl, NamedRecipient
from patchtool.trees.applying import TrialApply, checkout_base, describe_trial, trial_apply
from patchtool.trees.staging import device_scratch
from patchtool.vendors.flagscale import BackendSet, PatchGroup, read_flagscale, render_plan

# Where each backend's history lives (FlagScale names the backends by these folders).
BACKEND_REPOSITORIES: Mapping[str, str] = {
    "vllm": "https://github.com/vllm-project/vllm.git",
    "sglang": "https://github.com/sgl-project/sglang.git",
    "Megatron-LM": "https://github.com/NVIDIA/Megatron-LM.git",
    "FlagScale": "https://github.com/FlagOpen/FlagScale.git",
}
REASON_LINES = 12  # lines of a failure's message kept in the summary's details


@dataclass(frozen=True, kw_only=True)
class MigrateOptions(CacheJob):
    build_dir: Path
    root: Path  # a FlagScale checkout, or its hardware/ folder
    device: str | None = None
    backend: str | None = None
    private_key: Path | None = None
    dry_run: bool = False
    three_way: bool = False
    git_urls: Mapping[str, str] = field(default_factory=dict)  # backend -> URL or path
    wait: bool = True
    # Recipients of the private patches (FlagScale's encrypted files) of a new device.
    recipients: tuple[NamedRecipient, ...] = ()


@dataclass
class MigrateRow:
    """One line of the summary: a device and backend of the FlagScale tree."""

    device: str
    backend: str
    base: str = "-"
    files: int = 0
    patches: int = 0
    clean: int = 0  # files that applied as they are
    three_way: int = 0  # files that needed a 3-way merge
    failed: int = 0  # files that did not apply, or every file of a set that failed
    reason: str = ""  # why the set failed or was skipped ("" when imported)
    onto: tuple[str, str | None] | None = None  # the base chosen: --onto text, label
    exit_code: int = 0  # the failure's exit code (errors.ExitCode)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.reason


@dataclass
class MigrateResult:
    rows: list[MigrateRow]
    plan: list[str]  # what --dry-run prints (also filled on a real run)

    @property
    def failed(self) -> list[MigrateRow]:
        return [row for row in self.rows if not row.ok]


def migrate(options: MigrateOptions, reporter: Reporter) -> MigrateResult:
    """Read the FlagScale tree, then import every device and backend found."""
    for name, url in options.git_urls.items():
        GitUrl(url)  # refused here, before anything is read, if it is not a safe address
        if name not in BACKEND_REPOSITORIES:
            known = ", ".join(BACKEND_REPOSITORIES)
            raise UsageError(f"--git-url {name}=…: unknown backend {quoted(name)} (known: {known})")
    sets = read_flagscale(options.root, options.device, options.backend, options.private_key)
    if not sets:
        raise NotFoundError(
            f"no device and backend of {options.root} matches "
            f"{_filter_text(options.device, options.backend)}",
            hint="`patchtool import --flagscale PATH --dry-run` lists what is there.",
        )
    plan = render_plan(sets)
    if options.dry_run:
        return MigrateResult([_planned_row(found) for found in sets], plan)
    rows = []
    for found in sets:
        reporter.step(f"importing {found.source} as {found.device}")
        rows.append(_import_set(found, options, reporter))
    return MigrateResult(rows, plan)


def render_summary(rows: list[MigrateRow]) -> list[str]:
    """The summary table, fixed columns, one row per device and backend, then the
    reasons of the rows that failed or were skipped."""
    header = ("device", "backend", "base", "files", "patches", "clean", "3-way", "failed")
    table = [header] + [
        (
            row.device,
            row.backend,
            row.base,
            str(row.files),
            str(row.patches),
            str(row.clean),
            str(row.three_way),
            str(row.failed),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    for row in rows:
        if row.reason:
            lines.append(f"{row.device}/{row.backend}: {row.reason}")
            lines.extend(f"  {detail}" for detail in row.details)
    return lines


# --------------------------------------------------------------------------- one set


def _planned_row(found: BackendSet) -> MigrateRow:
    return MigrateRow(
        found.device,
        found.backend,
        base=_base_label(found),
        files=found.files,
        patches=len(found.groups),
        reason="" if found.groups else _nothing_reason(found),
    )


def _import_set(found: BackendSet, options: MigrateOptions, reporter: Reporter) -> MigrateRow:
    row = _planned_row(found)
    if not found.groups:
        row.failed = 0
        return row
    device_file = options.store.root / found.device / DEVICE_FILE
    if any(g.encrypted for g in found.groups) and not (
        options.recipients
        if not device_file.is_file()
        else options.store.device(found.device).recipients
    ):
        row.reason = (
            "its encrypted patches become private patches, encrypted to the device's "
            "recipients, and none are named"
        )
        row.details = [
            "pass --recipient NAME=AGE-OR-SSH-PUBLIC-KEY for a new device, or add "
            f"[private.recipients] to {device_file}"
        ]
        row.failed = row.files
        row.exit_code = int(ExitCode.USAGE)
        return row
    # In the build folder, never the shared temporary folder: decrypted patches
    # are written here in clear (a killed run's folder is removed by the next,
    # see trees.staging.recover_interrupted).
    device_dir = options.build_dir / found.device
    device_dir.mkdir(parents=True, exist_ok=True)
    try:
        with (
            device_locks(
                options.build_dir,
                options.store.root,
                found.device,
                reporter,
                writes_store=True,
                wait=options.wait,
            ),
            # Locked while this run lives: recovery (the unpatch that import
            # runs included) removes only the scratch folders of dead runs.
            scratch_folder(device_scratch(device_dir), "flagscale-") as scratch,
        ):
            mails = tuple(
                _write_mail(scratch / f"{number:04d}.patch", group, found)
                for number, group in enumerate(found.groups, 1)
            )
            try:
                _import_locked(found, options, reporter, mails, row)
            except ChangeConflict as error:
                row.exit_code = int(error.exit_code)
                _report_conflicts(found, options, reporter, row, error, scratch)
    except PatchtoolError as error:
        row.reason = error.message.splitlines()[0]
        row.failed = row.files
        row.exit_code = int(error.exit_code)
        row.details = error.message.splitlines()[1 : 1 + REASON_LINES]
    return row


def _import_locked(
    found: BackendSet,
    options: MigrateOptions,
    reporter: Reporter,
    mails: tuple[Path, ...],
    row: MigrateRow,
) -> None:
    onto, label, note = _choose_base(found, options, reporter)
    row.onto = (onto, label)
    result = import_changes_locked(
        ImportOptions(
            store=options.store,
            build_dir=options.build_dir,
            device=found.device,
            cache=options.cache,
            inputs=mails,
            strip=1,
            create=not (options.store.root / found.device / DEVICE_FILE).is_file(),
            recipients=options.recipients,
            keyring=options.keyring,
            display_name=found.flagscale_device,
            vendor=found.flagscale_device.split("_", 1)[0],
            onto=onto,
            version_label=label,
            archive_paths=options.archive_paths,
            three_way=options.three_way,
            origin=BaseOrigin(
                source=f"FlagScale {found.source}",
                commit=found.flagscale_commit or "",
                contact=found.contact or "",
                models=found.models,
                task=found.task,
                note=note,
            ),
        ),
        reporter,
    )
    row.base = result.base.base_id
    merged = {path for change in result.three_way for path in change.paths}
    row.three_way = len(merged)
    row.clean = row.files - row.three_way
    row.patches = len(result.imported)


def _report_conflicts(
    found: BackendSet,
    options: MigrateOptions,
    reporter: Reporter,
    row: MigrateRow,
    error: ChangeConflict,
    scratch: Path,
) -> None:
    """The import stopped at the first patch that does not apply and left nothing.
    Say what fails in every patch, not only that one: each group is tried on a
    throw-away checkout of the base, in order (a group that fails is left out
    and the next one tried), and every failing file and hunk is listed."""
    total = len(found.groups)
    row.failed = len(error.failed_paths)
    row.clean = row.files - row.failed
    row.reason = f"patch {error.number}/{total} does not apply: {row.failed} file(s)"
    row.details = error.message.splitlines()[1 : 1 + REASON_LINES]
    if row.onto is None:
        return
    reporter.step(f"trying every patch of {found.source} to report each failure")
    try:
        failures = _try_each_group(found, options, reporter, row.onto, scratch)
    except PatchtoolError as diagnosis:
        reporter.warn(f"could not try the other patches: {diagnosis.message.splitlines()[0]}")
        return
    row.failed = sum(len(trial.failed_paths) for _, trial in failures)
    row.clean = row.files - row.failed
    row.reason = f"{len(failures)} of {total} patch(es) do not apply: {row.failed} file(s)"
    row.details = []
    for number, trial in failures:
        row.details.append(f"patch {number}/{total} ({found.groups[number - 1].subject}):")
        row.details.extend(describe_trial(trial))


def _try_each_group(
    found: BackendSet,
    options: MigrateOptions,
    reporter: Reporter,
    onto: tuple[str, str | None],
    scratch: Path,
) -> list[tuple[int, TrialApply]]:
    project = found.project or found.backend
    base = resolve_new_base(
        parse_onto(onto[0], project, onto[1]),
        options.store,
        found.device,
        options.cache,
        reporter,
        options.archive_paths,
    )
    repository = ensure_base(base, options.cache, reporter, options.archive_paths)
    tree = scratch / "trial" / base.project
    tree.parent.mkdir(parents=True)
    checkout_base(repository, tree, base, "trial")
    git = Git(tree)
    failures = []
    for number, group in enumerate(found.groups, 1):
        patch = scratch / f"group-{number:04d}.diff"
        diff = group.diff()
        # Bounded before git reads it, as every patch is (the device may not exist
        # yet: the defaults apply); the import itself checks each change again.
        check_size(f"{found.source} ({group.component})", diff, DEFAULT_LIMITS)
        patch.write_bytes(diff)
        if git.run("apply", "-p1", "--index", "--", str(patch), check=False).returncode != 0:
            failures.append((number, trial_apply(git, patch, scratch, 1)))
    return failures


def _choose_base(
    found: BackendSet, options: MigrateOptions, reporter: Reporter
) -> tuple[str, str | None, str]:
    """The base to import onto, as `--onto` text, its version label, and the note
    for base.toml: the pinned commit when it can be fetched, else the release."""
    project = found.project or found.backend
    url = options.git_urls.get(found.backend) or BACKEND_REPOSITORIES.get(found.backend)
    reason = "no repository is known for it" if url is None else "no commit is pinned"
    if found.commit is not None and url is not None:
        onto = f"git+{url}@{found.commit.lower()}"
        try:
            resolve_new_base(
                parse_onto(onto, project, found.version),
                options.store,
                found.device,
                options.cache,
                reporter,
                options.archive_paths,
            )
            return onto, found.version, ""
        except (NetworkError, NotFoundError) as error:
            reason = error.message.splitlines()[0]
    if found.version is None or found.project is None:
        raise NotFoundError(
            f"{found.source}: no base to import onto: the pinned commit cannot be used "
            f"({reason}) and {found.backend} has no released sdist to fall back on",
            hint="Pass --git-url BACKEND=URL naming a repository (or a local clone) that "
            "holds the commit.",
        )
    pinned = f"commit {found.commit}" if found.commit else "no commit"
    note = (
        f"FlagScale pins {found.backend} at {pinned}, which could not be used ({reason}); "
        f"this base is the released sdist of {found.version} instead"
    )
    reporter.warn(f"{found.device}/{found.backend}: {note}")
    return f"{found.project}=={found.version}", None, note


def _write_mail(path: Path, group: PatchGroup, found: BackendSet) -> Path:
    """One group as a format-patch mail: git mailinfo reads its author, date and
    message, and the importer takes it like any other mbox input."""
    name, address = email.utils.parseaddr(found.author)
    author = email.utils.formataddr(
        (str(Header(name, "utf-8")) if not name.isascii() else name, address)
    )
    when = datetime.fromisoformat(found.date.replace("Z", "+00:00"))
    headers = [
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001",
        f"From: {author}",
        f"Date: {email.utils.format_datetime(when)}",
        f"Subject: [PATCH] {group.subject}",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=UTF-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        group.body.rstrip("\n") + (f"\n{PRIVATE_TRAILER}: yes" if group.encrypted else ""),
        "---",
        "",
    ]
    path.write_bytes("\n".join(headers).encode("utf-8") + group.diff())
    return path


def _base_label(found: BackendSet) -> str:
    if found.version:
        return f"{found.project or found.backend}-{found.version}"
    return f"{found.backend}-{found.commit[:12]}" if found.commit else "-"


def _nothing_reason(found: BackendSet) -> str:
    if found.skipped:
        return "skipped: " + "; ".join(found.skipped)
    return "no patch files"


def _filter_text(device: str | None, backend: str | None) -> str:
    parts = [f"device {quoted(device)}" if device else "any device"]
    parts.append(f"backend {quoted(backend)}" if backend else "any backend")
    return " and ".join(parts)
