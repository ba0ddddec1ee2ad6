"""Depth never crashes and never wedges (issue 19, section 4).

A path deeper or longer than fsutil's limits is refused as unsafe (exit 10) by
the path rules every judge uses, before git writes it; every folder patchtool
removes goes through fsutil.remove_tree, which works at any depth without
recursion, never follows a symlink and never raises. So a hostile series can
neither crash `check` or `unpatch` nor leave a folder that breaks the next run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, check_records, error_lines, snapshot

from patchtool.series.safety import UNSAFE_HINT

# Slow for what it proves (trees and stages a thousand folders deep): the whole
# suite runs it, the quick tier does not.
pytestmark = pytest.mark.slow

DEEP = "d/" * 1000 + "f"  # a file 1000 folders down
# How messages show it: the path's first 60 and last 40 characters.
SHOWN_DEEP = "'" + "d/" * 30 + "…/" + "d/" * 19 + "f'"
DEEP_PROBLEM = "has 1001 components, more than the limit of 64"


@pytest.fixture(autouse=True)
def _no_deep_folder_left(tmp_path: Path) -> object:
    """Whatever a test here leaves (a failing one included) goes with remove_tree:
    pytest's own clean-up of old temporary folders recurses, and a folder 1000
    levels deep would make every later pytest run on the machine fail at exit."""
    from patchtool.core.fsutil import remove_tree

    yield
    remove_tree(tmp_path)


def mail(subject: str, diff: str) -> str:
    """A format-patch mail that passes check's lint."""
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: A <a@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
        f"Subject: [PATCH] {subject}\n\nThe test needs this change.\n\n"
        f"Upstream-Status: Inappropriate [test]\n---\n{diff}"
    )


def new_file(path: str, text: str = "deep\n") -> str:
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n"
            f"+++ b/{path}\n@@ -0,0 +1 @@\n+{text}")  # fmt: skip


def new_link(path: str, target: str) -> str:
    return (f"diff --git a/{path} b/{path}\nnew file mode 120000\n--- /dev/null\n"
            f"+++ b/{path}\n@@ -0,0 +1 @@\n+{target}\n\\ No newline at end of file\n")  # fmt: skip


def use_series(world: SyntheticUpstream, patches: dict[str, str]) -> None:
    """The base's series becomes exactly these patches, in order."""
    for name, text in patches.items():
        (world.base_folder / name).write_text(text)
    (world.base_folder / "series").write_text("".join(f"{name}\n" for name in patches))


def stages(world: SyntheticUpstream) -> list[str]:
    return sorted(p.name for p in (world.build / "devA").iterdir()
                  if p.name.startswith(".patchtool-"))  # fmt: skip


def make_deep_folder(top: Path, depth: int, outside: Path) -> None:
    """`top`/d/d/.../d (depth folders), each holding a file and a symlink to
    `outside`; made relative to open folders, so the path may exceed PATH_MAX."""
    top.mkdir(parents=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.symlink(str(outside), "out", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


# --------------------------------------------------------------------------- check


def test_check_of_a_patch_1000_folders_deep_is_exit_10_with_json_and_no_scratch_left(
    upstream: SyntheticUpstream, tmp_path: Path, hermetic_seal: Path
) -> None:
    use_series(upstream, {"deep.patch": mail("Add a deep file", new_file(DEEP))})
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    scratch = hermetic_seal / "patchtool-cache" / "scratch"
    message = (f"patch {upstream.base_folder / 'deep.patch'} (series line 1): path {SHOWN_DEEP} "
               f"{DEEP_PROBLEM}")  # fmt: skip
    for _ in range(2):  # the second run finds nothing left by the first
        result = upstream.run("check", "--json", env={"TMPDIR": str(temporary)})
        assert result.code == 10, result.output
        matrix = json.loads(result.stdout)
        assert (matrix["ok"], matrix["exit_code"]) == (False, 10)
        outcome = {(r["check"], r["ok"]): r["details"] for r in check_records(result.stdout)}
        assert outcome == {
            ("config", True): [],
            ("source", True): [],
            ("series", True): [],
            ("safety", False): [message],
            ("apply", None): ["not run: the base or a patch is unsafe or damaged"],
            ("export", None): ["not run: the base or a patch is unsafe or damaged"],
            ("lint", True): [],
        }
        assert error_lines(result) == [
            "error: 1 check(s) failed: devA/demo-1.0 safety",
            # The safety error's own hint, as unpatch gives it.
            "hint: Nothing was applied and no build tree was changed. patchtool refuses patches "
            "that could write outside the tree, into .git or through a symlink: fix or remove "
            "the patch (and its line in series).",
        ]
        assert os.listdir(temporary) == []
        assert os.listdir(scratch) == []


# --------------------------------------------------------------------------- unpatch


def test_a_deep_file_then_a_symlink_out_is_exit_10_and_the_next_unpatch_works(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.tree)
    use_series(upstream, {
        "deep.patch": mail("Add a deep file", new_file(DEEP)),
        "link.patch": mail("Add a link out", new_link("out", "/etc")),
    })  # fmt: skip
    for _ in range(2):  # refused the same way each time: nothing wedges
        refused = upstream.run("unpatch")
        assert refused.code == 10, refused.output
        assert error_lines(refused) == [
            f"error: patch {upstream.base_folder / 'deep.patch'} (series line 1): path "
            f"{SHOWN_DEEP} {DEEP_PROBLEM}",
            f"hint: {UNSAFE_HINT}",
        ]
        assert stages(upstream) == []
        assert snapshot(upstream.tree) == before
    use_series(upstream, {"ok.patch": mail("Add a file", new_file("ok.txt", "ok\n"))})
    again = upstream.run("unpatch")
    assert again.code == 0, again.output
    assert (upstream.tree / "ok.txt").read_text() == "ok\n"


@pytest.mark.parametrize(("path", "problem"), [
    # Few components, but longer than a quarter of PATH_MAX together.
    ("/".join(["n" * 200] * 6), "is 1205 bytes long, more than the limit of 1024"),
    # One name longer than any file system allows (NAME_MAX).
    ("long/" + "n" * 300 + ".txt", "has a name of 304 bytes, more than the limit of 255"),
], ids=["long-path", "long-name"])  # fmt: skip
def test_a_path_too_long_is_exit_10_by_the_same_rule(upstream: SyntheticUpstream, path: str,
                                                     problem: str) -> None:  # fmt: skip
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.tree)
    use_series(upstream, {"long.patch": mail("Add a long path", new_file(path))})
    refused = upstream.run("unpatch")
    assert refused.code == 10, refused.output
    shown = repr(path[:60] + "…" + path[-40:])
    assert error_lines(refused) == [
        f"error: patch {upstream.base_folder / 'long.patch'} (series line 1): path {shown} "
        f"{problem}",
        f"hint: {UNSAFE_HINT}",
    ]
    assert stages(upstream) == [] and snapshot(upstream.tree) == before


def test_a_1000_level_stage_left_by_a_killed_run_is_removed_by_the_next_run(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    assert upstream.run("unpatch").code == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("not patchtool's\n")
    stage = upstream.build / "devA" / ".patchtool-stage-999-1"
    make_deep_folder(stage / "demo", 1000, outside)
    trash = upstream.build / "devA" / ".patchtool-trash-999-2"
    make_deep_folder(trash, 1500, outside)  # deeper than PATH_MAX allows a path
    result = upstream.run("unpatch")
    assert result.code == 0, result.output
    assert result.stderr.splitlines()[0] == (
        "removing .patchtool-stage-999-1, left by an interrupted run"
    )
    # A trash folder no run verified (no record of what it held, no removal under
    # way) is never removed unseen: it goes to backups/, at any depth.
    [kept] = (upstream.build / "devA" / "backups").glob("patchtool-trash-999-2-*")
    assert result.stderr.splitlines()[1] == (
        "warning: a removal of a replaced tree did not finish, or something was written in "
        f"it while it ran; what was left of it was moved to {kept}"
    )
    assert not stage.exists() and not trash.exists()
    assert snapshot(outside) == {"keep.txt": b"not patchtool's\n"}
    again = upstream.run("unpatch")  # and the device keeps working
    assert again.code == 0, again.output
    assert "removing" not in again.stderr


# --------------------------------------------------------------------------- remove_tree


REMOVE_WITH_FEW_DESCRIPTORS = """
import resource, sys
from pathlib import Path
from patchtool.core.fsutil import remove_tree
resource.setrlimit(resource.RLIMIT_NOFILE, (96, 96))
print(remove_tree(Path(sys.argv[1])))
"""


def test_remove_tree_removes_any_depth_with_few_descriptors_and_follows_no_link(
    tmp_path: Path,
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("kept\n")
    top = tmp_path / "top"
    make_deep_folder(top, 3000, outside)  # paths of 6000 bytes: beyond PATH_MAX
    (top / "wide").mkdir()
    for number in range(200):
        (top / "wide" / f"{number}.txt").write_text("x")
    (top / "link-to-outside").symlink_to(outside)
    # In a process allowed 96 open files: the removal must hold few at a time.
    done = subprocess.run([sys.executable, "-c", REMOVE_WITH_FEW_DESCRIPTORS, str(top)],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert (done.returncode, done.stdout, done.stderr) == (0, "True\n", "")
    assert not top.exists()
    assert snapshot(outside) == {"keep.txt": b"kept\n"}


def test_remove_tree_takes_a_symlink_itself_and_reports_what_is_not_there(tmp_path: Path) -> None:
    from patchtool.core.fsutil import remove_tree

    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("kept\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    assert remove_tree(link) is True
    assert not link.is_symlink() and (target / "keep.txt").read_text() == "kept\n"
    assert remove_tree(tmp_path / "missing") is True
    assert remove_tree(tmp_path / "missing" / "below") is True


def test_no_module_removes_a_folder_but_through_remove_tree() -> None:
    """shutil.rmtree and tempfile.TemporaryDirectory recurse (and the latter picks
    the shared temporary folder): neither has a place in patchtool."""
    import patchtool

    source = Path(patchtool.__file__).parent
    found = [f"{path.name}:{number}"
             for path in sorted(source.rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), start=1)
             if ("rmtree(" in line or "TemporaryDirectory(" in line)
             and not line.lstrip().startswith("#") and path.name != "fsutil.py"]  # fmt: skip
    assert found == []
