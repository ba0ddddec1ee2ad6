"""rebase: a series carried from demo 1.0 to demo 1.1, one outcome of each kind.

demo 1.1 differs from 1.0 so that each patch of the test series meets one case:
  clean      "Change five"     upstream did not touch its lines
  3-way      "Change thirty"   upstream changed a line of its context (return 29)
  conflict   "Change ten"      upstream changed the same line (return 10)
  upstream   "Add a vendor note to the README": 1.1 ships that very line
  clean      "Add the vendor file": a new file
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from helpers import (
    DEMO_FILES,
    SyntheticUpstream,
    commit_all,
    git,
    make_sdist,
    snapshot,
)

NOTE = "Vendor note: runs on devA.\n"


def demo_11_files() -> dict[str, bytes | tuple[str, str]]:
    files = dict(DEMO_FILES)
    core = files["demo/core.py"]
    assert isinstance(core, bytes)
    core = core.replace(b"return 29\n", b"return 29  # upstream 1.1\n")
    core = core.replace(b"return 10\n", b"return 1010\n")
    files["demo/core.py"] = core
    files["demo/__init__.py"] = b"VERSION = '1.1'\n"
    files["README.md"] = b"# demo\n\nA small upstream project for tests.\n" + NOTE.encode()
    return files


@pytest.fixture
def world(upstream: SyntheticUpstream) -> SyntheticUpstream:
    """demo 1.0 with a five-patch series for devA; demo 1.1 beside it as an sdist."""
    make_sdist(upstream.sdist.parent / "demo-1.1.tar.gz", "demo-1.1", demo_11_files(),
               modes={"tools/run.sh": 0o755})  # fmt: skip
    assert upstream.run("unpatch").code == 0
    tree = upstream.tree
    edit(tree, "demo/core.py", "return 5\n", "return 55\n")
    commit_all(tree, "Change five")
    edit(tree, "demo/core.py", "return 30\n", "return 300\n")
    commit_all(tree, "Change thirty")
    edit(tree, "demo/core.py", "return 10\n", "return 100\n")
    commit_all(tree, "Change ten")
    edit(tree, "README.md", "for tests.\n", "for tests.\n" + NOTE)
    commit_all(tree, "Add a vendor note to the README")
    (tree / "vendor.txt").write_text("devA\n")
    commit_all(tree, "Add the vendor file")
    exported = upstream.cli("patch", "--device-type", "devA", "--dir", str(upstream.build))
    assert exported.code == 0, exported.output
    return upstream


def edit(tree: Path, path: str, old: str, new: str) -> None:
    file = tree / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))


def new_folder(world: SyntheticUpstream) -> Path:
    return world.store / "devA" / "demo-1.1"


def tree_state(tree: Path) -> dict[str, object]:
    """Everything in a build tree a rebase could change: files, HEAD, refs, record."""
    return {
        "files": snapshot(tree),
        "head": git(tree, "rev-parse", "HEAD"),
        "branch": git(tree, "symbolic-ref", "--quiet", "HEAD"),
        "refs": git(tree, "for-each-ref", "--format=%(refname) %(objectname)"),
        "record": (tree / ".git" / "patchtool.json").read_bytes(),
        "status": git(tree, "status", "--porcelain", "--untracked-files=all"),
    }


def resolve_ten(tree: Path) -> None:
    """A vendor's resolution: keep upstream's new value's intent and the patch's."""
    core = tree / "demo" / "core.py"
    text = core.read_text()
    start, end = text.index("<<<<<<<"), text.index(">>>>>>>")
    end = text.index("\n", end) + 1
    core.write_text(text[:start] + "    return 100\n" + text[end:])
    git(tree, "add", "demo/core.py")


def test_each_outcome_conflict_then_continue_and_the_report(world: SyntheticUpstream) -> None:
    old_folder = snapshot(world.base_folder)
    started = world.run("rebase", "--onto", "1.1")
    assert started.code == 4, started.output
    assert "patch change-ten.patch (3 of 5, 'Change ten') conflicts with demo 1.1" in started.stderr
    assert "demo/core.py: 1 conflict hunk(s) at lines 32-36" in started.stderr
    assert "git add" in started.stderr and "patchtool rebase -d devA --continue" in started.stderr
    assert (world.build / "devA" / ".patchtool-rebase-demo.json").is_file()
    assert not new_folder(world).exists()  # the store is written only at the end
    half = world.run("rebase", "--continue")
    assert half.code == 4 and "still has unresolved files: demo/core.py" in half.stderr

    resolve_ten(world.tree)
    done = world.run("rebase", "--continue", "--note", "kept 100 over upstream's 1010")
    assert done.code == 0, done.output
    assert done.stdout.strip() == str(new_folder(world))

    assert snapshot(world.base_folder) == old_folder
    folder = new_folder(world)
    series = (folder / "series").read_text().splitlines()
    assert series == ["# demo series", "change-five.patch", "change-thirty.patch",
                      "change-ten.patch", "add-the-vendor-file.patch"]  # fmt: skip
    assert sorted(p.name for p in folder.glob("*.patch")) == sorted(series[1:])
    base_toml = (folder / "base.toml").read_text()
    sha = hashlib.sha256((world.sdist.parent / "demo-1.1.tar.gz").read_bytes()).hexdigest()
    assert 'version = "1.1"' in base_toml and f'sha256 = "{sha}"' in base_toml
    report = (folder / "rebase-report.md").read_text()
    for row in ("| 1 | change-five.patch | clean | change-five.patch |",
                "| 2 | change-thirty.patch | 3-way | change-thirty.patch |",
                "| 3 | change-ten.patch | resolved by hand | change-ten.patch |",
                "| 4 | add-a-vendor-note-to-the-readme.patch | dropped as upstream | - |",
                "| 5 | add-the-vendor-file.patch | clean | add-the-vendor-file.patch |"):  # fmt: skip
        assert row in report, report
    assert "- conflict: demo/core.py: 1 conflict hunk(s) at lines 32-36" in report
    assert "- resolution: kept 100 over upstream's 1010" in report
    assert "1 = 1 Change five" in report and "3 ! 3 Change ten" in report
    assert "4 < - Add a vendor note to the README" in report
    # the range-diff shows the hand resolution: the patch now takes away 1.1's 1010
    assert "\n    --    return 10\n    +-    return 1010\n     +    return 100\n" in report, report
    # commit ids change with every rebase; the report holds none
    assert git(world.tree, "rev-parse", "--short", "HEAD").strip() not in report

    # the tree is now the new base's, exported, and both bases build
    assert "demo-1.1" in (world.tree / ".git" / "patchtool.json").read_text()
    check = world.cli("patch", "--device-type", "devA", "--dir", str(world.build), "--check")
    assert check.code == 0, check.output
    for version, expected in (("1.0", "return 100\n"), ("1.1", "return 100\n")):
        rebuilt = world.run("unpatch", "--commit-id", version)
        assert rebuilt.code == 0, rebuilt.output
        assert expected in (world.tree / "demo" / "core.py").read_text()
    assert "return 29  # upstream 1.1" in (world.tree / "demo" / "core.py").read_text()


def test_the_report_is_the_same_on_a_second_run(world: SyntheticUpstream, tmp_path: Path) -> None:
    reports = []
    for attempt in range(2):
        result = world.run("rebase", "--onto", "1.1")
        assert result.code == 4
        assert world.run("rebase", "--skip").code == 0
        reports.append((new_folder(world) / "rebase-report.md").read_bytes())
        import shutil

        shutil.move(str(new_folder(world)), str(tmp_path / f"run{attempt}"))
        assert world.run("unpatch", "--commit-id", "1.0", "--force").code == 0
    assert reports[0] == reports[1]


def test_skip_drops_the_conflicting_patch(world: SyntheticUpstream) -> None:
    assert world.run("rebase", "--onto", "1.1").code == 4
    skipped = world.run("rebase", "--skip")
    assert skipped.code == 0, skipped.output
    series = (new_folder(world) / "series").read_text()
    assert "change-ten.patch" not in series and "change-thirty.patch" in series
    assert not (new_folder(world) / "change-ten.patch").exists()
    report = (new_folder(world) / "rebase-report.md").read_text()
    assert "| 3 | change-ten.patch | skipped | - |" in report
    assert "return 1010" in (world.tree / "demo" / "core.py").read_text()


def test_commit_yourself_then_continue(world: SyntheticUpstream) -> None:
    assert world.run("rebase", "--onto", "1.1").code == 4
    resolve_ten(world.tree)
    git(world.tree, "-c", "core.editor=true", "commit", "--quiet", "--no-edit")
    done = world.run("rebase", "--continue")
    assert done.code == 0, done.output
    report = (new_folder(world) / "rebase-report.md").read_text()
    assert "| 3 | change-ten.patch | resolved by hand | change-ten.patch |" in report


def test_abort_puts_tree_and_store_back_exactly(world: SyntheticUpstream) -> None:
    tree_before = tree_state(world.tree)
    store_before = snapshot(world.store)
    assert world.run("rebase", "--onto", "1.1").code == 4
    edit(world.tree, "demo/core.py", "return 1", "return 7")  # a half-done resolution
    aborted = world.run("rebase", "--abort")
    assert aborted.code == 0, aborted.output
    assert tree_state(world.tree) == tree_before
    assert snapshot(world.store) == store_before
    assert not (world.build / "devA" / ".patchtool-rebase-demo.json").exists()
    assert not (world.tree / ".git" / "patchtool-rebase-id").exists()
    again = world.run("rebase", "--continue")
    assert again.code == 2 and "no rebase is in progress" in again.stderr


def test_abort_removes_a_tree_the_rebase_created(world: SyntheticUpstream) -> None:
    import shutil

    shutil.rmtree(world.tree)
    store_before = snapshot(world.store)
    assert world.run("rebase", "--onto", "1.1").code == 4
    assert world.run("rebase", "--abort").code == 0
    assert not world.tree.exists()
    assert snapshot(world.store) == store_before


def test_unexported_work_is_refused_and_nothing_changes(world: SyntheticUpstream) -> None:
    (world.tree / "local.txt").write_text("mine\n")
    commit_all(world.tree, "Work nobody exported")
    before, store_before = tree_state(world.tree), snapshot(world.store)
    refused = world.run("rebase", "--onto", "1.1")
    assert refused.code == 5, refused.output
    assert "Work nobody exported" in refused.stderr
    assert "patchtool patch --device-type devA" in refused.stderr
    assert tree_state(world.tree) == before and snapshot(world.store) == store_before


def test_an_existing_target_folder_and_a_missing_version_are_refused(
    world: SyntheticUpstream, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    new_folder(world).mkdir()
    exists = world.run("rebase", "--onto", "1.1")
    assert exists.code == 2
    assert exists.stderr.splitlines()[-2:] == [
        f"error: the base folder {new_folder(world)} already exists, without a base.toml",
        "hint: Move it away, or rebase onto another version. `--onto` a base the device has "
        "carries the series' changes onto it.",
    ]
    new_folder(world).rmdir()
    monkeypatch.setenv("PIP_INDEX_URL", (world.root / "empty-index").as_uri())
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "")
    (world.root / "empty-index").mkdir()
    missing = world.run("rebase", "--onto", "9.9")
    assert missing.code == 3 and "demo-9.9.tar.gz" in missing.stderr
    assert not (world.store / "devA" / "demo-9.9").exists()


def test_a_git_source_base(world: SyntheticUpstream) -> None:
    source = world.root / "demo-git"
    source.mkdir()
    for name, content in demo_11_files().items():
        path = source / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, tuple):
            path.symlink_to(content[1])
        else:
            path.write_bytes(content)
    (source / "tools" / "run.sh").chmod(0o755)
    git(source, "init", "--quiet")
    commit_all(source, "demo 1.1 from git")
    commit = git(source, "rev-parse", "HEAD").strip()
    started = world.run("rebase", "--onto", f"git+{source}@{commit}", "--base-version", "1.1-git")
    assert started.code == 4, started.output
    assert world.run("rebase", "--skip").code == 0
    folder = world.store / "devA" / "demo-1.1-git"
    assert f'url = "{source}"' in (folder / "base.toml").read_text()
    assert f'commit = "{commit}"' in (folder / "base.toml").read_text()
    assert world.run("unpatch", "--commit-id", "1.1-git").code == 0


def test_the_check_command_accepts_the_new_base(world: SyntheticUpstream) -> None:
    assert world.run("rebase", "--onto", "1.1").code == 4
    assert world.run("rebase", "--skip").code == 0
    result = world.cli("check", "--device-type", "devA")
    assert result.code == 0, result.output


def test_bad_flag_combinations_are_usage_errors(world: SyntheticUpstream) -> None:
    both = world.run("rebase", "--continue", "--abort")
    assert both.code == 2 and "exclude each other" in both.stderr
    bare = world.run("rebase")
    assert bare.code == 2 and "--onto" in bare.stderr
