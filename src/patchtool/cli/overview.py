"""What `list` and `status` show: the store's devices and bases, and a build
tree's state. Data only; cli/app.py prints it (as a table, text or JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchtool.core.errors import PatchtoolError
from patchtool.core.gitops import Git
from patchtool.series.privacy import Keyring
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series
from patchtool.trees.in_progress import RebaseStop, in_progress_lines, rebase_stop
from patchtool.trees.record import find_tree, read_record
from patchtool.trees.work import tree_work, uncommitted_files


def store_listing(store: Store) -> list[dict[str, Any]]:
    """One entry per device and base, with the command that checks it alone: the
    `include` list of a CI matrix (GitHub Actions strategy.matrix) as it is. A
    device that cannot be read (a folder without a valid device.toml, a base.toml
    or a series that does not parse), or that has no base, is one entry with base
    null and its problem, as in `check --json`: CI runs its check, which fails by
    name. The other devices are listed as they are."""
    entries: list[dict[str, Any]] = []
    for name in store.device_names():
        display_name: str | None = None
        try:
            device = store.device(name)
            display_name = device.display_name
            device_entries = _base_entries(store, name, display_name)
        except PatchtoolError as error:
            entries.append(_device_entry(name, display_name, error.message))
            continue
        entries.extend(device_entries or [_device_entry(name, display_name, "no base")])
    return entries


def _base_entries(store: Store, name: str, display_name: str | None) -> list[dict[str, Any]]:
    """The device's entries, one per base; a base or series that cannot be read is
    the device's PatchtoolError (the one decision `store_listing` turns into its
    problem entry)."""
    entries = []
    for base in store.bases(name):
        series = parse_series(base).entries
        entries.append(
            {
                "device": name,
                "display_name": display_name,
                "base": base.base_id,
                "project": base.project,
                "version": base.version,
                "commit": base.commit,
                "source": base.source.kind,
                "patches": len(series),
                "private": sum(1 for e in series if e.private),
                "command": f"patchtool check -d {name} --commit-id {base.base_id}",
            }
        )
    return entries


def _device_entry(name: str, display_name: str | None, problem: str) -> dict[str, Any]:
    return {
        "device": name,
        "display_name": display_name,
        "base": None,
        "problem": problem,
        "command": f"patchtool check -d {name}",
    }


@dataclass(frozen=True)
class TreeStatus:
    tree: str
    device: str
    # None while a rebase is in progress and the tree stands on no state it can
    # name (started but not yet on the new base): status then shows only its line
    # and the uncommitted files, never the old base's commits as work.
    base: str | None
    project: str | None
    version: str | None
    base_commit: str | None
    commits: list[str]  # "<short id> <subject>", oldest first
    unexported: list[str]
    uncommitted: list[str]
    other: list[str]  # stashes, side branches; private patches --public-only left out
    # What the tree is in the middle of (a rebase, git's own operation): status
    # leads with these lines (trees/in_progress.py renders them).
    in_progress: list[str] = field(default_factory=list)
    left_out_private: list[str] = field(default_factory=list)  # by --public-only

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["project"]
        return data


def tree_status(
    store: Store,
    build_dir: Path,
    device: str,
    keyring: Keyring | None = None,
    given_dir: Path | None = None,
) -> TreeStatus:
    """The device's build tree: what it is in the middle of, its base, its commits,
    and the work the store lacks."""
    tree = find_tree(build_dir, device, given_dir)
    in_progress = in_progress_lines(tree)
    record = read_record(tree)
    git = Git(tree)
    stop = rebase_stop(tree.parent)
    if stop is not None:
        if stop.phase != "starting" and _on_new_base(git, stop):
            return _rebasing_status(git, tree, stop, in_progress)
        return _interrupted_status(git, tree, stop, in_progress)
    base = store.resolve_base(device, record.base_id)
    log = git.lines("log", "--reverse", "--format=%h %s", f"{record.base_commit}..HEAD")
    work = tree_work(git, base, record.base_commit, keyring)
    other = list(work.other)
    if record.skipped_private:
        other.append(
            public_only_note(record.skipped_private, len(parse_series(base).entries), device)
        )
    return TreeStatus(
        tree=str(tree),
        device=device,
        base=record.base_id,
        project=record.project,
        version=record.version,
        base_commit=record.base_commit,
        commits=log,
        unexported=work.unexported,
        uncommitted=work.uncommitted,
        other=other,
        in_progress=in_progress,
        left_out_private=list(record.skipped_private),
    )


def _on_new_base(git: Git, stop: RebaseStop) -> bool:
    """The tree stands on the rebase's new base (its picks on top): the rebase
    has checked it out, so the base the record names is no longer the tree's."""
    if not stop.onto_commit:
        return False
    ancestor = git.run("merge-base", "--is-ancestor", stop.onto_commit, "HEAD", check=False)
    return ancestor.returncode == 0


def _rebasing_status(git: Git, tree: Path, stop: RebaseStop, in_progress: list[str]) -> TreeStatus:
    """A tree a stopped rebase stands on: its base is the rebase's new base, its
    commits the patches picked so far. None of them is unexported work: the
    rebase's --continue writes them into the store (its --abort drops them)."""
    return TreeStatus(
        tree=str(tree),
        device=stop.device,
        base=stop.onto,
        project=stop.onto_project,
        version=stop.onto_version,
        base_commit=stop.onto_commit,
        commits=git.lines("log", "--reverse", "--format=%h %s", f"{stop.onto_commit}..HEAD"),
        unexported=[],
        uncommitted=uncommitted_files(git),
        other=[],
        in_progress=in_progress,
    )


def _interrupted_status(
    git: Git, tree: Path, stop: RebaseStop, in_progress: list[str]
) -> TreeStatus:
    """A tree a rebase left before it stood on its new base (killed while it
    started): its commits are neither the old base's series nor the new one's
    picks, so nothing but its line and the uncommitted files is shown (--abort
    puts the tree back, and then status shows it whole)."""
    return TreeStatus(
        tree=str(tree),
        device=stop.device,
        base=None,
        project=None,
        version=None,
        base_commit=None,
        commits=[],
        unexported=[],
        uncommitted=uncommitted_files(git),
        other=[],
        in_progress=in_progress,
    )


def public_only_note(left_out: tuple[str, ...], series_patches: int, device: str) -> str:
    """What a tree made with --public-only lacks, and how to get it."""
    count = len(left_out)
    return (
        f"made with --public-only: it holds {series_patches - count} of the series' "
        f"{series_patches} patches; {count} private patch(es) left out: {', '.join(left_out)} "
        f"(`patchtool unpatch -d {device} --identity FILE` makes the tree with them)"
    )
