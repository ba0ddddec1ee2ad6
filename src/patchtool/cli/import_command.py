"""`import`: outside patches (mbox, plain diffs, quilt) onto a base of the store,
and its second form, `import --flagscale PATH` (cli/flagscale_command.py).

The two forms are two declared functions under one command name. `ImportCommand`
joins them: `import --help` shows the options of both, --flagscale picks the
form that runs, and an option of one form given to the other is refused; which
options those are follows from the two declarations, so no table repeats them.
cli/app.py registers it.
"""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

from pathlib import Path
from typing import Annotated, Any

import click

from patchtool.cli import context
from patchtool.cli.flagscale_command import (
    import_flagscale,
    refuse_flagscale_options,
    refuse_plain_options,
)
from patchtool.cli.options import (
    CommitOption,
    DeviceOption,
    DirOption,
    IdentityOption,
    ImportOntoOption,
    ImportThreeWayOption,
    NoWaitOption,
    RecipientOption,
    SdistOption,
    parse_recipients,
    refuse_onto_with_base,
)
from patchtool.cli.typer_lean import typer
from patchtool.core.errors import UsageError


def import_changes(
    device: DeviceOption = None,
    files: Annotated[
        list[Path] | None,
        typer.Argument(help="mbox files, plain diffs, or quilt folders (series + patches)."),
    ] = None,
    base: CommitOption = None,
    strip: Annotated[
        int, typer.Option("-p", help="Leading path components to strip (like patch -p).")
    ] = 1,
    series: Annotated[
        Path | None, typer.Option("--series", help="A quilt series file (patches sit beside it).")
    ] = None,
    author: Annotated[
        str | None, typer.Option(help="'Name <email>' for changes whose input names no author.")
    ] = None,
    date: Annotated[
        str | None, typer.Option(help="Author date for changes whose input has none.")
    ] = None,
    message: Annotated[
        str | None, typer.Option("--message", "-m", help="Message where the input has none.")
    ] = None,
    build_dir: DirOption = None,
    create: Annotated[
        bool, typer.Option(help="Create the device (needs --display-name and --vendor).")
    ] = False,
    display_name: Annotated[str | None, typer.Option(help="A new device's display name.")] = None,
    vendor: Annotated[str | None, typer.Option(help="A new device's vendor.")] = None,
    onto: ImportOntoOption = None,
    base_version: Annotated[
        str | None, typer.Option(help="Version label of a new git base (default: 12 digits).")
    ] = None,
    sdist: SdistOption = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            metavar="GLOB",
            help="Leave out file sections whose path (after -p) matches GLOB, as git apply "
            "--exclude does; repeatable.",
        ),
    ] = None,
    three_way: ImportThreeWayOption = False,
    project: Annotated[
        str | None,
        typer.Option(
            help="The project of the base --onto creates (e.g. vllm, Megatron-LM); default: "
            "the device's, or NAME==VERSION's.",
        ),
    ] = None,
    recipient: RecipientOption = None,
    identity: IdentityOption = None,
    no_wait: NoWaitOption = False,
) -> None:
    """Import outside patches (mbox, plain diffs, quilt, a FlagScale tree) as new patches."""
    from patchtool.commands.importing.changes import ImportOptions
    from patchtool.commands.importing.changes import import_changes as run_import
    from patchtool.series.privacy import find_keyring

    recipients = parse_recipients(recipient)
    keyring = find_keyring(identity)
    if strip < 0:
        raise UsageError("-p takes a number of path components, 0 or more")
    refuse_onto_with_base(onto, base)
    started = context.device_context(device, build_dir, must_exist=not create)
    device = started.device
    reporter = started.reporter
    options = ImportOptions(
        store=started.store,
        build_dir=started.build_dir,
        device=device,
        cache=context.cache(),
        inputs=tuple(files or ()),
        base=base,
        strip=strip,
        series_file=series,
        author=author,
        date=date,
        message=message,
        create=create,
        display_name=display_name,
        vendor=vendor,
        onto=onto,
        version_label=base_version,
        archive_paths=tuple(sdist or ()),
        excludes=tuple(exclude or ()),
        three_way=three_way,
        keyring=keyring,
        recipients=recipients,
        project=project,
        wait=not no_wait,
    )
    if recipients and not create:
        raise UsageError("--recipient goes with --create or --flagscale (a new device.toml)")
    result = run_import(options, reporter)
    for name in result.imported:
        reporter.info(f"new patch {name}")
    if options.excludes:
        reporter.info(f"--exclude left out {result.excluded_sections} file section(s)")
    for origin in result.skipped:
        reporter.warn(f"{origin}: every file section is excluded; nothing imported from it")
    for merged in result.three_way:
        reporter.warn(
            f"{merged.origin} needed a 3-way merge (new patch {merged.patch}): "
            + ", ".join(merged.paths)
        )
    for origin in result.dropped:
        reporter.warn(f"{origin}: already in the base: dropped")
    reporter.info(f"imported {len(result.imported)} patch(es) into {result.base.path}")
    print(result.base.path)


# The option that picks the FlagScale form (its parameter's name).
FLAGSCALE = "flagscale"


class ImportCommand(typer.core.TyperCommand):
    """`import` as click sees it: built by typer from `import_changes`, then given
    the options only `import_flagscale` declares (each placed after the shared
    option that precedes it there); runs the form --flagscale picks."""

    def __init__(self, name: str | None, **attrs: Any) -> None:
        super().__init__(name, **attrs)
        flagscale = _command_of(import_flagscale)
        self.plain_callback, self.flagscale_callback = self.callback, flagscale.callback
        self.plain_names = {param.name for param in self.params}
        self.flagscale_names = {param.name for param in flagscale.params}
        by_name = {param.name: param for param in self.params}
        position = 0
        for param in flagscale.params:
            shared = by_name.get(param.name)
            if shared is None:
                self.params.insert(position, param)
                position += 1
                continue
            if shared.to_info_dict() != param.to_info_dict():
                raise TypeError(f"import's two forms declare {param.name} differently")
            position = self.params.index(shared) + 1

    def invoke(self, ctx: click.Context) -> Any:
        chosen = ctx.params[FLAGSCALE] is not None
        names = self.flagscale_names if chosen else self.plain_names
        stray = [
            param
            for param in self.params
            if param.name not in names and _given(param, ctx.params.get(param.name or ""))
        ]
        if stray and chosen:
            raise refuse_plain_options([_shown(param) for param in stray])
        if stray:
            own = [param for param in self.params if param.name not in self.plain_names]
            raise refuse_flagscale_options(
                [_shown(param) for param in own if param.name != FLAGSCALE]
            )
        callback = self.flagscale_callback if chosen else self.plain_callback
        assert callback is not None
        return ctx.invoke(callback, **{k: v for k, v in ctx.params.items() if k in names})


def _command_of(function: Any) -> click.Command:
    """The click command typer makes of one function, as it makes the app's."""
    single = typer.Typer(add_completion=False)
    single.command()(function)
    return typer.main.get_command(single)


def _given(param: click.Parameter, value: Any) -> bool:
    """Whether the command line set this option (an absent one holds its default,
    an empty list, or None)."""
    if value is None or value is False or value == () or value == []:
        return False
    return bool(value != param.default)


def _shown(param: click.Parameter) -> str:
    """An option as an error names it: its long name (FILES for the argument)."""
    if isinstance(param, click.Argument):
        return param.human_readable_name
    return next((name for name in param.opts if name.startswith("--")), param.opts[0])
