"""The command line: commands and options, and the one error boundary.

Each command turns its options into a typed options object, calls the core, and
prints results on stdout. `main()` maps every `PatchtoolError` to a message, a
hint and its exit code (see errors.ExitCode); tracebacks only with --debug.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import sys
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import click
import typer

from patchtool import __version__
from patchtool.core.errors import ExitCode, PatchtoolError, UsageError, error_class, quoted
from patchtool.core.report import RichReporter

if TYPE_CHECKING:
    from patchtool.cli.whereabouts import Here
    from patchtool.series.privacy import Keyring
    from patchtool.sources.cache import BaseCache
    from patchtool.store.model import NamedRecipient
    from patchtool.store.resolve import Store

app = typer.Typer(
    name="patchtool",
    help="Keep a device's changes to vLLM as a reviewable patch series against an exact "
    "upstream base: apply them (unpatch), capture them (patch), build the device's wheel.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass
class GlobalOptions:
    store: Path | None = None
    cache_dir: Path | None = None
    debug: bool = False
    quiet: bool = False


_globals = GlobalOptions()

DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device-type",
        "-d",
        help="Device name: a folder of the store (default: the build tree you are in).",
    ),
]
DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Build folder; trees go to DIR/<device>/<project> (default: the build folder "
        "of the tree you are in, else build/ beside the store's patches/ folder).",
    ),
]
CommitOption = Annotated[
    str | None,
    typer.Option(
        "--commit-id",
        "-c",
        help="Base: full commit id, unique prefix of 7+ hex digits, folder name or version "
        "(default: device.toml's default-base, else the device's newest base).",
    ),
]
UnpatchCommitOption = Annotated[
    str | None,
    typer.Option(
        "--commit-id",
        "-c",
        help="Base: full commit id, unique prefix of 7+ hex digits, folder name or version "
        "(default: the existing tree's base, else device.toml's default-base, else the "
        "device's newest base).",
    ),
]
TreeCommitOption = Annotated[
    str | None,
    typer.Option(
        "--commit-id",
        "-c",
        help="The base whose folder receives the series (default: the build tree's base).",
    ),
]
IdentityOption = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        "-i",
        envvar="PATCHTOOL_IDENTITY",
        help="An age identity file (AGE-SECRET-KEY-1... lines) or OpenSSH private key that "
        "opens the device's private patches (*.patch.age).",
    ),
]
PublicOnlyOption = Annotated[
    bool,
    typer.Option(
        "--public-only",
        help="Leave out the private patches instead of needing an identity that opens them "
        "(a tree made so cannot be exported).",
    ),
]
NoWaitOption = Annotated[
    bool, typer.Option("--no-wait", help="Fail at once when another run holds the device's lock.")
]


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
    _globals.store, _globals.cache_dir = store, cache_dir
    _globals.debug, _globals.quiet = debug, quiet
    try:
        os.getcwd()
    except FileNotFoundError:
        # A removed working folder is named before any command starts; the
        # message lives in whereabouts, imported only on this path.
        from patchtool.cli.whereabouts import working_folder

        working_folder()


def _reporter() -> RichReporter:
    return RichReporter(quiet=_globals.quiet)


@functools.lru_cache(maxsize=1)
def _here() -> Here | None:
    from patchtool.cli.whereabouts import tree_around, working_folder

    return tree_around(working_folder())


def _store() -> Store:
    from patchtool.cli.whereabouts import store_for, working_folder

    return store_for(working_folder(), _globals.store, _here())


def _build_dir(build_dir: Path | None, store: Store) -> Path:
    from patchtool.cli.whereabouts import build_dir_for

    return build_dir_for(build_dir, store, _here())


@dataclass(frozen=True)
class _DeviceContext:
    reporter: RichReporter
    store: Store
    build_dir: Path
    device: str


def _device_context(
    device: str | None, build_dir: Path | None, must_exist: bool = True
) -> _DeviceContext:
    """What every per-device command starts with: the device name checked (and,
    unless it is being created, found in the store before the lock creates
    DIR/<device>), the store, and the build folder checked."""
    from patchtool.cli.whereabouts import device_for

    name = device_for(device, _here())
    store = _store()
    if must_exist:
        store.device(name)
    return _DeviceContext(_reporter(), store, _build_dir(build_dir, store), name)


def _cache() -> BaseCache:
    from patchtool.sources.cache import BaseCache, cache_root

    return BaseCache(cache_root(_globals.cache_dir))


def _emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- commands


@app.command()
def unpatch(
    device: DeviceOption = None,
    base: UnpatchCommitOption = None,
    build_dir: DirOption = None,
    force: Annotated[
        bool,
        typer.Option(help="Replace a tree holding unexported work (it is moved to a backup)."),
    ] = False,
    three_way: Annotated[
        bool, typer.Option("--3way", help="Let git fall back to a 3-way merge, and report where.")
    ] = False,
    sdist: Annotated[
        list[Path] | None,
        typer.Option(help="A local sdist file or folder (air-gapped sites); repeatable."),
    ] = None,
    identity: IdentityOption = None,
    public_only: PublicOnlyOption = False,
    no_wait: NoWaitOption = False,
) -> None:
    """Create DIR/<device>/<project>: the upstream base plus the device's series, as git commits."""
    from patchtool.commands.unpatch import UnpatchOptions
    from patchtool.commands.unpatch import unpatch as run_unpatch
    from patchtool.series.privacy import find_keyring

    context = _device_context(device, build_dir)

    device = context.device
    reporter = context.reporter
    options = UnpatchOptions(
        store=context.store,
        build_dir=context.build_dir,
        device=device,
        cache=_cache(),
        base=base,
        force=force,
        three_way=three_way,
        archive_paths=tuple(sdist or ()),
        keyring=find_keyring(identity),
        public_only=public_only,
        wait=not no_wait,
    )
    result = run_unpatch(options, reporter)
    if result.backup is not None:
        reporter.warn(f"the previous tree held unexported work; it was moved to {result.backup}")
    if result.three_way:
        reporter.warn("needed a 3-way merge: " + ", ".join(result.three_way))
    reporter.info(
        f"{result.base.label} ({result.base.commit[:12]}) + {len(result.applied)} patch(es)"
        + (f", {len(result.skipped_private)} private left out" if result.skipped_private else "")
    )
    print(result.tree)


@app.command()
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
        typer.Option("--message", "-m", help="First commit uncommitted changes as a new patch."),
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

    context = _device_context(device, build_dir)

    device = context.device
    reporter = context.reporter
    options = ExportOptions(
        store=context.store,
        build_dir=context.build_dir,
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
        reporter.info(f"store unchanged: {len(plan.unchanged)} patch(es) in {plan.base.path}")
    else:
        for line in plan.describe():
            reporter.info(line)
    print(plan.base.path)


@app.command("build-wheel")
def build_wheel_command(
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
    from patchtool.commands.build_wheel import WheelOptions, build_wheel
    from patchtool.series.privacy import find_keyring

    context = _device_context(device, build_dir)

    device = context.device
    reporter = context.reporter
    options = WheelOptions(
        store=context.store,
        build_dir=context.build_dir,
        device=device,
        out_dir=out,
        target_device=target_device,
        env_args=tuple(env_arg) if env_arg else None,
        allow_dirty=allow_dirty,
        keyring=find_keyring(identity),
        wait=not no_wait,
    )
    result = build_wheel(options, reporter)
    reporter.info(f"sha256 {result.sha256}")
    print(result.wheel)


@app.command("list")
def list_command(
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

    records = store_listing(_store())
    if as_json:
        _emit_json({"include": records})
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table("device", "base", "version", "commit", "source", "patches", box=None)
    for r in records:
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


@app.command()
def status(
    device: DeviceOption = None,
    build_dir: DirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """The build tree's base, applied patches, unexported commits and uncommitted files."""
    from patchtool.cli.overview import tree_status

    context = _device_context(device, build_dir)
    found = tree_status(context.store, context.build_dir, context.device)
    if as_json:
        _emit_json(found.to_json())
        return
    print(f"tree:       {found.tree}")
    print(f"base:       {found.base} ({found.project} {found.version}, {found.base_commit})")
    for title, lines in (
        ("commits:   ", found.commits),
        ("unexported:", found.unexported),
        ("uncommitted files:", found.uncommitted),
    ):
        print(f"{title} {len(lines)}")
        for line in lines:
            print(f"  {line}")
    for line in found.other:
        print(f"note: {line}")


# --------------------------------------------------------------------------- check


@app.command("check")
def check_command(
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
    sdist: Annotated[
        list[Path] | None,
        typer.Option(help="A local sdist file or folder (air-gapped sites); repeatable."),
    ] = None,
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
    public_only: PublicOnlyOption = False,
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
    from patchtool.commands.check import CheckOptions, run_checks, run_forecasts
    from patchtool.core.fsutil import check_name
    from patchtool.series.privacy import find_keyring
    from patchtool.sources.cache import BaseCache, cache_root

    if base is not None and device is None:
        raise UsageError("--commit-id needs --device-type", hint="Name the device it belongs to.")
    store = _store()
    options = CheckOptions(
        store=store,
        cache=BaseCache(cache_root(_globals.cache_dir)),
        device=check_name("device", device) if device is not None else None,
        base=base,
        archive_paths=tuple(sdist or ()),
        offline=offline,
        jobs=jobs,
        keyring=find_keyring(identity),
        public_only=public_only,
    )
    reporter = _reporter()
    if markdown and forecast is None:
        raise UsageError("--markdown goes with --forecast")
    if forecast is not None:
        from patchtool.trees.forecast import raise_for_conflicts

        found = run_forecasts(options, forecast, reporter)
        _print_forecasts(found, as_json, markdown)
        raise_for_conflicts(found)
        return
    report = run_checks(options, reporter)
    if as_json:
        _emit_json(report.matrix())
    else:
        for record in report.records:
            mark = "skip" if record.skipped else "ok" if record.ok else "FAIL"
            print(f"{mark:4}  {record.device}  {record.base or '-'}  {record.check}")
            for detail in record.details:
                print(f"        {detail}")
    skipped = report.skipped_summary()
    if skipped is not None:
        reporter.warn(skipped)
    report.raise_for_failures()


# --------------------------------------------------------------------------- rebase and import


@app.command("rebase")
def rebase_command(
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
    sdist: Annotated[
        list[Path] | None,
        typer.Option(help="A local sdist file or folder (air-gapped sites); repeatable."),
    ] = None,
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
    from patchtool.commands.rebase.run import rebase
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
    context = _device_context(device, build_dir)
    device = context.device
    reporter = context.reporter
    options = RebaseOptions(
        store=context.store,
        build_dir=context.build_dir,
        device=device,
        cache=_cache(),
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
        _forecast(options, reporter, as_json, markdown)
        return
    result = rebase(options, reporter)
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


def _forecast(options: Any, reporter: RichReporter, as_json: bool, markdown: bool) -> None:
    """`rebase --dry-run`: print the forecast, exit 4 if a patch would conflict."""
    from patchtool.commands.rebase.forecast import forecast
    from patchtool.trees.forecast import raise_for_conflicts

    found = [forecast(options, reporter)]
    _print_forecasts(found, as_json, markdown)
    raise_for_conflicts(found)


def _print_forecasts(found: list[Any], as_json: bool, markdown: bool) -> None:
    from patchtool.trees.forecast import forecasts_json, forecasts_markdown

    if as_json:
        _emit_json(forecasts_json(found))
    elif markdown:
        sys.stdout.write(forecasts_markdown(found))
    else:
        for forecast in found:
            totals = ", ".join(f"{n} {o}" for o, n in forecast.totals().items() if n)
            head = f"{forecast.device}  {forecast.base} -> {forecast.onto}"
            print(f"{head}: {totals or 'no patches'}")
            for number, patch in enumerate(forecast.patches, start=1):
                print(f"  {number:>3}  {patch.outcome:16}  {patch.name}")
                for conflict in patch.conflicts:
                    print(f"         {conflict}")


@app.command("import")
def import_command(
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
    onto: Annotated[
        str | None,
        typer.Option(help="Create a base to import onto: a version or git+URL@COMMIT."),
    ] = None,
    base_version: Annotated[
        str | None, typer.Option(help="Version label of a new git base (default: 12 digits).")
    ] = None,
    sdist: Annotated[
        list[Path] | None,
        typer.Option(help="A local sdist file or folder (air-gapped sites); repeatable."),
    ] = None,
    exclude: Annotated[
        list[str] | None,
        typer.Option(
            "--exclude",
            metavar="GLOB",
            help="Leave out file sections whose path (after -p) matches GLOB, as git apply "
            "--exclude does; repeatable.",
        ),
    ] = None,
    three_way: Annotated[
        bool,
        typer.Option(
            "--3way",
            help="Let git fall back to a 3-way merge where the change names its base blobs.",
        ),
    ] = False,
    flagscale: Annotated[
        Path | None,
        typer.Option(
            "--flagscale",
            metavar="PATH",
            help="Import a FlagScale checkout's hardware/ tree: every device and backend "
            "(-d and --backend filter) becomes a device and base of the store.",
        ),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="With --flagscale: only this backend (e.g. vllm).")
    ] = None,
    private_key: Annotated[
        Path | None,
        typer.Option(
            metavar="PEM",
            help="With --flagscale: the vendor's RSA private key for encrypted patches "
            "(decrypted in memory; without it they are listed as skipped).",
        ),
    ] = None,
    git_url: Annotated[
        list[str] | None,
        typer.Option(
            metavar="BACKEND=URL",
            help="With --flagscale: where a backend's pinned commit is fetched from (a "
            "mirror or a local clone); repeatable.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(help="With --flagscale: print the plan (devices, bases, patches, files)."),
    ] = False,
    recipient: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=KEY",
            help="A recipient of private patches (an age or SSH public key), written into "
            "the device.toml that --create (or --flagscale) makes; repeatable. FlagScale's "
            "encrypted patches become private patches, encrypted to these.",
        ),
    ] = None,
    identity: IdentityOption = None,
    no_wait: NoWaitOption = False,
) -> None:
    """Import outside patches (mbox, plain diffs, quilt, a FlagScale tree) as new patches."""
    from patchtool.commands.importing.changes import ImportOptions, import_changes
    from patchtool.series.privacy import find_keyring

    recipients = _recipients(tuple(recipient or ()))
    keyring = find_keyring(identity)

    if flagscale is not None:
        given = {
            "FILES": bool(files), "--commit-id": base is not None, "-p": strip != 1,
            "--series": series is not None, "--author": author is not None,
            "--date": date is not None, "--message": message is not None, "--create": create,
            "--display-name": display_name is not None, "--vendor": vendor is not None,
            "--onto": onto is not None, "--base-version": base_version is not None,
            "--exclude": bool(exclude),
        }  # fmt: skip
        clashing = [name for name, present in given.items() if present]
        if clashing:
            raise UsageError(
                f"--flagscale takes no {', '.join(clashing)}: devices, bases and messages "
                "come from the FlagScale tree"
            )
        _import_flagscale(
            flagscale, device, backend, private_key, tuple(git_url or ()), dry_run, build_dir,
            tuple(sdist or ()), three_way, no_wait, recipients, keyring,
        )  # fmt: skip
        return
    if backend is not None or private_key is not None or git_url or dry_run:
        raise UsageError("--backend, --private-key, --git-url and --dry-run go with --flagscale")
    if strip < 0:
        raise UsageError("-p takes a number of path components, 0 or more")
    if onto is not None and base is not None:
        raise UsageError("--onto creates a new base; --commit-id names an existing one: pick one")
    context = _device_context(device, build_dir, must_exist=not create)
    device = context.device
    reporter = context.reporter
    options = ImportOptions(
        store=context.store,
        build_dir=context.build_dir,
        device=device,
        cache=_cache(),
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
        wait=not no_wait,
    )
    if recipients and not create:
        raise UsageError("--recipient goes with --create or --flagscale (a new device.toml)")
    result = import_changes(options, reporter)
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
    reporter.info(f"imported {len(result.imported)} patch(es) into {result.base.path}")
    print(result.base.path)


def _import_flagscale(
    root: Path,
    device: str | None,
    backend: str | None,
    private_key: Path | None,
    git_urls: tuple[str, ...],
    dry_run: bool,
    build_dir: Path | None,
    archive_paths: tuple[Path, ...],
    three_way: bool,
    no_wait: bool,
    recipients: tuple[NamedRecipient, ...],
    keyring: Keyring | None,
) -> None:
    from patchtool.commands.importing.flagscale import MigrateOptions, migrate, render_summary
    from patchtool.core.fsutil import check_name

    urls: dict[str, str] = {}
    for item in git_urls:
        name, separator, url = item.partition("=")
        if not separator or not name or not url:
            raise UsageError(
                f"--git-url {quoted(item)}: give BACKEND=URL, e.g. vllm=/srv/mirror/vllm"
            )
        urls[name] = url
    store = _store()
    options = MigrateOptions(
        store=store,
        build_dir=_build_dir(build_dir, store),
        cache=_cache(),
        root=root,
        device=check_name("device", device) if device is not None else None,
        backend=backend,
        private_key=private_key,
        dry_run=dry_run,
        three_way=three_way,
        git_urls=urls,
        archive_paths=archive_paths,
        wait=not no_wait,
        recipients=recipients,
        keyring=keyring,
    )
    result = migrate(options, _reporter())
    if dry_run:
        for line in result.plan:
            print(line)
        return
    for line in render_summary(result.rows):
        print(line)
    failed = result.failed
    real = [row for row in failed if not row.reason.startswith("skipped")]
    if real:
        # The first failure's code, as the class that carries it.
        raise error_class(ExitCode(real[0].exit_code))(
            f"{len(real)} of {len(result.rows)} device and backend set(s) were not imported: "
            + ", ".join(f"{row.device}/{row.backend}" for row in real),
            hint="The summary above says why; the sets that were imported are in the store. "
            "Fix what failed and import again with -d and --backend.",
        )


def _recipients(items: tuple[str, ...]) -> tuple[NamedRecipient, ...]:
    from patchtool.store.files import named_recipient

    found = []
    for item in items:
        name, separator, key = item.partition("=")
        if not separator:
            raise UsageError(f"--recipient {quoted(item)}: give NAME=KEY, e.g. ci=age1...")
        found.append(named_recipient(name, key, f"--recipient {name}"))
    return tuple(found)


# --------------------------------------------------------------------------- error boundary


class Terminated(BaseException):
    """SIGTERM, as an exception: not a PatchtoolError (no `except PatchtoolError`
    may take it for a failed check and go on), so it unwinds the run through
    every `finally` (a scratch tree holding a private patch's plaintext is
    removed, a stage too) up to main()."""


# The exit status of a run stopped by SIGTERM: what a shell reports for a process
# the signal killed (128 + 15), after patchtool cleaned up.
TERMINATED_STATUS = 128 + signal.SIGTERM


def _raise_terminated(signum: int, frame: object) -> None:
    # Once: a second SIGTERM must not cut the clean-up the first one started.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated()


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """While a command runs, SIGTERM (a cancelled CI job, `kill`) raises
    Terminated in the main thread instead of ending the process on the spot."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread (embedding): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def clear_process_caches() -> None:
    """Forget what patchtool keeps for the life of a process: the build tree around
    the working folder, and pip's settings (read from its files and the environment).
    main() calls it first, so that each run in a process that runs several (tests,
    embedding) reads both afresh, as a new process would; call it after a run to
    leave nothing of that run behind."""
    _here.cache_clear()
    # Only a command that reaches an index imports it; start-up does not pay for it.
    if "patchtool.sources.index" in sys.modules:
        from patchtool.sources.index import load_settings

        load_settings.cache_clear()


def main(argv: list[str] | None = None) -> None:
    # typer's standalone mode handles usage errors (exit 2), --help and Exit;
    # everything the core raises comes through here.
    clear_process_caches()
    command = typer.main.get_command(app)
    _hide_empty_defaults(command)
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with _sigterm_unwinds():
            command.main(args=_globals_first(command, args), prog_name="patchtool")
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
        if _globals.debug:
            traceback.print_exc()
        else:
            print(f"patchtool: internal error: {type(error).__name__}: {error}", file=sys.stderr)
            print("hint: run again with --debug and report the traceback.", file=sys.stderr)
        sys.exit(int(ExitCode.INTERNAL))


def _hide_empty_defaults(command: click.Command) -> None:
    """No `[default: None]` or `[default: no-force]` in --help: an option's help
    text says what its absence means."""
    params = list(command.params)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _hide_empty_defaults(sub)
    for param in params:
        if param.default in (None, False, (), []) and hasattr(param, "show_default"):
            param.show_default = False


def _globals_first(command: click.Command, args: list[str]) -> list[str]:
    """Move the global options (--store, --cache-dir, --debug, -q) found after the
    command name to before it, reading the command's own options so that an
    option's value (`-m -q`) is never taken for a global option."""
    if not isinstance(command, click.Group):
        return args
    global_options = _option_arity(command.params)
    index = 0
    while index < len(args) and args[index].startswith("-") and args[index] != "--":
        name = args[index].split("=", 1)[0]
        index += 1 + (global_options.get(name, 0) if "=" not in args[index] else 0)
    if index >= len(args) or args[index] not in command.commands:
        return args
    sub_options = _option_arity(command.commands[args[index]].params)
    moved: list[str] = []
    rest: list[str] = []
    position = index + 1
    while position < len(args):
        item = args[position]
        if item == "--":
            rest.extend(args[position:])
            break
        name = item.split("=", 1)[0]
        is_global = name in global_options and name not in sub_options
        arity = global_options if is_global else sub_options
        width = 0 if "=" in item else arity.get(name, 0)
        (moved if is_global else rest).extend(args[position : position + 1 + width])
        position += 1 + width
    return args[:index] + moved + args[index : index + 1] + rest


def _option_arity(params: list[click.Parameter]) -> dict[str, int]:
    """Each option name and how many values follow it (0 for flags)."""
    arity: dict[str, int] = {}
    for param in params:
        if isinstance(param, click.Option):
            width = 0 if param.is_flag or param.count else param.nargs
            for name in (*param.opts, *param.secondary_opts):
                arity[name] = width
    return arity


def _render_error(error: PatchtoolError) -> None:
    if _globals.debug:
        traceback.print_exc()
    from rich.console import Console
    from rich.markup import escape

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error:[/] {escape(error.message)}")
    if error.hint:
        console.print(f"[bold]hint:[/] {escape(error.hint)}")


__all__ = ["UsageError", "app", "main"]
