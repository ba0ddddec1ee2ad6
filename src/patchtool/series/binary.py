"""What a patch's `GIT binary patch` hunks declare, read as git reads them, so
that safety.check_size can bound what git would inflate before git reads it.
A bound, not a reading of what the patch does (that is git's, safety.py)."""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

# How git reads `GIT binary patch` data (apply.c): after that line, a hunk is a
# `literal <size>` or `delta <size>` line (the size as C's strtoul reads it),
# base85 lines (the first character gives the line's byte count: A-Z 1-26,
# a-z 27-52) and an empty line; a second hunk (the reverse) may follow. git
# inflates every hunk to exactly its declared size; a delta then makes a result
# of the size in its own header (two varints: the source's size, the result's).
_BINARY_START = re.compile(rb"^GIT binary patch\r?$", re.M)
_HUNK_HEAD = re.compile(rb"(literal|delta) ([^\n]*)")
_STRTOUL = re.compile(rb"[ \t\n\v\f\r]*([+-]?)([0-9]*)")
_ULONG = 1 << 64
_DELTA_HEADER = 32  # inflated bytes that hold both varints of a delta's header
# The data lines read for a delta's header: far more than git ever needs; a delta
# whose header is not in them is refused as unreadable.
_DELTA_LINES = 4096


@dataclass(frozen=True)
class BinaryHunk:
    line: int  # of its literal/delta line, from 1
    kind: str  # "literal" or "delta"
    size: int  # the declared inflated size
    result: int | None = None  # a delta's result size, from its header (None: unreadable)

    def sizes(self) -> list[tuple[str, int]]:
        """What git allocates for this hunk, each with what to call it."""
        if self.kind == "literal":
            return [("a binary literal", self.size)]
        assert self.result is not None
        return [("a binary delta", self.size), ("the result of a binary delta", self.result)]


def binary_hunks(data: bytes) -> Iterator[BinaryHunk]:
    """Every binary hunk git could read from `data`, with its declared sizes, read
    without inflating more than a delta's header (`result` is None for a delta
    whose header cannot be read). Each line is looked at once."""
    counted, lines = 0, 1  # line numbers, counted once through the data
    for start in _BINARY_START.finditer(data):
        position = start.end() + 1
        while position < len(data):
            end = _line_end(data, position)
            head = _HUNK_HEAD.match(data, position, end)
            if head is None:
                break
            first = position
            body: list[bytes] = []
            position = end + 1
            while position < len(data) and data[position : position + 1] != b"\n":
                end = _line_end(data, position)
                if len(body) < _DELTA_LINES:
                    body.append(data[position:end])
                position = end + 1
            position += 1  # the empty line that ends the hunk
            lines += data.count(b"\n", counted, first)
            counted = first
            size = _strtoul(head[2])
            if head[1] == b"literal":
                yield BinaryHunk(lines, "literal", size)
            else:
                yield BinaryHunk(lines, "delta", size, _delta_result_size(body))


def _line_end(data: bytes, position: int) -> int:
    end = data.find(b"\n", position)
    return len(data) if end < 0 else end


def _strtoul(text: bytes) -> int:
    """`text` as C's strtoul(text, NULL, 10) reads it on a 64-bit machine."""
    match = _STRTOUL.match(text)
    assert match is not None  # every part of the pattern may be empty
    sign, digits = match[1], match[2].lstrip(b"0")
    value = _ULONG - 1 if len(digits) > 20 else min(int(digits or b"0"), _ULONG - 1)
    return (_ULONG - value) % _ULONG if sign == b"-" and value != _ULONG - 1 else value


def _delta_result_size(lines: list[bytes]) -> int | None:
    """The result size in a binary delta's header, inflating its first bytes only
    (None when its data ends, or cannot be decoded, before the header does)."""
    inflater = zlib.decompressobj()
    header = b""
    for line in lines:
        if not line:
            break
        count = line[0] - 64 if 65 <= line[0] <= 90 else line[0] - 70 if 97 <= line[0] <= 122 else 0
        try:
            chunk = base64.b85decode(line[1:].rstrip(b"\r"))[:count]
            header += inflater.decompress(
                inflater.unconsumed_tail + chunk, _DELTA_HEADER - len(header)
            )
        except (ValueError, zlib.error):
            return None
        while inflater.unconsumed_tail and len(header) < _DELTA_HEADER:
            try:
                header += inflater.decompress(inflater.unconsumed_tail, _DELTA_HEADER - len(header))
            except zlib.error:
                return None
        decoded = _two_varints(header)
        if decoded is not None:
            return decoded
        if len(header) >= _DELTA_HEADER or inflater.eof:
            return None
    return None


def _two_varints(data: bytes) -> int | None:
    """The second of two little-endian base-128 varints at the start of `data`
    (a delta's result size); 2**64 for one longer than ten bytes, which no
    64-bit size is; None while `data` ends before it does."""
    position, value = 0, 0
    for _ in range(2):
        value, shift = 0, 0
        while True:
            if position >= len(data):
                return None
            byte = data[position]
            position += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift >= 70:
                return _ULONG
    return value
