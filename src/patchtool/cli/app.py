"""The command line: the typer app, its global options, and the one error boundary.

The commands are declared in their own modules (tree_commands, store_commands,
rebase_command, import_command with flagscale_command) and registered here, in
the order `--help` lists them. `main()` maps every `PatchtoolError` to a message,
a hint and its exit code (see errors.ExitCode); tracebacks only with --debug.
"""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import click

from patchtool import __version__
from patchtool.cli import context, keygen_command, rebase_command, store_commands, tree_commands
from patchtool.cli.arguments import (
    globals_first,
    hide_empty_defaults,
    note_global_options,
    unknown_command,
)
from patchtool.cli.import_command import ImportCommand, import_changes
from patchtool.cli.typer_lean import typer
from patchtool.core import cancel
from patchtool.core.errors import ExitCode, PatchtoolError, UsageError, quoted

app = typer.Typer(
    name="patchtool",
    help="Keep a device's changes to vLLM as a reviewable patch series against an exact "
    "upstream base: apply them (unpatch), capture them (patch), build the device's wheel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"patchtool {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    store: Annotated[
        Path | None,
        typer.Option(
            help="The patch store (default: the one the build tree you are in was made from, "
            "else patches/ in this folder or above)."
        ),
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            help="Cache of upstream sources (default: PATCHTOOL_CACHE_DIR, else the user cache)."
        ),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Show only warnings.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Global options go before or after the command: `patchtool -q unpatch ...` and
    `patchtool unpatch ... -q` are the same."""
    given = context.global_options
    given.store, given.cache_dir = store, cache_dir
    given.debug, given.quiet = debug, quiet
    try:
        os.getcwd()
    except FileNotFoundError:
        # A removed working folder is named before any command starts; the
        # message lives in whereabouts, imported only on this path.
        from patchtool.cli.whereabouts import working_folder

        working_folder()


app.command()(tree_commands.unpatch)
app.command()(tree_commands.patch)
app.command("build-wheel")(tree_commands.build_wheel)
app.command("list")(store_commands.list_bases)
app.command()(tree_commands.status)
app.command()(store_commands.check)
app.command()(rebase_command.rebase)
app.command("import", cls=ImportCommand)(import_changes)
app.command()(keygen_command.keygen)


# --------------------------------------------------------------------------- error boundary


class Terminated(BaseException):
    """SIGTERM, as an exception: not a PatchtoolError (no `except PatchtoolError`
    may take it for a failed check and go on), so it unwinds the run through
    every `finally` (a scratch tree holding a private patch's plaintext is
    removed, a stage too) up to main()."""


# The exit status of a run stopped by SIGTERM: what a shell reports for a process
# the signal killed (128 + 15), after patchtool cleaned up.
TERMINATED_STATUS = 128 + signal.SIGTERM


SECOND_SIGTERM = (
    b"error: stopped by a second SIGTERM before the clean-up ended\n"
    b"hint: Run the same command again: it recovers what this run left.\n"
)


def _raise_terminated(signum: int, frame: object) -> None:
    if cancel.requested():
        # A second SIGTERM: whoever sends it will not wait for the clean-up the
        # first one started (the children were told to stop then). End now; no
        # Python-level work here, this may interrupt anything.
        os.write(2, SECOND_SIGTERM)
        os._exit(TERMINATED_STATUS)
    # Workers, children and fetches stop (core/cancel.py); this thread unwinds.
    cancel.request()
    raise Terminated()


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """SIGINT: KeyboardInterrupt as Python raises it, once the rest of the run was
    told to stop as on SIGTERM."""
    cancel.request()
    signal.default_int_handler(signum, frame)


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """While a command runs, SIGTERM (a cancelled CI job, `kill`) raises
    Terminated in the main thread instead of ending the process on the spot, and
    SIGTERM and SIGINT cancel the run (core/cancel.py): worker threads, children
    and network reads stop within seconds. A second SIGTERM ends the process."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (embedding): leave signals alone
        yield
        return
    previous_int = signal.getsignal(signal.SIGINT)
    if previous_int is signal.default_int_handler:  # not where SIGINT is ignored
        signal.signal(signal.SIGINT, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)


def clear_process_caches() -> None:
    """Forget what patchtool keeps for the life of a process: the build tree around
    the working folder, and pip's settings (read from its files and the environment).
    main() calls it first, so that each run in a process that runs several (tests,
    embedding) reads both afresh, as a new process would; call it after a run to
    leave nothing of that run behind."""
    context.tree_here.cache_clear()
    # Only a command that reaches an index imports it; start-up does not pay for it.
    if "patchtool.sources.index.settings" in sys.modules:
        from patchtool.sources.index.settings import load_settings

        load_settings.cache_clear()


def main(argv: list[str] | None = None) -> None:
    # typer's standalone mode handles usage errors (exit 2), --help and Exit;
    # everything the core raises comes through here.
    clear_process_caches()
    cancel.reset()
    command = typer.main.get_command(app)
    hide_empty_defaults(command)
    note_global_options(command)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        _refuse_unknown_command(command, args)
        with _signals_unwind():
            command.main(args=globals_first(command, args), prog_name="patchtool")
    except Terminated:
        _render_error(
            PatchtoolError(
                "stopped by SIGTERM",
                hint="What the run had started was cleaned up; run the same command again.",
            )
        )
        sys.exit(TERMINATED_STATUS)
    except PatchtoolError as error:
        _render_error(error)
        sys.exit(int(error.exit_code))
    except Exception as error:
        if context.global_options.debug:
            traceback.print_exc()
        else:
            print(f"patchtool: internal error: {type(error).__name__}: {error}", file=sys.stderr)
            print("hint: run again with --debug and report the traceback.", file=sys.stderr)
        sys.exit(int(ExitCode.INTERNAL))


def _refuse_unknown_command(command: click.Command, args: list[str]) -> None:
    """`patchtool unpach`: the closest command named in the one wording of a close
    name (core/values.py), exit 2 as for any usage error."""
    name = unknown_command(command, args)
    if name is None or not isinstance(command, click.Group):
        return
    from patchtool.core.values import did_you_mean

    raise UsageError(
        f"no command {quoted(name)}{did_you_mean(name, sorted(command.commands))}",
        hint="`patchtool --help` lists the commands.",
    )


def _render_error(error: PatchtoolError) -> None:
    if context.global_options.debug:
        traceback.print_exc()
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(error.message)}")
    if error.hint:
        console.print(f"[bold]hint:[/] {escape(error.hint)}")


__all__ = ["app", "main"]
