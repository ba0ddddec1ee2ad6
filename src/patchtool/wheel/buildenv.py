"""The build interpreter, as build-wheel needs it: what it has, what the tree's
`[build-system] requires` ask for, and what to say when they differ or the
build fails for want of a module.

`query_interpreter` asks the interpreter in one small stdlib-only subprocess
(in the build's own environment: env.sh may change PYTHONPATH) for its
version, torch, and the versions of the tree's build requirements.
`check_build_requirements` compares them with the requirements `read_head`
found in the tree's committed pyproject.toml: everything missing or out of
range is one error with the pip command that fixes it; torch, the device
vendor's own, is only reported. `build_log_error` turns a failed build's log
into the error to show.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchtool.core import children
from patchtool.core.errors import BuildError, quoted
from patchtool.core.gitops import Git
from patchtool.core.values import canonical_name

if TYPE_CHECKING:
    from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


_NO_TORCH = "vLLM's setup.py imports torch, but {python} has no torch installed"


_TORCH_HINT = (
    "Install the torch your device uses into this interpreter (the vendor's torch on a "
    "MetaX machine; on a CPU-only machine `pip install torch`), then retry."
)


# The PEP 517 front end: `python -m build` needs it in the build interpreter too.
FRONT_END = "build"


# What PEP 517 front ends assume for a tree without [build-system] (as `build` does).
_DEFAULT_BUILD_REQUIRES = ("setuptools>=40.8.0",)


# A PEP 508 requirement starts with its name; enough to ask for the installed version
# without importing packaging (15 ms) on an unchanged rebuild.
_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


# Run by the build interpreter, which may be another Python than patchtool's, so it
# uses the standard library only. It prints one JSON line: the PEP 508 marker
# environment (as packaging.markers.default_environment computes it) and the
# installed version, or null, of each distribution named on its command line.
#
# Versions come from metadata: importing torch takes seconds. Importing
# importlib.metadata alone takes 40 to 60 ms (an unchanged rebuild: 0.4 s), so
# the program first does what importlib.metadata.version does for the folders on
# sys.path (the first NAME-*.dist-info or NAME*.egg-info in sys.path order, its
# Version header) and imports it only for a name that search leaves open, or when
# sys.path holds something else (a zip archive, an .egg). `python -c` puts the
# working folder first on sys.path, where a stray json.py would be imported: it is
# an empty folder (children.empty_folder), and the entry is dropped all the same.
_INTERPRETER_PROGRAM = """
import sys
if sys.path and sys.path[0] == "":
    del sys.path[0]
import json, os, platform, re

def normalize(name):
    return re.sub(r"[-_.]+", "_", name).lower()

def metadata_files(names):
    wanted = {normalize(name): name for name in names}
    found = {}
    for entry in sys.path:
        if entry.lower().endswith(".egg") or os.path.isfile(entry):
            return {}
        try:
            children = os.listdir(entry)
        except OSError:
            continue
        for child in children:
            low = child.lower()
            if low.endswith((".dist-info", ".egg-info")):
                name = wanted.get(normalize(low.rpartition(".")[0].partition("-")[0]))
                if name is not None and name not in found:
                    path = os.path.join(entry, child)
                    if os.path.isdir(path):
                        inside = "METADATA" if low.endswith(".dist-info") else "PKG-INFO"
                        path = os.path.join(path, inside)
                    found[name] = path
    return found

def header_version(path):
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.strip():
                    return None
                if line[:8].lower() == "version:":
                    return line[8:].strip() or None
    except (OSError, UnicodeDecodeError):
        return None

def installed(name, files):
    version = header_version(files[name]) if name in files else None
    if version is None:
        import importlib.metadata
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return version

info = sys.implementation.version
implementation = f"{info.major}.{info.minor}.{info.micro}"
if info.releaselevel != "final":
    implementation += info.releaselevel[0] + str(info.serial)
files = metadata_files(sys.argv[1:])
print(json.dumps({
    "markers": {
        "implementation_name": sys.implementation.name,
        "implementation_version": implementation,
        "os_name": os.name,
        "platform_machine": platform.machine(),
        "platform_python_implementation": platform.python_implementation(),
        "platform_release": platform.release(),
        "platform_system": platform.system(),
        "platform_version": platform.version(),
        "python_full_version": platform.python_version(),
        "python_version": ".".join(platform.python_version_tuple()[:2]),
        "sys_platform": sys.platform,
    },
    "installed": {name: installed(name, files) for name in sys.argv[1:]},
}))
"""


@dataclass(frozen=True)
class BuildInterpreter:
    """What the build interpreter says about itself: its marker environment and
    the installed version (None: not installed) of each distribution asked for,
    by canonical name."""

    python: str
    markers: dict[str, str]
    installed: dict[str, str | None]

    @property
    def version(self) -> str:
        return self.markers["python_full_version"]

    @property
    def torch(self) -> str | None:
        return self.installed.get("torch")

    @property
    def build_tools(self) -> dict[str, str]:
        """The installed build requirements other than torch (recorded beside it)."""
        return {
            name: version
            for name, version in sorted(self.installed.items())
            if version is not None and name not in ("torch", "pip")
        }


def query_interpreter(
    python: str, names: Sequence[str], env: dict[str, str] | None = None
) -> BuildInterpreter:
    """Ask `python` for its marker environment and the versions of `names` (and of
    torch and pip), in one subprocess (about 30 ms). `env` is the build's own
    environment (env.sh's); without it, `children.environment()`."""
    asked = sorted({*names, "torch", "pip"})
    try:
        # Not isolated (-I): it must see what the build will, env.sh's PYTHONPATH
        # included. The caller's PYTHON* never reach it (env.sh ran without them),
        # and its working folder is empty, so nothing planted there is imported.
        with children.empty_folder() as folder:
            completed = children.run(
                [python, "-c", _INTERPRETER_PROGRAM, *asked],
                cwd=folder,
                env=children.environment() if env is None else env,
                capture_output=True,
                text=True,
                check=False,
            )
    except OSError as error:
        raise BuildError(f"cannot run the build interpreter {python}: {error}") from None
    try:
        # The last line: a sitecustomize may print before the program runs.
        report = json.loads(completed.stdout.strip().splitlines()[-1])
        markers = {str(key): str(value) for key, value in report["markers"].items()}
        versions = report["installed"]
        installed = {
            name: None if versions[name] is None else str(versions[name]) for name in asked
        }
        if "python_full_version" not in markers:
            raise KeyError("python_full_version")
    except (IndexError, KeyError, TypeError, AttributeError, ValueError):
        detail = (completed.stderr or completed.stdout).strip() or f"status {completed.returncode}"
        raise BuildError(
            f"cannot read the versions of the build interpreter {python}: {detail}"
        ) from None
    return BuildInterpreter(python, markers, installed)


def requirement_names(requires: Sequence[str], skip: Collection[str] = ()) -> list[str]:
    """The canonical project names of `requires` that are not in `skip`."""
    names = []
    for text in requires:
        match = _REQUIREMENT_NAME.match(text)
        if match and canonical_name(match.group(1)) not in skip:
            names.append(canonical_name(match.group(1)))
    return names


def check_build_requirements(
    requires: Sequence[str],
    interpreter: BuildInterpreter,
    skip: Collection[str],
    source: str,
) -> list[str]:
    """Compare the build's requirements (markers evaluated for the build
    interpreter) with what it has installed. Everything missing or out of range
    is one BuildError whose hint is the pip command that installs it; torch never
    is (the device's own torch is used). Returns lines to show: the entries the
    device skips, and a torch other than the tree's pin."""
    from packaging.requirements import InvalidRequirement, Requirement

    unmet: list[tuple[str, str]] = []  # (shown, pip argument)
    skipped: list[str] = []
    notes: list[str] = []
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement as error:
            raise BuildError(
                f"{source}: [build-system] requires holds {quoted(text)}, which is not a "
                f"requirement: {error}",
                hint="Fix the entry in the series that changes pyproject.toml.",
            ) from None
        if requirement.marker is not None and not requirement.marker.evaluate(
            dict(interpreter.markers)
        ):
            continue
        name = canonical_name(requirement.name)
        wanted = _pip_argument(requirement)
        if name in skip:
            skipped.append(wanted)
            continue
        found = interpreter.installed.get(name)
        if name == "torch":
            if found is not None and not _satisfies(requirement, found):
                notes.append(
                    f"torch {found} (the tree pins {wanted}; the device's own torch is used)"
                )
        elif found is None:
            unmet.append((f"{wanted} (missing)", wanted))
        elif not _satisfies(requirement, found):
            unmet.append((f"{wanted} (has {found})", wanted))
    if unmet:
        python = interpreter.python
        raise BuildError(
            f"the build needs packages that {python} lacks: "
            + ", ".join(shown for shown, _ in unmet),
            hint="install them into that interpreter, then retry: "
            + _pip_command(interpreter, [argument for _, argument in unmet]),
        )
    if skipped:
        notes.insert(
            0,
            "not checked, device.toml's [build] skip-build-requires lists them: "
            + ", ".join(skipped),
        )
    return notes


_MISSING_MODULE = re.compile(r"ModuleNotFoundError: No module named '([^']+)'")


def missing_module_error(
    log_text: str, requires: Sequence[str], skip: Collection[str], python: str
) -> BuildError | None:
    """The last `No module named ...` of a failed build's log as an error that
    names the module and, when a build requirement provides it, how to install it."""
    from packaging.requirements import InvalidRequirement, Requirement

    found = _MISSING_MODULE.findall(log_text)
    if not found:
        return None
    module = found[-1]
    message = f"the build could not import {module} with {python}"
    quoted = shlex.quote(python)
    top = module.split(".")[0].lower()
    for text in requires:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        name = canonical_name(requirement.name)
        if name.replace("-", "_") != top:
            continue
        if name == "torch":  # the device's own: never installed by a pip command of ours
            return BuildError(message, hint=_TORCH_HINT)
        command = f"{quoted} -m pip install {shlex.quote(_pip_argument(requirement))}"
        if name in skip:
            return BuildError(
                message,
                hint=f"device.toml's [build] skip-build-requires lists {name}, but the build "
                f"needs it: take it off that list, and install it: {command}",
            )
        return BuildError(message, hint=f"install it into that interpreter, then retry: {command}")
    return BuildError(
        message,
        hint=f"no build requirement of the tree provides it; install the package that does "
        f"(`{quoted} -m pip install PACKAGE`), then retry.",
    )


def _pip_argument(requirement: Requirement) -> str:
    """The requirement as pip takes it: name, extras, then version range or URL
    (its marker already holds)."""
    extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
    if requirement.url:
        return f"{requirement.name}{extras} @ {requirement.url}"
    return f"{requirement.name}{extras}{requirement.specifier}"


def _satisfies(requirement: Requirement, version: str) -> bool:
    from packaging.version import InvalidVersion

    try:
        return requirement.specifier.contains(version, prereleases=True)
    except InvalidVersion:
        return False


def _pip_command(interpreter: BuildInterpreter, arguments: Sequence[str]) -> str:
    python = shlex.quote(interpreter.python)
    command = f"{python} -m pip install " + " ".join(shlex.quote(a) for a in arguments)
    if interpreter.installed.get("pip") is None:
        return f"{python} -m ensurepip && {command}"
    return command


@dataclass(frozen=True)
class HeadFacts:
    commit: str
    tree: str
    epoch: str  # the base commit's committer time: SOURCE_DATE_EPOCH
    build_requires: tuple[str, ...]  # HEAD's pyproject.toml [build-system] requires


def read_head(git: Git, base_commit: str) -> HeadFacts:
    """HEAD's commit and tree, the base commit's time, and HEAD's build
    requirements, in one `git cat-file --batch`."""
    objects = _cat_file(git, ["HEAD", base_commit, "HEAD:pyproject.toml"])
    head, base, pyproject = objects
    if head is None or head[0] != "commit" or base is None or base[0] != "commit":
        raise BuildError(f"cannot read HEAD or the base commit {base_commit} of {git.cwd}")
    tree = next(
        line.split()[1]
        for line in head[2].decode("utf-8", "replace").splitlines()
        if line.startswith("tree ")
    )
    committer = next(
        line
        for line in base[2].decode("utf-8", "replace").splitlines()
        if line.startswith("committer ")
    )
    source = f"pyproject.toml of {head[1][:12]}"
    if pyproject is not None and pyproject[0] != "blob":
        raise BuildError(f"{source} is a {pyproject[0]}, not a file")
    return HeadFacts(
        commit=head[1],
        tree=tree,
        epoch=committer.split()[-2],
        build_requires=_build_requires(None if pyproject is None else pyproject[2], source),
    )


def _cat_file(git: Git, names: Sequence[str]) -> list[tuple[str, str, bytes] | None]:
    """(type, id, content) of each named object, None for one that is missing."""
    output = git.run("cat-file", "--batch", input="".join(f"{n}\n" for n in names).encode()).stdout
    objects: list[tuple[str, str, bytes] | None] = []
    position = 0
    for _ in names:
        end = output.index(b"\n", position)
        header = output[position:end].decode().split()
        if len(header) != 3:  # "<name> missing" or "<name> ambiguous"
            objects.append(None)
            position = end + 1
            continue
        size = int(header[2])
        objects.append((header[1], header[0], output[end + 1 : end + 1 + size]))
        position = end + 1 + size + 1
    return objects


def _build_requires(pyproject: bytes | None, source: str) -> tuple[str, ...]:
    if pyproject is None:
        return _DEFAULT_BUILD_REQUIRES
    try:
        data = tomllib.loads(pyproject.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise BuildError(f"{source} is not valid TOML: {error}") from None
    table = data.get("build-system")
    if table is None:
        return _DEFAULT_BUILD_REQUIRES
    requires = table.get("requires") if isinstance(table, dict) else None
    if not isinstance(requires, list) or not all(isinstance(item, str) for item in requires):
        raise BuildError(f"{source}: [build-system] requires must be a list of strings")
    return tuple(requires)


LOG_TAIL_LINES = 40


def _tail(path: Path) -> str:
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  | " + line for line in lines[-LOG_TAIL_LINES:])


def torch_missing(python: str) -> BuildError:
    return BuildError(_NO_TORCH.format(python=python), hint=_TORCH_HINT)


def build_log_error(
    log_text: str,
    log_path: Path,
    status: int,
    build_requires: Sequence[str],
    skip: Collection[str],
    python: str,
) -> BuildError:
    """Why the build failed, from its log: torch missing, another module missing
    (with the pip command when it is a build requirement), or the log's tail."""
    if "No module named 'torch'" in log_text:
        return BuildError(
            f"vLLM's setup.py could not import torch with {python} (see {log_path})",
            hint=_TORCH_HINT,
        )
    missing = missing_module_error(log_text, build_requires, skip, python)
    if missing is not None:
        return BuildError(f"{missing.message} (see {log_path})", hint=missing.hint)
    return BuildError(
        f"the wheel build failed with status {status}; last lines of "
        f"{log_path}:\n{_tail(log_path)}",
        hint="Read the log; no wheel was written to the output folder.",
    )
