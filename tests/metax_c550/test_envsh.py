"""env.sh: the MACA build environment, sourced by bash."""

import os
import subprocess
from pathlib import Path

import pytest
from helpers import CliResult, SyntheticUpstream, commit_all

BASE_PATH = "/usr/local/bin:/usr/bin:/bin"
RELEASE = "2.29.0.14"
MACA_VARS = {"MACA_PATH", "CUCC_PATH", "CUDA_PATH", "CUDA_HOME",
             "MACA_CLANG_PATH", "PATH", "LD_LIBRARY_PATH"}


@pytest.fixture
def dirs(tmp_path):
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    home.mkdir()
    return cwd, home


@pytest.fixture
def fake_maca(tmp_path):
    maca = tmp_path / "maca"
    for sub in ("bin", "lib", "mxgpu_llvm/bin", "mxgpu_llvm/lib",
                "tools/cu-bridge/bin", "tools/cu-bridge/tools"):
        (maca / sub).mkdir(parents=True)
    (maca / "Version.txt").write_text(f"Version:{RELEASE}\n")
    return maca


def _bash(script, dirs, extra_env=None, unset=()):
    cwd, home = dirs
    env = {"PATH": BASE_PATH, "HOME": str(home), "LANG": "C"}
    env.update(extra_env or {})
    for name in unset:
        env.pop(name, None)
    return subprocess.run(["bash", "--norc", "--noprofile", "-c", script],
                          cwd=cwd, env=env, capture_output=True, timeout=30)


def _parse_env(raw: bytes) -> dict:
    out = {}
    for item in raw.split(b"\0"):
        if item:
            k, _, v = item.decode().partition("=")
            out[k] = v
    return out


def _source_env(tree, dirs, args="", extra_env=None, times=1):
    """(baseline env, env after sourcing, stderr, rc)"""
    base = _bash("env -0", dirs, extra_env)
    assert base.returncode == 0
    src = f"source {tree / 'env.sh'} {args}; " * times
    res = _bash(src + "env -0", dirs, extra_env)
    return _parse_env(base.stdout), _parse_env(res.stdout), res.stderr, \
        res.returncode


def _changed(before, after):
    names = set(before) | set(after)
    return {n for n in names if before.get(n) != after.get(n)}


def _assert_nothing_written(dirs, fake_maca=None, snapshot=None):
    cwd, home = dirs
    assert list(cwd.iterdir()) == []
    assert list(home.iterdir()) == []
    if fake_maca is not None:
        assert sorted(p for p in fake_maca.rglob("*")) == snapshot


def _expected_path_head(maca: Path):
    return [f"{maca}/tools/cu-bridge/tools", f"{maca}/tools/cu-bridge/bin",
            f"{maca}/bin", f"{maca}/mxgpu_llvm/bin"]


def _check_maca_values(env, maca: Path):
    assert env["MACA_PATH"] == str(maca)
    bridge = f"{maca}/tools/cu-bridge"
    assert env["CUCC_PATH"] == bridge
    assert env["CUDA_PATH"] == bridge
    assert env["CUDA_HOME"] == bridge
    assert env["MACA_CLANG_PATH"] == f"{maca}/mxgpu_llvm/bin"
    path = env["PATH"].split(":")
    assert path == _expected_path_head(maca) + BASE_PATH.split(":")
    assert "" not in path and len(path) == len(set(path))


def test_with_argument_and_version(c550_tree, dirs, fake_maca):
    snap = sorted(fake_maca.rglob("*"))
    before, after, err, rc = _source_env(c550_tree, dirs, str(fake_maca))
    assert rc == 0 and err == b""
    assert _changed(before, after) == MACA_VARS | {"MACA_VERSION"}
    _check_maca_values(after, fake_maca)
    assert after["MACA_VERSION"] == RELEASE
    # LD_LIBRARY_PATH was unset: no trailing ':' / empty entry
    assert after["LD_LIBRARY_PATH"] == \
        f"{fake_maca}/lib:{fake_maca}/mxgpu_llvm/lib"
    _assert_nothing_written(dirs, fake_maca, snap)


def test_without_version_file(c550_tree, dirs, fake_maca):
    (fake_maca / "Version.txt").unlink()
    before, after, err, rc = _source_env(c550_tree, dirs, str(fake_maca))
    assert rc == 0 and err == b""
    assert _changed(before, after) == MACA_VARS
    assert "MACA_VERSION" not in after
    _check_maca_values(after, fake_maca)
    _assert_nothing_written(dirs)


def test_version_file_with_blanks(c550_tree, dirs, fake_maca):
    (fake_maca / "Version.txt").write_text("\n  Version: 2.30.0.5 \r\n")
    _, after, _, rc = _source_env(c550_tree, dirs, str(fake_maca))
    assert rc == 0
    assert after["MACA_VERSION"] == "2.30.0.5"


def test_no_argument_uses_exported_maca_path(c550_tree, dirs, fake_maca):
    extra = {"MACA_PATH": str(fake_maca), "LD_LIBRARY_PATH": "/x/lib:"}
    before, after, err, rc = _source_env(c550_tree, dirs, "", extra)
    assert rc == 0 and err == b""
    # MACA_PATH itself is unchanged
    assert _changed(before, after) == (MACA_VARS - {"MACA_PATH"}) | \
        {"MACA_VERSION"}
    _check_maca_values(after, fake_maca)
    assert after["LD_LIBRARY_PATH"] == \
        f"{fake_maca}/lib:{fake_maca}/mxgpu_llvm/lib:/x/lib"


def test_argument_beats_exported_maca_path(c550_tree, dirs, fake_maca,
                                           tmp_path):
    other = tmp_path / "other-maca"
    other.mkdir()
    _, after, _, rc = _source_env(c550_tree, dirs, str(fake_maca),
                                  {"MACA_PATH": str(other)})
    assert rc == 0
    _check_maca_values(after, fake_maca)


def test_relative_argument_made_absolute(c550_tree, dirs, fake_maca):
    cwd, _ = dirs
    (cwd / "m").symlink_to(fake_maca)
    _, after, _, rc = _source_env(c550_tree, dirs, "m")
    assert rc == 0
    assert after["MACA_PATH"] == str(cwd / "m")
    assert all(p.startswith("/") for p in after["PATH"].split(":"))


def test_default_opt_maca(c550_tree, dirs):
    before, after, err, rc = _source_env(c550_tree, dirs, "")
    assert rc == 0
    if os.path.isdir("/opt/maca"):
        assert after["MACA_PATH"] == "/opt/maca"
        assert after["CUDA_HOME"] == "/opt/maca/tools/cu-bridge"
    else:
        assert b"/opt/maca" in err and b"warning" in err
        assert _changed(before, after) == set()


def test_sourcing_twice_is_idempotent(c550_tree, dirs, fake_maca):
    _, once, _, _ = _source_env(c550_tree, dirs, str(fake_maca))
    _, twice, err, rc = _source_env(c550_tree, dirs, str(fake_maca),
                                    times=2)
    assert rc == 0 and err == b""
    assert twice == once
    path = twice["PATH"].split(":")
    assert len(path) == len(set(path))


def test_path_cleanup_of_empty_and_duplicate_entries(c550_tree, dirs,
                                                     fake_maca):
    extra = {"PATH": f"/bin::{fake_maca}/bin:/usr/bin:/bin:"}
    _, after, _, rc = _source_env(c550_tree, dirs, str(fake_maca), extra)
    assert rc == 0
    assert after["PATH"].split(":") == [*_expected_path_head(fake_maca), "/bin", "/usr/bin"]


def test_shell_state_unchanged(c550_tree, dirs, fake_maca):
    """No shell options, functions, non-exported variables or cwd change
    leak into the caller; works under the caller's own set -eu."""
    probe = ('set -o; shopt; echo "$-"; pwd; declare -F; '
             'compgen -v | grep -v -e "^_$" -e "^BASH_" -e "^FUNCNAME$"')
    script = (f"{probe}; echo @@@; source {c550_tree / 'env.sh'} "
              f"{fake_maca}; {probe}")
    res = _bash(script, dirs)
    assert res.returncode == 0, res.stderr
    before, after = res.stdout.split(b"@@@\n")
    added = set(after.split()) - set(before.split())
    assert added <= {n.encode() for n in MACA_VARS | {"MACA_VERSION"}}
    # option listings identical once the new variable names are removed
    strip = lambda b: [l for l in b.splitlines() if l not in added]  # noqa
    assert strip(before) == strip(after)

    res = _bash(f"set -eu; source {c550_tree / 'env.sh'} {fake_maca}; "
                'echo "opts=$-"; echo done', dirs, unset=("LD_LIBRARY_PATH",))
    assert res.returncode == 0, res.stderr
    assert b"done" in res.stdout and b"e" in res.stdout.split(b"opts=")[1]


def test_missing_maca_path_warns_and_returns(c550_tree, dirs, tmp_path):
    missing = tmp_path / "no-such-maca"
    before, after, err, rc = _source_env(c550_tree, dirs, str(missing))
    assert rc == 0
    assert b"warning" in err.lower() and str(missing).encode() in err
    assert _changed(before, after) == set()
    # the caller's shell keeps running (return, not exit)
    res = _bash(f"source {c550_tree / 'env.sh'} {missing}; echo alive; "
                "exit 7", dirs)
    assert res.returncode == 7 and res.stdout == b"alive\n"
    _assert_nothing_written(dirs)


def test_executing_instead_of_sourcing_fails(c550_tree, dirs, fake_maca):
    res = _bash(f"bash {c550_tree / 'env.sh'} {fake_maca}", dirs)
    assert res.returncode != 0
    assert b"source" in res.stderr


# --------------------------------------------------------------------------- how build-wheel runs env.sh
# A synthetic device whose series adds env.sh: its time limit, and the processes
# it leaves behind, through the real CLI.

# The background child writes its own PID (exec keeps it), atomically, and env.sh
# waits for the file so that the PID is known before env.sh returns.
SLEEPING_CHILD = """\
( echo "$BASHPID" > "$1.tmp" && mv "$1.tmp" "$1"; exec sleep 1000 ) &
until [ -e "$1" ]; do :; done
"""
LOOPING_CHILD = """\
( echo "$BASHPID" > "$1.tmp" && mv "$1.tmp" "$1"; while true; do :; done ) &
until [ -e "$1" ]; do :; done
"""
TIMEOUT_ERROR = ("error: sourcing {script} {pid_file} did not finish within 1 s and was "
                 "stopped, with its whole process group; nothing was built")
TIMEOUT_HINT = ("hint: Fix env.sh so that it returns (it is sourced: nothing in it may wait "
                "for input or keep running), or raise the limit with `env-timeout = <seconds>` "
                "under [build] in device.toml (default 300).")


def _build_wheel(world: SyntheticUpstream, *extra: str) -> CliResult:
    return world.cli("build-wheel", "-d", "devA", "--dir", str(world.build),
                     "--out", str(world.root / "out"), *extra)


def _gone(pid: int) -> bool:
    """The process has exited. It is not our child, so we cannot reap it: a
    zombie (state Z, waiting for a parent that may never reap it) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat[stat.rfind(")") + 2:].split()[0] == "Z"


@pytest.fixture
def device_with_env_sh(upstream: SyntheticUpstream):  # type: ignore[no-untyped-def]
    """make(env_sh, env_timeout): devA's series adds `env_sh` as env.sh, and its
    device.toml sets build.env-timeout."""

    def make(env_sh: str, env_timeout: int) -> SyntheticUpstream:
        assert upstream.cli("unpatch", "-d", "devA", "--dir", str(upstream.build)).code == 0
        (upstream.tree / "env.sh").write_text(env_sh)
        commit_all(upstream.tree, "Add env.sh")
        assert upstream.cli("patch", "-d", "devA", "--dir", str(upstream.build)).code == 0
        device = upstream.store / "devA" / "device.toml"
        assert device.read_text().endswith('[build]\nenv-script = "env.sh"\n')
        device.write_text(device.read_text() + f"env-timeout = {env_timeout}\n")
        return upstream

    return make


@pytest.mark.slow
def test_env_sh_past_env_timeout_is_a_build_error_and_is_stopped(device_with_env_sh,
                                                                 tmp_path: Path) -> None:
    world = device_with_env_sh('sleep 60 &\necho "$!" > "$1"\nwait "$!"\n', env_timeout=1)
    pid_file = tmp_path / "sleep.pid"
    result = _build_wheel(world, "--env-arg", str(pid_file))
    assert result.code == 8, result.output
    script = world.tree / "env.sh"
    lines = result.stderr.splitlines()
    assert TIMEOUT_ERROR.format(script=script, pid_file=pid_file) in lines
    assert TIMEOUT_HINT in lines
    assert "internal error" not in result.stderr
    assert _gone(int(pid_file.read_text()))
    assert not list((world.root / "out").glob("*.whl"))


@pytest.mark.slow
@pytest.mark.parametrize("child", [SLEEPING_CHILD, LOOPING_CHILD], ids=["sleep", "busy-loop"])
def test_background_child_of_a_succeeding_env_sh_is_ended(device_with_env_sh, tmp_path: Path,
                                                          child: str) -> None:
    # The child keeps env.sh's stdout and stderr open: the run must wait for bash,
    # not for them (else it would end only at the time limit, with exit 8).
    world = device_with_env_sh(child + "export DEMO_ENV=1\n", env_timeout=120)
    pid_file = tmp_path / "child.pid"
    result = _build_wheel(world, "--env-arg", str(pid_file))
    assert result.code == 0, result.output
    assert "env.sh set DEMO_ENV=1" in result.stderr
    assert _gone(int(pid_file.read_text()))
    assert [p.name for p in (world.root / "out").glob("*.whl")] == ["demo-1.0-py3-none-any.whl"]


@pytest.mark.slow
@pytest.mark.parametrize("child", [SLEEPING_CHILD, LOOPING_CHILD], ids=["sleep", "busy-loop"])
def test_background_child_of_a_failing_env_sh_is_ended(device_with_env_sh, tmp_path: Path,
                                                       child: str) -> None:
    world = device_with_env_sh(child + "return 3\n", env_timeout=120)
    pid_file = tmp_path / "child.pid"
    result = _build_wheel(world, "--env-arg", str(pid_file))
    assert result.code == 8, result.output
    lines = result.stderr.splitlines()
    script = world.tree / "env.sh"
    assert f"error: sourcing {script} {pid_file} failed with status 3:" in lines
    assert "env.sh returned status 3" in lines
    assert _gone(int(pid_file.read_text()))
