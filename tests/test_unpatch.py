"""unpatch: bad input, conflicts, dirty trees, --force and --3way; nothing changed on failure."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from helpers import (
    NON_APPLYING_PATCH,
    SyntheticUpstream,
    commit_all,
    error_lines,
    git,
    snapshot,
    write_base,
)

pytestmark = pytest.mark.cli_in_process

WORK_HINT = ("Export it with `patchtool patch --device-type devA` (commit first, or use -m), or "
             "pass --force to move the old tree to a backup folder.")  # fmt: skip


def add_patch(world: SyntheticUpstream, name: str, text: str) -> Path:
    path = world.base_folder / name
    path.write_text(text)
    with (world.base_folder / "series").open("a") as series:
        series.write(name + "\n")
    return path


def export_one_change(world: SyntheticUpstream, path: str, old: str, new: str, subject: str) -> None:
    assert world.run("unpatch").code == 0
    file = world.tree / path
    file.write_text(file.read_text().replace(old, new))
    commit_all(world.tree, subject)
    result = world.run("patch")
    assert result.code == 0, result.output


def test_unknown_device_exits_3_and_names_known_devices(upstream: SyntheticUpstream) -> None:
    result = upstream.cli("unpatch", "--device-type", "devB", "--dir", str(upstream.build))
    assert result.code == 3
    assert error_lines(result) == [
        f"error: unknown device 'devB': {upstream.store / 'devB' / 'device.toml'} does not exist; "
        "did you mean 'devA'?",
        "hint: Known devices: devA.",
    ]
    assert not upstream.build.exists() or not (upstream.build / "devB").exists()


def test_ambiguous_and_unknown_commit_ids_list_the_bases(upstream: SyntheticUpstream) -> None:
    second = upstream.store / "devA" / "demo-1.1"
    write_base(second, "demo", "1.1", upstream.commit[:7] + "0" * 33, upstream.sha256)
    (second / "series").write_text("")
    ambiguous = upstream.run("unpatch", "--commit-id", upstream.commit[:7])
    assert ambiguous.code == 2
    bases = (f"Bases of devA: demo-1.0 ({upstream.commit[:12]}, 1.0), "
             f"demo-1.1 ({upstream.commit[:7]}00000, 1.1).")  # fmt: skip
    assert error_lines(ambiguous) == [
        f"error: '{upstream.commit[:7]}' is ambiguous for device 'devA': it matches demo-1.0, "
        "demo-1.1",
        f"hint: {bases} Give more digits.",
    ]
    unknown = upstream.run("unpatch", "--commit-id", "deadbeef")
    assert unknown.code == 3
    assert error_lines(unknown) == [
        "error: device 'devA' has no base matching 'deadbeef'",
        f"hint: {bases} Give a full id, a unique prefix of 7+ hex digits, a folder name or a "
        "version.",
    ]
    by_version = upstream.run("unpatch", "--commit-id", "1.0")
    assert by_version.code == 0, by_version.output
    assert git(upstream.tree, "rev-parse", "HEAD").strip() == upstream.commit


def test_hash_mismatch_is_an_integrity_error_and_imports_nothing(upstream: SyntheticUpstream) -> None:
    write_base(upstream.base_folder, "demo", "1.0", upstream.commit, "0" * 64)
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: {upstream.sdist}: sha256 {upstream.sha256} differs from {'0' * 64} recorded in "
        f"{upstream.base_folder / 'base.toml'}",
        "hint: Use the exact released file; nothing was imported.",
    ]
    assert not upstream.tree.exists()


def test_conflicting_patch_names_patch_file_and_hunk_and_keeps_old_tree(
    upstream: SyntheticUpstream,
) -> None:
    export_one_change(upstream, "demo/core.py", "return 3\n", "return 33\n", "Change three")
    before = snapshot(upstream.tree)
    head = git(upstream.tree, "rev-parse", "HEAD")
    add_patch(upstream, "bad.patch", NON_APPLYING_PATCH)
    result = upstream.run("unpatch")
    assert result.code == 4, result.output
    assert error_lines(result) == [
        "error: patch bad.patch (series line 3, patch 2 of 2) does not apply to demo 1.0 "
        f"({upstream.commit[:12]}):",
        "  demo/core.py: hunk #1 @@ -58,3 +58,3 @@ def function_19(): does not match the base",
        "      | def function_20():",
        "      |     return 2000",  # what git searched for
        "      | ",
        "hint: Refresh the patch against this base, or retry with --3way to let git merge it. "
        "The previous build tree, if any, is unchanged.",
    ]
    assert snapshot(upstream.tree) == before
    assert git(upstream.tree, "rev-parse", "HEAD") == head
    assert [p.name for p in upstream.tree.parent.iterdir()] == ["demo", ".patchtool.lock"] or (
        sorted(p.name for p in upstream.tree.parent.iterdir()) == [".patchtool.lock", "demo"]
    )


def test_corrupt_patch_is_reported_by_name(upstream: SyntheticUpstream) -> None:
    add_patch(upstream, "corrupt.patch", "From: nobody\nSubject: [PATCH] x\n\n---\n"
              "diff --git a/setup.py b/setup.py\n--- a/setup.py\n+++ b/setup.py\n@@ -1,9 +1,9 @@\n"
              "garbage\n")  # fmt: skip
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: patch {upstream.base_folder / 'corrupt.patch'} (series line 2): git cannot read "
        "it: corrupt patch at line 9",
        "hint: Nothing was applied. The patch file is damaged: restore it from version control, "
        "or export it again with `patchtool patch`.",
    ]
    assert not upstream.tree.exists()


def test_missing_series_entry_exits_3_and_names_the_line(upstream: SyntheticUpstream) -> None:
    (upstream.base_folder / "series").write_text("# demo series\nghost.patch\n")
    result = upstream.run("unpatch")
    assert result.code == 3
    assert error_lines(result) == [
        f"error: {upstream.base_folder / 'series'}:2: patch file 'ghost.patch' is missing from "
        f"{upstream.base_folder}",
        "hint: Restore the file, or remove its line from series.",
    ]


def test_dirty_tree_is_refused_then_backed_up_with_force(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "setup.py").write_text("# local edit\n")
    (upstream.tree / "untracked.txt").write_text("mine\n")
    before = snapshot(upstream.tree)
    refused = upstream.run("unpatch")
    assert refused.code == 5
    assert error_lines(refused) == [
        f"error: the build tree {upstream.tree} holds work that exists nowhere else:",
        "  uncommitted changes: setup.py, untracked.txt",
        f"hint: {WORK_HINT}",
    ]
    assert snapshot(upstream.tree) == before
    forced = upstream.run("unpatch", "--force")
    assert forced.code == 0, forced.output
    backups = list((upstream.build / "devA" / "backups").iterdir())
    assert len(backups) == 1 and str(backups[0]) in forced.stderr
    assert snapshot(backups[0]) == before
    assert (upstream.tree / "setup.py").read_text().startswith("from setuptools")


def test_unexported_commit_is_refused(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "feature.txt").write_text("feature\n")
    commit_all(upstream.tree, "Add a feature nobody exported")
    result = upstream.run("unpatch")
    assert result.code == 5
    commit = git(upstream.tree, "rev-parse", "HEAD")[:10]
    assert error_lines(result) == [
        f"error: the build tree {upstream.tree} holds work that exists nowhere else:",
        f"  commits not exported to the store: {commit} Add a feature nobody exported",
        f"hint: {WORK_HINT}",
    ]
    assert (upstream.tree / "feature.txt").exists()


def test_three_way_applies_a_patch_made_on_another_parent_and_reports_it(
    upstream: SyntheticUpstream,
) -> None:
    export_one_change(upstream, "demo/core.py", "return 30\n", "return 300\n", "Change thirty")
    # A second patch written against the bare base: its context still says
    # "return 30", so it only applies with a real 3-way merge.
    tree = upstream.tree
    git(tree, "reset", "--quiet", "--hard", "patchtool/base")
    core = tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 31\n", "return 310\n"))
    commit_all(tree, "Change thirty-one")
    patch_text = git(tree, "format-patch", "--stdout", "--full-index", "-1", "HEAD")
    add_patch(upstream, "change-thirty-one.patch", patch_text)
    plain = upstream.run("unpatch", "--force")
    assert plain.code == 4, plain.output
    assert error_lines(plain) == [
        "error: patch change-thirty-one.patch (series line 3, patch 2 of 2) does not apply to "
        f"demo 1.0 ({upstream.commit[:12]}):",
        "  demo/core.py: hunk #1 @@ -92,7 +92,7 @@ def function_30(): does not match the base",
        "      |     return 30",
        "      | ",
        "      | def function_31():",
        "      |     return 31",
        "      | ",
        "      | def function_32():",
        "      |     return 32",
        "hint: Refresh the patch against this base, or retry with --3way to let git merge it. "
        "The previous build tree, if any, is unchanged.",
    ]
    merged = upstream.run("unpatch", "--force", "--3way")
    assert merged.code == 0, merged.output
    assert "needed a 3-way merge: change-thirty-one.patch" in merged.stderr
    text = (upstream.tree / "demo" / "core.py").read_text()
    assert "return 300\n" in text and "return 310\n" in text


def test_a_second_unpatch_needs_no_network_or_sdist(upstream: SyntheticUpstream,
                                                    monkeypatch) -> None:  # type: ignore[no-untyped-def]
    assert upstream.run("unpatch").code == 0
    upstream.sdist.unlink()
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # nothing listens there
    assert upstream.run("unpatch").code == 0


def test_the_tree_keeps_working_when_the_cache_is_deleted(upstream: SyntheticUpstream,
                                                          hermetic_seal: Path) -> None:
    import shutil

    assert upstream.run("unpatch").code == 0
    shutil.rmtree(hermetic_seal / "patchtool-cache")
    assert git(upstream.tree, "fsck", "--no-progress", "--connectivity-only") == ""
    assert git(upstream.tree, "show", "--stat", "patchtool/base").startswith("commit ")


def test_dir_that_is_the_store_or_root_is_refused(upstream: SyntheticUpstream) -> None:
    for bad in ("/", str(upstream.store), str(upstream.root)):
        result = upstream.cli("unpatch", "--device-type", "devA", "--dir", bad)
        assert result.code == 2, (bad, result.output)
        assert error_lines(result) == [
            f"error: --dir {bad} is not a usable build folder ({bad} is protected)",
            "hint: Use a folder of its own, such as the default 'build'.",
        ]


def test_device_names_that_climb_out_are_refused(upstream: SyntheticUpstream) -> None:
    result = upstream.cli("unpatch", "--device-type", "../devA", "--dir", str(upstream.build))
    assert result.code == 10
    assert error_lines(result) == [
        "error: device '../devA' is not a valid name",
        "hint: A device is 1-100 characters of letters, digits, '.', '_', '+' and '-', starting "
        "with a letter or digit, and never contains '..'.",
    ]


def test_a_build_folder_on_another_file_system_than_the_cache(upstream: SyntheticUpstream) -> None:
    # /dev/shm is a tmpfs on Linux: the cache's objects cannot be hard-linked there,
    # and `git clone --local` would fail with "Invalid cross-device link".
    assert upstream.run("unpatch").code == 0
    with tempfile.TemporaryDirectory(prefix="patchtool-shm-", dir="/dev/shm") as folder:
        build = Path(folder) / "build"
        result = upstream.run("unpatch", build=build)
        assert result.code == 0, result.output
        tree = build / "devA" / "demo"
        assert snapshot(tree) == snapshot(upstream.tree)
        assert git(tree, "rev-parse", "HEAD") == git(upstream.tree, "rev-parse", "HEAD")
