"""A rebase's state: the file beside the build tree and the tree's mark.

The state lives in `<dir>/<device>/.patchtool-rebase-<project>.json` (the
device folder is patchtool's own; a tree the rebase creates does not exist yet
when the state must first be written). It is written before the tree is
touched and moves through the phases "starting" (what `--abort` needs to put
the tree back), "picking" (the patches, one at a time) and "finishing" (the
base folder is staged; its digest is recorded before it enters the store).
A carry onto several bases (`--onto A,B`) goes through "starting" and
"picking" once per base: "next" marks the start of a later one, which
`--continue` can set up again.

The rebase marks the tree it works in (`.git/patchtool-rebase-id`) before it
changes anything there, so a tree replaced since (`unpatch --force`) is never
"restored" by mistake.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from patchtool.commands.jobs import CachedDeviceJob
from patchtool.core.errors import UsageError, quoted
from patchtool.core.fsutil import atomic_write, check_name, read_json_record
from patchtool.store.model import BaseOrigin, BaseRef, GitSource, GitUrl, PypiSource

# The state file, in the device's build folder: STATE_PREFIX + project + STATE_SUFFIX.
STATE_PREFIX = ".patchtool-rebase-"
STATE_SUFFIX = ".json"
# In the tree's .git: the id of the rebase that may change this tree.
MARKER_FILE = "patchtool-rebase-id"
STARTING, PICKING, FINISHING, NEXT = "starting", "picking", "finishing", "next"
OLD_BASE_REF = "refs/patchtool/rebase/old-base"
OLD_TIP_REF = "refs/patchtool/rebase/old-tip"
NEW_BASE_REF = "refs/patchtool/rebase/new-base"
# A carry: the target's series as the store holds it, applied on the target.
TARGET_TIP_REF = "refs/patchtool/rebase/target-tip"
# A carry onto several bases: the new tip of each base carried so far.
CARRIED_REF_PREFIX = "refs/patchtool/rebase/carried/"

CLEAN, THREE_WAY, BY_HAND, UPSTREAM, SKIPPED = (
    "clean",
    "3-way",
    "resolved by hand",
    "dropped as upstream",
    "skipped",
)
UNCHANGED, ALREADY_IN = "unchanged", "already in"  # a carry's kept patch; a change found there
PICKED = "picked"  # clean or 3-way: decided at the end, by patch-id
# What a carry does with each patch (PatchState.change; None in a plain rebase).
KEPT, ADDED, UPDATED, REMOVED, OWN = "kept", "added", "updated", "removed", "own"
# How a patch is applied (PatchState.action).
PICK, KEEP, FOLD, DROP = "pick", "keep", "fold", "drop"


@dataclass
class PatchState:
    name: str
    subject: str
    old_commit: str  # what is picked (a carry's kept patch: the target's commit)
    outcome: str | None = None
    new_commit: str | None = None
    conflicts: list[str] = field(default_factory=list)
    note: str | None = None
    # A carry: what happens to the patch, how it is applied, its file in the
    # from-series and in the target's, and why it was paired or planned so.
    change: str | None = None
    action: str = PICK
    from_name: str | None = None
    target_name: str | None = None
    detail: str | None = None
    message_from: str | None = None  # a carried change: the commit whose message it takes


@dataclass
class RebaseState:
    device: str
    store: str
    old_base_id: str
    old_base_commit: str
    new_base: BaseRef  # the new base, its folder (not yet written) and source included
    tree_existed: bool
    saved_branch: str | None  # the tree's branch before the rebase (None: detached)
    saved_head: str | None
    saved_record: str | None
    series_header: list[str]
    patches: list[PatchState]
    position: int = 0
    pick_from: str | None = None  # HEAD before the patch at `position` was picked
    phase: str = PICKING  # STARTING, PICKING, FINISHING or NEXT
    rebase_id: str = ""  # also in the tree's .git/MARKER_FILE once the tree is touched
    # The refs the rebase may move, as they were (None: absent): restored by --abort.
    saved_refs: dict[str, str | None] = field(default_factory=dict)
    # True while patchtool itself runs the cherry-pick of the patch at `position`:
    # still True on --continue means that run was killed, not stopped by a conflict.
    pick_running: bool = False
    folder_digest: str | None = None  # the staged new base folder (FINISHING)
    # The new folder's private patches: stored sha256 -> plaintext sha256, and
    # their patch-ids (for the tree's record, see tree.TreeRecord).
    private: dict[str, str] = field(default_factory=dict)
    private_patch_ids: list[str] = field(default_factory=list)
    # A carry onto existing bases (`rebase --onto EXISTING`).
    carry: bool = False
    chain: list[str] = field(default_factory=list)  # the base ids still to carry onto
    # Each base carried so far: {"path", "staging", "old_digest", "new_digest"}.
    staged: list[dict[str, str]] = field(default_factory=list)
    # The from-series as paired: [file name, git blob id of its file] in order.
    from_blobs: list[list[str]] = field(default_factory=list)
    pairing: str = ""  # how the patches were paired (said in the report)
    original_base_id: str = ""  # the -c base a carry started from

    @property
    def onto_text(self) -> str:
        """The `--onto` (and `--base-version`) that starts this rebase again."""
        new = self.new_base
        if isinstance(new.source, GitSource):
            return f"git+{new.source.url}@{new.commit} --base-version {new.version}"
        return new.version


@dataclass(frozen=True, kw_only=True)
class RebaseOptions(CachedDeviceJob):
    onto: str | None = None
    base: str | None = None  # --commit-id: a commit id, unique prefix, folder name or version
    action: str = "start"  # start, continue, skip, abort
    note: str | None = None
    version_label: str | None = None
    carried: bool = False  # carry onto every base carried from the -c base, in chain order


@dataclass(frozen=True)
class RebaseResult:
    tree: Path
    old_base: str
    new_base: BaseRef | None  # None after --abort
    outcomes: tuple[tuple[str, str], ...]  # (patch name, outcome)
    report: Path | None
    carried: tuple[BaseRef, ...] = ()  # a carry: every base it updated, in order


def state_path(tree: Path) -> Path:
    """`<dir>/<device>/.patchtool-rebase-<project>.json`: beside the tree, not in it,
    so that it can be written before the tree exists and survives a half-made one."""
    return tree.parent / f"{STATE_PREFIX}{tree.name}{STATE_SUFFIX}"


def save_state(tree: Path, state: RebaseState) -> None:
    data = asdict(state)
    data["new_base"]["path"] = str(state.new_base.path)
    atomic_write(state_path(tree), (json.dumps(data, indent=2, sort_keys=True) + "\n").encode())


_DAMAGED_STATE_HINT = "Finish by hand, or delete it and run `unpatch --force`."


def load_state(tree: Path) -> RebaseState:
    try:
        return read_json_record(state_path(tree), _state_from, _DAMAGED_STATE_HINT)
    except FileNotFoundError as error:
        raise UsageError(
            f"no rebase is in progress in {tree}",
            hint="Start one with `patchtool rebase -d DEVICE --onto VERSION`.",
        ) from error


def _state_from(data: dict[str, Any]) -> RebaseState:
    data["patches"] = [PatchState(**p) for p in data["patches"]]
    data["new_base"] = _base_from(data["new_base"])
    return RebaseState(**data)


def _base_from(data: dict[str, Any]) -> BaseRef:
    """The new base as save_state wrote it (dataclasses.asdict, the path as text)."""
    source_data = data.pop("source")
    source: PypiSource | GitSource
    if source_data["kind"] == "pypi":
        source = PypiSource(source_data["filename"], source_data["sha256"])
    else:
        source = GitSource(GitUrl(source_data["url"]))
    origin: dict[str, Any] | None = data.pop("origin", None)
    if origin is not None:
        origin["models"], origin["task"] = tuple(origin["models"]), tuple(origin["task"])
    return BaseRef(
        source=source,
        path=Path(data.pop("path")),
        origin=BaseOrigin(**origin) if origin is not None else None,
        **data,
    )


def rebase_in_progress(tree: Path) -> bool:
    return state_path(tree).is_file()


def marker_path(tree: Path) -> Path:
    return tree / ".git" / MARKER_FILE


def mark_tree(tree: Path, state: RebaseState) -> None:
    atomic_write(marker_path(tree), (state.rebase_id + "\n").encode())


def owns_tree(tree: Path, state: RebaseState) -> bool:
    """Whether `tree` is the one this rebase changed: it carries the rebase's id.
    A tree without it was not touched yet, or was replaced since the start."""
    try:
        return marker_path(tree).read_text("utf-8").strip() == state.rebase_id
    except (FileNotFoundError, NotADirectoryError):
        return False


def find_rebasing_tree(build_dir: Path, device: str) -> Path:
    device_dir = build_dir / check_name("device", device)
    states = (
        sorted(
            p
            for p in device_dir.glob(f"{STATE_PREFIX}*{STATE_SUFFIX}")
            if p.is_file() and len(p.name) > len(STATE_PREFIX) + len(STATE_SUFFIX)
        )
        if device_dir.is_dir()
        else []
    )
    if not states:
        raise UsageError(
            f"no rebase is in progress for device {quoted(device)} under {device_dir}",
            hint=f"Start one with `patchtool rebase -d {device} --onto VERSION`.",
        )
    project = states[0].name[len(STATE_PREFIX) : -len(STATE_SUFFIX)]
    return device_dir / check_name("project", project)
