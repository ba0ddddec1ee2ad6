"""A build tree's export written into the store and remembered in the tree.

The export pipeline (series/pipeline.py) computes what a tree's commits become
and writes it; this is its last step for the commands that export a build tree
(`patch`, `import`): after the write, the tree's record notes which state of
the store's series it now matches and the plaintexts of its private patches
(`remember_series`), and what `check`'s lint would refuse is warned about. The
kill point `<command>:export:written` sits between the write and the record:
the next `patch` must recognise a store that already holds this tree's series.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from patchtool.core.faults import kill_point
from patchtool.core.gitops import Git
from patchtool.core.report import Reporter
from patchtool.series.pipeline import PreparedExport, export_point, warn_written, write_export
from patchtool.store.series import parse_series
from patchtool.trees.record import TreeRecord, remember_series


def export_tree(
    export: PreparedExport,
    tree: Path,
    record: TreeRecord,
    git: Git,
    command: str,
    reporter: Reporter,
    *,
    new: Sequence[str] | None = None,
) -> None:
    """Write a tree's prepared export, remember it in the tree's record, and warn
    about what `check` would refuse in it (`new`: in these patches only)."""
    write_export(export, command)
    kill_point(export_point(command, "written"))
    remember_series(tree, record, parse_series(export.base), git, list(export.patches))
    warn_written(export, tree, reporter, new)
