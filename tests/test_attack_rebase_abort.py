"""rebase --abort keeps what was written in the tree while the rebase was
stopped (attack report 19, LOW 12): tracked edits are saved as one diff in
backups/ before the tree is put back, and said so; a tree the rebase made goes
to backups/ whole when it holds changes."""

from __future__ import annotations

import shutil

from helpers import SyntheticUpstream
from test_rebase import edit, tree_state, world

__all__ = ["world"]  # the fixture, used by name


def test_abort_saves_tracked_edits_made_while_stopped(world: SyntheticUpstream) -> None:
    before = tree_state(world.tree)
    assert world.run("rebase", "--onto", "1.1").code == 4
    edit(world.tree, "demo/core.py", "return 1", "return 7")  # a half-done resolution
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    [saved] = sorted((world.build / "devA" / "backups").iterdir())
    assert saved.name.startswith("demo-rebase-abort-") and saved.suffix == ".diff"
    warnings = [line for line in aborted.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"warning: the changes made in {world.tree} while the rebase "
                                  "was stopped (")  # fmt: skip
    assert warnings[0].endswith(
        f") were saved to {saved} before the tree was put back; the diff was taken on demo "
        "1.1 at patch 3/5 (change-ten.patch) and applies there, not to the tree now: once a "
        "rebase onto it stops there again, `git checkout HEAD -- . && git apply --index "
        f"{saved}` in the tree restores them (then `patchtool rebase -d devA --continue`)"
    )
    assert "demo/core.py" in warnings[0]
    assert b"+    return 7" in saved.read_bytes()
    assert tree_state(world.tree) == before


def test_abort_keeps_a_tree_the_rebase_made_when_it_holds_changes(
    world: SyntheticUpstream,
) -> None:
    shutil.rmtree(world.tree)
    assert world.run("rebase", "--onto", "1.1").code == 4
    (world.tree / "notes.txt").write_text("MY WORK\n")
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    assert not world.tree.exists()
    [backup] = sorted((world.build / "devA" / "backups").iterdir())
    assert (backup / "notes.txt").read_text() == "MY WORK\n"
    warnings = [line for line in aborted.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "warning: the tree this rebase made held changes made while it was stopped ("
    )
    assert warnings[0].endswith(f"); it was moved to {backup}")
    assert "notes.txt" in warnings[0]
