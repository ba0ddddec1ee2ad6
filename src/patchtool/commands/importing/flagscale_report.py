"""`import --flagscale`: the summary table, and every failure of a set that does
not apply.

One row per device and backend; below the table, each set that was not
imported with its reason and every failing file and hunk (all of them: a long
list is the point), and each change git found already in the base. A private
patch's failure is shown by file and position only (trees.applying.redacted,
the one rule every command's failure report follows).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from patchtool.core.gitops import TOOL_COMMITTER, Git
from patchtool.series.safety import check_size
from patchtool.store.model import DEFAULT_LIMITS, BaseRef
from patchtool.trees.applying import TrialApply, checkout_base, describe_trial, trial_apply
from patchtool.vendors.flagscale.model import BackendSet


@dataclass
class MigrateRow:
    """One line of the summary: a device and backend of the FlagScale tree."""

    device: str
    backend: str
    base: str = "-"
    files: int = 0
    patches: int = 0
    clean: int = 0  # files that applied as they are
    three_way: int = 0  # files that needed a 3-way merge
    failed: int = 0  # files that did not apply
    reason: str = ""  # why the set failed or was skipped ("" when imported)
    exit_code: int = 0  # the failure's exit code (errors.ExitCode); 0 for a skipped set
    details: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # changes already in the base

    @property
    def ok(self) -> bool:
        return not self.reason

    @property
    def skipped(self) -> bool:
        return bool(self.reason) and self.exit_code == 0


def render_summary(rows: list[MigrateRow]) -> list[str]:
    """The summary table, fixed columns, one row per device and backend, then the
    reasons of the rows that failed or were skipped, in full."""
    header = ("device", "backend", "base", "files", "patches", "clean", "3-way", "failed")
    table = [header] + [
        (
            row.device,
            row.backend,
            row.base,
            str(row.files),
            str(row.patches),
            str(row.clean),
            str(row.three_way),
            str(row.failed),
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in table
    ]
    for row in rows:
        if row.reason:
            lines.append(f"{row.device}/{row.backend}: {row.reason}")
            lines.extend(f"  {detail}" for detail in row.details)
        lines.extend(
            f"{row.device}/{row.backend}: already in the base, dropped: {origin}"
            for origin in row.dropped
        )
    return lines


def try_each_group(
    found: BackendSet,
    base: BaseRef,
    repository: Path,
    scratch: Path,
    strip: int,
    three_way: bool,
) -> tuple[list[tuple[int, TrialApply]], set[str]]:
    """Every group tried on a throw-away checkout of the base, in order, each on
    the ones before that applied (a group that fails is left out and the next
    tried), with git's 3-way merge where the user asked for it: the groups that
    fail with everything that failed in each, and the paths that needed a merge."""
    tree = scratch / "trial" / base.project
    tree.parent.mkdir(parents=True)
    checkout_base(repository, tree, base, "trial")
    git = Git(tree, env=TOOL_COMMITTER)
    failures: list[tuple[int, TrialApply]] = []
    merged: set[str] = set()
    for number, group in enumerate(found.groups, 1):
        patch = scratch / f"group-{number:04d}.diff"
        diff = group.diff()
        # Bounded before git reads it, as every patch is (the device may not exist
        # yet: the defaults apply); the import itself checks each change again.
        check_size(f"{found.source} ({group.component})", diff, DEFAULT_LIMITS)
        patch.write_bytes(diff)
        if git.run("apply", f"-p{strip}", "--index", "--", str(patch), check=False).returncode:
            trial = trial_apply(git, patch, scratch, strip)
            if (
                three_way
                and (
                    git.run(
                        "apply", f"-p{strip}", "--index", "--3way", "--", str(patch), check=False
                    )
                ).returncode
                == 0
            ):
                merged.update(trial.failed_paths)
            else:
                git.run("reset", "--quiet", "--hard", "HEAD")
                failures.append((number, trial))
                continue
        if git.run("diff", "--cached", "--quiet", "HEAD", check=False).returncode:
            trial_author = {"GIT_AUTHOR_NAME": "trial", "GIT_AUTHOR_EMAIL": "trial@invalid"}
            git.run("commit", "--quiet", "--no-verify", "-m", f"group {number}", env=trial_author)
    return failures, merged


def failure_details(found: BackendSet, failures: list[tuple[int, TrialApply]]) -> list[str]:
    total = len(found.groups)
    lines: list[str] = []
    for number, trial in failures:
        group = found.groups[number - 1]
        lines.append(f"patch {number}/{total} ({group.subject}):")
        lines.extend(describe_trial(trial, private=group.encrypted))
    return lines
