"""A build tree's commits as the store's patch files, byte-stable.

Each commit is rendered by `git format-patch` with every option that affects
its bytes pinned (zero commit ids, full index lines, no diffstat, no version
signature, no "n/m" numbering, myers diff, rename detection on), so that a
re-export of unchanged work writes the same bytes on any machine. File names
come from subjects, not positions: order lives in `series`, and inserting a
patch renames nothing.

A commit whose message has the trailer `Patchtool-Private: yes` is a private
patch (privacy.py): `seal_patches` gives it its stored file, the one the store
already holds byte for byte when its plaintext is unchanged and it is encrypted
to exactly device.toml's recipients, else a new age encryption to them.
`context_leaks` and `refuse_publishing` guard what private patches would
otherwise show in clear. The steps are put together, once for every command,
by series/pipeline.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from patchtool.core.errors import PatchtoolError, UsageError
from patchtool.core.fsutil import temporary_folder
from patchtool.core.gitops import Git
from patchtool.series.privacy import (
    PRIVATE_TRAILER,
    Keyring,
    decrypt_patch,
    is_private_message,
    patch_ids,
    plaintext_subject,
    recipient_changes,
    seal,
    stored_limit,
)
from patchtool.series.safety import paths_git_reads
from patchtool.store.files import read_store_file
from patchtool.store.model import PATCH_SUFFIX, PRIVATE_SUFFIX, BaseRef, DeviceConfig
from patchtool.store.private_file import parse_private_patch

FORMAT_PATCH_OPTIONS = (
    "--zero-commit",
    "--no-signature",
    "--no-stat",
    "--full-index",
    "--binary",
    "--no-numbered",
    "--subject-prefix=PATCH",
    "--no-cover-letter",
    "--no-thread",
    "--no-attach",
    "--encoding=UTF-8",
    "--src-prefix=a/",
    "--dst-prefix=b/",
    "--find-renames",
    "--diff-algorithm=myers",
    "--no-color",
    "--no-notes",
    "--numbered-files",
)


@dataclass(frozen=True)
class RenderedPatch:
    name: str
    subject: str
    commit: str
    data: bytes  # the patch (for a private one: its plaintext)
    private: bool = False  # the commit has the trailer `Patchtool-Private: yes`
    sealed: bytes | None = None  # a private patch's file: clear header and ciphertext
    # A private patch whose plaintext the store holds, encrypted anew all the same
    # because its file's recipients (these) were not device.toml's; else None.
    resealed_from: tuple[str, ...] | None = None

    @property
    def file_data(self) -> bytes:
        """What the store holds for this patch."""
        return self.sealed if self.sealed is not None else self.data


def slug(subject: str) -> str:
    text = re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-")
    if len(text) > 60:
        text = text[:60].rsplit("-", 1)[0] or text[:60]
    return text or "patch"


def render_patches(git: Git, base_commit: str) -> list[RenderedPatch]:
    """Render every commit in base..HEAD as a patch file, in order."""
    # One log call gives each commit's id, parents, subject and raw changes; a
    # commit with no raw lines is empty (format-patch would silently skip it).
    log = git.run(
        "log",
        "--reverse",
        "--no-renames",
        "--raw",
        "--no-abbrev",
        f"--format=%x01%H%x00%P%x00%s%x00%(trailers:key={PRIVATE_TRAILER},valueonly,"
        "separator=%x02)%x00",
        f"{base_commit}..HEAD",
    ).text
    commits: list[tuple[str, str, bool]] = []
    merges: list[str] = []
    empty: list[str] = []
    for record in log.split("\x01")[1:]:
        commit, parents, subject, trailer, changes = record.split("\0", 4)
        commits.append((commit, subject, is_private_message(trailer, commit)))
        if " " in parents.strip():
            merges.append(commit)
        elif not changes.strip():
            empty.append(commit)
    if merges:
        raise UsageError(
            f"the build tree holds merge commits ({', '.join(m[:10] for m in merges)})",
            hint="A series is linear: rebase the work onto a straight line of commits.",
        )
    if empty:
        raise UsageError(
            "empty commits cannot be exported: " + ", ".join(c[:10] for c in empty),
            hint="Drop them with an interactive rebase (git rebase -i patchtool/base).",
        )
    if not commits:
        return []
    # Inside the tree's own .git, never the shared temporary folder: private
    # patches are rendered here in clear.
    git_dir = git.text("rev-parse", "--absolute-git-dir")
    with temporary_folder(Path(git_dir), "patchtool-export-") as folder:
        git.run("format-patch", *FORMAT_PATCH_OPTIONS, "-o", str(folder), f"{base_commit}..HEAD")
        outputs = [Path(folder, str(i + 1)).read_bytes() for i in range(len(commits))]
    rendered = []
    used: set[str] = set()
    for (commit, subject, private), data in zip(commits, outputs, strict=True):
        stem = slug(subject)
        suffix = PRIVATE_SUFFIX if private else PATCH_SUFFIX
        name = f"{stem}{suffix}"
        counter = 2
        while name in used:
            name = f"{stem}-{counter}{suffix}"
            counter += 1
        used.add(name)
        rendered.append(RenderedPatch(name, subject, commit, data, private))
    return rendered


def private_pairs(patches: list[RenderedPatch]) -> list[tuple[str, bytes]]:
    """(stored sha256, plaintext) of every private patch, for privacy.private_record."""
    return [(hashlib.sha256(p.file_data).hexdigest(), p.data) for p in patches if p.private]


def stored_files(patches: list[RenderedPatch]) -> list[tuple[str, bytes]]:
    """The patches as the store holds them: file names and bytes, in order."""
    return [(p.name, p.file_data) for p in patches]


def known_plaintexts(
    base: BaseRef, recorded: Mapping[str, str], keyring: Keyring | None = None
) -> dict[str, str]:
    """stored sha256 -> plaintext sha256 for the private patch files of a base
    folder: what a tree's record learnt when it read or wrote them (`recorded`),
    and with a keyring whatever else the folder holds (a colleague's
    re-encryption)."""
    known = dict(recorded)
    if keyring is None or not base.path.is_dir():
        return known
    for path in sorted(base.path.glob(f"*{PRIVATE_SUFFIX}")):
        try:
            stored = read_store_file(path, 64 << 20)
            digest = hashlib.sha256(stored).hexdigest()
            if digest not in known:
                plain = decrypt_patch(path, parse_private_patch(path, stored), keyring, ())
                known[digest] = hashlib.sha256(plain).hexdigest()
        except PatchtoolError:
            continue  # not one of ours to compare with: it counts as different
    return known


def seal_patches(
    git: Git,
    patches: list[RenderedPatch],
    base: BaseRef,
    device: DeviceConfig,
    known: Mapping[str, str],
    reencrypt: bool = False,
) -> list[RenderedPatch]:
    """Give every private patch its file: the one in the store, byte for byte,
    when it holds this very plaintext (no churn) encrypted to exactly the
    recipients device.toml names; else a new encryption to the device's
    recipients (always, with `reencrypt`). A file kept as it is never has
    recipients that `check`'s lint would refuse."""
    names = tuple(r.name for r in device.recipients)
    sealed = []
    for patch in patches:
        if not patch.private:
            sealed.append(patch)
            continue
        plain = hashlib.sha256(patch.data).hexdigest()
        stored_path = base.path / patch.name
        data: bytes | None = None
        resealed_from = None
        if not reencrypt and stored_path.is_file() and not stored_path.is_symlink():
            try:
                stored = read_store_file(stored_path, stored_limit(device.limits))
            except PatchtoolError:
                stored = b""  # not one of ours to keep: it is encrypted again
            if known.get(hashlib.sha256(stored).hexdigest()) == plain:
                encrypted_to = parse_private_patch(stored_path, stored).recipients
                stale, missing = recipient_changes(encrypted_to, names)
                if stale or missing:
                    resealed_from = encrypted_to
                else:
                    data = stored
        if data is None:
            files = paths_git_reads(git, stored_path, data=patch.data)
            data = seal(
                patch.data, plaintext_subject(patch.data), files, device.recipients, device.path
            )
        sealed.append(replace(patch, sealed=data, resealed_from=resealed_from))
    return sealed


def context_leaks(patches: list[RenderedPatch]) -> list[tuple[str, str]]:
    """Public patches whose context or removed lines repeat lines that an earlier
    private patch adds: those lines are in the store in clear. A line counts
    when it has at least 8 characters besides white space (not `pass`, `}`).
    Each as (the public patch's name, the warning)."""

    def lines(data: bytes, marks: bytes) -> set[bytes]:
        found = set()
        in_diff = False
        for line in data.split(b"\n"):
            if line.startswith(b"diff --git "):
                in_diff = True
            elif (
                in_diff
                and line[:1]
                and line[:1] in marks
                and not line.startswith((b"---", b"+++"))
                and len(line[1:].strip()) >= 8
            ):
                found.add(line[1:].strip())
        return found

    added: dict[bytes, str] = {}
    warnings: list[tuple[str, str]] = []
    for patch in patches:
        if patch.private:
            added.update(dict.fromkeys(lines(patch.data, b"+"), patch.name))
            continue
        shown = [added[line] for line in lines(patch.data, b" -") if line in added]
        if shown:
            sources = ", ".join(sorted(set(shown)))
            warnings.append(
                (
                    patch.name,
                    f"{patch.name} shows in clear {len(shown)} line(s) that the private "
                    f"patch(es) {sources} add (as its context): keep the public change away "
                    "from them, or make it private too",
                )
            )
    return warnings


def refuse_publishing(
    git: Git, private_patch_ids: Sequence[str], patches: list[RenderedPatch]
) -> None:
    """A commit whose change is that of a private patch, but which lost its
    `Patchtool-Private: yes` trailer (a reworded message), would be exported
    in clear: refuse (`patch --publish` exports it so, on purpose)."""
    if not private_patch_ids:
        return
    public = [p for p in patches if not p.private]
    ids = patch_ids(git, [p.data for p in public])
    leaking = [p for p, i in zip(public, ids, strict=True) if i in private_patch_ids]
    if leaking:
        raise UsageError(
            "these commits carry the change of a private patch but no "
            f"`{PRIVATE_TRAILER}: yes` trailer, so they would be exported in clear: "
            + ", ".join(f"{p.commit[:10]} {p.subject}" for p in leaking),
            hint=_trailer_back(leaking, patches[-1])
            + ", or pass --publish to make them public on purpose.",
        )


def _trailer_back(leaking: list[RenderedPatch], last: RenderedPatch) -> str:
    """How the trailer goes back on these commits: `git commit --amend` reaches
    only the last commit; an earlier one is reworded in `git rebase -i`."""
    trailer = f"{PRIVATE_TRAILER}: yes"
    earlier = [p.commit[:10] for p in leaking if p is not last]
    ways = []
    if earlier:
        ways.append(
            f"`git rebase -i patchtool/base`, mark {', '.join(earlier)} `reword` and add the "
            f"line `{trailer}` as the message's last line"
        )
    if any(p is last for p in leaking):
        ways.append(
            f"{'for the last commit, ' if earlier else ''}"
            f"`git commit --amend --trailer '{trailer}'`"
        )
    return "Put the trailer back: " + "; ".join(ways)
