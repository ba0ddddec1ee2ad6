"""`import` and `import --flagscale`: two declared command functions under one
command name (cli/import_command.py joins them). What each form refuses follows
from the two declarations; these tests pin the texts and that the join keeps
`import --help` whole."""

from __future__ import annotations

from pathlib import Path

import click
import typer
from helpers import error_lines, run_cli_in_process

from patchtool.cli.app import app

NO_STORE_HINT = "hint: Run patchtool from the repository that holds the store, or pass --store."


def import_command() -> click.Command:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    return group.commands["import"]


def test_import_declares_the_options_of_both_forms_in_one_list() -> None:
    names = [param.name for param in import_command().params]
    assert names == [
        "device", "files", "base", "strip", "series", "author", "date", "message",
        "build_dir", "create", "display_name", "vendor", "onto", "base_version", "sdist",
        "exclude", "three_way", "flagscale", "backend", "private_key", "git_url", "group_bytes",
        "dry_run", "project", "recipient", "identity", "no_wait",
    ]  # fmt: skip


def test_import_help_shows_every_option_once(tmp_path: Path) -> None:
    result = run_cli_in_process("import", "--help", cwd=tmp_path)
    assert result.code == 0
    for option in ("--flagscale", "--backend", "--private-key", "--git-url", "--dry-run",
                   "--3way", "--recipient", "--exclude", "--onto"):  # fmt: skip
        rows = [line for line in result.stdout.splitlines() if line.startswith(f"│ {option} ")]
        assert len(rows) == 1, option


def test_flagscale_names_every_plain_option_given_in_declaration_order(tmp_path: Path) -> None:
    result = run_cli_in_process("import", "--exclude", "x", "-m", "y", "--flagscale",
                                str(tmp_path), "one.patch", "-c", "abc", cwd=tmp_path)  # fmt: skip
    assert result.code == 2
    assert error_lines(result) == [
        "error: --flagscale takes no FILES, --message, --exclude: devices, bases "
        "and messages come from the FlagScale tree"
    ]


def test_a_plain_option_at_its_default_is_not_a_clash(tmp_path: Path) -> None:
    # -p 1 and --no-create say what their absence says: the FlagScale form runs
    # (and finds no store here).
    result = run_cli_in_process("import", "--flagscale", str(tmp_path), "-p", "1",
                                "--no-create", cwd=tmp_path)  # fmt: skip
    assert result.code == 3
    assert error_lines(result) == [
        f"error: no patches/ folder in {tmp_path} or above it", NO_STORE_HINT
    ]


def test_a_flagscale_option_without_flagscale_names_them_all(tmp_path: Path) -> None:
    result = run_cli_in_process("import", "-d", "x", "--git-url", "vllm=/x", cwd=tmp_path)
    assert result.code == 2
    assert error_lines(result) == [
        "error: --backend, --private-key, --git-url, --group-bytes and --dry-run go with "
        "--flagscale"
    ]


def test_the_options_both_forms_take_reach_the_flagscale_form(tmp_path: Path) -> None:
    result = run_cli_in_process("import", "--flagscale", str(tmp_path), "--recipient", "ci",
                                "--3way", "--sdist", "x.tar.gz", cwd=tmp_path)  # fmt: skip
    assert result.code == 2
    assert error_lines(result) == ["error: --recipient 'ci': give NAME=KEY, e.g. ci=age1..."]


def test_both_forms_refuse_onto_with_commit_id_alike(tmp_path: Path) -> None:
    refused = ["error: --onto creates a new base; --commit-id names an existing one: pick one"]
    for form in (["x.patch"], ["--flagscale", str(tmp_path)]):
        result = run_cli_in_process("import", *form, "--onto", "1.0", "-c", "1.0", cwd=tmp_path)
        assert (result.code, error_lines(result)) == (2, refused), form
