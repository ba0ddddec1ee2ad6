"""`patch`: the commits after the base in a build tree, back into the store, byte-stable.

The commits go through the export pipeline (series/pipeline.py: rendered by
format-patch with every option that affects the bytes pinned, private patches
sealed, the write planned) and are written by trees/export.py: only the base's
folder, and in it only `series` and the patch files `series` lists (old or
new), as one atomic change, then remembered in the tree's record.

Refused: a tree made with --public-only (it would drop the private patches), a
private change that lost its trailer (it would be published), and an export
over a series that changed since the tree last read it (a lost update).
Every exported patch is linted with `check`'s rules (lint.series_findings, the
one rule set): after writing, each finding is a warning that names the patch
and says how to fix its commit in the tree; with `strict` the export fails
instead and writes nothing. A private patch whose recipients are not
device.toml's is encrypted anew, so what `patch` writes never fails `check`'s
recipients rule.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchtool.commands.jobs import DeviceJob
from patchtool.core.errors import DirtyTreeError, StaleStoreError, UsageError, quoted
from patchtool.core.gitops import Git, user_identity
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.series.lint import PatchLint, lint_refusal, with_origin_body
from patchtool.series.pipeline import prepare_export
from patchtool.store.model import BaseRef
from patchtool.store.series import parse_series, series_digest
from patchtool.store.transaction import ExportPlan, recover_export
from patchtool.trees.export import export_tree
from patchtool.trees.in_progress import refuse_in_progress
from patchtool.trees.record import TreeRecord, find_tree, read_record
from patchtool.trees.work import tree_work, uncommitted_files


@dataclass(frozen=True, kw_only=True)
class ExportOptions(DeviceJob):
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
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


def commit_origin(device: str, files: list[str]) -> str:
    """The body `patch -m` gives a commit whose message has none: where its change
    came from (lint's message rules want a body; the user may write a better one)."""
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return (
        f"Committed with `patchtool patch -m` from the changes to {shown} left "
        f"uncommitted in the build tree of {device}."
    )


def export_series(options: ExportOptions, reporter: Reporter) -> ExportResult:
    """Export the device's build tree into its base's folder, holding the device's
    locks (the store's exclusive, unless `check`)."""
    with device_locks(
        options.build_dir,
        options.store.root,
        options.device,
        reporter,
        writes_store=not options.check,
        wait=options.wait,
    ):
        tree = find_tree(options.build_dir, options.device, options.given_dir)
        return _export(options, tree, reporter)


def _refuse_public_only(
    tree: Path, record: TreeRecord, base: BaseRef, options: ExportOptions
) -> None:
    """A tree made with --public-only is refused (exit 5, a tree that cannot be
    exported as it is): its export would remove the private patches. The way out
    depends on the work it holds: none, and a tree made with the identity is all
    it takes; some, and unpatch --force keeps it in a backup to bring over."""
    work = tree_work(Git(tree), base, record.base_commit, options.keyring)
    unpatch = f"patchtool unpatch -d {options.device}"
    if work:
        hint = (
            f"Make the tree with your identity (`{unpatch} --force --identity FILE` moves this "
            f"one to backups/ first), then bring your work over from the backup: "
            + work.describe().replace("\n  ", "; ")
            + "."
        )
    else:
        hint = (
            f"This tree holds no work of its own: `{unpatch} --identity FILE` makes it anew with "
            "the private patches."
        )
    raise DirtyTreeError(
        f"the build tree {tree} was made with --public-only: it lacks the private "
        f"patches {', '.join(record.skipped_private)}, and exporting it would remove "
        "them from the store",
        hint=hint,
    )


def _export(options: ExportOptions, tree: Path, reporter: Reporter) -> ExportResult:
    refuse_in_progress(tree.parent, tree, "patch")
    record = read_record(tree)
    base = options.store.resolve_base(options.device, options.base or record.base_id)
    if base.commit != record.base_commit:
        raise UsageError(
            f"the build tree {tree} was made from base {record.base_id} "
            f"({record.base_commit[:12]}), not {base.base_id} ({base.commit[:12]})",
            hint="Leave out --commit-id, or unpatch the base you want to export to.",
        )
    if record.skipped_private:
        _refuse_public_only(tree, record, base, options)
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
        reporter.step(f"committing {len(dirty)} changed file(s) as {quoted(options.message)}")
        git.run("add", "--all")
        message = with_origin_body(options.message, commit_origin(options.device, dirty))
        git.run("commit", "--quiet", "--no-verify", "-m", message, env=identity)
        committed = git.text("rev-parse", "HEAD")
    elif options.message is not None:
        # A warning, not a refusal: `patch -m` run again after its commit (a rerun,
        # a script) exports the same commits, as it would have the first time.
        reporter.warn(
            f"-m {quoted(options.message)} made no commit: the build tree {tree} has no "
            "uncommitted changes; its commits are exported as they are"
        )
    if not options.check:
        # Also here, not only in write_plan: after a run killed just after its
        # swap, the next export is a no-op and never reaches write_plan.
        recover_export(base.path)
    reporter.step(f"rendering commits after {record.base_id} ({record.base_commit[:12]})")
    export = prepare_export(
        git,
        base,
        record.base_commit,
        device,
        recorded=record.private,
        keyring=options.keyring,
        reencrypt=options.reencrypt,
        private_patch_ids=() if options.publish else record.private_patch_ids,
    )
    plan, total = export.plan, len(export.patches)
    if options.strict and export.lint:
        raise lint_refusal(tree, base, export.lint, total, committed)
    recipients = ", ".join(r.name for r in device.recipients)
    for patch in export.resealed:
        before = ", ".join(patch.resealed_from or ()) or "no one"
        reporter.info(
            f"{patch.name}: encrypted anew to device.toml's recipients {recipients} "
            f"(it was encrypted to {before})"
        )
    if options.check:
        if not plan.is_noop:
            raise StaleStoreError(
                f"{base.path} differs from what a fresh export of {tree} would write:\n  "
                + "\n  ".join(plan.describe()),
                hint=f"Run `patchtool patch --device-type {options.device}` and commit the store.",
            )
        return ExportResult(plan=plan, committed=committed, written=False)
    export_tree(export, tree, record, git, "patch", reporter)
    return ExportResult(
        plan=plan, committed=committed, written=not plan.is_noop, lint=tuple(export.lint)
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
        export = prepare_export(
            git, base, record.base_commit, device, recorded=record.private, keyring=options.keyring
        )
        if export.plan.is_noop:
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
