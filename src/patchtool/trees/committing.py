"""A series made commits without touching a work tree: the commits `git am`
makes of it, byte for byte, at the cost of git's patching alone.

Each mail is read with `git mailinfo` (as `git am` reads it: author, date,
subject, body), applied to an index of its own with `git apply --cached`, and
committed with `git commit-tree`: the message `git am` composes (subject, a
blank line, the body, through `git stripspace`), the author and date of the
mail, the committer `apply_series` uses with the author's date. A rebase that
needs a series' commits but not its files (a carry's from-series and target
series) saves the checkouts `git am` would need. The paths git reads are judged
before any patch is applied, the private patches' headers are checked against
their plaintexts, and the commits are judged after, as `apply_series` does.
A series this cannot take as it is (a patch that is no mail, or that does not
apply) gives None: the caller applies it with `apply_series`, whose error says
why.
"""

from __future__ import annotations

from pathlib import Path

from patchtool.core.fsutil import temporary_folder
from patchtool.core.gitops import Git, tool_identity
from patchtool.series.copies import check_copies
from patchtool.series.privacy import LoadedSeries, verify_description
from patchtool.series.safety import TreeJudge
from patchtool.trees.applying import judge_paths_first

_FIELDS = {"Author": "GIT_AUTHOR_NAME", "Email": "GIT_AUTHOR_EMAIL", "Date": "GIT_AUTHOR_DATE"}


def commit_series(
    tree: Path, start: str, loaded: LoadedSeries, judge: TreeJudge
) -> list[str] | None:
    """The series' commits on `start`, made in `tree`'s repository (no file of
    the tree is written); None when it must go through `git am`."""
    patches = loaded.patches
    if not all(p.data.startswith(b"From ") or p.private for p in patches):
        return None
    identity = tool_identity("1970-01-01T00:00:00Z")
    git = Git(tree, env=identity)
    for patch in patches:
        verify_description(git, patch)
    judge_paths_first(git, patches)
    check_copies(git, judge.entries, [(p.label, p.data) for p in patches], loaded.limits)
    git_dir = Path(git.text("rev-parse", "--absolute-git-dir"))
    commits: list[str] = []
    # Inside the tree's own .git: a private patch's plaintext passes through here.
    with temporary_folder(git_dir, "patchtool-commit-") as folder:
        indexed = Git(tree, env={**identity, "GIT_INDEX_FILE": str(folder / "index")})
        indexed.run("read-tree", start)
        parent = start
        for patch in patches:
            message, body, diff = folder / "message", folder / "body", folder / "diff"
            info = git.run("mailinfo", str(body), str(diff), input=patch.data).text
            fields = dict(line.split(": ", 1) for line in info.splitlines() if ": " in line)
            if (
                not diff.stat().st_size
                or indexed.run("apply", "--cached", str(diff), check=False).returncode
            ):
                return None
            message.write_bytes(
                fields.get("Subject", "").encode("utf-8") + b"\n\n" + body.read_bytes()
            )
            text = git.run("stripspace", input=message.read_bytes()).stdout
            env = {name: fields.get(key, "") for key, name in _FIELDS.items()}
            env["GIT_COMMITTER_DATE"] = env["GIT_AUTHOR_DATE"]
            tree_id = indexed.text("write-tree")
            parent = git.run("commit-tree", tree_id, "-p", parent, input=text, env=env).text.strip()
            commits.append(parent)
    judge.judge_commits(git, commits, [p.label for p in patches])
    return commits
