"""The commands on the whole store: `list` shows its devices and bases, `check`
checks them, changing nothing (the CI gate), or forecasts their rebase onto a
version (`--forecast`). cli/app.py registers them."""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

from typing import Annotated

from patchtool.cli import context
from patchtool.cli.options import CheckPublicOnlyOption, IdentityOption, SdistOption
from patchtool.cli.typer_lean import typer
from patchtool.core.errors import UsageError


def list_bases(
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Machine-readable: {"include": [one entry per device and base, with the '
            "`check` command for it]}, a CI matrix as it is (GitHub Actions strategy.matrix).",
        ),
    ] = False,
) -> None:
    """Devices and their bases (id, version, commit, patch count)."""
    from patchtool.cli.overview import store_listing

    records = store_listing(context.store())
    if as_json:
        context.emit_json({"include": records})
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("device", "base", "version", "commit", "source", "patches", box=None)
    for r in records:
        if r["base"] is None:
            # A device check refuses: the problem stands where its bases would.
            table.add_row(escape(r["device"]), "-", escape(r["problem"]), "", "", "")
            continue
        table.add_row(
            *(
                escape(str(value))
                for value in (
                    r["device"],
                    r["base"],
                    r["version"],
                    r["commit"][:12],
                    r["source"],
                    r["patches"],
                )
            )
        )
    Console(highlight=False).print(table)


def check(
    device: Annotated[
        str | None,
        typer.Option("--device-type", "-d", help="Check only this device (default: all)."),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--commit-id", "-c", help="Check only this base (default: every base of the device)."
        ),
    ] = None,
    sdist: SdistOption = None,
    jobs: Annotated[
        int | None,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Bases checked at the same time (default: the machine's cores); the "
            "report's order is the same for any number.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help='Machine-readable: {"ok", "exit_code", "include": [one entry per device and '
            "base: the command that checks it alone, its outcome, duration and records]}, "
            "the shape of `list --json`.",
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            help="Never use the network: a base whose source is not in the cache (nor given "
            "with --sdist) has its source, safety, apply and export checks skipped, not failed."
        ),
    ] = False,
    identity: IdentityOption = None,
    public_only: CheckPublicOnlyOption = False,
    forecast: Annotated[
        str | None,
        typer.Option(
            "--forecast",
            metavar="VERSION",
            help="Instead of the checks: forecast the rebase of every device's newest base "
            "(or --commit-id's) onto VERSION, side by side (see `rebase --dry-run`); exit 4 "
            "if a patch would conflict.",
        ),
    ] = None,
    markdown: Annotated[
        bool, typer.Option("--markdown", help="With --forecast: the forecast as Markdown.")
    ] = False,
) -> None:
    """Check the store, change nothing: configs, sources, series, safety, apply, export, lint."""
    from patchtool.cli.whereabouts import sole_device
    from patchtool.commands.check.run import CheckOptions, run_checks, run_forecasts
    from patchtool.core.fsutil import check_name
    from patchtool.series.privacy import find_keyring

    store = context.store()
    if base is not None and device is None:
        device = sole_device(store, "--commit-id needs --device-type")
    options = CheckOptions(
        store=store,
        cache=context.cache(),
        device=check_name("device", device) if device is not None else None,
        base=base,
        archive_paths=tuple(sdist or ()),
        offline=offline,
        jobs=jobs,
        keyring=find_keyring(identity),
        public_only=public_only,
    )
    reporter = context.reporter()
    if markdown and forecast is None:
        raise UsageError("--markdown goes with --forecast")
    if forecast is not None:
        from patchtool.cli.forecasts import show_forecasts

        show_forecasts(run_forecasts(options, forecast, reporter), as_json, markdown)
        return
    report = run_checks(options, reporter)
    if as_json:
        context.emit_json(report.matrix())
    else:
        for record in report.records:
            mark = "skip" if record.skipped else "ok" if record.ok else "FAIL"
            print(f"{mark:4}  {record.device}  {record.base or '-'}  {record.check}")
            for detail in record.details:
                print(f"        {detail}")
    for skipped in report.skipped_summaries():
        reporter.warn(skipped)
    report.raise_for_failures()
