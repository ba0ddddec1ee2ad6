"""import for everyday use with real vendor patches: every failing hunk of every file
named, -p shown as it strips, --exclude, --3way, a wrong -p answered with the one
that fits, hints that name commands that exist, a failed import that leaves what it
says, the whitespace one-liner, and a generated body for changes that have none."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from helpers import (
    SyntheticUpstream,
    check_records,
    commit_all,
    error_lines,
    git,
    run_cli,
    series_names,
    snapshot,
    store_and_tree,
    warning_lines,
)

from patchtool.series.lint import WHITESPACE_FIX

AUTHOR = ("--author", "Ada <ada@example.invalid>")
TABLE = "".join(f"row_{i} = {i}\n" for i in range(40))


def core_hunk(number: int, old: str, new: str) -> str:
    """A hunk changing function_<number>'s return value in demo/core.py."""
    line = 3 * number + 1
    return (f"@@ -{line},3 +{line},3 @@\n def function_{number}():\n-    return {old}\n"
            f"+    return {new}\n \n")  # fmt: skip


def table_hunk(row: int, old: str, new: str) -> str:
    """A hunk changing row_<row> of demo/table.py, with one line of context each side."""
    return (f"@@ -{row},3 +{row},3 @@\n row_{row - 1} = {row - 1}\n-row_{row} = {old}\n"
            f"+row_{row} = {new}\n row_{row + 1} = {row + 1}\n")  # fmt: skip


@pytest.fixture
def tree(upstream: SyntheticUpstream) -> Path:
    """devA's tree, with a first patch in the store that adds demo/table.py."""
    assert run_cli("--store", str(upstream.store), "unpatch", "--device-type", "devA", "--dir",
                   str(upstream.build)).code == 0  # fmt: skip
    (upstream.tree / "demo" / "table.py").write_text(TABLE)
    commit_all(upstream.tree, "Add a table")
    assert upstream.cli("patch", "--device-type", "devA", "--dir", str(upstream.build)).code == 0
    return upstream.tree


@pytest.fixture
def outside(upstream: SyntheticUpstream, tree: Path, tmp_path: Path) -> Path:
    """A clone of devA's tree where 'someone else' writes patches."""
    clone = tmp_path / "elsewhere"
    git(tmp_path, "clone", "--quiet", str(tree), str(clone))
    return clone


def test_every_failing_hunk_of_every_file_is_named(
    upstream: SyntheticUpstream, tree: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "stale.diff"
    stale.write_text(
        "--- a/demo/core.py\n+++ b/demo/core.py\n" + core_hunk(1, "1000", "11")
        + core_hunk(2, "2", "22") + core_hunk(30, "3000", "33")
        + "--- a/demo/table.py\n+++ b/demo/table.py\n" + table_hunk(5, "50", "55")
        + table_hunk(20, "200", "22") + table_hunk(30, "30", "33")
    )  # fmt: skip
    before = store_and_tree(upstream)
    result = upstream.run("import", *AUTHOR, "-m", "stale", str(stale))
    assert result.code == 4, result.output
    assert error_lines(result) == [
        "error: stale.diff (change 1 of 1) does not apply to demo-1.0 and its series "
        "(4 hunk(s) in 2 file(s) do not match):",
        "  demo/core.py: hunk #1 @@ -4,3 +4,3 @@ does not match the base",
        "      | def function_1():",
        "      |     return 1000",
        "      | ",
        "  demo/core.py: hunk #3 @@ -91,3 +91,3 @@ does not match the base",
        "      | def function_30():",
        "      |     return 3000",
        "      | ",
        "  demo/table.py: hunk #1 @@ -5,3 +5,3 @@ does not match the base",
        "      | row_4 = 4",
        "      | row_5 = 50",
        "      | row_6 = 6",
        "  demo/table.py: hunk #2 @@ -20,3 +20,3 @@ does not match the base",
        "      | row_19 = 19",
        "      | row_20 = 200",
        "      | row_21 = 21",
        # A plain diff names no base blobs: --3way could not help, so it is not offered.
        f"hint: Refresh the change against this base. Nothing was imported: the build tree "
        f"{tree} is as it was, and the store is unchanged.",
    ]
    assert store_and_tree(upstream) == before


def test_many_failing_hunks_are_all_named(
    upstream: SyntheticUpstream, tree: Path, tmp_path: Path
) -> None:
    stale = tmp_path / "stale.diff"
    stale.write_text("--- a/demo/core.py\n+++ b/demo/core.py\n"
                     + "".join(core_hunk(n, f"{n}00", f"{n}1") for n in range(1, 16))
                     + "--- a/demo/table.py\n+++ b/demo/table.py\n"
                     + "".join(table_hunk(r, f"{r}00", f"{r}1") for r in (5, 15, 25)))  # fmt: skip
    result = upstream.run("import", *AUTHOR, "-m", "stale", str(stale))
    assert result.code == 4, result.output
    # Issue 22, defect 10: every failing hunk is named, however many (a long list is the point).
    shown = [line for line in error_lines(result) if line.startswith("  ") and "hunk #" in line]
    assert len(shown) == 18 and shown[14].startswith("  demo/core.py: hunk #15 @@ -46,3")
    assert shown[-1].startswith("  demo/table.py: hunk #3 ")
    assert not [line for line in error_lines(result) if "more hunk" in line]
    assert "(18 hunk(s) in 2 file(s) do not match)" in error_lines(result)[0]


def test_p2_labels_show_the_tree_path_and_the_input_path(
    upstream: SyntheticUpstream, tree: Path, tmp_path: Path
) -> None:
    deep = tmp_path / "deep.diff"
    deep.write_text("diff --git a/vllm/demo/core.py b/vllm/demo/core.py\n"
                    "--- a/vllm/demo/core.py\n+++ b/vllm/demo/core.py\n"
                    + core_hunk(4, "4", "44") + core_hunk(9, "900", "99"))  # fmt: skip
    result = upstream.run("import", "-p", "2", *AUTHOR, "-m", "deep", str(deep))
    assert result.code == 4, result.output
    assert error_lines(result)[:3] == [
        "error: deep.diff (change 1 of 1) does not apply to demo-1.0 and its series "
        "(1 hunk(s) in 1 file(s) do not match):",
        "  demo/core.py (a/vllm/demo/core.py): hunk #2 @@ -28,3 +28,3 @@ does not match the base",
        "      | def function_9():",
    ]


def test_exclude_leaves_out_sections_and_says_how_many(
    upstream: SyntheticUpstream, tree: Path, tmp_path: Path
) -> None:
    one = tmp_path / "one.diff"
    one.write_text("--- a/demo/core.py\n+++ b/demo/core.py\n" + core_hunk(4, "4", "44")
                   + "--- /dev/null\n+++ b/docs/vendor.md\n@@ -0,0 +1 @@\n+vendor notes\n"
                   + "--- /dev/null\n+++ b/ci/vendor/run.yml\n@@ -0,0 +1 @@\n+ci: true\n")  # fmt: skip
    two = tmp_path / "two.diff"
    two.write_text("--- /dev/null\n+++ b/docs/more.md\n@@ -0,0 +1 @@\n+more notes\n")
    result = upstream.run("import", *AUTHOR, "-m", "core: return 44", "--exclude", "docs/*",
                        "--exclude", "ci/*", str(one), str(two))  # fmt: skip
    assert result.code == 0, result.output
    assert "--exclude left out 3 file section(s)" in result.stderr.splitlines()
    assert warning_lines(result) == [
        "warning: two.diff: every file section is excluded; nothing imported from it"
    ]
    assert series_names(upstream) == ["add-a-table.patch", "core-return-44.patch"]
    patch = (upstream.base_folder / "core-return-44.patch").read_text()
    assert "+    return 44" in patch and "docs/" not in patch and "ci/" not in patch
    assert not (tree / "docs" / "vendor.md").exists()


def vendor_change(outside: Path, tmp_path: Path, old: str, new: str) -> Path:
    """A format-patch file made in `outside` (so it names its base blobs)."""
    core = outside / "demo" / "core.py"
    core.write_text(core.read_text().replace(old, new))
    git(outside, "commit", "--quiet", "-am", f"core: {new.strip()}", "-m",
        "The vendor kit needs it.\n\nUpstream-Status: Pending")  # fmt: skip
    patch = tmp_path / "vendor.patch"
    patch.write_bytes(subprocess.run(["git", "format-patch", "--stdout", "-1"], cwd=outside,
                                     capture_output=True, check=True).stdout)  # fmt: skip
    return patch


def test_3way_merges_a_change_whose_context_moved_and_says_where(
    upstream: SyntheticUpstream, tree: Path, outside: Path, tmp_path: Path
) -> None:
    patch = vendor_change(outside, tmp_path, "return 7\n", "return 77\n")
    # The store's series changes a line of that change's context.
    core = tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 8\n", "return 88\n"))
    commit_all(tree, "core: return 88")
    assert upstream.cli("patch", "--device-type", "devA", "--dir", str(upstream.build)).code == 0
    plain = upstream.run("import", str(patch))
    assert plain.code == 4, plain.output
    assert error_lines(plain)[1] == (
        "  demo/core.py: hunk #1 @@ -20,7 +20,7 @@ def function_6(): does not match the base"
    )
    assert error_lines(plain)[-1].startswith("hint: Refresh the change against this base, or retry "
                                        "with --3way to let git merge it.")  # fmt: skip
    merged = upstream.run("import", "--3way", str(patch))
    assert merged.code == 0, merged.output
    assert warning_lines(merged) == [
        "warning: vendor.patch needed a 3-way merge (new patch core-return-77.patch): demo/core.py"
    ]
    text = (upstream.base_folder / "core-return-77.patch").read_text()
    assert "-    return 7\n+    return 77\n" in text and "     return 88\n" in text


def test_3way_conflict_is_reported_and_changes_nothing(
    upstream: SyntheticUpstream, tree: Path, outside: Path, tmp_path: Path
) -> None:
    patch = vendor_change(outside, tmp_path, "return 7\n", "return 77\n")
    core = tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 7\n", "return 70\n"))
    commit_all(tree, "core: return 70")
    assert upstream.cli("patch", "--device-type", "devA", "--dir", str(upstream.build)).code == 0
    before = store_and_tree(upstream)
    result = upstream.run("import", "--3way", str(patch))
    assert result.code == 4, result.output
    assert "  3-way merge left conflicts in: demo/core.py" in error_lines(result)
    assert error_lines(result)[-1] == (
        "hint: Refresh the change against this base. Nothing was imported: the build tree "
        f"{tree} is as it was, and the store is unchanged."
    )
    assert store_and_tree(upstream) == before
    assert git(tree, "status", "--porcelain") == ""


def test_a_wrong_p_names_the_p_that_fits(
    upstream: SyntheticUpstream, tree: Path, outside: Path, tmp_path: Path
) -> None:
    for name in ("README.md", "setup.py", "demo/__init__.py", "demo/core.py", "tools/run.sh",
                 "demo/table.py"):  # fmt: skip
        path = outside / name
        path.write_text(path.read_text() + "# vendor\n")
    (outside / "demo" / "new.py").write_text("NEW = 1\n")
    git(outside, "add", "--all")
    diff = subprocess.run(["git", "diff", "--cached", "--src-prefix=a/vllm/",
                           "--dst-prefix=b/vllm/"], cwd=outside, capture_output=True,
                          check=True).stdout  # fmt: skip
    deep = tmp_path / "deep.diff"
    deep.write_bytes(diff)
    before = store_and_tree(upstream)
    result = upstream.run("import", *AUTHOR, "-m", "vendor", str(deep))
    assert result.code == 4, result.output
    assert error_lines(result) == [
        "error: deep.diff (change 1 of 1) does not apply to demo-1.0 and its series "
        "(6 of its 7 path(s) do not exist in the tree):",
        "  vllm/README.md: does not exist in the tree",
        "  vllm/demo/__init__.py: does not exist in the tree",
        "  vllm/demo/core.py: does not exist in the tree",
        "  vllm/demo/table.py: does not exist in the tree",
        "  vllm/setup.py: does not exist in the tree",
        "  vllm/tools/run.sh: does not exist in the tree",
        "hint: -p2 matches 6 of 7 files (-p1 matches 0): import again with -p 2. Nothing was "
        f"imported: the build tree {tree} is as it was, and the store is unchanged.",
    ]
    assert store_and_tree(upstream) == before
    # A -p that strips a whole path away: git cannot read the change at all.
    too_deep = upstream.run("import", "-p", "3", *AUTHOR, "-m", "vendor", str(deep))
    # The same mistake as -p1, the same exit code (issue 21 #8).
    assert too_deep.code == 4 == result.code, too_deep.output
    assert error_lines(too_deep)[-1] == (
        "hint: -p2 matches 6 of 7 files (-p3 matches 0): import again with -p 2. Nothing "
        "was imported."
    )
    fits = upstream.run("import", "-p", "2", *AUTHOR, "-m", "vendor", str(deep))
    assert fits.code == 0, fits.output


def test_the_dirty_tree_hint_names_commands_that_exist(
    upstream: SyntheticUpstream, tree: Path, tmp_path: Path
) -> None:
    (tree / "README.md").write_text("local edit\n")
    change = tmp_path / "change.diff"
    change.write_text("--- a/demo/core.py\n+++ b/demo/core.py\n" + core_hunk(4, "4", "44"))
    before = store_and_tree(upstream)
    result = upstream.run("import", *AUTHOR, "-m", "core: return 44", str(change))
    assert result.code == 5, result.output
    assert error_lines(result)[0] == f"error: the build tree {tree} holds work that exists nowhere else:"
    assert error_lines(result)[-1] == (
        "hint: Nothing was imported. Export that work first with `patchtool patch "
        "--device-type devA` (commit it, or use -m), or set the tree aside with `patchtool "
        "unpatch --device-type devA --force` (it moves to a backup folder); then import again."
    )
    assert "--force" not in error_lines(result)[-1].replace("unpatch --device-type devA --force", "")
    assert store_and_tree(upstream) == before


def test_a_failed_import_removes_the_tree_it_made(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    assert not upstream.build.exists()
    store_before = snapshot(upstream.store)
    stale = tmp_path / "stale.diff"
    stale.write_text("--- a/demo/core.py\n+++ b/demo/core.py\n" + core_hunk(3, "300", "33"))
    result = upstream.run("import", *AUTHOR, "-m", "stale", str(stale))
    assert result.code == 4, result.output
    assert error_lines(result)[-1] == (
        f"hint: Refresh the change against this base. Nothing was imported: the build tree "
        f"{upstream.tree} that this import made was removed, and the store is unchanged."
    )
    assert not upstream.tree.exists()
    device_dir = upstream.build / "devA"
    # Left: the build folder's lock file (and trash being deleted in the background).
    assert [p.name for p in device_dir.iterdir() if not p.name.startswith(".patchtool")] == []
    assert snapshot(upstream.store) == store_before


def test_whitespace_findings_are_capped_and_the_one_liner_fixes_them(
    upstream: SyntheticUpstream, tree: Path, tmp_path: Path
) -> None:
    spaced = "".join(f"+x{i} = {i} \n" for i in range(14))
    first = tmp_path / "first.diff"
    first.write_text("--- /dev/null\n+++ b/demo/spaced.py\n@@ -0,0 +1,14 @@\n" + spaced)
    second = tmp_path / "second.diff"
    second.write_text("--- a/demo/core.py\n+++ b/demo/core.py\n" + core_hunk(4, "4", "44 \t"))
    result = upstream.run("import", *AUTHOR, "-m", "Add spaced", str(first))
    assert result.code == 0, result.output
    again = upstream.run("import", *AUTHOR, "-m", "core: return 44", str(second))
    assert again.code == 0, again.output
    advice = (f"warning: to strip the trailing whitespace from every commit at once: in {tree}, "
              f"run `{WHITESPACE_FIX}`, then `patchtool patch`")  # fmt: skip
    assert WHITESPACE_FIX == "git rebase --whitespace=fix patchtool/base"
    shown = warning_lines(result)
    assert len([w for w in shown if "adds trailing whitespace" in w]) == 10
    assert "warning: add-spaced.patch: ... and 4 more" in shown
    assert shown[-1] == advice and warning_lines(again)[-1] == advice
    # The one-liner, as printed, with git 2.39 (the earlier commit is fixed too).
    subprocess.run(WHITESPACE_FIX.split(), cwd=tree, check=True, capture_output=True,
                   env={**os.environ, "GIT_COMMITTER_DATE": "2025-02-02T00:00:00+00:00"})  # fmt: skip
    exported = upstream.cli("patch", "--device-type", "devA", "--dir", str(upstream.build))
    assert exported.code == 0, exported.output
    assert warning_lines(exported) == []
    for name in ("add-spaced.patch", "core-return-44.patch"):
        added = [line for line in (upstream.base_folder / name).read_text().splitlines()
                 if line.startswith("+") and not line.startswith("+++")]  # fmt: skip
        assert added and all(line == line.rstrip() for line in added)
    assert upstream.cli("check").code == 0


def test_a_change_without_a_body_gets_one_naming_its_source(
    upstream: SyntheticUpstream, tree: Path, tmp_path: Path
) -> None:
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    (vendor / "change.diff").write_text(
        "--- a/demo/core.py\n+++ b/demo/core.py\n" + core_hunk(4, "4", "44")
    )
    quilt = vendor / "quilt"
    quilt.mkdir()
    (quilt / "series").write_text("# kit\nsigned.diff\nexplained.patch\n")
    (quilt / "signed.diff").write_text(
        "core: return 55\n\nSigned-off-by: Ada <ada@example.invalid>\n---\n"
        "--- a/demo/core.py\n+++ b/demo/core.py\n" + core_hunk(5, "5", "55")
    )  # fmt: skip
    (quilt / "explained.patch").write_text(
        "From: Quinn <quinn@example.invalid>\nSubject: core: return 66\n\n"
        "Explained already.\n---\n--- a/demo/core.py\n+++ b/demo/core.py\n"
        + core_hunk(6, "6", "66")
    )  # fmt: skip
    result = run_cli("--store", str(upstream.store), "import", "--device-type", "devA", "--dir",
                     str(upstream.build), *AUTHOR, "-m", "core: return 44",
                     "vendor/change.diff", "vendor/quilt", cwd=tmp_path)  # fmt: skip
    assert result.code == 0, result.output
    assert [w for w in warning_lines(result) if "core-return-66.patch: " in w] == [
        "warning: core-return-66.patch: has no Upstream-Status: trailer"
    ]
    assert not [w for w in warning_lines(result) if "core-return-44" in w or "core-return-55" in w]

    def message(name: str) -> str:
        text = (upstream.base_folder / name).read_text()
        return text[text.index("Subject: ") : text.index("\n\ndiff --git ")]

    assert message("core-return-44.patch") == (
        "Subject: [PATCH] core: return 44\n\nImported from vendor/change.diff.\n\n"
        "Upstream-Status: Pending"
    )
    assert message("core-return-55.patch") == (
        "Subject: [PATCH] core: return 55\n\nImported from signed.diff, line 2 of the quilt "
        "series vendor/quilt/series.\n\nSigned-off-by: Ada <ada@example.invalid>\n"
        "Upstream-Status: Pending"
    )
    # A body the input has is kept as it is: lint asks for its trailer.
    assert (
        message("core-return-66.patch") == "Subject: [PATCH] core: return 66\n\nExplained already."
    )
    assert lint_findings(upstream) == ["core-return-66.patch: has no Upstream-Status: trailer"]


def lint_findings(world: SyntheticUpstream) -> list[str]:
    records = check_records(world.cli("check", "--json").stdout)
    return [d for r in records if r["check"] == "lint" for d in r["details"]]
