"""`check`: CI checks and lint over the store; changes nothing.

For every device (or the one asked for) and every base (or the one asked for)
it records one `CheckRecord` per check:

    config   device.toml and base.toml parse and are valid
    source   the base's source yields the recorded commit (and sdist sha256)
    series   `series` lists exactly the *.patch and *.patch.age files of the
             base folder, and every patch can be read (a private one
             decrypted: without a key that opens it, exit 3; one that was
             changed or cut short, exit 6)
    safety   no patch exceeds the device's limits, is damaged, or (as git
             applies it) reaches outside the tree, into .git or through a
             symlink; the base tree is judged the same way (safety.py)
    apply    the series applies with `git am`, no fuzz, no 3-way help
    export   a fresh export of that tree (series/pipeline.py, as `patch`
             exports) writes the store byte for byte
    lint     subject, a body that says why, a valid Upstream-Status trailer,
             no added trailing whitespace or conflict markers; a private
             patch must be encrypted to exactly the recipients device.toml
             names (the rule set is lint.series_findings, which `patch` and
             `import` run on what they write)

The tree for `safety`, `apply` and `export` is built with applying.py's pieces
in a scratch folder under the cache (scratch.py: `<cache>/scratch/check-*`,
locked while it is used, removed when the check ends, and by the next run when
a kill stopped this one), never in the shared temporary folder: a private
patch's plaintext is in that tree while it is checked. The user's build folder
is never read or written. The
base cache may be filled (a cold cache fetches, as `unpatch` would), and the
cached base is always verified object by object. When the series does not
apply, `safety` judges the paths git reads from every patch instead.

Private patches (privacy.py) are decrypted in memory with `CheckOptions.keyring`
and given to git on standard input; their lines never appear in a report
(a failing hunk is named by file and position only). With `public_only` they
are left out (named in the `series` record) and `export` is not run.

Offline (`CheckOptions.offline`), a base is checked against its source only
when that source is local: the cache proves it by itself (an sdist base's
import key, a git base's commit in its source's repository), or its sdist is
in the cache or given locally (--sdist, PATCHTOOL_SDIST_PATH; not
pip's find-links, which only the index client reads). Otherwise its `source`,
`safety`, `apply` and `export` records are *skipped* (a reason, no failure),
while `config`, `series` and `lint` run as always. That decision is made here,
before `ensure_base` is called, and `ensure_base` is then handed exactly one
existing local file, so its lookup ends there (a missing or mismatching file
raises, it never goes on to the index client); as a second wall, any socket
connect or name lookup in the process while an offline check runs raises
`OfflineViolationError` (exit 1: a bug in patchtool, not a network failure).

`check --forecast VERSION` (`run_forecasts`) runs none of these: it forecasts
the rebase of every device's newest base onto VERSION (trees/forecast.py, what
`rebase --dry-run` runs), side by side like the checks, in scratch
repositories under the cache.

Exit codes: every failed check carries the code of its kind of problem
(config and source: 6 or the fetch error's own code; safety: 10, or 6 for a
corrupt patch; apply: 4; series, export and lint: 7, "the store needs work").
The run exits with the most serious code present, in the order
1 > 10 > 6 > 3 > 11 > 4 > 7 (1: a bug in patchtool, such as an offline check
that reached for the network), raising the error class of that code
(errors.error_class). Skipped records carry no code: an offline run whose
every check that ran passed exits 0.
"""

from __future__ import annotations

import contextvars
import os
import sys
import time
from collections.abc import Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from patchtool.commands.jobs import CacheJob
from patchtool.core.errors import (
    ConflictError,
    ExitCode,
    OfflineViolationError,
    PatchtoolError,
    SourceNotLocal,
    error_class,
    quoted,
)
from patchtool.core.fsutil import sha256_of
from patchtool.core.gitops import Git
from patchtool.core.locks import store_lock
from patchtool.core.report import Reporter
from patchtool.core.scratch import scratch_folder, scratch_root
from patchtool.series.lint import (
    MESSAGE_ADVICE,
    MESSAGE_RULES,
    WHITESPACE_FIX,
    LintSubject,
    Rule,
    accepted,
    capped,
    series_findings,
    unlisted_files,
)
from patchtool.series.privacy import LoadedSeries, load_series
from patchtool.series.safety import TreeJudge, judge_paths, paths_git_reads
from patchtool.sources.bases import ensure_base, held_in_cache
from patchtool.sources.cache import BaseCache, base_ref_name
from patchtool.sources.sdist import local_sdists
from patchtool.store.files import parse_base
from patchtool.store.model import (
    BASE_FILE,
    DEVICE_FILE,
    BaseRef,
    DeviceConfig,
    PatchSeries,
    PypiSource,
)
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series
from patchtool.store.transaction import STAGE_SUFFIX, export_leftovers
from patchtool.trees.forecast import Forecast, ForecastJob, forecast_onto

CHECKS = ("config", "source", "series", "safety", "apply", "export", "lint")
_SEVERITY = (
    ExitCode.INTERNAL,  # a bug in patchtool (an offline check that reached the network)
    ExitCode.UNSAFE,
    ExitCode.INTEGRITY,
    ExitCode.NOT_FOUND,
    ExitCode.NETWORK,
    ExitCode.CONFLICT,
    ExitCode.STALE,
)


@dataclass(frozen=True, kw_only=True)
class CheckOptions(CacheJob):
    device: str | None = None
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
    offline: bool = False  # never fetch: skip what needs a source that is not local
    # Bases checked at the same time (None: the machine's cores); the report's
    # order is the serial run's whatever this is.
    jobs: int | None = None
    public_only: bool = False  # leave private patches out instead of needing a key


@dataclass(frozen=True)
class CheckRecord:
    device: str
    base: str  # "" for the device's own files
    check: str
    ok: bool
    details: tuple[str, ...] = ()
    exit_code: ExitCode = ExitCode.OK  # for a failure: the code its problem maps to
    # Not run: offline without the base's source, or an earlier check of the base
    # failed (its record carries the code), or the public part only.
    skipped: bool = False
    duration: float = 0.0  # seconds this check took (0 for one that did not run)
    # What to do about this failure: the hint of the error it records, or the one
    # its findings call for (lint); the run's hint is made of its records' own.
    hint: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "device": self.device,
            "base": self.base,
            "check": self.check,
            "ok": None if self.skipped else self.ok,
            "details": list(self.details),
            "duration_s": round(self.duration, 3),
        }
        if self.skipped:
            data["skipped"] = True
        return data


@dataclass
class CheckReport:
    records: list[CheckRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckRecord]:
        return [r for r in self.records if not r.ok]

    @property
    def skipped_bases(self) -> list[str]:
        """Every base ("device/base") an offline run could not check against its source."""
        return sorted(
            {f"{r.device}/{r.base}" for r in self.records if r.skipped and r.check == "source"}
        )

    def skipped_summary(self) -> str | None:
        bases = self.skipped_bases
        if not bases:
            return None
        passed = not [r for r in self.failed if r.exit_code != ExitCode.OK]
        return (
            f"offline: the source, safety, apply and export checks of {len(bases)} base(s) "
            f"were skipped, their source is not in the cache: {', '.join(bases)}"
            + ("; every check that ran passed" if passed else "")
        )

    @property
    def exit_code(self) -> ExitCode:
        return _worst(self.records)

    def matrix(self) -> dict[str, Any]:
        """`check --json`: one entry per device and base, in the serial order, each
        with the command that checks it alone (a CI matrix's `include` list, the
        shape `list --json` gives), its outcome, exit code and duration, and its
        records (the device's own record heads every entry of the device). A
        device whose device.toml fails, or that has no base, is one entry with
        base null."""
        device_records: dict[str, list[CheckRecord]] = {}
        bases: dict[str, dict[str, list[CheckRecord]]] = {}
        for record in self.records:
            if not record.base:
                device_records.setdefault(record.device, []).append(record)
                bases.setdefault(record.device, {})
            else:
                bases.setdefault(record.device, {}).setdefault(record.base, []).append(record)
        entries = []
        for device, found in bases.items():
            own = device_records.get(device, [])
            groups: dict[str | None, list[CheckRecord]] = {None: []} if not found else {}
            groups.update(found)
            for base, records in groups.items():
                group = [*own, *records]
                command = f"patchtool check -d {device}"
                code = _worst(group)
                entries.append(
                    {
                        "device": device,
                        "base": base,
                        "command": command + (f" --commit-id {base}" if base else ""),
                        "ok": code == ExitCode.OK,
                        "exit_code": int(code),
                        "duration_s": round(sum(r.duration for r in group), 3),
                        "checks": [r.to_json() for r in group],
                    }
                )
        return {
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": int(self.exit_code),
            "include": entries,
        }

    def raise_for_failures(self) -> None:
        failed = [r for r in self.failed if r.exit_code != ExitCode.OK]
        if failed:
            names = ", ".join(f"{r.device}/{r.base or DEVICE_FILE} {r.check}" for r in failed)
            counted = f"{len(failed)} check(s) failed: {names}"
            hints = list(dict.fromkeys(r.hint for r in failed if r.hint))
            hint = " ".join(hints) or "Fix what the report above lists and run check again."
            if self.exit_code == ExitCode.INTERNAL:
                hint = "A check failed on a bug in patchtool: run again with --debug and report it."
            # The class of the most serious code: the exit code is the class's.
            raise error_class(self.exit_code)(counted, hint=hint)


def _worst(records: list[CheckRecord]) -> ExitCode:
    """The most serious exit code among failed records (OK if none failed)."""
    codes = {r.exit_code for r in records if not r.ok and r.exit_code != ExitCode.OK}
    for code in _SEVERITY:
        if code in codes:
            return code
    return min(codes) if codes else ExitCode.OK


def lint_hint(device: str, base_id: str, rules: Collection[Rule]) -> str:
    """What fixes these lint findings, by their rules: a commit's message or lines
    are fixed in the build tree's commits; a private patch's recipients by an
    export, which encrypts it anew to device.toml's recipients."""
    tree = f"`patchtool unpatch --device-type {device} --commit-id {base_id}`"
    parts = []
    if set(rules) - {"recipients"}:
        parts.append(
            "Lint problems are fixed in the build tree's commits "
            f"({tree} makes the tree): `git commit --amend` for the last commit or "
            "`git rebase -i patchtool/base` (mark a commit `reword` for its message, `edit` "
            f"for its lines) for earlier ones, then `patchtool patch --device-type {device}`"
            + (
                f"; trailing whitespace goes from every commit at once with `{WHITESPACE_FIX}`"
                if "whitespace" in rules
                else ""
            )
            + (f"; {MESSAGE_ADVICE}" if set(rules) & MESSAGE_RULES else "")
            + "."
        )
    if "recipients" in rules:
        parts.append(
            "A private patch is encrypted anew to device.toml's recipients by an export: "
            f"make the tree with a key that opens it ({tree} --identity FILE), then run "
            f"`patchtool patch --device-type {device}` and commit the store."
        )
    return " ".join(parts)


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
                slots.append([_timed(_failure(device, "", "config", error), started)])
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
        return _failure(device, "", "config", error)
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
            _timed(_failure(device, base_id, "config", error), started),
            *_skipped(device, base_id, CHECKS[1:], "base.toml is invalid"),
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
        records.extend(_skipped(device, base_id, ("safety", "apply", "export"), reason))
        if series is None:
            records.extend(_skipped(device, base_id, ("lint",), reason))
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
            _skipped(device, base_id, ("safety", "apply", "export"), "the base is not available")
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
            base.device, base.base_id, "source", False, (why.reason,), skipped=True
        )
        return skipped, None
    except PatchtoolError as error:
        return _timed(_failure(base.device, base.base_id, "source", error), started), None
    problems = _source_problems(base, options.cache, repository)
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
        return _timed(_failure(base.device, base.base_id, "series", error), started), series, None
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


# --------------------------------------------------------------------------- offline


def local_source(
    base: BaseRef, cache: BaseCache, archive_paths: tuple[Path, ...]
) -> tuple[Path, ...]:
    """Offline: what to hand `ensure_base` so that it needs no network, or raise
    SourceNotLocal. `()` when the cache can prove the base by itself (bases.held_in_cache:
    ensure_base then compares and verifies); else exactly one existing sdist file,
    which obtain_sdist uses or refuses (a sha256 mismatch, a file gone) without
    looking further, and which ensure_base imports and compares."""
    if held_in_cache(base, cache):
        return ()
    if not isinstance(base.source, PypiSource):
        raise SourceNotLocal(
            f"skipped: {base.base_id}'s source is not in the cache (needs commit "
            f"{base.commit[:12]} from its git repository; run `patchtool check` once with "
            "network access)"
        )
    filename = base.source.filename
    cached = cache.sdist_path(base.source)
    if cached.is_file() and sha256_of(cached) == base.source.sha256:
        return (cached,)
    # --sdist and PATCHTOOL_SDIST_PATH, as online (a --sdist path that does not
    # exist raises here, and so do --sdist files none of which is this one). pip's
    # find-links are left out: they are read by the index client, which offline
    # never reaches.
    local = next(local_sdists(filename, archive_paths), None)
    if local is not None:
        return (local,)
    raise SourceNotLocal(
        f"skipped: {base.base_id}'s source is not in the cache (needs {filename}; run "
        "`patchtool check` once with network access or pass --sdist)"
    )


_OFFLINE: contextvars.ContextVar[bool] = contextvars.ContextVar("patchtool_offline", default=False)
_NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname")
_guard_installed = False


@contextmanager
def forbid_network(offline: bool) -> Iterator[None]:
    """While an offline check runs, any connect or name lookup raises."""
    global _guard_installed
    if not offline:
        yield
        return
    if not _guard_installed:
        sys.addaudithook(_refuse_network)  # process-wide and permanent, hence the flag
        _guard_installed = True
    token = _OFFLINE.set(True)
    try:
        yield
    finally:
        _OFFLINE.reset(token)


def _refuse_network(event: str, args: tuple[Any, ...]) -> None:
    if event in _NETWORK_EVENTS and _OFFLINE.get():
        target = args[1] if event == "socket.connect" else args[0]
        raise OfflineViolationError(
            f"check --offline tried to open a network connection ({event} {quoted(target)})",
            hint="This is a bug in patchtool; run again with --debug and report it.",
        )


def _source_problems(base: BaseRef, cache: BaseCache, repository: Path) -> list[str]:
    """What ensure_base's proof leaves to look at: the base ref it (re)wrote is
    there, and a cached sdist still matches its hash. (The commit is proven by
    ensure_base alone, the way a fresh cache would prove it: never by a message.)"""
    problems = []
    git = Git(repository)
    if git.rev_parse(base_ref_name(base.commit)) != base.commit:
        problems.append(f"the cache holds no base ref for {base.commit}")
    if isinstance(base.source, PypiSource):
        cached = cache.sdist_path(base.source)
        if cached.is_file() and sha256_of(cached) != base.source.sha256:
            problems.append(f"the cached {cached} does not match the recorded sha256")
    return problems


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
    unsafe_skip = _skipped(
        device, base_id, ("apply", "export"), "the base or a patch is unsafe or damaged"
    )
    # Safety is judged on the base (here) and on every commit as the series is
    # applied: the first part is safety's time, the rest is in apply's.
    started = time.perf_counter()
    try:
        judge = TreeJudge(Git(repository), base.commit, f"base {base.label}")
    except PatchtoolError as error:
        return [_timed(_failure(device, base_id, "safety", error), started), *unsafe_skip]
    safety = _timed(CheckRecord(device, base_id, "safety", True), started)
    started = time.perf_counter()
    with scratch_folder(scratch, "check-") as folder:
        tree = folder / base.project
        checkout_base(repository, tree, base, device)
        try:
            apply_series(tree, loaded, judge, three_way=False, reporter=reporter)
        except ConflictError as error:
            failed = _timed(_failure(device, base_id, "apply", error), started)
            judged_start = time.perf_counter()
            paths_only = _timed(_judge_paths_only(tree, loaded), judged_start)
            skipped = _skipped(device, base_id, ("export",), "the series does not apply")
            return [paths_only, failed, *skipped]
        except PatchtoolError as error:
            return [_timed(_failure(device, base_id, "safety", error), started), *unsafe_skip]
        applied = [safety, _timed(CheckRecord(device, base_id, "apply", True), started)]
        if loaded.skipped:
            why = ("not run: public part only (the private patches were left out)",)
            return [*applied, CheckRecord(device, base_id, "export", False, why, skipped=True)]
        started = time.perf_counter()
        try:
            known = loaded.plaintext_digests()
            plan = prepare_export(Git(tree), base, base.commit, config, recorded=known).plan
        except PatchtoolError as error:
            return [*applied, _timed(_failure(device, base_id, "export", error), started)]
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
        return _failure(base.device, base.base_id, "safety", error)
    return CheckRecord(
        base.device,
        base.base_id,
        "safety",
        True,
        ("judged by the paths git reads only: the series does not apply",),
    )


# --------------------------------------------------------------------------- helpers


def _failure(device: str, base_id: str, check: str, error: PatchtoolError) -> CheckRecord:
    details = [*error.message.splitlines()]
    return CheckRecord(
        device, base_id, check, False, tuple(details), error.exit_code, hint=error.hint
    )


def _skipped(device: str, base_id: str, checks: tuple[str, ...], why: str) -> list[CheckRecord]:
    """Checks not run because an earlier one of the base failed: skipped (no code of
    their own; the failure that stopped them has one)."""
    return [
        CheckRecord(device, base_id, c, False, (f"not run: {why}",), skipped=True) for c in checks
    ]
