"""Issue 19 §3: everything that expands is bounded before it expands.

Each input has a declared bound, checked before its bytes are produced, with the
device's `[limits]` as the one place a store raises them (each up to a ceiling):
binary hunks by their declared inflated size, FlagScale YAML without aliases,
index pages and downloads as they stream, sdists by their members' declared
sizes and the decompressed stream itself, identity and other named files through
one bounded reader, series by their length. No test allocates what it declares:
the inputs are small and say they are large (sparse files, declared sizes,
servers that stream until the client hangs up)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import tarfile
import time
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path
from typing import ClassVar

import pytest
from helpers import (
    SyntheticUpstream,
    error_lines,
    git,
    make_sdist,
    write_base,
)
from test_flagscale import diff_yaml, modify, problem, refusal, write
from test_index import Serve, pip_environment, serve  # noqa: F401 - fixtures

from patchtool.core.errors import ExitCode, IntegrityError, UnsafeInputError
from patchtool.core.gitops import Git
from patchtool.core.report import RecordingReporter
from patchtool.series.safety import check_size
from patchtool.sources.bases import NewBaseSpec, resolve_new_base
from patchtool.sources.cache import BaseCache, cache_root
from patchtool.sources.sdist import import_sdist
from patchtool.store.files import parse_device
from patchtool.store.model import PatchLimits, PypiSource
from patchtool.store.resolve import Store

# Slow for what it proves (inputs that say they are huge, servers that stream until
# the client hangs up): the whole suite runs it, the quick tier does not.
pytestmark = pytest.mark.slow

MIB = 1 << 20
GIB = 1 << 30


def set_limits(world: SyntheticUpstream, **limits: int) -> Path:
    """devA's device.toml with a [limits] table (keys in device.toml's spelling)."""
    device = world.store / "devA" / "device.toml"
    table = "".join(f"{key.replace('_', '-')} = {value}\n" for key, value in limits.items())
    device.write_text(device.read_text() + "\n[limits]\n" + table)
    return device


def use_series(world: SyntheticUpstream, patches: dict[str, bytes]) -> list[Path]:
    """devA's demo-1.0 series: these patch files, in this order."""
    for name, data in patches.items():
        (world.base_folder / name).write_bytes(data)
    (world.base_folder / "series").write_text("".join(f"{name}\n" for name in patches))
    return [world.base_folder / name for name in patches]


def files_below(folder: Path) -> dict[str, int]:
    """Every file below `folder` with its size."""
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*") if p.is_file()}


# --------------------------------------------------------------------------- binary hunks


def binary_patches(root: Path, *steps: dict[str, bytes]) -> list[bytes]:
    """`git format-patch --binary` of one commit per step (files written), made by
    real git in a scratch repository: patches that apply onto any tree lacking
    the files."""
    root.mkdir()
    git(root, "init", "--quiet")
    git(root, "commit", "--quiet", "--allow-empty", "-m", "start")
    for number, files in enumerate(steps, 1):
        for name, data in files.items():
            (root / name).write_bytes(data)
        git(root, "add", ".")
        git(root, "commit", "--quiet", "-m", f"Binary step {number}", "-m", "Why: tests.")
    out = root / "out"
    git(root, "format-patch", "--quiet", "--binary", "--zero-commit", "-o", str(out),
        f"HEAD~{len(steps)}")  # fmt: skip
    return [path.read_bytes() for path in sorted(out.iterdir())]


def line_of(data: bytes, text: bytes) -> int:
    return data[: data.index(text)].count(b"\n") + 1


BINARY_HINT = (
    "hint: Nothing was applied. git inflates binary data in memory and writes it into the "
    "tree: leave the file out of the patch, or raise {key} under [limits] in the device's "
    "device.toml (at most {ceiling}) if an input this large is intended."
)


def test_a_binary_literal_that_declares_2_gib_is_refused_before_git_inflates_it(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    # The patch: 1.9 GB of zeros deflate to 2 MB. Here the data is 64 KiB of
    # zeros and only the declaration says 2 GiB: the check must not need the data.
    (real,) = binary_patches(tmp_path / "made", {"zeros.bin": bytes(64 << 10)})
    patch = real.replace(b"literal 65536\n", b"literal 2147483648\n")
    (path,) = use_series(upstream, {"0001-zeros.patch": patch})
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: patch {path}: line {line_of(patch, b'literal 2147483648')}: a binary literal "
        "of 2147483648 bytes, more than the limit of 67108864",
        BINARY_HINT.format(key="binary-hunk-bytes", ceiling=GIB),
    ]
    assert not upstream.tree.exists()
    checked = upstream.run("check")
    assert checked.code == 6
    assert "a binary literal of 2147483648 bytes, more than the limit of 67108864" in checked.stdout


def test_binary_hunks_are_bounded_per_hunk_per_patch_and_per_series(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    """Real patches that git applies (and applied before these bounds): each past
    one of the three limits, set low through device.toml."""
    two, one_and_half = bytes(2 * MIB), bytes(3 * MIB // 2)
    (big,) = binary_patches(tmp_path / "big", {"two.bin": two})
    (pair,) = binary_patches(tmp_path / "pair", {"a.bin": one_and_half, "b.bin": one_and_half})
    first, second = binary_patches(tmp_path / "series", {"a.bin": one_and_half},
                                   {"b.bin": one_and_half})  # fmt: skip
    set_limits(upstream, binary_hunk_bytes=2 * MIB - 1, binary_patch_bytes=5 * MIB // 2,
               binary_series_bytes=5 * MIB // 2)  # fmt: skip

    (path,) = use_series(upstream, {"big.patch": big})
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: patch {path}: line {line_of(big, b'literal 2097152')}: a binary literal of "
        f"2097152 bytes, more than the limit of {2 * MIB - 1}",
        BINARY_HINT.format(key="binary-hunk-bytes", ceiling=GIB),
    ]

    (path,) = use_series(upstream, {"pair.patch": pair})
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: patch {path}: binary hunks of {3 * MIB} bytes together (inflated), more than "
        f"the limit of {5 * MIB // 2}",
        BINARY_HINT.format(key="binary-patch-bytes", ceiling=2 * GIB),
    ]

    use_series(upstream, {"first.patch": first, "second.patch": second})
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: {upstream.base_folder / 'series'}: binary hunks of {3 * MIB} bytes together "
        f"(inflated), more than the limit of {5 * MIB // 2}",
        BINARY_HINT.format(key="binary-series-bytes", ceiling=8 * GIB),
    ]
    assert not upstream.tree.exists()


def test_a_binary_delta_is_bounded_by_the_result_its_header_declares(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    """A delta is small whatever it makes: its result's size is read from its
    header (its first inflated bytes), and bounded like a literal."""
    base = bytes(512 << 10)
    grown = base * 3 + b"end"
    first, second = binary_patches(tmp_path / "made", {"grow.bin": base}, {"grow.bin": grown})
    assert b"\ndelta " in second and len(second) < 4096
    set_limits(upstream, binary_hunk_bytes=1 * MIB)
    paths = use_series(upstream, {"first.patch": first, "second.patch": second})
    result = upstream.run("unpatch")
    assert result.code == 6
    line = line_of(second, b"\ndelta ") + 1
    assert error_lines(result) == [
        f"error: patch {paths[1]}: line {line}: the result of a binary delta of {len(grown)} "
        f"bytes, more than the limit of {MIB}",
        BINARY_HINT.format(key="binary-hunk-bytes", ceiling=GIB),
    ]
    # Within the limit, the same patches apply: the bound reads the header right.
    (upstream.store / "devA" / "device.toml").write_text(
        'display-name = "Device A"\nvendor = "Example"\n\n[build]\nenv-script = "env.sh"\n'
    )
    result = upstream.run("unpatch")
    assert result.code == 0, result.output
    assert (upstream.tree / "grow.bin").read_bytes() == grown


def test_a_delta_whose_header_cannot_be_read_is_refused_as_damaged() -> None:
    patch = (
        b"diff --git a/x.bin b/x.bin\nindex 1111111..2222222 100644\nGIT binary patch\n"
        b"delta 12\nAcmV?d00001\n\n"
    )
    with pytest.raises(IntegrityError) as refused:
        check_size("patch p", patch, PatchLimits())
    assert refused.value.message == (
        "patch p: line 4: a binary delta whose header cannot be read (so neither can the size "
        "of its result)"
    )


@pytest.mark.parametrize("encoding", ["base64", "quoted-printable"])
def test_a_mail_that_git_would_decode_is_refused_it_could_hide_any_hunk(
    upstream: SyntheticUpstream, tmp_path: Path, encoding: str
) -> None:
    """git am decodes a mail's transfer encoding before it reads the patch, so a
    base64 body hides a binary literal (and any count of hunks) from a reading of
    the raw bytes: such a mail is refused, whatever it holds. (This one holds a
    binary literal within the limits, which git applied before.)"""
    (real,) = binary_patches(tmp_path / "made", {"two.bin": bytes(2 * MIB)})
    head, _, body = real.partition(b"\n\n")
    encoded = base64.encodebytes(body) if encoding == "base64" else _quoted_printable(body)
    mail = (head + b"\nMIME-Version: 1.0\nContent-Type: text/plain; charset=UTF-8\n"
            b"Content-Transfer-Encoding: " + encoding.encode() + b"\n\n" + encoded)  # fmt: skip
    (path,) = use_series(upstream, {"hidden.patch": mail})
    result = upstream.run("unpatch")
    assert result.code == 6
    line = line_of(mail, b"Content-Transfer-Encoding")
    assert error_lines(result) == [
        f"error: patch {path}: line {line}: the mail header 'Content-Transfer-Encoding: "
        f"{encoding}' makes git decode or reflow the patch before it reads it",
        "hint: Nothing was applied. Patches are bounded by the text git reads: export the patch "
        "again with `patchtool patch` (git format-patch writes it as it is).",
    ]
    assert not upstream.tree.exists()


def _quoted_printable(body: bytes) -> bytes:
    lines = []
    for line in body.split(b"\n"):
        coded = b"".join(b"=%02X" % c for c in line)
        while len(coded) > 72:
            lines.append(coded[:72] + b"=")
            coded = coded[72:]
        lines.append(coded)
    return b"\n".join(lines)


@pytest.mark.parametrize("header", [
    b"Content-Type: text/plain; format=flowed; delsp=yes",
    b"Content-Type: multipart/mixed;\n boundary=\"x\"",
    b"content-transfer-encoding: =?utf-8?q?base64?=",
])  # fmt: skip
def test_every_mail_of_a_file_is_read_for_headers_that_make_git_reread_it(header: bytes) -> None:
    """The second mail of a file counts too (git am splits at 'From ' lines), as do
    folded headers and any spelling git decodes."""
    mail = (b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            b"Subject: [PATCH] one\n\n" + modify("a.py").encode()
            + b"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            b"Subject: [PATCH] two\n" + header + b"\n\n" + modify("b.py").encode())  # fmt: skip
    with pytest.raises(IntegrityError) as refused:
        check_size("patch p", mail, PatchLimits())
    assert refused.value.message.startswith(f"patch p: line {line_of(mail, header[:12])}: ")
    plain = mail.replace(header, b"Content-Type: text/plain; charset=UTF-8")
    assert check_size("patch p", plain, PatchLimits()).sections == 2


# --------------------------------------------------------------------------- YAML and quoting


def nested_aliases(levels: int) -> str:
    """The issue's diff.yaml value: each level a list of nine aliases of the last."""
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for level in range(1, levels):
        lines.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]")
    return "\n".join(lines) + f"\nmodels: *l{levels - 1}\n"


def test_a_yaml_alias_bomb_is_refused_at_its_first_anchor(tmp_path: Path) -> None:
    bomb = diff_yaml("Dev_A", "vllm").replace("models:\n- deepseek_r1\n- qwen3\n", "")
    bomb += nested_aliases(9)
    assert len(bomb) < 1024
    write(tmp_path, {"hardware/Dev_A/vllm/diff.yaml": bomb,
                     "hardware/Dev_A/vllm/diff.patch": modify("setup.py")})  # fmt: skip
    started = time.monotonic()
    message = problem(ExitCode.INTEGRITY, tmp_path)  # that set cannot be read; others would be
    assert time.monotonic() - started < 5
    line = bomb.splitlines().index("l0: &l0 [x, x, x, x, x, x, x, x, x]") + 1
    assert message == (
        f"hardware/Dev_A/vllm/diff.yaml: line {line}: the anchor '&l0'; patchtool reads YAML "
        "without anchors and aliases"
    )


def test_yaml_aliases_anchors_and_huge_numbers_are_refused_in_every_file(tmp_path: Path) -> None:
    history = tmp_path / "history"
    write(history, {
        "hardware/patch_history.yaml": "Dev_A:\n  inference:\n    vllm: *nowhere\n",
        "hardware/Dev_A/vllm/diff.yaml": diff_yaml("Dev_A", "vllm"),
        "hardware/Dev_A/vllm/diff.patch": modify("setup.py"),
    })  # fmt: skip
    assert refusal(IntegrityError, ExitCode.INTEGRITY, history) == (
        "hardware/patch_history.yaml: line 3: the alias '*nowhere'; patchtool reads YAML "
        "without anchors and aliases"
    )
    number = tmp_path / "number"
    write(number, {
        "hardware/Dev_A/vllm/diff.yaml": diff_yaml("Dev_A", "vllm", extra="size: " + "9" * 5000),
        "hardware/Dev_A/vllm/diff.patch": modify("setup.py"),
    })  # fmt: skip
    assert problem(ExitCode.INTEGRITY, number).startswith(
        "hardware/Dev_A/vllm/diff.yaml: not valid YAML: 'Exceeds the limit (4300 digits)"
    )


def test_a_long_yaml_value_is_quoted_cut_short(tmp_path: Path) -> None:
    listing = "[" + ", ".join(["[" + ", ".join(["1"] * 50) + "]"] * 50) + "]"
    write(tmp_path, {
        "hardware/Dev_A/vllm/diff.yaml": diff_yaml("Dev_A", "vllm").replace(
            "backends_version:\n  vllm: 0.8.5", f"backends_version:\n  vllm: {listing}"),
        "hardware/Dev_A/vllm/diff.patch": modify("setup.py"),
    })  # fmt: skip
    message = problem(ExitCode.INTEGRITY, tmp_path)
    assert message == (
        "hardware/Dev_A/vllm/diff.yaml: backends_version.vllm is list ([[1, 1, 1, 1, 1, 1, ...], "
        "[1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], "
        "[1, 1, 1, 1, 1, 1, ...], [1, 1, 1, 1, 1, 1, ...], ...]), not text"
    )


def test_quoted_bounds_every_kind_of_value() -> None:
    from patchtool.core.errors import quoted

    assert quoted("short") == "'short'"
    assert quoted("x" * 250) == repr("x" * 200) + "… (50 more characters)"
    assert quoted(b"y" * 300, 10) == repr(b"y" * 10) + "… (290 more bytes)"
    assert quoted(10**5000) == "<an integer of 16610 bits>"
    bomb: list[object] = ["x"]
    for _ in range(30):
        bomb = [bomb] * 9  # 9**30 items, shared
    shown = quoted(bomb)
    assert len(shown) < 260 and shown.endswith("more characters)")


def test_no_message_reprs_input_except_through_quoted() -> None:
    """The rule in one place: `!r` and repr() appear in errors.py only."""
    import patchtool

    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in sorted(Path(patchtool.__file__).parent.rglob("*.py"))
        if path.name != "errors.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"!r\}|\brepr\(", line)
    ]
    assert found == []


def test_a_device_toml_value_of_100k_characters_is_quoted_cut_short(
    upstream: SyntheticUpstream,
) -> None:
    device = set_limits(upstream)
    device.write_text(device.read_text() + f'patch-hunks = "{"x" * 100_000}"\n')
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: {device}: key limits.'patch-hunks' must be a whole number from 1 to 1000000, "
        f"not {'x' * 200!r}… (99800 more characters)"
    ]


# --------------------------------------------------------------------------- ceilings


@pytest.mark.parametrize("name", [f.name for f in fields(PatchLimits)])
def test_no_device_toml_raises_a_limit_past_its_ceiling(tmp_path: Path, name: str) -> None:
    key, ceiling = name.replace("_", "-"), PatchLimits.ceiling(name)
    device = tmp_path / "device.toml"
    device.write_text(f'display-name = "A"\nvendor = "B"\n\n[limits]\n{key} = {ceiling}\n')
    assert getattr(parse_device(device, "devA").limits, name) == ceiling
    device.write_text(f'display-name = "A"\nvendor = "B"\n\n[limits]\n{key} = {ceiling + 1}\n')
    with pytest.raises(IntegrityError) as refused:
        parse_device(device, "devA")
    assert refused.value.message == (
        f"{device}: limits.{key} = {ceiling + 1} is above its ceiling of {ceiling}"
    )


def test_a_pull_request_cannot_raise_its_devices_limits_to_2_gib(
    upstream: SyntheticUpstream,
) -> None:
    device = set_limits(upstream, patch_bytes=2 * GIB)
    for command in ("check", "unpatch"):
        result = upstream.run(command)
        assert result.code == 6
        assert error_lines(result) == [
            f"error: {device}: limits.patch-bytes = {2 * GIB} is above its ceiling of "
            f"{256 * MIB}",
            "hint: The ceilings bound what a store, which may come with a pull request, can ask "
            "of the machine that reads it; no device.toml can raise them. Split the input "
            "instead.",
        ]


def test_the_defaults_hold_the_real_inputs() -> None:
    """vLLM 0.8.5's sdist: 7.3 MB, 24 MB unpacked, 2694 members, none over 1 MB; the
    C550 series: 12 patches of at most 33 KB; 300 patches in benchmarks-core."""
    limits = PatchLimits()
    assert limits.download_bytes >= 30 * 7_340_498
    assert limits.sdist_bytes >= 10 * 23_825_658
    assert limits.sdist_members >= 10 * 2694 and limits.sdist_member_bytes >= 64 * 991_484
    assert limits.series_patches >= 3 * 300
    assert limits.series_patches < 5000


# --------------------------------------------------------------------------- patches per series


def test_5000_tiny_patches_are_refused_at_once_naming_the_series_and_the_key(
    upstream: SyntheticUpstream,
) -> None:
    names = [f"{number:04d}-add-file-{number}.patch" for number in range(5000)]
    for number, name in enumerate(names):  # each a real patch: a new file of one line
        (upstream.base_folder / name).write_text(
            f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
            f"From: A <a@example.invalid>\nSubject: [PATCH] Add file {number}\n\nWhy.\n---\n"
            f"diff --git a/f{number}.txt b/f{number}.txt\nnew file mode 100644\n"
            f"--- /dev/null\n+++ b/f{number}.txt\n@@ -0,0 +1 @@\n+{number}\n"
        )
    (upstream.base_folder / "series").write_text("\n".join(names) + "\n")
    series = upstream.base_folder / "series"
    started = time.monotonic()
    result = upstream.run("unpatch")
    assert result.code == 6
    assert error_lines(result) == [
        f"error: {series}: 5000 patches, more than the limit of 1000",
        "hint: Squash related patches, or raise series-patches under [limits] in the device's "
        "device.toml (at most 10000) if an input this large is intended.",
    ]
    checked = upstream.run("check")
    assert checked.code == 6
    assert f"{series}: 5000 patches, more than the limit of 1000" in checked.stdout
    assert time.monotonic() - started < 30


def test_an_mbox_of_more_mails_than_the_series_may_hold_is_refused(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    set_limits(upstream, series_patches=3)
    mails = "".join(
        f"From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        f"From: A <a@example.invalid>\nSubject: [PATCH] Change {n}\n\nWhy.\n---\n"
        + modify(f"new{n}.py").replace("first line", "x")
        for n in range(4)
    )
    mbox = tmp_path / "four.mbox"
    mbox.write_text(mails)
    result = upstream.run("import", str(mbox))
    assert result.code == 6
    assert error_lines(result)[0] == f"error: {mbox}: 4 patches, more than the limit of 3"


# --------------------------------------------------------------------------- named files


@pytest.fixture
def identity(tmp_path: Path) -> Path:
    import pyrage

    path = tmp_path / "key.txt"
    path.write_text(f"# test key\n{pyrage.x25519.Identity.generate()}\n")
    return path


def test_an_identity_that_is_a_fifo_or_dev_zero_is_refused_at_once(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    fifo = tmp_path / "identity.fifo"
    os.mkfifo(fifo)
    for named in (fifo, Path("/dev/zero")):
        result = upstream.run("check", "--identity", str(named))
        assert result.code == 10
        assert error_lines(result) == [f"error: identity file {named} is not a regular file"]


def test_an_identity_of_1_gib_is_refused_by_its_size(upstream: SyntheticUpstream,
                                                     tmp_path: Path) -> None:  # fmt: skip
    large = tmp_path / "large-identity"
    with large.open("wb") as handle:
        handle.truncate(GIB)  # sparse: no disk, and nothing read
    result = upstream.run("check", "--identity", str(large))
    assert result.code == 6
    assert error_lines(result) == [
        f"error: identity file {large} is {GIB} bytes, more than the limit of 65536"
    ]


def test_an_identity_the_user_links_to_is_read(upstream: SyntheticUpstream, identity: Path,
                                               tmp_path: Path) -> None:  # fmt: skip
    link = tmp_path / "linked-key.txt"
    link.symlink_to(identity)
    result = upstream.run("check", "--identity", str(link))
    assert result.code == 0, result.output


def test_import_reads_its_input_files_through_the_bounded_reader(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    fifo = tmp_path / "input.fifo"
    os.mkfifo(fifo)
    result = upstream.run("import", str(fifo))
    assert result.code == 10
    assert error_lines(result) == [f"error: input {fifo} is not a regular file"]

    quilt = tmp_path / "quilt"
    quilt.mkdir()
    (tmp_path / "outside.patch").write_text(modify("demo/core.py"))
    (quilt / "series").write_text("../outside.patch\n")
    result = upstream.run("import", str(quilt))
    assert result.code == 10
    assert error_lines(result)[0] == (
        f"error: {quilt / 'series'}:1: patch '../outside.patch' climbs out of the tree with '..'"
    )

    (quilt / "linked.patch").symlink_to(tmp_path / "outside.patch")
    (quilt / "series").write_text("linked.patch\n")
    result = upstream.run("import", str(quilt))
    assert result.code == 10
    assert error_lines(result) == [
        f"error: {quilt / 'series'}:1: patch 'linked.patch' is a symlink; a quilt series names "
        "plain files only",
        "hint: Replace the link by the file itself.",
    ]

    set_limits(upstream, patch_bytes=1000)
    big = tmp_path / "big.diff"
    big.write_bytes(b"x" * 1001)
    result = upstream.run("import", str(big))
    assert result.code == 6
    assert error_lines(result) == [
        f"error: input {big} is 1001 bytes, more than the limit of 1000",
        "hint: Nothing was imported. Split the file, or raise patch-bytes under [limits] in the "
        "device's device.toml (at most 268435456) if an input this large is intended.",
    ]


def test_a_flagscale_private_key_that_is_a_fifo_is_refused(tmp_path: Path) -> None:
    root = write(tmp_path / "FlagScale", {
        "hardware/BI_V150/vllm/diff.yaml": diff_yaml("BI_V150", "vllm"),
        "hardware/BI_V150/vllm/diff.patch.encrypted": b"x" * 600,
    })  # fmt: skip
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)
    assert refusal(UnsafeInputError, ExitCode.UNSAFE, root, private_keys=(fifo,)) == (
        f"private key {fifo} is not a regular file"
    )


# --------------------------------------------------------------------------- sdists


def sparse_sdist(folder: Path, tar_format: str) -> Path:
    """demo-1.0.tar.gz holding setup.py and a 1 GiB sparse member, made by GNU tar
    from a sparse file: a couple of hundred bytes that unpack to a gigabyte."""
    top = folder / "demo-1.0"
    top.mkdir(parents=True)
    (top / "setup.py").write_text("x\n")
    with (top / "huge").open("wb") as handle:
        handle.truncate(GIB)
    archive = folder / "demo-1.0.tar.gz"
    subprocess.run(["tar", "--sparse", f"--format={tar_format}", "-czf", str(archive),
                    "-C", str(folder), "demo-1.0"], check=True)  # fmt: skip
    return archive


@pytest.mark.parametrize("tar_format", ["gnu", "posix"])
def test_a_tiny_sdist_with_a_1_gib_sparse_member_is_refused_at_once(
    upstream: SyntheticUpstream, tmp_path: Path, hermetic_seal: Path, tar_format: str
) -> None:
    archive = sparse_sdist(tmp_path / "sparse", tar_format)
    assert archive.stat().st_size < 512
    upstream.sdist.write_bytes(archive.read_bytes())
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    write_base(upstream.base_folder, "demo", "1.0", upstream.commit, sha)
    started = time.monotonic()
    result = upstream.run("unpatch")
    assert time.monotonic() - started < 30
    assert result.code == 6
    cached = hermetic_seal / "patchtool-cache" / "sdists" / sha / "demo-1.0.tar.gz"
    assert error_lines(result) == [
        f"error: {cached}: member 'demo-1.0/huge' is {GIB} bytes unpacked, more than the limit "
        "of 67108864",
        "hint: Nothing was imported. Check that the file is the released sdist, or raise "
        "sdist-member-bytes under [limits] in the device's device.toml (at most 1073741824) if "
        "an input this large is intended.",
    ]


def tar_stream(*members: tuple[tarfile.TarInfo, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def member(name: str, data: bytes = b"x\n") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def gzip_of(head: bytes, zeros: int) -> bytes:
    """`head` followed by `zeros` zero bytes, gzipped a block at a time."""
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as packed:
        packed.write(head)
        block = bytes(MIB)
        for _ in range(zeros // MIB):
            packed.write(block)
    return out.getvalue()


def refused_import(archive: Path, tmp_path: Path, limits: PatchLimits) -> IntegrityError:
    tmp_path.mkdir(exist_ok=True)
    repository = tmp_path / "import.git"
    Git(tmp_path).run("init", "--quiet", "--bare", str(repository))
    with pytest.raises(IntegrityError) as refused:
        import_sdist(archive, repository, "demo", "1.0", PypiSource("demo-1.0.tar.gz", "0" * 64),
                     limits)  # fmt: skip
    assert Git(repository).run("for-each-ref", check=False).text == ""
    return refused.value


def test_sdist_members_are_counted_and_summed_before_they_are_read(tmp_path: Path) -> None:
    many = tmp_path / "many.tar.gz"
    many.write_bytes(gzip.compress(tar_stream(*(member(f"demo-1.0/f{n}.py") for n in range(11)))))
    error = refused_import(many, tmp_path / "count", PatchLimits(sdist_members=10))
    assert error.message == f"{many}: more than 10 members"

    summed = tmp_path / "summed.tar.gz"
    summed.write_bytes(gzip.compress(tar_stream(*(member(f"demo-1.0/f{n}.py", bytes(400))
                                                  for n in range(3)))))  # fmt: skip
    error = refused_import(summed, tmp_path / "sum", PatchLimits(sdist_bytes=1000))
    assert error.message == f"{summed}: members of more than 1000 bytes together unpacked"


def test_a_member_declaring_a_terabyte_over_endless_zeros_is_refused_unread(tmp_path: Path) -> None:
    info = tarfile.TarInfo("demo-1.0/zeros.bin")
    info.size = 1 << 40
    header = info.tobuf(tarfile.GNU_FORMAT)  # the size in base-256, as GNU tar writes it
    archive = tmp_path / "zeros.tar.gz"
    archive.write_bytes(gzip_of(header, 8 * MIB))
    error = refused_import(archive, tmp_path, PatchLimits())
    assert error.message == (
        f"{archive}: member 'demo-1.0/zeros.bin' is {1 << 40} bytes unpacked, more than the "
        "limit of 67108864"
    )


def test_the_decompressed_stream_stops_at_its_bound_whatever_the_headers_say(
    tmp_path: Path,
) -> None:
    """Pax headers are read into memory by the tar reader itself, before any member
    is seen: twenty of 60 KiB each, each one within the bound on one header record
    (test_attack_bounds.py), chained before the first member. The stream stops at
    the bound."""
    record = b"61440 comment=" + b"A" * 61425 + b"\n"
    head = b""
    for _ in range(20):
        info = tarfile.TarInfo("././@PaxHeader")
        info.type = tarfile.XHDTYPE
        info.size = len(record)
        head += info.tobuf(tarfile.USTAR_FORMAT) + record
    archive = tmp_path / "pax.tar.gz"
    archive.write_bytes(gzip_of(head, 0))
    limits = PatchLimits(sdist_bytes=MIB, sdist_members=10)
    error = refused_import(archive, tmp_path, limits)
    assert error.message == (
        f"{archive}: unpacks to more than {MIB + 15360} bytes (its members and their "
        "headers); it was not read further"
    )


def test_an_sdist_imports_as_the_same_commit_as_before(tmp_path: Path) -> None:
    """Each member is read once now, straight into fast-import's input: the commit
    is the one earlier versions made (pinned from 04a6102)."""
    from helpers import DEMO_FILES

    from patchtool.core.fsutil import sha256_of

    sdist = make_sdist(tmp_path / "demo-1.0.tar.gz", "demo-1.0", DEMO_FILES,
                       modes={"tools/run.sh": 0o755})  # fmt: skip
    Git(tmp_path).run("init", "--quiet", "--bare", str(tmp_path / "r.git"))
    sha = "72c58c8eb80c52c2e12eb8378890c3351b47bee0657df5d7dc68815d1d5920d2"
    assert sha256_of(sdist) == sha  # make_sdist writes the same bytes every time
    commit = import_sdist(sdist, tmp_path / "r.git", "demo", "1.0", PypiSource(sdist.name, sha))
    assert commit == "60984d13656d7a4e50aa9a8f6173f7312c9840ca"


# --------------------------------------------------------------------------- the index


class Endless(http.server.BaseHTTPRequestHandler):
    """An index for demo: its simple page (JSON, listing demo-1.0.tar.gz with the
    hash and size set on the class) or the file itself streams until the client
    hangs up; so that a client without a bound fails instead of hanging, it gives
    up after 256 MiB. `length` announces a Content-Length for the file."""

    endless = "file"
    sha256 = ""
    size: int | None = None
    length: int | None = None
    requests: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).requests.append(self.path)
        if self.path == "/simple/demo/" and self.endless != "page":
            entry: dict[str, object] = {"filename": "demo-1.0.tar.gz",
                                        "url": "../../files/demo-1.0.tar.gz",
                                        "hashes": {"sha256": self.sha256}}  # fmt: skip
            if self.size is not None:
                entry["size"] = self.size
            body = json.dumps({"meta": {"api-version": "1.1"}, "name": "demo", "files": [entry]})
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.pypi.simple.v1+json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())
            return
        self.send_response(200)
        if self.path == "/simple/demo/":
            self.send_header("Content-Type", "text/html")
            chunk = b'<a href="../../files/other.tar.gz">other.tar.gz</a>\n' * 1000
        else:
            self.send_header("Content-Type", "application/octet-stream")
            if self.length is not None:
                self.send_header("Content-Length", str(self.length))
            chunk = bytes(64 << 10)
        self.end_headers()
        sent = 0
        try:
            while sent < 256 * MIB:
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            pass  # the client hung up

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endless(serve: Serve, upstream: SyntheticUpstream,  # noqa: F811 - the imported fixture
            monkeypatch: pytest.MonkeyPatch) -> Iterator[type[Endless]]:  # fmt: skip
    handler = type("Site", (Endless,), {"sha256": upstream.sha256, "requests": []})
    port = serve(handler)
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    handler.port = port  # type: ignore[attr-defined]
    yield handler


DOWNLOAD_HINT = (
    "hint: Nothing was kept. Check the index or mirror you use, or raise download-bytes under "
    "[limits] in the device's device.toml (at most 4294967296) if an input this large is "
    "intended."
)


def test_an_endless_simple_page_is_refused_at_its_bound(
    upstream: SyntheticUpstream, endless: type[Endless], hermetic_seal: Path
) -> None:
    endless.endless = "page"  # the default bound: 32 MiB
    result = upstream.run("unpatch", in_process=True)
    port = endless.port  # type: ignore[attr-defined]
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: http://127.0.0.1:{port}/simple/demo/: the index's page is more than the limit "
        f"of {32 * MIB} bytes; it was not read further",
        "hint: Check that the URL is a package index, or raise index-page-bytes under [limits] "
        "in the device's device.toml (at most 536870912) if an input this large is intended.",
    ]


def test_an_endless_file_stops_at_the_download_limit_and_leaves_nothing(
    upstream: SyntheticUpstream, endless: type[Endless], hermetic_seal: Path
) -> None:
    set_limits(upstream, download_bytes=MIB)
    result = upstream.run("unpatch", in_process=True)
    port = endless.port  # type: ignore[attr-defined]
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: http://127.0.0.1:{port}/files/demo-1.0.tar.gz: more than the limit of {MIB} "
        "bytes; the download was stopped",
        DOWNLOAD_HINT,
    ]
    assert files_below(hermetic_seal / "patchtool-cache" / "sdists") == {}


def test_a_file_announced_or_listed_past_the_limit_is_never_read(
    upstream: SyntheticUpstream, endless: type[Endless], hermetic_seal: Path
) -> None:
    port = endless.port  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}/files/demo-1.0.tar.gz"
    set_limits(upstream, download_bytes=MIB)
    endless.length = 10 * GIB
    result = upstream.run("unpatch", in_process=True)
    assert result.code == 6, result.output
    assert error_lines(result) == [f"error: {url}: {10 * GIB} bytes, more than the limit of {MIB}",
                     DOWNLOAD_HINT]  # fmt: skip

    endless.length, endless.size, endless.requests[:] = None, 10 * GIB, []
    result = upstream.run("unpatch", in_process=True)
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: {url}: the index lists it at {10 * GIB} bytes, more than the limit of {MIB}",
        DOWNLOAD_HINT,
    ]
    assert endless.requests == ["/simple/demo/"]  # the file was never asked for

    endless.size = 100
    result = upstream.run("unpatch", in_process=True)
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: {url}: more than the 100 bytes the index lists; the download was stopped",
        "hint: Nothing was kept. Check the index or mirror you use.",
    ]
    assert files_below(hermetic_seal / "patchtool-cache" / "sdists") == {}


def test_an_endless_unhashed_file_leaves_nothing_in_unverified(
    serve: Serve, upstream: SyntheticUpstream, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """rebase and import --onto download a release the index lists without a hash
    into cache/sdists/.unverified/ first: an endless one stops at the bound."""

    class Unhashed(Endless):
        def do_GET(self) -> None:
            if self.path != "/simple/demo/":
                return super().do_GET()
            body = b'<a href="../../files/demo-1.1.tar.gz">demo-1.1.tar.gz</a>'
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    port = serve(Unhashed)
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    monkeypatch.setenv("PIP_INDEX_URL", f"http://127.0.0.1:{port}/simple")
    cache = BaseCache(cache_root())
    with pytest.raises(IntegrityError) as refused:
        resolve_new_base(NewBaseSpec("demo", "1.1"), Store(upstream.store), "devA", cache,
                         RecordingReporter(), limits=PatchLimits(download_bytes=MIB))  # fmt: skip
    assert refused.value.message == (
        f"http://127.0.0.1:{port}/files/demo-1.1.tar.gz: more than the limit of {MIB} bytes; "
        "the download was stopped"
    )
    assert files_below(cache.root / "sdists") == {}
    assert (cache.root / "sdists" / ".unverified").is_dir()


def test_a_local_file_index_page_is_read_bounded(tmp_path: Path) -> None:
    from patchtool.sources.index.client import IndexClient
    from patchtool.sources.index.settings import IndexSettings

    page = tmp_path / "simple" / "demo" / "index.html"
    page.parent.mkdir(parents=True)
    page.write_bytes(b"<a href='x'>x</a>\n" * 1000)
    settings = IndexSettings(index_url=(tmp_path / "simple").as_uri())
    client = IndexClient(settings, limits=PatchLimits(index_page_bytes=1000))
    with pytest.raises(IntegrityError) as refused:
        client.find("demo", "demo-1.0.tar.gz")
    assert refused.value.message == f"{page} is 18000 bytes, more than the limit of 1000"
    fifo = tmp_path / "fifo-simple"
    (fifo / "demo").mkdir(parents=True)
    os.mkfifo(fifo / "demo" / "index.html")
    client = IndexClient(IndexSettings(index_url=fifo.as_uri()))
    with pytest.raises(UnsafeInputError) as unsafe:
        client.find("demo", "demo-1.0.tar.gz")
    assert unsafe.value.message == f"{fifo / 'demo' / 'index.html'} is not a regular file"
