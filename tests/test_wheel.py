"""build-wheel on a small synthetic project: env.sh's sandbox, its arguments,
what it reports, and the output folder."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, commit_all

ENV_SH = """\
# test env.sh: sets variables, and tries to reach the user's files
export DEMO_FLAVOUR="${1:-plain}"
export PATH="/opt/demo/bin:$PATH"
git config --global user.name "env.sh was here" 2>/dev/null
echo touched > "$HOME/touched-by-env-sh"
echo "env.sh: configured $DEMO_FLAVOUR" >&2
"""


@pytest.fixture
def buildable(upstream: SyntheticUpstream) -> SyntheticUpstream:
    world = upstream
    assert world.cli("unpatch", "-d", "devA", "--dir", str(world.build)).code == 0
    (world.tree / "env.sh").write_text(ENV_SH)
    commit_all(world.tree, "Add env.sh")
    assert world.cli("patch", "-d", "devA", "--dir", str(world.build)).code == 0
    return world


def test_env_sh_cannot_touch_the_users_home_or_git_config(buildable: SyntheticUpstream,
                                                          hermetic_seal: Path) -> None:
    gitconfig = hermetic_seal / ".gitconfig"
    gitconfig.write_text("[user]\n\tname = Real User\n")
    result = buildable.cli("build-wheel", "-d", "devA", "--dir", str(buildable.build),
                           "--env-arg", "fancy")
    assert result.code == 0, result.output
    assert gitconfig.read_text() == "[user]\n\tname = Real User\n"
    assert not (hermetic_seal / "touched-by-env-sh").exists()
    assert "env.sh set DEMO_FLAVOUR=fancy" in result.stderr
    assert "env.sh set PATH=/opt/demo/bin:" in result.stderr
    assert "env.sh: configured fancy" in result.stderr
    wheel = Path(result.stdout.strip())
    assert wheel.parent == buildable.build / "devA" / "dist"
    with zipfile.ZipFile(wheel) as archive:
        provenance = archive.read("demo-1.0.dist-info/patchtool-provenance.json").decode()
    assert '"arguments": [\n      "fancy"\n    ]' in provenance


def test_changed_env_sh_argument_is_a_new_build_not_a_reuse(buildable: SyntheticUpstream) -> None:
    first = buildable.cli("build-wheel", "-d", "devA", "--dir", str(buildable.build))
    assert first.code == 0, first.output
    same = buildable.cli("build-wheel", "-d", "devA", "--dir", str(buildable.build))
    assert "reusing demo-1.0-py3-none-any.whl" in same.stderr
    other = buildable.cli("build-wheel", "-d", "devA", "--dir", str(buildable.build),
                          "--env-arg", "other")
    assert other.code == 0 and "reusing" not in other.stderr


def test_required_file_missing_is_named(buildable: SyntheticUpstream) -> None:
    device = buildable.store / "devA" / "device.toml"
    device.write_text(device.read_text() + 'required-files = ["demo/not-there.py"]\n')
    out = buildable.root / "out"
    result = buildable.cli("build-wheel", "-d", "devA", "--dir", str(buildable.build),
                           "--out", str(out))
    assert result.code == 8
    assert "lacks file(s) that device.toml requires: demo/not-there.py" in result.stderr
    assert not list(out.glob("*.whl"))


def test_unknown_key_in_device_toml_names_the_nearest(buildable: SyntheticUpstream) -> None:
    device = buildable.store / "devA" / "device.toml"
    device.write_text(device.read_text().replace("env-script", "env-scirpt"))
    result = buildable.cli("build-wheel", "-d", "devA", "--dir", str(buildable.build))
    assert result.code == 6
    assert f"{device}: unknown key build.'env-scirpt'; did you mean 'env-script'?" in result.stderr
