"""A patch that git would decode before reading it (a transfer encoding,
format=flowed, MIME parts) is refused: what git reads would not be what
safety.check_size measured."""

from __future__ import annotations

import re

from patchtool.core.errors import IntegrityError, quoted

_MAIL_HEADER = re.compile(rb"(?:>?From |[\x21-\x39\x3b-\x7e]*:)")
_MAIL_START = re.compile(rb"^From ", re.M)


def check_mail_encoding(subject: str, data: bytes, private: bool = False) -> None:
    """Refuse a mail whose headers make git decode or reflow its body before it
    reads the patch in it (a transfer encoding, format=flowed, MIME parts):
    then git would read another text than the one these limits measured. git
    reads headers at the start of every mail: the start of the data and, as
    `git mailsplit` splits an mbox, every line that starts with "From ". Each
    line is looked at once, whatever the data holds."""
    starts = [len(data) - len(data.lstrip())]
    starts += [match.start() for match in _MAIL_START.finditer(data) if match.start()]
    examined = 0  # the headers before this offset were read already
    for start in starts:
        if start < examined:
            continue
        headers, examined = _content_headers(data, start)
        for position, name, value in headers:
            encoded = b"=?" in value  # git decodes RFC 2047 words before it looks
            if (
                name == b"content-transfer-encoding"
                and (encoded or b"base64" in value or b"quoted-printable" in value)
            ) or (
                name == b"content-type"
                and (encoded or b"format=flowed" in value or b"boundary=" in value)
            ):
                line = data.count(b"\n", 0, position) + 1
                shown = data[position:].split(b"\n", 1)[0].rstrip().decode("utf-8", "replace")
                # A private patch's plaintext is never quoted (CI logs are public):
                # the header is named by its fixed name alone.
                where = (
                    f"{subject}: a mail header {_HEADER_NAMES[name]} in its plaintext (not shown: "
                    "the patch is private)"
                    if private
                    else f"{subject}: line {line}: the mail header {quoted(shown, 80)}"
                )
                raise IntegrityError(
                    f"{where} makes git decode or reflow the patch before it reads it",
                    hint="Nothing was applied. Patches are bounded by the text git reads: "
                    "export the patch again with `patchtool patch` (git format-patch writes "
                    "it as it is).",
                )


_CONTENT_HEADERS = (b"content-type", b"content-transfer-encoding")
_HEADER_NAMES = {
    b"content-type": "Content-Type",
    b"content-transfer-encoding": "Content-Transfer-Encoding",
}


def _content_headers(data: bytes, start: int) -> tuple[list[tuple[int, bytes, bytes]], int]:
    """The Content-Type and Content-Transfer-Encoding headers of the mail at
    `start` as `git mailinfo` reads its header block (up to the first line that
    is empty or no header; folded lines joined): (offset, name in lower case,
    value in lower case) each; and the offset where the block ends."""
    found: list[tuple[int, bytes, bytes]] = []
    parts: list[bytes] = []  # the header being read, when it is one of those
    position = start
    while position < len(data):
        end = data.find(b"\n", position)
        end = len(data) if end < 0 else end
        text = data[position:end].rstrip()
        if data[position : position + 1] in (b" ", b"\t") and position > start:
            if parts:
                parts.append(text.strip())  # a folded line
        else:
            if parts:
                found[-1] = (found[-1][0], found[-1][1], b" ".join(parts).lower())
                parts = []
            if not text or not _MAIL_HEADER.match(text):
                return found, position
            name, _, value = text.partition(b":")
            if name.strip().lower() in _CONTENT_HEADERS:
                found.append((position, name.strip().lower(), b""))
                parts = [value]
        position = end + 1
    if parts:
        found[-1] = (found[-1][0], found[-1][1], b" ".join(parts).lower())
    return found, position
