"""A changed patch's change, as a commit a carry can pick: the patch's earlier
version (the one the target's report recorded, by git blob id) applied where
its new version sits in the from-series, and on it the new version's tree.
The earlier version is looked for in the base folders at hand, then in the git
history of the store's repository (`git cat-file`); a private one is decrypted
with the key.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from patchtool.commands.rebase.state import DROP, PICK, PatchState, RebaseOptions
from patchtool.core.errors import PatchtoolError
from patchtool.core.gitops import Git
from patchtool.core.report import Reporter
from patchtool.series.privacy import decrypt_patch
from patchtool.series.safety import judge_paths, paths_git_reads
from patchtool.store.model import PRIVATE_SUFFIX, BaseRef, DeviceConfig
from patchtool.store.private_file import parse_private_patch


def git_blob_id(data: bytes) -> str:
    """The id git gives a file holding `data` (sha1 object format)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass(frozen=True)
class FromPatch:
    name: str
    blob: str
    commit: str
    subject: str


def make_interdiff(
    git: Git,
    options: RebaseOptions,
    tree: Path,
    plan: list[PatchState],
    index: int,
    from_patches: list[FromPatch],
    folders: list[Path],
    source: BaseRef,
    device: DeviceConfig,
    reporter: Reporter,
) -> None:
    """The fold step's commit: the patch's old version applied where its new one
    sits in the from-series, and on it the new version's tree. Its old version
    not at hand, or not applying there: the new version is picked anew instead."""
    fold = plan[index]
    kept = plan[index - 1]
    blob = fold.old_commit
    position = next(k for k, p in enumerate(from_patches) if p.name == fold.from_name)
    new = from_patches[position]
    parent = from_patches[position - 1].commit if position else source.commit
    data = _old_version(options, blob, fold.from_name or "", folders, device)
    made = data is not None and _apply_old(git, tree, parent, data, source, fold.from_name or "")
    if not made:
        why = "is not at hand" if data is None else "does not apply to its place"
        reporter.warn(f"{fold.name}: its earlier version {why}; its new version is picked anew")
        kept.action, kept.old_commit, kept.subject = PICK, new.commit, new.subject
        kept.detail = (
            f"its earlier version (blob {blob[:12]}) {why}: the new version was picked "
            "anew in place of this base's"
        )
        fold.action, fold.outcome = DROP, None
        return
    old_head = git.text("rev-parse", "HEAD")
    message_changed = git.text("log", "-1", "--format=%B", old_head) != git.text(
        "log", "-1", "--format=%B", new.commit
    )
    tree_id = git.text("rev-parse", f"{new.commit}^{{tree}}")
    fold.old_commit = git.text(
        "commit-tree", tree_id, "-p", old_head, "-m", f"the change to {fold.from_name}"
    )
    fold.message_from = new.commit if message_changed else None


def _old_version(
    options: RebaseOptions, blob: str, name: str, folders: list[Path], device: DeviceConfig
) -> bytes | None:
    """A from-patch's file as it was when last carried: in one of `folders`
    still, or in the git history of the store's repository."""
    data = None
    for folder in folders:
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if path.is_file() and not path.is_symlink():
                content = path.read_bytes()
                if git_blob_id(content) == blob:
                    data = content
                    break
        if data is not None:
            break
    if data is None:
        store_git = Git(options.store.root)
        found = store_git.run("cat-file", "blob", blob, check=False)
        if found.returncode != 0 or git_blob_id(found.stdout) != blob:
            return None
        data = found.stdout
    if not name.endswith(PRIVATE_SUFFIX):
        return data
    if options.keyring is None:
        return None
    path = folders[0] / name
    try:
        return decrypt_patch(
            path, parse_private_patch(path, data), options.keyring, device.recipients
        )
    except PatchtoolError:
        return None


def _apply_old(git: Git, tree: Path, parent: str, data: bytes, source: BaseRef, name: str) -> bool:
    judge_paths(
        f"the earlier version of {name}", paths_git_reads(git, source.path / name, data=data)
    )
    git.run("checkout", "--quiet", "--force", "--detach", parent)
    result = git.run(
        "am", "--quiet", "--3way", "--keep-cr", "--committer-date-is-author-date", input=data,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        git.run("am", "--abort", check=False)
        return False
    return git.text("rev-parse", "HEAD^") == parent
