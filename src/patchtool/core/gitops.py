"""The one wrapper over git.

Every git call in patchtool goes through `Git.run`: argument lists, never shell
strings; the user's global and system git config are kept out (so that their
`apply.whitespace`, `diff.renames`, hooks path or identity cannot change what
patchtool writes), and git's stderr is kept and shown when a call fails.

The tool's own commits use `TOOL_IDENTITY`, passed by environment: nothing is
ever written into anyone's git config.

Every call starts through children.py, with the explicit working folder it is
given and the environment `isolated_environment` makes from
`children.environment()` (no PYTHON* variables, no shell start-up hooks, only
absolute PATH entries), so a `git` that a patch put into a build tree is never
the one that runs.

GitPython was measured for this role and left out: importing it costs about
0.25 s, a quarter of a whole warm `unpatch`, and every operation patchtool
needs is one git command.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from patchtool.core import children
from patchtool.core.errors import GitError, IntegrityError, NotFoundError

TOOL_NAME = "patchtool"
TOOL_EMAIL = "patchtool@localhost.invalid"

# Variables that would point git at another repository or change its
# behaviour behind our back; removed from the environment of every call.
_LEAKY_VARIABLES = (
    "GIT_DIR",
    "GIT_WORK_TREE",
    "GIT_INDEX_FILE",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_NAMESPACE",
    "GIT_CEILING_DIRECTORIES",
    "GIT_CONFIG",
    "GIT_CONFIG_PARAMETERS",
    "GIT_CONFIG_COUNT",
    "GIT_EXTERNAL_DIFF",
    "GIT_DIFF_OPTS",
    "GIT_PAGER",
    "GIT_COMMON_DIR",
    # Overrides protocol.allow from the environment: the allowed transports are pinned.
    "GIT_ALLOW_PROTOCOL",
    "GIT_PROTOCOL_FROM_USER",
)


def _without_leaky_variables() -> dict[str, str]:
    """This process's environment as a child may have it (children.py), less the
    variables that would point git at another repository or configuration."""
    return {k: v for k, v in children.environment().items() if k not in _LEAKY_VARIABLES}


def isolated_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = _without_leaky_variables()
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_EDITOR": "false",
            "GIT_SEQUENCE_EDITOR": "false",
            "LC_ALL": "C",
            "LANGUAGE": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


def tool_identity(date: str) -> dict[str, str]:
    """Author and committer for commits the tool makes itself, at a fixed date."""
    return {
        "GIT_AUTHOR_NAME": TOOL_NAME,
        "GIT_AUTHOR_EMAIL": TOOL_EMAIL,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": TOOL_NAME,
        "GIT_COMMITTER_EMAIL": TOOL_EMAIL,
        "GIT_COMMITTER_DATE": date,
    }


# The committer of the commits the tool makes while keeping their authors (rebase's
# picks, import's commits): fixed, so the same input gives the same commit ids.
TOOL_COMMITTER = {
    k: v for k, v in tool_identity("1970-01-01T00:00:00Z").items() if "COMMITTER" in k
}

# The transports a URL from a store file may use (store.GitUrl allows the same
# schemes): everything else, `ext::` and `fd::` above all, is never allowed.
ALLOWED_PROTOCOLS = ("https", "ssh", "git", "file")
PROTOCOL_CONFIG = (
    "-c",
    "protocol.allow=never",
    *(item for name in ALLOWED_PROTOCOLS for item in ("-c", f"protocol.{name}.allow=always")),
)

# Options pinned on every call, so output does not depend on git defaults
# that a repository-local config could change.
_PINNED_CONFIG = (
    "-c",
    "core.quotePath=true",
    "-c",
    "core.autocrlf=false",
    "-c",
    "core.safecrlf=false",
    "-c",
    "core.fileMode=true",
    "-c",
    "core.symlinks=true",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "diff.noprefix=false",
    "-c",
    "diff.mnemonicPrefix=false",
    "-c",
    "diff.relative=false",
    "-c",
    "diff.algorithm=myers",
    "-c",
    "diff.renames=true",
    "-c",
    "diff.context=3",
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "advice.detachedHead=false",
    "-c",
    "init.defaultBranch=main",
    "-c",
    "commit.gpgSign=false",
    "-c",
    "tag.gpgSign=false",
    "-c",
    "apply.whitespace=nowarn",
    "-c",
    "am.threeWay=false",
    "-c",
    "am.keepcr=true",
    # Refuse `.git` in every spelling that HFS+ and NTFS would fold to it, on
    # every call, not only on the file systems that need it: a store reviewed on
    # Linux is checked out on macOS and Windows too.
    "-c",
    "core.protectHFS=true",
    "-c",
    "core.protectNTFS=true",
    *PROTOCOL_CONFIG,
)


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "surrogateescape")


class Git:
    """git, run in one working directory with an isolated environment."""

    def __init__(self, cwd: Path, env: Mapping[str, str] | None = None) -> None:
        self.cwd = cwd
        self.env = isolated_environment(env)

    def run(
        self,
        *args: str,
        input: bytes | None = None,
        check: bool = True,
        env: Mapping[str, str] | None = None,
    ) -> GitResult:
        call_env = self.env if env is None else {**self.env, **env}
        try:
            # Inherits nothing of the user's git configuration (isolated_environment):
            # what patchtool writes must not depend on it.
            completed = children.run(
                ["git", *_PINNED_CONFIG, *args],
                cwd=self.cwd,
                env=call_env,
                input=input,
                capture_output=True,
                check=False,
            )
        except FileNotFoundError as error:
            if not self.cwd.is_dir():
                raise NotFoundError(f"folder {self.cwd} does not exist") from error
            raise NotFoundError(
                "git is not installed or not on PATH", hint="Install git 2.30 or newer."
            ) from error
        result = GitResult(
            completed.returncode,
            completed.stdout,
            completed.stderr.decode("utf-8", "replace"),
        )
        if check and result.returncode != 0:
            raise GitError(list(args), result.returncode, result.stderr)
        return result

    def records(self, *args: str, separator: bytes = b"\0", longest: int) -> Iterator[bytes]:
        """git's output read as it comes, one record (up to `separator`) at a time,
        for output that input decides the length of (`ls-tree -r`): the caller
        stops when it has seen enough, and git is ended then. A record longer than
        `longest` bytes ends the read with IntegrityError. GitError when git fails."""
        process = children.start(
            ["git", *_PINNED_CONFIG, *args],
            cwd=self.cwd,
            env=self.env,
            stdout=children.PIPE,
            # Read after stdout ends: the commands this serves write little to stderr.
            stderr=children.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        finished = False
        try:
            pending = b""
            while chunk := os.read(process.stdout.fileno(), 1 << 16):
                parts = (pending + chunk).split(separator)
                pending = parts.pop()
                if len(pending) > longest:
                    raise IntegrityError(
                        f"git {args[0]} gave a record of more than {longest} bytes"
                    )
                yield from parts
            if pending:
                yield pending
            finished = True
        finally:
            if not finished:
                process.kill()
            process.stdout.close()
            stderr = process.stderr.read().decode("utf-8", "replace")
            process.stderr.close()
            returncode = process.wait()
        if returncode != 0:
            raise GitError(list(args), returncode, stderr)

    def text(self, *args: str) -> str:
        return self.run(*args).text.strip()

    def lines(self, *args: str) -> list[str]:
        out = self.run(*args).text
        return [line for line in out.split("\n") if line]

    def rev_parse(self, rev: str) -> str | None:
        result = self.run("rev-parse", "--verify", "--quiet", rev + "^{commit}", check=False)
        return result.text.strip() if result.returncode == 0 else None

    def is_repository(self) -> bool:
        if not (self.cwd / ".git").exists():
            return False
        result = self.run("rev-parse", "--show-toplevel", check=False)
        return result.returncode == 0 and Path(result.text.strip()) == self.cwd.resolve()


def user_identity(cwd: Path) -> dict[str, str] | None:
    """The user's own name and email as their git config gives them (read only).

    Used when patchtool commits work on the user's behalf (`patch -m`): the
    commit is theirs, so it carries their identity, not the tool's.
    """
    names = {}
    for key, variable in (("user.name", "NAME"), ("user.email", "EMAIL")):
        for prefix in ("GIT_AUTHOR_", "GIT_COMMITTER_"):
            if prefix + variable in os.environ:
                names[prefix + variable] = os.environ[prefix + variable]
        # Reads the user's own git config (global and the tree's): that is the point.
        completed = children.run(
            ["git", "config", "--get", key],
            cwd=cwd,
            env=_without_leaky_variables(),
            capture_output=True,
            text=True,
            check=False,
        )
        value = completed.stdout.strip()
        if value:
            names.setdefault("GIT_AUTHOR_" + variable, value)
            names.setdefault("GIT_COMMITTER_" + variable, value)
    if not all(
        k in names
        for k in (
            "GIT_AUTHOR_NAME",
            "GIT_AUTHOR_EMAIL",
            "GIT_COMMITTER_NAME",
            "GIT_COMMITTER_EMAIL",
        )
    ):
        return None
    return names


def run_plain(args: Sequence[str], cwd: Path, timeout: float | None = None) -> GitResult:
    """A git call that must see the user's own configuration (e.g. remote URLs with
    credential helpers or proxies for `git fetch` from their mirror). The allowed
    transports and the `.git` spellings are still pinned: those are not the
    user's to widen for a URL that came from a store file. Past `timeout` seconds
    git is killed and `children.TimeoutExpired` raised."""
    # Keeps the user's git config (credential helpers, proxies, insteadOf for
    # their mirror); the environment is still children.environment()'s.
    completed = children.run(
        [
            "git",
            *PROTOCOL_CONFIG,
            "-c",
            "core.protectHFS=true",
            "-c",
            "core.protectNTFS=true",
            *args,
        ],
        cwd=cwd,
        capture_output=True,
        check=False,
        env={**_without_leaky_variables(), "GIT_TERMINAL_PROMPT": "0"},
        timeout=timeout,
    )
    result = GitResult(
        completed.returncode, completed.stdout, completed.stderr.decode("utf-8", "replace")
    )
    if result.returncode != 0:
        raise GitError(list(args), result.returncode, result.stderr)
    return result
