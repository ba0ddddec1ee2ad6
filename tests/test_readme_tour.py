"""The README's short tour, run: each command of its console block, in a fresh
folder laid out as the tour assumes (the repository's `patches/`, nothing else),
on the real vLLM 0.7.2 base. What the commands print is compared, line for line
and in order, with what the README shows, so that neither can drift from the
other: the README's block is read here, never copied."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import CLI_ENVIRONMENT, REPOSITORY, RealVllm

pytestmark = pytest.mark.slow  # it builds the C550 wheel

TOUR_HEADING = "## A short tour"
FIRST_RUN = "(first run only)"  # the cache the test uses holds the base already
WHEEL = Path("build/metax_C550/dist/vllm-0.7.2+maca-py3-none-any.whl")
STEP_MARK = "\x1estep "  # a line of its own between the commands' outputs


@dataclass(frozen=True)
class Step:
    command: str
    shown: list[str]


def tour_steps(readme: str) -> list[Step]:
    """The console block that follows the tour's heading: each `$ ` line a command,
    the lines up to the next one what it prints (blank lines and lines marked as
    first-run only left out)."""
    section = readme[readme.index(f"\n{TOUR_HEADING}\n") :]
    block = re.search(r"^```console\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert block is not None, f"README.md: no console block under {TOUR_HEADING!r}"
    steps: list[Step] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            steps.append(Step(line[2:], []))
        elif line and not line.endswith(FIRST_RUN):
            assert steps, f"README.md: the tour's block starts with output: {line!r}"
            steps[-1].shown.append(line)
    return steps


def filled(line: str, values: dict[str, str]) -> str:
    for placeholder, value in values.items():
        line = line.replace(placeholder, value)
    assert not re.search(r"<[a-z][a-z0-9 -]*>", line), (
        f"a placeholder the test does not know: {line!r}"
    )
    return line


def run_tour(steps: list[Step], root: Path, env: dict[str, str]) -> list[list[str]]:
    """Run the commands in one bash, as a user types them (cd and $? carry over),
    stdout and stderr in one stream as a terminal shows them; each command's lines."""
    script = ["__rc=0"]
    for number, step in enumerate(steps):
        script += [f"printf '{STEP_MARK}{number}\\n'", "(exit $__rc)", step.command, "__rc=$?"]
    completed = subprocess.run(
        ["bash", "--noprofile", "--norc", "-c", "\n".join(script)],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False,
    )  # fmt: skip
    output = completed.stdout.decode("utf-8", "replace")
    parts = output.split(STEP_MARK)
    assert parts[0] == "", output
    ran = []
    for number, part in enumerate(parts[1:]):
        head, _, body = part.partition("\n")
        assert head == str(number), output
        ran.append(body.splitlines())
    return ran


def test_the_readme_tour_prints_what_the_readme_shows(
    real_vllm: RealVllm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps = tour_steps((REPOSITORY / "README.md").read_text(encoding="utf-8"))
    assert [step.command.split()[:2] for step in steps if step.command.startswith("patchtool")] == [
        ["patchtool", "unpatch"], ["patchtool", "status"], ["patchtool", "patch"],
        ["patchtool", "unpatch"], ["patchtool", "build-wheel"],
    ]  # fmt: skip
    root = tmp_path / "repo"
    shutil.copytree(REPOSITORY / "patches", root / "patches")
    # `patchtool` on PATH is this checkout's, run by this interpreter (which the
    # build then uses, as it would the interpreter of an installed patchtool).
    bin_folder = tmp_path / "bin"
    bin_folder.mkdir()
    launcher = bin_folder / "patchtool"
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m patchtool "$@"\n')
    launcher.chmod(0o755)
    monkeypatch.delenv("MACA_PATH", raising=False)
    env = {
        **os.environ,
        **CLI_ENVIRONMENT,
        "PATH": f"{bin_folder}{os.pathsep}{os.environ['PATH']}",
        "PATCHTOOL_CACHE_DIR": str(real_vllm.cache),
        "PYTHONUNBUFFERED": "1",  # each line when it is printed, as in a terminal
    }

    ran = run_tour(steps, root, env)

    wheel = root / WHEEL
    values = {
        "<repo>": str(root),
        "<python>": sys.executable,
        "<python-version>": platform.python_version(),
        "<torch>": importlib.metadata.version("torch"),
        "<sha256>": hashlib.sha256(wheel.read_bytes()).hexdigest() if wheel.is_file() else "?",
    }
    shown = [[filled(line, values) for line in step.shown] for step in steps]
    assert list(zip([s.command for s in steps], ran, strict=True)) == list(
        zip([s.command for s in steps], shown, strict=True)
    )
