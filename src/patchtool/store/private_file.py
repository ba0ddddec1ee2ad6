"""The private patch file (`*.patch.age`): a clear TOML header (subject, files,
recipients: claims until a decryption confirms them), then the patch encrypted
with age, armored. Its shape is checked here; encrypting and decrypting are
patchtool.series.privacy's.
"""

from __future__ import annotations

import base64
import binascii
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import IntegrityError
from patchtool.core.values import check_keys, require, safe_name, string_list
from patchtool.store.files import render_toml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
ARMOR_END = b"-----END AGE ENCRYPTED FILE-----"
_AGE_MAGIC = b"age-encryption.org/v1\n"
_PRIVATE_HEADER_KEYS = {"subject", "files", "recipients"}
_PRIVATE_COMMENT = (
    "# A private patch: what it is, in clear (patchtool checks it against the patch\n"
    "# whenever it decrypts it); then the patch itself, encrypted with age.\n"
)
_ARMOR_LINE = re.compile(rb"^[A-Za-z0-9+/]{1,64}={0,2}$")
_TEXT_LIMIT = 4096


@dataclass(frozen=True)
class PrivatePatch:
    """A private patch file: what a reviewer without the key sees (the subject,
    the files it changes, the names of its recipients: claims until a decryption
    confirms them) and the age file itself, armored."""

    subject: str
    files: tuple[str, ...]
    recipients: tuple[str, ...]
    armored: bytes  # from the BEGIN line through the END line and its newline


def parse_private_patch(path: Path, data: bytes) -> PrivatePatch:
    """Read a `*.patch.age` file's clear header and check its age armor's shape
    (without a key nothing more can be checked: age itself refuses a changed or
    cut-short file on decryption)."""
    start = data.find(b"\n" + ARMOR_BEGIN + b"\n")
    if start < 0:
        raise IntegrityError(
            f"{path}: is not a private patch: no '{ARMOR_BEGIN.decode()}' line after its header",
            hint="Restore the file from the store's history, or export it again with "
            "`patchtool patch`.",
        )
    header, armored = data[: start + 1], data[start + 1 :]
    try:
        table = tomllib.loads(header.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise IntegrityError(f"{path}: its header is not valid TOML: {error}") from error
    except RecursionError:  # tomllib reads nested arrays and tables recursively
        raise IntegrityError(
            f"{path}: its header is not valid TOML for patchtool: its arrays or tables nest "
            "too deeply",
            hint="Restore the file from the store's history, or export it again with "
            "`patchtool patch`.",
        ) from None
    check_keys(path, table, _PRIVATE_HEADER_KEYS, "")

    def text(value: str, key: str) -> str:
        if (
            not value
            or len(value) > _TEXT_LIMIT
            or any(ord(c) < 32 or ord(c) == 127 for c in value)
        ):
            raise IntegrityError(
                f"{path}: {key} must be one line of 1 to {_TEXT_LIMIT} characters "
                "without control characters"
            )
        return value

    subject = text(require(path, table, "subject", str), "subject")
    files = tuple(text(f, "each of files") for f in string_list(path, table, "files", ""))
    recipients = tuple(
        safe_name(path, "recipient name", r) for r in string_list(path, table, "recipients", "")
    )
    lines = armored.split(b"\n")
    body = lines[1:-2]
    if lines[-2:] != [ARMOR_END, b""] or not body or not all(_ARMOR_LINE.match(b) for b in body):
        raise IntegrityError(
            f"{path}: its age armor is damaged (it must end with "
            f"'{ARMOR_END.decode()}' and hold base64 lines of at most 64 characters)",
            hint="Restore the file from the store's history, or export it again with "
            "`patchtool patch`.",
        )
    first = body[0].rstrip(b"=")
    try:
        head = base64.b64decode(first[: len(first) // 4 * 4])
    except binascii.Error:  # pragma: no cover - the line is base64 by the pattern above
        head = b""
    if not head.startswith(_AGE_MAGIC):
        raise IntegrityError(f"{path}: its armor does not hold an age file (no age header)")
    return PrivatePatch(subject, files, recipients, armored)


def render_private_patch(patch: PrivatePatch) -> bytes:
    header = {
        "subject": patch.subject,
        "files": list(patch.files),
        "recipients": list(patch.recipients),
    }
    return (_PRIVATE_COMMENT + render_toml(header) + "\n").encode("utf-8") + patch.armored
