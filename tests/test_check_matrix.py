"""A store of many devices: `list --json` as a CI matrix, each entry's command
checks exactly its base, and `check` over bases in parallel reports exactly
what the serial run reports, in the same order, with each check's duration."""

from __future__ import annotations

import json
import shlex
import shutil
from typing import Any

import pytest
from helpers import SyntheticUpstream, add_second_base, check_records, run_cli

from patchtool.commands.check.records import CHECKS

DEVICES = ("devA", "devB", "devC")


@pytest.fixture
def many(upstream: SyntheticUpstream) -> SyntheticUpstream:
    """Three devices on demo 1.0 and 1.1; devB's 1.1 series does not apply."""
    add_second_base(upstream)
    for device in DEVICES[1:]:
        shutil.copytree(upstream.store / "devA", upstream.store / device)
    stale = upstream.store / "devB" / "demo-1.1"
    (stale / "stale.patch").write_text(
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: A <a@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
        "Subject: [PATCH] core: stale\n\nIt no longer applies.\n\n"
        "Upstream-Status: Pending\n---\n"
        "diff --git a/demo/core.py b/demo/core.py\n--- a/demo/core.py\n+++ b/demo/core.py\n"
        "@@ -1,2 +1,2 @@\n-nothing like this\n+at all\n context\n"
    )
    (stale / "series").write_text("# demo series\nstale.patch\n")
    return upstream


def test_list_json_is_a_ci_matrix_whose_commands_check_one_base_each(
    many: SyntheticUpstream,
) -> None:
    listed = many.cli("list", "--json")
    assert listed.code == 0, listed.output
    matrix = json.loads(listed.stdout)
    assert set(matrix) == {"include"}
    entries = matrix["include"]
    assert [(e["device"], e["base"]) for e in entries] == [
        (device, base) for device in DEVICES for base in ("demo-1.0", "demo-1.1")
    ]
    for entry in entries:
        assert all(isinstance(value, str) for key, value in entry.items()
                   if key not in ("patches", "private"))
        assert entry["private"] == 0
        assert entry["command"] == f"patchtool check -d {entry['device']} --commit-id {entry['base']}"
        argv = shlex.split(entry["command"])
        assert argv[0] == "patchtool"
        result = run_cli("--store", str(many.store), *argv[1:], "--json")
        expected = 4 if (entry["device"], entry["base"]) == ("devB", "demo-1.1") else 0
        assert result.code == expected, result.output
        checked = json.loads(result.stdout)
        assert [(e["device"], e["base"], e["command"]) for e in checked["include"]] == [
            (entry["device"], entry["base"], entry["command"])
        ]
        assert checked["exit_code"] == checked["include"][0]["exit_code"] == expected
        assert checked["ok"] is checked["include"][0]["ok"] is (expected == 0)
        records = checked["include"][0]["checks"]
        assert [(r["base"], r["check"]) for r in records] == [
            ("", "config"),
            *((entry["base"], name) for name in CHECKS),
        ]


def without_durations(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "duration_s"} for r in records]


@pytest.mark.slow
def test_parallel_check_reports_exactly_what_the_serial_check_does(
    many: SyntheticUpstream,
) -> None:
    serial = many.cli("check", "--json", "--jobs", "1")
    parallel = many.cli("check", "--json", "--jobs", "4")
    assert serial.code == parallel.code == 4
    serial_matrix, parallel_matrix = json.loads(serial.stdout), json.loads(parallel.stdout)
    assert [without_durations(e["checks"]) for e in parallel_matrix["include"]] == [
        without_durations(e["checks"]) for e in serial_matrix["include"]
    ]
    assert [
        {k: v for k, v in e.items() if k not in ("checks", "duration_s")}
        for e in parallel_matrix["include"]
    ] == [
        {
            "device": device,
            "base": base,
            "command": f"patchtool check -d {device} --commit-id {base}",
            "ok": (device, base) != ("devB", "demo-1.1"),
            "exit_code": 4 if (device, base) == ("devB", "demo-1.1") else 0,
        }
        for device in DEVICES
        for base in ("demo-1.0", "demo-1.1")
    ]
    assert (parallel_matrix["ok"], parallel_matrix["exit_code"]) == (False, 4)
    serial_records = check_records(serial.stdout)
    parallel_records = check_records(parallel.stdout)
    assert without_durations(parallel_records) == without_durations(serial_records)
    assert len(serial_records) == 3 + 6 * 7  # a device record each, seven per base
    assert all(r["duration_s"] >= 0 for r in parallel_records)
    applied = [r for r in parallel_records if r["check"] == "apply" and r["ok"]]
    assert len(applied) == 5 and all(r["duration_s"] > 0 for r in applied)
    text_serial = many.cli("check", "--jobs", "1")
    text_parallel = many.cli("check")
    assert text_parallel.stdout == text_serial.stdout
    assert "FAIL  devB  demo-1.1  apply" in text_parallel.stdout.splitlines()


def test_jobs_must_be_positive(many: SyntheticUpstream) -> None:
    result = many.cli("check", "--jobs", "0")
    assert result.code == 2
    assert "Invalid value for '--jobs' / '-j': 0 is not in the range x>=1." in result.stderr
