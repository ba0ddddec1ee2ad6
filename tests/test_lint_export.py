"""Lint at the point of writing: `patch` and `import` warn about every patch that
`check` would refuse, naming the patch and how to fix its commit; `patch --strict`
fails with check's lint code (7) and writes nothing; long lists are capped."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers import (
    SyntheticUpstream,
    check_records,
    commit_all,
    git,
    snapshot,
    warning_lines,
)

from patchtool.series.lint import MAX_FINDINGS_SHOWN, MESSAGE_ADVICE

pytestmark = pytest.mark.cli_in_process

ADVICE = f"warning: {MESSAGE_ADVICE}"


def head(world: SyntheticUpstream, rev: str = "HEAD") -> str:
    return git(world.tree, "rev-parse", rev).strip()[:10]


def lint_details(world: SyntheticUpstream) -> list[str]:
    result = world.cli("check", "--json")
    records = check_records(result.stdout)
    return [d for r in records if r["check"] == "lint" for d in r["details"]]


def edit_core(world: SyntheticUpstream, old: str, new: str) -> None:
    core = world.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace(old, new))


def test_a_one_line_commit_is_written_and_patch_says_how_to_fix_it(
    upstream: SyntheticUpstream,
) -> None:
    # (patch -m gives a one-line message a body and a trailer: test_daily_words.py)
    assert upstream.run("unpatch").code == 0
    edit_core(upstream, "return 3\n", "return 33\n")
    git(upstream.tree, "commit", "--quiet", "-am", "core: one line")
    result = upstream.run("patch")
    assert result.code == 0, result.output
    assert (upstream.base_folder / "core-one-line.patch").is_file()
    assert warning_lines(result) == [
        "warning: core-one-line.patch: has no body that says why the change is needed",
        "warning: core-one-line.patch: has no Upstream-Status: trailer",
        f"warning: core-one-line.patch would fail `patchtool check`; it is the tree's last "
        f"commit ({head(upstream)}): in {upstream.tree}, run `git commit --amend`, then run "
        "`patchtool patch` again",
        ADVICE,
    ]
    # The warnings are check's findings, word for word.
    assert lint_details(upstream) == [
        "core-one-line.patch: has no body that says why the change is needed",
        "core-one-line.patch: has no Upstream-Status: trailer",
    ]
    # Following the advice clears both.
    git(upstream.tree, "commit", "--quiet", "--amend", "-m", "core: one line", "-m",
        "The device needs 33.", "-m", "Upstream-Status: Pending")  # fmt: skip
    fixed = upstream.run("patch")
    assert fixed.code == 0, fixed.output
    assert warning_lines(fixed) == []
    assert upstream.cli("check").code == 0


def test_an_earlier_commit_with_bad_lines_is_fixed_by_an_interactive_rebase(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    edit_core(upstream, "return 3\n", "return 33 \n")
    commit_all(upstream.tree, "core: return 33")
    (upstream.tree / "NOTICE").write_text("notice\n")
    commit_all(upstream.tree, "Add a notice")
    result = upstream.run("patch")
    assert result.code == 0, result.output
    first = head(upstream, "HEAD~1")
    assert warning_lines(result) == [
        "warning: core-return-33.patch: line 19: adds trailing whitespace to demo/core.py",
        f"warning: core-return-33.patch would fail `patchtool check`; it is commit 1 of 2 "
        f"({first}): in {upstream.tree}, run `git rebase -i patchtool/base` and mark {first} "
        "`edit` (change the lines, `git add` them, `git commit --amend`, "
        "`git rebase --continue`), then run `patchtool patch` again",
        f"warning: to strip the trailing whitespace from every commit at once: in "
        f"{upstream.tree}, run `git rebase --whitespace=fix patchtool/base`, then "
        "`patchtool patch`",
    ]
    assert sorted(p.name for p in upstream.base_folder.glob("*.patch")) == [
        "add-a-notice.patch", "core-return-33.patch",
    ]  # fmt: skip


def test_strict_fails_with_exit_7_and_leaves_the_store_byte_identical(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.store)
    edit_core(upstream, "return 3\n", "return 33\n")
    # A message with a body is kept as given (no trailer is added to it).
    result = upstream.run("patch", "--strict", "-m", "core: one line\n\nThe device needs 33.")
    assert result.code == 7, result.output
    assert snapshot(upstream.store) == before
    commit = head(upstream)
    assert result.stderr.splitlines()[-3:] == [
        f"error: 1 of 1 patch(es) would fail `patchtool check`'s lint; nothing was written to "
        f"{upstream.base_folder} (the commit -m made, {commit}, stays in the tree):",
        "  core-one-line.patch: has no Upstream-Status: trailer",
        f"hint: core-one-line.patch would fail `patchtool check`; it is the tree's last commit "
        f"({commit}): in {upstream.tree}, run `git commit --amend`, then run `patchtool patch` "
        f"again. Note: {MESSAGE_ADVICE}.",
    ]
    # A second run (nothing left to commit) refuses the same way; a good message passes.
    assert upstream.run("patch", "--strict").code == 7
    assert snapshot(upstream.store) == before
    git(upstream.tree, "commit", "--quiet", "--amend", "-m", "core: one line", "-m",
        "The device needs 33.", "-m", "Upstream-Status: Inappropriate [device only]")  # fmt: skip
    passed = upstream.run("patch", "--strict")
    assert passed.code == 0, passed.output
    assert (upstream.base_folder / "core-one-line.patch").is_file()


def test_import_of_a_patch_with_a_body_but_no_trailer_warns(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    # A message with a body is kept as it is (one without gets a generated body and
    # trailer: test_import_everyday.py), so lint still asks for the trailer.
    assert upstream.run("unpatch").code == 0
    edit_core(upstream, "return 5\n", "return 55\n")
    diff = subprocess.run(["git", "diff"], cwd=upstream.tree, capture_output=True,
                          check=True).stdout  # fmt: skip
    git(upstream.tree, "checkout", "--quiet", "--", ".")
    (tmp_path / "change.diff").write_bytes(diff)
    result = upstream.run("import", "--author", "Ada <ada@example.invalid>", "-m",
                 "core: return 55\n\nThe device needs 55.", str(tmp_path / "change.diff"))  # fmt: skip
    assert result.code == 0, result.output
    assert (upstream.base_folder / "core-return-55.patch").is_file()
    assert warning_lines(result) == [
        "warning: core-return-55.patch: has no Upstream-Status: trailer",
        f"warning: core-return-55.patch would fail `patchtool check`; it is the tree's last "
        f"commit ({head(upstream)}): in {upstream.tree}, run `git commit --amend`, then run "
        "`patchtool patch` again",
        ADVICE,
    ]


def test_many_findings_are_capped_per_patch_at_export_and_in_check(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    extra = MAX_FINDINGS_SHOWN + 4
    spaced = "".join(f"x{i} = {i} \n" for i in range(extra))
    (upstream.tree / "demo" / "spaced.py").write_text(spaced)
    commit_all(upstream.tree, "Add spaced")
    result = upstream.run("patch")
    assert result.code == 0, result.output
    # The new file's added lines start at line 16 of the patch file.
    shown = [
        f"add-spaced.patch: line {16 + i}: adds trailing whitespace to demo/spaced.py"
        for i in range(MAX_FINDINGS_SHOWN)
    ] + ["add-spaced.patch: ... and 4 more"]
    assert warning_lines(result)[:-2] == [f"warning: {line}" for line in shown]
    assert warning_lines(result)[-2].startswith("warning: add-spaced.patch would fail")
    assert warning_lines(result)[-1] == (
        f"warning: to strip the trailing whitespace from every commit at once: in "
        f"{upstream.tree}, run `git rebase --whitespace=fix patchtool/base`, then "
        "`patchtool patch`"
    )
    assert lint_details(upstream) == shown
    plain = upstream.cli("check")
    assert plain.code == 7
    assert plain.stdout.count("adds trailing whitespace") == MAX_FINDINGS_SHOWN
    assert "        add-spaced.patch: ... and 4 more\n" in plain.stdout
