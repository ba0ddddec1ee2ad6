"""env.sh: the MACA build environment, sourced by bash."""

import os
import subprocess
from pathlib import Path

import pytest

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
