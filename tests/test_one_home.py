"""One place for each cross-cutting rule (issue 20, §4), read from the code where a
rule is about where code lives, and run where it is about what a command does."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import typing
from pathlib import Path

import pytest
from helpers import REPOSITORY, SyntheticUpstream, check_records

import patchtool
from patchtool.commands.check.records import CheckRecord, CheckReport
from patchtool.commands.rebase.state import RebaseState
from patchtool.core.errors import (
    ExitCode,
    NetworkError,
    OfflineViolationError,
    PatchtoolError,
    StaleStoreError,
    error_class,
)
from patchtool.core.values import canonical_name, did_you_mean
from patchtool.store.model import BaseRef

SOURCE = REPOSITORY / "src" / "patchtool"


def trees() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(SOURCE)): ast.parse(path.read_text(), str(path))
        for path in sorted(SOURCE.rglob("*.py"))
    }


def subclasses(kind: type) -> set[type]:
    found = set(kind.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


# --------------------------------------------------------------------------- errors


def test_every_error_class_is_defined_in_core_errors() -> None:
    for module in pkgutil.walk_packages(patchtool.__path__, "patchtool."):
        if module.name != "patchtool.__main__":
            importlib.import_module(module.name)
    elsewhere = sorted(
        f"{kind.__module__}.{kind.__qualname__}"
        for kind in subclasses(PatchtoolError)
        if kind.__module__ != "patchtool.core.errors"
    )
    assert elsewhere == []


def error_names(tree: ast.Module) -> set[str]:
    """The names that hold an error in a module: `except ... as name`, `name =
    SomethingError(...)`, and `self` in a class whose bases are errors."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Name)
            and node.value.func.id.endswith("Error")
        ):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ClassDef) and any(
            isinstance(b, ast.Name) and b.id.endswith("Error") for b in node.bases
        ):
            names.add("self")
    return names


def test_no_exit_code_is_set_on_an_instance() -> None:
    """An error's exit code is its class's: no error gets `.exit_code = ...`."""
    assigned = []
    for name, tree in trees().items():
        errors = error_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                assigned += [
                    f"{name}:{node.lineno}"
                    for target in targets
                    if isinstance(target, ast.Attribute)
                    and target.attr == "exit_code"
                    and isinstance(target.value, ast.Name)
                    and target.value.id in errors
                ]
    assert assigned == []


def test_each_exit_code_has_its_class() -> None:
    for code in ExitCode:
        if code != ExitCode.OK:
            assert error_class(code).exit_code == code


def test_an_offline_check_that_reaches_the_network_is_a_bug_exit_1() -> None:
    assert OfflineViolationError.exit_code == ExitCode.INTERNAL
    assert not issubclass(OfflineViolationError, NetworkError)
    # ...and it outranks every other failure of a check run.
    report = CheckReport(
        [
            CheckRecord("devA", "b", "lint", False, ("x",), ExitCode.STALE),
            CheckRecord("devA", "b", "source", False, ("y",), ExitCode.INTERNAL),
            CheckRecord("devA", "b", "safety", False, ("z",), ExitCode.UNSAFE),
        ]
    )
    assert report.exit_code == ExitCode.INTERNAL
    with pytest.raises(PatchtoolError) as caught:
        report.raise_for_failures()
    assert (type(caught.value), caught.value.message, caught.value.hint) == (
        PatchtoolError,
        "3 check(s) failed: devA/b lint, devA/b source, devA/b safety",
        "A check failed on a bug in patchtool: run again with --debug and report it.",
    )


def test_failed_checks_raise_the_class_of_their_code() -> None:
    report = CheckReport([CheckRecord("devA", "b", "lint", False, ("x",), ExitCode.STALE)])
    with pytest.raises(PatchtoolError) as caught:
        report.raise_for_failures()
    assert type(caught.value) is StaleStoreError
    assert caught.value.exit_code == ExitCode.STALE


# --------------------------------------------------------------------------- locks


def test_locks_are_taken_by_the_commands_only() -> None:
    lock_names = {"device_locks", "build_lock", "store_lock"}
    takers = sorted(
        name
        for name, tree in trees().items()
        if name != "core/locks.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in lock_names
    )
    assert sorted(set(takers)) == [
        "commands/build_wheel.py",
        "commands/check/run.py",
        "commands/export.py",
        "commands/importing/changes.py",
        "commands/importing/flagscale.py",
        "commands/rebase/forecast.py",
        "commands/rebase/run.py",
        "commands/unpatch.py",
    ]


# --------------------------------------------------------------------------- names


NAMES = ["cmake", "Setuptools_SCM", "setuptools-scm", "zope.interface", "A__B--c..D", "ninja"]


def test_pep_503_names_are_packagings() -> None:
    from packaging.utils import canonicalize_name

    assert [canonical_name(n) for n in NAMES] == [str(canonicalize_name(n)) for n in NAMES]
    normalisations = [
        f"{name}:{node.lineno}"
        for name, tree in trees().items()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and node.args[0].value == r"[-_.]+"
        and len(node.args) > 1
        and isinstance(node.args[1], ast.Constant)
        and node.args[1].value == "-"
    ]
    assert normalisations == []


def test_did_you_mean_has_one_wording() -> None:
    assert did_you_mean("devB", ["devA", "other"]) == "; did you mean 'devA'?"
    assert did_you_mean("zzz", ["devA"]) == ""
    worded = [
        f"{name}:{node.lineno}"
        for name, tree in trees().items()
        if name != "core/values.py"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and "did you mean" in node.value.lower()
    ]
    assert worded == []


def test_no_two_classes_share_a_name() -> None:
    where: dict[str, list[str]] = {}
    for name, tree in trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                where.setdefault(node.name, []).append(name)
    assert {k: v for k, v in where.items() if len(v) > 1} == {}


def test_one_word_for_stages_and_base_for_what_commit_id_names() -> None:
    """A folder a new state is assembled in is a stage (`new_stage`, `export_stage`);
    what --commit-id names is a base (`options.base`)."""
    staging, commit_ids = [], []
    for name, tree in trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and "staging" in node.name:
                staging.append(f"{name}:{node.name}")
            named = (
                node.id
                if isinstance(node, ast.Name)
                else node.attr
                if isinstance(node, ast.Attribute)
                else node.arg
                if isinstance(node, ast.arg | ast.keyword)
                else None
            )
            if named == "commit_id":
                commit_ids.append(f"{name}:{node.lineno}")
    assert (staging, commit_ids) == ([], [])


def test_a_rebase_state_holds_its_new_base_typed() -> None:
    assert typing.get_type_hints(RebaseState)["new_base"] is BaseRef


# --------------------------------------------------------------------------- skipped checks


def test_a_check_stopped_by_an_earlier_failure_is_skipped(upstream: SyntheticUpstream) -> None:
    (upstream.base_folder / "series").write_text("missing.patch\n")  # unreadable patches
    result = upstream.run("check", "--json")
    assert result.code != 0
    records = {r["check"]: r for r in check_records(result.stdout) if r["base"]}
    assert [
        (c, records[c]["ok"], records[c].get("skipped"), records[c]["details"])
        for c in ("safety", "apply", "export", "lint")
    ] == [
        (c, None, True, ["not run: series cannot be read"])
        for c in ("safety", "apply", "export", "lint")
    ]
    human = upstream.run("check")
    assert [line for line in human.stdout.splitlines() if line.startswith("skip")] == [
        "skip  devA  demo-1.0  safety",
        "skip  devA  demo-1.0  apply",
        "skip  devA  demo-1.0  export",
        "skip  devA  demo-1.0  lint",
    ]
    assert json.loads(result.stdout)["exit_code"] == result.code
    assert Path(upstream.base_folder / "series").read_text() == "missing.patch\n"
