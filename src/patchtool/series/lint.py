"""Lint: the style rules every patch of the store must meet, in one place.

`series_findings` is the rule set, the one function both sides run: `check`
on the store's files as they are, `patch` and `import` (through the export
pipeline, series/pipeline.py) on the files they are about to write, so that
what `check` would refuse is reported where it can still be fixed (in the
build tree's commits), not only later in CI. A rule added there is a rule of
both. The rules:

    subject          the message has a subject
    body             a body that says why the change is needed
    upstream-status  exactly one valid `Upstream-Status:` trailer in the last paragraph
    changes          the patch reads as a patch and changes some file
    whitespace       no added line ends in spaces or tabs
    conflict-marker  no added line is a merge conflict marker
    recipients       a private patch is encrypted to exactly the recipients
                     device.toml names

and, of the base folder (`unlisted_files`; check's `series` record): `series`
lists every patch file the folder holds.

Upstream-Status values (after Yocto's list): `Pending`, `Submitted <where>`,
`Backport [<where>]`, `Denied <why>`, `Inappropriate <why>` and
`Inactive-Upstream <details>`; brackets around the detail are optional. The
old `Accepted` is refused (Yocto replaced it by `Backport`).

Lint reads a patch with unidiff: it only ever reports, it decides nothing about
what a patch may touch (that is git's reading, in safety.py). It never prints.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from patchtool.core.errors import LintError, PatchtoolError, quoted
from patchtool.core.report import Reporter
from patchtool.series.privacy import recipient_changes, stored_limit
from patchtool.series.rendering import RenderedPatch
from patchtool.store.files import read_store_file
from patchtool.store.model import PATCH_SUFFIX, PRIVATE_SUFFIX, BaseRef, PatchLimits
from patchtool.store.private_file import PrivatePatch, parse_private_patch

Rule = Literal[
    "unreadable",
    "subject",
    "body",
    "upstream-status",
    "changes",
    "whitespace",
    "conflict-marker",
    "recipients",
]
# Rules about the commit message (fixed by rewording the commit); recipients
# are the store file's (fixed by exporting again); the others are about the
# lines it changes (fixed by editing the commit).
MESSAGE_RULES: frozenset[Rule] = frozenset({"subject", "body", "upstream-status"})
# How a private patch comes to be encrypted to device.toml's recipients: an
# export re-encrypts every file whose recipients differ (series/rendering.py).
REENCRYPT = "re-encrypt: `patchtool patch`"

UPSTREAM_STATUS_VALUES = (
    "Pending, Submitted <where>, Backport [<where>], Denied <why>, Inappropriate <why>, "
    "Inactive-Upstream <details>"
)
# Past this many findings a patch's list ends in "... and K more": a real
# vendor patch can add a hundred lines with trailing whitespace.
MAX_FINDINGS_SHOWN = 10

_UPSTREAM_STATUS = re.compile(
    r"^(Pending|Submitted\s+\S.*|Backport(\s+\S.*)?|Denied\s+\S.*|Inappropriate\s+\S.*"
    r"|Inactive-Upstream\s+\S.*)$"
)
_TRAILER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*:\s")
_MARKERS = (b"<<<<<<<", b">>>>>>>", b"|||||||")


@dataclass(frozen=True)
class LintFinding:
    """One thing a rule found in one patch."""

    patch: str  # the patch file's name
    rule: Rule
    message: str  # what is wrong, e.g. "line 19: adds trailing whitespace to demo/core.py"
    # Where the lines came from when they are another tool's as imported (its
    # `Imported-From:` trailer, e.g. "FlagScale"): trailing whitespace there is the
    # vendor's own; it is reported, and accepted (see `accepted`).
    vendors_own: str | None = None

    @property
    def in_message(self) -> bool:
        return self.rule in MESSAGE_RULES

    def __str__(self) -> str:
        return f"{self.patch}: {self.message}"


@dataclass(frozen=True)
class LintSubject:
    """One patch of a series as the rules read it: its file's name and place in
    the store, its text when it is at hand (a private patch's plaintext), and a
    private patch's clear header when it was already read."""

    name: str
    path: Path  # where the store holds it (or is about to)
    text: bytes | None = None  # None: read the file (a private one without a key: no text)
    header: PrivatePatch | None = None
    rendered: bool = False  # `text` is what git just rendered from a commit (see _lint_patch)

    @property
    def private(self) -> bool:
        return self.name.endswith(PRIVATE_SUFFIX)


def series_findings(
    subjects: Iterable[LintSubject], recipients: Sequence[str], limits: PatchLimits
) -> list[LintFinding]:
    """The rule set: every finding for the patches of a series, in series order,
    each patch's message first, then the lines it adds, then (a private patch)
    its recipients against device.toml's `recipients` (names). What `check`
    refuses and what `patch` and `import` warn about, by construction."""
    found: list[LintFinding] = []
    for subject in subjects:
        if subject.text is not None:
            found.extend(_lint_patch(subject.text, subject.name, subject.rendered))
        elif not subject.private:
            found.extend(_lint_file(subject.path, limits))
        if subject.private:
            found.extend(_recipient_findings(subject, recipients, limits))
    return found


def unlisted_files(folder: Path, listed: Collection[str]) -> list[str]:
    """The patch files of a base folder that `series` does not list (`listed`:
    what it lists, or will once an export is written), each as the problem it is."""
    unlisted = sorted(
        path.name
        for suffix in (PATCH_SUFFIX, PRIVATE_SUFFIX)
        for path in folder.glob(f"*{suffix}")
        if path.name not in listed
    )
    return [f"{name} is in {folder} but series does not list it" for name in unlisted]


def _lint_file(path: Path, limits: PatchLimits) -> list[LintFinding]:
    """Lint a patch file of the store (read as the store is read: no links, size-limited)."""
    try:
        data = read_store_file(path, limits.patch_bytes)
    except PatchtoolError as error:
        return [LintFinding(path.name, "unreadable", f"cannot be read ({error.message})")]
    return _lint_patch(data, path.name)


def _recipient_findings(
    subject: LintSubject, recipients: Sequence[str], limits: PatchLimits
) -> list[LintFinding]:
    """A private patch must be encrypted to exactly the recipients device.toml
    names: one removed there can still read it, one added cannot (yet)."""
    header = subject.header
    if header is None:
        try:
            data = read_store_file(subject.path, stored_limit(limits))
            header = parse_private_patch(subject.path, data)
        except PatchtoolError as error:
            return [LintFinding(subject.name, "unreadable", f"cannot be read ({error.message})")]
    stale, missing = recipient_changes(header.recipients, recipients)
    findings = []
    if stale:
        findings.append(
            LintFinding(
                subject.name,
                "recipients",
                f"is encrypted to {', '.join(stale)}, whom device.toml no longer names "
                f"({REENCRYPT})",
            )
        )
    if missing:
        findings.append(
            LintFinding(
                subject.name,
                "recipients",
                f"is not encrypted to {', '.join(missing)}, whom device.toml names ({REENCRYPT})",
            )
        )
    return findings


# An added line that could break a line rule (trailing blank, conflict marker);
# also matches header lines, which only makes a patch be read in full.
_LINE_RULE_CANDIDATE = re.compile(
    rb"^\+[^\n]*[ \t]\r?$|^\+(?:<<<<<<<|>>>>>>>|\|\|\|\|\|\|\||=======)", re.MULTILINE
)


def _lint_patch(data: bytes, name: str, rendered: bool = False) -> list[LintFinding]:
    """Every finding for one patch file's bytes: its message first, then the lines it adds.

    `rendered`: git just wrote the patch from a commit (format-patch), so it reads
    as a patch and changes files (rendering refuses an empty commit); unless some
    added line could break a line rule, only its message is read, which spares
    reading a megabyte of hunks line by line."""
    if rendered and _LINE_RULE_CANDIDATE.search(data) is None:
        return [
            LintFinding(name, rule, text) for rule, text in _lint_message(_message_of(data))
        ]
    message, files, problem = _read_for_lint(data)
    findings = [LintFinding(name, rule, text) for rule, text in _lint_message(message)]
    if problem is not None:
        findings.append(LintFinding(name, "changes", problem))
    elif not files:
        findings.append(LintFinding(name, "changes", "changes no file"))
    vendor = imported_from(message)
    for linted in files:
        findings.extend(
            LintFinding(name, rule, text, vendor if rule in VENDOR_RULES else None)
            for rule, text in _lint_added_lines(linted)
        )
    return findings


# The one rule for what is the vendor's own in an imported patch: trailing
# whitespace in the lines another tool's patch adds, as that tool has them.
IMPORTED_TRAILER = "Imported-From"
VENDOR_RULES: frozenset[Rule] = frozenset({"whitespace"})


def imported_from(message: str) -> str | None:
    """The tool a patch was imported from: its `Imported-From:` trailer's first word."""
    found = re.search(rf"^{IMPORTED_TRAILER}:[ \t]*(\S+)", message, re.MULTILINE)
    return found.group(1) if found else None


def accepted(findings: Iterable[LintFinding]) -> tuple[list[LintFinding], str | None]:
    """The findings that fail lint, and one line about those that are the
    vendor's own (reported, not failed): how many, and from which tool."""
    failing = [f for f in findings if f.vendors_own is None]
    own = [f for f in findings if f.vendors_own is not None]
    if not own:
        return failing, None
    tools = ", ".join(sorted({f.vendors_own for f in own if f.vendors_own}))
    patches = len({f.patch for f in own})
    return failing, (
        f"{len(own)} line(s) with trailing whitespace in {patches} patch(es) imported from "
        f"{tools}: the vendor's own, reported and accepted"
    )


def capped(findings: Iterable[LintFinding], limit: int = MAX_FINDINGS_SHOWN) -> list[str]:
    """The findings as lines, at most `limit` per patch, then "<patch>: ... and K more"."""
    by_patch: dict[str, list[LintFinding]] = {}
    for finding in findings:
        by_patch.setdefault(finding.patch, []).append(finding)
    lines: list[str] = []
    for patch, found in by_patch.items():
        lines.extend(str(f) for f in found[:limit])
        if len(found) > limit:
            lines.append(f"{patch}: ... and {len(found) - limit} more")
    return lines


MESSAGE_ADVICE = (
    "a patch's message needs a subject line, a blank line, a body that says why the change "
    "is needed, and as its last paragraph a trailer line such as `Upstream-Status: Pending` "
    f"(the value one of {UPSTREAM_STATUS_VALUES})"
)


def message_advice(findings: Iterable[LintFinding]) -> str | None:
    """What a commit message needs, for findings about messages (None if there are none)."""
    return MESSAGE_ADVICE if any(f.in_message for f in findings) else None


# `--whitespace` makes rebase use the apply backend and rewrite every commit,
# even those already on top of the base (tested with git 2.39).
WHITESPACE_FIX = "git rebase --whitespace=fix patchtool/base"


def whitespace_advice(findings: Iterable[LintFinding], tree: Path) -> str | None:
    """The one-liner that strips trailing whitespace from every commit of a build
    tree after its base (None if no finding is about whitespace)."""
    if not any(f.rule == "whitespace" for f in findings):
        return None
    return (
        f"to strip the trailing whitespace from every commit at once: in {tree}, run "
        f"`{WHITESPACE_FIX}`, then `patchtool patch`"
    )


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _LintedFile:
    """One file a patch changes, with the lines it adds."""

    path: str
    added: tuple[tuple[int, bytes], ...]  # (line of the patch file, content)


def _read_for_lint(data: bytes) -> tuple[str, list[_LintedFile], str | None]:
    from unidiff.errors import UnidiffParseError
    from unidiff.patch import PatchSet

    text = data.decode("utf-8", "surrogateescape")
    message = _message_of(data)
    try:
        patch_set = PatchSet(text)
    except UnidiffParseError as error:
        return message, [], f"cannot be read as a patch: {error}"
    files = []
    for patched in patch_set:
        info = str(patched.patch_info or "")
        is_link = re.search(r"^(new file mode|new mode) 120000$", info, re.M) is not None
        if patched.is_binary_file or patched.is_removed_file or is_link:
            # It changes a file all the same (a deletion-only patch changes files);
            # it adds no line to lint.
            files.append(_LintedFile(patched.path, ()))
            continue
        added = tuple(
            (line.diff_line_no or 0, line.value.rstrip("\n").encode("utf-8", "surrogateescape"))
            for hunk in patched
            for line in hunk
            if line.is_added
        )
        files.append(_LintedFile(patched.path, added))
    return message, files, None


def _message_of(data: bytes) -> str:
    """The mail before the first `diff --git` line."""
    first = re.search(rb"^diff --git ", data, re.MULTILINE)
    head = data[: first.start()] if first else data
    lines = head.decode("utf-8", "surrogateescape").split("\n")
    return "\n".join(lines[:-1] if first else lines)


def _lint_message(message: str) -> list[tuple[Rule, str]]:
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
    problems: list[tuple[Rule, str]] = []
    if not subject:
        problems.append(("subject", "has no subject"))
    if not prose:
        problems.append(("body", "has no body that says why the change is needed"))
    statuses = [
        t.split(":", 1)[1].strip() for t in trailers if t.lower().startswith("upstream-status:")
    ]
    if not statuses:
        problems.append(("upstream-status", "has no Upstream-Status: trailer"))
    elif len(statuses) > 1:
        problems.append(("upstream-status", "has more than one Upstream-Status: trailer"))
    elif not _UPSTREAM_STATUS.match(statuses[0]):
        problems.append(
            (
                "upstream-status",
                f"Upstream-Status {quoted(statuses[0])} is not one of {UPSTREAM_STATUS_VALUES}",
            )
        )
    return problems


def with_origin_body(message: str, origin: str) -> str:
    """A message as the message rules want it, for the commits patchtool makes
    from changes a person gave (`import`, `patch -m`): one with a body is kept as
    it is; one without gets `origin` (a sentence naming where the change came
    from) as its body and, without one, an `Upstream-Status: Pending` trailer, so
    that lint only asks for what needs a person."""
    subject, _, rest = message.strip().partition("\n\n")
    paragraphs = [p.strip() for p in re.split(r"\n[ \t]*\n", rest) if p.strip()]
    last = paragraphs[-1].splitlines() if paragraphs else []
    trailers = last if last and all(_TRAILER.match(line) for line in last) else []
    if paragraphs[: -1 if trailers else None]:
        return message
    if not any(t.lower().startswith("upstream-status:") for t in trailers):
        trailers = [*trailers, "Upstream-Status: Pending"]
    return f"{subject}\n\n{origin}\n\n" + "\n".join(trailers) + "\n"


def _lint_added_lines(change: _LintedFile) -> list[tuple[Rule, str]]:
    problems: list[tuple[Rule, str]] = []
    added = change.added
    text = [c for _, c in added]
    has_markers = any(c.startswith(_MARKERS) for c in text)
    for line, content in added:
        stripped = content[:-1] if content.endswith(b"\r") else content
        if stripped != stripped.rstrip(b" \t"):
            problems.append(
                ("whitespace", f"line {line}: adds trailing whitespace to {change.path}")
            )
        marker = content.rstrip(b"\r")
        # A lone ======= is also an RST underline; it is a conflict marker only
        # next to the other two kinds, which git always writes together.
        if (marker.startswith(_MARKERS) and marker[7:8] in (b"", b" ")) or (
            has_markers and marker == b"======="
        ):
            problems.append(
                ("conflict-marker", f"line {line}: adds a conflict marker to {change.path}")
            )
    return problems


@dataclass(frozen=True)
class PatchLint:
    """A rendered patch that check's lint would refuse, and why."""

    patch: RenderedPatch
    position: int  # 1-based, among the tree's commits after the base
    findings: tuple[LintFinding, ...]


def lint_rendered(
    patches: Sequence[RenderedPatch], base: BaseRef, recipients: Sequence[str], limits: PatchLimits
) -> tuple[list[PatchLint], str | None]:
    """`series_findings` for the patches an export is about to write into `base`'s
    folder (a private one by its plaintext and its sealed file's header), by patch:
    those that would fail check's lint, with their findings, and the line about
    the findings that are the vendor's own (see `accepted`)."""
    subjects = [
        LintSubject(
            p.name,
            base.path / p.name,
            p.data,
            parse_private_patch(base.path / p.name, p.sealed) if p.sealed is not None else None,
            rendered=True,
        )
        for p in patches
    ]
    failing, own = accepted(series_findings(subjects, recipients, limits))
    by_name: dict[str, list[LintFinding]] = {}
    for finding in failing:
        by_name.setdefault(finding.patch, []).append(finding)
    linted = [
        PatchLint(patch, position, tuple(by_name[patch.name]))
        for position, patch in enumerate(patches, start=1)
        if patch.name in by_name
    ]
    return linted, own


def fix_advice(tree: Path, linted: PatchLint, total: int) -> str:
    """How to fix one patch's commit in the build tree, then export again."""
    name, commit = linted.patch.name, linted.patch.commit[:10]
    lines = not all(f.in_message for f in linted.findings)
    if linted.position == total:
        how = (
            "change the lines, `git add` them and run `git commit --amend`"
            if lines
            else "run `git commit --amend`"
        )
        where = f"it is the tree's last commit ({commit}): in {tree}, {how}"
    else:
        mark = (
            "`edit` (change the lines, `git add` them, `git commit --amend`, "
            "`git rebase --continue`)"
            if lines
            else "`reword`"
        )
        where = (
            f"it is commit {linted.position} of {total} ({commit}): in {tree}, run "
            f"`git rebase -i patchtool/base` and mark {commit} {mark}"
        )
    return f"{name} would fail `patchtool check`; {where}, then run `patchtool patch` again"


def warn_lint(reporter: Reporter, tree: Path, linted: list[PatchLint], total: int) -> None:
    """One warning per finding (at most lint.MAX_FINDINGS_SHOWN per patch), and how to fix it."""
    for one in linted:
        for line in capped(one.findings):
            reporter.warn(line)
        reporter.warn(fix_advice(tree, one, total))
    advice = message_advice(f for one in linted for f in one.findings)
    if advice is not None:
        reporter.warn(advice)
    whitespace = whitespace_advice((f for one in linted for f in one.findings), tree)
    if whitespace is not None:
        reporter.warn(whitespace)


def lint_refusal(
    tree: Path, base: BaseRef, linted: list[PatchLint], total: int, committed: str | None
) -> LintError:
    findings = [f for one in linted for f in one.findings]
    kept = f" (the commit -m made, {committed[:10]}, stays in the tree)" if committed else ""
    advice = message_advice(findings)
    return LintError(
        f"{len(linted)} of {total} patch(es) would fail `patchtool check`'s lint; nothing "
        f"was written to {base.path}{kept}:\n  " + "\n  ".join(capped(findings)),
        hint="; ".join(fix_advice(tree, one, total) for one in linted)
        + (f". Note: {advice}." if advice else "."),
    )
