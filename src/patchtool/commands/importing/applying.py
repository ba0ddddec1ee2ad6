"""How `import` puts one change into the build tree: git reads it in the call that
applies it (to a scratch index first, then, when that does not serve, to the
tree with its diagnosis and --3way), every path it reads judged before a file is
written, and the commit made; what -p would have matched instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from patchtool.commands.importing.inputs import Change
from patchtool.core.errors import (
    ChangeConflict,
    ConflictError,
    IntegrityError,
    PatchtoolError,
    UnsafeInputError,
    quoted,
)
from patchtool.core.gitops import Git
from patchtool.core.gitpatch import PatchReading, apply_to_index, read_patch
from patchtool.store.model import (
    BaseRef,
    PatchLimits,
)
from patchtool.trees.applying import describe_failure, describe_trial, trial_apply

if TYPE_CHECKING:
    pass


def check_change_paths(git: Git, patch: Path, change: Change, limits: PatchLimits) -> None:
    """Refuse a change that is too large, or names a path outside the tree or in
    .git, by the paths git itself reads from it (before it is applied)."""
    check_size_of(change, limits)
    judge_reading(git, patch, change, read_patch(git, change.strip, patch=patch))


def check_size_of(change: Change, limits: PatchLimits) -> None:
    """Refuse a change past the device's limits, before git reads it."""
    from patchtool.series.safety import check_size

    try:
        check_size(change.origin, change.diff, limits)
    except PatchtoolError as error:
        raise type(error)(error.message, hint="Nothing was imported.") from error


def judge_reading(git: Git, patch: Path, change: Change, reading: PatchReading) -> None:
    """Refuse a change git cannot read, that changes no file, or that names a
    path outside the tree or in .git, by git's own reading of it."""
    from patchtool.series.safety import judge_paths, names_read

    try:
        names = names_read(patch, reading)
        if not names:
            raise IntegrityError(f"{change.origin}: holds no change to any file")
        judge_paths(change.origin, names)
    except PatchtoolError as error:
        message = error.message.replace(f"patch {patch}", change.origin)
        hint = "Nothing was imported."
        if "leading pathname components" in message:
            # -p strips more than a path has: the same mistake as a -p that strips
            # too little (its paths are not in the tree), so the same class and
            # exit code (4, a change that does not apply) and the same hint.
            hint = f"{strip_hint(git, patch, change.strip) or 'Check -p.'} {hint}"
            raise ConflictError(message, hint=hint) from error
        raise type(error)(message, hint=hint) from error


def bring_files_up(git: Git, synced: str) -> str:
    """Update the working tree's files from commit `synced` to HEAD: only the files
    that differ, and never over a file someone changed meanwhile (git's two-tree
    merge refuses a file that is not as `synced` has it)."""
    head = git.text("rev-parse", "HEAD")
    if head != synced:
        git.run("read-tree", "-m", "-u", synced, head)
    return head


def commit_from_index(
    git: Git,
    patch: Path,
    change: Change,
    excludes: tuple[str, ...],
    message: bytes,
    identity: dict[str, str],
    scratch: Path,
    head: tuple[str, str],
) -> tuple[str, str] | None:
    """Apply the change to the index alone and commit it there (write-tree,
    commit-tree): no pass over the working tree's files, which on a vLLM-sized
    tree costs more than the change itself. git reads the change in the call
    that applies it, and every path it read is judged (check_change_paths'
    rule) before anything reaches the disk: the index is a scratch copy, and
    the tree's files are brought up once, after the last change. `head` is the
    newest commit (HEAD's to be) and its tree; the new ones come back, or None
    (nothing changed) when the change does not apply as it is or changes
    nothing: the caller then takes the full path, with its diagnosis and --3way."""
    applied = apply_to_index(git, scratch, change.strip, patch, excludes)
    if not applied.ok:
        git.run("read-tree", head[0], env={"GIT_INDEX_FILE": str(scratch)})  # be sure
        return None
    judge_reading(git, patch, change, applied)
    tree = git.run("write-tree", env={"GIT_INDEX_FILE": str(scratch)}).text.strip()
    if tree == head[1]:
        return None
    commit = git.run(
        "commit-tree", tree, "-p", head[0], "-F", "-", input=_clean(git, message), env=identity
    ).text.strip()
    return commit, tree


def _clean(git: Git, message: bytes) -> bytes:
    """The message as `git commit -F` leaves it (commit-tree takes it as it is):
    git's `stripspace`, asked only when it would change something."""
    lines = message.split(b"\n")
    if (
        message.endswith(b"\n")
        and not message.endswith(b"\n\n")
        and lines[0].strip()
        and not any(line != line.rstrip(b" \t\r\v\f") for line in lines)
        and b"\n\n\n" not in message
        and b"\0" not in message
    ):
        return message
    return git.run("stripspace", input=message).stdout


def move_head(git: Git, commit: str) -> None:
    """HEAD (its branch) to `commit`, the newest of the commits made in the index."""
    if git.text("rev-parse", "HEAD") != commit:
        git.run("update-ref", "-m", "patchtool import", "HEAD", commit)


def apply_change(
    git: Git,
    patch: Path,
    change: Change,
    number: int,
    total: int,
    excludes: tuple[str, ...],
    three_way: bool,
    base: BaseRef,
    left: str,
) -> tuple[str, ...]:
    """Apply one change to the tree and its index; return the paths that needed a
    3-way merge. When it does not apply, say every hunk and path that failed."""
    how = (f"-p{change.strip}", *(f"--exclude={glob}" for glob in excludes))
    applied = git.run("apply", *how, "--index", "--", str(patch), check=False)
    if applied.returncode == 0:
        return ()
    _refuse_unsafe(change, applied.stderr)
    # The change's own scratch folder takes the trial copy too.
    trial = trial_apply(git, patch, patch.parent, change.strip, excludes)
    merge_conflicts: tuple[str, ...] = ()
    merge_note: list[str] = []
    if three_way:
        merged = git.run("apply", *how, "--index", "--3way", "--", str(patch), check=False)
        _refuse_unsafe(change, merged.stderr)
        if merged.returncode == 0 and trial.failed_paths:
            return trial.failed_paths
        if merged.returncode == 0:  # git found nothing wrong the second time: say so
            return ()
        git.run("reset", "--quiet", "--hard", "HEAD", check=False)
        merge_conflicts = tuple(
            dict.fromkeys(
                re.findall(r"^Applied patch to '(.+)' with conflicts\.$", merged.stderr, re.M)
            )
        )
        if merge_conflicts:
            merge_note = [f"  3-way merge left conflicts in: {', '.join(merge_conflicts)}"]
        elif "lacks the necessary blob" in merged.stderr:
            merge_note = [
                "  3-way merge not possible: this tree lacks the blobs the change's "
                "`index` lines name (a plain diff has none)"
            ]
    details = describe_trial(trial, _labels(change), private=change.private)
    if not details:
        verbose = git.run("apply", *how, "--check", "--verbose", "--", str(patch), check=False)
        details = [
            describe_failure(
                patch.read_bytes(), verbose.stderr or applied.stderr, private=change.private
            )
        ]
    paths = file_sections(git, patch, change.strip, excludes) or []
    summary = []
    if trial.rejected:
        files = len({h.path for h in trial.rejected})
        summary.append(f"{len(trial.rejected)} hunk(s) in {files} file(s) do not match")
    if trial.missing:
        summary.append(f"{len(trial.missing)} of its {len(paths)} path(s) do not exist in the tree")
    if trial.existing:
        summary.append(f"{len(trial.existing)} path(s) it creates already exist")
    if trial.undeleted:
        summary.append(f"{len(trial.undeleted)} file(s) it removes differ from the base")
    if trial.refused:
        summary.append(f"{len(trial.refused)} file(s) git refused whole")
    hint = "Refresh the change against this base."
    other_strip = strip_hint(git, patch, change.strip, excludes) if trial.missing else None
    if other_strip is not None:  # some path it names is in the tree with another -p
        hint = other_strip
    elif trial.missing and 2 * len(trial.missing) > len(paths):
        hint = "Most of its paths are not in the tree: check -p and the base."
    elif trial.rejected and not three_way and _names_blobs(change.diff):
        hint = "Refresh the change against this base, or retry with --3way to let git merge it."
    raise ChangeConflict(
        f"{change.origin} (change {number} of {total}) does not apply to {base.base_id} and "
        f"its series"
        + (f" ({'; '.join(summary)})" if summary else "")
        + ":\n"
        + "\n".join([*details, *merge_note]),
        hint=f"{hint} Nothing was imported: {left}, and the store is unchanged.",
        origin=change.origin,
        number=number,
        failed_paths=trial.failed_paths,
        merge_conflicts=merge_conflicts,
    )


def _names_blobs(diff: bytes) -> bool:
    """Whether a change's `index` lines name the blobs it was made from (what a
    3-way merge needs; plain diffs have none)."""
    return re.search(rb"^index [0-9a-f]{7,}\.\.[0-9a-f]{7,}", diff, re.M) is not None


def _refuse_unsafe(change: Change, stderr: str) -> None:
    from patchtool.series.safety import git_refusal

    refusal = git_refusal(stderr)
    if refusal is not None:
        raise UnsafeInputError(
            f"{change.origin}: path {quoted(refusal[0])} {refusal[1]}", hint="Nothing was imported."
        )


def file_sections(git: Git, patch: Path, strip: int, excludes: tuple[str, ...]) -> list[str] | None:
    """One path per file section, as git reads them with this -p (the new name of
    a rename); None when git cannot read the patch with this -p."""
    reading = read_patch(git, strip, patch=patch, excludes=excludes)
    return reading.paths if reading.ok else None


def strip_hint(git: Git, patch: Path, strip: int, excludes: tuple[str, ...] = ()) -> str | None:
    """When another -p (0 to 4) finds more of a change's paths in the tree than
    `strip` does: which one, and how many it finds."""
    in_tree = set(
        name.decode("utf-8", "surrogateescape")
        for name in git.run("ls-files", "-z").stdout.split(b"\0")
        if name
    )
    found: dict[int, tuple[int, int]] = {}
    for level in range(5):
        paths = file_sections(git, patch, level, excludes)
        if paths:
            found[level] = (sum(1 for p in paths if p in in_tree), len(paths))
    if not found:
        return None
    best = max(found, key=lambda level: (found[level][0], -abs(level - strip)))
    matches, total = found[best]
    current = found.get(strip, (0, 0))[0]
    if best == strip or matches <= current:
        return None
    return (
        f"-p{best} matches {matches} of {total} files (-p{strip} matches {current}): "
        f"import again with -p {best}."
    )


def _labels(change: Change) -> dict[str, str]:
    """Each path as in the tree -> how to show it: with the input's own name in
    parentheses where -p made them differ beyond the usual a/ and b/."""
    try:
        from unidiff.patch import PatchSet

        patched = list(PatchSet(change.diff.decode("utf-8", "surrogateescape")))
    except Exception:
        return {}
    labels = {}
    for one in patched:
        raw = one.source_file if one.source_file != "/dev/null" else one.target_file
        if not raw or raw == "/dev/null":
            continue
        stripped = _strip(raw, change.strip)
        usual = raw[2:] if raw.startswith(("a/", "b/")) else raw
        if stripped is not None and stripped not in (usual, raw):
            labels[stripped] = f"{stripped} ({raw})"
    return labels


def _strip(path: str, strip: int) -> str | None:
    """`path` less `strip` leading components, as git and patch count them."""
    parts = [part for part in path.split("/") if part]
    return "/".join(parts[strip:]) if len(parts) > strip else None
