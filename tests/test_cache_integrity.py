"""The base cache is verified against the recorded commit: a cache object rewritten in
place stops `unpatch` and fails `check`'s `source` record (exit 6), changing nothing.

What `unpatch` cannot see: it trusts an earlier verification while every file under
the cache repository's `objects/` keeps its size, mtime and inode. A loose object
rewritten in place to the same size, with its mtime set back, is therefore taken as
verified by `unpatch` (and reaches the build tree); `check` ignores the record, hashes
every object again and fails. `test_an_in_place_rewrite_that_keeps_size_and_mtime...`
pins exactly that.
"""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, check_records, git, snapshot

from patchtool.core.errors import IntegrityError
from patchtool.sources.cache import VERIFIED_RECORD, objects_fingerprint, verify_base_objects
from patchtool.trees.staging import STAGE_PREFIX

CORE = "demo/core.py"
ORIGINAL_LINE = b"    return 1\n"
TAMPERED_LINE = b"    return 7\n"  # same length: the object keeps its size


def cache_root() -> Path:
    return Path(os.environ["PATCHTOOL_CACHE_DIR"]).resolve()


def cache_repository() -> Path:
    return cache_root() / "repos" / "demo.git"


def blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def loose_path(repository: Path, oid: str) -> Path:
    return repository / "objects" / oid[:2] / oid[2:]


def explode_packs(repository: Path) -> None:
    """Turn the cache's packs into loose objects, so one object is one file."""
    for pack in sorted((repository / "objects" / "pack").glob("*.pack")):
        data = pack.read_bytes()
        pack.unlink()
        pack.with_suffix(".idx").unlink()
        git(repository, "unpack-objects", "-q", input=data)


def core_blob(world: SyntheticUpstream) -> tuple[str, bytes]:
    repository = cache_repository()
    oid = git(repository, "rev-parse", f"{world.commit}:{CORE}").strip()
    content = git(repository, "cat-file", "blob", oid).encode()
    assert ORIGINAL_LINE in content and blob_id(content) == oid
    return oid, content


def tampered(content: bytes) -> bytes:
    return content.replace(ORIGINAL_LINE, TAMPERED_LINE, 1)


def stored_loose_object(content: bytes) -> bytes:
    """A loose blob compressed at level 0: its size depends on the content's length only."""
    return zlib.compress(b"blob %d\0" % len(content) + content, 0)


def replace_file(path: Path, data: bytes) -> None:
    """Rewrite `path` as a new file (new inode, new mtime), as a copy or restore would."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def error_lines(oid: str, commit: str, content: bytes) -> list[str]:
    repository = cache_repository()
    return [
        f"error: the cache repository {repository} is damaged: blob {oid} ({CORE}) of commit "
        f"{commit} holds content that hashes to {blob_id(content)}",
        f"hint: Remove it (`rm -rf {repository}`) or the whole cache ({cache_root()}, set by "
        "PATCHTOOL_CACHE_DIR or --cache-dir) and run again; the base is then imported or "
        "fetched afresh.",
    ]


def stage_folders(world: SyntheticUpstream) -> list[str]:
    return [p.name for p in (world.build / "devA").iterdir() if p.name.startswith(STAGE_PREFIX)]


def record_state(repository: Path) -> tuple[bytes, int, int]:
    path = repository / VERIFIED_RECORD
    status = path.stat()
    return path.read_bytes(), status.st_mtime_ns, status.st_ino


# --------------------------------------------------------------------------- unpatch


@pytest.mark.parametrize("restore_mtime", [False, True], ids=["new-mtime", "mtime-set-back"])
def test_a_rewritten_cache_blob_stops_unpatch_and_keeps_the_old_tree(
    upstream: SyntheticUpstream, restore_mtime: bool
) -> None:
    first = upstream.run("unpatch")
    assert first.code == 0, first.output
    before = snapshot(upstream.tree)
    repository = cache_repository()
    recorded = record_state(repository)
    explode_packs(repository)
    oid, content = core_blob(upstream)
    loose = loose_path(repository, oid)
    status = loose.stat()
    bad = tampered(content)
    replace_file(loose, zlib.compress(b"blob %d\0" % len(bad) + bad))
    if restore_mtime:  # the new file's inode still gives it away
        os.utime(loose, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert git(repository, "cat-file", "blob", oid).encode() == bad  # git itself does not notice

    result = upstream.run("unpatch")

    assert result.code == 6, result.output
    assert result.stderr.splitlines()[-2:] == error_lines(oid, upstream.commit, bad)
    assert snapshot(upstream.tree) == before
    assert stage_folders(upstream) == []
    assert record_state(repository) == recorded  # the damaged state is never recorded


def test_a_missing_cache_object_stops_unpatch(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    before = snapshot(upstream.tree)
    repository = cache_repository()
    explode_packs(repository)
    oid, _ = core_blob(upstream)
    loose_path(repository, oid).unlink()

    result = upstream.run("unpatch")

    assert result.code == 6, result.output
    assert result.stderr.splitlines()[-2] == (
        f"error: the cache repository {repository} is damaged: blob {oid} ({CORE}) of commit "
        f"{upstream.commit} is missing"
    )
    assert result.stderr.splitlines()[-1] == error_lines(oid, upstream.commit, b"")[1]
    assert snapshot(upstream.tree) == before
    assert stage_folders(upstream) == []


def test_an_in_place_rewrite_that_keeps_size_and_mtime_passes_unpatch_but_fails_check(
    upstream: SyntheticUpstream,
) -> None:
    """The documented limit of the record: same inode, same size, mtime set back."""
    assert upstream.run("unpatch").code == 0
    repository = cache_repository()
    explode_packs(repository)
    oid, content = core_blob(upstream)
    loose = loose_path(repository, oid)
    replace_file(loose, stored_loose_object(content))  # same content, stored uncompressed
    verified = upstream.run("unpatch")  # a new state of the object files: verified and recorded
    assert verified.code == 0, verified.output
    assert f"verifying demo 1.0 ({upstream.commit[:12]}) in the cache" in verified.stderr
    recorded = record_state(repository)
    status = loose.stat()
    bad = tampered(content)
    loose.chmod(0o644)
    with loose.open("r+b") as handle:  # in place: the inode stays
        handle.write(stored_loose_object(bad))
    os.utime(loose, ns=(status.st_atime_ns, status.st_mtime_ns))
    assert (loose.stat().st_size, loose.stat().st_ino) == (status.st_size, status.st_ino)

    unnoticed = upstream.run("unpatch")

    assert unnoticed.code == 0, unnoticed.output
    assert "verifying" not in unnoticed.stderr
    assert (upstream.tree / CORE).read_bytes() == bad  # the limitation, exactly
    assert record_state(repository) == recorded

    result = upstream.cli("check", "--device-type", "devA")

    assert result.code == 6, result.output
    assert "FAIL  devA  demo-1.0  source" in result.stdout
    assert error_lines(oid, upstream.commit, bad)[0].removeprefix("error: ") in result.stdout
    assert result.stderr.splitlines()[-2] == "error: 1 check(s) failed: devA/demo-1.0 source"


# --------------------------------------------------------------------------- check


def test_check_fails_source_with_exit_6_on_a_tampered_cache(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    repository = cache_repository()
    explode_packs(repository)
    oid, content = core_blob(upstream)
    bad = tampered(content)
    replace_file(loose_path(repository, oid), zlib.compress(b"blob %d\0" % len(bad) + bad))

    result = upstream.cli("check", "--device-type", "devA", "--json")

    assert result.code == 6, result.output
    records = {r["check"]: r for r in check_records(result.stdout) if r["base"] == "demo-1.0"}
    assert records["source"]["ok"] is False
    assert records["source"]["details"] == [
        error_lines(oid, upstream.commit, bad)[0].removeprefix("error: ")
    ]
    assert (records["apply"]["ok"], records["apply"]["skipped"]) == (None, True)  # not run


def test_unreadable_object_names_the_object_and_gits_reason(upstream: SyntheticUpstream) -> None:
    assert upstream.run("unpatch").code == 0
    repository = cache_repository()
    explode_packs(repository)
    oid, _ = core_blob(upstream)
    replace_file(loose_path(repository, oid), b"not zlib at all")

    with pytest.raises(IntegrityError) as caught:
        verify_base_objects(repository, upstream.commit)

    prefix = (
        f"the cache repository {repository} is damaged: blob {oid} ({CORE}) of commit "
        f"{upstream.commit} cannot be read: "
    )
    message = caught.value.message
    assert message.startswith(prefix)
    assert oid in message.removeprefix(prefix)  # git's own words, which name the object


# --------------------------------------------------------------------------- a clean cache


def test_a_clean_warm_cache_is_verified_once_and_the_record_reused(
    upstream: SyntheticUpstream,
) -> None:
    step = f"verifying demo 1.0 ({upstream.commit[:12]}) in the cache"
    first = upstream.run("unpatch")
    assert first.code == 0, first.output
    assert step in first.stderr
    repository = cache_repository()
    assert json.loads((repository / VERIFIED_RECORD).read_bytes()) == {
        "fingerprint": objects_fingerprint(repository),
        "commits": [upstream.commit],
    }
    recorded = record_state(repository)

    second = upstream.run("unpatch")  # clones the cache again: new hard links, same record

    assert second.code == 0, second.output
    assert step not in second.stderr
    assert record_state(repository) == recorded

    checked = upstream.cli("check", "--device-type", "devA")  # verifies in full regardless

    assert checked.code == 0, checked.output
    assert "ok    devA  demo-1.0  source" in checked.stdout
    assert step in checked.stderr
    assert record_state(repository) == recorded  # already recorded for this state


def test_a_record_for_another_state_of_the_objects_is_started_anew(
    upstream: SyntheticUpstream,
) -> None:
    assert upstream.run("unpatch").code == 0
    repository = cache_repository()
    (repository / VERIFIED_RECORD).write_text(
        json.dumps({"fingerprint": "0" * 64, "commits": [upstream.commit, "1" * 40]})
    )

    result = upstream.run("unpatch")

    assert result.code == 0, result.output
    assert f"verifying demo 1.0 ({upstream.commit[:12]}) in the cache" in result.stderr
    assert json.loads((repository / VERIFIED_RECORD).read_bytes()) == {
        "fingerprint": objects_fingerprint(repository),
        "commits": [upstream.commit],
    }
