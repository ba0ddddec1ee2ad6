"""The commands on one device's build tree: `unpatch` makes it, `patch` exports
it, `build-wheel` builds it, `status` describes it. Each turns its options into
the command's options object, runs the command (layer 6; it takes the device's
locks) and prints the result; cli/app.py registers them."""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

from pathlib import Path
from typing import Annotated

from patchtool.cli import context
from patchtool.cli.options import (
    DeviceOption,
    DirOption,
    IdentityOption,
    NoWaitOption,
    PublicOnlyOption,
    SdistOption,
    ThreeWayOption,
    TreeCommitOption,
    UnpatchCommitOption,
)
from patchtool.cli.typer_lean import typer


def unpatch(
    device: DeviceOption = None,
    base: UnpatchCommitOption = None,
    build_dir: DirOption = None,
    force: Annotated[
        bool,
        typer.Option(help="Replace a tree holding unexported work (it is moved to a backup)."),
    ] = False,
    three_way: ThreeWayOption = False,
    sdist: SdistOption = None,
    identity: IdentityOption = None,
    public_only: PublicOnlyOption = False,
    no_wait: NoWaitOption = False,
) -> None:
    """Create DIR/<device>/<project>: the upstream base plus the device's series, as git commits."""
    from patchtool.commands.unpatch import UnpatchOptions
    from patchtool.commands.unpatch import unpatch as run_unpatch
    from patchtool.series.privacy import find_keyring

    started = context.device_context(device, build_dir)

    device = started.device
    reporter = started.reporter
    options = UnpatchOptions(
        store=started.store,
        build_dir=started.build_dir,
        device=device,
        cache=context.cache(),
        base=base,
        force=force,
        three_way=three_way,
        archive_paths=tuple(sdist or ()),
        keyring=find_keyring(identity),
        public_only=public_only,
        wait=not no_wait,
    )
    result = run_unpatch(options, reporter)
    if result.three_way:
        reporter.warn("needed a 3-way merge: " + ", ".join(result.three_way))
    reporter.info(
        f"{result.base.label} ({result.base.commit[:12]}) + {len(result.applied)} patch(es)"
        + (f", {len(result.skipped_private)} private left out" if result.skipped_private else "")
    )
    print(result.tree)


def patch(
    device: DeviceOption = None,
    build_dir: DirOption = None,
    base: TreeCommitOption = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="Change nothing; fail (exit 7) if the store differs from a fresh export.",
        ),
    ] = False,
    message: Annotated[
        str | None,
        typer.Option(
            "--message",
            "-m",
            metavar="SUBJECT",
            help="First commit the uncommitted changes as one new patch with this subject. "
            "Unless the message has a body (SUBJECT, a blank line, the body), the commit gets "
            "one naming where the change came from and an `Upstream-Status: Pending` trailer, "
            "so that it passes lint; reword it to say why (`git commit --amend`). With "
            "nothing uncommitted it makes no commit, and says so.",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="Export even though the store's series changed since this tree last read "
            "or wrote it (what changed there is replaced by this tree's series)."
        ),
    ] = False,
    strict: Annotated[
        bool,
        typer.Option(
            help="Fail (exit 7, as `check` does for lint) and write nothing if a patch would "
            "fail check's lint: no subject, no body, no valid Upstream-Status: trailer, added "
            "trailing whitespace or conflict markers. Without it these are warnings."
        ),
    ] = False,
    reencrypt: Annotated[
        bool,
        typer.Option(
            help="Encrypt every private patch anew, to the recipients device.toml names now. "
            "Without it an unchanged private patch keeps its file byte for byte unless its "
            "recipients are not device.toml's (one was added or removed there)."
        ),
    ] = False,
    publish: Annotated[
        bool,
        typer.Option(
            help="Export in clear a commit that carries a private patch's change but no "
            "`Patchtool-Private: yes` trailer (without it, patch refuses)."
        ),
    ] = False,
    identity: IdentityOption = None,
    no_wait: NoWaitOption = False,
) -> None:
    """Export the commits after the base in the build tree into the store, byte-stable.

    A commit whose message has the trailer `Patchtool-Private: yes` becomes a private
    patch (NAME.patch.age), encrypted to device.toml's [private.recipients]."""
    from patchtool.commands.export import ExportOptions, export_series
    from patchtool.series.privacy import find_keyring

    started = context.device_context(device, build_dir)

    device = started.device
    reporter = started.reporter
    options = ExportOptions(
        store=started.store,
        build_dir=started.build_dir,
        given_dir=started.given_dir,
        device=device,
        base=base,
        check=check,
        message=message,
        force=force,
        strict=strict,
        keyring=find_keyring(identity),
        reencrypt=reencrypt,
        publish=publish,
        wait=not no_wait,
    )
    result = export_series(options, reporter)
    plan = result.plan
    if plan.is_noop:
        # The base folder is the result, on stdout below (once: in a terminal both
        # streams show, as unpatch shows its tree and build-wheel its wheel).
        reporter.info(f"store unchanged: {len(plan.unchanged)} patch(es)")
    else:
        for line in plan.describe():
            reporter.info(line)
    print(plan.base.path)


def build_wheel(
    device: DeviceOption = None,
    build_dir: DirOption = None,
    target_device: Annotated[
        str | None,
        typer.Option(help="VLLM_TARGET_DEVICE for the build (default: device.toml's, e.g. empty)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Where the wheel goes (default: DIR/<device>/dist).")
    ] = None,
    env_arg: Annotated[
        list[str] | None,
        typer.Option(help="Argument for env.sh, repeatable (default: device.toml's env-args)."),
    ] = None,
    allow_dirty: Annotated[
        bool, typer.Option(help="Build HEAD even if the tree holds unexported work.")
    ] = False,
    identity: IdentityOption = None,
    no_wait: NoWaitOption = False,
) -> None:
    """Source the tree's env.sh and build the device's vLLM wheel; verify and record it."""
    from patchtool.commands.build_wheel import WheelOptions
    from patchtool.commands.build_wheel import build_wheel as run_build_wheel
    from patchtool.series.privacy import find_keyring

    started = context.device_context(device, build_dir)

    device = started.device
    reporter = started.reporter
    options = WheelOptions(
        store=started.store,
        build_dir=started.build_dir,
        given_dir=started.given_dir,
        device=device,
        out_dir=out,
        target_device=target_device,
        env_args=tuple(env_arg) if env_arg else None,
        allow_dirty=allow_dirty,
        keyring=find_keyring(identity),
        wait=not no_wait,
    )
    result = run_build_wheel(options, reporter)
    reporter.info(f"sha256 {result.sha256}")
    print(result.wheel)


def status(
    device: DeviceOption = None,
    build_dir: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The build tree's base, applied patches, unexported commits and uncommitted files."""
    from patchtool.cli.overview import tree_status

    started = context.device_context(device, build_dir)
    found = tree_status(
        started.store, started.build_dir, started.device, given_dir=started.given_dir
    )
    if as_json:
        context.emit_json(found.to_json())
        return
    for line in found.in_progress:
        print(line)
    print(f"tree:       {found.tree}")
    sections = [("uncommitted files:", found.uncommitted)]
    if found.base is not None:  # None: a rebase left the tree on no state it can name
        print(f"base:       {found.base} ({found.project} {found.version}, {found.base_commit})")
        sections[:0] = [("commits:   ", found.commits), ("unexported:", found.unexported)]
    for title, lines in sections:
        print(f"{title} {len(lines)}")
        for line in lines:
            print(f"  {line}")
    for line in found.other:
        print(f"note: {line}")
