"""core/gitpatch: git is the one reader of what a patch does (issue 20 §3).

One parser of `git apply --numstat --summary -z`, one codec of git's C-quoted
names, checked against what real git writes; and no second reader anywhere in
the package (the second diff parser of vendors/flagscale and the second
`--numstat` and C-quote readers are gone)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from helpers import REPOSITORY, git

from patchtool.core.gitops import Git
from patchtool.core.gitpatch import PatchEntry, parse_numstat, quote, read_patch, unquote

SOURCE = REPOSITORY / "src" / "patchtool"


def real_diff(tmp_path: Path) -> bytes:
    """`git diff --binary` of a change that creates, removes, renames, changes a
    binary file and a mode, and names files git quotes."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    files = {
        "old name.txt": "a\nb\n",
        "gone.py": "bye\n",
        "dëvice.py": "x = 1\n",
        'quote"d.txt': "q\n",
        "run.sh": "echo\n",
    }
    for name, text in files.items():
        (repo / name).write_text(text)
    (repo / "logo.bin").write_bytes(bytes(range(256)))
    git(repo, "add", "--all")
    git(repo, "commit", "--quiet", "-m", "base")
    git(repo, "mv", "old name.txt", "new name.txt")
    (repo / "gone.py").unlink()
    (repo / "dëvice.py").write_text("x = 2\ny = 3\n")
    (repo / "tab\there.txt").write_text("new\n")
    (repo / "logo.bin").write_bytes(bytes(reversed(range(256))))
    (repo / "run.sh").chmod(0o755)
    git(repo, "add", "--all")
    return subprocess.run(
        ["git", "diff", "--cached", "--binary", "HEAD"], cwd=repo, capture_output=True, check=True
    ).stdout


def test_git_reads_each_section_with_what_it_does(tmp_path: Path) -> None:
    reading = read_patch(Git(tmp_path), data=real_diff(tmp_path), old_names=True)
    assert reading.ok
    assert reading.entries == (
        PatchEntry("dëvice.py", None, 2, 1),
        PatchEntry("gone.py", None, 0, 1, removed=True),
        PatchEntry("logo.bin", None, None, None),
        PatchEntry("new name.txt", "old name.txt", 0, 0),
        PatchEntry("run.sh", None, 0, 0),
        PatchEntry("tab\there.txt", None, 1, 0, created=True),
    )
    assert reading.entries[2].binary
    assert reading.paths == [
        "dëvice.py", "gone.py", "logo.bin", "new name.txt", "run.sh", "tab\there.txt",
    ]  # fmt: skip
    assert "old name.txt" in reading.names  # both names of a rename are judged


def test_a_patch_git_cannot_read_says_why(tmp_path: Path) -> None:
    reading = read_patch(Git(tmp_path), data=b"diff --git a/x b/x\n--- a/x\n+++ b/x\n@@ -1,x +1 @@\n")
    assert (reading.ok, reading.entries) == (False, ())
    assert reading.first_error() == "corrupt patch at line 4"
    empty = read_patch(Git(tmp_path), data=b"no patch here\n")
    assert empty.first_error().startswith("No valid patches in input")


def test_the_rename_spelling_of_git_diff_numstat_is_read_too() -> None:
    assert parse_numstat(b"1\t2\t\0old\0new\0" + b"-\t-\tpic.png\0") == (
        PatchEntry("new", None, 1, 2),
        PatchEntry("pic.png", None, None, None),
    )


def test_quoted_names_round_trip_with_gits_own_quoting(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "--quiet")
    names = ["plain.txt", "with space.txt", "dëvice.py", 'q"uote', "back\\slash", "tab\tx", "del\x7f"]
    for name in names:
        (repo / name).write_text("x\n")
    git(repo, "add", "--all")
    quoted = git(repo, "-c", "core.quotePath=true", "ls-files").splitlines()
    assert sorted(unquote(line) for line in quoted) == sorted(names)
    assert sorted(quote(name) for name in names) == sorted(quoted)
    assert unquote('"not \\q quoted"') == '"not \\q quoted"'  # left as it is


def test_git_is_the_only_reader_of_a_patch() -> None:
    """One `--numstat` reader, one C-quote decoder, no hunk parser outside lint's
    unidiff (reporting only)."""
    numstat, decoders, hunks = [], [], []
    for path in sorted(SOURCE.rglob("*.py")):
        text = path.read_text()
        name = str(path.relative_to(SOURCE))
        if '"--numstat"' in text:
            numstat.append(name)
        if "escape_decode" in text or re.search(r"def _?unquote\(", text):
            decoders.append(name)
        if re.search(r"rb?\"\^@@ -", text):
            hunks.append(name)
    assert numstat == ["core/gitpatch.py"]
    # sources/index/settings.py unquotes pip's configuration values, not git's names.
    assert decoders == ["core/gitpatch.py", "sources/index/settings.py"]
    assert hunks == []
