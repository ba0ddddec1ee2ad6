"""The export pipeline: a build tree's commits to the files of its base folder, once.

Every command that turns commits into the store's files goes through here, in
the same steps: render the commits after the base (rendering.py), look up the
plaintexts of the private patch files the store already holds (what the tree's
record knows, or a keyring opens), seal the private patches, plan the write
against the base folder (store/transaction.py) and lint what would be written
with `check`'s rules (lint.series_findings). `prepare_export` computes all of
that and writes nothing; `patch`, `import`, `rebase`, `check` (its `export`
record) and the tree's own view of its unexported work (trees/work.py) call it.

`write_export` writes a prepared export, and is the only caller of the
transaction's `write_plan`. Its kill points are the pipeline's, named for the
command whose export it is, so a test can kill exactly one command's export:

    <command>:export:staged-unchanged   the unchanged files are in the stage
    <command>:export:wrote-patch        after each new or changed patch file
    <command>:export:before-exchange    the stage is complete
    <command>:export:after-exchange     the base folder holds the new series
    <command>:export:written            the write is over; the tree's record is next
                                        (trees/export.py; not for rebase)

with <command> one of EXPORTERS. Remembering in the tree's record which series
it now matches is a build tree's business: trees/export.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from patchtool.core.faults import kill_point
from patchtool.core.gitops import Git
from patchtool.core.report import Reporter
from patchtool.series.privacy import Keyring
from patchtool.series.rendering import (
    RenderedPatch,
    context_leaks,
    known_plaintexts,
    refuse_publishing,
    render_patches,
    seal_patches,
    stored_files,
)
from patchtool.store.model import BaseRef, DeviceConfig
from patchtool.store.transaction import ExportPlan, plan_export, write_plan

if TYPE_CHECKING:
    from patchtool.series.lint import PatchLint

# The commands that write an export, as its kill points name them.
EXPORTERS = ("patch", "import", "rebase")


@dataclass(frozen=True)
class RenderedCommits:
    """A tree's commits after its base as patch files (private ones in clear, not
    yet sealed), and what is known of the private files the store holds."""

    patches: tuple[RenderedPatch, ...]
    known: Mapping[str, str]  # stored sha256 -> plaintext sha256

    def unexported(self, stored: Collection[bytes]) -> list[RenderedPatch]:
        """The patches whose file is not among `stored` (bytes of a base folder's
        files): a public one byte for byte, a private one by its plaintext."""
        plaintexts = {
            self.known[digest]
            for digest in (hashlib.sha256(data).hexdigest() for data in stored)
            if digest in self.known
        }
        held = set(stored)
        return [
            p
            for p in self.patches
            if (
                hashlib.sha256(p.data).hexdigest() not in plaintexts
                if p.private
                else p.data not in held
            )
        ]


def render_commits(
    git: Git,
    base: BaseRef,
    base_commit: str,
    recorded: Mapping[str, str],
    keyring: Keyring | None = None,
) -> RenderedCommits:
    """The first two steps: render base_commit..HEAD, and look up the plaintexts of
    the base folder's private files (`recorded`: what the tree's record, or a
    series just read, knows; with a keyring, whatever else the folder holds)."""
    return RenderedCommits(
        tuple(render_patches(git, base_commit)), known_plaintexts(base, recorded, keyring)
    )


@dataclass(frozen=True)
class PreparedExport:
    """What an export of a tree would write, computed and not written."""

    base: BaseRef
    device: DeviceConfig
    patches: tuple[RenderedPatch, ...]  # in series order, private ones sealed
    plan: ExportPlan

    @cached_property
    def lint(self) -> list[PatchLint]:
        """What `check`'s lint would refuse in the files this export writes."""
        # Imported here: the commands that only render (status, unpatch's look
        # at the tree it replaces) do not lint.
        from patchtool.series.lint import lint_rendered

        names = tuple(r.name for r in self.device.recipients)
        return lint_rendered(self.patches, self.base, names, self.device.limits)

    @property
    def unlisted(self) -> list[str]:
        """The patch files the base folder keeps after this export that its new
        `series` does not list (what `check`'s series record refuses)."""
        from patchtool.series.lint import unlisted_files

        return unlisted_files(self.base.path, {*self.plan.files, *self.plan.removed})

    @property
    def resealed(self) -> list[RenderedPatch]:
        """Private patches encrypted anew because their recipients were not device.toml's."""
        return [p for p in self.patches if p.resealed_from is not None]


def prepare_export(
    git: Git,
    base: BaseRef,
    base_commit: str,
    device: DeviceConfig,
    *,
    recorded: Mapping[str, str],
    keyring: Keyring | None = None,
    reencrypt: bool = False,
    private_patch_ids: Sequence[str] = (),
) -> PreparedExport:
    """Render, look up, seal and plan: the files an export of the tree's commits
    after `base_commit` would write into `base`'s folder. A public commit carrying
    the change of one of `private_patch_ids` (a private patch that lost its
    trailer) is refused before anything is sealed; `reencrypt` seals every
    private patch anew."""
    rendered = render_commits(git, base, base_commit, recorded, keyring)
    patches = list(rendered.patches)
    refuse_publishing(git, private_patch_ids, patches)
    sealed = seal_patches(git, patches, base, device, rendered.known, reencrypt)
    return PreparedExport(base, device, tuple(sealed), plan_export(base, stored_files(sealed)))


def export_point(command: str, step: str) -> str:
    """The name of one of the pipeline's kill points."""
    if command not in EXPORTERS:
        raise ValueError(f"{command} is not one of {EXPORTERS}")
    return f"{command}:export:{step}"


def write_export(export: PreparedExport, command: str) -> None:
    """Write a prepared export into its base folder, all at once (nothing when it
    changes nothing), with the kill points of `command`'s export."""
    if export.plan.is_noop:
        return

    def reached(step: str) -> None:
        kill_point(export_point(command, step))

    write_plan(export.plan, reached)


def warn_written(
    export: PreparedExport, tree: Path, reporter: Reporter, new: Sequence[str] | None = None
) -> None:
    """Lint at writing: patch files `series` does not list, public patches that
    show a private patch's lines in clear, and every finding `check`'s lint would
    have, with how to fix it in the tree (`new`: only for these patches, by name)."""
    from patchtool.series.lint import warn_lint

    for problem in export.unlisted:
        reporter.warn(
            f"{problem}, which `patchtool check` refuses: bring it into the tree's "
            "series (`patchtool import`), or delete it"
        )
    for name, warning in context_leaks(list(export.patches)):
        if new is None or name in new:
            reporter.warn(warning)
    linted = [one for one in export.lint if new is None or one.patch.name in new]
    warn_lint(reporter, tree, linted, len(export.patches))
