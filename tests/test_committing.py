"""trees/committing.py makes the very commits `git am` makes (apply_series),
without writing a file of the tree: the same ids for a series with a CRLF
file, a binary file, a file's mode, a non-ASCII author, a message with
trailing blanks."""

from __future__ import annotations

from helpers import SyntheticUpstream, commit_all, git, snapshot

from patchtool.core.gitops import Git
from patchtool.core.report import NullReporter
from patchtool.series.privacy import load_series
from patchtool.series.safety import TreeJudge
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series
from patchtool.trees.applying import apply_series
from patchtool.trees.committing import commit_series


def test_the_commits_of_git_am_without_a_checkout(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    tree = upstream.tree
    (tree / "demo" / "windows.txt").write_bytes(b"line one\r\nline 2\r\n")
    commit_all(tree, "Change a CRLF file")
    (tree / "demo" / "data.bin").write_bytes(bytes(range(255, -1, -1)) * 4)
    (tree / "tools" / "run.sh").chmod(0o644)
    commit_all(tree, "Change a binary file and a mode")
    (tree / "README.md").write_text("# demo\n\nÜber: ein Test.\n")
    git(tree, "add", "--all")
    git(tree, "-c", "user.name=Zoë Ünal", "-c", "user.email=z@example.invalid", "commit",
        "--quiet", "--author", "Zoë Ünal <z@example.invalid>", "--cleanup=verbatim", "-m",
        "Rewrite the README  \n\n\nBecause.   \n\nUpstream-Status: Pending\n\n")  # fmt: skip
    exported = upstream.cli("patch", "--device-type", "devA", "--dir", str(upstream.build))
    assert exported.code == 0, exported.output

    store = Store(upstream.store)
    device = store.device("devA")
    base = store.resolve_base("devA", "1.0")
    loaded = load_series(parse_series(base, device.limits), device.limits, None)
    files = snapshot(tree)
    head = git(tree, "rev-parse", "HEAD").strip()
    judge = TreeJudge(Git(tree), base.commit, "base")
    made = commit_series(tree, base.commit, loaded, judge)
    assert made is not None and len(made) == 3
    assert snapshot(tree) == files and git(tree, "rev-parse", "HEAD").strip() == head
    git(tree, "checkout", "--quiet", "--detach", base.commit)
    apply_series(tree, loaded, judge, False, NullReporter())
    assert made == git(tree, "rev-list", "--reverse", f"{base.commit}..HEAD").split()

