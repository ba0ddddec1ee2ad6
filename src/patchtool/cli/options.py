"""The options several commands declare alike, each declared once (its names and
its help) as an `Annotated` type, and the parsing of option values into the
store's types. Declarations only: nothing here runs a command."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from patchtool.cli.typer_lean import typer
from patchtool.core.errors import UsageError, quoted

if TYPE_CHECKING:
    from patchtool.store.model import NamedRecipient

DeviceOption = Annotated[
    str | None,
    typer.Option(
        "--device-type",
        "-d",
        help="Device name: a folder of the store (default: the build tree you are in, "
        "else the store's only device).",
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
SdistOption = Annotated[
    list[Path] | None,
    typer.Option(help="A local sdist file or folder (air-gapped sites); repeatable."),
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
        "--public-only/--no-public-only",
        help="Leave out the private patches instead of needing an identity that opens them "
        "(a tree made so cannot be exported).",
    ),
]
CheckPublicOnlyOption = Annotated[
    bool,
    typer.Option(
        "--public-only/--no-public-only",
        help="Check the public patches only, leaving out the private ones instead of needing "
        "an identity that opens them (the export check is not run then).",
    ),
]
ThreeWayOption = Annotated[
    bool,
    typer.Option(
        "--3way/--no-3way", help="Let git fall back to a 3-way merge, and report where."
    ),
]
NoWaitOption = Annotated[
    bool, typer.Option("--no-wait", help="Fail at once when another run holds the device's lock.")
]

# The options both forms of `import` take (cli/import_command.py): one declaration,
# so that `import --help` shows one option for both.
ImportOntoOption = Annotated[
    str | None,
    typer.Option(
        help="Create a base to import onto: a version or git+URL@COMMIT (with --flagscale: "
        "for the sets that pin no base; --commit-id names an existing one instead)."
    ),
]
ImportThreeWayOption = Annotated[
    bool,
    typer.Option(
        "--3way/--no-3way",
        help="Let git fall back to a 3-way merge where the change names its base blobs.",
    ),
]
RecipientOption = Annotated[
    list[str] | None,
    typer.Option(
        metavar="NAME=KEY",
        help="A recipient of private patches (an age or SSH public key), written into "
        "the device.toml that --create (or --flagscale) makes; repeatable. FlagScale's "
        "encrypted patches become private patches, encrypted to these.",
    ),
]


def refuse_onto_with_base(onto: str | None, base: str | None) -> None:
    """`import`'s two forms alike: --onto makes a base, --commit-id names one."""
    if onto is not None and base is not None:
        raise UsageError("--onto creates a new base; --commit-id names an existing one: pick one")


def parse_recipients(items: list[str] | None) -> tuple[NamedRecipient, ...]:
    """--recipient NAME=KEY, each checked as the store checks device.toml's."""
    from patchtool.store.files import named_recipient

    found = []
    for item in items or ():
        name, separator, key = item.partition("=")
        if not separator:
            raise UsageError(f"--recipient {quoted(item)}: give NAME=KEY, e.g. ci=age1...")
        found.append(named_recipient(name, key, f"--recipient {name}"))
    return tuple(found)
