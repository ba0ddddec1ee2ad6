"""Start-up: what a run imports, and that the lean way typer is loaded
(cli/typer_lean.py: rich only once help or a usage error is shown) prints the
same bytes as typer loaded whole. Speed itself is measured in benchmarks/; this
pins the module sets that make it."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import CLI_ENVIRONMENT, SyntheticUpstream

# A run that prints no help and no error loads none of these: rich renders help
# and usage errors (and progress, unless -q); the index client's http, TLS and
# email modules are for sdists not yet in the cache.
NOT_ON_THE_HOT_PATH = ("rich", "typer.rich_utils", "markdown_it", "pygments", "http.client",
                       "ssl", "email.parser", "urllib.request")  # fmt: skip

# Runs main() with the arguments given; at exit, prints which of the modules above
# and which commands (patchtool.commands.*) were loaded.
SHOW_MODULES = """
import atexit, sys
def show():
    found = sorted({m for m in sys.modules for p in PREFIXES if m == p or m.startswith(p + ".")})
    commands = sorted(m for m in sys.modules if m.startswith("patchtool.commands."))
    print(found, commands, sep="\\n", file=sys.stderr)
atexit.register(show)
from patchtool.cli.app import main
main(sys.argv[1:])
""".replace("PREFIXES", repr(NOT_ON_THE_HOT_PATH))

# The same main(), with typer imported whole (rich and all) first.
WHOLE_TYPER = "import typer, sys\nfrom patchtool.cli.app import main\nmain(sys.argv[1:])"


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          env={**os.environ, **CLI_ENVIRONMENT}, check=False)  # fmt: skip


def loaded(completed: subprocess.CompletedProcess[str]) -> tuple[str, str]:
    """(the modules of NOT_ON_THE_HOT_PATH, the commands) a run loaded, as printed."""
    *_, found, commands = completed.stderr.splitlines()
    return found, commands


def test_version_loads_neither_rich_nor_a_command() -> None:
    done = run_python(SHOW_MODULES, "--version")
    assert done.stdout == "patchtool 0.1.0\n"
    assert loaded(done) == ("[]", "[]")


def test_a_quiet_warm_unpatch_loads_neither_rich_nor_the_index_client(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0  # the sdist into the cache
    done = run_python(SHOW_MODULES, "-q", "--store", str(upstream.store), "unpatch", "-d",
                      "devA", "--dir", str(upstream.root / "second"))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert loaded(done) == ("[]", "['patchtool.commands.jobs', 'patchtool.commands.unpatch']")


@pytest.mark.parametrize(
    "args",
    [["--help"], [], ["import", "--help"], ["unpatch", "-h"], ["unpatch", "--bogus"],
     ["check", "-j", "0"], ["nosuchcommand"], ["import", "--flagscale"]],
)  # fmt: skip
def test_help_and_usage_errors_are_the_bytes_typer_prints_whole(args: list[str]) -> None:
    lean = run_python("import sys\nfrom patchtool.cli.app import main\nmain(sys.argv[1:])", *args)
    whole = run_python(WHOLE_TYPER, *args)
    assert (lean.returncode, lean.stdout, lean.stderr) == (
        whole.returncode, whole.stdout, whole.stderr)
    assert lean.stdout + lean.stderr  # something was shown


def test_every_module_takes_typer_from_typer_lean() -> None:
    """Else the first module to import typer itself would load rich with it."""
    import ast
    from pathlib import Path

    import patchtool

    found = []
    for path in sorted(Path(patchtool.__file__).parent.rglob("*.py")):
        if path.name == "typer_lean.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])  # fmt: skip
            found += [f"{path.name}:{node.lineno}" for name in names
                      if name == "typer" or name.startswith("typer.")]  # fmt: skip
    assert found == []
