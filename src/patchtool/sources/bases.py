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

from patchtool.core import children
from patchtool.core.errors import (
    GitError,
    IntegrityError,
    NetworkError,
    NotFoundError,
    UsageError,
    quoted,
)
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
from patchtool.sources.index.credentials import redact
from patchtool.sources.index.settings import ENVIRONMENT, network_deadlines
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
    fetch_from: str | None = None,
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
    `limits` (the device's) bound the download and the sdist's unpacking.
    `fetch_from` is where a git base's missing commit is fetched from, when not
    from its recorded URL (a mirror); the commit id is what makes it the base.
    `limits` also bound a git base's tree, before anything lists or checks it
    out (`bound_base`): a refused base gets no base ref.
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
                fetch_git_commit(base, repository, reporter, fetch_from)
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


def fetch_git_commit(
    base: BaseRef, repository: Path, reporter: Reporter, fetch_from: str | None = None
) -> None:
    """Fetch `base.commit` from the base's git source (or `fetch_from`, a mirror)
    into its source's own cache repository (never the one sdists are imported
    into). The URL is a parsed `GitUrl` (no option, no remote helper, an allowed
    scheme), is passed after `--`, and git runs with `protocol.allow` pinned to
    the same schemes. When git cannot fetch, the error says why in git's own
    words (its last line). Each fetch is bounded: over http(s) by git's
    low-speed limit, over any transport by git_fetch_seconds (the network
    deadlines, sources/index/settings.py)."""
    assert isinstance(base.source, GitSource)
    url = base.source.url.location(base.path)
    if fetch_from is not None:
        url = GitUrl(fetch_from).location(Path.cwd())
    reporter.step(f"fetching {base.commit[:12]} from {redact(url)}")
    deadlines = network_deadlines()
    fetch = [
        "-c",
        f"http.lowSpeedLimit={deadlines.low_speed_limit}",
        "-c",
        f"http.lowSpeedTime={max(1, round(deadlines.low_speed_time))}",
        "--git-dir",
        str(repository),
        "fetch",
        "--quiet",
    ]
    try:
        run_plain([*fetch, "--no-tags", "--", url, base.commit], repository,
                  timeout=deadlines.git_fetch_seconds)  # fmt: skip
    except children.TimeoutExpired:
        raise _fetch_deadline(url, deadlines.git_fetch_seconds) from None
    except GitError as first:
        if _unreachable(first.stderr):
            raise NetworkError(
                f"cannot fetch commit {base.commit[:12]} from {redact(url)}: "
                f"{redact(git_reason(first.stderr))}"
            ) from first
        # Servers that refuse fetch-by-id: take their branches and tags instead.
        try:
            run_plain(
                [
                    *fetch,
                    "--",
                    url,
                    "+refs/heads/*:refs/patchtool/remote/heads/*",
                    "+refs/tags/*:refs/patchtool/remote/tags/*",
                ],
                repository,
                timeout=deadlines.git_fetch_seconds,
            )
        except children.TimeoutExpired:
            raise _fetch_deadline(url, deadlines.git_fetch_seconds) from None
        except GitError as error:
            raise NetworkError(
                f"cannot fetch commit {base.commit[:12]} from {redact(url)}: "
                f"{redact(git_reason(error.stderr))}"
            ) from error
    if Git(repository).rev_parse(base.commit) is None:
        raise NotFoundError(
            f"commit {base.commit} is not in {redact(url)}",
            hint=f"Check source.url and commit in {base.path / 'base.toml'}.",
        )


def _fetch_deadline(url: str, seconds: float) -> NetworkError:
    return NetworkError(
        f"the fetch from {redact(url)} took more than {seconds:g} s; it was stopped",
        hint="Check the git server and the network; "
        f"{ENVIRONMENT['git_fetch_seconds']} sets how long a fetch may take.",
    )


def git_reason(stderr: str) -> str:
    """git's own line for why a fetch failed: its first (the later ones are
    git's general advice, "Could not read from remote repository."), without
    its `fatal:` or `error:`."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.startswith("hint:")]
    chosen = (lines or ["git gave no reason"])[0]
    return chosen.removeprefix("fatal: ").removeprefix("error: ")


def _unreachable(stderr: str) -> bool:
    """Whether git could not reach the repository at all (no use asking it again)."""
    return any(
        marker in stderr
        for marker in (
            "Could not resolve host",
            "unable to access",
            "does not appear to be a git repository",
            "Connection refused",
            "Could not read from remote repository",
        )
    )


# --------------------------------------------------------------------------- new bases


@dataclass(frozen=True)
class NewBaseSpec:
    """What `--onto` named: a released version on the index, or a git commit."""

    project: str
    version: str
    git_url: str | None = None  # what base.toml records (the URL the user would share)
    git_commit: str | None = None
    # Where the commit is fetched from when that is not `git_url` (a mirror or a
    # local clone, import --flagscale's --git-url); never written into the store.
    fetch_from: str | None = None


def parse_onto(text: str, project: str | None, version_label: str | None = None) -> NewBaseSpec:
    """`0.7.3`, `vllm==0.7.3`, or `git+<url-or-path>@<full commit>`, for a base of
    `project` (the device's, or --project's). With none known, `name==version`
    names it; a bare version or a git source then needs --project: a base's
    project decides its tree folder and cache repository, and is never guessed."""
    text = text.strip()
    if project is None:
        if "==" not in text:
            what = "a git source" if text.startswith("git+") else f"version {quoted(text)}"
            raise UsageError(
                f"--onto {quoted(text)} names {what} but no project, and the device has no "
                "base (or bases of several projects) to take it from",
                hint="Name the project: --project NAME (e.g. --project vllm), or NAME==VERSION "
                "for a release.",
            )
        project = text.partition("==")[0].strip()
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
        ensure_base(base, cache, reporter, archive_paths, limits=limits, fetch_from=spec.fetch_from)
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
    # The index client (http, TLS, email headers) is imported only when a run needs it.
    from patchtool.sources.index.client import IndexClient, remove_partial_downloads

    filename = f"{spec.project}-{spec.version}.tar.gz"
    for candidate in local_sdists(filename, archive_paths):
        reporter.step(f"using local sdist {candidate}")
        return PypiSource(filename, sha256_of(candidate))
    cached = cached_release(spec.project, spec.version, filename, cache)
    if cached is not None:
        # A warm cache asks no index: the import key proves these bytes were the
        # release file when they were imported.
        reporter.step(f"using {filename} imported earlier (sha256 {cached.sha256[:12]})")
        return cached
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


def cached_release(
    project: str, version: str, filename: str, cache: BaseCache
) -> PypiSource | None:
    """The release file the cache imported for `project` `version` under `filename`,
    found by its import key (only the importer writes one, after it checked the
    file's sha256); None when the cache holds no import of it, or several files of
    that name (then the index says which is the release)."""
    repository = cache.release_repository(project)
    if not (repository / "HEAD").is_file():
        return None
    listing = Git(repository).lines("for-each-ref", "--format=%(refname)", "refs/patchtool/sdist/")
    found = set()
    for ref in listing:
        parts = ref.split("/")
        if len(parts) != 5:
            continue
        source = PypiSource(filename, parts[3])
        try:
            if import_key(project, version, source) == ref:
                found.add(source)
        except IntegrityError:
            continue
    return found.pop() if len(found) == 1 else None


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
