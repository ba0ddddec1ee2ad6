"""Every hint specific to its cause (issue 21 #8): a recipient lint failure says
how to re-encrypt, a check without a key says --identity or --public-only, a
lost private trailer on an earlier commit is reworded in `git rebase -i`, an
export says which patch moves in `series`, a hint that names `unpatch` keeps the
user's --dir, a wrong -p is one mistake with one exit code and its hint whenever
another -p finds a path, and an unknown command gets the one "did you mean"."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyrage
from helpers import (
    CliResult,
    SyntheticUpstream,
    commit_all,
    error_lines,
    git,
    run_cli,
    snapshot,
)
from test_daily_state import STOPPED, stopped_rebase
from test_private import PrivateWorld, new_identity, private, set_recipients  # noqa: F401
from test_rebase import world  # noqa: F401 (fixture)

from patchtool.core.errors import ExitCode

# --------------------------------------------------------------------------- check's hints


def ci_key(keys: PrivateWorld) -> str:
    secret = [line for line in keys.identity.read_text().splitlines() if line.startswith("AGE-")]
    return str(pyrage.x25519.Identity.from_str(secret[0]).to_public())


def test_a_recipient_lint_failure_says_how_to_re_encrypt(
    private: PrivateWorld,  # noqa: F811
    tmp_path: Path,
) -> None:
    _, bob = new_identity(tmp_path, "bob")
    set_recipients(private.world, {"ci": ci_key(private), "bob": bob})
    checked = private.cli("check", "-d", "devA", "--commit-id", "demo-1.0",
                          identity=private.identity)  # fmt: skip
    assert checked.code == ExitCode.STALE
    assert error_lines(checked) == [
        "error: 2 check(s) failed: devA/demo-1.0 export, devA/demo-1.0 lint",
        "hint: A private patch is encrypted anew to device.toml's recipients by an export: "
        "make the tree with a key that opens it (`patchtool unpatch --device-type devA "
        "--commit-id demo-1.0` --identity FILE), then run `patchtool patch --device-type devA` "
        "and commit the store.",
    ]
    # Nothing about amending, rebase -i, whitespace or Upstream-Status values.
    assert "amend" not in checked.stderr and "Upstream-Status" not in checked.stderr


def test_a_message_lint_failure_keeps_the_commit_advice(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    core = upstream.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 3\n", "return 33\n"))
    commit_all(upstream.tree, "No trailer", "It says why.")
    assert upstream.run("patch").code == 0
    checked = upstream.run("check")
    assert checked.code == ExitCode.STALE
    assert error_lines(checked) == [
        "error: 1 check(s) failed: devA/demo-1.0 lint",
        "hint: Lint problems are fixed in the build tree's commits (`patchtool unpatch "
        "--device-type devA --commit-id demo-1.0` makes the tree): `git commit --amend` for "
        "the last commit or `git rebase -i patchtool/base` (mark a commit `reword` for its "
        "message, `edit` for its lines) for earlier ones, then `patchtool patch --device-type "
        "devA`; a patch's message needs a subject line, a blank line, a body that says why the "
        "change is needed, and as its last paragraph a trailer line such as `Upstream-Status: "
        "Pending` (the value one of Pending, Submitted <where>, Backport [<where>], Denied "
        "<why>, Inappropriate <why>, Inactive-Upstream <details>).",
    ]


def test_check_offline_without_a_key_says_identity_or_public_only(
    private: PrivateWorld,  # noqa: F811
) -> None:
    checked = private.cli("check", "-d", "devA", "--offline")
    assert checked.code == ExitCode.NOT_FOUND
    rows = [line.split()[0] for line in checked.stdout.splitlines() if not line.startswith(" ")]
    assert rows.count("FAIL") == 1 and rows.count("skip") == 3
    # The count is the FAIL rows' and the hint the unpatch one, not a generic one.
    assert error_lines(checked) == [
        "error: 1 check(s) failed: devA/demo-1.0 series",
        "hint: Name your age identity with --identity FILE or PATCHTOOL_IDENTITY, or pass "
        "--public-only to use the public patches only (`patchtool patch -d devA` refuses to "
        "export from such a tree).",
    ]


# --------------------------------------------------------------------------- a lost trailer


def reword_without_trailer(tree: Path, position: int) -> str:
    """Reword commit `position` (1-based after the base) dropping its private
    trailer, as a user editing the message in `git rebase -i` would; its new id."""
    environment = {
        **os.environ,
        "GIT_SEQUENCE_EDITOR": f"sed -i '{position}s/^pick/reword/'",
        "GIT_EDITOR": "sed -i '/^Patchtool-Private:/d'",
    }
    subprocess.run(["git", "rebase", "--quiet", "-i", "patchtool/base"], cwd=tree,
                   env=environment, check=True, capture_output=True)  # fmt: skip
    return git(tree, "rev-parse", f"HEAD~{3 - position}").strip()


def test_a_lost_trailer_on_an_earlier_commit_is_reworded_not_amended(
    private: PrivateWorld,  # noqa: F811
) -> None:
    commit = reword_without_trailer(private.tree, 2)
    before = snapshot(private.base)
    refused = private.cli("patch", "-d", "devA", "--dir", str(private.world.build),
                          identity=private.identity)  # fmt: skip
    assert refused.code == ExitCode.USAGE
    assert error_lines(refused) == [
        "error: these commits carry the change of a private patch but no `Patchtool-Private: "
        f"yes` trailer, so they would be exported in clear: {commit[:10]} Add the decode path",
        f"hint: Put the trailer back: `git rebase -i patchtool/base`, mark {commit[:10]} "
        "`reword` and add the line `Patchtool-Private: yes` as the message's last line, or "
        "pass --publish to make them public on purpose.",
    ]
    assert snapshot(private.base) == before


def test_a_lost_trailer_on_the_last_commit_is_amended(
    private: PrivateWorld,  # noqa: F811
) -> None:
    git(private.tree, "reset", "--quiet", "--hard", "HEAD~1")  # the private commit is last
    subprocess.run(["git", "commit", "--quiet", "--amend", "-m", "Add the decode path",
                    "-m", "Why.\n\nUpstream-Status: Pending"], cwd=private.tree, check=True)  # fmt: skip
    refused = private.cli("patch", "-d", "devA", "--dir", str(private.world.build),
                          identity=private.identity)  # fmt: skip
    assert refused.code == ExitCode.USAGE
    assert error_lines(refused)[-1] == (
        "hint: Put the trailer back: `git commit --amend --trailer 'Patchtool-Private: yes'`, "
        "or pass --publish to make them public on purpose."
    )


# --------------------------------------------------------------------------- what differs


def two_patches(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    core = upstream.tree / "demo" / "core.py"
    for number in (3, 31):
        core.write_text(core.read_text().replace(f"return {number}\n", f"return {number}00\n"))
        commit_all(upstream.tree, f"Return {number}00")
    assert upstream.run("patch").code == 0


def test_patch_check_says_which_patch_moves_in_series(upstream: SyntheticUpstream) -> None:
    two_patches(upstream)
    environment = {**os.environ, "GIT_SEQUENCE_EDITOR": "sed -i '1{h;d};2G'"}
    subprocess.run(["git", "rebase", "--quiet", "-i", "patchtool/base"], cwd=upstream.tree,
                   env=environment, check=True, capture_output=True)  # fmt: skip
    stale = upstream.run("patch", "--check")
    assert stale.code == ExitCode.STALE
    assert error_lines(stale) == [
        f"error: {upstream.base_folder} differs from what a fresh export of {upstream.tree} "
        "would write:",
        "  changed patch return-3100.patch",
        "  changed patch return-300.patch",
        "  series: return-3100.patch moves from position 2 to 1",
        "  series: return-300.patch moves from position 1 to 2",
        "hint: Run `patchtool patch --device-type devA` and commit the store.",
    ]
    exported = upstream.run("patch")
    assert exported.code == 0
    assert exported.stderr.splitlines()[-2:] == [
        "series: return-3100.patch moves from position 2 to 1",
        "series: return-300.patch moves from position 1 to 2",
    ]


def test_a_series_file_written_by_hand_is_named_as_rewritten(
    upstream: SyntheticUpstream,
) -> None:
    two_patches(upstream)
    series = upstream.base_folder / "series"
    series.write_text(series.read_text() + "\n\n")
    stale = upstream.run("patch", "--check")
    assert stale.code == ExitCode.STALE
    assert error_lines(stale)[1:-1] == ["  series: rewritten as patchtool writes it"]


# --------------------------------------------------------------------------- --dir kept


def test_the_no_tree_hint_keeps_the_users_dir(upstream: SyntheticUpstream) -> None:
    for command in ("patch", "status", "build-wheel"):
        result = run_cli("--store", str(upstream.store), command, "-d", "devA", "--dir",
                         "my build", cwd=upstream.root)  # fmt: skip
        assert result.code == ExitCode.NOT_FOUND, (command, result.output)
        assert error_lines(result) == [
            f"error: no build tree for device 'devA' under {upstream.root / 'my build' / 'devA'}",
            "hint: Create one with `patchtool unpatch --device-type devA --dir 'my build'`.",
        ]


# --------------------------------------------------------------------------- -p


def run_import(upstream: SyntheticUpstream, *args: str) -> CliResult:
    return upstream.cli("import", "--device-type", "devA", "--dir", str(upstream.build),
                     "--author", "Ada <ada@example.invalid>", "-m", "vendor", *args)  # fmt: skip


def diff_of(tree: Path, files: dict[str, str], *prefix: str) -> bytes:
    """A change to the tree's files, as `git diff` writes it (with `prefix` as its
    --src-prefix and --dst-prefix); the tree is left as it was."""
    for name, text in files.items():
        (tree / name).write_text(text)
    git(tree, "add", "--all")
    options = [f"--src-prefix=a/{prefix[0]}", f"--dst-prefix=b/{prefix[0]}"] if prefix else []
    diff = subprocess.run(["git", "diff", "--cached", *options], cwd=tree, capture_output=True,
                          check=True).stdout  # fmt: skip
    git(tree, "reset", "--quiet", "--hard")
    return diff


def test_p0_and_p2_are_one_mistake_with_one_exit_code(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    assert upstream.run("unpatch").code == 0
    readme = (upstream.tree / "README.md").read_text()
    change = tmp_path / "readme.diff"
    change.write_bytes(diff_of(upstream.tree, {"README.md": readme + "vendor line\n"}))
    before = snapshot(upstream.store), git(upstream.tree, "rev-parse", "HEAD")
    results = {strip: run_import(upstream, "-p", strip, str(change)) for strip in ("0", "2")}
    for strip, result in results.items():
        assert result.code == ExitCode.CONFLICT, (strip, result.output)
        assert error_lines(result)[-1].startswith(
            f"hint: -p1 matches 1 of 1 files (-p{strip} matches 0): import again with -p 1. "
            "Nothing was imported"
        ), strip
    assert (snapshot(upstream.store), git(upstream.tree, "rev-parse", "HEAD")) == before


def test_the_p_hint_shows_when_some_path_would_match(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    """One path of four is in the tree with -p2 (three are new files): the hint
    names -p2, though most paths do not fail."""
    assert upstream.run("unpatch").code == 0
    readme = (upstream.tree / "README.md").read_text()
    files = {"README.md": readme + "vendor line\n"}
    files.update({f"new_{n}.py": f"N = {n}\n" for n in range(3)})
    change = tmp_path / "vendor.diff"
    change.write_bytes(diff_of(upstream.tree, files, "vllm/"))
    result = run_import(upstream, str(change))
    assert result.code == ExitCode.CONFLICT, result.output
    assert error_lines(result)[-1] == (
        "hint: -p2 matches 1 of 4 files (-p1 matches 0): import again with -p 2. Nothing was "
        f"imported: the build tree {upstream.tree} is as it was, and the store is unchanged."
    )


# --------------------------------------------------------------------------- did you mean


def test_an_unknown_command_gets_the_one_did_you_mean(tmp_path: Path) -> None:
    for args in (["unpach"], ["-q", "unpach", "-d", "x"], ["--store", "s", "unpach"]):
        result = run_cli(*args, cwd=tmp_path)
        assert result.code == ExitCode.USAGE, args
        assert error_lines(result) == [
            "error: no command 'unpach'; did you mean 'unpatch'?",
            "hint: `patchtool --help` lists the commands.",
        ]
    unknown = run_cli("frobnicate", cwd=tmp_path)
    assert error_lines(unknown)[0] == "error: no command 'frobnicate'"


# --------------------------------------------------------------------------- patch -m (#4)


def test_patch_m_writes_a_patch_that_passes_lint(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "README.md").write_text("changed\n")
    result = upstream.run("patch", "--strict", "-m", "docs: Rewrite the readme")
    assert result.code == 0, result.output
    assert "warning" not in result.stderr
    message = git(upstream.tree, "log", "-1", "--format=%B")
    assert message == (
        "docs: Rewrite the readme\n\nCommitted with `patchtool patch -m` from the changes to "
        "README.md left uncommitted in the build tree of devA.\n\nUpstream-Status: Pending\n\n"
    )
    checked = upstream.run("check")
    assert checked.code == 0, checked.output
    assert "ok    devA  demo-1.0  lint" in checked.stdout


def test_patch_m_keeps_a_message_that_has_a_body(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    (upstream.tree / "README.md").write_text("changed\n")
    given = ("docs: Rewrite the readme\n\nThe old one named a removed command.\n\n"
             "Upstream-Status: Pending")  # fmt: skip
    assert upstream.run("patch", "--strict", "-m", given).code == 0
    assert git(upstream.tree, "log", "-1", "--format=%B") == given + "\n\n"


def test_patch_m_says_it_takes_a_subject() -> None:
    shown = run_cli("patch", "--help", env={"COLUMNS": "200"})
    line = next(line for line in shown.stdout.splitlines() if "--message" in line)
    assert line.split()[1:5] == ["--message", "-m", "SUBJECT", "First"]
    assert "new patch with this subject" in line


# --------------------------------------------------------------------------- status in a rebase


def test_status_during_a_stopped_rebase_shows_the_new_base_and_no_unexported_work(
    world: SyntheticUpstream,  # noqa: F811
) -> None:
    stopped_rebase(world)
    shown = run_cli("status", cwd=world.tree)
    assert shown.code == 0, shown.output
    picked = git(world.tree, "log", "--reverse", "--format=%h %s", "-2").splitlines()
    new_base = git(world.tree, "rev-parse", "HEAD~2").strip()
    assert git(world.tree, "log", "-1", "--format=%s", new_base) == (
        "Import demo 1.1 from demo-1.1.tar.gz\n"
    )
    assert shown.stdout.splitlines() == [
        STOPPED,
        f"tree:       {world.tree}",
        f"base:       demo-1.1 (demo 1.1, {new_base})",
        "commits:    2",
        *(f"  {line}" for line in picked),
        "unexported: 0",
        "uncommitted files: 1",
        "  demo/core.py",
    ]
    as_json = json.loads(world.run("status", "--json").stdout)
    assert (as_json["base"], as_json["base_commit"], as_json["unexported"]) == (
        "demo-1.1", new_base, []
    )


# --------------------------------------------------------------------------- keygen (#10)


def test_keygen_writes_a_0600_identity_that_opens_what_its_recipient_can(
    private: PrivateWorld,  # noqa: F811
    tmp_path: Path,
) -> None:
    identity = tmp_path / "keys" / "mine.txt"
    made = run_cli("keygen", str(identity), cwd=tmp_path)
    assert made.code == 0, made.output
    recipient = made.stdout.strip()
    assert recipient.startswith("age1") and made.stdout == recipient + "\n"
    assert made.stderr == (
        f"wrote a new identity to {identity} (mode 0600); its recipient, for device.toml's "
        "[private.recipients]:\n"
    )
    assert identity.stat().st_mode & 0o777 == 0o600
    assert identity.read_text().splitlines()[0] == f"# public key: {recipient}"
    # The recipient in device.toml, the patches encrypted anew: the new file opens them.
    set_recipients(private.world, {"ci": ci_key(private), "mine": recipient})
    build = str(private.world.build)
    exported = private.cli("patch", "-d", "devA", "--dir", build, identity=private.identity)
    assert exported.code == 0, exported.output
    opened = private.cli("check", "-d", "devA", identity=identity)
    assert opened.code == 0, opened.output


def test_keygen_never_replaces_a_file(tmp_path: Path) -> None:
    existing = tmp_path / "key.txt"
    existing.write_text("AGE-SECRET-KEY-1 the only copy\n")
    refused = run_cli("keygen", str(existing), cwd=tmp_path)
    assert refused.code == ExitCode.USAGE
    assert error_lines(refused) == [
        f"error: {existing} exists; keygen never replaces a file (it may hold the only copy "
        "of a key)",
        "hint: Name a new file, or move that one away yourself.",
    ]
    assert existing.read_text() == "AGE-SECRET-KEY-1 the only copy\n"
    link = tmp_path / "link.txt"
    link.symlink_to(tmp_path / "elsewhere.txt")
    assert run_cli("keygen", str(link), cwd=tmp_path).code == ExitCode.USAGE
    assert not (tmp_path / "elsewhere.txt").exists()


# --------------------------------------------------------------------------- help


def help_of(*command: str) -> str:
    shown = run_cli(*command, "--help", env={"COLUMNS": "200"})
    assert shown.code == 0, shown.output
    return shown.stdout


def test_check_public_only_help_mentions_no_tree_and_the_switches_have_no_forms() -> None:
    check = next(line for line in help_of("check").splitlines() if "--public-only" in line)
    assert "tree" not in check and "--no-public-only" in check
    for command, option in (("unpatch", "--3way"), ("import", "--3way"),
                            ("unpatch", "--public-only")):  # fmt: skip
        line = next(line for line in help_of(command).splitlines() if f" {option} " in line)
        assert f"--no-{option[2:]}" in line, (command, option)
    assert run_cli("unpatch", "--no-3way", "--no-public-only", "-d", "none").code == 3


def test_every_commands_help_names_the_global_options() -> None:
    for command in ("unpatch", "patch", "build-wheel", "list", "status", "check", "rebase",
                    "import", "keygen"):  # fmt: skip
        text = " ".join(help_of(command).split())
        assert ("Global options, before or after the command: --store, --cache-dir, --debug, "
                "--quiet/-q (see `patchtool --help`).") in text, command  # fmt: skip


def test_rebase_c_default_is_the_same_in_help_and_docs() -> None:
    line = next(line for line in help_of("rebase").splitlines() if "--commit-id" in line)
    assert "(default: device.toml's default-base, else the newest base)" in line
    docs = " ".join((Path(__file__).parent.parent / "docs" / "rebase.md").read_text().split())
    assert ("picks the old base (default: device.toml's default-base, else the device's "
            "newest base)") in docs  # fmt: skip
