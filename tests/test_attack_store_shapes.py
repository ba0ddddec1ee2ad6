"""Store shapes that `check` and `list` used to pass by (attack report 19:
MEDIUM 6, LOW 10 and the default-base gap of LOW 12).

Every folder under the store is a device: one without a device.toml (or whose
device.toml is a folder) fails `check` by name and stands in `list`'s matrix,
so CI runs its check. A stage a killed `patch` left beside a base folder is
named as that, with how it goes, not as an invalid base name. A default-base
that names no base fails `check`, naming device.toml and the key.
"""

from __future__ import annotations

import json

from helpers import SyntheticUpstream, commit_all, error_lines

from patchtool.core.faults import VARIABLE

NOT_A_DEVICE_HINT = (
    "hint: Every folder under the store is a device: give it a device.toml "
    "(display-name, vendor), or move the folder out of the store."
)


def _config_details(stdout: str, device: str) -> list[str]:
    for entry in json.loads(stdout)["include"]:
        for record in entry["checks"]:
            if record["device"] == device and record["base"] == "" and record["check"] == "config":
                assert record["ok"] is False
                return list(record["details"])
    raise AssertionError(f"no config record of {device}")


def test_a_device_folder_without_device_toml_fails_check_and_is_in_the_matrix(
    upstream: SyntheticUpstream,
) -> None:
    device_toml = upstream.store / "devA" / "device.toml"
    device_toml.unlink()
    (upstream.base_folder / "evil.patch").write_text("garbage\n")
    (upstream.base_folder / "series").write_text("evil.patch\n")
    (upstream.store / "README.md").write_text("not a device\n")
    result = upstream.cli("check", "--json")
    assert result.code == 6, result.output
    problem = (
        f"the store folder {upstream.store / 'devA'} is not a valid device: "
        f"{device_toml} does not exist"
    )
    assert _config_details(result.stdout, "devA") == [problem]
    matrix = json.loads(result.stdout)
    assert matrix["ok"] is False
    assert [(e["device"], e["base"], e["command"]) for e in matrix["include"]] == [
        ("devA", None, "patchtool check -d devA")
    ]
    listed = upstream.cli("list", "--json")
    assert listed.code == 0, listed.output
    assert json.loads(listed.stdout)["include"] == [
        {
            "device": "devA",
            "display_name": None,
            "base": None,
            "problem": problem,
            "command": "patchtool check -d devA",
        }
    ]
    # The matrix's command fails, by name.
    alone = upstream.cli("check", "-d", "devA")
    assert alone.code == 6
    assert error_lines(alone) == [f"error: {problem}", NOT_A_DEVICE_HINT]


def test_a_device_toml_that_is_a_folder_fails_check(upstream: SyntheticUpstream) -> None:
    device_toml = upstream.store / "devA" / "device.toml"
    device_toml.unlink()
    device_toml.mkdir()
    result = upstream.cli("check", "--json")
    assert result.code == 6, result.output
    assert _config_details(result.stdout, "devA") == [
        f"the store folder {upstream.store / 'devA'} is not a valid device: "
        f"{device_toml} is not a file"
    ]


def test_a_new_device_folder_without_device_toml_fails_check_beside_a_good_one(
    upstream: SyntheticUpstream,
) -> None:
    garbage = upstream.store / "devB" / "demo-1.0"
    garbage.mkdir(parents=True)
    (garbage / "series").write_text("evil.patch\n")
    (garbage / "evil.patch").write_text("garbage\n")
    result = upstream.cli("check", "--json")
    assert result.code == 6, result.output
    assert _config_details(result.stdout, "devB") == [
        f"the store folder {upstream.store / 'devB'} is not a valid device: "
        f"{upstream.store / 'devB' / 'device.toml'} does not exist"
    ]
    entries = json.loads(upstream.cli("list", "--json").stdout)["include"]
    assert [(e["device"], e["base"]) for e in entries] == [("devA", "demo-1.0"), ("devB", None)]
    text = upstream.cli("list")
    assert text.code == 0
    assert [line.split()[:2] for line in text.stdout.splitlines()[1:3]] == [
        ["devA", "demo-1.0"],
        ["devB", "-"],
    ]


def test_a_device_without_bases_is_one_matrix_entry_in_list_as_in_check(
    upstream: SyntheticUpstream,
) -> None:
    (upstream.store / "devB").mkdir()
    (upstream.store / "devB" / "device.toml").write_text('display-name = "B"\nvendor = "V"\n')
    listed = json.loads(upstream.cli("list", "--json").stdout)["include"]
    checked = json.loads(upstream.cli("check", "--json").stdout)["include"]
    assert [(e["device"], e["base"], e["command"]) for e in listed] == [
        (e["device"], e["base"], e["command"]) for e in checked
    ]
    assert listed[-1] == {
        "device": "devB",
        "display_name": "B",
        "base": None,
        "problem": "no base",
        "command": "patchtool check -d devB",
    }


def test_a_killed_patch_leaves_a_stage_that_check_names_as_a_leftover(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "feature.txt").write_text("feature\n")
    commit_all(upstream.tree, "demo: add a feature")
    killed = upstream.run("patch", env={VARIABLE: "patch:export:before-exchange"})
    assert killed.code not in (0, 1), killed.output
    stage = upstream.store / "devA" / ".demo-1.0.patchtool-export"
    assert stage.is_dir()
    result = upstream.cli("check", "--json")
    assert result.code == 6, result.output
    records = [
        r for e in json.loads(result.stdout)["include"] for r in e["checks"]
        if r["check"] == "leftovers"
    ]  # fmt: skip
    assert records[0] == {
        "device": "devA",
        "base": "",
        "check": "leftovers",
        "ok": False,
        "details": [
            f"{stage}: left by a `patchtool patch` (or `import`) that was killed while it "
            "wrote devA/demo-1.0; that base folder is whole",
            "hint: the next `patchtool patch --device-type devA` removes it, or remove it "
            f"yourself: rm -r -- {stage}",
        ],
        "duration_s": 0.0,
    }
    # Every entry of the device carries it: the base's own CI job fails too.
    alone = upstream.cli("check", "-d", "devA", "--commit-id", "demo-1.0")
    assert alone.code == 6
    assert "not a valid name" not in alone.output
    assert error_lines(alone)[0] == "error: 1 check(s) failed: devA/device.toml leftovers"
    # The next patch removes it, and check passes again.
    assert upstream.run("patch").code == 0
    assert not stage.exists()
    assert upstream.cli("check").code == 0


def test_a_default_base_that_names_no_base_fails_check(upstream: SyntheticUpstream) -> None:
    device_toml = upstream.store / "devA" / "device.toml"
    device_toml.write_text('default-base = "nope"\n' + device_toml.read_text())
    result = upstream.cli("check", "--json")
    assert result.code == 6, result.output
    assert _config_details(result.stdout, "devA") == [
        f"{device_toml}: default-base 'nope' names no base of 'devA'"
    ]
    text = upstream.cli("check")
    assert text.code == 6
    assert error_lines(text) == [
        "error: 1 check(s) failed: devA/device.toml config",
        "hint: Bases of devA: demo-1.0 (60984d13656d, 1.0). Give a full id, a unique prefix of "
        "7+ hex digits, a folder name or a version.",
    ]
    device_toml.write_text(device_toml.read_text().replace('"nope"', '"demo-1.0"'))
    assert upstream.cli("check").code == 0
