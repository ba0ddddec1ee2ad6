"""`check`: CI checks and lint over the store; changes nothing.

For every device (or the one asked for) and every base (or the one asked for)
it records one `CheckRecord` per check:

    config   device.toml and base.toml parse and are valid
    source   the base's source yields the recorded commit (and sdist sha256)
    series   `series` lists exactly the *.patch files of the base folder
    safety   no patch exceeds the device's limits, is damaged, or (as git
             applies it) reaches outside the tree, into .git or through a
             symlink; the base tree is judged the same way (safety.py)
    apply    the series applies with `git am`, no fuzz, no 3-way help
    export   a fresh export of that tree writes the store byte for byte
    lint     subject, a body that says why, a valid Upstream-Status trailer,
             no added trailing whitespace or conflict markers

The tree for `safety`, `apply` and `export` is built in a temporary folder
with apply.py's pieces; the user's build folder is never read or written. The
base cache may be filled (a cold cache fetches, as `unpatch` would), and the
cached base is always verified object by object. When the series does not
apply, `safety` judges the paths git reads from every patch instead.

Exit codes: every failed check carries the code of its kind of problem
(config and source: 6 or the fetch error's own code; safety: 10, or 6 for a
corrupt patch; apply: 4; series, export and lint: 7, "the store needs work").
The run exits with the most serious code present, in the order
10 > 6 > 3 > 11 > 4 > 7.

Upstream-Status values (after Yocto's list): `Pending`, `Submitted <where>`,
`Backport [<where>]`, `Denied <why>`, `Inappropriate <why>` and
`Inactive-Upstream <details>`; brackets around the detail are optional. The
old `Accepted` is refused (Yocto replaced it by `Backport`).
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConflictError, ExitCode, PatchtoolError
from .gitops import Git
from .locks import store_lock
from .report import Reporter
from .safety import TreeJudge, judge_paths, paths_git_reads
from .store import (
    BASE_FILE,
    DEVICE_FILE,
    PATCH_SUFFIX,
    BaseRef,
    PatchLimits,
    PatchSeries,
    PypiSource,
    Store,
    parse_base,
    parse_series,
    read_store_file,
)
from .upstream import BaseCache, base_ref_name, ensure_base, sha256_of

CHECKS = ("config", "source", "series", "safety", "apply", "export", "lint")
_SEVERITY = (
    ExitCode.UNSAFE,
    ExitCode.INTEGRITY,
    ExitCode.NOT_FOUND,
    ExitCode.NETWORK,
    ExitCode.CONFLICT,
    ExitCode.STALE,
)
_UPSTREAM_STATUS = re.compile(
    r"^(Pending|Submitted\s+\S.*|Backport(\s+\S.*)?|Denied\s+\S.*|Inappropriate\s+\S.*"
    r"|Inactive-Upstream\s+\S.*)$"
)
_TRAILER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*:\s")
_MARKERS = (b"<<<<<<<", b">>>>>>>", b"|||||||")


class ChecksFailedError(PatchtoolError):
    """Some checks failed; `exit_code` is the most serious code among them."""

    def __init__(self, message: str, exit_code: ExitCode) -> None:
        super().__init__(message, hint="Fix what the report above lists and run check again.")
        self.exit_code = exit_code


@dataclass(frozen=True)
class CheckOptions:
    store: Store
    cache: BaseCache
    device: str | None = None
    commit_id: str | None = None
    archive_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class CheckRecord:
    device: str
    base: str  # "" for the device's own files
    check: str
    ok: bool
    details: tuple[str, ...] = ()
    exit_code: ExitCode = ExitCode.OK  # for a failure: the code its problem maps to

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "base": self.base,
            "check": self.check,
            "ok": self.ok,
            "details": list(self.details),
        }


@dataclass
class CheckReport:
    records: list[CheckRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckRecord]:
        return [r for r in self.records if not r.ok]

    @property
    def exit_code(self) -> ExitCode:
        codes = {r.exit_code for r in self.failed if r.exit_code != ExitCode.OK}
        for code in _SEVERITY:
            if code in codes:
                return code
        return min(codes) if codes else ExitCode.OK

    def raise_for_failures(self) -> None:
        failed = [r for r in self.failed if r.exit_code != ExitCode.OK]
        if failed:
            names = ", ".join(f"{r.device}/{r.base or DEVICE_FILE} {r.check}" for r in failed)
            raise ChecksFailedError(f"{len(failed)} check(s) failed: {names}", self.exit_code)


def run_checks(options: CheckOptions, reporter: Reporter) -> CheckReport:
    report = CheckReport()
    devices = [options.device] if options.device else options.store.device_names()
    for device in devices:
        _check_device(options, device, report, reporter)
    return report


def _check_device(
    options: CheckOptions, name: str, report: CheckReport, reporter: Reporter
) -> None:
    store = options.store
    try:
        limits = store.device(name).limits
    except PatchtoolError as error:
        if options.device:  # an unknown device on the command line is a usage problem
            raise
        report.records.append(_failure(name, "", "config", error))
        return
    report.records.append(CheckRecord(name, "", "config", True))
    # Shared: other checks and unpatch may read along, an export waits.
    with store_lock(store, name, False, reporter):
        _check_bases(options, name, limits, report, reporter)


def _check_bases(
    options: CheckOptions,
    name: str,
    limits: PatchLimits,
    report: CheckReport,
    reporter: Reporter,
) -> None:
    store = options.store
    folder = store.root / name
    base_files = sorted(folder.glob(f"*/{BASE_FILE}"))
    if options.commit_id is not None:
        chosen = store.resolve_base(name, options.commit_id)
        base_files = [chosen.path / BASE_FILE]
    for base_file in base_files:
        base_id = base_file.parent.name
        try:
            base = parse_base(base_file, name, base_id)
        except PatchtoolError as error:
            report.records.append(_failure(name, base_id, "config", error))
            report.records.extend(_skipped(name, base_id, CHECKS[1:], "base.toml is invalid"))
            continue
        report.records.append(CheckRecord(name, base_id, "config", True))
        reporter.step(f"checking {name}/{base_id}")
        report.records.extend(_check_base(options, base, limits, reporter))


def _check_base(
    options: CheckOptions, base: BaseRef, limits: PatchLimits, reporter: Reporter
) -> list[CheckRecord]:
    device, base_id = base.device, base.base_id
    records: list[CheckRecord] = []

    def record(check: str, problems: list[str], code: ExitCode) -> None:
        records.append(
            CheckRecord(
                device,
                base_id,
                check,
                not problems,
                tuple(problems),
                code if problems else ExitCode.OK,
            )
        )

    repository: Path | None = None
    try:
        # The CI gate hashes the base again, whatever an earlier run recorded.
        repository = ensure_base(
            base, options.cache, reporter, options.archive_paths, verify="full"
        )
        record("source", _source_problems(base, options.cache, repository), ExitCode.INTEGRITY)
    except PatchtoolError as error:
        records.append(_failure(device, base_id, "source", error))

    series: PatchSeries | None = None
    try:
        series = parse_series(base)
        listed = set(series.names)
        unlisted = sorted(
            p.name for p in base.path.glob(f"*{PATCH_SUFFIX}") if p.name not in listed
        )
        record(
            "series",
            [f"{n} is in {base.path} but series does not list it" for n in unlisted],
            ExitCode.STALE,
        )
    except PatchtoolError as error:
        records.append(_failure(device, base_id, "series", error))

    if series is None:
        records.extend(
            _skipped(
                device, base_id, ("safety", "apply", "export", "lint"), "series cannot be read"
            )
        )
        return records

    if repository is not None:
        records.extend(_safety_apply_export(base, series, repository, limits, reporter))
    else:
        records.extend(
            _skipped(device, base_id, ("safety", "apply", "export"), "the base is not available")
        )

    lint: list[str] = []
    for path in series.paths():
        lint.extend(f"{path.name}: {problem}" for problem in lint_patch(path, limits))
    record("lint", lint, ExitCode.STALE)
    return records


def _source_problems(base: BaseRef, cache: BaseCache, repository: Path) -> list[str]:
    """With a warm cache ensure_base trusts the commit it holds; look again."""
    problems = []
    git = Git(repository)
    if git.rev_parse(base_ref_name(base.commit)) != base.commit:
        problems.append(f"the cache holds no base ref for {base.commit}")
    if isinstance(base.source, PypiSource):
        message = git.run("show", "-s", "--format=%B", base.commit, check=False).text
        expected = f"sha256 {base.source.sha256}"
        if expected not in message.splitlines():
            problems.append(
                f"commit {base.commit[:12]} was not imported from an sdist with the recorded "
                f"sha256 {base.source.sha256}"
            )
        cached = cache.sdist_path(base.source)
        if cached.is_file() and sha256_of(cached) != base.source.sha256:
            problems.append(f"the cached {cached} does not match the recorded sha256")
    return problems


def _safety_apply_export(
    base: BaseRef,
    series: PatchSeries,
    repository: Path,
    limits: PatchLimits,
    reporter: Reporter,
) -> list[CheckRecord]:
    from .apply import apply_series, checkout_base
    from .export import plan_export, render_patches

    device, base_id = base.device, base.base_id
    unsafe_skip = _skipped(
        device, base_id, ("apply", "export"), "the base or a patch is unsafe or damaged"
    )
    try:
        judge = TreeJudge(Git(repository), base.commit, f"base {base.label}")
    except PatchtoolError as error:
        return [_failure(device, base_id, "safety", error), *unsafe_skip]
    with tempfile.TemporaryDirectory(prefix="patchtool-check-") as folder:
        tree = Path(folder) / base.project
        checkout_base(repository, tree, base, device)
        try:
            apply_series(tree, series, judge, limits, three_way=False, reporter=reporter)
        except ConflictError as error:
            safety = _judge_paths_only(tree, series)
            skipped = _skipped(device, base_id, ("export",), "the series does not apply")
            return [safety, _failure(device, base_id, "apply", error), *skipped]
        except PatchtoolError as error:
            return [_failure(device, base_id, "safety", error), *unsafe_skip]
        applied = [
            CheckRecord(device, base_id, "safety", True),
            CheckRecord(device, base_id, "apply", True),
        ]
        try:
            plan = plan_export(base, render_patches(Git(tree), base.commit))
        except PatchtoolError as error:
            return [*applied, _failure(device, base_id, "export", error)]
    problems = [f"a fresh export would write: {line}" for line in plan.describe()]
    return [
        *applied,
        CheckRecord(
            device,
            base_id,
            "export",
            not problems,
            tuple(problems),
            ExitCode.STALE if problems else ExitCode.OK,
        ),
    ]


def _judge_paths_only(tree: Path, series: PatchSeries) -> CheckRecord:
    """A series that does not apply cannot be judged by its result: judge every
    path git reads from each patch instead."""
    base = series.base
    git = Git(tree)
    try:
        for path in series.paths():
            judge_paths(f"patch {path}", paths_git_reads(git, path))
    except PatchtoolError as error:
        return _failure(base.device, base.base_id, "safety", error)
    return CheckRecord(
        base.device,
        base.base_id,
        "safety",
        True,
        ("judged by the paths git reads only: the series does not apply",),
    )


# --------------------------------------------------------------------------- lint


@dataclass(frozen=True)
class _LintedFile:
    path: str
    added: tuple[tuple[int, bytes], ...]  # (line of the patch file, content)


def lint_patch(path: Path, limits: PatchLimits) -> list[str]:
    """Style problems of one patch file: its message and the lines it adds.

    Lint reads the patch with unidiff: it only ever reports, it decides nothing
    about what the patch may touch (that is git's reading, in safety.py)."""
    try:
        data = read_store_file(path, limits.patch_bytes)
    except PatchtoolError as error:
        return [f"cannot be read ({error.message})"]
    message, files, problem = _read_for_lint(data)
    problems = _lint_message(message)
    if problem is not None:
        problems.append(problem)
    elif not files:
        problems.append("changes no file")
    for linted in files:
        problems.extend(_lint_added_lines(linted))
    return problems


def _read_for_lint(data: bytes) -> tuple[str, list[_LintedFile], str | None]:
    from unidiff.errors import UnidiffParseError
    from unidiff.patch import PatchSet

    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    first = next((i for i, line in enumerate(lines) if line.startswith("diff --git ")), None)
    message = "\n".join(lines[:first] if first is not None else lines)
    try:
        patch_set = PatchSet(text)
    except UnidiffParseError as error:
        return message, [], f"cannot be read as a patch: {error}"
    files = []
    for patched in patch_set:
        info = str(patched.patch_info or "")
        is_link = re.search(r"^(new file mode|new mode) 120000$", info, re.M) is not None
        if patched.is_binary_file or patched.is_removed_file or is_link:
            continue
        added = tuple(
            (line.diff_line_no or 0, line.value.rstrip("\n").encode("utf-8", "surrogateescape"))
            for hunk in patched
            for line in hunk
            if line.is_added
        )
        files.append(_LintedFile(patched.path, added))
    return message, files, None


def _lint_message(message: str) -> list[str]:
    lines = message.split("\n")
    header_end = lines.index("") if "" in lines else len(lines)
    subject = ""
    for number, line in enumerate(lines[:header_end]):
        if line.lower().startswith("subject:"):
            subject = line[8:]
            for follow in lines[number + 1 : header_end]:
                if not follow[:1].isspace():
                    break
                subject += " " + follow.strip()
    subject = re.sub(r"^\s*(\[[^\]]*\]\s*)*", "", subject).strip()
    body = lines[header_end + 1 :]
    if "---" in body:
        body = body[: body.index("---")]
    while body and not body[-1].strip():
        body.pop()
    paragraphs: list[list[str]] = [[]]
    for line in body:
        if line.strip():
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    last = paragraphs[-1]
    trailers = last if last and all(_TRAILER.match(line) for line in last) else []
    prose = [line for p in (paragraphs[:-1] if trailers else paragraphs) for line in p]
    problems = []
    if not subject:
        problems.append("has no subject")
    if not prose:
        problems.append("has no body that says why the change is needed")
    statuses = [
        t.split(":", 1)[1].strip() for t in trailers if t.lower().startswith("upstream-status:")
    ]
    if not statuses:
        problems.append("has no Upstream-Status: trailer")
    elif len(statuses) > 1:
        problems.append("has more than one Upstream-Status: trailer")
    elif not _UPSTREAM_STATUS.match(statuses[0]):
        problems.append(
            f"Upstream-Status {statuses[0]!r} is not one of Pending, Submitted <where>, "
            "Backport [<where>], Denied <why>, Inappropriate <why>, Inactive-Upstream <details>"
        )
    return problems


def _lint_added_lines(change: _LintedFile) -> list[str]:
    problems = []
    added = change.added
    text = [c for _, c in added]
    has_markers = any(c.startswith(_MARKERS) for c in text)
    for line, content in added:
        stripped = content[:-1] if content.endswith(b"\r") else content
        if stripped != stripped.rstrip(b" \t"):
            problems.append(f"line {line}: adds trailing whitespace to {change.path}")
        marker = content.rstrip(b"\r")
        # A lone ======= is also an RST underline; it is a conflict marker only
        # next to the other two kinds, which git always writes together.
        if (marker.startswith(_MARKERS) and marker[7:8] in (b"", b" ")) or (
            has_markers and marker == b"======="
        ):
            problems.append(f"line {line}: adds a conflict marker to {change.path}")
    return problems


# --------------------------------------------------------------------------- helpers


def _failure(device: str, base_id: str, check: str, error: PatchtoolError) -> CheckRecord:
    details = [*error.message.splitlines()]
    return CheckRecord(device, base_id, check, False, tuple(details), error.exit_code)


def _skipped(device: str, base_id: str, checks: tuple[str, ...], why: str) -> list[CheckRecord]:
    return [CheckRecord(device, base_id, c, False, (f"not run: {why}",)) for c in checks]
