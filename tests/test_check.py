"""check: passes on a good store, and fails with the right record and exit code for each
kind of problem, changing nothing."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult, SyntheticUpstream, check_records, commit_all, error_lines, snapshot

from patchtool.commands.check.records import CHECKS

pytestmark = pytest.mark.cli_in_process

CORPUS = Path(__file__).parent / "corpus"
GOOD_PATCH = "make-function-3-return-33.patch"


def export_change(world: SyntheticUpstream, old: bytes, new: bytes, subject: str,
                  body: str | None = None) -> None:  # fmt: skip
    assert world.run("unpatch", "--force").code == 0
    core = world.tree / "demo" / "core.py"
    core.write_bytes(core.read_bytes().replace(old, new))
    if body is None:
        commit_all(world.tree, subject)
    else:
        commit_all(world.tree, subject, body)
    result = world.run("patch")
    assert result.code == 0, result.output


@pytest.fixture
def good(upstream: SyntheticUpstream) -> SyntheticUpstream:
    """The synthetic store with one well-formed patch; the build folder removed."""
    export_change(upstream, b"return 3\n", b"return 33\n", "Make function 3 return 33")
    assert (upstream.base_folder / GOOD_PATCH).is_file()
    shutil.rmtree(upstream.build)
    return upstream


def check(world: SyntheticUpstream, *extra: str) -> tuple[CliResult, list[dict[str, Any]]]:
    before = snapshot(world.root)
    result = world.cli("check", "--json", *extra)
    assert snapshot(world.root) == before  # check changes nothing, writes no build tree
    return result, check_records(result.stdout)


def failed(records: list[dict[str, Any]]) -> dict[str, list[str]]:
    return {r["check"]: r["details"] for r in records if not r["ok"]}


def test_check_passes_on_a_good_store_with_one_record_per_check(good: SyntheticUpstream) -> None:
    result, records = check(good)
    assert result.code == 0, result.output
    for record in records:
        assert set(record) == {"device", "base", "check", "ok", "details", "duration_s"}
        assert record["ok"] is True and record["details"] == [] and record["device"] == "devA"
        assert isinstance(record["duration_s"], float) and record["duration_s"] >= 0
    assert [(r["base"], r["check"]) for r in records] == [("", "config")] + [
        ("demo-1.0", name) for name in CHECKS
    ]
    plain = good.cli("check", "--device-type", "devA", "--commit-id", "1.0")
    assert plain.code == 0, plain.output
    assert "ok    devA  demo-1.0  lint" in plain.stdout


def test_an_unlisted_patch_file_fails_series(good: SyntheticUpstream) -> None:
    shutil.copyfile(good.base_folder / GOOD_PATCH, good.base_folder / "stray.patch")
    result, records = check(good)
    assert result.code == 7
    assert failed(records) == {
        "series": [f"stray.patch is in {good.base_folder} but series does not list it"]
    }
    assert error_lines(result) == [
        "error: 1 check(s) failed: devA/demo-1.0 series",
        "hint: Fix what the report above lists and run check again.",
    ]


def test_a_missing_upstream_status_trailer_fails_lint(upstream: SyntheticUpstream) -> None:
    export_change(upstream, b"return 3\n", b"return 33\n", "No trailer",
                  body="It says why, but not where it stands upstream.")  # fmt: skip
    result, records = check(upstream)
    assert result.code == 7
    assert failed(records) == {"lint": ["no-trailer.patch: has no Upstream-Status: trailer"]}


def test_a_bad_status_value_and_a_missing_body_fail_lint(upstream: SyntheticUpstream) -> None:
    export_change(upstream, b"return 3\n", b"return 33\n", "Only a trailer",
                  body="Upstream-Status: Accepted")  # fmt: skip
    result, records = check(upstream)
    assert result.code == 7
    assert failed(records) == {"lint": [
        "only-a-trailer.patch: has no body that says why the change is needed",
        "only-a-trailer.patch: Upstream-Status 'Accepted' is not one of Pending, Submitted "
        "<where>, Backport [<where>], Denied <why>, Inappropriate <why>, Inactive-Upstream "
        "<details>",
    ]}  # fmt: skip


def test_trailing_whitespace_and_conflict_markers_fail_lint(upstream: SyntheticUpstream) -> None:
    export_change(upstream, b"return 3\n", b"return 3  \n<<<<<<< ours\n=======\n>>>>>>> theirs\n",
                  "Leave a mess")  # fmt: skip
    result, records = check(upstream)
    assert result.code == 7
    assert failed(records) == {"lint": [
        "leave-a-mess.patch: line 19: adds trailing whitespace to demo/core.py",
        "leave-a-mess.patch: line 20: adds a conflict marker to demo/core.py",
        "leave-a-mess.patch: line 21: adds a conflict marker to demo/core.py",
        "leave-a-mess.patch: line 22: adds a conflict marker to demo/core.py",
    ]}  # fmt: skip


def test_a_stale_store_fails_export(good: SyntheticUpstream) -> None:
    path = good.base_folder / GOOD_PATCH
    # Hand-shortened index line: still applies, but export writes full ids.
    text = path.read_bytes()
    text = re.sub(rb"^index ([0-9a-f]{7})[0-9a-f]+\.\.([0-9a-f]{7})[0-9a-f]+", rb"index \1..\2",
                  text, flags=re.M)  # fmt: skip
    path.write_bytes(text)
    result, records = check(good)
    assert result.code == 7
    assert failed(records) == {
        "export": [f"a fresh export would write: changed patch {GOOD_PATCH}"]
    }


def test_a_series_that_does_not_apply_fails_apply_and_skips_export(good: SyntheticUpstream) -> None:
    path = good.base_folder / GOOD_PATCH
    path.write_bytes(path.read_bytes().replace(b"-    return 3\n", b"-    return 300\n"))
    result, records = check(good)
    assert result.code == 4
    problems = failed(records)
    assert set(problems) == {"apply", "export"}
    assert problems["apply"] == [
        f"patch {GOOD_PATCH} (series line 2, patch 1 of 1) does not apply to demo 1.0 "
        f"({good.commit[:12]}):",
        "  demo/core.py: hunk #1 @@ -8,7 +8,7 @@ def function_2(): does not match the base",
        "      |     return 2",
        "      | ",
        "      | def function_3():",
        "      |     return 300",
        "      | ",
        "      | def function_4():",
        "      |     return 4",
    ]
    assert problems["export"] == ["not run: the series does not apply"]


def test_an_unsafe_patch_fails_safety_first_and_is_never_applied(good: SyntheticUpstream) -> None:
    shutil.copyfile(CORPUS / "patches" / "git-hooks.patch", good.base_folder / "git-hooks.patch")
    with (good.base_folder / "series").open("a") as series:
        series.write("git-hooks.patch\n")
    result, records = check(good)
    assert result.code == 10  # the most serious code wins over lint's 7
    problems = failed(records)
    assert problems["safety"] == [
        f"patch {good.base_folder / 'git-hooks.patch'} (series line 3): path "
        "'.git/hooks/pre-commit' points into .git"
    ]
    assert problems["apply"] == problems["export"] == [
        "not run: the base or a patch is unsafe or damaged"
    ]


def test_an_invalid_base_toml_and_a_wrong_commit_fail_config_and_source(
    good: SyntheticUpstream,
) -> None:
    base_toml = good.base_folder / "base.toml"
    text = base_toml.read_text()
    base_toml.write_text(text.replace("version =", "verison ="))
    result, records = check(good)
    assert result.code == 6
    assert failed(records)["config"] == [
        f"{base_toml}: unknown key 'verison'; did you mean 'version'?"
    ]
    base_toml.write_text(text.replace(good.commit, "f" * 40))
    result, records = check(good)
    assert result.code == 6
    assert failed(records)["source"] == [
        f"{base_toml}: the sdist demo-1.0.tar.gz imports as commit {good.commit}, but base.toml "
        f"records {'f' * 40}"
    ]


def test_an_unknown_device_is_a_usage_error(good: SyntheticUpstream) -> None:
    result = good.cli("check", "--device-type", "devB")
    assert result.code == 3
    assert error_lines(result) == [
        f"error: unknown device 'devB': {good.store / 'devB' / 'device.toml'} does not exist; "
        "did you mean 'devA'?",
        "hint: Known devices: devA.",
    ]
