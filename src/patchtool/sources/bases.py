"""Bases into the cache: the store's (`ensure_base`) and new ones (`resolve_new_base`).

`ensure_base` makes sure the cache holds a base's commit, proven and intact:
an sdist base's commit is the one its import key names, or is imported afresh
by sdist.py and compared; a git base is fetched here (`fetch_git_commit`) into
its source's own repository; either is verified by cache.py before it is used.

`resolve_new_base` is for the commands that create a base (rebase --onto,
import --onto, import --flagscale): `--onto` names a released version or a git
commit (`parse_onto`); a release is found on the index or locally, its hash
taken from the index's listing, or from a download when the index lists none,
and imported once (a warm cache finds the earlier import by its import key,
never by a message: cache.py says why).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from patchtool.core.errors import IntegrityError, NetworkError, NotFoundError, UsageError, quoted
from patchtool.core.fsutil import check_name, sha256_of
from patchtool.core.gitops import Git, run_plain
from patchtool.core.report import Reporter
from patchtool.sources.cache import (
    BaseCache,
    Verification,
    base_ref_name,
    locked_cache_repository,
    read_refs,
    recorded_as_verified,
    recorded_extent,
    verify_and_record,
)
from patchtool.sources.extent import base_subject, check_extent, measure_base
from patchtool.sources.index import IndexClient, redact, remove_partial_downloads
from patchtool.sources.sdist import import_key, import_sdist, local_sdists, obtain_sdist
from patchtool.store.model import (
    BASE_FILE,
    DEFAULT_LIMITS,
    BaseRef,
    GitSource,
    GitUrl,
    PatchLimits,
    PypiSource,
)
from patchtool.store.resolve import Store


def ensure_base(
    base: BaseRef,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...] = (),
    verify: Verification = "recorded",
    limits: PatchLimits = DEFAULT_LIMITS,
) -> Path:
    """Make sure the cache holds `base.commit`, proven and intact, under a base ref;
    return the repository that holds it (`BaseCache.repository_for`).

    A released sdist's commit is proven, never assumed: its import key must name
    `base.commit`, and where there is no key (a cold cache, one an older patchtool
    made) the sdist is obtained (hash-checked) and imported, and the result
    compared. That the commit's object exists proves nothing, since a git base's
    fetch can bring any object with any message. A git base is its commit id:
    fetched when missing. Either way the base ref is written when missing.

    `verify="recorded"` trusts an earlier verification of the same commit while
    the object files are unchanged; `verify="full"` hashes every object again.
    `limits` (the device's) bound the download, the sdist's unpacking and a git
    base's tree, before anything lists or checks it out (`bound_base`): a
    refused base gets no base ref.
    """
    repository = cache.repository_for(base)
    base_ref = base_ref_name(base.commit)
    with locked_cache_repository(repository) as git:
        if isinstance(base.source, PypiSource):
            key = import_key(base.project, base.version, base.source)
            refs = read_refs(git, key, base_ref)
            commit = refs.get(key) or _import(
                base, cache, reporter, archive_paths, repository, limits
            )
            if commit != base.commit:
                raise IntegrityError(
                    f"{base.path / 'base.toml'}: the sdist {base.source.filename} imports as "
                    f"commit {commit}, but base.toml records {base.commit}",
                    hint="The sdist matched its sha256, so base.toml's commit is wrong or "
                    "was written by an incompatible patchtool; fix the commit line.",
                )
        else:
            refs = read_refs(git, base_ref)
            if refs.get(base_ref) != base.commit and git.rev_parse(base.commit) is None:
                fetch_git_commit(base, repository, reporter)
        bound_base(git, base, verify, limits, reporter)
        if refs.get(base_ref) != base.commit:
            git.run("update-ref", base_ref, base.commit)
        return repository


def bound_base(
    git: Git, base: BaseRef, verify: Verification, limits: PatchLimits, reporter: Reporter
) -> None:
    """Hold a git base's tree to `limits` before anything lists, verifies or checks
    it out: measured from its objects' headers (extent.py), or, where the cache
    verified this state of its objects before, its recorded extent; then verify
    the base (cache.py) and record both. An sdist base was bounded as it was
    imported (sdist.py)."""
    extent = None
    if isinstance(base.source, GitSource):
        subject = base_subject(str(base.path / BASE_FILE), base.commit)
        extent = None if verify == "full" else recorded_extent(git.cwd, base.commit)
        if extent is not None:
            check_extent(extent, limits, subject)
            return
        extent = measure_base(git, base.commit, limits, subject)
    elif verify != "full" and recorded_as_verified(git.cwd, base.commit):
        return
    reporter.step(f"verifying {base.label} ({base.commit[:12]}) in the cache")
    verify_and_record(git.cwd, base.commit, reporter, extent)


def held_in_cache(base: BaseRef, cache: BaseCache) -> bool:
    """Whether `ensure_base` can prove `base` from what the cache holds, with no sdist
    and no network: an sdist base's import key exists (it names base.commit or
    ensure_base refuses), a git base's commit is in its source's repository."""
    repository = cache.repository_for(base)
    if not (repository / "HEAD").is_file():
        return False
    git = Git(repository)
    if isinstance(base.source, PypiSource):
        return bool(read_refs(git, import_key(base.project, base.version, base.source)))
    return git.rev_parse(base.commit) is not None


def _import(
    base: BaseRef,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...],
    repository: Path,
    limits: PatchLimits,
) -> str:
    """Obtain the base's sdist (hash-checked) and import it into `repository`, which
    records its import key; return the commit (the caller holds the lock)."""
    assert isinstance(base.source, PypiSource)
    archive = obtain_sdist(base, cache, reporter, archive_paths, limits)
    reporter.step(f"importing {archive.name} into the cache")
    return import_sdist(
        archive, repository, base.project, base.version, base.source, limits
    )


# --------------------------------------------------------------------------- git bases


def fetch_git_commit(base: BaseRef, repository: Path, reporter: Reporter) -> None:
    """Fetch `base.commit` from the base's git source into its source's own cache
    repository (never the one sdists are imported into). The URL is a parsed
    `GitUrl` (no option, no remote helper, an allowed scheme), is passed after
    `--`, and git runs with `protocol.allow` pinned to the same schemes."""
    assert isinstance(base.source, GitSource)
    url = base.source.url.location(base.path)
    reporter.step(f"fetching {base.commit[:12]} from {redact(url)}")
    git_dir = ["--git-dir", str(repository)]
    try:
        run_plain([*git_dir, "fetch", "--quiet", "--no-tags", "--", url, base.commit], repository)
    except Exception:
        # Servers that refuse fetch-by-id: take their branches and tags instead.
        try:
            run_plain(
                [
                    *git_dir,
                    "fetch",
                    "--quiet",
                    "--",
                    url,
                    "+refs/heads/*:refs/patchtool/remote/heads/*",
                    "+refs/tags/*:refs/patchtool/remote/tags/*",
                ],
                repository,
            )
        except Exception as error:
            raise NetworkError(f"cannot fetch from {redact(url)}: {redact(str(error))}") from error
    if Git(repository).rev_parse(base.commit) is None:
        raise NotFoundError(
            f"commit {base.commit} is not in {redact(url)}",
            hint=f"Check source.url and commit in {base.path / 'base.toml'}.",
        )


# --------------------------------------------------------------------------- new bases


@dataclass(frozen=True)
class NewBaseSpec:
    """What `--onto` named: a released version on the index, or a git commit."""

    project: str
    version: str
    git_url: str | None = None
    git_commit: str | None = None


def parse_onto(text: str, project: str | None, version_label: str | None = None) -> NewBaseSpec:
    """`0.7.3`, `vllm==0.7.3`, or `git+<url-or-path>@<full commit>`. With no known
    project (a device's first base), `name==version` names it; else it is vllm."""
    text = text.strip()
    if project is None:
        project = text.partition("==")[0].strip() if "==" in text else "vllm"
        check_name("project", project)
    if text.startswith("git+"):
        url, _, commit = text[4:].rpartition("@")
        if not url or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise UsageError(
                f"--onto {quoted(text)}: a git source is git+<url-or-path>@<full 40-digit commit>",
                hint="Give the full commit id, not a branch or a short id: the base must not move.",
            )
        version = version_label or commit[:12]
        check_name("base version", version)
        parsed = GitUrl(url)
        if parsed.kind == "path":  # given on the command line: from the current folder
            parsed = GitUrl(parsed.location(Path.cwd()))
        return NewBaseSpec(project, version, git_url=str(parsed), git_commit=commit)
    name, separator, version = text.partition("==")
    if not separator:
        name, version = project, text
    if name.strip() != project:
        raise UsageError(
            f"--onto {quoted(text)} names project {quoted(name.strip())}, "
            f"but the base is {quoted(project)}"
        )
    version = version.strip()
    check_name("version", version)
    return NewBaseSpec(project, version)


def resolve_new_base(
    spec: NewBaseSpec,
    store: Store,
    device: str,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...] = (),
    limits: PatchLimits = DEFAULT_LIMITS,
) -> BaseRef:
    """The new base with its exact commit, held in the cache repository; its folder
    (`BaseRef.path`) is where it will live in the store, not yet created. `limits`
    are the device's (the defaults for a device that has none yet)."""
    base_id = check_name("base id", f"{spec.project}-{spec.version}")
    folder = store.root / device / base_id
    if spec.git_url is not None:
        assert spec.git_commit is not None
        base = BaseRef(
            device,
            base_id,
            spec.project,
            spec.version,
            spec.git_commit,
            GitSource(GitUrl(spec.git_url)),
            folder,
        )
        ensure_base(base, cache, reporter, archive_paths, limits=limits)
        return base
    source = _locate_sdist(spec, cache, reporter, archive_paths, limits)
    provisional = BaseRef(device, base_id, spec.project, spec.version, "0" * 40, source, folder)
    commit = _import_released(provisional, cache, reporter, archive_paths, limits)
    return BaseRef(device, base_id, spec.project, spec.version, commit, source, folder)


def _locate_sdist(
    spec: NewBaseSpec,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...],
    limits: PatchLimits,
) -> PypiSource:
    """The sdist's name and sha256: a local copy (air-gapped sites, pip's find-links)
    first, else the index's listed hash, else the hash of a download into the cache."""
    filename = f"{spec.project}-{spec.version}.tar.gz"
    for candidate in local_sdists(filename, archive_paths):
        reporter.step(f"using local sdist {candidate}")
        return PypiSource(filename, sha256_of(candidate))
    client = IndexClient(reporter=reporter, limits=limits)
    found = client.locate(
        spec.project,
        filename,
        hint="Check the version, `pip config list`, or pass the file with --sdist PATH.",
    )
    if found.local_path is not None:
        reporter.step(f"using local sdist {found.local_path}")
        return PypiSource(filename, sha256_of(found.local_path))
    if found.sha256 is not None:
        reporter.step(f"found {filename} on {found.origin} (sha256 {found.sha256[:12]})")
        return PypiSource(filename, found.sha256)
    reporter.step(f"{found.origin} lists no hash for {filename}: downloading it")
    # The download is staged under the lock of the repository it will be imported into.
    with locked_cache_repository(cache.release_repository(spec.project)):
        staging = cache.root / "sdists" / ".unverified"
        staging.mkdir(parents=True, exist_ok=True)
        # A killed run's half-written file; the lock rules out a live download.
        remove_partial_downloads(staging, filename)
        sha = client.download(found.url, staging / filename, None, expected_size=found.size)
        target = cache.sdist_path(PypiSource(filename, sha))
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / filename, target)
    return PypiSource(filename, sha)


def _import_released(
    base: BaseRef,
    cache: BaseCache,
    reporter: Reporter,
    archive_paths: tuple[Path, ...],
    limits: PatchLimits,
) -> str:
    """The commit of the base's sdist: the one its import key names (a warm cache),
    else a fresh import of the hash-checked sdist."""
    assert isinstance(base.source, PypiSource)
    repository = cache.repository_for(base)
    key = import_key(base.project, base.version, base.source)
    with locked_cache_repository(repository) as git:
        found = read_refs(git, key).get(key)
        return found or _import(base, cache, reporter, archive_paths, repository, limits)
