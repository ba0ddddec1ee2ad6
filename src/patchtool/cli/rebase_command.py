"""`rebase`: its options (start, --continue, --skip, --abort), checked against
each other, then the command (commands/rebase.py) under the device's locks.
cli/app.py registers it."""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

from typing import Annotated

from patchtool.cli import context
from patchtool.cli.options import DeviceOption, DirOption, IdentityOption, NoWaitOption, SdistOption
from patchtool.cli.typer_lean import typer
from patchtool.core.errors import UsageError


def rebase(
    device: DeviceOption = None,
    commit_id: Annotated[
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
) -> None:
    """Carry a device's series onto a newer upstream base, patch by patch, with 3-way merges."""
    from patchtool.commands.rebase import RebaseOptions
    from patchtool.commands.rebase import rebase as run_rebase
    from patchtool.core.locks import device_locks
    from patchtool.series.privacy import find_keyring

    flags = (("continue", continue_), ("skip", skip), ("abort", abort))
    actions = [name for name, flag in flags if flag]
    if len(actions) > 1:
        raise UsageError("--continue, --skip and --abort exclude each other")
    action = actions[0] if actions else "start"
    if action != "start" and (onto is not None or commit_id is not None):
        raise UsageError(f"--{action} takes no --onto or --commit-id: the rebase has them")
    if note is not None and action != "continue":
        raise UsageError("--note goes with --continue")
    started = context.device_context(device, build_dir)
    device = started.device
    reporter = started.reporter
    options = RebaseOptions(
        store=started.store,
        build_dir=started.build_dir,
        device=device,
        cache=context.cache(),
        onto=onto,
        commit_id=commit_id,
        action=action,
        note=note,
        version_label=base_version,
        archive_paths=tuple(sdist or ()),
        keyring=find_keyring(identity),
    )
    with device_locks(
        options.build_dir, options.store.root, device, reporter, writes_store=True, wait=not no_wait
    ):
        result = run_rebase(options, reporter)
    if result.new_base is None:
        reporter.info(f"rebase aborted; {result.tree} and the store are as they were")
        print(result.tree)
        return
    for name, outcome in result.outcomes:
        reporter.info(f"{outcome:>19}  {name}")
    reporter.info(f"report: {result.report}")
    print(result.new_base.path)
