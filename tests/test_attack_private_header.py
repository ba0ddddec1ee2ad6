"""A private patch refused for a mail header names the patch and the header's
name only: its plaintext is never quoted, CI logs being public (attack report
19, LOW 12)."""

from __future__ import annotations

import pyrage
from helpers import error_lines
from test_private import MARKER, PrivateWorld, private

from patchtool.store.private_file import parse_private_patch, render_private_patch

__all__ = ["private"]  # the fixture, used by name


def test_a_private_patch_with_a_transfer_encoding_is_refused_without_its_plaintext(
    private: PrivateWorld,
) -> None:
    stored = private.base / "add-the-decode-path.patch.age"
    patch = parse_private_patch(stored, stored.read_bytes())
    secret = private.identity.read_text().splitlines()[-1]
    identity = pyrage.x25519.Identity.from_str(secret)
    plaintext = pyrage.decrypt(patch.armored, [identity])
    head, _, body = plaintext.partition(b"\n\n")
    leaked = b"Content-Transfer-Encoding: x-base64-" + MARKER.encode()
    changed = head + b"\nMIME-Version: 1.0\n" + leaked + b"\n\n" + body
    armored = pyrage.encrypt(changed, [identity.to_public()], armored=True)
    stored.write_bytes(
        render_private_patch(
            type(patch)(patch.subject, patch.files, patch.recipients, armored.rstrip(b"\n") + b"\n")
        )
    )
    result = private.cli(
        "unpatch", "-d", "devA", "--dir", str(private.world.build), "--force",
        identity=private.identity,
    )  # fmt: skip
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: patch {stored}: a mail header Content-Transfer-Encoding in its plaintext "
        "(not shown: the patch is private) makes git decode or reflow the patch before it "
        "reads it",
        "hint: Nothing was applied. Patches are bounded by the text git reads: export the patch "
        "again with `patchtool patch` (git format-patch writes it as it is).",
    ]
    assert MARKER not in result.output and "base64" not in result.output
