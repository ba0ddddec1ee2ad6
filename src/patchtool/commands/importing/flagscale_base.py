"""`import --flagscale`: which base a FlagScale set is imported onto.

A set's project is its backend's (vllm, sglang, Megatron-LM, FlagScale, ...):
it decides the base's folder, its tree folder and its cache repository. The
base is, in this order:

- for a set that pins no base (the legacy layout; diff.yaml naming neither a
  release nor a commit): the base `--commit-id` names (one the device has) or
  the new base `--onto` names;
- the commit diff.yaml pins, fetched from the backend's repository, or from
  `--git-url BACKEND=URL` (a mirror or a local clone: base.toml records the
  backend's own repository, the URL every user shares, never that location);
- when that commit cannot be fetched (git's reason is kept), the released sdist
  of the version diff.yaml names, where the backend publishes sdists and the
  set's files lie inside what the sdist holds (sglang's sdist is the
  repository's python/ folder: the set is read one level deeper, or the
  fallback is refused with the reason).

One commit has one version label in the store: a git base whose commit another
base of the store already has takes that base's label.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from patchtool.commands.jobs import CacheJob
from patchtool.core.errors import NetworkError, NotFoundError, UsageError, quoted
from patchtool.core.report import Reporter
from patchtool.sources.bases import NewBaseSpec, parse_onto, resolve_new_base
from patchtool.store.model import GitUrl
from patchtool.vendors.flagscale.model import BackendSet


@dataclass(frozen=True)
class BaseChoice:
    """The base a set goes onto: a new one (`spec`) or one the device has (`base`)."""

    spec: NewBaseSpec | None = None
    base: str | None = None
    note: str = ""  # for base.toml's [origin] note: why this base (no machine paths)
    strip_extra: int = 0  # path components the base's layout lacks (sglang's python/)

    @property
    def label(self) -> str:
        """The base as the summary names it (its folder's name)."""
        if self.spec is not None:
            return f"{self.spec.project}-{self.spec.version}"
        return self.base or "-"


def choose_base(
    found: BackendSet,
    options: CacheJob,
    git_urls: dict[str, str],
    onto: str | None,
    base: str | None,
    reporter: Reporter,
) -> BaseChoice:
    project = found.project
    if found.version is None and found.commit is None:
        return _named_by_user(found, onto, base)
    reason = "no commit is pinned"
    stored = reason  # the same, as base.toml may hold it: no machine path
    backend = found.backend_info
    mirror = git_urls.get(found.backend)
    if found.commit is not None and backend is not None:
        spec = NewBaseSpec(
            project,
            _label(found, options),
            git_url=str(GitUrl(backend.repository)),
            git_commit=found.commit,
            fetch_from=mirror,
        )
        try:
            resolve_new_base(
                spec, options.store, found.device, options.cache, reporter, options.archive_paths
            )
            return BaseChoice(spec, note=_label_note(found, spec))
        except (NetworkError, NotFoundError) as error:
            reason = stored = error.message.splitlines()[0]
            if mirror is not None:  # a machine path stays out of the store's note
                for spelling in (GitUrl(mirror).location(Path.cwd()), mirror):
                    stored = stored.replace(spelling, f"<the --git-url of {found.backend}>")
    pinned = f"commit {found.commit}" if found.commit else "no commit"
    if found.version is None:
        what = (
            f"{quoted(found.version_text)} is a branch or tag, not a release"
            if found.version_text
            else f"diff.yaml names no {project} release"
        )
        raise NotFoundError(
            f"{found.source}: no base to import onto: FlagScale pins {project} at {pinned}, "
            f"which cannot be used ({reason}), and {what} with an sdist to fall back on",
            hint=f"Pass --git-url {found.backend}=URL naming a repository (or a local clone) "
            "that holds the commit.",
        )
    if backend is None or backend.sdist is None:
        raise NotFoundError(
            f"{found.source}: no base to import onto: FlagScale pins {project} at {pinned}, "
            f"which cannot be used ({reason}), and {project} publishes no sdist patchtool "
            "takes as a base",
            hint=f"Pass --git-url {found.backend}=URL naming a repository (or a local clone) "
            "that holds the commit.",
        )
    strip_extra = 0
    if backend.sdist_root:
        outside = [
            f.path
            for g in found.groups
            for f in g.files
            if not f.path.startswith(backend.sdist_root)
        ]
        if outside:
            raise NotFoundError(
                f"{found.source}: the pinned commit cannot be used ({reason}), and the "
                f"{backend.sdist} sdist holds only the repository's {backend.sdist_root} folder: "
                f"{len(outside)} of the set's files lie outside it (first: {outside[0]})",
                hint=f"Pass --git-url {found.backend}=URL naming a repository (or a local "
                "clone) that holds the commit.",
            )
        strip_extra = backend.sdist_root.rstrip("/").count("/") + 1
    layout = f", whose top is the repository's {backend.sdist_root} folder" if strip_extra else ""
    spec = NewBaseSpec(backend.sdist, found.version)
    if found.commit is None:  # the release is the base FlagScale names
        note = f"the released sdist of {found.version}{layout}" if strip_extra else ""
        return BaseChoice(spec, note=note, strip_extra=strip_extra)
    instead = f"this base is the released sdist of {found.version} instead{layout}"
    why = f"FlagScale pins {project} at {pinned}, which could not be used"
    reporter.warn(f"{found.device}/{found.backend}: {why} ({reason}); {instead}")
    return BaseChoice(spec, note=f"{why} ({stored}); {instead}", strip_extra=strip_extra)


def _named_by_user(found: BackendSet, onto: str | None, base: str | None) -> BaseChoice:
    note = f"FlagScale names no {found.project} base for {found.source}"
    if base is not None:
        return BaseChoice(base=base, note=f"{note}: --commit-id named it")
    if onto is not None:
        spec = parse_onto(onto, found.project)
        return BaseChoice(spec, note=f"{note}: --onto named it")
    named = (
        f" ({quoted(found.version_text)} is a branch or tag, not a release, and no commit is "
        "pinned)"
        if found.version_text
        else ""
    )
    raise UsageError(
        f"{found.source}: FlagScale names no {found.project} base for it{named}",
        hint="Name the base with --onto VERSION (a new base, e.g. --onto 0.7.2) or --commit-id "
        "BASE (one the device has).",
    )


def _label(found: BackendSet, options: CacheJob) -> str:
    """The version label of the set's git base: the one a base of the store with
    the same project and commit has, else the release diff.yaml names, else the
    commit's first 12 digits."""
    assert found.commit is not None
    for device in options.store.device_names():
        for base in options.store.bases(device):
            if base.project == found.project and base.commit == found.commit:
                return base.version
    return found.version or found.commit[:12]


def _label_note(found: BackendSet, spec: NewBaseSpec) -> str:
    if found.version is not None and found.version != spec.version:
        return (
            f"FlagScale names this commit {found.project} {found.version} here; the store "
            f"already calls it {spec.version}"
        )
    return ""
