"""`import --flagscale PATH`: a FlagScale checkout's hardware/ tree into the store,
every device and backend at once (commands/importing/flagscale.py).

It is the second form of `import` (cli/import_command.py joins the two): this
function declares the options it takes; an option of the other form given with
--flagscale is refused by the join, from the two declarations."""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

from pathlib import Path
from typing import Annotated

from patchtool.cli import context
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
from patchtool.core.errors import ExitCode, UsageError, error_class, quoted


# The order of the parameters places each option of this form in `import --help`:
# after the option of both forms that precedes it here (--3way).
def import_flagscale(
    device: DeviceOption = None,
    base: CommitOption = None,
    build_dir: DirOption = None,
    onto: ImportOntoOption = None,
    sdist: SdistOption = None,
    three_way: ImportThreeWayOption = False,
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
        list[Path] | None,
        typer.Option(
            metavar="PEM",
            help="With --flagscale: a vendor's RSA private key for encrypted patches "
            "(decrypted in memory); repeatable, one per vendor. A set no key opens is skipped.",
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
    group_bytes: Annotated[
        int | None,
        typer.Option(
            metavar="BYTES",
            help="With --flagscale: split a group whose patch is larger than this, by its "
            "sub-folders (default 262144).",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            help="With --flagscale: print the plan (devices, bases, patches, their files, "
            "authors and dates) and change nothing; needs no store."
        ),
    ] = False,
    recipient: RecipientOption = None,
    identity: IdentityOption = None,
    no_wait: NoWaitOption = False,
) -> None:
    """Import a FlagScale tree: every device and backend becomes a device and base."""
    from patchtool.commands.importing.flagscale import (
        MigrateOptions,
        check_git_urls,
        migrate,
        plan,
    )
    from patchtool.commands.importing.flagscale_report import render_summary
    from patchtool.core.fsutil import check_name
    from patchtool.series.privacy import find_keyring
    from patchtool.vendors.flagscale.model import DEFAULT_GROUP_BYTES

    assert flagscale is not None  # the join calls this form only with --flagscale
    recipients = parse_recipients(recipient)
    keyring = find_keyring(identity)
    refuse_onto_with_base(onto, base)
    urls: dict[str, str] = {}
    for item in git_url or ():
        name, separator, url = item.partition("=")
        if not separator or not name or not url:
            raise UsageError(
                f"--git-url {quoted(item)}: give BACKEND=URL, e.g. vllm=/srv/mirror/vllm"
            )
        urls[name] = url
    check_git_urls(urls)
    if group_bytes is not None and group_bytes < 1:
        raise UsageError("--group-bytes takes a number of bytes, 1 or more")
    chosen = check_name("device", device) if device is not None else None
    size = group_bytes or DEFAULT_GROUP_BYTES
    private_keys = tuple(private_key or ())
    if dry_run:  # reads the tree only: no store, build folder or cache is needed
        for line in plan(flagscale, chosen, backend, private_keys, size):
            print(line)
        return
    store = context.store()
    options = MigrateOptions(
        store=store,
        build_dir=context.build_dir(build_dir, store),
        cache=context.cache(),
        root=flagscale,
        device=chosen,
        backend=backend,
        private_keys=private_keys,
        three_way=three_way,
        git_urls=urls,
        archive_paths=tuple(sdist or ()),
        wait=not no_wait,
        recipients=recipients,
        keyring=keyring,
        group_bytes=size,
        onto=onto,
        base=base,
    )
    result = migrate(options, context.reporter())
    for line in render_summary(result.rows):
        print(line)
    real = result.failed
    if real:
        # The first failure's code, as the class that carries it.
        raise error_class(ExitCode(real[0].exit_code))(
            f"{len(real)} of {len(result.rows)} device and backend set(s) were not imported: "
            + ", ".join(f"{row.device}/{row.backend}" for row in real),
            hint="The summary above says why; the sets that were imported are in the store. "
            "Fix what failed and import again with -d and --backend.",
        )


def refuse_plain_options(names: list[str]) -> UsageError:
    """Options of a plain import given with --flagscale."""
    return UsageError(
        f"--flagscale takes no {', '.join(names)}: devices, bases and messages "
        "come from the FlagScale tree"
    )


def refuse_flagscale_options(names: list[str]) -> UsageError:
    """Options of this form given without --flagscale (all of them are named)."""
    return UsageError(f"{', '.join(names[:-1])} and {names[-1]} go with --flagscale")
