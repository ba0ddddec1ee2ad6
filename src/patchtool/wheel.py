"""`build-wheel`: the device's wheel from its build tree, verified and with provenance.

Steps: check the tree holds exactly its exported series (unless allowed), check
that torch imports (vLLM's setup.py needs it), source env.sh, then build with
the PEP 517 front end (`python -m build --no-isolation`) in a clean worktree of
the tree's HEAD, under a throw-away HOME and git config, with the version
pinned and SOURCE_DATE_EPOCH taken from the base commit. The same inputs give
byte-identical wheels; when nothing that feeds the build changed since the last
success, that wheel is reused.

The finished wheel is checked for every file device.toml requires, gets a
provenance record (inside, in its .dist-info, and beside it), and only then is
moved to the output folder. A failed build leaves nothing in the output folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from . import __version__
from .buildtree import WHEEL_STAGE_PREFIX, read_record, recover_interrupted
from .envsh import SourcedEnvironment, sandbox_environment, source_env_script
from .errors import BuildError, DirtyTreeError, NotFoundError
from .export import tree_work
from .faults import kill_point
from .fsutil import atomic_write
from .gitops import Git
from .report import Reporter
from .store import PypiSource, Store, parse_series, series_digest

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

    work = tree_work(git, base, record.base_commit)
    if work and not options.allow_dirty:
        raise DirtyTreeError(
            f"the build tree {options.tree} is not what the store describes:\n  {work.describe()}",
            hint="Export it (`patchtool patch`) so the wheel's provenance is true, "
            "or pass --allow-dirty to build the committed HEAD anyway.",
        )

    device_dir = options.tree.parent
    recover_interrupted(device_dir, reporter)
    out_dir = (options.out_dir or device_dir / "dist").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{device.name}-build.log"
    target = options.target_device or device.build.target_device
    env_args = options.env_args if options.env_args is not None else device.build.env_args

    python_version, torch_version = _interpreter_versions(options.python)

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

    head = git.text("rev-parse", "HEAD")
    head_tree = git.text("rev-parse", "HEAD^{tree}")
    epoch = git.text("log", "-1", "--format=%ct", record.base_commit)
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
            {"name": p.name, "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
            for p in series.paths()
        ],
        "tree_commit": head,
        "tree_state": "dirty" if work else "exported",
        "env_script": {
            "path": device.build.env_script,
            "sha256": hashlib.sha256(env_script_bytes).hexdigest(),
            "arguments": list(env_args),
        },
        "target_device": target,
        "source_date_epoch": int(epoch),
        "python": python_version,
        "torch": torch_version,
    }
    inputs = {
        "provenance": provenance,
        "tree": head_tree,
        "environment": sourced.changed,
        "python": options.python,
    }
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()

    reused = _reuse(out_dir, device.name, digest)
    if reused is not None:
        reporter.info(f"nothing that feeds the build changed; reusing {reused.name}")
        return WheelResult(reused, _sha256(reused), provenance, True, log_path, sourced.changed)

    if torch_version == "none":
        raise BuildError(_NO_TORCH.format(python=options.python), hint=_TORCH_HINT)
    reporter.step(f"python {python_version} ({options.python}) with torch {torch_version}")
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
    worktree = _prepare_worktree(git, device_dir, head)
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
            if "No module named 'torch'" in log_path.read_text("utf-8", "replace"):
                raise BuildError(
                    f"vLLM's setup.py could not import torch with {options.python} "
                    f"(see {log_path})",
                    hint=_TORCH_HINT,
                )
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
        add_provenance(wheel, provenance)
        kill_point("build-wheel:built")
        final = out_dir / wheel.name
        os.replace(wheel, final)
        kill_point("build-wheel:moved")
    sha = _sha256(final)
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

_VERSIONS_PROGRAM = """
import importlib.metadata, platform
try:
    torch = importlib.metadata.version("torch")
except importlib.metadata.PackageNotFoundError:
    torch = "none"
print(platform.python_version(), torch)
"""


def _interpreter_versions(python: str) -> tuple[str, str]:
    """Python and torch versions of the build interpreter, read from metadata (fast:
    importing torch takes seconds, which an unchanged rebuild should not pay)."""
    completed = subprocess.run(
        [python, "-c", _VERSIONS_PROGRAM],
        capture_output=True,
        text=True,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if completed.returncode != 0:
        raise BuildError(f"cannot run {python}: {completed.stderr.strip()}")
    python_version, torch_version = completed.stdout.strip().splitlines()[-1].split()[-2:]
    return python_version, torch_version


def _prepare_worktree(git: Git, device_dir: Path, head: str) -> Path:
    """A worktree of the tree's HEAD with no leftovers from earlier builds: stale
    build/ folders or egg-info would otherwise leak into the wheel."""
    worktree = device_dir / WORKTREE_NAME
    if not _is_worktree_of(worktree, git):
        # Missing, or left pointing at a tree that unpatch has since replaced.
        shutil.rmtree(worktree, ignore_errors=True)
        git.run("worktree", "prune")
        git.run("worktree", "add", "--quiet", "--detach", str(worktree), head)
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


def _reuse(out_dir: Path, device: str, digest: str) -> Path | None:
    state_path = out_dir / f".{device}{STATE_NAME}"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError):
        return None
    wheel = out_dir / str(state.get("wheel", ""))
    if state.get("inputs") != digest or not wheel.is_file():
        return None
    return wheel if _sha256(wheel) == state.get("sha256") else None


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


def add_provenance(wheel: Path, provenance: dict[str, object]) -> None:
    """Add the provenance file to the wheel's .dist-info and RECORD, keeping the
    order, timestamps and modes of every other entry (so the result stays
    reproducible)."""
    data = (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()
    with zipfile.ZipFile(wheel) as source:
        infos = source.infolist()
        contents = {info.filename: source.read(info) for info in infos}
    record_info = next((i for i in infos if i.filename.endswith(".dist-info/RECORD")), None)
    if record_info is None:
        raise BuildError(f"{wheel.name} has no .dist-info/RECORD")
    dist_info = record_info.filename.rsplit("/", 1)[0]
    name = f"{dist_info}/{PROVENANCE_NAME}"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    record = contents[record_info.filename].decode()
    lines = [line for line in record.splitlines() if line and not line.startswith(name + ",")]
    record_line = f"{record_info.filename},,"
    lines = [line for line in lines if line != record_line]
    lines += [f"{name},sha256={digest},{len(data)}", record_line]
    contents[record_info.filename] = ("\n".join(lines) + "\n").encode()
    new_info = zipfile.ZipInfo(name, date_time=record_info.date_time)
    new_info.external_attr = record_info.external_attr
    new_info.compress_type = zipfile.ZIP_DEFLATED
    temporary = wheel.with_suffix(".tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as target:
        for info in infos:
            if info.filename == name:
                continue
            if info is record_info:
                target.writestr(new_info, data)
            target.writestr(_copy_info(info), contents[info.filename])
    os.replace(temporary, wheel)


def _copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
    copy = zipfile.ZipInfo(info.filename, date_time=info.date_time)
    copy.external_attr = info.external_attr
    copy.compress_type = info.compress_type
    copy.create_system = info.create_system
    return copy


def read_provenance(wheel: Path) -> dict[str, object]:
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith(f".dist-info/{PROVENANCE_NAME}"):
                value: dict[str, object] = json.loads(archive.read(name))
                return value
    raise NotFoundError(f"{wheel} has no {PROVENANCE_NAME}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tail(path: Path) -> str:
    try:
        lines = path.read_text("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("  | " + line for line in lines[-LOG_TAIL_LINES:])


__all__ = ["SourcedEnvironment", "WheelOptions", "WheelResult", "build_wheel"]
