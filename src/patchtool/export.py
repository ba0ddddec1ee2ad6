"""`patch`: the commits after the base in a build tree, back into the store, byte-stable.

Each commit is rendered by `git format-patch` with every option that affects
its bytes pinned (zero commit ids, full index lines, no diffstat, no version
signature, no "n/m" numbering, myers diff, rename detection on), so that a
re-export of unchanged work writes the same bytes on any machine. File names
come from subjects, not positions: order lives in `series`, and inserting a
patch renames nothing.

Only the base's folder is written, and in it only `series` and the patch files
that `series` lists (old or new); every write is atomic.

Every exported patch is linted with `check`'s rules (lint.py): after writing,
each finding is a warning that names the patch and says how to fix its commit
in the tree; with `strict` the export fails instead and writes nothing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import (
    DirtyTreeError,
    StaleStoreError,
    UsageError,
)
from .gitops import Git, user_identity
from .jobs import DeviceJob
from .lint import (
    LintError,
    LintFinding,
    capped,
    lint_patch,
    message_advice,
    whitespace_advice,
)
from .privacy import (
    patch_ids,
)
from .rendering import (
    RenderedPatch,
    context_leaks,
    known_plaintexts,
    refuse_publishing,
    render_patches,
    seal_patches,
    stored_files,
)
from .report import Reporter
from .store import (
    BaseRef,
    ExportPlan,
    PatchSeries,
    parse_series,
    plan_export,
    recover_export,
    series_digest,
    write_plan,
)
from .tree import TreeRecord, read_record, uncommitted_files, write_record

# --------------------------------------------------------------------------- private patches


@dataclass(frozen=True, kw_only=True)
class ExportOptions(DeviceJob):
    commit_id: str | None = None
    check: bool = False
    message: str | None = None
    force: bool = False
    strict: bool = False  # fail, writing nothing, if a patch would fail check's lint
    reencrypt: bool = False  # encrypt every private patch anew, to today's recipients
    publish: bool = False  # let a private patch's change be exported in clear


@dataclass(frozen=True)
class ExportResult:
    plan: ExportPlan
    committed: str | None  # the commit `-m` made, if any
    written: bool
    lint: tuple[PatchLint, ...] = ()  # the patches check's lint would refuse


def export_series(options: ExportOptions, tree: Path, reporter: Reporter) -> ExportResult:
    """Export a build tree into its base's folder (the caller holds the device lock)."""
    record = read_record(tree)
    base = options.store.resolve_base(options.device, options.commit_id or record.base_id)
    if base.commit != record.base_commit:
        raise UsageError(
            f"the build tree {tree} was made from base {record.base_id} "
            f"({record.base_commit[:12]}), not {base.base_id} ({base.commit[:12]})",
            hint="Leave out --commit-id, or unpatch the base you want to export to.",
        )
    if record.skipped_private:
        raise UsageError(
            f"the build tree {tree} was made with --public-only: it lacks the private "
            f"patches {', '.join(record.skipped_private)}, and exporting it would remove "
            "them from the store",
            hint=f"Make the tree with your identity (`patchtool unpatch -d {options.device} "
            "--force --identity FILE`), then bring your commits over from the backup.",
        )
    device = options.store.device(options.device)
    git = Git(tree)
    committed = None
    dirty = uncommitted_files(git)
    if not options.check:
        _refuse_lost_update(git, tree, record, base, options, adds_commit=bool(dirty))
    if dirty:
        if options.message is None or options.check:
            raise DirtyTreeError(
                f"the build tree {tree} has uncommitted changes: " + ", ".join(dirty[:10]),
                hint="Commit them (each logical change its own commit), or pass -m SUBJECT "
                "to commit them all as one new patch.",
            )
        identity = user_identity(tree)
        if identity is None:
            raise UsageError(
                "patch -m commits your changes under your name, "
                "but git has no user.name/user.email",
                hint="Set them with `git config --global user.name/user.email` (or GIT_AUTHOR_* "
                "variables) and run again.",
            )
        reporter.step(f"committing {len(dirty)} changed file(s) as {options.message!r}")
        git.run("add", "--all")
        git.run("commit", "--quiet", "--no-verify", "-m", options.message, env=identity)
        committed = git.text("rev-parse", "HEAD")
    if not options.check:
        # Also here, not only in write_plan: after a run killed just after its
        # swap, the next export is a no-op and never reaches write_plan.
        recover_export(base.path)
    reporter.step(f"rendering commits after {record.base_id} ({record.base_commit[:12]})")
    patches = render_patches(git, record.base_commit)
    if not options.publish:
        refuse_publishing(git, record.private_patch_ids, patches)
    known = known_plaintexts(base, record.private, options.keyring)
    patches = seal_patches(git, patches, base, device, known, options.reencrypt)
    plan = plan_export(base, stored_files(patches))
    linted = lint_rendered(patches)
    if options.strict and linted:
        raise lint_refusal(tree, base, linted, len(patches), committed)
    if options.check:
        if not plan.is_noop:
            raise StaleStoreError(
                f"{base.path} differs from what a fresh export of {tree} would write:\n  "
                + "\n  ".join(plan.describe()),
                hint=f"Run `patchtool patch --device-type {options.device}` and commit the store.",
            )
        return ExportResult(plan=plan, committed=committed, written=False)
    if not plan.is_noop:
        write_plan(plan)
    remember_series(tree, record, parse_series(base), git, patches)
    for warning in context_leaks(patches):
        reporter.warn(warning)
    warn_lint(reporter, tree, linted, len(patches))
    return ExportResult(
        plan=plan, committed=committed, written=not plan.is_noop, lint=tuple(linted)
    )


def _refuse_lost_update(
    git: Git,
    tree: Path,
    record: TreeRecord,
    base: BaseRef,
    options: ExportOptions,
    adds_commit: bool,
) -> None:
    """An export replaces the store's series with the tree's. If the series
    changed since this tree last read or wrote it (an export from another build
    folder, a pull of the store), that would silently drop the other change,
    unless the store already holds exactly this tree's series (a run killed
    after it wrote the store, before it noted so in the tree)."""
    if not record.store_digest or options.force:
        return
    if series_digest(parse_series(base)) == record.store_digest:
        return
    if not adds_commit:
        device = options.store.device(options.device)
        known = known_plaintexts(base, record.private, options.keyring)
        rendered = seal_patches(git, render_patches(git, record.base_commit), base, device, known)
        if plan_export(base, stored_files(rendered)).is_noop:
            return
    raise StaleStoreError(
        f"the store's series in {base.path} changed since the build tree {tree} last "
        "read or wrote it (an export from another build folder, a pull, or an edit); "
        "exporting now would drop those changes",
        hint=f"Keep both: `patchtool unpatch --device-type {options.device} --force` "
        "makes a tree of the current series and keeps this one in a backup folder, "
        "from which you cherry-pick your commits. Or pass --force to replace the "
        "store's series with this tree's.",
    )


def remember_series(
    tree: Path,
    record: TreeRecord,
    series: PatchSeries,
    git: Git | None = None,
    patches: list[RenderedPatch] | None = None,
) -> None:
    """Record in the tree which state of the store's series it now matches (and,
    given the exported patches, the plaintexts of its private ones)."""
    updated = replace(record, store_digest=series_digest(series))
    if git is not None and patches is not None:
        private = [p for p in patches if p.private]
        updated = replace(
            updated,
            private={
                hashlib.sha256(p.file_data).hexdigest(): hashlib.sha256(p.data).hexdigest()
                for p in private
            },
            private_patch_ids=tuple(i for i in patch_ids(git, [p.data for p in private]) if i),
        )
    if updated != record:
        write_record(tree, updated)


# --------------------------------------------------------------------------- lint at export


@dataclass(frozen=True)
class PatchLint:
    """A rendered patch that check's lint would refuse, and why."""

    patch: RenderedPatch
    position: int  # 1-based, among the tree's commits after the base
    findings: tuple[LintFinding, ...]


def lint_rendered(patches: list[RenderedPatch]) -> list[PatchLint]:
    linted = []
    for position, patch in enumerate(patches, start=1):
        findings = lint_patch(patch.data, patch.name)
        if findings:
            linted.append(PatchLint(patch, position, tuple(findings)))
    return linted


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
