"""`check`'s run: every device and base side by side, each base's checks in a
scratch tree under the cache (the package's docstring says what each checks)."""

from __future__ import annotations

import contextvars
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path

from patchtool.commands.check.offline import forbid_network, local_source, source_problems
from patchtool.commands.check.records import (
    CHECKS,
    CheckRecord,
    CheckReport,
    failure_record,
    lint_hint,
    skipped_records,
)
from patchtool.commands.jobs import CacheJob
from patchtool.core.errors import (
    ConflictError,
    ExitCode,
    PatchtoolError,
    SourceNotLocal,
)
from patchtool.core.gitops import Git
from patchtool.core.locks import store_lock
from patchtool.core.report import Reporter
from patchtool.core.scratch import scratch_folder, scratch_root
from patchtool.series.lint import (
    LintSubject,
    accepted,
    capped,
    series_findings,
    unlisted_files,
)
from patchtool.series.privacy import LoadedSeries, load_series
from patchtool.series.safety import TreeJudge, judge_paths, paths_git_reads
from patchtool.sources.bases import ensure_base
from patchtool.store.files import parse_base
from patchtool.store.model import (
    BASE_FILE,
    BaseRef,
    DeviceConfig,
    PatchSeries,
)
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series
from patchtool.store.transaction import STAGE_SUFFIX, export_leftovers
from patchtool.trees.forecast import Forecast, ForecastJob, forecast_onto


@dataclass(frozen=True, kw_only=True)
class CheckOptions(CacheJob):
    device: str | None = None
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
    offline: bool = False  # never fetch: skip what needs a source that is not local
    # Bases checked at the same time (None: the machine's cores); the report's
    # order is the serial run's whatever this is.
    jobs: int | None = None
    public_only: bool = False  # leave private patches out instead of needing a key


def run_checks(options: CheckOptions, reporter: Reporter) -> CheckReport:
    """Every check of every device and base. Bases run side by side (up to
    `options.jobs`, default the machine's cores: each is mostly git and disk);
    the records come out in the serial order, device by device, base by base."""
    report = CheckReport()
    devices = [options.device] if options.device else options.store.device_names()
    workers = max(1, options.jobs or os.cpu_count() or 1)
    slots: list[list[CheckRecord] | Future[list[CheckRecord]]] = []
    with (
        forbid_network(options.offline),
        ExitStack() as locks,
        ThreadPoolExecutor(workers, thread_name_prefix="patchtool-check") as pool,
    ):
        for device in devices:
            started = time.perf_counter()
            try:
                config = options.store.device(device)
            except PatchtoolError as error:
                if options.device:  # an unknown device on the command line is a usage problem
                    raise
                slots.append([_timed(failure_record(device, "", "config", error), started)])
                continue
            problem = _default_base_problem(options.store, device, config)
            record = CheckRecord(device, "", "config", True) if problem is None else problem
            slots.append([_timed(record, started)])
            leftovers = _export_leftovers(options.store, device)
            if leftovers is not None:
                slots.append([leftovers])
            # Shared: other checks and unpatch may read along, an export waits.
            locks.enter_context(store_lock(options.store.root, device, False, reporter))
            for base_file in _base_files(options, device):
                # Threads do not inherit context variables (the offline guard is one).
                context = contextvars.copy_context()
                slots.append(
                    pool.submit(context.run, _check_base_file, options, base_file, config, reporter)
                )
        try:
            for slot in slots:
                report.records.extend(slot if isinstance(slot, list) else slot.result())
        except BaseException:
            # SIGTERM (cli makes it an exception) or a bug: the bases not started
            # are dropped; the ones running end and remove their scratch trees.
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return report


def run_forecasts(options: CheckOptions, onto: str, reporter: Reporter) -> list[Forecast]:
    """`check --forecast VERSION`: every device's newest base (or the one
    --commit-id names) forecast onto VERSION, side by side (up to
    `options.jobs`); the forecasts in the devices' order."""
    devices = [options.device] if options.device else options.store.device_names()
    workers = max(1, options.jobs or os.cpu_count() or 1)
    job = ForecastJob(
        store=options.store,
        cache=options.cache,
        archive_paths=options.archive_paths,
        keyring=options.keyring,
        public_only=options.public_only,
    )
    with (
        ExitStack() as locks,
        ThreadPoolExecutor(workers, thread_name_prefix="patchtool-forecast") as pool,
    ):
        futures = []
        for device in devices:
            config = options.store.device(device)
            bases = options.store.bases(device)
            if not bases:
                continue
            base = options.store.resolve_base(device, options.base) if options.base else bases[-1]
            locks.enter_context(store_lock(options.store.root, device, False, reporter))
            futures.append(pool.submit(forecast_onto, job, base, config, onto, reporter))
        try:
            return [future.result() for future in futures]
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _base_files(options: CheckOptions, device: str) -> list[Path]:
    store = options.store
    if options.base is not None:
        return [store.resolve_base(device, options.base).path / BASE_FILE]
    leftovers = set(export_leftovers(store.root / device))
    return sorted(
        path
        for path in (store.root / device).glob(f"*/{BASE_FILE}")
        if path.parent not in leftovers
    )


def _default_base_problem(store: Store, device: str, config: DeviceConfig) -> CheckRecord | None:
    """device.toml's `default-base` must name one of the device's bases, as
    `unpatch` without --commit-id will read it (None: it does, or is not set). A
    base folder that cannot be read is its own base's failure, not this one's."""
    if config.default_base is None:
        return None
    try:
        if not store.bases(device):
            return None
    except PatchtoolError:
        return None
    try:
        store.resolve_base(device, None)
    except PatchtoolError as error:
        return failure_record(device, "", "config", error)
    return None


def _export_leftovers(store: Store, device: str) -> CheckRecord | None:
    """The device's record of what killed exports left (None: nothing): a failure
    in every check of the device, `--commit-id` or not, so that a committed
    leftover fails CI, and one that says what it is and how it goes."""
    leftovers = export_leftovers(store.root / device)
    if not leftovers:
        return None
    details = [
        f"{path}: left by a `patchtool patch` (or `import`) that was killed while it "
        f"wrote {path.parent.name}/{_export_base_name(path)}; that base folder is whole"
        for path in leftovers
    ]
    details.append(
        f"hint: the next `patchtool patch --device-type {device}` removes it, or remove it "
        "yourself: rm -r -- " + " ".join(str(path) for path in leftovers)
    )
    return CheckRecord(device, "", "leftovers", False, tuple(details), ExitCode.INTEGRITY)


def _export_base_name(stage: Path) -> str:
    name = stage.name.removesuffix(".old").removesuffix(STAGE_SUFFIX)
    return name.removeprefix(".")


def _check_base_file(
    options: CheckOptions, base_file: Path, config: DeviceConfig, reporter: Reporter
) -> list[CheckRecord]:
    device, base_id = base_file.parent.parent.name, base_file.parent.name
    started = time.perf_counter()
    try:
        base = parse_base(base_file, device, base_id)
    except PatchtoolError as error:
        return [
            _timed(failure_record(device, base_id, "config", error), started),
            *skipped_records(device, base_id, CHECKS[1:], "base.toml is invalid"),
        ]
    reporter.step(f"checking {device}/{base_id}")
    parsed = _timed(CheckRecord(device, base_id, "config", True), started)
    return [parsed, *_check_base(options, base, config, reporter)]


def _timed(record: CheckRecord, started: float) -> CheckRecord:
    return replace(record, duration=time.perf_counter() - started)


def _check_base(
    options: CheckOptions, base: BaseRef, config: DeviceConfig, reporter: Reporter
) -> list[CheckRecord]:
    device, base_id = base.device, base.base_id
    source, repository = _check_source(options, base, config, reporter)
    series_record, series, loaded = _check_series(options, base, config)
    records = [source, series_record]
    if series is None or loaded is None:
        reason = "series cannot be read" if series is None else "its patches cannot be read"
        records.extend(skipped_records(device, base_id, ("safety", "apply", "export"), reason))
        if series is None:
            records.extend(skipped_records(device, base_id, ("lint",), reason))
        else:
            records.append(_lint(base, series, None, config))
        return records
    if repository is not None:
        scratch = scratch_root(options.cache.root)
        records.extend(_safety_apply_export(base, loaded, repository, config, scratch, reporter))
    elif source.skipped:
        records.extend(
            CheckRecord(
                device,
                base_id,
                check,
                False,
                (f"skipped: needs {base_id}'s source (see its source record)",),
                skipped=True,
            )
            for check in ("safety", "apply", "export")
        )
    else:
        records.extend(
            skipped_records(
                device, base_id, ("safety", "apply", "export"), "the base is not available"
            )
        )
    records.append(_lint(base, series, loaded, config))
    return records


def _check_source(
    options: CheckOptions, base: BaseRef, config: DeviceConfig, reporter: Reporter
) -> tuple[CheckRecord, Path | None]:
    """The `source` record, and the cache repository holding the base (None when
    it is not available, or skipped offline)."""
    started = time.perf_counter()
    try:
        archives = options.archive_paths
        if options.offline:
            archives = local_source(base, options.cache, options.archive_paths)
        # The CI gate hashes the base again, whatever an earlier run recorded.
        repository = ensure_base(
            base, options.cache, reporter, archives, verify="full", limits=config.limits
        )
    except SourceNotLocal as why:
        skipped = CheckRecord(
            base.device, base.base_id, "source", False, (why.reason,), skipped=True, offline=True
        )
        return skipped, None
    except PatchtoolError as error:
        return _timed(failure_record(base.device, base.base_id, "source", error), started), None
    problems = source_problems(base, options.cache, repository)
    return _record(base, "source", problems, ExitCode.INTEGRITY, started), repository


def _check_series(
    options: CheckOptions, base: BaseRef, config: DeviceConfig
) -> tuple[CheckRecord, PatchSeries | None, LoadedSeries | None]:
    """The `series` record: series lists exactly the folder's patch files, and
    every patch can be read (private ones decrypted, or left out named)."""
    started = time.perf_counter()
    series = None
    try:
        series = parse_series(base, config.limits)
        problems = unlisted_files(base.path, set(series.names))
        loaded = load_series(
            series, config.limits, options.keyring, config.recipients, options.public_only
        )
    except PatchtoolError as error:
        return (
            _timed(failure_record(base.device, base.base_id, "series", error), started),
            series,
            None,
        )
    record = _record(base, "series", problems, ExitCode.STALE, started)
    left_out = [f"public part only: left out the private patch {e.name}" for e in loaded.skipped]
    if left_out:
        record = replace(record, details=(*record.details, *left_out))
    return record, series, loaded


def _record(
    base: BaseRef, check: str, problems: list[str], code: ExitCode, started: float
) -> CheckRecord:
    return CheckRecord(
        base.device,
        base.base_id,
        check,
        not problems,
        tuple(problems),
        code if problems else ExitCode.OK,
        duration=time.perf_counter() - started,
    )


def _lint(
    base: BaseRef, series: PatchSeries, loaded: LoadedSeries | None, config: DeviceConfig
) -> CheckRecord:
    """The rule set (lint.series_findings, which `patch` and `import` run on what
    they write) on every patch of the series: the patches the series check read
    are linted as read (a private one in its plaintext); only when it could not
    read them (no key) are the files read there."""
    started = time.perf_counter()
    read = {p.entry.name: p for p in loaded.patches} if loaded else {}
    subjects = []
    for entry in series.entries:
        patch = read.get(entry.name)
        subjects.append(
            LintSubject(
                entry.name,
                base.path / entry.name,
                patch.data if patch is not None else None,
                patch.description if patch is not None else None,
            )
        )
    names = tuple(r.name for r in config.recipients)
    failing, own = accepted(series_findings(subjects, names, config.limits))
    record = _record(base, "lint", capped(failing), ExitCode.STALE, started)
    if failing:
        rules = {f.rule for f in failing}
        record = replace(record, hint=lint_hint(base.device, base.base_id, rules))
    return replace(record, details=(*record.details, own)) if own else record


def _safety_apply_export(
    base: BaseRef,
    loaded: LoadedSeries,
    repository: Path,
    config: DeviceConfig,
    scratch: Path,
    reporter: Reporter,
) -> list[CheckRecord]:
    from patchtool.series.pipeline import prepare_export
    from patchtool.trees.applying import apply_series, checkout_base

    device, base_id = base.device, base.base_id
    unsafe_skip = skipped_records(
        device, base_id, ("apply", "export"), "the base or a patch is unsafe or damaged"
    )
    # Safety is judged on the base (here) and on every commit as the series is
    # applied: the first part is safety's time, the rest is in apply's.
    started = time.perf_counter()
    try:
        judge = TreeJudge(Git(repository), base.commit, f"base {base.label}")
    except PatchtoolError as error:
        return [_timed(failure_record(device, base_id, "safety", error), started), *unsafe_skip]
    safety = _timed(CheckRecord(device, base_id, "safety", True), started)
    started = time.perf_counter()
    with scratch_folder(scratch, "check-") as folder:
        tree = folder / base.project
        checkout_base(repository, tree, base, device)
        try:
            apply_series(tree, loaded, judge, three_way=False, reporter=reporter)
        except ConflictError as error:
            failed = _timed(failure_record(device, base_id, "apply", error), started)
            judged_start = time.perf_counter()
            paths_only = _timed(_judge_paths_only(tree, loaded), judged_start)
            skipped = skipped_records(device, base_id, ("export",), "the series does not apply")
            return [paths_only, failed, *skipped]
        except PatchtoolError as error:
            return [_timed(failure_record(device, base_id, "safety", error), started), *unsafe_skip]
        applied = [safety, _timed(CheckRecord(device, base_id, "apply", True), started)]
        if loaded.skipped:
            why = ("not run: public part only (the private patches were left out)",)
            return [*applied, CheckRecord(device, base_id, "export", False, why, skipped=True)]
        started = time.perf_counter()
        try:
            known = loaded.plaintext_digests()
            plan = prepare_export(Git(tree), base, base.commit, config, recorded=known).plan
        except PatchtoolError as error:
            return [*applied, _timed(failure_record(device, base_id, "export", error), started)]
    problems = [f"a fresh export would write: {line}" for line in plan.describe()]
    return [*applied, _record(base, "export", problems, ExitCode.STALE, started)]


def _judge_paths_only(tree: Path, loaded: LoadedSeries) -> CheckRecord:
    """A series that does not apply cannot be judged by its result: judge every
    path git reads from each patch instead."""
    base = loaded.series.base
    git = Git(tree)
    try:
        for patch in loaded.patches:
            judge_paths(patch.label, paths_git_reads(git, patch.path, data=patch.data))
    except PatchtoolError as error:
        return failure_record(base.device, base.base_id, "safety", error)
    return CheckRecord(
        base.device,
        base.base_id,
        "safety",
        True,
        ("judged by the paths git reads only: the series does not apply",),
    )
