"""`patch` and `check` agree (issue 21, defect 3): one rule set, lint.series_findings,
that `check` runs on the store and `patch` on what it writes; and a recipient
added to (or removed from) device.toml is taken up by the next `patch`, which
encrypts the private patches anew to device.toml's recipients."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import CliResult, SyntheticUpstream, commit_all, error_lines, git
from test_private import PrivateWorld, new_identity, private, set_recipients, store_files

from patchtool.series import lint
from patchtool.series.lint import LintFinding

__all__ = ["private"]  # the fixture of test_private.py, for the tests below

SECRET = "add-the-decode-path.patch.age"


def ci_key(world: PrivateWorld) -> str:
    device = (world.world.store / "devA" / "device.toml").read_text()
    found = re.search(r'ci = "(age1[^"]+)"', device)
    assert found is not None
    return found[1]


def patch(world: PrivateWorld) -> CliResult:
    return world.cli("patch", "-d", "devA", "--dir", str(world.world.build))


def check(world: PrivateWorld, identity: Path) -> CliResult:
    return world.cli("check", "-d", "devA", identity=identity)


def lint_lines(result: CliResult) -> list[str]:
    """`check`'s report from its first FAIL line on."""
    lines = result.stdout.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("FAIL"))
    return lines[first:]


def unchanged(world: PrivateWorld) -> list[str]:
    return [
        "» rendering commits after demo-1.0 (60984d13656d)",
        "store unchanged: 3 patch(es)",
    ]


def test_after_a_recipient_is_added_patch_reencrypts_what_check_refuses(
    private: PrivateWorld, tmp_path: Path
) -> None:
    base = private.base
    bob, bob_key = new_identity(tmp_path, "bob")
    before = patch(private)
    assert (before.code, before.stdout, before.stderr.splitlines()) == (
        0, f"{base}\n", unchanged(private))  # fmt: skip
    assert check(private, private.identity).code == 0

    set_recipients(private.world, {"ci": ci_key(private), "bob": bob_key})
    refused = check(private, private.identity)
    assert refused.code == 7
    assert lint_lines(refused) == [
        "FAIL  devA  demo-1.0  export",
        f"        a fresh export would write: changed patch {SECRET}",
        "FAIL  devA  demo-1.0  lint",
        f"        {SECRET}: is not encrypted to bob, whom device.toml names "
        "(re-encrypt: `patchtool patch`)",
    ]
    assert error_lines(refused)[0] == (
        "error: 2 check(s) failed: devA/demo-1.0 export, devA/demo-1.0 lint")
    assert check(private, bob).code == 3  # bob cannot open it yet

    stored = store_files(private)
    exported = patch(private)
    assert exported.code == 0, exported.output
    assert exported.stderr.splitlines() == [
        "» rendering commits after demo-1.0 (60984d13656d)",
        f"{SECRET}: encrypted anew to device.toml's recipients ci, bob (it was encrypted to ci)",
        f"changed patch {SECRET}",
    ]
    after = store_files(private)
    assert [name for name in after if after[name] != stored[name]] == [SECRET]
    assert b'recipients = [\n    "ci",\n    "bob",\n]\n' in after[SECRET]

    assert check(private, private.identity).code == 0
    assert check(private, bob).code == 0
    again = patch(private)
    assert (again.code, again.stderr.splitlines()) == (0, unchanged(private))
    assert store_files(private) == after  # no churn once the recipients agree


def test_after_a_recipient_is_removed_patch_reencrypts_without_them(
    private: PrivateWorld, tmp_path: Path
) -> None:
    _, bob_key = new_identity(tmp_path, "bob")
    set_recipients(private.world, {"ci": ci_key(private), "bob": bob_key})
    assert patch(private).code == 0
    set_recipients(private.world, {"ci": ci_key(private)})
    refused = check(private, private.identity)
    assert refused.code == 7
    assert lint_lines(refused)[2:] == [
        "FAIL  devA  demo-1.0  lint",
        f"        {SECRET}: is encrypted to bob, whom device.toml no longer names "
        "(re-encrypt: `patchtool patch`)",
    ]
    exported = patch(private)
    assert exported.code == 0, exported.output
    assert exported.stderr.splitlines()[1:] == [
        f"{SECRET}: encrypted anew to device.toml's recipients ci (it was encrypted to ci, bob)",
        f"changed patch {SECRET}",
    ]
    assert check(private, private.identity).code == 0


@pytest.mark.cli_in_process
def test_a_rule_of_the_rule_set_is_checked_by_check_and_warned_by_patch(
    upstream: SyntheticUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new rule, added where the rules live, reaches both commands: here one
    that finds every patch that mentions function_3."""
    rules = lint._lint_patch

    def with_a_new_rule(data: bytes, name: str, rendered: bool = False) -> list[LintFinding]:
        found = rules(data, name, rendered)
        if b"function_3" in data:
            found.append(LintFinding(name, "changes", "mentions function_3"))
        return found

    assert upstream.run("unpatch").code == 0
    core = upstream.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 3\n", "return 33\n"))
    commit_all(upstream.tree, "Return 33", "Because.\n\nUpstream-Status: Pending")
    assert upstream.run("patch").code == 0
    monkeypatch.setattr(lint, "_lint_patch", with_a_new_rule)

    checked = upstream.run("check")
    assert checked.code == 7
    assert "        return-33.patch: mentions function_3" in checked.stdout.splitlines()
    warned = upstream.run("patch")
    assert warned.code == 0, warned.output
    assert warned.stderr.splitlines()[1:3] == [
        "warning: return-33.patch: mentions function_3",
        "warning: return-33.patch would fail `patchtool check`; it is the tree's last commit "
        f"({git(upstream.tree, 'rev-parse', 'HEAD')[:10]}): in {upstream.tree}, change the "
        "lines, `git add` them and run `git commit --amend`, then run `patchtool patch` again",
    ]
    strict = upstream.run("patch", "--strict")
    assert strict.code == 7


def test_a_patch_file_series_does_not_list_is_refused_by_check_and_warned_by_patch(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "first.txt").write_text("first\n")
    commit_all(upstream.tree, "Add first", "The device needs it.\n\nUpstream-Status: Pending")
    assert upstream.run("patch").code == 0
    stray = upstream.base_folder / "stray.patch"
    stray.write_bytes((upstream.base_folder / "add-first.patch").read_bytes())
    problem = f"stray.patch is in {upstream.base_folder} but series does not list it"
    checked = upstream.run("check")
    assert checked.code == 7
    assert f"        {problem}" in checked.stdout.splitlines()
    warned = upstream.run("patch")
    assert warned.code == 0, warned.output
    assert warned.stderr.splitlines()[1:] == [
        f"warning: {problem}, which `patchtool check` refuses: bring it into the tree's "
        "series (`patchtool import`), or delete it",
        "store unchanged: 1 patch(es)",
    ]
