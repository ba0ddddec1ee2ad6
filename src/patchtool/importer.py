"""`import`: patches from outside (mail, plain diffs, quilt) into a device's series.

Each change of the input becomes one commit on top of the device's series in its
build tree, with the author, date and message the input carries (options fill
in what it lacks), and then one patch of the store, written by `export` so the
store only ever holds normalized format-patch files.

Inputs understood:
- mbox files: one `git format-patch` file, many, or one `--stdout` stream of
  many (split with `git mailsplit`, read with `git mailinfo`);
- plain unified diffs, with or without `diff --git` headers (`diff -ruN`);
- quilt folders: a `series` file (or `--series FILE`) naming patches, with an
  optional `-pN` per line.
`-p N` strips leading path components, as `patch -p` and `git apply -p` do.

Nothing is half-imported: every path is checked before git reads a change,
the changes are applied in the build tree on a known HEAD that is restored if
any of them fails, the new patches pass the store's safety checks, and only
then is the store written. Afterwards every new patch that `check`'s lint would
refuse is warned about, with how to fix its commit in the tree.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .apply import describe_failure
from .buildtree import TreeLocation, read_record
from .errors import (
    ConflictError,
    IntegrityError,
    NotFoundError,
    PatchtoolError,
    UnsafeInputError,
    UsageError,
)
from .export import (
    lint_rendered,
    plan_export,
    remember_series,
    render_patches,
    warn_lint,
    write_plan,
)
from .fsutil import atomic_write, check_name
from .gitops import Git, tool_identity, user_identity
from .report import Reporter
from .store import (
    DEVICE_FILE,
    SERIES_FILE,
    BaseRef,
    PatchLimits,
    Store,
    parse_series,
    render_base,
    render_series,
    toml_string,
)
from .upstream import BaseCache

_COMMITTER = {k: v for k, v in tool_identity("1970-01-01T00:00:00Z").items() if "COMMITTER" in k}
_AUTHOR = re.compile(r"^\s*(?P<name>[^<>]*?)\s*<(?P<email>[^<>\s]+)>\s*$")


@dataclass(frozen=True)
class Change:
    """One change to import: the diff and whatever metadata its input carried."""

    origin: str  # what the user can find it by: "fixes.mbox, message 3 of 120"
    diff: bytes
    strip: int
    author: tuple[str, str] | None = None  # (name, email)
    date: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class ImportOptions:
    store: Store
    build_dir: Path
    device: str
    cache: BaseCache
    inputs: tuple[Path, ...]
    commit_id: str | None = None
    strip: int = 1
    series_file: Path | None = None
    author: str | None = None
    date: str | None = None
    message: str | None = None
    create: bool = False
    display_name: str | None = None
    vendor: str | None = None
    onto: str | None = None
    version_label: str | None = None
    archive_paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class ImportResult:
    base: BaseRef
    imported: tuple[str, ...]  # new patch file names, in order
    created: tuple[Path, ...]  # store folders this run created


# --------------------------------------------------------------------------- reading inputs


def read_changes(inputs: tuple[Path, ...], strip: int, series_file: Path | None) -> list[Change]:
    changes: list[Change] = []
    if series_file is not None:
        changes.extend(_read_quilt(series_file, strip))
    for path in inputs:
        if path.is_dir():
            series = path / "series"
            if not series.is_file() and (path / "patches" / "series").is_file():
                series = path / "patches" / "series"
            if not series.is_file():
                raise NotFoundError(
                    f"{path} is a folder without a quilt series file",
                    hint="Name the series file with --series FILE.",
                )
            changes.extend(_read_quilt(series, strip))
        elif path.is_file():
            changes.extend(_read_file(path, path.name, strip))
        else:
            raise NotFoundError(f"input {path} does not exist")
    if not changes:
        raise UsageError("nothing to import: give patch files, mbox files or a quilt folder")
    return changes


def _read_quilt(series: Path, default_strip: int) -> list[Change]:
    if not series.is_file():
        raise NotFoundError(f"quilt series file {series} does not exist")
    changes = []
    for number, line in enumerate(series.read_text("utf-8").splitlines(), start=1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        strip = default_strip
        for option in words[1:]:
            if re.fullmatch(r"-p\d+", option):
                strip = int(option[2:])
            else:
                raise UsageError(f"{series}:{number}: unknown quilt option {option!r}")
        patch = series.parent / words[0]
        if not patch.is_file():
            raise NotFoundError(f"{series}:{number}: patch {words[0]!r} does not exist")
        changes.extend(
            _read_file(
                patch, f"{series.name}:{number} {words[0]}", strip, fallback_subject=patch.stem
            )
        )
    return changes


def _looks_like_mail(data: bytes) -> bool:
    head = data.lstrip(b"\n")[:4096]
    if head.startswith(b"From "):
        return True
    first_block = head.split(b"\n\n", 1)[0]
    return bool(re.search(rb"^(From|Subject): ", first_block, re.M))


def _read_file(
    path: Path, origin: str, strip: int, fallback_subject: str | None = None
) -> list[Change]:
    data = path.read_bytes()
    if _looks_like_mail(data):
        return _read_mbox(path, origin, strip)
    first_diff = re.search(rb"^(diff |--- |Index: )", data, re.M)
    description = (
        data[: first_diff.start()].decode("utf-8", "replace").strip() if first_diff else ""
    )
    message = None
    if description:
        message = description
    elif fallback_subject is not None:
        message = fallback_subject
    return [Change(origin, data, strip, message=message)]


def _read_mbox(path: Path, origin: str, strip: int) -> list[Change]:
    git = Git(path.parent)
    with tempfile.TemporaryDirectory(prefix="patchtool-mbox-") as folder:
        count = int(
            git.text("mailsplit", "-b", "--keep-cr", f"-o{folder}", str(path.resolve())) or 0
        )
        changes = []
        for number in range(1, count + 1):
            mail = Path(folder, f"{number:04d}")
            message_file, patch_file = Path(folder, "msg"), Path(folder, "patch")
            info = git.run(
                "mailinfo", "-u", str(message_file), str(patch_file), input=mail.read_bytes()
            ).text
            fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
            body = message_file.read_text("utf-8", "replace").strip()
            subject = fields.get("Subject", "").strip()
            message = subject + ("\n\n" + body if body else "")
            author = (fields["Author"], fields["Email"]) if fields.get("Email") else None
            where = origin if count == 1 else f"{origin}, message {number} of {count}"
            changes.append(
                Change(
                    where,
                    patch_file.read_bytes(),
                    strip,
                    author=author,
                    date=fields.get("Date"),
                    message=message or None,
                )
            )
        return changes


# --------------------------------------------------------------------------- checks


def check_change_paths(git: Git, patch: Path, change: Change, limits: PatchLimits) -> None:
    """Refuse a change that is too large, or names a path outside the tree or in
    .git, by the paths git itself reads from it (before it is applied)."""
    from .safety import check_size, judge_paths, paths_git_reads

    try:
        check_size(change.origin, change.diff, limits)
        paths = paths_git_reads(git, patch, change.strip)
        if not paths:
            raise IntegrityError(f"{change.origin}: holds no change to any file")
        judge_paths(change.origin, paths)
    except PatchtoolError as error:
        message = error.message.replace(f"patch {patch}", change.origin)
        raise type(error)(message, hint="Nothing was imported.") from error


# --------------------------------------------------------------------------- the import


def import_changes(options: ImportOptions, reporter: Reporter) -> ImportResult:
    """Import every change, or none (the caller holds the device lock)."""
    changes = read_changes(options.inputs, options.strip, options.series_file)
    created: list[Path] = []
    try:
        base = _device_and_base(options, created, reporter)
        imported = _import_into(options, base, changes, reporter)
    except BaseException:
        import shutil

        for folder in reversed(created):
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return ImportResult(base, tuple(imported), tuple(created))


def _device_and_base(options: ImportOptions, created: list[Path], reporter: Reporter) -> BaseRef:
    store = options.store
    device_folder = store.root / check_name("device", options.device)
    if not (device_folder / DEVICE_FILE).is_file():
        if not options.create:
            store.device(options.device)  # raises NotFoundError with the known devices
        if not options.display_name or not options.vendor:
            raise UsageError("--create needs --display-name and --vendor for a new device")
        if device_folder.exists():
            raise UsageError(f"{device_folder} exists but holds no {DEVICE_FILE}")
        device_folder.mkdir(parents=True)
        created.append(device_folder)
        atomic_write(
            device_folder / DEVICE_FILE,
            (
                f"display-name = {toml_string(options.display_name)}\n"
                f"vendor = {toml_string(options.vendor)}\n\n"
                '[build]\nenv-script = "env.sh"\n'
            ).encode(),
        )
        reporter.step(f"created device {options.device}")
    store.device(options.device)
    if options.onto is None:
        return store.resolve_base(options.device, options.commit_id)
    from .rebase import parse_onto, resolve_new_base

    bases = store.bases(options.device)
    project = bases[-1].project if bases else None
    spec = parse_onto(options.onto, project, options.version_label)
    new = resolve_new_base(
        spec, store, options.device, options.cache, reporter, options.archive_paths
    )
    if new.path.exists():
        raise UsageError(
            f"the base folder {new.path} already exists",
            hint=f"Import into it with --commit-id {new.base_id} instead of --onto.",
        )
    new.path.mkdir()
    created.append(new.path)
    atomic_write(new.path / "base.toml", render_base(new).encode())
    atomic_write(
        new.path / SERIES_FILE, render_series([f"# {options.device} series for {new.label}."], [])
    )
    reporter.step(f"created base {new.base_id} ({new.commit[:12]})")
    return store.resolve_base(options.device, new.base_id)


def _ready_tree(options: ImportOptions, base: BaseRef, reporter: Reporter) -> Path:
    """The device's tree at exactly the base and its stored series (unpatch makes it
    when it is missing, on another base, or behind the store; work is never lost)."""
    from .apply import UnpatchOptions, unpatch

    tree = TreeLocation(options.build_dir, options.device, base.project).tree
    if tree.is_dir():
        try:
            record = read_record(tree)
        except NotFoundError:
            record = None
        if record is not None and record.base_commit == base.commit:
            git = Git(tree)
            if not git.lines("status", "--porcelain", "--untracked-files=all"):
                plan = plan_export(base, render_patches(git, base.commit))
                if plan.is_noop:
                    return tree
    result = unpatch(
        UnpatchOptions(
            store=options.store,
            build_dir=options.build_dir,
            device=options.device,
            cache=options.cache,
            commit_id=base.base_id,
            archive_paths=options.archive_paths,
        ),
        reporter,
    )
    return result.tree


def _identity(change: Change, options: ImportOptions, tree: Path) -> dict[str, str]:
    env = dict(_COMMITTER)
    author = change.author
    if author is None and options.author is not None:
        match = _AUTHOR.match(options.author)
        if not match:
            raise UsageError(f"--author {options.author!r} is not 'Name <email>'")
        author = (match["name"], match["email"])
    if author is None:
        mine = user_identity(tree)
        if mine is None:
            raise UsageError(
                f"{change.origin} names no author, and none is known",
                hint="Pass --author 'Name <email>'.",
            )
        author = (mine["GIT_AUTHOR_NAME"], mine["GIT_AUTHOR_EMAIL"])
    env["GIT_AUTHOR_NAME"], env["GIT_AUTHOR_EMAIL"] = author
    date = change.date or options.date
    if date:
        env["GIT_AUTHOR_DATE"] = date
    return env


def _import_into(
    options: ImportOptions, base: BaseRef, changes: list[Change], reporter: Reporter
) -> list[str]:
    from .safety import TreeJudge, git_refusal

    tree = _ready_tree(options, base, reporter)
    limits = options.store.device(options.device).limits
    git = Git(tree, env=_COMMITTER)
    start = git.text("rev-parse", "HEAD")
    reporter.step(f"importing {len(changes)} change(s) onto {base.base_id} in {tree}")
    try:
        with tempfile.TemporaryDirectory(prefix="patchtool-import-") as folder:
            judge = TreeJudge(git, start, f"the build tree {tree}")
            for number, change in enumerate(changes, start=1):
                patch = Path(folder, f"{number:05d}.patch")
                patch.write_bytes(change.diff)
                check_change_paths(git, patch, change, limits)
                applied = git.run(
                    "apply", f"-p{change.strip}", "--index", "--", str(patch), check=False
                )
                if applied.returncode != 0:
                    refusal = git_refusal(applied.stderr)
                    if refusal is not None:
                        raise UnsafeInputError(
                            f"{change.origin}: path {refusal[0]!r} {refusal[1]}",
                            hint="Nothing was imported.",
                        )
                    verbose = git.run(
                        "apply",
                        f"-p{change.strip}",
                        "--check",
                        "--verbose",
                        "--",
                        str(patch),
                        check=False,
                    )
                    raise ConflictError(
                        f"{change.origin} (change {number} of {len(changes)}) does not apply to "
                        f"{base.base_id} and its series:\n"
                        + describe_failure(patch, verbose.stderr or applied.stderr),
                        hint="Nothing was imported: the build tree and the store are unchanged. "
                        "Refresh the change against this base (or check -p).",
                    )
                message = change.message or options.message
                if not message:
                    raise UsageError(
                        f"{change.origin} carries no message", hint="Pass --message SUBJECT."
                    )
                git.run(
                    "commit",
                    "--quiet",
                    "--no-verify",
                    "-F",
                    "-",
                    input=message.encode("utf-8"),
                    env=_identity(change, options, tree),
                )
            # What git made of the changes, judged as unpatch judges a series.
            commits = git.lines("rev-list", "--reverse", f"{start}..HEAD")
            judge.judge_commits(git, commits, [c.origin for c in changes])
            patches = render_patches(git, base.commit)
            stored = {p.read_bytes() for p in base.path.iterdir() if p.is_file()}
            fresh = [p for p in patches if p.data not in stored]
    except BaseException:
        git.run("reset", "--quiet", "--hard", start, check=False)
        raise
    write_plan(plan_export(base, patches))
    remember_series(tree, read_record(tree), parse_series(base))
    # What check would refuse in the new patches, said now, while their commits
    # are the newest of the tree and easy to amend.
    linted = [one for one in lint_rendered(patches) if one.patch in fresh]
    warn_lint(reporter, tree, linted, len(patches))
    return [p.name for p in fresh]
