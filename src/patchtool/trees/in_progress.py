"""What a build tree is in the middle of, seen by every command: a patchtool
rebase (its state file beside the tree), or one of git's own operations in the
tree (rebase, am, merge, cherry-pick, revert, bisect, a detached HEAD behind
the tree's branch).

`rebase_stop` reads the rebase's state file (its location is defined here, for
`rebase` and every other command alike) and `rebase_line` renders the one line
that `status` leads with and that `patch`, `unpatch`, `build-wheel` and
`import` refuse with (`refuse_in_progress`, OperationInProgressError, exit 5).
The rebase itself (commands/rebase/) owns the rest of that file; this module
reads only what the line says. It never changes a tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchtool.core.errors import IntegrityError, OperationInProgressError, quoted
from patchtool.core.fsutil import read_json_record
from patchtool.core.gitops import Git

# The rebase's state file, in the device's build folder: STATE_PREFIX + project +
# STATE_SUFFIX (commands/rebase/state.py writes and reads the whole of it).
STATE_PREFIX = ".patchtool-rebase-"
STATE_SUFFIX = ".json"


def state_path(tree: Path) -> Path:
    """`<dir>/<device>/.patchtool-rebase-<project>.json`: beside the tree, not in it,
    so that it can be written before the tree exists and survives a half-made one."""
    return tree.parent / f"{STATE_PREFIX}{tree.name}{STATE_SUFFIX}"


def state_files(device_dir: Path) -> list[Path]:
    """The rebase state files in a device's build folder, by name."""
    if not device_dir.is_dir():
        return []
    return sorted(
        p
        for p in device_dir.glob(f"{STATE_PREFIX}*{STATE_SUFFIX}")
        if p.is_file() and len(p.name) > len(STATE_PREFIX) + len(STATE_SUFFIX)
    )


@dataclass(frozen=True)
class RebaseStop:
    """Where a rebase is, as its state file records it."""

    device: str
    carry: bool  # onto existing bases (`rebase --onto EXISTING`, `--carried`)
    onto: str  # the base id of the (current) new base
    phase: str  # starting, picking, finishing, next (see commands/rebase/state.py)
    position: int  # 0-based: the patch being picked
    total: int
    patch: str | None  # the file name of the patch at `position`
    pick_running: bool  # patchtool was killed while it picked that patch
    chain: tuple[str, ...]  # a carry: the base ids still to carry onto
    # The new base's project, version and commit (what `status` shows as the
    # tree's base while the rebase is stopped on it).
    onto_project: str = ""
    onto_version: str = ""
    onto_commit: str = ""


def _stop_from(data: dict[str, Any]) -> RebaseStop:
    patches = data["patches"]
    position = int(data["position"])
    return RebaseStop(
        device=str(data["device"]),
        carry=bool(data.get("carry", False)),
        onto=str(data["new_base"]["base_id"]),
        phase=str(data["phase"]),
        position=position,
        total=len(patches),
        patch=str(patches[position]["name"]) if 0 <= position < len(patches) else None,
        pick_running=bool(data.get("pick_running", False)),
        chain=tuple(str(b) for b in data.get("chain", ())),
        onto_project=str(data["new_base"].get("project", "")),
        onto_version=str(data["new_base"].get("version", "")),
        onto_commit=str(data["new_base"].get("commit", "")),
    )


def rebase_stop(device_dir: Path) -> RebaseStop | None:
    """The rebase in progress in a device's build folder, if any (a damaged state
    file is IntegrityError, exit 6, naming it)."""
    found = state_files(device_dir)
    if not found:
        return None
    return read_json_record(
        found[0],
        _stop_from,
        "Finish the rebase by hand, or delete the file and run `patchtool unpatch --force`.",
    )


def rebase_line(stop: RebaseStop) -> str:
    """The one line that says where a rebase is and what to run next."""
    what = f"{'carry' if stop.carry else 'rebase'} of {stop.device} onto {stop.onto}"
    command = f"`patchtool rebase -d {stop.device}"
    if stop.phase == "starting":
        return (
            f"{what} was interrupted before its first patch: {command} --abort` puts the "
            "tree back, then start it again"
        )
    if stop.phase == "next":
        left = ", ".join(stop.chain)
        return (
            f"{what} stopped between two bases (still to carry onto: {left or 'none'}): "
            f"{command} --continue` (or --abort)"
        )
    if stop.phase == "finishing" or stop.patch is None:
        return (
            f"{what} was interrupted while it wrote the store: {command} --continue` "
            "finishes it (or --abort)"
        )
    at = f"patch {stop.position + 1}/{stop.total} ({stop.patch})"
    if stop.pick_running:
        return f"{what} was interrupted at {at}: {command} --continue` (or --skip, --abort)"
    return f"{what} stopped at {at}: resolve, then {command} --continue` (or --skip, --abort)"


def _until_it_ends(stop: RebaseStop, command: str) -> str:
    """Why `command` refuses during the rebase, and the ways out its phase has: a
    rebase interrupted before its first patch has nothing to continue."""
    rebase = f"`patchtool rebase -d {stop.device}"
    if stop.phase == "starting":
        return (
            f"{command} refuses until the rebase ends: it was interrupted before its first "
            f"patch, so there is nothing to continue; {rebase} --abort` puts the tree and the "
            f"store back as they were (then run {command} again, or start the rebase again)."
        )
    return (
        f"{command} refuses until the rebase ends: {rebase} --continue` writes the new "
        f"base's series into the store and leaves the tree on it; {rebase} --abort` puts "
        "the tree and the store back as they were."
    )


@dataclass(frozen=True)
class GitOperation:
    """One of git's own operations, stopped in a tree."""

    name: str  # "git rebase", "git am", ...
    finish: str  # how to go on
    undo: str  # how to undo it

    def line(self, tree: Path) -> str:
        return f"a `{self.name}` is in progress in the build tree {tree}"

    def advice(self) -> str:
        return f"finish it with `{self.finish}`, or undo it with `{self.undo}`"


def _sequence(name: str) -> GitOperation:
    return GitOperation(name, f"{name} --continue", f"{name} --abort")


def git_operation(tree: Path) -> GitOperation | None:
    """git's own operation stopped in the tree, by the files git keeps for it."""
    git_dir = tree / ".git"
    if (git_dir / "rebase-merge").is_dir():
        return _sequence("git rebase")
    if (git_dir / "rebase-apply").is_dir():
        applying = (git_dir / "rebase-apply" / "applying").exists()
        return _sequence("git am" if applying else "git rebase")
    if (git_dir / "MERGE_HEAD").is_file():
        return _sequence("git merge")
    if (git_dir / "CHERRY_PICK_HEAD").is_file():
        return _sequence("git cherry-pick")
    if (git_dir / "REVERT_HEAD").is_file():
        return _sequence("git revert")
    if (git_dir / "BISECT_LOG").is_file():
        return GitOperation("git bisect", "git bisect reset", "git bisect reset")
    return None


def branches_ahead_of_detached_head(git: Git) -> list[tuple[str, int]]:
    """With HEAD detached (a `git checkout HEAD~2`, an edit stop): each branch
    that has commits HEAD lacks, and how many. Empty when HEAD is on a branch."""
    if git.run("symbolic-ref", "--quiet", "HEAD", check=False).returncode == 0:
        return []
    ahead = []
    for branch in git.lines("for-each-ref", "--format=%(refname:short)", "refs/heads"):
        count = int(git.text("rev-list", "--count", f"HEAD..refs/heads/{branch}"))
        if count:
            ahead.append((branch, count))
    return ahead


def in_progress_lines(tree: Path) -> list[str]:
    """What `status` leads with: the rebase's line, git's operation, a detached HEAD
    behind a branch. Empty when the tree is in the middle of nothing."""
    stop = rebase_stop(tree.parent)
    if stop is not None:
        return [rebase_line(stop)]
    lines = []
    operation = git_operation(tree)
    if operation is not None:
        lines.append(f"a `{operation.name}` is in progress: {operation.advice()}")
    for branch, count in branches_ahead_of_detached_head(Git(tree)):
        lines.append(
            f"HEAD is detached, and branch {quoted(branch)} has {count} commit(s) it lacks: "
            f"`git checkout {branch}` (or `git checkout -B {branch}` to keep HEAD)"
        )
    return lines


def refuse_in_progress(
    device_dir: Path, tree: Path | None, command: str, *, force: bool = False
) -> None:
    """Refuse `command` (exit 5) while a rebase is in progress for the device, or
    (given the tree) while git's own operation is stopped in the tree or its HEAD
    is detached behind a branch: what the command would read or replace is
    half-made. `force`: the command was given --force, which never drops a rebase."""
    try:
        stop = rebase_stop(device_dir)
    except IntegrityError as error:
        raise OperationInProgressError(
            f"a rebase is in progress in {device_dir}, and its state cannot be read: "
            f"{error.message}",
            hint=error.hint,
        ) from error
    if stop is not None:
        raise OperationInProgressError(
            rebase_line(stop),
            hint=(
                f"--force does not drop a rebase (its resolutions would be lost): run "
                f"`patchtool rebase -d {stop.device} --abort` first (it puts the tree and "
                f"the store back as they were), then {command} again."
                if force
                else _until_it_ends(stop, command)
            ),
        )
    if tree is None or not (tree / ".git").is_dir():
        return
    operation = git_operation(tree)
    if operation is not None:
        raise OperationInProgressError(
            operation.line(tree),
            hint=f"In the tree, {operation.advice()}; then run {command} again "
            "(now it would see a half-made series).",
        )
    ahead = branches_ahead_of_detached_head(Git(tree))
    if ahead:
        branch, count = ahead[0]
        raise OperationInProgressError(
            f"HEAD in the build tree {tree} is detached, and branch {quoted(branch)} has "
            f"{count} commit(s) HEAD lacks (now {command} would leave them out)",
            hint=f"`git checkout {branch}` to work on the branch, or `git checkout -B "
            f"{branch}` to make HEAD the branch; then run {command} again.",
        )
