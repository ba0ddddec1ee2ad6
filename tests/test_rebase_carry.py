"""rebase --onto an existing base: what changed on demo 1.0 since demo 1.1 was
carried from it reaches 1.1 (and 1.2, carried from 1.1), every resolution kept.

The world: the five-patch series of test_rebase.py on demo 1.0, rebased onto
demo 1.1 with change-ten resolved by hand (keeping 100 over 1.1's 1010) and the
README note dropped as upstream; the store is a git repository with that
committed (a changed patch's earlier version is read back from it).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, commit_all, git, snapshot
from test_rebase import edit, resolve_ten, tree_state
from test_rebase_kill import exported_five

HAND_WRITTEN = "## Tested on the lab's devA\n\nRan the demo suite on 2026-12-01: all green.\n\n"


@pytest.fixture
def carried(upstream: SyntheticUpstream) -> SyntheticUpstream:
    exported_five(upstream)
    tree = upstream.tree
    assert upstream.run("rebase", "--onto", "1.1").code == 4
    resolve_ten(tree)
    done = upstream.run("rebase", "--continue", "--note", "kept 100 over upstream's 1010")
    assert done.code == 0, done.output
    commit_store(upstream, "demo 1.0 and 1.1")
    return upstream


def commit_store(world: SyntheticUpstream, message: str) -> None:
    if not (world.store / ".git").is_dir():
        git(world.store, "init", "--quiet")
    git(world.store, "add", "--all")
    git(world.store, "commit", "--quiet", "--allow-empty", "-m", message)


def folder(world: SyntheticUpstream, version: str) -> Path:
    return world.store / "devA" / f"demo-{version}"


def on_10(world: SyntheticUpstream) -> Path:
    """The build tree at demo 1.0 with its series, to change and export."""
    result = world.run("unpatch", "--commit-id", "1.0")
    assert result.code == 0, result.output
    return world.tree


def export(world: SyntheticUpstream) -> None:
    result = world.cli("patch", "--device-type", "devA", "--dir", str(world.build))
    assert result.code == 0, result.output


def add_fifteen(world: SyntheticUpstream) -> None:
    tree = on_10(world)
    edit(tree, "demo/core.py", "return 15\n", "return 150\n")
    commit_all(tree, "Change fifteen")
    export(world)


def patches(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.glob("*.patch")}


def series(folder: Path) -> list[str]:
    return [line for line in (folder / "series").read_text().splitlines() if line]


def report(world: SyntheticUpstream, version: str) -> str:
    return (folder(world, version) / "rebase-report.md").read_text()


def test_a_new_patch_is_picked_and_every_earlier_patch_is_kept_byte_for_byte(
    carried: SyntheticUpstream,
) -> None:
    world = carried
    before = patches(folder(world, "1.1"))
    text = report(world, "1.1")
    assert "<!-- patchtool:begin pairing -->" in text
    with (folder(world, "1.1") / "rebase-report.md").open("a") as file:
        file.write("\n" + HAND_WRITTEN)
    add_fifteen(world)

    done = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert done.code == 0, done.output
    assert done.stdout.strip() == str(folder(world, "1.1"))
    after = patches(folder(world, "1.1"))
    assert {n: after[n] for n in before} == before
    assert sorted(after) == sorted([*before, "change-fifteen.patch"])
    assert series(folder(world, "1.1")) == ["# demo series", "change-five.patch",
        "change-thirty.patch", "change-ten.patch", "add-the-vendor-file.patch",
        "change-fifteen.patch"]  # fmt: skip
    assert "+    return 150" in after["change-fifteen.patch"].decode()
    text = report(world, "1.1")
    assert HAND_WRITTEN in text
    assert "- resolution: kept 100 over upstream's 1010" in text  # the rebase's block stays
    for row in (
        "| 1 | change-five.patch | kept | unchanged | change-five.patch | change-five.patch |",
        "| 3 | change-ten.patch | kept | unchanged | change-ten.patch | change-ten.patch |",
        "| 4 | add-a-vendor-note-to-the-readme.patch | kept | not in this series | "
        "add-a-vendor-note-to-the-readme.patch | - |",
        "| 6 | change-fifteen.patch | added | clean | change-fifteen.patch | "
        "change-fifteen.patch |",
    ):
        assert row in text, text
    assert "## Update 1: demo-1.0's series carried here" in text
    assert "paired by the blob ids this report recorded" in text
    assert text.count("<!-- patchtool:begin pairing -->") == 1
    assert text.index(HAND_WRITTEN) < text.index("## Update 1")
    assert text.startswith("<!-- patchtool: the parts between a `patchtool:begin` line")
    # the tree is demo 1.1's, and the store passes check
    assert '"base_id": "demo-1.1"' in (world.tree / ".git" / "patchtool.json").read_text()
    assert world.cli("patch", "--device-type", "devA", "--dir", str(world.build), "--check").code == 0
    assert world.cli("check", "--device-type", "devA").code == 0

    # carried again with nothing new: nothing changes but a second update block
    again = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert again.code == 0, again.output
    assert patches(folder(world, "1.1")) == after
    assert "## Update 2" in report(world, "1.1") and HAND_WRITTEN in report(world, "1.1")


def test_a_conflicting_new_patch_stops_aborts_exactly_and_continues_with_a_note(
    carried: SyntheticUpstream,
) -> None:
    world = carried
    before = patches(folder(world, "1.1"))
    tree = on_10(world)
    edit(tree, "demo/core.py", "return 29\n", "return 290\n")
    commit_all(tree, "Change twenty-nine")
    export(world)
    tree_before, store_before = tree_state(world.tree), snapshot(world.store)

    stopped = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert stopped.code == 4, stopped.output
    assert ("patch change-twenty-nine.patch (6 of 6, 'Change twenty-nine') conflicts with "
            "demo 1.1") in stopped.stderr  # fmt: skip
    assert "demo/core.py: 1 conflict hunk(s) at lines" in stopped.stderr
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    assert tree_state(world.tree) == tree_before
    assert snapshot(world.store) == store_before

    assert world.run("rebase", "-c", "1.0", "--onto", "1.1").code == 4
    core = world.tree / "demo" / "core.py"
    text = core.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    core.write_text(text[:start] + "    return 290  # upstream 1.1\n" + text[text.index("\n", end) + 1 :])
    git(world.tree, "add", "demo/core.py")
    done = world.run("rebase", "--continue", "--note", "kept 290 and upstream's comment")
    assert done.code == 0, done.output
    after = patches(folder(world, "1.1"))
    assert {n: after[n] for n in before} == before
    assert "+    return 290  # upstream 1.1" in after["change-twenty-nine.patch"].decode()
    text = report(world, "1.1")
    assert "| 6 | change-twenty-nine.patch | added | resolved by hand |" in text
    assert "- resolution: kept 290 and upstream's comment" in text


def amend(tree: Path, subject: str, path: str, old: str, new: str) -> None:
    """Change the commit `subject` of the series in place (an interactive rebase)."""
    git(tree, "-c", f"sequence.editor=sed -i 's/^pick \\(.* {subject}\\)$/edit \\1/'",
        "rebase", "--quiet", "-i", "patchtool/base")  # fmt: skip
    edit(tree, path, old, new)
    git(tree, "commit", "--quiet", "--amend", "--all", "--no-edit")
    git(tree, "rebase", "--continue")


def test_a_changed_patch_carries_its_change_onto_the_hand_resolution(
    carried: SyntheticUpstream,
) -> None:
    world = carried
    before = patches(folder(world, "1.1"))
    tree = on_10(world)
    amend(tree, "Change ten", "demo/core.py", "return 11\n", "return 111\n")
    export(world)
    done = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert done.code == 0, done.output
    after = patches(folder(world, "1.1"))
    changed = after["change-ten.patch"].decode()
    # the hand resolution (100 over 1.1's 1010) is kept, the new line is added
    assert "-    return 1010\n+    return 100\n" in changed and "+    return 111\n" in changed
    assert {n: b for n, b in after.items() if n != "change-ten.patch"} == {
        n: b for n, b in before.items() if n != "change-ten.patch"}  # fmt: skip
    assert "| 3 | change-ten.patch | updated | clean | change-ten.patch | change-ten.patch |" in (
        report(world, "1.1")
    )
    rebuilt = world.run("unpatch", "--commit-id", "1.1")
    assert rebuilt.code == 0, rebuilt.output
    core = (world.tree / "demo" / "core.py").read_text()
    assert "return 100\n" in core and "return 111\n" in core


def test_a_patch_with_a_new_body_carries_it_and_keeps_the_hand_resolution(
    carried: SyntheticUpstream,
) -> None:
    world = carried
    before = patches(folder(world, "1.1"))
    tree = on_10(world)
    git(tree, "-c", "sequence.editor=sed -i 's/^pick \\(.* Change ten\\)$/edit \\1/'",
        "rebase", "--quiet", "-i", "patchtool/base")  # fmt: skip
    git(tree, "commit", "--quiet", "--amend", "-m", "Change ten\n\nTen is a hundred on devA.")
    git(tree, "rebase", "--continue")
    export(world)
    done = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert done.code == 0, done.output
    after = patches(folder(world, "1.1"))
    assert sorted(after) == sorted(before)
    old, new = before["change-ten.patch"].decode(), after["change-ten.patch"].decode()
    assert "Subject: [PATCH] Change ten\n\nTen is a hundred on devA.\n\ndiff --git" in new
    # the code is the target's version, byte for byte (the hand resolution)
    assert old[old.index("\ndiff --git"):] == new[new.index("\ndiff --git"):]
    assert {n: b for n, b in after.items() if n != "change-ten.patch"} == {
        n: b for n, b in before.items() if n != "change-ten.patch"}  # fmt: skip
    assert "| 3 | change-ten.patch | updated | clean | change-ten.patch | change-ten.patch |" in (
        report(world, "1.1")
    )


def test_a_changed_patch_whose_earlier_version_is_gone_is_picked_anew(
    carried: SyntheticUpstream,
) -> None:
    world = carried
    shutil.rmtree(world.store / ".git")
    tree = on_10(world)
    amend(tree, "Change ten", "demo/core.py", "return 11\n", "return 111\n")
    export(world)
    stopped = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert stopped.code == 4, stopped.output
    assert "change-ten.patch: its earlier version is not at hand; its new version is picked anew" in (
        stopped.stderr
    )
    assert world.run("rebase", "--abort").code == 0


def test_a_removed_patch_is_dropped(carried: SyntheticUpstream) -> None:
    world = carried
    before = patches(folder(world, "1.1"))
    tree = on_10(world)
    git(tree, "reset", "--quiet", "--hard", "HEAD~1")  # the vendor file goes
    export(world)
    done = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert done.code == 0, done.output
    after = patches(folder(world, "1.1"))
    assert after == {n: b for n, b in before.items() if n != "add-the-vendor-file.patch"}
    assert "add-the-vendor-file.patch" not in series(folder(world, "1.1"))
    assert "| 4 | add-the-vendor-file.patch | removed | removed | - | - |" in report(world, "1.1")


def rebase_12(world: SyntheticUpstream) -> None:
    """demo 1.2 carried from demo 1.1 (change-ten resolved by hand again)."""
    assert world.run("unpatch", "--commit-id", "1.1").code == 0
    started = world.run("rebase", "-c", "1.1", "--onto", "1.2")
    assert started.code == 4, started.output
    resolve_ten(world.tree)
    done = world.run("rebase", "--continue", "--note", "kept 100")
    assert done.code == 0, done.output
    commit_store(world, "demo 1.2")


def test_a_chain_of_two_targets(carried: SyntheticUpstream) -> None:
    world = carried
    rebase_12(world)
    before = {v: patches(folder(world, v)) for v in ("1.1", "1.2")}
    add_fifteen(world)
    done = world.run("rebase", "-c", "1.0", "--onto", "1.1,1.2")
    assert done.code == 0, done.output
    assert done.stdout.split() == [str(folder(world, "1.1")), str(folder(world, "1.2"))]
    for version in ("1.1", "1.2"):
        after = patches(folder(world, version))
        assert {n: after[n] for n in before[version]} == before[version]
        assert "+    return 150" in after["change-fifteen.patch"].decode()
    assert "## Update 1: demo-1.1's series carried here" in report(world, "1.2")
    assert '"base_id": "demo-1.2"' in (world.tree / ".git" / "patchtool.json").read_text()
    assert world.cli("check", "--device-type", "devA").code == 0


def test_carried_follows_the_reports(carried: SyntheticUpstream) -> None:
    world = carried
    rebase_12(world)
    add_fifteen(world)
    done = world.run("rebase", "-c", "1.0", "--carried")
    assert done.code == 0, done.output
    assert done.stdout.split() == [str(folder(world, "1.1")), str(folder(world, "1.2"))]
    none = world.run("rebase", "-c", "1.2", "--carried")
    assert none.code == 2
    assert "no base of devA was carried from demo-1.2" in none.stderr


def test_a_report_from_before_pairing_was_recorded_is_paired_by_name(
    carried: SyntheticUpstream,
) -> None:
    """A report of an older patchtool: no blocks, no pairing; its hand-written
    section stays, the rest is read by its headings."""
    world = carried
    path = folder(world, "1.1") / "rebase-report.md"
    text = path.read_text()
    legacy = text[: text.index("<!-- patchtool:begin pairing -->")]
    legacy = "\n".join(
        line for line in legacy.splitlines() if not line.startswith("<!-- patchtool")
    )
    path.write_text(legacy.rstrip("\n") + "\n\n" + HAND_WRITTEN + "## Range-diff (old)\n\nx\n")
    before = patches(folder(world, "1.1"))
    add_fifteen(world)
    done = world.run("rebase", "-c", "1.0", "--onto", "1.1")
    assert done.code == 0, done.output
    after = patches(folder(world, "1.1"))
    assert {n: after[n] for n in before} == before and "change-fifteen.patch" in after
    text = report(world, "1.1")
    assert HAND_WRITTEN in text
    assert "paired by name (this report predates recorded blob ids)" in text
    assert "## Range-diff (old)" not in text
