"""`rebase`: its options (start, --continue, --skip, --abort, --carried, --dry-run),
checked against each other, then the command (commands/rebase/, which takes the
device's locks) or its forecast. cli/app.py registers it."""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

from typing import Annotated

from patchtool.cli import context
from patchtool.cli.options import DeviceOption, DirOption, IdentityOption, NoWaitOption, SdistOption
from patchtool.cli.typer_lean import typer
from patchtool.core.errors import UsageError


def rebase(
    device: DeviceOption = None,
    base: Annotated[
        str | None,
        typer.Option(
            "--commit-id",
            "-c",
            help="The old base (default: device.toml's default-base, else the newest base).",
        ),
    ] = None,
    onto: Annotated[
        str | None,
        typer.Option(
            help="The new base: a released version (0.7.3, vllm==0.7.3) or "
            "git+URL-OR-PATH@FULL-COMMIT."
        ),
    ] = None,
    build_dir: DirOption = None,
    continue_: Annotated[
        bool, typer.Option("--continue", help="Go on after resolving a conflict.")
    ] = False,
    skip: Annotated[
        bool, typer.Option("--skip", help="Drop the conflicting patch, go on.")
    ] = False,
    abort: Annotated[
        bool, typer.Option("--abort", help="Put the tree and the store back as they were.")
    ] = False,
    note: Annotated[
        str | None, typer.Option(help="With --continue: how the conflict was resolved.")
    ] = None,
    base_version: Annotated[
        str | None, typer.Option(help="Version label of a git base (default: 12 commit digits).")
    ] = None,
    sdist: SdistOption = None,
    identity: IdentityOption = None,
    no_wait: NoWaitOption = False,
    carried: Annotated[
        bool,
        typer.Option(
            "--carried",
            help="Carry onto every base carried from the -c base (their rebase reports say "
            "so), each from the one it was carried from.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Forecast only: try every patch onto --onto in a scratch repository and "
            "say clean, 3-way, conflict (files, hunks) or already upstream; exit 4 if any "
            "conflicts. Writes nothing into the store or the build folder.",
        ),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="With --dry-run: the forecast as JSON.")
    ] = False,
    markdown: Annotated[
        bool,
        typer.Option("--markdown", help="With --dry-run: the forecast as Markdown (a CI summary)."),
    ] = False,
) -> None:
    """Carry a device's series onto a newer upstream base, patch by patch, with 3-way merges;
    onto existing bases (`--onto 0.7.3,0.8.5`, `--carried`), carry what changed since."""
    from patchtool.commands.rebase.run import rebase as run_rebase
    from patchtool.commands.rebase.state import RebaseOptions
    from patchtool.series.privacy import find_keyring

    flags = (("continue", continue_), ("skip", skip), ("abort", abort))
    actions = [name for name, flag in flags if flag]
    if len(actions) > 1:
        raise UsageError("--continue, --skip and --abort exclude each other")
    action = actions[0] if actions else "start"
    if action != "start" and (onto is not None or base is not None or carried or dry_run):
        raise UsageError(
            f"--{action} takes no --onto, --commit-id, --carried or --dry-run: the rebase has them"
        )
    if note is not None and action != "continue":
        raise UsageError("--note goes with --continue")
    if (as_json or markdown) and not dry_run:
        raise UsageError("--json and --markdown go with --dry-run")
    started = context.device_context(device, build_dir)
    device = started.device
    reporter = started.reporter
    options = RebaseOptions(
        store=started.store,
        build_dir=started.build_dir,
        device=device,
        cache=context.cache(),
        onto=onto,
        base=base,
        action=action,
        note=note,
        version_label=base_version,
        archive_paths=tuple(sdist or ()),
        keyring=find_keyring(identity),
        wait=not no_wait,
        carried=carried,
    )
    if dry_run:
        from patchtool.cli.forecasts import show_forecasts
        from patchtool.commands.rebase.forecast import forecast

        show_forecasts([forecast(options, reporter)], as_json, markdown)
        return
    result = run_rebase(options, reporter)
    if result.new_base is None:
        reporter.info(f"rebase aborted; {result.tree} and the store are as they were")
        print(result.tree)
        return
    for name, outcome in result.outcomes:
        reporter.info(f"{outcome:>19}  {name}")
    reporter.info(f"report: {result.report}")
    for carried_base in result.carried[:-1]:
        print(carried_base.path)
    print(result.new_base.path)
