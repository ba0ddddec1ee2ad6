"""The export pipeline (issue 20, §1): one home, series/pipeline.py, for what a tree's
commits become in the store, called by patch, import, rebase, check and the tree's
view of its own work; and one set of kill points, named for the command whose
export they stop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import REPOSITORY, SyntheticUpstream, commit_all, make_upstream, snapshot
from test_rebase_kill import folder_bytes, killed, reference_folder, world

from patchtool.core.faults import VARIABLE
from patchtool.series.pipeline import EXPORTERS, export_point

__all__ = ["world"]  # the fixture of test_rebase_kill.py, for the rebase test below

SOURCE = REPOSITORY / "src" / "patchtool"
# The steps of the pipeline, and the modules that define them.
STEPS = {
    "render_patches": "series/rendering.py",
    "known_plaintexts": "series/rendering.py",
    "refuse_publishing": "series/rendering.py",
    "seal_patches": "series/rendering.py",
    "stored_files": "series/rendering.py",
    "plan_export": "store/transaction.py",
    "write_plan": "store/transaction.py",
}
MAIL = (
    "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
    "From: A <a@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
    "Subject: [PATCH] Add the feature file\n\nThe device needs it.\n\n"
    "Upstream-Status: Pending\n---\n"
    "diff --git a/feature.txt b/feature.txt\nnew file mode 100644\n--- /dev/null\n"
    "+++ b/feature.txt\n@@ -0,0 +1 @@\n+feature\n"
)
NEW_PATCH = "add-the-feature-file.patch"


def names_used(path: Path) -> set[str]:
    """Every name a module reads or imports (`f`, `module.f`, `from m import f`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, ast.ImportFrom):
            found.update(alias.name for alias in node.names)
    return found


def test_only_the_pipeline_runs_the_steps_of_an_export() -> None:
    callers: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        module = str(path.relative_to(SOURCE))
        for step in sorted(names_used(path) & set(STEPS)):
            if STEPS[step] != module:
                callers.setdefault(step, []).append(module)
    assert callers == {step: ["series/pipeline.py"] for step in STEPS}


def test_kill_points_are_named_for_their_command() -> None:
    assert [export_point(command, "wrote-patch") for command in EXPORTERS] == [
        "patch:export:wrote-patch", "import:export:wrote-patch", "rebase:export:wrote-patch"]  # fmt: skip
    with pytest.raises(ValueError):
        export_point("check", "wrote-patch")  # check never writes an export


def exported(world: SyntheticUpstream) -> Path:
    """devA's tree with one exported patch; returns a mail that adds a second."""
    assert world.run("unpatch").code == 0
    (world.tree / "first.txt").write_text("first\n")
    commit_all(world.tree, "Add first")
    assert world.run("patch").code == 0
    mail = world.root / "feature.mbox"
    mail.write_text(MAIL)
    return mail


def test_import_writes_what_patch_writes(upstream: SyntheticUpstream) -> None:
    mail = exported(upstream)
    imported = upstream.run("import", str(mail))
    assert imported.code == 0, imported.output
    assert (upstream.base_folder / NEW_PATCH).is_file()
    again = upstream.run("patch")
    assert again.code == 0, again.output
    assert "store unchanged: 2 patch(es)" in again.stderr.splitlines()
    assert again.stdout == f"{upstream.base_folder}\n"


def test_a_kill_point_of_one_command_leaves_the_others_alone(
    upstream: SyntheticUpstream,
) -> None:
    mail = exported(upstream)
    others = {VARIABLE: "patch:export:wrote-patch"}
    assert upstream.run("import", str(mail), env=others).code == 0
    (upstream.tree / "second.txt").write_text("second\n")
    commit_all(upstream.tree, "Add second")
    assert upstream.run("patch", env={VARIABLE: "import:export:wrote-patch"}).code == 0
    assert upstream.run("patch", "--check").code == 0


@pytest.mark.parametrize("step", ["wrote-patch", "before-exchange"])
def test_an_import_killed_in_its_export_leaves_the_old_store_and_patch_finishes_it(
    upstream: SyntheticUpstream, tmp_path: Path, step: str
) -> None:
    # What an unbroken import writes, in a world of its own.
    (tmp_path / "reference").mkdir()
    reference = make_upstream(tmp_path / "reference")
    reference_mail = exported(reference)
    assert reference.run("import", str(reference_mail)).code == 0

    mail = exported(upstream)
    before = snapshot(upstream.base_folder)
    killed = upstream.run("import", str(mail), env={VARIABLE: f"import:export:{step}"})
    assert killed.code == -9
    assert snapshot(upstream.base_folder) == before
    # The change is a commit of the tree: `patch` exports it, as import would have.
    finished = upstream.run("patch")
    assert finished.code == 0, finished.output
    assert snapshot(upstream.base_folder) == snapshot(reference.base_folder)
    assert [p.name for p in upstream.store.joinpath("devA").iterdir() if p.name[0] == "."] == []


def test_an_import_killed_after_its_write_is_recognised_by_the_next_patch(
    upstream: SyntheticUpstream,
) -> None:
    mail = exported(upstream)
    killed = upstream.run("import", str(mail), env={VARIABLE: "import:export:written"})
    assert killed.code == -9
    written = snapshot(upstream.base_folder)
    assert NEW_PATCH in written
    # The tree's record still names the old series: the store holds exactly the
    # tree's series all the same, so this is no lost update.
    again = upstream.run("patch")
    assert again.code == 0, again.output
    assert "store unchanged: 2 patch(es)" in again.stderr.splitlines()
    assert again.stdout == f"{upstream.base_folder}\n"
    assert snapshot(upstream.base_folder) == written


def test_a_rebase_killed_in_its_export_continues_to_the_same_folder(
    world: SyntheticUpstream, tmp_path: Path
) -> None:
    reference = reference_folder(world, tmp_path, "1.2")
    store = snapshot(world.store)
    killed(world, "rebase:export:wrote-patch", "--onto", "1.2")
    # The new base folder is assembled in the rebase's hidden stage, left for --continue.
    assert {k: v for k, v in snapshot(world.store).items() if "/." not in f"/{k}"} == store
    done = world.run("rebase", "--continue")
    assert done.code == 0, done.output
    assert folder_bytes(world.store / "devA" / "demo-1.2") == reference
