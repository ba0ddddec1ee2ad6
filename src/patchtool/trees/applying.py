"""A series into a build tree: check out a base, apply the patches with git am,
and say exactly why a patch does not apply.

`checkout_base` makes a tree a local clone of the cached base (objects
hard-linked or copied), marked with `refs/patchtool/base-commit` and the tag
`patchtool/base`. `apply_series` judges every path git reads from the series
before git writes one, gives git the series as one mbox stream on standard
input (private plaintexts never touch the disk outside the tree; a patch that
is not a mail goes alone, by its path, as git would read a file), then has
every commit git made judged (safety.py). A patch that does not apply
is named with its series line, its file and hunk, and the text git looked for
(never for a private patch). `trial_apply` applies one change with
`--reject` in a throw-away copy of the files, in a folder its caller names,
to name every failing hunk of every file (import and `import --flagscale`
report with it).

Used by unpatch, check, rebase, import and import --flagscale.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import ConflictError, IntegrityError, UnsafeInputError
from patchtool.core.faults import pause_point
from patchtool.core.fsutil import path_problem, shown_path, temporary_folder
from patchtool.core.gitops import Git, GitResult, tool_identity
from patchtool.core.gitpatch import unquote
from patchtool.core.report import Reporter
from patchtool.series.copies import check_copies
from patchtool.series.privacy import LoadedSeries, SeriesPatch, verify_description
from patchtool.series.safety import (
    CORRUPT_HINT,
    UNSAFE_HINT,
    TreeJudge,
    git_refusal,
    judge_paths,
    paths_git_reads,
)
from patchtool.store.model import BaseRef
from patchtool.trees.record import BASE_REF, BASE_TAG


def checkout_base(cache_repository: Path, tree: Path, base: BaseRef, branch: str) -> None:
    outer = Git(tree.parent)
    # A local path clones locally: objects are hard-linked where the cache and the
    # build folder share a file system, copied where they do not (an explicit
    # --local would fail there with "Invalid cross-device link").
    outer.run(
        "clone",
        "--quiet",
        "--no-checkout",
        "--no-tags",
        "--",
        str(cache_repository),
        str(tree),
    )
    git = Git(tree)
    git.run("remote", "remove", "origin")
    # Unreferenced objects of other bases came along with the hard-linked packs;
    # they cost no space and are dropped by the user's next gc.
    git.run("update-ref", BASE_REF, base.commit)
    git.run("tag", BASE_TAG, base.commit)
    git.run("checkout", "--quiet", "-b", branch, base.commit)
    for ref in git.lines(
        "for-each-ref", "--format=%(refname)", "refs/remotes", "refs/patchtool/bases"
    ):
        git.run("update-ref", "-d", ref)


def apply_series(
    tree: Path,
    loaded: LoadedSeries,
    judge: TreeJudge,
    three_way: bool,
    reporter: Reporter,
) -> list[str]:
    """Apply every patch with git am onto the tree's HEAD, then judge what git
    made of them (safety.py); return the patches that needed a 3-way merge.

    The patches were screened against the device's limits as they were read
    (privacy.load_series), and git is given exactly those bytes: the whole
    series as one mbox stream on standard input (one `git am`, which is most of
    the cost: each run refreshes the index of the whole tree), so that a
    private patch's plaintext is never written anywhere but into the tree, and
    only after its clear header was checked against it. A refusal by git (an
    invalid path, a write through a symlink) is exit 10, a patch git cannot
    read exit 6, one that does not apply exit 4: each names the patch, its
    series line and, where git gives them (and the patch is not private), the
    file, hunk and text."""
    git = Git(tree, env=tool_identity("1970-01-01T00:00:00Z"))
    patches = loaded.patches
    if not patches:
        return []
    for patch in patches:
        verify_description(git, patch)
    judge_paths_first(git, patches)
    check_copies(git, judge.entries, [(p.label, p.data) for p in patches], loaded.limits)
    start = git.text("rev-parse", "HEAD")
    # Hooks are off through core.hooksPath (gitops); `am --no-verify` needs git 2.40.
    am = ("am", "--keep-cr", "--committer-date-is-author-date")
    needed: list[str] = []
    if not three_way:
        for run in _am_runs(patches):
            result = _git_am(git, (*am, "--quiet", "--no-3way"), run)
            if result.returncode != 0:
                _raise_failure(git, loaded, start, result.stderr)
    else:
        for patch in patches:
            # Not --quiet: the "Falling back to ... 3-way merge" line is what we report.
            result = _git_am(git, (*am, "--3way"), [patch])
            if result.returncode != 0:
                _raise_failure(git, loaded, start, result.stderr)
            if "3-way merge" in result.stderr or "3-way merge" in result.text:
                needed.append(patch.entry.name)
                reporter.warn(f"{patch.entry.name} needed a 3-way merge")
    pause_point("apply:applied")
    commits = git.lines("rev-list", "--reverse", f"{start}..HEAD")
    judge.judge_commits(git, commits, [p.label for p in patches])
    return needed


def judge_paths_first(git: Git, patches: Sequence[SeriesPatch]) -> None:
    """Judge the paths git reads from the series before git writes any, so that a
    path deeper or longer than the limits, or into .git, never reaches the disk:
    one `git apply --numstat` over the whole series (a few milliseconds), and
    only when a path fails, each patch alone, to name the one that holds it. A
    series git cannot read this way is left to `git am`, whose error names it;
    the judge after `git am` (TreeJudge) stays the rule either way."""
    stream = b"".join(p.data if p.data.endswith(b"\n") else p.data + b"\n" for p in patches)
    try:
        paths = paths_git_reads(git, Path("series"), data=stream)
    except IntegrityError:
        return
    if all(path_problem(path) is None for path in paths):
        return
    for patch in patches:
        try:
            found = paths_git_reads(git, patch.path, data=patch.data)
        except IntegrityError:
            continue
        judge_paths(patch.label, found)


def _am_runs(patches: Sequence[SeriesPatch]) -> list[list[SeriesPatch]]:
    """The series as `git am` runs: mails (a `From ` line first, as every
    format-patch file has) together in one run on standard input; anything else
    alone, by its path, so that git detects its format as it does for a file
    (and refuses what is no patch). A private patch is always a mail."""
    runs: list[list[SeriesPatch]] = []
    for patch in patches:
        mail = patch.data.startswith(b"From ") or patch.private
        if mail and runs and _is_mail_run(runs[-1]):
            runs[-1].append(patch)
        else:
            runs.append([patch])
    return runs


def _is_mail_run(run: Sequence[SeriesPatch]) -> bool:
    return run[0].data.startswith(b"From ") or run[0].private


def _git_am(git: Git, am: tuple[str, ...], run: Sequence[SeriesPatch]) -> GitResult:
    if not _is_mail_run(run):
        return git.run(*am, "--", str(run[0].path), check=False)
    stream = bytearray()
    for patch in run:
        stream += patch.data
        if not patch.data.endswith(b"\n"):
            stream += b"\n"
    return git.run(*am, input=bytes(stream), check=False)


_FAILED = re.compile(r"^error: patch failed: (?P<path>.+):(?P<line>\d+)$", re.M)


_NOT_APPLY = re.compile(
    r"^error: (?P<path>.+): (?P<why>patch does not apply|does not exist in index|"
    r"already exists in (?:index|working directory)|No such file or directory)$",
    re.M,
)


def _raise_failure(git: Git, loaded: LoadedSeries, start: str, am_stderr: str) -> None:
    """Say why `git am` stopped: git refused the patch as unsafe (exit 10), cannot
    read it (exit 6), or it does not apply (exit 4)."""
    applied = int(git.text("rev-list", "--count", f"{start}..HEAD"))
    patch = loaded.patches[applied]
    entry, patch_path = patch.entry, patch.path
    # Asked while `git am` is stopped, so that git reads the patch against the
    # tree the patches before it made (a symlink one of them added, say).
    check = git.run("apply", "--check", "--verbose", input=patch.data, check=False)
    git.run("am", "--abort", check=False)
    where = patch.label
    refusal = git_refusal(am_stderr + "\n" + check.stderr)
    if refusal is not None:
        path, why = refusal
        raise UnsafeInputError(f"{where}: path {shown_path(path)} {why}", hint=UNSAFE_HINT)
    if "Patch is empty" in am_stderr:
        raise IntegrityError(f"{where}: is an empty patch: it changes no file", hint=CORRUPT_HINT)
    if "Patch format detection failed" in am_stderr:
        raise IntegrityError(f"{where}: is not a patch git can read", hint=CORRUPT_HINT)
    # git checks that a file exists before it checks that its path is safe: judge
    # the paths git reads from the patch, so that a hostile patch that also does
    # not apply is called unsafe, not a conflict.
    try:
        judge_paths(where, paths_git_reads(git, patch_path, data=patch.data))
    except IntegrityError as error:
        raise IntegrityError(
            error.message.replace(f"patch {patch_path}", where), CORRUPT_HINT
        ) from None
    details = describe_failure(
        patch.data, check.stderr if check.returncode else am_stderr, private=patch.private
    )
    series = loaded.series
    position = f"patch {applied + 1} of {len(loaded.patches)}"
    raise ConflictError(
        f"patch {entry.name} (series line {entry.line}, {position}) does not apply to "
        f"{series.base.label} ({series.base.commit[:12]}):\n{details}",
        hint="Refresh the patch against this base, or retry with --3way to let git merge it. "
        "The previous build tree, if any, is unchanged.",
    )


def describe_failure(patch: bytes, stderr: str, private: bool = False) -> str:
    """Name the files and hunks git rejected, with the text it searched for
    (`private`: by file and position only, see `redacted`)."""
    hunks_by_file: dict[str, list[tuple[int, str]]] = {}
    try:
        from unidiff.patch import PatchSet

        for patched in PatchSet(patch.decode("utf-8", "surrogateescape")):
            hunks_by_file[patched.path] = [
                (
                    h.source_start,
                    hunk_label(
                        i,
                        f"@@ -{h.source_start},{h.source_length} +{h.target_start},"
                        f"{h.target_length} @@"
                        + (f" {h.section_header}" if h.section_header else ""),
                        private,
                    ),
                )
                for i, h in enumerate(patched, start=1)
            ]
    except Exception:
        hunks_by_file = {}
    lines = []
    searched = re.findall(r"error: while searching for:\n(.*?)\n(?=error:)", stderr, re.S)
    for number, match in enumerate(_FAILED.finditer(stderr)):
        path, line = unquote(match["path"]), int(match["line"])
        hunk = next(
            (label for start, label in hunks_by_file.get(path, []) if start == line),
            f"at line {line}",
        )
        lines.append(f"  {path}: hunk {hunk} does not match the base")
        if number < len(searched):
            lines.extend(redacted(searched[number].splitlines(), private, limit=8))
    for match in _NOT_APPLY.finditer(stderr):
        if match["why"] != "patch does not apply":
            lines.append(f"  {unquote(match['path'])}: {match['why']}")
    for path in _removals(stderr):
        lines.append(f"  {path}: {REMOVAL_DIFFERS}")
    if not lines:
        tail = [line for line in without_searched_text(stderr).splitlines() if line][-6:]
        lines = ["  " + line for line in tail] or ["  git gave no reason"]
    return "\n".join(lines)


# --------------------------------------------------------------------------- redaction

CONTEXT_LINES_SHOWN = 5
REMOVAL_DIFFERS = (
    "the file it removes differs from the base (git: removal patch leaves file contents)"
)


def redacted(
    searched: Sequence[str], private: bool, limit: int = CONTEXT_LINES_SHOWN
) -> list[str]:
    """The one redaction rule of every failure report (import, unpatch, rebase,
    check): a private patch's failure is shown by file and position only, never
    by its lines; a public one's shows the first `limit` lines git searched for."""
    if private:
        return []
    return ["      | " + text for text in searched[:limit]]


def hunk_label(number: int, header: str, private: bool) -> str:
    """A hunk as a report names it: its number and `@@` line, where a private
    patch's `@@` line keeps its positions and loses the text after them (the
    function or section git names there is the patch's content)."""
    if private:
        match = re.match(r"^(@@ -\d+(?:,\d+)? \+\d+(?:,\d+)? @@)", header)
        header = match.group(1) if match else ""
    return f"#{number}" + (f" {header}" if header else "")


def without_searched_text(stderr: str) -> str:
    """git's messages less the lines it quotes from a file (its `while searching
    for:` blocks), for the reports that show git's own words."""
    return re.sub(r"(?m)^error: while searching for:\n.*?\n(?=error:)", "", stderr, flags=re.S)


def _removals(stderr: str) -> list[str]:
    """The files whose removal git refused because they differ from what the
    patch removes (git names them only on the `Checking patch` line before)."""
    found: list[str] = []
    current: str | None = None
    for line in stderr.splitlines():
        if line.startswith("Checking patch ") and line.endswith("..."):
            current = unquote(line[len("Checking patch ") : -3])
        elif line == "error: removal patch leaves file contents" and current is not None:
            found.append(current)
    return list(dict.fromkeys(found))


# --------------------------------------------------------------------------- trial apply


@dataclass(frozen=True)
class RejectedHunk:
    """One hunk git could not place: its file as in the tree, its number within
    that file's section (1-based, as git counts), its `@@` line and the old-side
    lines git searched for."""

    path: str
    number: int
    header: str
    searched: tuple[str, ...]


@dataclass(frozen=True)
class TrialApply:
    """Everything `git apply --reject` found wrong with a patch, not only the first."""

    rejected: tuple[RejectedHunk, ...] = ()
    missing: tuple[str, ...] = ()  # paths it changes that the tree lacks
    existing: tuple[str, ...] = ()  # paths it creates that the tree has
    other: tuple[str, ...] = ()  # git's other error lines, as git wrote them
    # Paths it removes whose file differs from what it removes (git leaves them).
    undeleted: tuple[str, ...] = ()
    # Paths git refused whole for another reason (a binary patch, a mode change),
    # with git's words.
    refused: tuple[tuple[str, str], ...] = ()

    @property
    def failed_paths(self) -> tuple[str, ...]:
        """Each path with a problem, once, in the order git reported them."""
        paths = [h.path for h in self.rejected] + [*self.missing, *self.existing]
        paths += [*self.undeleted, *(path for path, _ in self.refused)]
        return tuple(dict.fromkeys(paths))

    @property
    def clean(self) -> bool:
        return not (self.failed_paths or self.other)


_REJECTS = re.compile(r"^Applying patch (?P<path>.+) with \d+ rejects?\.\.\.$")


_REJECTED = re.compile(r"^Rejected hunk #(?P<number>\d+)\.$")


_FILE_PROBLEM = re.compile(
    r"^error: (?P<path>.+): (?P<why>No such file or directory|does not exist in index|"
    r"already exists in (?:index|working directory)|patch does not apply)$"
)


def trial_apply(
    git: Git, patch: Path, scratch: Path, strip: int = 1, excludes: tuple[str, ...] = ()
) -> TrialApply:
    """Apply `patch` with `git apply --reject` to a throw-away copy of the files in
    the index of `git`'s tree (never to the tree itself) and report every hunk
    and file that failed. Costs a checkout of the index: for failures only.

    The copy is made in `scratch`, a folder of the caller's in the build folder:
    the tree's files may hold a private patch's plaintext."""

    with temporary_folder(scratch, "trial-") as folder:
        copy = folder / "tree"
        # A repository of its own, so that git never finds (and applies relative
        # to) a repository above the scratch folder.
        Git(folder).run("init", "--quiet", str(copy))
        git.run("checkout-index", "--all", f"--prefix={copy}/")
        trial = Git(copy).run(
            "apply",
            f"-p{strip}",
            *(f"--exclude={glob}" for glob in excludes),
            "--reject",
            "--verbose",
            "--",
            str(patch.resolve()),
            check=False,
        )
        return _read_trial(copy, trial.stderr)


def _read_trial(copy: Path, stderr: str) -> TrialApply:
    numbers: dict[str, list[int]] = {}
    missing: list[str] = []
    existing: list[str] = []
    other: list[str] = []
    whole: dict[str, str] = {}  # paths git gave up on whole -> git's reason
    current: str | None = None  # the file of git's last "Checking patch"
    rejecting: str | None = None  # the file of its last "Applying patch ... with rejects"
    reason = ""  # git's last error line about the current file
    searching = False
    for line in stderr.splitlines():
        if searching:
            # git quotes what it searched for between these two error lines.
            searching = not line.startswith("error: patch failed: ")
            continue
        if line == "error: while searching for:":
            searching = True
        elif line.startswith("Checking patch ") and line.endswith("..."):
            current, reason = unquote(line[len("Checking patch ") : -3]), ""
        elif match := _REJECTS.match(line):
            rejecting = unquote(match["path"])
            numbers.setdefault(rejecting, [])
        elif (match := _REJECTED.match(line)) and rejecting is not None:
            numbers[rejecting].append(int(match["number"]))
        elif match := _FILE_PROBLEM.match(line):
            path, why = unquote(match["path"]), match["why"]
            if why.startswith("already exists"):
                existing.append(path)
            elif why != "patch does not apply":
                missing.append(path)
            elif path not in numbers:
                whole.setdefault(path, reason)
        elif line.startswith(("error: ", "fatal: ")) and not line.startswith(
            "error: patch failed: "
        ):
            if current is not None and line.startswith("error: "):
                reason = line.removeprefix("error: ")
            else:
                other.append(line)
    rejected: list[RejectedHunk] = []
    for path, hunk_numbers in numbers.items():
        hunks = _read_rejects(copy / (path + ".rej"))
        for position, number in enumerate(hunk_numbers):
            header, searched = hunks[position] if position < len(hunks) else ("", ())
            rejected.append(RejectedHunk(path, number, header, searched))
    undeleted = [p for p, why in whole.items() if why == "removal patch leaves file contents"]
    refused = [(p, why) for p, why in whole.items() if p not in undeleted and p not in missing]
    return TrialApply(
        tuple(rejected),
        tuple(dict.fromkeys(missing)),
        tuple(dict.fromkeys(existing)),
        tuple(other),
        tuple(undeleted),
        tuple(refused),
    )


def _read_rejects(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """The hunks of a `.rej` file git wrote: (`@@` line, old-side lines)."""
    try:
        text = path.read_text("utf-8", "surrogateescape")
    except OSError:
        return []
    hunks: list[tuple[str, list[str]]] = []
    for line in text.splitlines():
        if line.startswith("@@ "):
            hunks.append((line, []))
        elif hunks and line[:1] in (" ", "-"):
            hunks[-1][1].append(line[1:])
        elif hunks and line == "":
            hunks[-1][1].append("")
    return [(header, tuple(lines)) for header, lines in hunks]


def describe_trial(
    trial: TrialApply, labels: Mapping[str, str] | None = None, private: bool = False
) -> list[str]:
    """The lines of a failure report: every rejected hunk (with the first lines
    git searched for, unless `private`: see `redacted`), every path that is
    missing, exists already, or differs from what the patch removes; all of
    them, however many: the list is the point. `labels` maps a path as in the
    tree to how to show it."""

    def named(path: str) -> str:
        return (labels or {}).get(path, path)

    lines = []
    for hunk in trial.rejected:
        label = hunk_label(hunk.number, hunk.header, private)
        lines.append(f"  {named(hunk.path)}: hunk {label} does not match the base")
        lines.extend(redacted(hunk.searched, private))
    lines.extend(f"  {named(path)}: does not exist in the tree" for path in trial.missing)
    lines.extend(f"  {named(path)}: already exists in the tree" for path in trial.existing)
    lines.extend(f"  {named(path)}: {REMOVAL_DIFFERS}" for path in trial.undeleted)
    lines.extend(
        f"  {named(path)}: git refused it" + (f" ({why})" if why else "")
        for path, why in trial.refused
    )
    lines.extend("  " + line for line in trial.other)
    return lines
