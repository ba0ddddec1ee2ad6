"""Child processes inherit nothing the input controls (issue 19, §1).

Every child patchtool starts goes through children.py, with an explicit working
folder and environment. Each test here plants code where a child would pick it
up if it inherited the caller's working folder or environment, runs the command
that reaches one call site, and asserts that nothing planted ran (no marker
file) and that the command still did its job.

What is planted, and where:
- Python: pip.py (or a `pip/` package), sitecustomize.py, usercustomize.py, a
  .pth file and build.py, in the working folder (the folder patchtool is run
  from) and, where the call site works in a build tree, committed into the tree
  by a patch; PYTHONPATH, PYTHONSTARTUP, PYTHONUSERBASE and PYTHONWARNINGS
  (which imports the module its category names) point at hostile files.
- Programs: an executable `git` or `rm` in the tree, with a relative entry (".")
  first on PATH.
- Shells: BASH_ENV, ENV and an exported function (BASH_FUNC_git%%).

The patchtool process under test is itself started with the hostile PYTHON*
variables (they are the caller's), so the planted Python code skips the one
interpreter that runs `-m patchtool`: what must not happen is a *child* running it.
"""

from __future__ import annotations

import ast
import os
import stat
import sys
import sysconfig
import time
from pathlib import Path

import pytest
from helpers import (
    DEMO_FILES,
    REPOSITORY,
    CliResult,
    SyntheticUpstream,
    add_git_base,
    commit_all,
    git,
    make_sdist,
    run_cli,
)

from patchtool.core import children
from patchtool.core.gitops import user_identity
from patchtool.trees.staging import TRASH_PREFIX

# Runs in every interpreter it reaches but patchtool's own (`python -m patchtool`).
PYTHON_PAYLOAD = """\
import os, sys
if sys.orig_argv[1:3] != ["-m", "patchtool"]:
    with open(os.path.join({markers!r}, "{name}-%d" % os.getpid()), "w") as marker:
        marker.write(repr(sys.orig_argv))
"""

SHELL_PAYLOAD = """\
#!/bin/sh
echo "$0 $*" > {markers}/{name}-$$
exit 1
"""

PYTHON_FILES = ("pip.py", "sitecustomize.py", "usercustomize.py", "build.py")


def python_payload(markers: Path, name: str) -> str:
    return PYTHON_PAYLOAD.format(markers=str(markers), name=name)


def pth_line(markers: Path, name: str) -> str:
    """A .pth line: `import` lines of a .pth file in a site folder are run at start-up."""
    return f"import sys; exec({python_payload(markers, name)!r})\n"


def plant_python(folder: Path, markers: Path, names: tuple[str, ...] = PYTHON_FILES) -> None:
    """Hostile Python modules and a .pth file in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(python_payload(markers, f"{folder.name}-{name}"))
    (folder / "patchtool-hostile.pth").write_text(pth_line(markers, f"{folder.name}-pth"))


def plant_program(folder: Path, markers: Path, name: str) -> None:
    """An executable `name` in `folder` that leaves a marker."""
    program = folder / name
    program.write_text(SHELL_PAYLOAD.format(markers=markers, name=f"{folder.name}-{name}"))
    program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def hostile_python_environment(root: Path, markers: Path) -> dict[str, str]:
    """PYTHON* variables of the caller that would each add code to a child."""
    pythonpath = root / "pythonpath"
    plant_python(pythonpath, markers, ("pip.py", "sitecustomize.py", "build.py"))
    (pythonpath / "hostile_warning.py").write_text(
        python_payload(markers, "pythonwarnings") + "class Hostile(Warning):\n    pass\n")  # fmt: skip
    userbase = root / "userbase"
    user_site = Path(sysconfig.get_path("purelib", "posix_user", {"userbase": str(userbase)}))
    plant_python(user_site, markers, ("usercustomize.py",))
    startup = root / "startup.py"
    startup.write_text(python_payload(markers, "pythonstartup"))
    pythonpath_entries = [str(pythonpath), os.environ.get("PYTHONPATH", "")]
    return {
        "PYTHONPATH": os.pathsep.join(entry for entry in pythonpath_entries if entry),
        "PYTHONSTARTUP": str(startup),
        "PYTHONUSERBASE": str(userbase),
        "PYTHONWARNINGS": "ignore::hostile_warning.Hostile",
    }


def hostile_shell_environment(root: Path, markers: Path) -> dict[str, str]:
    """Shell start-up hooks of the caller that would each run before a script."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("bash_env", "env"):
        (root / f"{name}.sh").write_text(f"echo {name} > {markers}/shell-{name}-$$\n")
    return {
        "BASH_ENV": str(root / "bash_env.sh"),
        "ENV": str(root / "env.sh"),
        "BASH_FUNC_git%%": f"() {{ echo \"$*\" > {markers}/shell-function-git-$$; }}",
    }


def relative_path_first() -> dict[str, str]:
    """PATH with the working folder (".") searched first, as some users have it."""
    return {"PATH": os.pathsep.join((".", os.environ["PATH"]))}


def ran(markers: Path) -> list[str]:
    """What the planted code left: one marker per process that ran it."""
    return sorted(
        f"{path.name}: {path.read_text(errors='replace').strip()}" for path in markers.iterdir()
    )


@pytest.fixture
def markers(tmp_path: Path) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    return folder


@pytest.fixture
def cold_index(upstream: SyntheticUpstream, tmp_path: Path,
               monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:  # fmt: skip
    """The environment of a run with an empty cache and no local sdist: the sdist must
    come through pip's settings (a find-links folder, no index), so `pip config
    list` runs."""
    for name in list(os.environ):
        if name.startswith("PIP_"):
            monkeypatch.delenv(name)
    cache = tmp_path / "cold-cache"
    cache.mkdir()
    return {
        "PATCHTOOL_SDIST_PATH": "",
        "PATCHTOOL_CACHE_DIR": str(cache),
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_FIND_LINKS": str(upstream.sdist.parent),
        "PIP_NO_INDEX": "1",
    }


def add_to_tree(world: SyntheticUpstream, files: dict[str, str], executable: tuple[str, ...] = (),
                subject: str = "Add the vendor helpers") -> None:  # fmt: skip
    """Commit `files` into devA's tree and export them: the store's series now adds them."""
    if not world.tree.exists():
        assert world.run("unpatch").code == 0
    for name, content in files.items():
        path = world.tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        if name in executable:
            path.chmod(0o755)
    commit_all(world.tree, subject)
    exported = world.run("patch")
    assert exported.code == 0, exported.output


def python_tree_files(markers: Path, names: tuple[str, ...]) -> dict[str, str]:
    files = {name: python_payload(markers, f"tree-{name}") for name in names}
    files["patchtool-hostile.pth"] = pth_line(markers, "tree-pth")
    return files


# --------------------------------------------------------------------------- pip config list


def test_issue_reproduction_pip_py_in_a_store_checkout_does_not_run_in_check(
    upstream: SyntheticUpstream, cold_index: dict[str, str], tmp_path: Path
) -> None:
    """`echo "open('/tmp/PWNED','w')" > pip.py; PATCHTOOL_CACHE_DIR=$(mktemp -d)
    patchtool check` in a clone of the store's repository."""
    checkout = upstream.root  # holds patches/, found from the working folder
    pwned = tmp_path / "PWNED"
    (checkout / "pip.py").write_text(f"open({str(pwned)!r},'w')\n")
    result = run_cli("check", cwd=checkout, env=cold_index)
    assert not pwned.exists()
    assert result.code == 0, result.output
    assert "using local sdist" in result.stderr


def test_pip_config_list_from_inside_the_tree_runs_nothing_planted(
    upstream: SyntheticUpstream, cold_index: dict[str, str], markers: Path, tmp_path: Path
) -> None:
    """unpatch run from inside the build tree with a cold cache: a patch planted a
    `pip` package (not a module), sitecustomize, usercustomize and a .pth there,
    and the caller's PYTHON* variables point at more."""
    add_to_tree(upstream, {
        "pip/__init__.py": python_payload(markers, "tree-pip-package"),
        "pip/__main__.py": python_payload(markers, "tree-pip-main"),
        **python_tree_files(markers, ("sitecustomize.py", "usercustomize.py")),
    })  # fmt: skip
    env = {**cold_index, **hostile_python_environment(tmp_path / "hostile", markers)}
    result = run_cli("--store", str(upstream.store), "unpatch", "--device-type", "devA",
                     "--dir", str(upstream.build), cwd=upstream.tree, env=env)  # fmt: skip
    assert ran(markers) == []
    assert result.code == 0, result.output
    assert (upstream.tree / "pip" / "__main__.py").is_file()


def test_check_with_the_callers_python_variables_runs_nothing_planted(
    upstream: SyntheticUpstream, cold_index: dict[str, str], markers: Path, tmp_path: Path
) -> None:
    """check from a folder holding every planted file, with hostile PYTHON* variables."""
    working = tmp_path / "working"
    plant_python(working, markers)
    env = {**cold_index, **hostile_python_environment(tmp_path / "hostile", markers)}
    result = run_cli("--store", str(upstream.store), "check", cwd=working, env=env)
    assert ran(markers) == []
    assert result.code == 0, result.output


# --------------------------------------------------------------------------- git


def test_patch_m_runs_no_git_that_the_tree_holds(upstream: SyntheticUpstream,
                                                 markers: Path) -> None:  # fmt: skip
    """Git.run and user_identity (`patch -m` commits under the user's name) from
    inside a tree whose series added an executable `git`, with "." first on PATH."""
    add_to_tree(upstream, {"git": SHELL_PAYLOAD.format(markers=markers, name="tree-git")},
                executable=("git",))  # fmt: skip
    (upstream.tree / "demo" / "extra.py").write_text("EXTRA = 1\n")
    result = run_cli("--store", str(upstream.store), "patch", "--device-type", "devA",
                     "--dir", str(upstream.build), "-m", "Add the extra module",
                     cwd=upstream.tree, env=relative_path_first())  # fmt: skip
    assert ran(markers) == []
    assert result.code == 0, result.output
    assert git(upstream.tree, "log", "-1", "--format=%an %s").strip() == (
        "Test Author Add the extra module")


def test_user_identity_runs_no_git_of_the_tree(tmp_path: Path, markers: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    tree = tmp_path / "tree"
    tree.mkdir()
    git(tree, "init", "--quiet")
    plant_program(tree, markers, "git")
    monkeypatch.chdir(tree)
    monkeypatch.setenv("PATH", relative_path_first()["PATH"])
    identity = user_identity(tree)
    assert ran(markers) == []
    assert identity is not None and identity["GIT_AUTHOR_NAME"] == "Test Author"


def test_a_git_base_fetch_takes_nothing_from_the_working_folder_or_the_callers_variables(
    upstream: SyntheticUpstream, markers: Path, tmp_path: Path
) -> None:
    """run_plain (git fetch with the user's own git config) for a git base, cold cache,
    from a folder holding a `git` and the Python files, with every hostile variable."""
    add_git_base(upstream, tmp_path / "origin")
    working = tmp_path / "working"
    plant_python(working, markers)
    plant_program(working, markers, "git")
    env = {
        "PATCHTOOL_CACHE_DIR": str(tmp_path / "cold-cache"),
        **hostile_python_environment(tmp_path / "hostile", markers),
        **hostile_shell_environment(tmp_path / "shell", markers),
        **relative_path_first(),
    }
    result = run_cli("--store", str(upstream.store), "unpatch", "--device-type", "devA",
                     "--commit-id", "git-base", "--dir", str(upstream.build),
                     cwd=working, env=env)  # fmt: skip
    assert ran(markers) == []
    assert result.code == 0, result.output
    assert (upstream.tree / "main.py").is_file()


# --------------------------------------------------------------------------- build-wheel

ENV_SH = """\
export DEMO_FLAVOUR="${1:-plain}"
git config --global user.name "env.sh was here" 2>/dev/null
echo "env.sh: configured $DEMO_FLAVOUR" >&2
"""


def build_wheel(world: SyntheticUpstream, cwd: Path, env: dict[str, str] | None = None) -> CliResult:
    return run_cli("--store", str(world.store), "build-wheel", "--device-type", "devA",
                   "--dir", str(world.build), cwd=cwd, env=env)  # fmt: skip


def test_the_wheel_build_front_end_imports_no_build_py_of_the_tree(
    upstream: SyntheticUpstream, markers: Path
) -> None:
    """build-wheel run from inside a tree whose series added build.py (what
    `python -m build` would import from its working folder), pip.py,
    sitecustomize.py, usercustomize.py and a .pth."""
    add_to_tree(upstream, {"env.sh": ENV_SH, **python_tree_files(markers, PYTHON_FILES)})
    result = build_wheel(upstream, upstream.tree)
    assert ran(markers) == []
    assert result.code == 0, result.output
    assert Path(result.stdout.split()[0]).name == "demo-1.0-py3-none-any.whl"


def test_the_build_takes_env_sh_python_variables_and_never_the_callers(
    upstream: SyntheticUpstream, markers: Path, tmp_path: Path
) -> None:
    """The build interpreter probe and the build (front end and backend), from a
    folder holding every planted file, with hostile PYTHON* variables: none runs.
    What env.sh exports (here a PYTHONPATH with a sitecustomize) does reach them,
    by design: env.sh is the device's own build set-up."""
    vendor, vendor_markers = tmp_path / "vendor", tmp_path / "vendor-markers"
    vendor_markers.mkdir()
    vendor.mkdir()
    (vendor / "sitecustomize.py").write_text(python_payload(vendor_markers, "vendor"))
    # The usual vendor idiom: its folder first, then whatever PYTHONPATH was.
    env_sh = ENV_SH + f'export PYTHONPATH="{vendor}${{PYTHONPATH:+:$PYTHONPATH}}"\n'
    add_to_tree(upstream, {"env.sh": env_sh})
    working = tmp_path / "working"
    plant_python(working, markers)
    result = build_wheel(upstream, working, hostile_python_environment(tmp_path / "hostile", markers))
    assert ran(markers) == []
    assert result.code == 0, result.output
    assert f"env.sh set PYTHONPATH={vendor}\n" in result.stderr
    # the probe, the front end and the backend: each its own interpreter
    assert len(list(vendor_markers.iterdir())) >= 3, ran(vendor_markers)


def test_env_sh_is_sourced_without_the_callers_shell_start_up(
    upstream: SyntheticUpstream, markers: Path, tmp_path: Path
) -> None:
    """BASH_ENV (sourced by a non-interactive bash before its script), ENV, and an
    exported function that would replace the `git` env.sh calls."""
    add_to_tree(upstream, {"env.sh": ENV_SH})
    working = tmp_path / "working"
    working.mkdir()
    result = build_wheel(upstream, working, hostile_shell_environment(tmp_path / "shell", markers))
    assert ran(markers) == []
    assert result.code == 0, result.output
    assert "env.sh set DEMO_FLAVOUR=plain" in result.stderr


# --------------------------------------------------------------------------- rm


def test_unpatch_discards_the_replaced_tree_with_no_rm_of_the_working_folder(
    upstream: SyntheticUpstream, markers: Path
) -> None:
    """unpatch from inside a tree whose series added an executable `rm`, with "."
    first on PATH: the replaced tree is removed by a detached `rm -rf`."""
    add_to_tree(upstream, {"rm": SHELL_PAYLOAD.format(markers=markers, name="tree-rm")},
                executable=("rm",))  # fmt: skip
    result = run_cli("--store", str(upstream.store), "unpatch", "--device-type", "devA",
                     "--dir", str(upstream.build), cwd=upstream.tree,
                     env=relative_path_first())  # fmt: skip
    assert result.code == 0, result.output
    # The rm is detached and outlives the run: wait until the replaced tree is gone
    # (the real rm) or a marker appeared (the tree's), then judge.
    device_dir = upstream.build / "devA"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ran(markers) and any(
            p.name.startswith(TRASH_PREFIX) for p in device_dir.iterdir()):  # fmt: skip
        time.sleep(0.01)
    assert ran(markers) == []
    assert not any(p.name.startswith(TRASH_PREFIX) for p in device_dir.iterdir())


# --------------------------------------------------------------------------- one home


def test_no_module_but_children_starts_a_process() -> None:
    """Every child goes through children.py: no other module imports subprocess or
    calls os.system, os.popen, os.exec*, os.spawn* or os.posix_spawn*."""
    starters = ("system", "popen", "posix_spawn", "posix_spawnp", "fork", "forkpty")
    found = []
    for path in sorted((REPOSITORY / "src" / "patchtool").rglob("*.py")):
        if path.name == "children.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import | ast.ImportFrom):
                modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [
                    node.module or ""]  # fmt: skip
                found += [f"{path.name}: import {m}" for m in modules
                          if m.split(".")[0] in ("subprocess", "pty", "multiprocessing")]  # fmt: skip
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id == "os"
                  and (node.attr in starters or node.attr.startswith(("exec", "spawn")))):  # fmt: skip
                found.append(f"{path.name}: os.{node.attr}")
    assert found == []
    assert sys.executable  # children.python_command needs to know this interpreter


def test_the_environment_a_child_gets() -> None:
    caller = {
        "HOME": "/home/user", "PIP_INDEX_URL": "https://mirror.invalid/simple",
        "PYTHONPATH": ".", "PYTHONSTARTUP": "/x.py", "PYTHONHOME": "/x", "PYTHONWARNINGS": "x",
        "BASH_ENV": "/x.sh", "ENV": "/x.sh", "BASH_FUNC_git%%": "() { :; }", "SHELLOPTS": "xtrace",
        "BASHOPTS": "extdebug", "PS4": "$(x)", "CDPATH": ".", "GLOBIGNORE": "*",
        "PATH": f".::bin{os.pathsep}/usr/bin{os.pathsep}/bin{os.pathsep}",
        "LD_LIBRARY_PATH": ":lib",
    }  # fmt: skip
    assert children.environment(caller) == {
        "HOME": "/home/user", "PIP_INDEX_URL": "https://mirror.invalid/simple",
        "PATH": f"/usr/bin{os.pathsep}/bin",
    }  # fmt: skip
    assert children.environment({"PATH": "bin"}) == {"PATH": os.defpath}
    assert children.python_command("-m", "pip") == [sys.executable, "-I", "-m", "pip"]


def test_a_child_never_reads_the_terminal() -> None:
    for options in ({}, {"input": None}):
        completed = children.run(["readlink", "/proc/self/fd/0"],
                                 cwd=children.NEUTRAL_FOLDER, env=children.environment(),
                                 capture_output=True, text=True, **options)  # fmt: skip
        assert completed.stdout.strip() == os.devnull


# --------------------------------------------------------------------------- also found on the way
# (issue 19, "Also found": not child isolation, kept here to keep the merge clean)

README_NOTE = "Vendor note: runs on devA.\n"


def demo_11(world: SyntheticUpstream, readme_note: bool = False) -> Path:
    """demo 1.1's sdist beside 1.0's: the same files, a new version (and, if asked,
    the vendor's README note shipped upstream)."""
    files = dict(DEMO_FILES)
    files["demo/__init__.py"] = b"VERSION = '1.1'\n"
    if readme_note:
        files["README.md"] = b"# demo\n\nA small upstream project for tests.\n" + README_NOTE.encode()
    return make_sdist(world.sdist.parent / "demo-1.1.tar.gz", "demo-1.1", files,
                      modes={"tools/run.sh": 0o755})  # fmt: skip


def test_rebase_of_an_empty_series_is_an_empty_series_with_a_report(
    upstream: SyntheticUpstream,
) -> None:
    """`rebase` of a base whose series is empty exited 1 (git range-diff: need two
    commit ranges)."""
    demo_11(upstream)
    assert upstream.run("unpatch").code == 0
    result = upstream.run("rebase", "--onto", "1.1")
    assert result.code == 0, result.output
    folder = upstream.store / "devA" / "demo-1.1"
    assert result.stdout.strip() == str(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["base.toml", "rebase-report.md", "series"]
    assert (folder / "series").read_text() == "# demo series\n"
    report = (folder / "rebase-report.md").read_text()
    assert "- patches: 0: no patches\n" in report
    assert report.endswith(
        "```\n(no patches on either side)\n```\n<!-- patchtool:end range-diff -->\n"
    )
    assert upstream.cli("check", "--device-type", "devA").code == 0


def test_rebase_where_every_patch_is_upstream_lists_them_in_the_report(
    upstream: SyntheticUpstream,
) -> None:
    """A variant: the old series has a patch, the new one none (1.1 ships it), so the
    new side of the range-diff is empty."""
    demo_11(upstream, readme_note=True)
    assert upstream.run("unpatch").code == 0
    readme = upstream.tree / "README.md"
    readme.write_text(readme.read_text() + README_NOTE)
    commit_all(upstream.tree, "Add a vendor note to the README")
    assert upstream.run("patch").code == 0
    result = upstream.run("rebase", "--onto", "1.1")
    assert result.code == 0, result.output
    folder = upstream.store / "devA" / "demo-1.1"
    assert (folder / "series").read_text() == "# demo series\n"
    report = (folder / "rebase-report.md").read_text()
    assert "| 1 | add-a-vendor-note-to-the-readme.patch | dropped as upstream | - |" in report
    assert "```\n1 < - Add a vendor note to the README\n```\n" in report


@pytest.fixture
def cold(upstream: SyntheticUpstream, tmp_path: Path) -> dict[str, str]:
    """A run with an empty cache and no PATCHTOOL_SDIST_PATH: --sdist is all there is."""
    return {"PATCHTOOL_CACHE_DIR": str(tmp_path / "cold-cache"), "PATCHTOOL_SDIST_PATH": ""}


def test_sdist_may_name_several_files(upstream: SyntheticUpstream, cold: dict[str, str]) -> None:
    """Two `--sdist FILE` arguments failed ("expected a file named ...") unless the
    first was the one wanted; each is a candidate when it has the wanted name."""
    newer = demo_11(upstream)
    result = upstream.run("unpatch", "--sdist", str(newer), "--sdist", str(upstream.sdist),
                          env=cold)  # fmt: skip
    assert result.code == 0, result.output
    assert f"using local sdist {upstream.sdist}" in result.stderr
    # rebase from another cold cache needs both: the old base's sdist and the new one's
    colder = {**cold, "PATCHTOOL_CACHE_DIR": str(upstream.root / "another-cold-cache")}
    rebased = upstream.run("rebase", "--onto", "1.1", "--sdist", str(upstream.sdist),
                           "--sdist", str(newer), env=colder)  # fmt: skip
    assert rebased.code == 0, rebased.output
    assert (upstream.store / "devA" / "demo-1.1" / "base.toml").is_file()


def test_sdist_files_none_of_which_is_wanted_are_named(upstream: SyntheticUpstream,
                                                       cold: dict[str, str]) -> None:  # fmt: skip
    newer, other = demo_11(upstream), upstream.root / "other.tar.gz"
    other.write_bytes(upstream.sdist.read_bytes())
    result = upstream.run("unpatch", "--sdist", str(newer), "--sdist", str(other),
                          "--sdist", str(upstream.root / "scratch.git"), env=cold)  # fmt: skip
    assert result.code == 3, result.output
    assert result.stderr.splitlines()[-2:] == [
        f"error: demo-1.0.tar.gz is not among the files given with --sdist ({newer}, {other})",
        "hint: Pass the file named demo-1.0.tar.gz (or a folder holding it) with --sdist too; "
        "--sdist may be given once for each sdist the run needs.",
    ]
    assert not upstream.tree.exists()


def test_a_file_of_another_name_in_patchtool_sdist_path_is_only_not_a_candidate(
    upstream: SyntheticUpstream, cold: dict[str, str]
) -> None:
    """A variant: PATCHTOOL_SDIST_PATH is a standing setting; a file there named for
    another version leaves the lookup to pip's find-links."""
    newer = demo_11(upstream)
    env = {**cold, "PATCHTOOL_SDIST_PATH": str(newer), "PIP_CONFIG_FILE": os.devnull,
           "PIP_FIND_LINKS": str(upstream.sdist.parent), "PIP_NO_INDEX": "1"}  # fmt: skip
    result = upstream.run("unpatch", env=env)
    assert result.code == 0, result.output
    assert f"using local sdist {upstream.sdist}" in result.stderr


def vendor_mail(number: int) -> str:
    """A mail patch changing function_<number> of demo/core.py, with a scissors line."""
    line = 2 + 3 * number
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: A Vendor <vendor@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
        f"Subject: [PATCH] Change {number}\n\nWhy it changes.\n-- >8 --\nKept below the line.\n\n"
        "Upstream-Status: Inappropriate [test]\n---\n"
        "diff --git a/demo/core.py b/demo/core.py\n--- a/demo/core.py\n+++ b/demo/core.py\n"
        f"@@ -{line},3 +{line},3 @@ def function_{number - 1}():\n def function_{number}():\n"
        f"-    return {number}\n+    return {number}{number}\n \n"
    )


def test_an_mbox_is_read_by_a_git_that_sees_no_repository_of_the_input(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    """A variant for git's working folder: import read an mbox with git working in
    the mbox's folder, so a .git there (a vendor tree's) had its config read:
    `mailinfo.scissors` cut the message, a broken line stopped the import."""
    assert upstream.run("unpatch").code == 0
    inputs = tmp_path / "vendor"
    (inputs / ".git" / "objects").mkdir(parents=True)
    (inputs / ".git" / "refs").mkdir()
    (inputs / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (inputs / ".git" / "config").write_text("[mailinfo]\n\tscissors = true\n")
    (inputs / "five.patch").write_text(vendor_mail(5))
    imported = upstream.run("import", str(inputs / "five.patch"))
    assert imported.code == 0, imported.output
    body = git(upstream.tree, "log", "-1", "--format=%B")
    assert "Why it changes." in body and "Kept below the line." in body
    (inputs / ".git" / "config").write_text("[core\nbroken")
    (inputs / "seven.patch").write_text(vendor_mail(7))
    again = upstream.run("import", str(inputs / "seven.patch"))
    assert again.code == 0, again.output
    assert "return 77" in (upstream.tree / "demo" / "core.py").read_text()
