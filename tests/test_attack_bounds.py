"""Bounds against the attack report on the issue-19 fixes (ATTACK19): a git base
measured from its objects' headers before it is listed or checked out (HIGH 1),
copies and renames counted before git applies a patch (HIGH 2), an sdist's tar
header records bounded as they are read (MEDIUM 3), and hostile store shapes
refused as errors that name the file (LOW 11). Each bomb is small: the test
store's [limits] are lowered to meet it."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, check_records, error_lines, git, write_git_base

from patchtool.core.errors import PatchtoolError, UnsafeInputError, quoted
from patchtool.core.gitops import Git
from patchtool.sources.sdist import import_sdist
from patchtool.store.model import PypiSource

GIT_BASE_WHAT = (
    "Nothing was checked out. Check that base.toml names the upstream commit you mean, "
    "or raise {key} under [limits] in the device's device.toml (at most {ceiling}) if an "
    "input this large is intended."
)


def set_limits(world: SyntheticUpstream, limits: str) -> None:
    device = world.store / "devA" / "device.toml"
    device.write_text(device.read_text() + f"\n[limits]\n{limits}\n")


def hash_blob(repository: Path, data: bytes) -> str:
    return git(repository, "hash-object", "-w", "--stdin", input=data).strip()


def make_tree(repository: Path, entries: list[tuple[str, str, str]]) -> str:
    """A tree object of (mode, oid, name) entries, made with `git mktree`."""
    kinds = {"040000": "tree"}
    listing = "".join(f"{mode} {kinds.get(mode, 'blob')} {oid}\t{name}\n"
                      for mode, oid, name in entries)  # fmt: skip
    return git(repository, "mktree", input=listing.encode()).strip()


def git_base_in_store(world: SyntheticUpstream, tree: str, repository: Path) -> str:
    """devA's base `git-base`, its source the bare `repository`, its commit one
    holding `tree`."""
    commit = git(repository, "commit-tree", "-m", "bomb", tree).strip()
    write_git_base(world, str(repository), commit)
    return commit


def bare_in_store(world: SyntheticUpstream) -> Path:
    repository = world.root / "up.git"
    git(world.root, "init", "--quiet", "--bare", str(repository))
    return repository


def tree_bomb(repository: Path, width: int, depth: int) -> str:
    """`width` files in a folder, named `width` times per level, `depth` levels down:
    width**(depth+1) files from depth+2 objects."""
    blob = hash_blob(repository, b"x\n")
    tree = make_tree(repository, [("100644", blob, f"f{i}") for i in range(width)])
    for _ in range(depth):
        tree = make_tree(repository, [("040000", tree, f"d{i}") for i in range(width)])
    return tree


# --------------------------------------------------------------------------- HIGH 1


def test_a_git_tree_bomb_is_refused_from_its_headers(upstream: SyntheticUpstream) -> None:
    """HIGH 1: ten folders of ten folders of ten files (1,110 paths from 4 objects)
    against git-base-paths = 500: refused before any listing or checkout."""
    set_limits(upstream, "git-base-paths = 500")
    repository = bare_in_store(upstream)
    commit = git_base_in_store(upstream, tree_bomb(repository, 10, 2), repository)
    base_file = upstream.store / "devA" / "git-base" / "base.toml"
    result = upstream.run("unpatch", "--commit-id", "git-base")
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: {base_file}: commit {commit[:12]}: its tree has more than 500 paths "
        "(files and folders, as checked out)",
        "hint: " + GIT_BASE_WHAT.format(key="git-base-paths", ceiling=2000000),
    ]
    assert [p.name for p in (upstream.build / "devA").iterdir()] == [".patchtool.lock"]
    checked = upstream.run("check", "--commit-id", "git-base")
    assert checked.code == 6, checked.output
    assert (
        "FAIL  devA  git-base  source\n"
        f"        {base_file}: commit {commit[:12]}: its tree has more than 500 paths "
        "(files and folders, as checked out)\n"
    ) in checked.stdout


def test_a_deep_tree_bomb_is_refused_reading_a_few_objects(upstream: SyntheticUpstream) -> None:
    """HIGH 1's own bomb: 1e9 files from 11 objects, at the default limits."""
    repository = bare_in_store(upstream)
    commit = git_base_in_store(upstream, tree_bomb(repository, 10, 8), repository)
    result = upstream.run("check", "--commit-id", "git-base")
    assert result.code == 6, result.output
    assert (
        f"commit {commit[:12]}: its tree has more than 100000 paths (files and folders, "
        "as checked out)\n"
    ) in result.stdout


def test_a_git_blob_bomb_is_refused_by_its_header(upstream: SyntheticUpstream) -> None:
    """HIGH 1: a blob larger than git-base-file-bytes, named by its path."""
    set_limits(upstream, "git-base-file-bytes = 4096")
    repository = bare_in_store(upstream)
    big = hash_blob(repository, bytes(5000))
    small = hash_blob(repository, b"x\n")
    inner = make_tree(repository, [("100644", big, "big.bin"), ("100644", small, "a.txt")])
    tree = make_tree(repository, [("040000", inner, "data")])
    commit = git_base_in_store(upstream, tree, repository)
    result = upstream.run("unpatch", "--commit-id", "git-base")
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: {upstream.store / 'devA' / 'git-base' / 'base.toml'}: commit {commit[:12]}: "
        "file 'data/big.bin' is 5000 bytes, more than the limit of 4096",
        "hint: " + GIT_BASE_WHAT.format(key="git-base-file-bytes", ceiling=1073741824),
    ]


def test_a_git_base_s_bytes_are_summed_where_each_file_appears(
    upstream: SyntheticUpstream,
) -> None:
    """HIGH 1: one 1,000-byte file named in ten folders is 10,000 bytes checked out."""
    set_limits(upstream, "git-base-bytes = 9999")
    repository = bare_in_store(upstream)
    blob = hash_blob(repository, bytes(1000))
    inner = make_tree(repository, [("100644", blob, "f")])
    tree = make_tree(repository, [("040000", inner, f"d{i}") for i in range(10)])
    commit = git_base_in_store(upstream, tree, repository)
    result = upstream.run("unpatch", "--commit-id", "git-base")
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: {upstream.store / 'devA' / 'git-base' / 'base.toml'}: commit {commit[:12]}: "
        "its files hold more than 9999 bytes together",
        "hint: " + GIT_BASE_WHAT.format(key="git-base-bytes", ceiling=4294967296),
    ]


def test_a_recorded_extent_is_held_to_the_limits_of_the_device_at_hand(
    upstream: SyntheticUpstream,
) -> None:
    """HIGH 1: a warm cache keeps the extent it measured; a device with lower limits
    is refused from the record, as a cold cache would refuse it."""
    repository = bare_in_store(upstream)
    blob = hash_blob(repository, bytes(1000))
    tree = make_tree(repository, [("100644", blob, f"f{i}") for i in range(3)])
    commit = git_base_in_store(upstream, tree, repository)
    first = upstream.run("unpatch", "--commit-id", "git-base")
    assert first.code == 0, first.output
    set_limits(upstream, "git-base-bytes = 2999")
    again = upstream.run("unpatch", "--commit-id", "git-base")
    assert again.code == 6, again.output
    assert error_lines(again)[0] == (
        f"error: {upstream.store / 'devA' / 'git-base' / 'base.toml'}: commit {commit[:12]}: "
        "its files hold more than 2999 bytes together"
    )
    assert "verifying" not in again.stderr


def test_a_git_base_within_its_limits_is_checked_out(upstream: SyntheticUpstream) -> None:
    """The limits count exactly: 3 files and a folder are 4 paths, 3,000 bytes."""
    set_limits(upstream, "git-base-paths = 4\ngit-base-bytes = 3000\ngit-base-file-bytes = 1000")
    repository = bare_in_store(upstream)
    blob = hash_blob(repository, bytes(1000))
    inner = make_tree(repository, [("100644", blob, f"f{i}") for i in range(3)])
    git_base_in_store(upstream, make_tree(repository, [("040000", inner, "d")]), repository)
    result = upstream.run("unpatch", "--commit-id", "git-base")
    assert result.code == 0, result.output
    tree = upstream.build / "devA" / "demo"
    assert sorted(p.name for p in (tree / "d").iterdir()) == ["f0", "f1", "f2"]


# --------------------------------------------------------------------------- HIGH 2

COPY_WHAT = (
    "Nothing was applied. git reads each copied or renamed file whole into memory and "
    "writes it again: copy fewer files, or raise {key} under [limits] in the device's "
    "device.toml (at most {ceiling}) if an input this large is intended."
)


def copy_patch(subject: str, sections: list[tuple[str, str, str]]) -> bytes:
    """A mail patch made only of (kind, source, target) sections, kind "copy" or
    "rename", each about a hundred bytes."""
    body = "".join(
        f"diff --git a/{source} b/{target}\nsimilarity index 100%\n"
        f"{kind} from {source}\n{kind} to {target}\n"
        for kind, source, target in sections
    )
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: A <a@example.invalid>\nDate: Sat, 1 Feb 2025 12:00:00 +0000\n"
        f"Subject: [PATCH] {subject}\n\nWhy.\n---\n{body}--\n2.39.0\n\n"
    ).encode()


def store_series(world: SyntheticUpstream, patches: dict[str, bytes]) -> None:
    for name, data in patches.items():
        (world.base_folder / name).write_bytes(data)
    (world.base_folder / "series").write_text("".join(f"{name}\n" for name in patches))


def test_copies_past_copy_patch_bytes_are_refused_before_git_reads_them(
    upstream: SyntheticUpstream,
) -> None:
    """HIGH 2: five copies of demo/data.bin (1,024 bytes) in one patch; each counts
    its source and all a patch so far could add to it (the patch's own bytes)."""
    patch = copy_patch("Copy", [("copy", "demo/data.bin", f"c{i}.bin") for i in range(5)])
    each = 1024 + len(patch)
    set_limits(upstream, f"copy-patch-bytes = {3 * each}")
    store_series(upstream, {"0001-copy.patch": patch})
    result = upstream.run("unpatch")
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: patch {upstream.base_folder / '0001-copy.patch'} (series line 1): line 20: "
        f"the copy or rename to 'c3.bin' makes its copies and renames {4 * each} bytes "
        f"together, more than the limit of {3 * each}",
        "hint: " + COPY_WHAT.format(key="copy-patch-bytes", ceiling=2147483648),
    ]
    assert not (upstream.build / "devA" / "demo").exists()
    checked = upstream.run("check")
    assert checked.code == 6, checked.output
    assert "makes its copies and renames" in checked.stdout


def test_copies_of_copies_and_renames_count_against_copy_series_bytes(
    upstream: SyntheticUpstream,
) -> None:
    """HIGH 2: a rename counts as a copy; a copy of an earlier copy counts its
    source's size; the series' sum is bounded across patches."""
    first = copy_patch("Copy", [("copy", "demo/data.bin", "c.bin")])
    second = copy_patch("Rename", [("copy", "c.bin", "d.bin"), ("rename", "c.bin", "r.bin")])
    growth = len(first) + len(second)
    counted = (1024 + len(first)) + 2 * (1024 + growth)
    set_limits(upstream, f"copy-series-bytes = {counted - 1}")
    store_series(upstream, {"0001-copy.patch": first, "0002-rename.patch": second})
    result = upstream.run("unpatch")
    assert result.code == 6, result.output
    assert error_lines(result) == [
        f"error: patch {upstream.base_folder / '0002-rename.patch'} (series line 2): line 12: "
        f"the copy or rename to 'r.bin' makes the series' copies and renames {counted} bytes "
        f"together, more than the limit of {counted - 1}",
        "hint: " + COPY_WHAT.format(key="copy-series-bytes", ceiling=8589934592),
    ]
    device = upstream.store / "devA" / "device.toml"
    device.write_text(device.read_text().replace(str(counted - 1), str(counted)))
    applied = upstream.run("unpatch")
    assert applied.code == 0, applied.output
    tree = upstream.build / "devA" / "demo"
    assert (tree / "d.bin").read_bytes() == (tree / "r.bin").read_bytes()
    assert not (tree / "c.bin").exists()


# --------------------------------------------------------------------------- MEDIUM 3

RECORD_HINT = (
    "Nothing was imported. Check that the file is the released sdist: no name or header "
    "of a real one is this large."
)


def odd_sdist(path: Path, form: int, odd: tarfile.TarInfo) -> Path:
    """A gzipped tar of `form` with one plain member, then `odd` (no content)."""
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=form) as tar:
        plain = tarfile.TarInfo("demo-1.0/setup.py")
        plain.size = 2
        tar.addfile(plain, io.BytesIO(b"x\n"))
        tar.addfile(odd, io.BytesIO(b"x") if odd.size else None)
    path.write_bytes(gzip.compress(stream.getvalue()))
    return path


def refused(archive: Path, tmp_path: Path) -> PatchtoolError:
    """import_sdist's refusal; nothing reached git fast-import (no ref, no object)."""
    repository = tmp_path / "import.git"
    Git(tmp_path).run("init", "--quiet", "--bare", str(repository))
    with pytest.raises(PatchtoolError) as caught:
        import_sdist(archive, repository, "demo", "1.0", PypiSource("demo-1.0.tar.gz", "0" * 64))
    assert Git(repository).run("count-objects").text.strip() == "0 objects, 0 kilobytes"
    assert Git(repository).run("for-each-ref").text.strip() == ""
    return caught.value


def test_a_long_gnu_name_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    """MEDIUM 3: a GNU long-name record of 70,012 bytes is refused unread."""
    odd = tarfile.TarInfo("demo-1.0/" + "a/" * 35_000 + "x")
    odd.size = 1
    error = refused(odd_sdist(tmp_path / "long.tar.gz", tarfile.GNU_FORMAT, odd), tmp_path)
    assert (error.exit_code, error.message, error.hint) == (
        6,
        f"{tmp_path / 'long.tar.gz'}: a long name of 70011 bytes, more than the limit of "
        "65536; it was not read",
        RECORD_HINT,
    )


def test_a_long_gnu_link_name_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    odd = tarfile.TarInfo("demo-1.0/link")
    odd.type, odd.linkname = tarfile.SYMTYPE, "b/" * 40_000
    error = refused(odd_sdist(tmp_path / "link.tar.gz", tarfile.GNU_FORMAT, odd), tmp_path)
    assert error.message == (
        f"{tmp_path / 'link.tar.gz'}: a long link name of 80001 bytes, more than the limit "
        "of 65536; it was not read"
    )


def test_a_large_pax_record_is_refused_by_its_declared_size(tmp_path: Path) -> None:
    odd = tarfile.TarInfo("demo-1.0/x.txt")
    odd.size = 1
    odd.pax_headers = {"comment": "A" * 70_000}
    error = refused(odd_sdist(tmp_path / "pax.tar.gz", tarfile.PAX_FORMAT, odd), tmp_path)
    assert error.message == (
        f"{tmp_path / 'pax.tar.gz'}: a PAX header of 70015 bytes, more than the limit of "
        "65536; it was not read"
    )


def test_a_member_path_past_the_depth_rule_never_reaches_fast_import(tmp_path: Path) -> None:
    """MEDIUM 3: a name within the record bound but 100 components deep."""
    odd = tarfile.TarInfo("demo-1.0/" + "a/" * 99 + "x")
    odd.size = 1
    error = refused(odd_sdist(tmp_path / "deep.tar.gz", tarfile.GNU_FORMAT, odd), tmp_path)
    assert isinstance(error, UnsafeInputError)
    assert error.message == (
        f"{tmp_path / 'deep.tar.gz'}: member {quoted(odd.name)}: its path has 100 "
        "components, more than the limit of 64"
    )


# --------------------------------------------------------------------------- LOW 11


def listed_problem(upstream: SyntheticUpstream) -> str:
    """`list --json` shows a device check refuses as a matrix entry of its own (CI
    runs its check, which fails): its problem."""
    listed = upstream.cli("list", "--json")
    assert listed.code == 0, listed.output
    [entry] = json.loads(listed.stdout)["include"]
    assert (entry["device"], entry["base"], entry["command"]) == (
        "devA", None, "patchtool check -d devA")  # fmt: skip
    return str(entry["problem"])


def test_a_series_that_is_a_folder_is_refused_naming_it(upstream: SyntheticUpstream) -> None:
    """LOW 11: an internal error (IsADirectoryError, exit 1) before; check --json
    still prints its records."""
    series = upstream.base_folder / "series"
    series.unlink()
    series.mkdir()
    assert listed_problem(upstream) == f"{series} is a folder, not a regular file"
    checked = upstream.cli("check", "--json")
    assert checked.code == 10, checked.output
    records = check_records(checked.stdout)
    assert [(r["check"], r["ok"]) for r in records if r["check"] == "series"] == [
        ("series", False)
    ]
    assert [r["details"] for r in records if r["check"] == "series"] == [
        [f"{series} is a folder, not a regular file"]
    ]


def test_a_base_toml_that_is_a_folder_is_refused_naming_it(upstream: SyntheticUpstream) -> None:
    base_file = upstream.base_folder / "base.toml"
    base_file.unlink()
    base_file.mkdir()
    assert listed_problem(upstream) == f"{base_file} is a folder, not a regular file"
    checked = upstream.cli("check", "--json")
    assert checked.code == 10, checked.output
    assert json.loads(checked.stdout)["exit_code"] == 10
    assert f"{base_file} is a folder, not a regular file" in checked.stdout


def test_toml_nested_past_python_s_recursion_is_refused_naming_the_file(
    upstream: SyntheticUpstream,
) -> None:
    """LOW 11: 5,000 nested arrays, or inline tables, in device.toml (RecursionError
    and exit 1 before)."""
    device = upstream.store / "devA" / "device.toml"
    plain = device.read_text()
    message = (
        f"error: {device}: not valid TOML for patchtool: its arrays or tables nest too deeply"
    )
    for nested in ("[" * 5000 + "]" * 5000, "{a = " * 3000 + "1" + "}" * 3000):
        device.write_text(plain + f"x = {nested}\n")
        assert listed_problem(upstream) == message.removeprefix("error: ")
        checked = upstream.cli("check", "--json")
        assert checked.code == 6, checked.output
        assert json.loads(checked.stdout)["exit_code"] == 6
        assert message.removeprefix("error: ") in checked.stdout


def test_a_git_url_python_cannot_split_is_refused_naming_the_file(
    upstream: SyntheticUpstream,
) -> None:
    """LOW 11: `ssh://[-oProxyCommand=…]/x` raised ValueError (Invalid IPv6 URL)."""
    folder = write_git_base(upstream, "ssh://[-oProxyCommand=touch x]/x", "a" * 40)
    assert listed_problem(upstream) == (
        f"{folder / 'base.toml'}: source.url: git URL "
        "'ssh://[-oProxyCommand=touch x]/x' cannot be read as a URL: a host in brackets "
        "must be an IPv6 address"
    )
    checked = upstream.cli("check", "--json")
    assert checked.code == 10, checked.output
    assert json.loads(checked.stdout)["exit_code"] == 10
    assert "a host in brackets must be an IPv6 address" in checked.stdout
