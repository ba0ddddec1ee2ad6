"""Commits picked onto another base, one at a time: what a conflict left and
where, and whether a picked commit still makes the same change.

Used by `rebase` (which stops at a conflict) and by its forecast and
`check --forecast` (which note the conflict and go on).
"""

from __future__ import annotations

import re
from pathlib import Path

from patchtool.core.gitops import Git

_MARKERS = re.compile(rb"^(<{7}|={7}|>{7})(?: |$)")


def unmerged(git: Git) -> list[str]:
    """The files a stopped merge left unmerged, sorted."""
    out = git.run("diff", "--name-only", "--diff-filter=U", "-z").stdout
    return sorted({p.decode("utf-8", "surrogateescape") for p in out.split(b"\0") if p})


def conflict_ranges(data: bytes) -> list[tuple[int, int]]:
    """Line ranges (1-based, inclusive) from each `<<<<<<<` to its `>>>>>>>`."""
    ranges: list[tuple[int, int]] = []
    start = None
    for number, line in enumerate(data.split(b"\n"), start=1):
        match = _MARKERS.match(line)
        if not match:
            continue
        if match[1].startswith(b"<"):
            start = number
        elif match[1].startswith(b">") and start is not None:
            ranges.append((start, number))
            start = None
    return ranges


def describe_conflict(tree: Path, path: str) -> str:
    """One conflicting file of a stopped pick: its hunks' line ranges."""
    file = tree / path
    return describe_conflict_data(path, file.read_bytes() if file.is_file() else None)


def describe_conflict_data(name: str, data: bytes | None) -> str:
    """A conflicting file as merged, markers and all (None: deleted on one
    side): `name` and its hunks' line ranges."""
    if data is None:
        return f"{name}: deleted on one side, changed on the other (no markers; see git status)"
    ranges = conflict_ranges(data)
    if not ranges:
        return f"{name}: conflict without markers (binary, mode or rename; see git status)"
    shown = ", ".join(f"{a}-{b}" for a, b in ranges)
    return f"{name}: {len(ranges)} conflict hunk(s) at lines {shown}"


def commit_patch_ids(git: Git, revisions: list[str]) -> dict[str, str]:
    """commit -> git's stable patch-id (line numbers and whitespace ignored)."""
    if not revisions:
        return {}
    diffs = git.run(
        "diff-tree",
        "--stdin",
        "-p",
        "--no-color",
        "--root",
        input=("\n".join(revisions) + "\n").encode(),
    ).stdout
    ids = git.run("patch-id", "--stable", input=diffs).text
    return {commit: pid for pid, commit in (line.split() for line in ids.splitlines() if line)}


def is_empty_pick(output: str) -> bool:
    """Whether a failed cherry-pick failed only because the change is already there."""
    return "is now empty" in output or "nothing to commit" in output
