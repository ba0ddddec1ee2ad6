"""`import --flagscale`: a FlagScale `hardware/` tree into the store.

vendors/flagscale reads the tree (every layout, decryption in memory) into
`BackendSet`s; this module turns each into a device and a base of the store
through the import that `import` runs (`changes.import_changes_locked`: this
module holds the device's locks, per device), handing it the groups as its own
`Change` values, so every patch passes the same safety checks and is written by
the export pipeline that `patch` uses, byte-stable:

- the device is created when the store lacks it (display name: FlagScale's
  folder name; vendor: the maker FlagScale's device is known by);
- the base's project is the set's backend, and the base is chosen by
  flagscale_base.py (the pinned commit, a mirror of it, or the release);
- each group becomes one patch with the subject, body, author and date the
  reader derived for it (vendors/flagscale/grouping.py), and an
  `Upstream-Status:` trailer;
- diff.yaml's contact, models and task are kept in base.toml's `[origin]`;
- a group made from FlagScale's encrypted files (read with the vendor's RSA
  key) becomes a private patch: its commit gets the `Patchtool-Private: yes`
  trailer, so the store holds it encrypted with age to the device's
  recipients (`--recipient NAME=KEY` for a new device). Its plaintext is
  written only into the build folder (import's scratch folder there), never
  into the temporary folder or the store.

Each device and base is imported whole or not at all (the import removes
what it created when a change fails); one that fails, or cannot be read, does
not stop the others. The result is one row per device and backend for the
summary table (flagscale_report.py). This module never prints; it reports
through a `Reporter`.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from patchtool.commands.importing.changes import ImportOptions, import_changes_locked
from patchtool.commands.importing.flagscale_base import BaseChoice, choose_base
from patchtool.commands.importing.flagscale_report import (
    MigrateRow,
    failure_details,
    try_each_group,
)
from patchtool.commands.importing.inputs import Change
from patchtool.commands.jobs import CacheJob
from patchtool.core.errors import (
    ChangeConflict,
    ExitCode,
    NotFoundError,
    PatchtoolError,
    UsageError,
    quoted,
)
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.core.scratch import scratch_folder
from patchtool.series.lint import IMPORTED_TRAILER
from patchtool.series.privacy import PRIVATE_TRAILER
from patchtool.sources.bases import ensure_base, resolve_new_base
from patchtool.store.model import DEVICE_FILE, BaseOrigin, BaseRef, GitUrl, NamedRecipient
from patchtool.trees.staging import device_scratch
from patchtool.vendors.flagscale.model import (
    BACKENDS,
    DEFAULT_GROUP_BYTES,
    UNKNOWN_VENDOR,
    BackendSet,
)
from patchtool.vendors.flagscale.reading import read_flagscale, render_plan


@dataclass(frozen=True, kw_only=True)
class MigrateOptions(CacheJob):
    build_dir: Path
    root: Path  # a FlagScale checkout, or its hardware/ folder
    device: str | None = None
    backend: str | None = None
    private_keys: tuple[Path, ...] = ()
    three_way: bool = False
    git_urls: Mapping[str, str] = field(default_factory=dict)  # backend -> URL or path
    wait: bool = True
    # Recipients of the private patches (FlagScale's encrypted files) of a new device.
    recipients: tuple[NamedRecipient, ...] = ()
    group_bytes: int = DEFAULT_GROUP_BYTES
    # The base of the sets that pin none (legacy): a new one, or one the device has.
    onto: str | None = None
    base: str | None = None  # --commit-id: a base the device has


@dataclass
class MigrateResult:
    rows: list[MigrateRow]

    @property
    def failed(self) -> list[MigrateRow]:
        """The sets that were not imported for a reason other than being skipped."""
        return [row for row in self.rows if not row.ok and not row.skipped]


def check_git_urls(git_urls: Mapping[str, str]) -> None:
    for name, url in git_urls.items():
        GitUrl(url)  # refused here, before anything is read, if it is not a safe address
        if name not in BACKENDS:
            raise UsageError(
                f"--git-url {name}=…: unknown backend {quoted(name)} (known: {', '.join(BACKENDS)})"
            )


def plan(
    root: Path,
    device: str | None,
    backend: str | None,
    private_keys: tuple[Path, ...],
    group_bytes: int,
) -> list[str]:
    """What --dry-run prints: the store is not needed, nothing is written."""
    return render_plan(read_flagscale(root, device, backend, private_keys, group_bytes))


def migrate(options: MigrateOptions, reporter: Reporter) -> MigrateResult:
    """Read the FlagScale tree, then import every device and backend found."""
    check_git_urls(options.git_urls)
    sets = read_flagscale(
        options.root, options.device, options.backend, options.private_keys, options.group_bytes
    )
    if not sets:
        raise NotFoundError(
            f"no device and backend of {options.root} matches "
            f"{_filter_text(options.device, options.backend)}",
            hint="`patchtool import --flagscale PATH --dry-run` lists what is there.",
        )
    rows = []
    for found in sets:
        reporter.step(f"importing {found.source} as {found.device}")
        rows.append(_import_set(found, options, reporter))
    return MigrateResult(rows)


# --------------------------------------------------------------------------- one set


def _import_set(found: BackendSet, options: MigrateOptions, reporter: Reporter) -> MigrateRow:
    row = MigrateRow(
        found.device,
        found.backend,
        base=_planned_base(found),
        files=found.files,
        patches=len(found.groups),
    )
    if found.problem is not None:
        row.reason = f"cannot be read: {found.problem}"
        row.exit_code = found.problem_code
        row.details = [found.problem_hint] if found.problem_hint else []
        return row
    if not found.groups:
        row.reason = "skipped: " + (found.skipped[0] if found.skipped else "no patch files")
        if len(found.skipped) > 1:
            row.reason += f" (and {len(found.skipped) - 1} more; --dry-run lists them)"
        return row
    device_file = options.store.root / found.device / DEVICE_FILE
    new_device = not device_file.is_file()
    if any(g.encrypted for g in found.groups) and not (
        options.recipients if new_device else options.store.device(found.device).recipients
    ):
        row.reason = (
            "its encrypted patches become private patches, encrypted to the device's "
            "recipients, and none are named"
        )
        row.details = [
            "pass --recipient NAME=AGE-OR-SSH-PUBLIC-KEY for a new device, or add "
            f"[private.recipients] to {device_file}"
        ]
        row.exit_code = int(ExitCode.USAGE)
        return row
    device_dir = options.build_dir / found.device
    device_dir.mkdir(parents=True, exist_ok=True)
    try:
        with device_locks(
            options.build_dir,
            options.store.root,
            found.device,
            reporter,
            writes_store=True,
            wait=options.wait,
        ):
            choice = choose_base(
                found, options, dict(options.git_urls), options.onto, options.base, reporter
            )
            row.base = choice.label
            try:
                _import_locked(found, options, reporter, choice, new_device, row)
            except ChangeConflict as error:
                row.exit_code = int(error.exit_code)
                _report_conflicts(found, options, reporter, choice, row, error, device_dir)
    except PatchtoolError as error:
        lines = error.message.splitlines()
        row.reason = lines[0]
        row.exit_code = int(error.exit_code)
        row.details = lines[1:] + ([error.hint] if error.hint else [])
    return row


def _import_locked(
    found: BackendSet,
    options: MigrateOptions,
    reporter: Reporter,
    choice: BaseChoice,
    new_device: bool,
    row: MigrateRow,
) -> None:
    result = import_changes_locked(
        ImportOptions(
            store=options.store,
            build_dir=options.build_dir,
            device=found.device,
            cache=options.cache,
            inputs=(),
            changes=changes_of(found, choice.strip_extra),
            create=new_device,
            recipients=options.recipients,
            keyring=options.keyring,
            display_name=found.flagscale_device,
            vendor=found.vendor or UNKNOWN_VENDOR,
            base=choice.base,
            new_base=choice.spec,
            archive_paths=options.archive_paths,
            three_way=options.three_way,
            origin=BaseOrigin(
                source=f"FlagScale {found.source}",
                commit=found.flagscale_commit or "",
                contact=found.contact or "",
                models=found.models,
                task=found.task,
                note=choice.note,
            ),
        ),
        reporter,
    )
    row.base = result.base.base_id
    merged = {path for change in result.three_way for path in change.paths}
    row.three_way = len(merged)
    row.dropped = list(result.dropped)
    dropped_files = sum(
        len(group.files)
        for number, group in enumerate(found.groups, 1)
        if _origin(found, number, group.subject) in result.dropped
    )
    row.clean = row.files - row.three_way - dropped_files
    row.patches = len(result.imported)


def changes_of(found: BackendSet, strip_extra: int = 0) -> tuple[Change, ...]:
    """Each group as the importer's own change: its diff, the -p it is read with,
    its author, date and message (a private patch's trailer for an encrypted one)."""
    changes = []
    for number, group in enumerate(found.groups, 1):
        name, address = email.utils.parseaddr(group.authorship.author)
        # In the trailers' paragraph, after Upstream-Status: where the lines come
        # from (lint takes their trailing whitespace for the vendor's own), and
        # for an encrypted group, that its patch is private.
        message = (
            group.message.rstrip("\n")
            + f"\n{IMPORTED_TRAILER}: FlagScale {found.source}"
            + (f"\n{PRIVATE_TRAILER}: yes" if group.encrypted else "")
        )
        changes.append(
            Change(
                _origin(found, number, group.subject),
                group.diff(),
                found.strip + strip_extra,
                author=(name, address),
                date=group.authorship.date,
                message=message + "\n",
                source=found.source,
                private=group.encrypted,
            )
        )
    return tuple(changes)


def _origin(found: BackendSet, number: int, subject: str) -> str:
    return f"{found.source}, patch {number} of {len(found.groups)} ({subject})"


def _report_conflicts(
    found: BackendSet,
    options: MigrateOptions,
    reporter: Reporter,
    choice: BaseChoice,
    row: MigrateRow,
    error: ChangeConflict,
    device_dir: Path,
) -> None:
    """The import stopped at the first patch that does not apply and left nothing.
    Say what fails in every patch, not only that one (flagscale_report.py)."""
    total = len(found.groups)
    row.failed = len(error.failed_paths)
    row.clean = row.files - row.failed
    row.reason = f"patch {error.number}/{total} does not apply: {row.failed} file(s)"
    row.details = error.message.splitlines()[1:]
    reporter.step(f"trying every patch of {found.source} to report each failure")
    try:
        base = _base_of(found, options, reporter, choice)
        repository = ensure_base(base, options.cache, reporter, options.archive_paths)
        # In the build folder, never the shared temporary folder: the trial tree
        # holds decrypted patches in clear.
        with scratch_folder(device_scratch(device_dir), "flagscale-") as scratch:
            failures, merged = try_each_group(
                found,
                base,
                repository,
                scratch,
                found.strip + choice.strip_extra,
                options.three_way,
            )
    except PatchtoolError as diagnosis:
        reporter.warn(f"could not try the other patches: {diagnosis.message.splitlines()[0]}")
        return
    if not failures:  # each applies to the base alone: it is the series on it that conflicts
        row.details.append(
            f"every patch applies to {base.base_id} alone: the conflict is with the series the "
            "device already has on it"
        )
        return
    row.failed = sum(len(trial.failed_paths) for _, trial in failures)
    row.three_way = len(merged)
    row.clean = row.files - row.failed - row.three_way
    row.reason = f"{len(failures)} of {total} patch(es) do not apply: {row.failed} file(s)"
    row.details = failure_details(found, failures)


def _base_of(
    found: BackendSet, options: MigrateOptions, reporter: Reporter, choice: BaseChoice
) -> BaseRef:
    if choice.base is not None:
        return options.store.resolve_base(found.device, choice.base)
    assert choice.spec is not None
    return resolve_new_base(
        choice.spec, options.store, found.device, options.cache, reporter, options.archive_paths
    )


def _planned_base(found: BackendSet) -> str:
    """The base a set names, as the summary shows it before one is chosen."""
    if found.problem is not None:
        return "-"
    if found.version:
        return f"{found.project}-{found.version}"
    return f"{found.project}-{found.commit[:12]}" if found.commit else "-"


def _filter_text(device: str | None, backend: str | None) -> str:
    parts = [f"device {quoted(device)}" if device else "any device"]
    parts.append(f"backend {quoted(backend)}" if backend else "any backend")
    return " and ".join(parts)
