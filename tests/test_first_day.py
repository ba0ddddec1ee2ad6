"""A newcomer's first day: `pip install <checkout>` (no extras), then `unpatch` and
`build-wheel` work; and the check that stands behind it, which compares the
tree's [build-system] requires with what the build interpreter has before a
`--no-isolation` build starts."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import REPOSITORY, CliResult, RealVllm, SyntheticUpstream, commit_all
from packaging.markers import default_environment
from packaging.requirements import Requirement

from patchtool.core.errors import BuildError
from patchtool.core.values import canonical_name
from patchtool.wheel.buildenv import (
    BuildInterpreter,
    check_build_requirements,
    missing_module_error,
    query_interpreter,
)
from patchtool.wheel.provenance import add_provenance

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# vLLM 0.7.2's and 0.7.3's [build-system] requires, as written (0.8.5 pins torch 2.6.0).
VLLM_REQUIRES = ["cmake>=3.26", "ninja", "packaging", "setuptools>=61", "setuptools-scm>=8.0",
                 "torch == 2.5.1", "wheel", "jinja2", "build"]  # fmt: skip
C550_SKIP = ("cmake", "ninja")
VENDOR_PYTHON = "/opt/vendor/bin/python3"
COMPLETE = {"packaging": "24.1", "setuptools": "75.1.0", "setuptools-scm": "8.1.0",
            "torch": "2.5.1", "wheel": "0.44.0", "jinja2": "3.1.4", "build": "1.2.2",
            "pip": "24.2", "cmake": None, "ninja": None}  # fmt: skip
SKIPPED_NOTE = "not checked, device.toml's [build] skip-build-requires lists them: cmake>=3.26, ninja"


def interpreter(python: str = VENDOR_PYTHON, **versions: str | None) -> BuildInterpreter:
    installed = dict(COMPLETE)
    installed.update({canonical_name(name): version for name, version in versions.items()})
    return BuildInterpreter(python, dict(default_environment()), installed)


def check(build: BuildInterpreter, requires: list[str] = VLLM_REQUIRES,
          skip: tuple[str, ...] = C550_SKIP) -> list[str]:
    return check_build_requirements(requires, build, skip, "pyproject.toml of 2c0f522dfe62")


# --------------------------------------------------------------------------- the comparison

def test_missing_and_too_old_requirements_are_one_error_with_the_pip_command() -> None:
    build = interpreter(setuptools="59.6.0", setuptools_scm=None, wheel=None)
    with pytest.raises(BuildError) as caught:
        check(build)
    assert caught.value.message == (
        "the build needs packages that /opt/vendor/bin/python3 lacks: setuptools>=61 (has 59.6.0), "
        "setuptools-scm>=8.0 (missing), wheel (missing)"
    )
    assert caught.value.hint == (
        "install them into that interpreter, then retry: "
        "/opt/vendor/bin/python3 -m pip install 'setuptools>=61' 'setuptools-scm>=8.0' wheel"
    )
    assert caught.value.exit_code == 8


def test_the_front_end_itself_is_checked() -> None:
    with pytest.raises(BuildError) as caught:
        check(interpreter(build=None))
    assert caught.value.message.endswith("lacks: build (missing)")


def test_skip_list_is_honoured_and_shown() -> None:
    assert check(interpreter()) == [SKIPPED_NOTE]
    with pytest.raises(BuildError) as caught:
        check(interpreter(), skip=())
    assert caught.value.message == (
        "the build needs packages that /opt/vendor/bin/python3 lacks: cmake>=3.26 (missing), "
        "ninja (missing)"
    )


def test_torch_other_than_the_pin_is_a_note_and_never_installed() -> None:
    assert check(interpreter(torch="2.13.0+cpu")) == [
        SKIPPED_NOTE,
        "torch 2.13.0+cpu (the tree pins torch==2.5.1; the device's own torch is used)",
    ]
    assert check(interpreter(torch="2.5.1+maca2.29.0.14")) == [SKIPPED_NOTE]  # a local build
    # torch missing is build_wheel's own error (its hint names the vendor's torch); a
    # pip command never carries it.
    with pytest.raises(BuildError) as caught:
        check(interpreter(torch=None, wheel=None))
    assert "torch" not in (caught.value.hint or "")
    assert (caught.value.hint or "").endswith("-m pip install wheel")


def test_markers_are_evaluated_for_the_build_interpreter() -> None:
    build = interpreter(tomli=None, pywin32=None)
    requires = ["tomli>=1; python_version < '3.0'", "pywin32; sys_platform == 'win32'", "wheel"]
    assert check(build, requires) == []


def test_a_prerelease_that_is_new_enough_counts() -> None:
    assert check(interpreter(setuptools_scm="9.0.0rc1")) == [SKIPPED_NOTE]


def test_no_pip_and_a_path_with_a_space_give_a_command_that_still_works() -> None:
    build = interpreter("/opt/My Python/bin/python", pip=None, wheel=None)
    with pytest.raises(BuildError) as caught:
        check(build)
    assert caught.value.hint == (
        "install them into that interpreter, then retry: '/opt/My Python/bin/python' -m ensurepip"
        " && '/opt/My Python/bin/python' -m pip install wheel"
    )


def test_invalid_requirement_names_the_file() -> None:
    with pytest.raises(BuildError) as caught:
        check(interpreter(), ["setuptools>=>61"])
    assert caught.value.message.startswith(
        "pyproject.toml of 2c0f522dfe62: [build-system] requires holds 'setuptools>=>61', "
        "which is not a requirement: "
    )


def test_module_missing_from_the_build_log_is_named_with_its_install_command() -> None:
    log = "Traceback (most recent call last):\n  ...\nModuleNotFoundError: No module named 'setuptools_scm'\n"
    error = missing_module_error(log, VLLM_REQUIRES, C550_SKIP, VENDOR_PYTHON)
    assert error is not None
    assert error.message == "the build could not import setuptools_scm with /opt/vendor/bin/python3"
    assert error.hint == ("install it into that interpreter, then retry: "
                          "/opt/vendor/bin/python3 -m pip install 'setuptools-scm>=8.0'")
    error = missing_module_error("ModuleNotFoundError: No module named 'cmake'\n",
                                 VLLM_REQUIRES, C550_SKIP, VENDOR_PYTHON)  # fmt: skip
    assert error is not None and error.hint == (
        "device.toml's [build] skip-build-requires lists cmake, but the build needs it: take it "
        "off that list, and install it: /opt/vendor/bin/python3 -m pip install 'cmake>=3.26'"
    )
    error = missing_module_error("ModuleNotFoundError: No module named 'yaml'\n",
                                 VLLM_REQUIRES, C550_SKIP, VENDOR_PYTHON)  # fmt: skip
    assert error is not None and error.hint == (
        "no build requirement of the tree provides it; install the package that does "
        "(`/opt/vendor/bin/python3 -m pip install PACKAGE`), then retry."
    )
    error = missing_module_error("ModuleNotFoundError: No module named 'torch._C'\n",
                                 VLLM_REQUIRES, C550_SKIP, VENDOR_PYTHON)  # fmt: skip
    assert error is not None and error.hint is not None
    assert error.hint.startswith("Install the torch your device uses") and "pip install 'torch" not in error.hint
    assert missing_module_error("error: gcc failed\n", VLLM_REQUIRES, (), VENDOR_PYTHON) is None


# --------------------------------------------------------------------------- the interpreter

def _dist_info(folder: Path, directory: str, version: str) -> None:
    (folder / directory).mkdir(parents=True)
    (folder / directory / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {directory.split('-')[0]}\nVersion: {version}\n\nVersion: 0\n"
    )


def _reference_versions(env: dict[str, str], names: list[str]) -> dict[str, str | None]:
    program = ("import importlib.metadata as m, json, sys\nv = {}\nfor n in sys.argv[1:]:\n"
               "    try: v[n] = m.version(n)\n    except m.PackageNotFoundError: v[n] = None\n"
               "print(json.dumps(v))")  # fmt: skip
    completed = subprocess.run([sys.executable, "-c", program, *names], env=env,
                               capture_output=True, text=True, check=True)  # fmt: skip
    versions: dict[str, str | None] = json.loads(completed.stdout)
    return versions


def test_interpreter_versions_match_importlib_metadata(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _dist_info(first, "demo_first-1.0.dist-info", "1.0")
    _dist_info(second, "Demo.First-2.0.dist-info", "2.0")  # later on sys.path: hidden
    _dist_info(second, "other_demo-3.0.dist-info", "3.0")
    (first / "eggy-0.5-py3.11.egg-info").write_text("Metadata-Version: 1.1\nName: eggy\nVersion: 0.5\n")
    archive = tmp_path / "dists.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("zipped_demo-4.0.dist-info/METADATA", "Name: zipped-demo\nVersion: 4.0\n")
    names = ["demo-first", "other-demo", "eggy", "zipped-demo", "absent-demo", "setuptools"]
    for path in (f"{first}:{second}", f"{first}:{second}:{archive}"):
        env = {**os.environ, "PYTHONPATH": path}
        reported = query_interpreter(sys.executable, names, env)
        assert reported.installed == _reference_versions(env, [*names, "pip", "torch"])
    assert reported.installed["demo-first"] == "1.0" and reported.installed["zipped-demo"] == "4.0"
    assert reported.installed["absent-demo"] is None and reported.installed["eggy"] == "0.5"
    assert reported.markers == default_environment()
    assert reported.version == default_environment()["python_full_version"]


def test_interpreter_that_cannot_run_is_a_build_error(tmp_path: Path) -> None:
    with pytest.raises(BuildError) as caught:
        query_interpreter(str(tmp_path / "no-python"), ["wheel"])
    assert caught.value.message.startswith(f"cannot run the build interpreter {tmp_path / 'no-python'}: ")


# --------------------------------------------------------------------------- the provenance rewrite

class _Unseekable(io.RawIOBase):
    """A stream zipfile cannot seek back in: it writes data descriptors."""

    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, block: bytes) -> int:  # type: ignore[override]
        self.data += block
        return len(block)


def test_provenance_is_added_without_recompressing_any_member(tmp_path: Path) -> None:
    stream = _Unseekable()
    with zipfile.ZipFile(stream, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("demo/ünïcode.py", "x = 1\n" * 50)
        stored = zipfile.ZipInfo("demo/stored.bin")
        stored.compress_type = zipfile.ZIP_STORED
        archive.writestr(stored, bytes(range(256)))
        archive.writestr("demo-1.0.dist-info/RECORD", "demo/ünïcode.py,,\ndemo-1.0.dist-info/RECORD,,\n")
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    wheel.write_bytes(bytes(stream.data))
    with zipfile.ZipFile(wheel) as archive:
        before = {i.filename: (i.CRC, i.compress_size, i.flag_bits) for i in archive.infolist()}
    assert before["demo/stored.bin"][2] & 0x08  # a data descriptor follows the data

    sha = add_provenance(wheel, {"device": "devA"})

    assert sha == hashlib.sha256(wheel.read_bytes()).hexdigest()
    with zipfile.ZipFile(wheel) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["demo/ünïcode.py", "demo/stored.bin",
                                      "demo-1.0.dist-info/patchtool-provenance.json",
                                      "demo-1.0.dist-info/RECORD"]  # fmt: skip
        for name in ("demo/ünïcode.py", "demo/stored.bin"):  # as stored, descriptor and all
            info = archive.getinfo(name)
            assert (info.CRC, info.compress_size, info.flag_bits) == before[name]
        record = archive.read("demo-1.0.dist-info/RECORD").decode().splitlines()
        provenance = archive.read("demo-1.0.dist-info/patchtool-provenance.json")
    assert provenance == b'{\n  "device": "devA"\n}\n'
    digest = base64.urlsafe_b64encode(hashlib.sha256(provenance).digest()).rstrip(b"=").decode()
    assert record == ["demo/ünïcode.py,,",
                      f"demo-1.0.dist-info/patchtool-provenance.json,sha256={digest},{len(provenance)}",
                      "demo-1.0.dist-info/RECORD,,"]  # fmt: skip


# --------------------------------------------------------------------------- through the CLI

HELPER = "patchtool-first-day-helper"
PYPROJECT = ('[build-system]\nrequires = ["setuptools>=40.8.0", "{extra}", "torch==2.5.1"]\n'
             'build-backend = "setuptools.build_meta"\n')  # fmt: skip
SETUP_NEEDS_HELPER = ("import patchtool_first_day_helper\nfrom setuptools import setup\n"
                      "setup(name='demo', version='1.0')\n")  # fmt: skip


def pyproject_tree(world: SyntheticUpstream, extra: str, setup_py: str | None = None,
                   skip: tuple[str, ...] = ()) -> Path:
    """devA's tree with a pyproject.toml asking for `extra`, exported; the output folder."""
    assert world.cli("unpatch", "-d", "devA", "--dir", str(world.build)).code == 0
    (world.tree / "env.sh").write_text("export DEMO_BUILD=1\n")
    (world.tree / "pyproject.toml").write_text(PYPROJECT.format(extra=extra))
    if setup_py is not None:
        (world.tree / "setup.py").write_text(setup_py)
    commit_all(world.tree, "Build with a pyproject.toml")
    assert world.cli("patch", "-d", "devA", "--dir", str(world.build)).code == 0
    if skip:
        device = world.store / "devA" / "device.toml"
        device.write_text(device.read_text() + f"skip-build-requires = {json.dumps(list(skip))}\n")
    return (world.root / "out").resolve()


def build_wheel(world: SyntheticUpstream, out: Path) -> CliResult:
    """`patchtool build-wheel` of devA into `out`, in this process."""
    return world.run("build-wheel", "--out", str(out), in_process=True)


def test_missing_requirement_stops_the_build_with_exit_8(
    upstream: SyntheticUpstream
) -> None:
    out = pyproject_tree(upstream, f"{HELPER}>=1.0")
    result = build_wheel(upstream, out)
    python = sys.executable
    assert result.code == 8
    assert result.stderr.splitlines()[-2:] == [
        f"error: the build needs packages that {python} lacks: {HELPER}>=1.0 (missing)",
        f"hint: install them into that interpreter, then retry: {python} -m pip install '{HELPER}>=1.0'",
    ]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p.name for p in out.iterdir()) == []  # not even a build log


def test_skipped_requirement_is_not_asked_for_and_its_import_error_is_named(
    upstream: SyntheticUpstream
) -> None:
    out = pyproject_tree(upstream, f"{HELPER}>=1.0", SETUP_NEEDS_HELPER,
                         skip=("Patchtool_First_Day_Helper",))  # fmt: skip
    result = build_wheel(upstream, out)
    python, log = sys.executable, out / "devA-build.log"
    assert result.code == 8 and result.stdout == ""
    assert f"not checked, device.toml's [build] skip-build-requires lists them: {HELPER}>=1.0" in result.stderr
    assert result.stderr.splitlines()[-2:] == [
        f"error: the build could not import patchtool_first_day_helper with {python} (see {log})",
        f"hint: device.toml's [build] skip-build-requires lists {HELPER}, but the build needs it: "
        f"take it off that list, and install it: {python} -m pip install '{HELPER}>=1.0'",
    ]
    assert "Traceback" not in result.stderr
    assert "No module named 'patchtool_first_day_helper'" in log.read_text()
    assert not list(out.glob("*.whl"))


def test_torch_pin_mismatch_is_reported_and_tools_are_recorded(
    upstream: SyntheticUpstream
) -> None:
    pytest.importorskip("torch")  # the test's premise: a torch of this environment's own
    torch = importlib.metadata.version("torch")
    assert not Requirement("torch==2.5.1").specifier.contains(torch)  # the test's premise
    out = pyproject_tree(upstream, "wheel")
    result = build_wheel(upstream, out)
    assert result.code == 0, result.stderr
    assert f"torch {torch} (the tree pins torch==2.5.1; the device's own torch is used)" in (
        result.stderr.splitlines()
    )
    with zipfile.ZipFile(result.stdout.strip()) as archive:
        provenance = json.loads(archive.read("demo-1.0.dist-info/patchtool-provenance.json"))
    assert provenance["build_requires"] == {
        name: importlib.metadata.version(name) for name in ("build", "setuptools", "wheel")
    }
    assert provenance["torch"] == torch


def test_skip_build_requires_holds_project_names_only(upstream: SyntheticUpstream) -> None:
    device = upstream.store / "devA" / "device.toml"
    before = device.read_text() + 'skip-build-requires = ["cmake", "ninja>=1.11"]\n'
    device.write_text(before)
    result = upstream.cli("unpatch", "-d", "devA", "--dir", str(upstream.build))
    assert result.code == 6
    assert (f"error: {device}: key build.'skip-build-requires' holds 'ninja>=1.11', which is "
            "not a project name") in result.stderr  # fmt: skip
    assert not upstream.build.exists() and device.read_text() == before


# --------------------------------------------------------------------------- the first day

# The C550's required files, as patches/metax_C550/device.toml lists them.
C550_REQUIRED = [
    "vllm/model_executor/layers/fused_moe/fused_moe.py",
    "vllm/model_executor/layers/fused_moe/configs/E=256,N=256,device_name=Device_4000.json",
    "vllm/model_executor/layers/fused_moe/configs/E=256,N=512,device_name=Device_4000.json",
    "vllm/model_executor/layers/fused_moe/configs/E=256,N=256,device_name=Device_4000,dtype=int8_w8a8.json",
]
# What the checkout's own install must bring (vLLM's build requires and the front
# end): never borrowed from this venv, even where torch depends on them.
OWN_INSTALL = {"setuptools", "setuptools-scm", "wheel", "jinja2", "packaging", "build"}
# pip's configuration as the user has it, read before the hermetic HOME hides it:
# the index the fresh venv installs from.
USER_PIP_CONFIG = next(
    (path for path in (
        os.environ.get("PIP_CONFIG_FILE"),
        os.path.join(os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config"),
                     "pip", "pip.conf"),
        os.path.expanduser("~/.pip/pip.conf"),
    ) if path and os.path.isfile(path)),
    None,
)  # fmt: skip


def expose_torch(venv_python: Path, folder: Path) -> None:
    """Let the fresh venv import this venv's torch and what torch needs at run time,
    and nothing else: a folder of links to those distributions, named in a .pth
    file. (`pip install torch==2.13.0` from the local wheel takes about 38 s and
    900 MB, and would bring setuptools and jinja2 along, hiding a missing
    dependency of patchtool.)"""
    folder.mkdir()
    names: set[str] = set()
    todo = ["torch"]
    while todo:
        name = canonical_name(todo.pop())
        if name in names or name in OWN_INSTALL:
            continue
        names.add(name)
        for text in importlib.metadata.distribution(name).requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    for name in sorted(names):
        distribution = importlib.metadata.distribution(name)
        tops = {file.parts[0] for file in distribution.files or []}
        for top in sorted(tops - {"__pycache__"}):
            if not top.startswith(".."):
                (folder / top).symlink_to(Path(str(distribution.locate_file(top))))
    site_packages = subprocess.run(
        [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    (Path(site_packages) / "first-day-torch.pth").write_text(f"{folder}\n")


@pytest.mark.integration
def test_plain_pip_install_then_unpatch_and_build_wheel(real_vllm: RealVllm, tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    # Not what runs write into the checkout: another worker of this run may be
    # writing there now (.ci-cache is CI's PATCHTOOL_TEST_CACHE_DIR).
    shutil.copytree(REPOSITORY, checkout, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis",
        ".ci-cache"))  # fmt: skip
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PIP_CONFIG_FILE")}  # fmt: skip
    if USER_PIP_CONFIG:
        env["PIP_CONFIG_FILE"] = USER_PIP_CONFIG
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run([str(venv / "bin" / "pip"), "install", "--no-input", str(checkout)],
                               env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr
    pytest.importorskip("torch")  # the build below needs this environment's torch
    expose_torch(venv / "bin" / "python", tmp_path / "torch-only")

    env["PATCHTOOL_CACHE_DIR"] = str(real_vllm.cache)
    patchtool = str(venv / "bin" / "patchtool")
    unpatch = subprocess.run([patchtool, "unpatch", "-d", "metax_C550", "--commit-id", "vllm-0.7.2"],
                             cwd=checkout, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert unpatch.returncode == 0, unpatch.stderr
    built = subprocess.run([patchtool, "build-wheel", "-d", "metax_C550"],
                           cwd=checkout, env=env, capture_output=True, text=True, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "Traceback" not in built.stderr
    assert SKIPPED_NOTE in built.stderr.splitlines()

    wheel = Path(built.stdout.strip())
    assert wheel == checkout / "build" / "metax_C550" / "dist" / "vllm-0.7.2+maca-py3-none-any.whl"
    device = tomllib.loads((checkout / "patches" / "metax_C550" / "device.toml").read_text())
    assert device["build"]["required-files"] == C550_REQUIRED
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        provenance = json.loads(archive.read("vllm-0.7.2+maca.dist-info/patchtool-provenance.json"))
    assert names >= set(C550_REQUIRED)
    assert set(provenance["build_requires"]) == {"build", "jinja2", "packaging", "setuptools",
                                                 "setuptools-scm", "wheel"}  # fmt: skip
    assert provenance["python"] == default_environment()["python_full_version"]
