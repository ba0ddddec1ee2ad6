"""Build trees: `<dir>/<device>/<project>`, where they are and what they record.

A build tree is a self-contained git repository: the base commit (marked by
`refs/patchtool/base-commit` and the tag `patchtool/base`) and one commit per patch.
`.git/patchtool.json` records which device and base it was made from (and
what it knows of the series' private patches).

Every command finds a tree here (`find_tree`, `enclosing_tree`) and reads and
writes its record. Making a tree is applying.py's and building.py's; turning its
commits into patches is the export pipeline's (patchtool.series.pipeline).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import MISSING, asdict, dataclass, field, replace
from pathlib import Path

from patchtool.core.errors import NotFoundError, UsageError, quoted
from patchtool.core.fsutil import atomic_write, check_name, read_json_record
from patchtool.core.gitops import Git
from patchtool.series.privacy import private_record
from patchtool.series.rendering import RenderedPatch, private_pairs
from patchtool.store.model import PatchSeries
from patchtool.store.series import series_digest

METADATA_FILE = "patchtool.json"
BASE_REF = "refs/patchtool/base-commit"
BASE_TAG = "patchtool/base"


@dataclass(frozen=True)
class TreeRecord:
    device: str
    base_id: str
    project: str
    version: str
    base_commit: str
    # The store's series (store.series.series_digest) as this tree last read or wrote
    # it: `patch` refuses to export over a series that changed since.
    # Empty for trees made before patchtool recorded it.
    store_digest: str = ""
    # The store the tree was made from (its absolute path): commands run inside
    # the tree find it here. Empty for trees made before patchtool recorded it.
    store: str = ""
    # The private patches (privacy.py) the tree was made or last exported with:
    # the sha256 of each stored file -> the sha256 of its plaintext, so that
    # commands tell exported work from new without a key; and the patch-ids of
    # their changes, so that `patch` notices a private change about to be
    # exported in clear.
    private: dict[str, str] = field(default_factory=dict)
    private_patch_ids: tuple[str, ...] = ()
    # Private patches `unpatch --public-only` left out (their file names).
    skipped_private: tuple[str, ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


@dataclass(frozen=True)
class TreeLocation:
    build_dir: Path
    device: str
    project: str

    @property
    def device_dir(self) -> Path:
        return self.build_dir / check_name("device", self.device)

    @property
    def tree(self) -> Path:
        return self.device_dir / check_name("project", self.project)


DAMAGED_RECORD_HINT = (
    "Recreate the tree with `patchtool unpatch --force` (the tree is kept in backups/)."
)


def read_record(tree: Path) -> TreeRecord:
    """The tree's record: NotFoundError (exit 3) when it has none, IntegrityError
    (exit 6) when it is damaged."""
    path = tree / ".git" / METADATA_FILE
    try:
        return read_json_record(path, _record_from, DAMAGED_RECORD_HINT)
    except FileNotFoundError as error:
        raise NotFoundError(
            f"{tree} is not a patchtool build tree ({path} is missing)",
            hint="Create it with `patchtool unpatch`.",
        ) from error


def _record_from(data: dict[str, object]) -> TreeRecord:
    values: dict[str, object] = {}
    for key, spec in TreeRecord.__dataclass_fields__.items():
        if key not in data:
            if spec.default is MISSING and spec.default_factory is MISSING:
                raise KeyError(key)
            continue
        value = data[key]
        if key == "private":
            if not isinstance(value, dict):
                raise TypeError("'private' is not an object")
            values[key] = {str(k): str(v) for k, v in value.items()}
        elif key in ("private_patch_ids", "skipped_private"):
            if not isinstance(value, list):
                raise TypeError(f"{quoted(key)} is not a list")
            values[key] = tuple(str(v) for v in value)
        else:
            values[key] = str(value)
    return TreeRecord(**values)  # type: ignore[arg-type]


def write_record(tree: Path, record: TreeRecord) -> None:
    atomic_write(tree / ".git" / METADATA_FILE, record.to_json().encode("utf-8"))


def enclosing_tree(start: Path) -> Path | None:
    """The build tree that holds `start` (the folder itself or one above it), if any:
    a folder whose `.git` is a directory with patchtool's record in it."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / ".git" / METADATA_FILE).is_file() and (folder / ".git").is_dir():
            return folder
    return None


def find_tree(build_dir: Path, device: str, given_dir: Path | None = None) -> Path:
    """The one build tree of a device (its project folder). `given_dir`: the --dir
    the user typed, repeated in the command the hint names."""
    device_dir = build_dir / check_name("device", device)
    trees = (
        [p for p in sorted(device_dir.iterdir()) if (p / ".git" / METADATA_FILE).is_file()]
        if device_dir.is_dir()
        else []
    )
    if not trees:
        raise NotFoundError(
            f"no build tree for device {quoted(device)} under {device_dir}",
            hint=f"Create one with `patchtool unpatch --device-type {device}"
            + (f" --dir {shlex.quote(str(given_dir))}" if given_dir is not None else "")
            + "`.",
        )
    if len(trees) > 1:
        raise UsageError(
            f"several build trees under {device_dir}: " + ", ".join(p.name for p in trees)
        )
    return trees[0]


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
        private, ids = private_record(git, private_pairs(patches))
        updated = replace(updated, private=private, private_patch_ids=ids)
    if updated != record:
        write_record(tree, updated)
