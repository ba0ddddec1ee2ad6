"""`keygen`: a new age identity for private patches, so that no other tool is
needed (age-keygen does the same). Declares the command; the key is made and
written by series/privacy.py, the one home of identities."""

# No `from __future__ import annotations`: typer reads these signatures on every
# run, and would evaluate string annotations anew for each parameter, three times.

from pathlib import Path
from typing import Annotated

from patchtool.cli import context
from patchtool.cli.typer_lean import typer


def keygen(
    output: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="Where the identity goes (created with mode 0600; an existing file is "
            "never replaced), e.g. ~/.config/patchtool/identity.txt.",
        ),
    ],
) -> None:
    """Write a new age identity (X25519) to FILE and print its recipient (age1...).

    The recipient goes into device.toml's [private.recipients] (or --recipient
    NAME=KEY); FILE opens the private patches (--identity FILE or
    PATCHTOOL_IDENTITY). An SSH key works as well: its public key as the recipient,
    the private key as the identity."""
    from patchtool.series.privacy import write_new_identity

    recipient = write_new_identity(output)
    context.reporter().info(
        f"wrote a new identity to {output} (mode 0600); its recipient, for device.toml's "
        "[private.recipients]:"
    )
    print(recipient)
