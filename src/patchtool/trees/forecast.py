"""A rebase forecast: how a series would carry onto another base, tried in a
scratch repository and never stopping.

The scratch is a repository of its own under a folder the caller owns
(`core/scratch`: locked, removed by its run or by the next one), borrowing the
cache repositories' objects (git alternates: the cache is only read). Nothing
is checked out: the series is applied to an index (`git apply --cached`) on
the old base, and each of its commits is merged onto the new base with
merge-ort (`git merge-tree --write-tree`, the merge a cherry-pick makes: the
picked commit's parent as the merge base), so a forecast costs git's merges
and not two checkouts of the whole tree. Each patch is:

    clean              merged, its diff unchanged (the same stable patch-id)
    3-way              merged, its diff changed (context or lines moved)
    conflict           not merged: each file and the line ranges of its
                       conflict hunks as merged; for a private patch the
                       positions only. It is left out and the next patch goes on.
    already upstream   merged to no change: the new base holds it
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchtool.core.errors import ConflictError, ExitCode, GitError
from patchtool.core.faults import kill_point
from patchtool.core.gitops import Git, tool_identity
from patchtool.core.report import Reporter
from patchtool.core.scratch import scratch_folder, scratch_root
from patchtool.series.privacy import Keyring, LoadedSeries, load_series
from patchtool.sources.bases import ensure_base, parse_onto, resolve_new_base
from patchtool.sources.cache import BaseCache
from patchtool.store.model import BaseRef, DeviceConfig
from patchtool.store.resolve import Store
from patchtool.store.series import parse_series
from patchtool.trees.picking import commit_patch_ids, conflict_ranges, describe_conflict_data

CLEAN, THREE_WAY, CONFLICT, UPSTREAM = "clean", "3-way", "conflict", "already upstream"
OUTCOMES = (CLEAN, THREE_WAY, CONFLICT, UPSTREAM)


@dataclass(frozen=True)
class PatchForecast:
    name: str
    subject: str
    outcome: str
    conflicts: tuple[str, ...] = ()  # per file: "path: N conflict hunk(s) at lines a-b, ..."
    private: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "patch": self.name,
            "subject": self.subject,
            "outcome": self.outcome,
            "private": self.private,
            "conflicts": list(self.conflicts),
        }


@dataclass(frozen=True)
class Forecast:
    device: str
    base: str  # the base id carried from
    onto: str  # the new base's id
    onto_commit: str
    patches: tuple[PatchForecast, ...]
    seconds: float = 0.0

    def totals(self) -> dict[str, int]:
        return {o: sum(1 for p in self.patches if p.outcome == o) for o in OUTCOMES}

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.CONFLICT if self.totals()[CONFLICT] else ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "base": self.base,
            "onto": self.onto,
            "onto_commit": self.onto_commit,
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": int(self.exit_code),
            "totals": self.totals(),
            "duration_s": round(self.seconds, 3),
            "patches": [p.to_json() for p in self.patches],
        }


def forecast_series(
    scratch: Path,
    old: BaseRef,
    loaded: LoadedSeries,
    new: BaseRef,
    repositories: tuple[Path, Path],
) -> Forecast:
    """Forecast carrying `loaded` (the series of `old`) onto `new`, in a scratch
    repository made in `scratch` (an empty folder the caller removes)."""
    started = time.perf_counter()
    repository = scratch / "forecast.git"
    Git(scratch).run("init", "--quiet", "--bare", str(repository))
    alternates = repository / "objects" / "info" / "alternates"
    alternates.write_text("".join(f"{r / 'objects'}\n" for r in dict.fromkeys(repositories)))
    identity = tool_identity("1970-01-01T00:00:00Z")
    git = Git(repository, env={**identity, "GIT_INDEX_FILE": str(scratch / "index")})
    git.run("read-tree", old.commit)
    parent = old.commit
    commits = []
    for patch in loaded.patches:
        applied = git.run("apply", "--cached", input=patch.data, check=False)
        if applied.returncode != 0:
            raise ConflictError(
                f"the series of {old.base_id} does not apply to its own base: {patch.label}",
                hint=f"`patchtool check -d {old.device} -c {old.base_id}` says why.",
            )
        tree = git.text("write-tree")
        parent = git.text("commit-tree", tree, "-p", parent, "-m", patch.entry.name)
        commits.append(parent)
    head = new.commit
    results: list[PatchForecast] = []
    picked: list[tuple[int, str, str]] = []  # (index, old commit, new commit)
    for index, (patch, commit) in enumerate(zip(loaded.patches, commits, strict=True)):
        subject = _subject(patch.data)
        base_of_pick = git.text("rev-parse", f"{commit}^")
        # merge-tree takes no merge base here (git < 2.40): "ours" is the head's
        # tree on the picked commit's parent, so that parent is the merge base.
        ours = git.text("commit-tree", f"{head}^{{tree}}", "-p", base_of_pick, "-m", "ours")
        merged = git.run(
            "merge-tree", "--write-tree", "--name-only", "--no-messages", ours, commit, check=False
        )
        lines = merged.text.splitlines()
        kill_point("forecast:merged")
        if merged.returncode == 1:
            results.append(
                PatchForecast(
                    patch.entry.name,
                    subject,
                    CONFLICT,
                    _conflicts(git, lines[0], [p for p in lines[1:] if p], patch.private),
                    patch.private,
                )
            )
            continue
        if merged.returncode != 0:
            raise GitError(["merge-tree", "--write-tree"], merged.returncode, merged.stderr)
        tree = lines[0]
        if tree == git.text("rev-parse", f"{head}^{{tree}}"):
            results.append(PatchForecast(patch.entry.name, subject, UPSTREAM, (), patch.private))
            continue
        head = git.text("commit-tree", tree, "-p", head, "-m", patch.entry.name)
        picked.append((index, commit, head))
        results.append(PatchForecast(patch.entry.name, subject, CLEAN, (), patch.private))
    ids = commit_patch_ids(git, [c for _, old_c, new_c in picked for c in (old_c, new_c)])
    for index, old_commit, new_commit in picked:
        if ids.get(old_commit) != ids.get(new_commit):
            results[index] = PatchForecast(
                results[index].name, results[index].subject, THREE_WAY, (), results[index].private
            )
    return Forecast(
        old.device,
        old.base_id,
        new.base_id,
        new.commit,
        tuple(results),
        time.perf_counter() - started,
    )


def _conflicts(git: Git, tree: str, paths: list[str], private: bool) -> tuple[str, ...]:
    found = []
    for number, path in enumerate(paths, start=1):
        blob = git.run("cat-file", "blob", f"{tree}:{path}", check=False)
        data = blob.stdout if blob.returncode == 0 else None
        name = f"file {number}" if private else path
        if data is not None and not conflict_ranges(data):
            # merge-tree keeps the changed side of a modify/delete conflict:
            # often a file an earlier patch, left out, would have made.
            found.append(f"{name}: changed here, deleted, renamed or binary on the other side")
        else:
            found.append(describe_conflict_data(name, data))
    return tuple(found)


def _subject(data: bytes) -> str:
    from patchtool.series.privacy import plaintext_subject

    return plaintext_subject(data)


def forecast_onto(
    job: ForecastJob, old: BaseRef, device: DeviceConfig, onto: str, reporter: Reporter
) -> Forecast:
    """The forecast of `old`'s series onto `onto` (a version, or git+URL@COMMIT):
    both bases into the cache (the only place written besides the scratch,
    which goes when the forecast ends), the series read (private patches with
    the key, as rebase reads them)."""
    spec = parse_onto(onto, old.project, job.version_label)
    series = parse_series(old, device.limits)
    loaded = load_series(series, device.limits, job.keyring, device.recipients, job.public_only)
    old_repository = ensure_base(old, job.cache, reporter, job.archive_paths, limits=device.limits)
    new = resolve_new_base(
        spec, job.store, old.device, job.cache, reporter, job.archive_paths, limits=device.limits
    )
    new_repository = ensure_base(new, job.cache, reporter, job.archive_paths, limits=device.limits)
    reporter.step(f"forecasting {old.device}/{old.base_id} onto {new.label}")
    with scratch_folder(scratch_root(job.cache.root), "forecast-") as folder:
        return forecast_series(folder, old, loaded, new, (old_repository, new_repository))


@dataclass(frozen=True)
class ForecastJob:
    """What a forecast reads besides the base: the store, the cache, local
    sdists, the key for private patches, a git base's version label."""

    store: Store
    cache: BaseCache
    archive_paths: tuple[Path, ...] = ()
    keyring: Keyring | None = None
    version_label: str | None = None
    public_only: bool = False  # leave private patches out instead of needing a key


# --------------------------------------------------------------------------- reports


def forecasts_json(forecasts: list[Forecast]) -> dict[str, Any]:
    """`--json`: every forecast (one per device and base), the worst exit code."""
    code = max((int(f.exit_code) for f in forecasts), default=0)
    return {"ok": code == 0, "exit_code": code, "forecasts": [f.to_json() for f in forecasts]}


def forecasts_markdown(forecasts: list[Forecast]) -> str:
    """A CI job summary: one table per device and base, with totals."""
    lines: list[str] = []
    for forecast in forecasts:
        totals = forecast.totals()
        summary = ", ".join(f"{n} {o}" for o, n in totals.items() if n) or "no patches"
        lines += [
            f"### {forecast.device}: {forecast.base} onto {forecast.onto}",
            "",
            f"{len(forecast.patches)} patches: {summary}.",
            "",
            "| # | patch | outcome | conflicts |",
            "| --- | --- | --- | --- |",
        ]
        for number, patch in enumerate(forecast.patches, start=1):
            where = "; ".join(patch.conflicts) or "-"
            lines.append(f"| {number} | {patch.name} | {patch.outcome} | {where} |")
        lines.append("")
    return "\n".join(lines)


def raise_for_conflicts(forecasts: list[Forecast]) -> None:
    """Exit 4 when some patch would conflict, naming them (the table says where)."""
    conflicting = [
        f"{f.device}/{f.base} {p.name}"
        for f in forecasts
        for p in f.patches
        if p.outcome == CONFLICT
    ]
    if conflicting:
        raise ConflictError(
            f"{len(conflicting)} patch(es) would conflict: " + ", ".join(conflicting),
            hint="The forecast above names each file and hunk; run the rebase without "
            "--dry-run to resolve them.",
        )
