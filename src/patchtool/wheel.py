"""`build-wheel`: the device's wheel from its build tree, verified and with provenance.

Steps: check the tree holds exactly its exported series (unless allowed), source
env.sh, ask the build interpreter (in one small subprocess) for its versions,
then build with the PEP 517 front end (`python -m build --no-isolation`) in a
clean worktree of the tree's HEAD, under a throw-away HOME and git config, with
the version pinned and SOURCE_DATE_EPOCH taken from the base commit. The same
inputs give byte-identical wheels; when nothing that feeds the build changed
since the last success, that wheel is reused.

`--no-isolation` builds with what the build interpreter already has, so before a
build starts the tree's own `[build-system] requires` are compared with it:
everything missing or out of range is one error with the pip command that fixes
it. torch is the exception: it is the device vendor's, so it is never put in a
pip command, and a torch other than the tree's pin is only reported. Entries the
device's build never uses (cmake and ninja when nothing is compiled) are listed
in device.toml (`[build] skip-build-requires`).

The finished wheel is checked for every file device.toml requires, gets a
provenance record (inside, in its .dist-info, and beside it), and only then is
moved to the output folder. A failed build leaves nothing in the output folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from . import __version__
from .envsh import SourcedEnvironment, sandbox_environment, source_env_script
from .errors import BuildError, DirtyTreeError, NotFoundError
from .faults import kill_point
from .fsutil import atomic_write, sha256_of
from .gitops import Git
from .privacy import Keyring
from .report import Reporter
from .store import PypiSource, Store, parse_series, series_digest
from .tree import WHEEL_STAGE_PREFIX, read_record, recover_interrupted, tree_work

if TYPE_CHECKING:
    from packaging.requirements import Requirement

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

PROVENANCE_NAME = "patchtool-provenance.json"
WORKTREE_NAME = ".patchtool-worktree"
STATE_NAME = ".patchtool-last-build.json"
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class WheelOptions:
    store: Store
    build_dir: Path
    device: str
    tree: Path
    out_dir: Path | None = None
    target_device: str | None = None
    env_args: tuple[str, ...] | None = None
    allow_dirty: bool = False
    keyring: Keyring | None = None  # to recognise private patches the tree's record does not know
    python: str = sys.executable


@dataclass
class WheelResult:
    wheel: Path
    sha256: str
    provenance: dict[str, object]
    reused: bool
    log: Path
    env_changed: dict[str, str] = field(default_factory=dict)


def build_wheel(options: WheelOptions, reporter: Reporter) -> WheelResult:
    """Build (or reuse) the device's wheel (the caller holds the device lock)."""
    device = options.store.device(options.device)
    record = read_record(options.tree)
    base = options.store.resolve_base(device.name, record.base_id)
    series = parse_series(base)
    git = Git(options.tree)

    work = tree_work(git, base, record.base_commit, options.keyring)
    if work and not options.allow_dirty:
        raise DirtyTreeError(
            f"the build tree {options.tree} is not what the store describes:\n  {work.describe()}",
            hint="Export it (`patchtool patch`) so the wheel's provenance is true, "
            "or pass --allow-dirty to build the committed HEAD anyway.",
        )
    if record.skipped_private and not options.allow_dirty:
        raise DirtyTreeError(
            f"the build tree {options.tree} was made with --public-only: it lacks the private "
            f"patches {', '.join(record.skipped_private)}",
            hint="Make the tree with an identity that opens them (`patchtool unpatch --force "
            "--identity FILE`), or pass --allow-dirty to build the public part anyway (the "
            "provenance says which patches are missing).",
        )

    device_dir = options.tree.parent
    recover_interrupted(device_dir, reporter)
    out_dir = (options.out_dir or device_dir / "dist").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{device.name}-build.log"
    target = options.target_device or device.build.target_device
    env_args = options.env_args if options.env_args is not None else device.build.env_args

    home = device_dir / ".patchtool-home"
    shutil.rmtree(home, ignore_errors=True)
    sandbox = sandbox_environment(os.environ, home)
    reporter.step(f"sourcing {device.build.env_script} {' '.join(env_args)}".rstrip())
    sourced = source_env_script(
        options.tree, device.build.env_script, env_args, sandbox, device.build.env_timeout
    )
    for key in sorted(sourced.changed):
        reporter.info(f"  env.sh set {key}={sourced.changed[key]}")
    for key in sourced.removed:
        reporter.info(f"  env.sh unset {key}")
    for line in sourced.stderr.strip().splitlines():
        reporter.warn(line if line.startswith("env.sh") else f"env.sh: {line}")

    head = read_head(git, record.base_commit)
    build_requires = list(head.build_requires)
    if FRONT_END not in requirement_names(build_requires):
        build_requires.append(FRONT_END)
    # The device's list holds for the device's target only: another target may compile.
    skip = device.build.skip_build_requires if target == device.build.target_device else ()
    # Asked in the build's own environment: env.sh may change PYTHONPATH.
    interpreter = query_interpreter(
        options.python, requirement_names(build_requires, skip), sourced.environment
    )
    epoch = head.epoch
    env_script_bytes = (options.tree / device.build.env_script).read_bytes()
    provenance: dict[str, object] = {
        "tool": {"name": "patchtool", "version": __version__},
        "device": device.name,
        "upstream": {
            "project": base.project,
            "version": base.version,
            "source": base.source.kind,
            **(
                {"filename": base.source.filename, "sha256": base.source.sha256}
                if isinstance(base.source, PypiSource)
                else {"url": base.source.url}
            ),
        },
        "base_commit": base.commit,
        "series_sha256": series_digest(series),
        "patches": [
            _provenance_entry(base.path / e.name, e.private, e.name in record.skipped_private)
            for e in series.entries
        ],
        "tree_commit": head.commit,
        "tree_state": "dirty" if work else "public-only" if record.skipped_private else "exported",
        "env_script": {
            "path": device.build.env_script,
            "sha256": hashlib.sha256(env_script_bytes).hexdigest(),
            "arguments": list(env_args),
        },
        "target_device": target,
        "source_date_epoch": int(epoch),
        "python": interpreter.version,
        "torch": interpreter.torch or "none",
        # setuptools and the rest write parts of the wheel (WHEEL's Generator line).
        "build_requires": interpreter.build_tools,
    }
    inputs = {
        "provenance": provenance,
        "tree": head.tree,
        "environment": sourced.changed,
        "python": options.python,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()

    reused = _reuse(out_dir, device.name, digest)
    if reused is not None:
        reused_wheel, reused_sha = reused
        reporter.info(f"nothing that feeds the build changed; reusing {reused_wheel.name}")
        return WheelResult(reused_wheel, reused_sha, provenance, True, log_path, sourced.changed)

    if interpreter.torch is None:
        raise BuildError(_NO_TORCH.format(python=options.python), hint=_TORCH_HINT)
    reporter.step(f"python {interpreter.version} ({options.python}) with torch {interpreter.torch}")
    for note in check_build_requirements(
        build_requires, interpreter, skip, f"pyproject.toml of {head.commit[:12]}"
    ):
        reporter.info(note)
    scm_name = base.project.upper().replace("-", "_")
    build_env = dict(sourced.environment)
    build_env.update(
        {
            "VLLM_TARGET_DEVICE": target,
            "SOURCE_DATE_EPOCH": epoch,
            "PYTHONHASHSEED": "0",
            f"SETUPTOOLS_SCM_PRETEND_VERSION_FOR_{scm_name}": base.version,
            "SETUPTOOLS_SCM_PRETEND_VERSION": base.version,
        }
    )
    worktree = _prepare_worktree(git, device_dir, head.commit)
    with tempfile.TemporaryDirectory(prefix=WHEEL_STAGE_PREFIX, dir=device_dir) as staging:
        reporter.step(f"building the {target} wheel (log: {log_path})")
        with log_path.open("wb") as log:
            completed = subprocess.run(
                [
                    options.python,
                    "-m",
                    "build",
                    "--wheel",
                    "--no-isolation",
                    "--skip-dependency-check",
                    "--outdir",
                    staging,
                    str(worktree),
                ],
                cwd=worktree,
                env=build_env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        if completed.returncode != 0:
            log_text = log_path.read_text("utf-8", "replace")
            if "No module named 'torch'" in log_text:
                raise BuildError(
                    f"vLLM's setup.py could not import torch with {options.python} "
                    f"(see {log_path})",
                    hint=_TORCH_HINT,
                )
            missing = missing_module_error(log_text, build_requires, skip, options.python)
            if missing is not None:
                raise BuildError(f"{missing.message} (see {log_path})", hint=missing.hint)
            raise BuildError(
                f"the wheel build failed with status {completed.returncode}; last lines of "
                f"{log_path}:\n{_tail(log_path)}",
                hint="Read the log; no wheel was written to the output folder.",
            )
        built = sorted(Path(staging).glob("*.whl"))
        if len(built) != 1:
            raise BuildError(f"the build produced {len(built)} wheels in {staging}, expected 1")
        wheel = built[0]
        reporter.step("checking the wheel for the device's required files")
        verify_required(wheel, device.build.required_files)
        sha = add_provenance(wheel, provenance)
        kill_point("build-wheel:built")
        final = out_dir / wheel.name
        os.replace(wheel, final)
        kill_point("build-wheel:moved")
    atomic_write(
        out_dir / f"{final.name}.provenance.json",
        (
            json.dumps(
                {**provenance, "wheel": final.name, "wheel_sha256": sha}, indent=2, sort_keys=True
            )
            + "\n"
        ).encode(),
    )
    atomic_write(
        out_dir / f".{device.name}{STATE_NAME}",
        json.dumps({"inputs": digest, "wheel": final.name, "sha256": sha}).encode(),
    )
    return WheelResult(final, sha, provenance, False, log_path, sourced.changed)


_NO_TORCH = "vLLM's setup.py imports torch, but {python} has no torch installed"
_TORCH_HINT = (
    "Install the torch your device uses into this interpreter (the vendor's torch on a "
    "MetaX machine; on a CPU-only machine `pip install torch`), then retry."
)

# --------------------------------------------------------------------------- the build interpreter

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
# working folder first on sys.path, where a stray json.py would be imported.
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
    torch and pip), in one subprocess (about 30 ms)."""
    asked = sorted({*names, "torch", "pip"})
    try:
        completed = subprocess.run(
            [python, "-c", _INTERPRETER_PROGRAM, *asked],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            env=env,
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


def canonical_name(name: str) -> str:
    """PEP 503: `Setuptools_SCM` and `setuptools-scm` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


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
                f"{source}: [build-system] requires holds {text!r}, which is not a "
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


# --------------------------------------------------------------------------- the tree's HEAD


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


# --------------------------------------------------------------------------- worktree and wheel


def _prepare_worktree(git: Git, device_dir: Path, head: str) -> Path:
    """A worktree of the tree's HEAD with no leftovers from earlier builds: stale
    build/ folders or egg-info would otherwise leak into the wheel."""
    worktree = device_dir / WORKTREE_NAME
    if not _is_worktree_of(worktree, git):
        # Missing, or left pointing at a tree that unpatch has since replaced.
        shutil.rmtree(worktree, ignore_errors=True)
        git.run("worktree", "prune")
        git.run("worktree", "add", "--quiet", "--detach", str(worktree), head)
        # Just checked out: clean, at HEAD. A checkout now would re-read every file
        # (written in the same second as the index), about 0.1 s for vLLM.
        return worktree
    wt = Git(worktree)
    wt.run("checkout", "--quiet", "--detach", "--force", head)
    wt.run("clean", "-ffdxq")
    return worktree


def _is_worktree_of(worktree: Path, git: Git) -> bool:
    if not (worktree / ".git").is_file():
        return False
    result = Git(worktree).run("rev-parse", "--git-common-dir", check=False)
    if result.returncode != 0:
        return False
    common = (worktree / result.text.strip()).resolve()
    return common == (git.cwd / ".git").resolve()


def _reuse(out_dir: Path, device: str, digest: str) -> tuple[Path, str] | None:
    """The last wheel and its sha256, when it was built from these inputs and is intact."""
    state_path = out_dir / f".{device}{STATE_NAME}"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return None
    wheel = out_dir / str(state.get("wheel", ""))
    if state.get("inputs") != digest or not wheel.is_file():
        return None
    sha = sha256_of(wheel)
    return (wheel, sha) if sha == state.get("sha256") else None


def verify_required(wheel: Path, required: tuple[str, ...]) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [path for path in required if path not in names]
    if missing:
        raise BuildError(
            f"the wheel {wheel.name} lacks file(s) that device.toml requires: "
            + ", ".join(missing),
            hint="Check the series adds them and that setup.py ships them as package data; "
            "no wheel was written to the output folder.",
        )


def _provenance_entry(path: Path, private: bool, left_out: bool) -> dict[str, object]:
    """A patch as the provenance names it: a private one by the hash of its
    stored (encrypted) file only, neither its name nor its subject."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not private:
        return {"name": path.name, "sha256": digest}
    return {"private": True, "sha256": digest, **({"applied": False} if left_out else {})}


def add_provenance(wheel: Path, provenance: dict[str, object]) -> str:
    """Add the provenance file to the wheel's .dist-info, just before its RECORD,
    and its line to RECORD; return the new wheel's sha256.

    Every other member is copied as it is stored, compressed bytes and headers
    included, so the result depends on nothing but the wheel and the provenance
    (reproducible) and costs a file copy: zipfile can only write members it
    compresses itself, which took 0.3 s for the 2 MB vLLM wheel. Archives that
    need ZIP64 (a member or the wheel over 2 GiB) are refused."""
    data = (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()
    with zipfile.ZipFile(wheel) as source:
        infos = source.infolist()
        record_info = next((i for i in infos if i.filename.endswith(".dist-info/RECORD")), None)
        if record_info is None:
            raise BuildError(f"{wheel.name} has no .dist-info/RECORD")
        record = source.read(record_info).decode()
        comment = source.comment
    dist_info = record_info.filename.rsplit("/", 1)[0]
    name = f"{dist_info}/{PROVENANCE_NAME}"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    lines = [line for line in record.splitlines() if line and not line.startswith(name + ",")]
    record_line = f"{record_info.filename},,"
    lines = [line for line in lines if line != record_line]
    lines += [f"{name},sha256={digest},{len(data)}", record_line]
    new_record = ("\n".join(lines) + "\n").encode()

    temporary = wheel.with_suffix(".tmp")
    written: list[tuple[zipfile.ZipInfo, int]] = []  # central directory: entry, offset
    with wheel.open("rb") as raw, temporary.open("wb") as handle:
        target = _HashingWriter(handle)
        for info in infos:
            if info.filename == name:
                continue
            if info is record_info:
                written.append(_write_member(target, name, data, record_info))
                written.append(_write_member(target, info.filename, new_record, record_info))
            else:
                written.append(_copy_member(raw, target, info, wheel))
        _write_central_directory(target, written, comment, wheel)
    os.replace(temporary, wheel)
    return target.digest.hexdigest()


# zipfile's own layouts (APPNOTE.TXT 4.3.7, 4.3.12, 4.3.16), which it does not export.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")
_END_RECORD = struct.Struct("<4s4H2LH")
_DATA_DESCRIPTOR_FLAG = 0x08
_UTF8_NAME_FLAG = 0x800
_ZIP32_LIMIT = (1 << 31) - 1  # past this zipfile writes ZIP64 records
_ENTRY_LIMIT = 0xFFFF


class _HashingWriter:
    """A file being written, with its sha256 and position kept on the way."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.position = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.position += len(data)


def _too_large(wheel: Path) -> BuildError:
    return BuildError(
        f"{wheel.name} needs ZIP64 (a member or the wheel is over 2 GiB, or it holds "
        f"{_ENTRY_LIMIT} files or more), which patchtool does not write"
    )


def _copy_member(
    raw: BinaryIO, target: _HashingWriter, info: zipfile.ZipInfo, wheel: Path
) -> tuple[zipfile.ZipInfo, int]:
    """Copy one member's local header, stored data and data descriptor unchanged."""
    if max(info.header_offset, info.compress_size, info.file_size) > _ZIP32_LIMIT:
        raise _too_large(wheel)
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise BuildError(f"{wheel.name}: no local header for {info.filename}")
    *_, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    length = _LOCAL_HEADER.size + name_length + extra_length + info.compress_size
    if info.flag_bits & _DATA_DESCRIPTOR_FLAG:
        raw.seek(info.header_offset + length)
        length += 16 if raw.read(4) == b"PK\x07\x08" else 12
    raw.seek(info.header_offset)
    offset = target.position
    remaining = length
    while remaining:
        block = raw.read(min(remaining, 1 << 20))
        if not block:
            raise BuildError(f"{wheel.name} ends inside {info.filename}")
        target.write(block)
        remaining -= len(block)
    return info, offset


def _write_member(
    target: _HashingWriter, name: str, data: bytes, like: zipfile.ZipInfo
) -> tuple[zipfile.ZipInfo, int]:
    """A new deflated member with the date, mode and system of `like`, written as
    zipfile.writestr writes it."""
    info = zipfile.ZipInfo(name, date_time=like.date_time)
    if not name.isascii():
        info.flag_bits |= _UTF8_NAME_FLAG
    info.external_attr = like.external_attr
    info.create_system = like.create_system
    info.compress_type = zipfile.ZIP_DEFLATED
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    compressed = compressor.compress(data) + compressor.flush()
    info.CRC = zlib.crc32(data)
    info.file_size = len(data)
    info.compress_size = len(compressed)
    offset = target.position
    target.write(info.FileHeader(zip64=False))
    target.write(compressed)
    return info, offset


def _write_central_directory(
    target: _HashingWriter,
    entries: Sequence[tuple[zipfile.ZipInfo, int]],
    comment: bytes,
    wheel: Path,
) -> None:
    start = target.position
    if len(entries) >= _ENTRY_LIMIT or start > _ZIP32_LIMIT:
        raise _too_large(wheel)
    for info, offset in entries:
        # The bytes the local header holds: zipfile decoded them by this flag.
        utf8 = bool(info.flag_bits & _UTF8_NAME_FLAG)
        filename = info.orig_filename.encode("utf-8" if utf8 else "cp437")
        year, month, day, hour, minute, second = info.date_time
        target.write(
            _CENTRAL_HEADER.pack(
                b"PK\x01\x02",
                info.create_version,
                info.create_system,
                info.extract_version,
                info.reserved,
                info.flag_bits,
                info.compress_type,
                hour << 11 | minute << 5 | second // 2,
                (year - 1980) << 9 | month << 5 | day,
                info.CRC,
                info.compress_size,
                info.file_size,
                len(filename),
                len(info.extra),
                len(info.comment),
                0,
                info.internal_attr,
                info.external_attr,
                offset,
            )
            + filename
            + info.extra
            + info.comment
        )
    size = target.position - start
    target.write(
        _END_RECORD.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), size, start, len(comment))
        + comment
    )


def read_provenance(wheel: Path) -> dict[str, object]:
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith(f".dist-info/{PROVENANCE_NAME}"):
                value: dict[str, object] = json.loads(archive.read(name))
                return value
    raise NotFoundError(f"{wheel} has no {PROVENANCE_NAME}")


def _tail(path: Path) -> str:
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  | " + line for line in lines[-LOG_TAIL_LINES:])


__all__ = ["SourcedEnvironment", "WheelOptions", "WheelResult", "build_wheel"]
