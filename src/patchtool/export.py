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
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .buildtree import (
    TreeRecord,
    TreeWork,
    read_record,
    side_work,
    uncommitted_files,
    write_record,
)
from .errors import (
    DirtyTreeError,
    IntegrityError,
    NotFoundError,
    PatchtoolError,
    StaleStoreError,
    UsageError,
)
from .faults import kill_point
from .fsutil import exchange_paths, fsync_directory, new_file_mode
from .gitops import Git, user_identity
from .lint import (
    LintError,
    LintFinding,
    capped,
    lint_patch,
    message_advice,
    whitespace_advice,
)
from .privacy import (
    PRIVATE_TRAILER,
    Keyring,
    decrypt_patch,
    is_private_message,
    patch_ids,
    plaintext_subject,
    seal,
)
from .report import Reporter
from .safety import paths_git_reads
from .store import (
    PATCH_SUFFIX,
    PRIVATE_SUFFIX,
    SERIES_FILE,
    BaseRef,
    DeviceConfig,
    PatchSeries,
    Store,
    parse_private_patch,
    parse_series,
    read_store_file,
    render_series,
    series_digest,
)

FORMAT_PATCH_OPTIONS = (
    "--zero-commit",
    "--no-signature",
    "--no-stat",
    "--full-index",
    "--binary",
    "--no-numbered",
    "--subject-prefix=PATCH",
    "--no-cover-letter",
    "--no-thread",
    "--no-attach",
    "--encoding=UTF-8",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--find-renames",
    "--diff-algorithm=myers",
    "--no-color",
    "--no-notes",
    "--numbered-files",
)


@dataclass(frozen=True)
class RenderedPatch:
    name: str
    subject: str
    commit: str
    data: bytes  # the patch (for a private one: its plaintext)
    private: bool = False  # the commit has the trailer `Patchtool-Private: yes`
    sealed: bytes | None = None  # a private patch's file: clear header and ciphertext

    @property
    def file_data(self) -> bytes:
        """What the store holds for this patch."""
        return self.sealed if self.sealed is not None else self.data


@dataclass
class ExportPlan:
    base: BaseRef
    patches: list[RenderedPatch]
    series: bytes
    new: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    series_changed: bool = False

    @property
    def is_noop(self) -> bool:
        return not (self.new or self.changed or self.removed or self.series_changed)

    def describe(self) -> list[str]:
        lines = [f"new patch {n}" for n in self.new]
        lines += [f"changed patch {n}" for n in self.changed]
        lines += [f"removed patch {n}" for n in self.removed]
        if self.series_changed:
            lines.append(f"{SERIES_FILE} order or content differs")
        return lines


def slug(subject: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")
    if len(text) > 60:
        text = text[:60].rsplit("-", 1)[0] or text[:60]
    return text or "patch"


def render_patches(git: Git, base_commit: str) -> list[RenderedPatch]:
    """Render every commit in base..HEAD as a patch file, in order."""
    # One log call gives each commit's id, parents, subject and raw changes; a
    # commit with no raw lines is empty (format-patch would silently skip it).
    log = git.run(
        "log",
        "--reverse",
        "--no-renames",
        "--raw",
        "--no-abbrev",
        f"--format=%x01%H%x00%P%x00%s%x00%(trailers:key={PRIVATE_TRAILER},valueonly,"
        "separator=%x02)%x00",
        f"{base_commit}..HEAD",
    ).text
    commits: list[tuple[str, str, bool]] = []
    merges: list[str] = []
    empty: list[str] = []
    for record in log.split("\x01")[1:]:
        commit, parents, subject, trailer, changes = record.split("\0", 4)
        commits.append((commit, subject, is_private_message(trailer, commit)))
        if " " in parents.strip():
            merges.append(commit)
        elif not changes.strip():
            empty.append(commit)
    if merges:
        raise UsageError(
            f"the build tree holds merge commits ({', '.join(m[:10] for m in merges)})",
            hint="A series is linear: rebase the work onto a straight line of commits.",
        )
    if empty:
        raise UsageError(
            "empty commits cannot be exported: " + ", ".join(c[:10] for c in empty),
            hint="Drop them with an interactive rebase (git rebase -i patchtool/base).",
        )
    if not commits:
        return []
    # Inside the tree's own .git, never the shared temporary folder: private
    # patches are rendered here in clear.
    git_dir = git.text("rev-parse", "--absolute-git-dir")
    with tempfile.TemporaryDirectory(prefix="patchtool-export-", dir=git_dir) as folder:
        git.run("format-patch", *FORMAT_PATCH_OPTIONS, "-o", folder, f"{base_commit}..HEAD")
        outputs = [Path(folder, str(i + 1)).read_bytes() for i in range(len(commits))]
    rendered = []
    used: set[str] = set()
    for (commit, subject, private), data in zip(commits, outputs, strict=True):
        stem = slug(subject)
        suffix = PRIVATE_SUFFIX if private else PATCH_SUFFIX
        name = f"{stem}{suffix}"
        counter = 2
        while name in used:
            name = f"{stem}-{counter}{suffix}"
            counter += 1
        used.add(name)
        rendered.append(RenderedPatch(name, subject, commit, data, private))
    return rendered


# --------------------------------------------------------------------------- private patches


def known_plaintexts(
    base: BaseRef, record: TreeRecord | None, keyring: Keyring | None = None
) -> dict[str, str]:
    """stored sha256 -> plaintext sha256 for the private patch files of a base
    folder: what the tree's record learnt when it read or wrote them, and with
    a keyring whatever else the folder holds (a colleague's re-encryption)."""
    known = dict(record.private) if record is not None else {}
    if keyring is None or not base.path.is_dir():
        return known
    for path in sorted(base.path.glob(f"*{PRIVATE_SUFFIX}")):
        try:
            stored = read_store_file(path, 64 << 20)
            digest = hashlib.sha256(stored).hexdigest()
            if digest not in known:
                plain = decrypt_patch(path, parse_private_patch(path, stored), keyring, ())
                known[digest] = hashlib.sha256(plain).hexdigest()
        except PatchtoolError:
            continue  # not one of ours to compare with: it counts as different
    return known


def seal_patches(
    git: Git,
    patches: list[RenderedPatch],
    base: BaseRef,
    device: DeviceConfig,
    known: Mapping[str, str],
    reencrypt: bool = False,
) -> list[RenderedPatch]:
    """Give every private patch its file: the one in the store, byte for byte,
    when it holds this very plaintext (no churn), else a new encryption to the
    device's recipients (always, with `reencrypt`)."""
    sealed = []
    for patch in patches:
        if not patch.private:
            sealed.append(patch)
            continue
        plain = hashlib.sha256(patch.data).hexdigest()
        stored_path = base.path / patch.name
        data: bytes | None = None
        if not reencrypt and stored_path.is_file() and not stored_path.is_symlink():
            stored = stored_path.read_bytes()
            if known.get(hashlib.sha256(stored).hexdigest()) == plain:
                data = stored
        if data is None:
            files = paths_git_reads(git, stored_path, data=patch.data)
            data = seal(
                patch.data, plaintext_subject(patch.data), files, device.recipients, device.path
            )
        sealed.append(replace(patch, sealed=data))
    return sealed


def context_leaks(patches: list[RenderedPatch]) -> list[str]:
    """Public patches whose context or removed lines repeat lines that an earlier
    private patch adds: those lines are in the store in clear. A line counts
    when it has at least 8 characters besides white space (not `pass`, `}`)."""

    def lines(data: bytes, marks: bytes) -> set[bytes]:
        found = set()
        in_diff = False
        for line in data.split(b"\n"):
            if line.startswith(b"diff --git "):
                in_diff = True
            elif (
                in_diff
                and line[:1]
                and line[:1] in marks
                and not line.startswith((b"---", b"+++"))
                and len(line[1:].strip()) >= 8
            ):
                found.add(line[1:].strip())
        return found

    added: dict[bytes, str] = {}
    warnings = []
    for patch in patches:
        if patch.private:
            added.update(dict.fromkeys(lines(patch.data, b"+"), patch.name))
            continue
        shown = [added[line] for line in lines(patch.data, b" -") if line in added]
        if shown:
            sources = ", ".join(sorted(set(shown)))
            warnings.append(
                f"{patch.name} shows in clear {len(shown)} line(s) that the private patch(es) "
                f"{sources} add (as its context): keep the public change away from them, or "
                "make it private too"
            )
    return warnings


def refuse_publishing(git: Git, record: TreeRecord, patches: list[RenderedPatch]) -> None:
    """A commit whose change is that of a private patch, but which lost its
    `Patchtool-Private: yes` trailer (a reworded message), would be exported
    in clear: refuse (`patch --publish` exports it so, on purpose)."""
    if not record.private_patch_ids:
        return
    public = [p for p in patches if not p.private]
    ids = patch_ids(git, [p.data for p in public])
    leaking = [p for p, i in zip(public, ids, strict=True) if i in record.private_patch_ids]
    if leaking:
        raise UsageError(
            "these commits carry the change of a private patch but no "
            f"`{PRIVATE_TRAILER}: yes` trailer, so they would be exported in clear: "
            + ", ".join(f"{p.commit[:10]} {p.subject}" for p in leaking),
            hint=f"Put the trailer back (`git commit --amend --trailer '{PRIVATE_TRAILER}: yes'`, "
            "or `git rebase -i patchtool/base` and `reword`), or pass --publish to make "
            "them public on purpose.",
        )


def plan_export(base: BaseRef, patches: list[RenderedPatch]) -> ExportPlan:
    series = parse_series(base)
    old_names = series.names
    series_bytes = render_series(series.header, [p.name for p in patches])
    plan = ExportPlan(base=base, patches=patches, series=series_bytes)
    for patch in patches:
        path = base.path / patch.name
        if not path.exists():
            plan.new.append(patch.name)
        elif path.read_bytes() != patch.file_data:
            plan.changed.append(patch.name)
        else:
            plan.unchanged.append(patch.name)
    new_names = {p.name for p in patches}
    plan.removed = [n for n in old_names if n not in new_names]
    plan.series_changed = (base.path / SERIES_FILE).read_bytes() != series_bytes
    return plan


STAGE_SUFFIX = ".patchtool-export"


def staging_folder(base_folder: Path) -> Path:
    return base_folder.with_name(f".{base_folder.name}{STAGE_SUFFIX}")


def recover_export(base_folder: Path) -> None:
    """Undo what a killed export left: a staging folder beside the base folder.
    With the atomic exchange it holds either the unfinished new state or the
    old one already swapped out; either way the base folder is whole. Only the
    fallback (no renameat2) can leave the base folder missing: then the
    staging folder's `.old` twin is the complete previous state."""
    stage = staging_folder(base_folder)
    aside = stage.with_name(stage.name + ".old")
    if not base_folder.exists() and aside.is_dir():
        os.rename(aside, base_folder)
    for leftover in (stage, aside):
        if leftover.exists():
            shutil.rmtree(leftover)


def write_plan(plan: ExportPlan) -> None:
    """Write the plan so that the base folder changes all at once: the new state
    is assembled in a staging folder (unchanged files hard-linked) and swapped
    with the base folder in one atomic exchange. A kill or a full disk at any
    moment leaves the old folder or the new one, never a mix."""
    folder = plan.base.path
    recover_export(folder)
    stage = staging_folder(folder)
    by_name = {p.name: p for p in plan.patches}
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
        kill_point("export:staged-unchanged")
        for name in (*plan.new, *plan.changed):
            _write_new(stage / name, by_name[name].file_data, folder / name)
            kill_point("export:wrote-patch")
        if plan.series_changed:
            (stage / SERIES_FILE).unlink(missing_ok=True)
            _write_new(stage / SERIES_FILE, plan.series, folder / SERIES_FILE)
        fsync_directory(stage)
        kill_point("export:before-exchange")
        exchange_paths(stage, folder)
        kill_point("export:after-exchange")
        fsync_directory(folder.parent)
    except OSError as error:
        shutil.rmtree(stage, ignore_errors=True)
        where = error.filename or stage
        raise IntegrityError(
            f"could not write the export of {folder}: {where}: {error.strerror or error}",
            hint="Check free disk space and that the store is writable; the store is unchanged.",
        ) from error
    shutil.rmtree(stage, ignore_errors=True)


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


def unexported_commits(
    git: Git, base: BaseRef, base_commit: str, keyring: Keyring | None = None
) -> list[str]:
    """Commits after the base whose patch is not byte-identical to a file of the
    store (for a private patch: to the plaintext of one, as the tree's record
    knows it)."""
    # Any file of the base folder counts: a damaged series must not make
    # exported work look unexported (or the reverse).
    stored = {
        f.read_bytes()
        for f in (base.path.iterdir() if base.path.is_dir() else [])
        if f.is_file() and f.name not in (SERIES_FILE, "base.toml")
    }
    try:
        record: TreeRecord | None = read_record(git.cwd)
    except NotFoundError:
        record = None
    known = known_plaintexts(base, record, keyring)
    plaintexts = {known[d] for d in (hashlib.sha256(b).hexdigest() for b in stored) if d in known}
    return [
        f"{p.commit[:10]} {p.subject}"
        for p in render_patches(git, base_commit)
        if (
            hashlib.sha256(p.data).hexdigest() not in plaintexts
            if p.private
            else p.data not in stored
        )
    ]


def tree_work(
    git: Git, base: BaseRef | None, base_commit: str, keyring: Keyring | None = None
) -> TreeWork:
    work = TreeWork(uncommitted=uncommitted_files(git), other=side_work(git))
    if base is None:
        count = int(git.text("rev-list", "--count", f"{base_commit}..HEAD"))
        if count:
            work.unexported.append(f"{count} commit(s) after the base (its store folder is gone)")
    else:
        work.unexported = unexported_commits(git, base, base_commit, keyring)
    return work


@dataclass(frozen=True)
class ExportOptions:
    store: Store
    build_dir: Path
    device: str
    commit_id: str | None = None
    check: bool = False
    message: str | None = None
    force: bool = False
    strict: bool = False  # fail, writing nothing, if a patch would fail check's lint
    keyring: Keyring | None = None  # to compare with private patches the record does not know
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
        refuse_publishing(git, record, patches)
    known = known_plaintexts(base, record, options.keyring)
    patches = seal_patches(git, patches, base, device, known, options.reencrypt)
    plan = plan_export(base, patches)
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
        known = known_plaintexts(base, record, options.keyring)
        rendered = seal_patches(git, render_patches(git, record.base_commit), base, device, known)
        if plan_export(base, rendered).is_noop:
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
