"""patchtool's verdict on a patch agrees with what git apply actually writes.

Hypothesis writes one-section patches from git's whole header vocabulary,
the old and rare spellings included (`rename old`/`rename new`, `copy from`,
mode lines, several of them, in any order, later ones overriding earlier ones),
with paths and symlink targets that are safe or hostile. Each patch is run
through patchtool's pipeline (applying.apply_series with safety.TreeJudge) and,
separately, through plain `git am` in a scratch clone, whose result on disk is
then inspected: every symlink resolved by the kernel (os.path.realpath), and a
folder beside the clone watched for writes.

The property: whatever patchtool lets through, git wrote safely (no symlink
leading out of the tree, nothing written outside it, nothing git's own
core.protectHFS/NTFS refuses), and to the same tree; whatever git itself
refuses as an invalid path, patchtool calls unsafe (exit 10), not a conflict.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from helpers import git, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchtool.core.errors import ConflictError, IntegrityError, UnsafeInputError
from patchtool.core.gitops import Git
from patchtool.core.report import NullReporter
from patchtool.series.privacy import load_series
from patchtool.series.safety import TreeJudge
from patchtool.store.model import BaseRef, PatchLimits, PatchSeries, PypiSource, SeriesEntry
from patchtool.trees.applying import apply_series, checkout_base

PATHS = ["README.md", "docs/link.md", "a/b.txt", "passwd", "new.txt", "docs/new-link",
         "a/deep/new", ".git/config", ".GIT/hooks/x", "a/../../x", ".gi\u200ct/x", "docs"]  # fmt: skip
TARGETS = ["../README.md", "/etc/passwd", "../../x", "README.md", "a/../..", ".", "docs/..",
           "link.md/../..", ".git/hooks"]  # fmt: skip
MODES = ["100644", "100755", "120000"]


def header_line() -> st.SearchStrategy[str]:
    path = st.sampled_from(PATHS)
    mode = st.sampled_from(MODES)
    return st.one_of(
        st.builds(lambda m: f"old mode {m}", mode),
        st.builds(lambda m: f"new mode {m}", mode),
        st.builds(lambda m: f"new file mode {m}", mode),
        st.builds(lambda m: f"deleted file mode {m}", mode),
        st.builds(lambda p: f"rename from {p}", path),
        st.builds(lambda p: f"rename to {p}", path),
        st.builds(lambda p: f"rename old {p}", path),
        st.builds(lambda p: f"rename new {p}", path),
        st.builds(lambda p: f"copy from {p}", path),
        st.builds(lambda p: f"copy to {p}", path),
        st.just("similarity index 100%"),
    )


@st.composite
def patches(draw: st.DrawFn) -> bytes:
    """A mostly well-formed section of one of four kinds, with rare header lines
    mixed in where git reads them (after `diff --git`, before `---`)."""
    path = st.sampled_from(PATHS)
    old, new = draw(path), draw(path)
    kind = draw(st.sampled_from(["move", "new-link", "to-link", "modify"]))
    header: list[str] = []
    body: list[str] = []
    if kind == "move":
        verb = draw(st.sampled_from(["rename", "copy"]))
        header = ["similarity index 100%", f"{verb} from {old}", f"{verb} to {new}"]
        if draw(st.booleans()):  # the old spellings, later lines overriding earlier ones
            header += [f"rename old {draw(path)}", f"rename new {draw(path)}"]
    elif kind == "new-link":
        old = new
        header = ["new file mode 120000"]
        body = ["--- /dev/null", f"+++ b/{new}", "@@ -0,0 +1 @@",
                f"+{draw(st.sampled_from(TARGETS))}", "\\ No newline at end of file"]  # fmt: skip
    elif kind == "to-link":
        old = new = draw(st.sampled_from(["README.md", "a/b.txt"]))
        header = ["old mode 100644", "new mode 120000"]
    else:
        old = new = "README.md"
        body = ["--- a/README.md", "+++ b/README.md", "@@ -1 +1 @@", "-# demo", "+# changed"]
    extra = draw(st.lists(st.tuples(st.integers(0, len(header)), header_line()), max_size=2))
    for position, line in extra:
        header.insert(position, line)
    lines = [f"diff --git a/{old} b/{new}", *header, *body]
    mail = ("From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            "From: Gen <gen@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
            "Subject: [PATCH] generated\n\ngenerated\n---\n")  # fmt: skip
    return (mail + "\n".join(lines) + "\n").encode("utf-8")


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("property-base")
    work = root / "work"
    work.mkdir()
    git(work, "init", "--quiet")
    (work / "README.md").write_text("# demo\n")
    (work / "a").mkdir()
    (work / "a" / "b.txt").write_text("b\n")
    (work / "docs").mkdir()
    (work / "docs" / "link.md").symlink_to("../README.md")
    git(work, "add", "--all")
    git(work, "commit", "--quiet", "-m", "base")
    bare = root / "base.git"
    git(root, "clone", "--quiet", "--bare", str(work), str(bare))
    return bare, git(work, "rev-parse", "HEAD").strip()


def patchtool_verdict(bare: Path, commit: str, patch: Path, scratch: Path) -> tuple[str, str]:
    """("ok", tree id) or (the kind of refusal, "")."""
    reference = BaseRef("dev", "b", "demo", "1.0", commit, PypiSource("x", "0" * 64), patch.parent)
    series = PatchSeries(reference, (SeriesEntry(patch.name, 1),))
    tree = scratch / "patchtool" / "demo"
    tree.parent.mkdir()
    checkout_base(bare, tree, reference, "dev")
    judge = TreeJudge(Git(bare), commit, "base")
    try:
        loaded = load_series(series, PatchLimits(), None)
        apply_series(tree, loaded, judge, False, NullReporter())
    except UnsafeInputError:
        return "unsafe", ""
    except IntegrityError:
        return "corrupt", ""
    except ConflictError:
        return "conflict", ""
    return "ok", Git(tree).text("rev-parse", "HEAD^{tree}")


def git_result(bare: Path, patch: Path, scratch: Path) -> tuple[str, str, bool]:
    """Plain `git am` (git's own protections on): (outcome, tree id, safe on disk)."""
    root = scratch / "plain"
    root.mkdir()
    watched = scratch / "outside"
    watched.mkdir()
    tree = root / "demo"
    git(root, "clone", "--quiet", str(bare), str(tree))
    before = snapshot(watched)
    applied = subprocess.run(
        ["git", "-c", "core.protectHFS=true", "-c", "core.protectNTFS=true", "am", "--quiet",
         "--keep-cr", str(patch)], cwd=tree, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if applied.returncode != 0:
        outcome = "invalid-path" if "invalid path" in applied.stderr else "refused"
        return outcome, "", True
    safe = snapshot(watched) == before
    for folder, _, files in os.walk(tree):
        if ".git" in Path(folder).relative_to(tree).parts[:1]:
            continue
        for name in files + [d for d in os.listdir(folder) if os.path.islink(os.path.join(folder, d))]:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                resolved = os.path.realpath(path)
                inside = resolved == str(tree) or resolved.startswith(str(tree) + os.sep)
                in_git = resolved.startswith(str(tree / ".git"))
                safe = safe and inside and not in_git
    return "ok", git(tree, "rev-parse", "HEAD^{tree}").strip(), safe


@pytest.mark.slow
@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip
@given(data=patches())
def test_patchtool_lets_through_only_what_git_writes_safely(base: tuple[Path, str],
                                                            data: bytes) -> None:  # fmt: skip
    bare, commit = base
    with tempfile.TemporaryDirectory(prefix="patchtool-property-") as folder:
        scratch = Path(folder)
        patch = scratch / "generated.patch"
        patch.write_bytes(data)
        verdict, tree = patchtool_verdict(bare, commit, patch, scratch)
        outcome, git_tree, safe = git_result(bare, patch, scratch)
    if verdict == "ok":
        assert outcome == "ok" and safe, data.decode()
        assert tree == git_tree
    if outcome == "ok" and not safe:
        assert verdict == "unsafe", data.decode()
    if outcome == "invalid-path":
        assert verdict == "unsafe", data.decode()
