"""A built wheel's provenance: what it was built from, recorded inside it.

`provenance_record` says what fed the build: the device, the upstream base and
its source, the series (each public patch by name and hash, each private patch
by the hash of its stored file only), the tree's commit and state, env.sh and
its arguments, the target, the interpreter and the build tools.
`add_provenance` writes it into the wheel's .dist-info just before RECORD by
copying every other member's raw bytes (no recompression), so that the result
depends on nothing but the wheel and the record. `verify_required` checks that
the wheel holds every file device.toml requires.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from patchtool import __version__
from patchtool.core.errors import BuildError
from patchtool.core.fsutil import sha256_of
from patchtool.store.model import BaseRef, DeviceConfig, PatchSeries, PypiSource
from patchtool.store.series import series_digest
from patchtool.trees.record import TreeRecord
from patchtool.wheel.buildenv import BuildInterpreter, HeadFacts

PROVENANCE_NAME = "patchtool-provenance.json"


def provenance_record(
    *,
    device: DeviceConfig,
    base: BaseRef,
    series: PatchSeries,
    record: TreeRecord,
    head: HeadFacts,
    tree_state: str,
    env_script: bytes | None,  # None: the device has no env script
    env_args: Sequence[str],
    target: str,
    interpreter: BuildInterpreter,
) -> dict[str, object]:
    upstream: dict[str, object] = {
        "project": base.project,
        "version": base.version,
        "source": base.source.kind,
    }
    if isinstance(base.source, PypiSource):
        upstream.update(filename=base.source.filename, sha256=base.source.sha256)
    else:
        upstream["url"] = base.source.url
    return {
        "tool": {"name": "patchtool", "version": __version__},
        "device": device.name,
        "upstream": upstream,
        "base_commit": base.commit,
        "series_sha256": series_digest(series),
        "patches": [
            _patch_entry(base.path / e.name, e.private, e.name in record.skipped_private)
            for e in series.entries
        ],
        "tree_commit": head.commit,
        "tree_state": tree_state,
        "env_script": None
        if env_script is None
        else {
            "path": device.build.env_script,
            "sha256": hashlib.sha256(env_script).hexdigest(),
            "arguments": list(env_args),
        },
        "target_device": target,
        "source_date_epoch": int(head.epoch),
        "python": interpreter.version,
        "torch": interpreter.torch or "none",
        # setuptools and the rest write parts of the wheel (WHEEL's Generator line).
        "build_requires": interpreter.build_tools,
    }


def verify_required(wheel: Path, required: tuple[str, ...]) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    missing = [path for path in required if path not in names]
    if missing:
        raise BuildError(
            f"the wheel {wheel.name} lacks file(s) that device.toml requires: "
            + ", ".join(missing),
            hint="Check the series adds them and that setup.py ships them as package data; "
            "no wheel was written to the output folder.",
        )


def _patch_entry(path: Path, private: bool, left_out: bool) -> dict[str, object]:
    """A patch as the provenance names it: a private one by the hash of its
    stored (encrypted) file only, neither its name nor its subject."""
    digest = sha256_of(path, follow_symlinks=False)  # a store file: never through a link
    if not private:
        return {"name": path.name, "sha256": digest}
    return {"private": True, "sha256": digest, **({"applied": False} if left_out else {})}


def add_provenance(wheel: Path, provenance: dict[str, object]) -> str:
    """Add the provenance file to the wheel's .dist-info, just before its RECORD,
    and its line to RECORD; return the new wheel's sha256.

    Every other member is copied as it is stored, compressed bytes and headers
    included, so the result depends on nothing but the wheel and the provenance
    (reproducible) and costs a file copy: zipfile can only write members it
    compresses itself, which took 0.3 s for the 2 MB vLLM wheel. Archives that
    need ZIP64 (a member or the wheel over 2 GiB) are refused."""
    data = (json.dumps(provenance, indent=2, sort_keys=True) + "\n").encode()
    with zipfile.ZipFile(wheel) as source:
        infos = source.infolist()
        record_info = next((i for i in infos if i.filename.endswith(".dist-info/RECORD")), None)
        if record_info is None:
            raise BuildError(f"{wheel.name} has no .dist-info/RECORD")
        record = source.read(record_info).decode()
        comment = source.comment
    dist_info = record_info.filename.rsplit("/", 1)[0]
    name = f"{dist_info}/{PROVENANCE_NAME}"
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    lines = [line for line in record.splitlines() if line and not line.startswith(name + ",")]
    record_line = f"{record_info.filename},,"
    lines = [line for line in lines if line != record_line]
    lines += [f"{name},sha256={digest},{len(data)}", record_line]
    new_record = ("\n".join(lines) + "\n").encode()

    temporary = wheel.with_suffix(".tmp")
    written: list[tuple[zipfile.ZipInfo, int]] = []  # central directory: entry, offset
    with wheel.open("rb") as raw, temporary.open("wb") as handle:
        target = _HashingWriter(handle)
        for info in infos:
            if info.filename == name:
                continue
            if info is record_info:
                written.append(_write_member(target, name, data, record_info))
                written.append(_write_member(target, info.filename, new_record, record_info))
            else:
                written.append(_copy_member(raw, target, info, wheel))
        _write_central_directory(target, written, comment, wheel)
    os.replace(temporary, wheel)
    return target.digest.hexdigest()


# zipfile's own layouts (APPNOTE.TXT 4.3.7, 4.3.12, 4.3.16), which it does not export.
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")


_CENTRAL_HEADER = struct.Struct("<4s4B4HL2L5H2L")


_END_RECORD = struct.Struct("<4s4H2LH")


_DATA_DESCRIPTOR_FLAG = 0x08


_ENTRY_LIMIT = 0xFFFF


class _HashingWriter:
    """A file being written, with its sha256 and position kept on the way."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()
        self.position = 0

    def write(self, data: bytes) -> None:
        self.handle.write(data)
        self.digest.update(data)
        self.position += len(data)


def _too_large(wheel: Path) -> BuildError:
    return BuildError(
        f"{wheel.name} needs ZIP64 (a member or the wheel is over 2 GiB, or it holds "
        f"{_ENTRY_LIMIT} files or more), which patchtool does not write"
    )


def _copy_member(
    raw: BinaryIO, target: _HashingWriter, info: zipfile.ZipInfo, wheel: Path
) -> tuple[zipfile.ZipInfo, int]:
    """Copy one member's local header, stored data and data descriptor unchanged."""
    if max(info.header_offset, info.compress_size, info.file_size) > _ZIP32_LIMIT:
        raise _too_large(wheel)
    raw.seek(info.header_offset)
    header = raw.read(_LOCAL_HEADER.size)
    if len(header) != _LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise BuildError(f"{wheel.name}: no local header for {info.filename}")
    *_, name_length, extra_length = _LOCAL_HEADER.unpack(header)
    length = _LOCAL_HEADER.size + name_length + extra_length + info.compress_size
    if info.flag_bits & _DATA_DESCRIPTOR_FLAG:
        raw.seek(info.header_offset + length)
        length += 16 if raw.read(4) == b"PK\x07\x08" else 12
    raw.seek(info.header_offset)
    offset = target.position
    remaining = length
    while remaining:
        block = raw.read(min(remaining, 1 << 20))
        if not block:
            raise BuildError(f"{wheel.name} ends inside {info.filename}")
        target.write(block)
        remaining -= len(block)
    return info, offset


def _write_member(
    target: _HashingWriter, name: str, data: bytes, like: zipfile.ZipInfo
) -> tuple[zipfile.ZipInfo, int]:
    """A new deflated member with the date, mode and system of `like`, written as
    zipfile.writestr writes it."""
    info = zipfile.ZipInfo(name, date_time=like.date_time)
    if not name.isascii():
        info.flag_bits |= _UTF8_NAME_FLAG
    info.external_attr = like.external_attr
    info.create_system = like.create_system
    info.compress_type = zipfile.ZIP_DEFLATED
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    compressed = compressor.compress(data) + compressor.flush()
    info.CRC = zlib.crc32(data)
    info.file_size = len(data)
    info.compress_size = len(compressed)
    offset = target.position
    target.write(info.FileHeader(zip64=False))
    target.write(compressed)
    return info, offset


def _write_central_directory(
    target: _HashingWriter,
    entries: Sequence[tuple[zipfile.ZipInfo, int]],
    comment: bytes,
    wheel: Path,
) -> None:
    start = target.position
    if len(entries) >= _ENTRY_LIMIT or start > _ZIP32_LIMIT:
        raise _too_large(wheel)
    for info, offset in entries:
        # The bytes the local header holds: zipfile decoded them by this flag.
        utf8 = bool(info.flag_bits & _UTF8_NAME_FLAG)
        filename = info.orig_filename.encode("utf-8" if utf8 else "cp437")
        year, month, day, hour, minute, second = info.date_time
        target.write(
            _CENTRAL_HEADER.pack(
                b"PK\x01\x02",
                info.create_version,
                info.create_system,
                info.extract_version,
                info.reserved,
                info.flag_bits,
                info.compress_type,
                hour << 11 | minute << 5 | second // 2,
                (year - 1980) << 9 | month << 5 | day,
                info.CRC,
                info.compress_size,
                info.file_size,
                len(filename),
                len(info.extra),
                len(info.comment),
                0,
                info.internal_attr,
                info.external_attr,
                offset,
            )
            + filename
            + info.extra
            + info.comment
        )
    size = target.position - start
    target.write(
        _END_RECORD.pack(b"PK\x05\x06", 0, 0, len(entries), len(entries), size, start, len(comment))
        + comment
    )


_ZIP32_LIMIT = (1 << 31) - 1  # past this zipfile writes ZIP64 records


_UTF8_NAME_FLAG = 0x800
