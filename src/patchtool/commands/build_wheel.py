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

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from patchtool.commands.jobs import DeviceJob
from patchtool.core import children
from patchtool.core.errors import BuildError, DirtyTreeError, UsageError
from patchtool.core.faults import kill_point
from patchtool.core.fsutil import (
    atomic_write,
    read_regular_file,
    remove_tree,
    sha256_of,
    temporary_folder,
)
from patchtool.core.gitops import Git
from patchtool.core.locks import device_locks
from patchtool.core.report import Reporter
from patchtool.store.model import DeviceConfig
from patchtool.store.series import parse_series
from patchtool.trees.in_progress import refuse_in_progress
from patchtool.trees.record import TreeRecord, find_tree, read_record
from patchtool.trees.staging import WHEEL_STAGE_PREFIX, recover_interrupted
from patchtool.trees.work import TreeWork, tree_work
from patchtool.wheel.buildenv import (
    FRONT_END,
    build_log_error,
    check_build_requirements,
    query_interpreter,
    read_head,
    requirement_names,
    torch_missing,
)
from patchtool.wheel.envsh import (
    CONVENTIONAL_ENV_SCRIPT,
    SourcedEnvironment,
    nothing_sourced,
    sandbox_environment,
    source_env_script,
)
from patchtool.wheel.provenance import add_provenance, provenance_record, verify_required

if TYPE_CHECKING:
    pass

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover - Python 3.10
    pass

WORKTREE_NAME = ".patchtool-worktree"
STATE_NAME = ".patchtool-last-build.json"


@dataclass(frozen=True, kw_only=True)
class WheelOptions(DeviceJob):
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
    """Build (or reuse) the wheel of the device's build tree, holding the device's
    locks (the store's shared)."""
    with device_locks(
        options.build_dir,
        options.store.root,
        options.device,
        reporter,
        writes_store=False,
        wait=options.wait,
    ):
        tree = find_tree(options.build_dir, options.device, options.given_dir)
        return _build_wheel(options, tree, reporter)


def _build_wheel(options: WheelOptions, tree: Path, reporter: Reporter) -> WheelResult:
    refuse_in_progress(tree.parent, tree, "build-wheel")
    device = options.store.device(options.device)
    record = read_record(tree)
    base = options.store.resolve_base(device.name, record.base_id)
    git = Git(tree)
    work = tree_work(git, base, record.base_commit, options.keyring)
    _refuse_incomplete(options, tree, record, work)

    device_dir = tree.parent
    recover_interrupted(device_dir, reporter)
    out_dir = (options.out_dir or device_dir / "dist").resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path = out_dir / f"{device.name}-build.log"
    target = options.target_device or device.build.target_device
    env_args = options.env_args if options.env_args is not None else device.build.env_args
    sourced = _source_env(tree, device, env_args, device_dir, reporter)

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
    provenance = provenance_record(
        device=device,
        base=base,
        series=parse_series(base),
        record=record,
        head=head,
        tree_state="dirty" if work else "public-only" if record.skipped_private else "exported",
        # A file of the tree, at a path device.toml names (links in the tree were judged).
        env_script=None
        if device.build.env_script is None
        else read_regular_file(
            tree / device.build.env_script,
            device.limits.tree_file_bytes,
            follow_symlinks=True,
        ),
        env_args=env_args,
        target=target,
        interpreter=interpreter,
    )
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
        raise torch_missing(options.python)
    reporter.step(f"python {interpreter.version} ({options.python}) with torch {interpreter.torch}")
    for note in check_build_requirements(
        build_requires, interpreter, skip, f"pyproject.toml of {head.commit[:12]}"
    ):
        reporter.info(note)
    scm_name = base.project.upper().replace("-", "_")
    build_env = {
        **sourced.environment,
        "VLLM_TARGET_DEVICE": target,
        "SOURCE_DATE_EPOCH": head.epoch,
        "PYTHONHASHSEED": "0",
        f"SETUPTOOLS_SCM_PRETEND_VERSION_FOR_{scm_name}": base.version,
        "SETUPTOOLS_SCM_PRETEND_VERSION": base.version,
    }
    worktree = _prepare_worktree(git, device_dir, head.commit)
    with temporary_folder(device_dir, WHEEL_STAGE_PREFIX) as stage:
        reporter.step(f"building the {target} wheel (log: {log_path})")
        status = _run_build(options.python, worktree, Path(stage), build_env, log_path)
        if status != 0:
            log_text = log_path.read_text("utf-8", "replace")
            raise build_log_error(log_text, log_path, status, build_requires, skip, options.python)
        built = sorted(Path(stage).glob("*.whl"))
        if len(built) != 1:
            raise BuildError(f"the build produced {len(built)} wheels in {stage}, expected 1")
        wheel = built[0]
        reporter.step("checking the wheel for the device's required files")
        verify_required(wheel, device.build.required_files)
        sha = add_provenance(wheel, provenance)
        kill_point("build-wheel:built")
        final = out_dir / wheel.name
        os.replace(wheel, final)
        kill_point("build-wheel:moved")
    _record_result(out_dir, device.name, final, sha, provenance, digest)
    return WheelResult(final, sha, provenance, False, log_path, sourced.changed)


def _refuse_incomplete(
    options: WheelOptions, tree: Path, record: TreeRecord, work: TreeWork
) -> None:
    """A wheel's provenance names the store's series: the tree must be exactly
    that series (unless --allow-dirty)."""
    if options.allow_dirty:
        return
    if work:
        raise DirtyTreeError(
            f"the build tree {tree} is not what the store describes:\n  {work.describe()}",
            hint="Export it (`patchtool patch`) so the wheel's provenance is true, "
            "or pass --allow-dirty to build the committed HEAD anyway.",
        )
    if record.skipped_private:
        raise DirtyTreeError(
            f"the build tree {tree} was made with --public-only: it lacks the private "
            f"patches {', '.join(record.skipped_private)}",
            hint="Make the tree with an identity that opens them (`patchtool unpatch --force "
            "--identity FILE`), or pass --allow-dirty to build the public part anyway (the "
            "provenance says which patches are missing).",
        )


def _source_env(
    tree: Path,
    device: DeviceConfig,
    env_args: tuple[str, ...],
    device_dir: Path,
    reporter: Reporter,
) -> SourcedEnvironment:
    """Source the tree's env.sh under a throw-away HOME and say what it changed."""
    home = device_dir / ".patchtool-home"
    remove_tree(home)
    sandbox = sandbox_environment(os.environ, home)
    if device.build.env_script is None:
        script = CONVENTIONAL_ENV_SCRIPT
        if env_args:
            raise UsageError(
                "--env-arg is an argument for the env script, and the device has none",
                hint=f'Name it in {device.path} (env-script = "{script}" under [build]), '
                "or leave out --env-arg.",
            )
        reporter.step(f"sourcing no env script: {device.path} names none (build.env-script)")
        if (tree / script).is_file():
            reporter.warn(
                f"the tree has {script}, which is not sourced: add "
                f'env-script = "{script}" under [build] in {device.path} to source it'
            )
        return nothing_sourced(sandbox)
    reporter.step(f"sourcing {device.build.env_script} {' '.join(env_args)}".rstrip())
    sourced = source_env_script(
        tree, device.build.env_script, env_args, sandbox, device.build.env_timeout
    )
    for key in sorted(sourced.changed):
        reporter.info(f"  env.sh set {key}={sourced.changed[key]}")
    for key in sourced.removed:
        reporter.info(f"  env.sh unset {key}")
    for line in sourced.stderr.strip().splitlines():
        reporter.warn(line if line.startswith("env.sh") else f"env.sh: {line}")
    return sourced


def _run_build(
    python: str, worktree: Path, stage: Path, environment: dict[str, str], log_path: Path
) -> int:
    """`python -m build --wheel --no-isolation` into `stage`, logged; its status.

    The build runs the tree's setup.py by design (build-wheel builds the tree the
    user chose) and takes env.sh's exports, PYTHONPATH included, so the interpreter
    is not isolated (-I). The caller's own PYTHON* variables never reach it (env.sh
    was sourced without them), and the front end starts in an empty folder, so its
    `-m build` finds no build.py of the tree or the working folder; the backend runs
    in the worktree, as PEP 517 says."""
    with log_path.open("wb") as log, children.empty_folder() as folder:
        completed = children.run(
            [
                python,
                "-m",
                "build",
                "--wheel",
                "--no-isolation",
                "--skip-dependency-check",
                "--outdir",
                str(stage),
                str(worktree),
            ],
            cwd=folder,
            env=environment,
            stdout=log,
            stderr=children.STDOUT,
            check=False,
        )
    return completed.returncode


def _record_result(
    out_dir: Path,
    device: str,
    wheel: Path,
    sha: str,
    provenance: dict[str, object],
    digest: str,
) -> None:
    """The provenance beside the wheel, and what the next run compares with."""
    beside = {**provenance, "wheel": wheel.name, "wheel_sha256": sha}
    atomic_write(
        out_dir / f"{wheel.name}.provenance.json",
        (json.dumps(beside, indent=2, sort_keys=True) + "\n").encode(),
    )
    atomic_write(
        out_dir / f".{device}{STATE_NAME}",
        json.dumps({"inputs": digest, "wheel": wheel.name, "sha256": sha}).encode(),
    )


def _prepare_worktree(git: Git, device_dir: Path, head: str) -> Path:
    """A worktree of the tree's HEAD with no leftovers from earlier builds: stale
    build/ folders or egg-info would otherwise leak into the wheel."""
    worktree = device_dir / WORKTREE_NAME
    if not _is_worktree_of(worktree, git):
        # Missing, or left pointing at a tree that unpatch has since replaced.
        remove_tree(worktree)
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


__all__ = ["SourcedEnvironment", "WheelOptions", "WheelResult", "build_wheel"]
