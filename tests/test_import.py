"""import: mbox (single and --stdout streams), plain diffs, -p stripping, quilt folders;
author, date and message kept; bad hunks and hostile paths change nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, error_lines, git, series_names, snapshot, store_and_tree

pytestmark = pytest.mark.cli_in_process


def commit_as(tree: Path, subject: str, body: str, name: str, email: str, date: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
           "GIT_AUTHOR_DATE": date}  # fmt: skip
    subprocess.run(["git", "add", "--all"], cwd=tree, check=True)
    subprocess.run(["git", "commit", "--quiet", "-m", subject, "-m", body], cwd=tree, env=env,
                   check=True)  # fmt: skip


@pytest.fixture
def outside(upstream: SyntheticUpstream, tmp_path: Path) -> Path:
    """A separate clone of demo 1.0 where 'someone else' writes patches."""
    assert upstream.run("unpatch").code == 0
    clone = tmp_path / "elsewhere"
    git(tmp_path, "clone", "--quiet", str(upstream.tree), str(clone))
    return clone


def test_format_patch_files_keep_author_date_and_message(
    upstream: SyntheticUpstream, outside: Path
) -> None:
    core = outside / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 7\n", "return 77\n"))
    commit_as(outside, "core: return 77 from function_7", "The device needs 77.\n\nSigned-off-by: Ada",
              "Ada Lovelace", "ada@example.invalid", "2024-03-04T05:06:07+02:00")  # fmt: skip
    (outside / "NOTICE").write_text("vendor notice\n")
    commit_as(outside, "Add a NOTICE", "Legal asked for it.", "Bob Ross", "bob@example.invalid",
              "2024-05-06T07:08:09+00:00")  # fmt: skip
    out = outside.parent / "fp"
    git(outside, "format-patch", "--quiet", "-o", str(out), "-2")
    files = sorted(str(p) for p in out.iterdir())
    result = upstream.run("import", *files)
    assert result.code == 0, result.output
    assert series_names(upstream) == ["core-return-77-from-function-7.patch", "add-a-notice.patch"]
    first = (upstream.base_folder / "core-return-77-from-function-7.patch").read_text()
    assert "From: Ada Lovelace <ada@example.invalid>" in first
    assert "Date: Mon, 4 Mar 2024 05:06:07 +0200" in first
    assert "Subject: [PATCH] core: return 77 from function_7" in first
    assert "The device needs 77.\n\nSigned-off-by: Ada" in first
    assert "From 0000000000000000000000000000000000000000" in first  # normalized by export
    log = git(upstream.tree, "log", "--format=%an|%ae|%s", "-2")
    assert log.splitlines() == [
        "Bob Ross|bob@example.invalid|Add a NOTICE",
        "Ada Lovelace|ada@example.invalid|core: return 77 from function_7",
    ]
    check = upstream.run("patch", "--check")
    assert check.code == 0, check.output


@pytest.mark.slow
def test_one_stdout_mbox_with_120_patches(upstream: SyntheticUpstream, outside: Path) -> None:
    for number in range(120):
        folder = outside / "vendor"
        folder.mkdir(exist_ok=True)
        (folder / f"part{number:03d}.txt").write_text(f"part {number}\n")
        commit_as(outside, f"vendor: add part {number:03d}", f"Part {number} of the kit.",
                  f"Dev {number}", f"dev{number}@example.invalid", f"2024-01-01T00:{number % 60:02d}:00+00:00")  # fmt: skip
    mbox = outside.parent / "all.mbox"
    mbox.write_bytes(subprocess.run(["git", "format-patch", "--stdout", "-120"], cwd=outside,
                                    capture_output=True, check=True).stdout)  # fmt: skip
    result = upstream.run("import", str(mbox))
    assert result.code == 0, result.output
    names = series_names(upstream)
    assert len(names) == 120
    assert names[0] == "vendor-add-part-000.patch" and names[-1] == "vendor-add-part-119.patch"
    assert sorted(p.name for p in upstream.base_folder.glob("*.patch")) == sorted(names)
    last = (upstream.base_folder / names[-1]).read_text()
    assert "From: Dev 119 <dev119@example.invalid>" in last
    assert "+++ b/vendor/part119.txt" in last and "part118" not in last


def test_plain_diff_ruN_with_p1_takes_author_date_and_message_from_options(
    upstream: SyntheticUpstream, outside: Path, tmp_path: Path
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    shutil.copytree(upstream.tree, old, ignore=shutil.ignore_patterns(".git"), symlinks=True)
    shutil.copytree(old, new, symlinks=True)
    (new / "demo" / "core.py").write_text((old / "demo" / "core.py").read_text()
                                          .replace("return 12\n", "return 1212\n"))  # fmt: skip
    (new / "demo" / "extra.py").write_text("EXTRA = True\n")
    diff = subprocess.run(["diff", "-ruN", "old", "new"], cwd=tmp_path, capture_output=True).stdout
    assert b"diff --git" not in diff and b"diff -ruN" in diff
    (tmp_path / "change.diff").write_bytes(diff)
    result = upstream.run("import", "-p", "1", "--author", "Carol <carol@example.invalid>",
                        "--date", "2023-07-08T09:10:11+00:00", "--message",
                        "core: plain diff import", str(tmp_path / "change.diff"))  # fmt: skip
    assert result.code == 0, result.output
    patch = (upstream.base_folder / "core-plain-diff-import.patch").read_text()
    assert "From: Carol <carol@example.invalid>" in patch
    assert "Date: Sat, 8 Jul 2023 09:10:11 +0000" in patch
    assert "diff --git a/demo/extra.py b/demo/extra.py\nnew file mode 100644" in patch
    assert "+    return 1212" in patch


def test_git_diff_with_an_extra_leading_component_and_p2(
    upstream: SyntheticUpstream, outside: Path
) -> None:
    core = outside / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 3\n", "return 333\n"))
    diff = subprocess.run(["git", "diff", "--src-prefix=a/vllm/", "--dst-prefix=b/vllm/"],
                          cwd=outside, capture_output=True, check=True).stdout  # fmt: skip
    assert b"a/vllm/demo/core.py" in diff
    (outside.parent / "deep.diff").write_bytes(diff)
    wrong = upstream.run("import", "--author", "D <d@example.invalid>", "-m", "deep",
                       str(outside.parent / "deep.diff"))  # fmt: skip
    assert wrong.code == 4 and series_names(upstream) == []
    tree = upstream.tree
    assert error_lines(wrong) == [
        "error: deep.diff (change 1 of 1) does not apply to demo-1.0 and its series (1 of its 1 "
        "path(s) do not exist in the tree):",
        "  vllm/demo/core.py: does not exist in the tree",
        "hint: -p2 matches 1 of 1 files (-p1 matches 0): import again with -p 2. Nothing was "
        f"imported: the build tree {tree} is as it was, and the store is unchanged.",
    ]
    result = upstream.run("import", "-p", "2", "--author", "D <d@example.invalid>", "-m",
                        "core: return 333", str(outside.parent / "deep.diff"))  # fmt: skip
    assert result.code == 0, result.output
    patch = (upstream.base_folder / "core-return-333.patch").read_text()
    assert "diff --git a/demo/core.py b/demo/core.py" in patch and "+    return 333" in patch


def test_quilt_folder_and_series_option(upstream: SyntheticUpstream, tmp_path: Path) -> None:
    quilt = tmp_path / "quilt"
    quilt.mkdir()
    (quilt / "one.patch").write_text(
        "From: Quinn <quinn@example.invalid>\nSubject: readme: say hello\n\nA friendly line.\n---\n"
        "--- a/README.md\n+++ b/README.md\n@@ -1,3 +1,4 @@\n # demo\n \n"
        " A small upstream project for tests.\n+Hello from quilt.\n"
    )  # fmt: skip
    (quilt / "two.diff").write_text(
        "Bump function_2 for the device.\n\nIndex: demo/demo/core.py\n===\n"
        "--- demo.orig/demo/core.py\n+++ demo/demo/core.py\n@@ -4,3 +4,3 @@\n"
        " def function_1():\n-    return 1\n+    return 11\n \n"
    )  # fmt: skip
    (quilt / "series").write_text("# quilt series\none.patch\ntwo.diff -p1\n")
    result = upstream.run("import", "--author", "Fallback <fb@example.invalid>", str(quilt))
    assert result.code == 0, result.output
    assert series_names(upstream) == [
        "readme-say-hello.patch",
        "bump-function-2-for-the-device.patch",
    ]
    one = (upstream.base_folder / "readme-say-hello.patch").read_text()
    assert "From: Quinn <quinn@example.invalid>" in one and "A friendly line." in one
    two = (upstream.base_folder / "bump-function-2-for-the-device.patch").read_text()
    assert "From: Fallback <fb@example.invalid>" in two and "+    return 11" in two
    # --series names a series file elsewhere; patches are read beside it
    (quilt / "other-series").write_text("two.diff\n")
    shutil.rmtree(upstream.build)
    again = upstream.cli(
        "import",
        "--device-type",
        "devA",
        "--dir",
        str(tmp_path / "b2"),
        "--author",
        "F <f@example.invalid>",
        "--series",
        str(quilt / "other-series"),
    )
    assert again.code == 4  # two.diff is already in the series: it no longer applies
    assert error_lines(again) == [
        "error: other-series:1 two.diff (change 1 of 1) does not apply to demo-1.0 and its series "
        "(1 hunk(s) in 1 file(s) do not match):",
        "  demo/core.py (demo.orig/demo/core.py): hunk #1 @@ -4,3 +4,3 @@ does not match the base",
        "      | def function_1():",
        "      |     return 1",
        "      | ",
        "hint: Refresh the change against this base. Nothing was imported: the build tree "
        f"{tmp_path / 'b2' / 'devA' / 'demo'} that this import made was removed, and the store "
        "is unchanged.",
    ]


def test_a_hunk_that_does_not_apply_is_named_and_nothing_is_imported(
    upstream: SyntheticUpstream, outside: Path
) -> None:
    (outside / "good.txt").write_text("fine\n")
    commit_as(outside, "Add good", "ok", "A", "a@example.invalid", "2024-01-01T00:00:00+00:00")
    core = outside / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 20\n", "return 2020\n"))
    commit_as(outside, "Change twenty", "x", "A", "a@example.invalid", "2024-01-01T00:00:00+00:00")
    mbox = outside.parent / "two.mbox"
    text = subprocess.run(["git", "format-patch", "--stdout", "-2"], cwd=outside,
                          capture_output=True, check=True, text=True).stdout  # fmt: skip
    mbox.write_text(text.replace("     return 20\n", "     return 2000\n")
                    .replace("-    return 20\n", "-    return 2000\n"))  # fmt: skip
    before = store_and_tree(upstream)
    result = upstream.run("import", str(mbox))
    assert result.code == 4, result.output
    assert error_lines(result) == [
        "error: two.mbox, message 2 of 2 (change 2 of 2) does not apply to demo-1.0 and its series "
        "(1 hunk(s) in 1 file(s) do not match):",
        "  demo/core.py: hunk #1 @@ -59,7 +59,7 @@ def function_19(): does not match the base",
        "      |     return 19",
        "      | ",
        "      | def function_20():",
        "      |     return 2000",
        "      | ",
        "hint: Refresh the change against this base, or retry with --3way to let git merge it. "
        f"Nothing was imported: the build tree {upstream.tree} is as it was, and the store is "
        "unchanged.",
    ]
    assert store_and_tree(upstream) == before
    assert not (upstream.tree / "good.txt").exists()


@pytest.mark.parametrize("path, why", [("../escape.txt", "climbs out of the tree with '..'"),
                                       (".git/hooks/post-commit", "points into .git")])  # fmt: skip
def test_a_hostile_path_is_refused(
    upstream: SyntheticUpstream, outside: Path, path: str, why: str
) -> None:
    hostile = outside.parent / "hostile.diff"
    hostile.write_text(f"--- a/{path}\n+++ b/{path}\n@@ -0,0 +1 @@\n+owned\n")
    before = store_and_tree(upstream)
    result = upstream.run("import", "--author", "E <e@example.invalid>", "-m", "evil", str(hostile))
    assert result.code == 10, result.output
    assert error_lines(result) == [
        f"error: hostile.diff: path '{path}' {why}",
        "hint: Nothing was imported.",
    ]
    assert store_and_tree(upstream) == before
    assert not (upstream.tree.parent / "escape.txt").exists()


def test_a_new_device_and_base_are_created_and_removed_on_failure(
    upstream: SyntheticUpstream, outside: Path
) -> None:
    (outside / "new.txt").write_text("x\n")
    commit_as(outside, "Add new", "x", "A", "a@example.invalid", "2024-01-01T00:00:00+00:00")
    patch = outside.parent / "new.patch"
    patch.write_bytes(subprocess.run(["git", "format-patch", "--stdout", "-1"], cwd=outside,
                                     capture_output=True, check=True).stdout)  # fmt: skip
    unknown = upstream.cli("import", "-d", "devB", "--dir", str(upstream.build), str(patch))
    assert unknown.code == 3
    assert error_lines(unknown) == [
        f"error: unknown device 'devB': {upstream.store / 'devB' / 'device.toml'} does not exist; "
        "did you mean 'devA'?",
        "hint: Known devices: devA.",
    ]
    made = upstream.cli("import", "-d", "devB", "--create", "--display-name", "Device B",
                        "--vendor", "Example", "--onto", "demo==1.0", "--dir",
                        str(upstream.build), str(patch))  # fmt: skip
    assert made.code == 0, made.output
    assert (
        (upstream.store / "devB" / "device.toml")
        .read_text()
        .startswith('display-name = "Device B"')
    )
    assert (upstream.store / "devB" / "demo-1.0" / "series").read_text().endswith("add-new.patch\n")
    store_before = snapshot(upstream.store)
    stale = outside.parent / "stale.diff"
    stale.write_text(
        "--- a/README.md\n+++ b/README.md\n@@ -1,2 +1,2 @@\n-# not demo\n+# demo!\n \n"
    )
    failed = upstream.cli("import", "-d", "devC", "--create", "--display-name", "Device C",
                          "--vendor", "Example", "--onto", "demo==1.0", "--author", "F <f@x.invalid>",
                          "-m", "stale", "--dir", str(upstream.build), str(stale))  # fmt: skip
    assert failed.code == 4, failed.output
    assert error_lines(failed) == [
        "error: stale.diff (change 1 of 1) does not apply to demo-1.0 and its series (1 hunk(s) in "
        "1 file(s) do not match):",
        "  README.md: hunk #1 @@ -1,2 +1,2 @@ does not match the base",
        "      | # not demo",
        "      | ",
        "hint: Refresh the change against this base. Nothing was imported: the build tree "
        f"{upstream.build / 'devC' / 'demo'} that this import made was removed, and the store is "
        "unchanged.",
    ]
    assert snapshot(upstream.store) == store_before and not (upstream.store / "devC").exists()
