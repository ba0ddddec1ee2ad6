"""What `list` and `status` show: the store's devices and bases, and a build
tree's state. Data only; cli/app.py prints it (as a table, text or JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from patchtool.core.errors import PatchtoolError
from patchtool.core.gitops import Git
from patchtool.series.privacy import Keyring
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series
from patchtool.trees.record import find_tree, read_record
from patchtool.trees.work import tree_work


def store_listing(store: Store) -> list[dict[str, Any]]:
    """One entry per device and base, with the command that checks it alone: the
    `include` list of a CI matrix (GitHub Actions strategy.matrix) as it is. A
    device that cannot be read (a folder without a valid device.toml), or that
    has no base, is one entry with base null, as in `check --json`: CI runs its
    check, which fails by name."""
    entries: list[dict[str, Any]] = []
    for name in store.device_names():
        try:
            device = store.device(name)
            bases = store.bases(name)
        except PatchtoolError as error:
            entries.append(_device_entry(name, None, error.message))
            continue
        if not bases:
            entries.append(_device_entry(name, device.display_name, "no base"))
        for base in bases:
            series = parse_series(base).entries
            entries.append(
                {
                    "device": name,
                    "display_name": device.display_name,
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
    base: str
    project: str
    version: str
    base_commit: str
    commits: list[str]  # "<short id> <subject>", oldest first
    unexported: list[str]
    uncommitted: list[str]
    other: list[str]  # stashes, side branches

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        del data["project"]
        return data


def tree_status(
    store: Store, build_dir: Path, device: str, keyring: Keyring | None = None
) -> TreeStatus:
    """The device's build tree: its base, its commits, and the work the store lacks."""
    tree = find_tree(build_dir, device)
    record = read_record(tree)
    git = Git(tree)
    base = store.resolve_base(device, record.base_id)
    log = git.lines("log", "--reverse", "--format=%h %s", f"{record.base_commit}..HEAD")
    work = tree_work(git, base, record.base_commit, keyring)
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
        other=work.other,
    )
