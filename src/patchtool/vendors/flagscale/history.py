"""Who wrote a FlagScale patch file, and when: the commit of FlagScale's own git
history that last touched it, where the checkout has that history.

FlagScale's files record no author or date; its git history does. One `git
log` per backend folder walks the commits that touched it, newest first, and
the first commit that names a file is the one that last touched it. The
checkout is the user's, read with its own repository configuration but none
of the settings that would run a program for `git log` (signature checks) or
rewrite names (mailmap); a checkout git will not read (no repository, a
shallow clone without the commits, a folder git does not trust) simply has no
history here, and the patches say so.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchtool.core.gitops import Git
from patchtool.vendors.flagscale.model import TEXT_LIMIT
from patchtool.vendors.flagscale.sections import name_problem
from patchtool.vendors.flagscale.yamlvalues import text_problem

_SAFE = ("-c", "log.showSignature=false", "-c", "log.mailmap=false", "-c", "core.fsmonitor=false")


@dataclass(frozen=True)
class LastTouch:
    """The commit that last touched a file of the tree."""

    commit: str
    author: str  # "Name <email>"
    date: str  # ISO 8601, as git has it


class GitHistory:
    """FlagScale's history of the files under a checkout's hardware/ folder."""

    def __init__(self, checkout: Path | None) -> None:
        self.checkout = checkout
        self.available = checkout is not None and _is_repository(checkout)
        self._folders: dict[str, dict[str, LastTouch]] = {}

    def last_touch(self, folder: str, path: str) -> LastTouch | None:
        """The commit that last touched `path` (FlagScale-relative, under `folder`;
        both relative to the checkout, the folder that holds hardware/)."""
        if not self.available:
            return None
        if folder not in self._folders:
            self._folders[folder] = self._walk(folder)
        return self._folders[folder].get(path)

    def _walk(self, folder: str) -> dict[str, LastTouch]:
        assert self.checkout is not None
        result = Git(self.checkout).run(
            *_SAFE,
            "log",
            "--relative",
            "--no-renames",
            "--no-show-signature",
            "-z",
            "--format=%x01%H%x00%an%x00%ae%x00%aI",
            "--name-only",
            "--",
            folder,
            check=False,
        )
        found: dict[str, LastTouch] = {}
        if result.returncode != 0:
            return found
        for chunk in result.stdout.split(b"\x01")[1:]:
            fields = chunk.split(b"\0")
            if len(fields) < 4:
                continue
            commit, name, email, date = (f.decode("utf-8", "replace") for f in fields[:4])
            author = _author(name, email)
            if author is None:
                continue
            for raw in fields[4:]:
                path = raw.lstrip(b"\n").decode("utf-8", "surrogateescape")
                if path and path not in found and name_problem(path) is None:
                    found[path] = LastTouch(commit, author, date)
        return found


def _author(name: str, email: str) -> str | None:
    name = " ".join(name.split())[:TEXT_LIMIT]
    if (
        not email
        or text_problem(email)
        or any(c in email for c in "<> ")
        or len(email) > TEXT_LIMIT
    ):
        return None
    if not name or text_problem(name) or "<" in name or ">" in name:
        name = email.split("@", 1)[0]
    return f"{name} <{email}>"


def _is_repository(checkout: Path) -> bool:
    result = Git(checkout).run(*_SAFE, "rev-parse", "--is-inside-work-tree", check=False)
    return result.returncode == 0 and result.text.strip() == "true"
