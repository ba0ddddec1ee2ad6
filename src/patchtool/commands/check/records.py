"""What `check` records: one `CheckRecord` per device, base and check, the
report they make, its exit code (the most serious present) and its hint."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from patchtool.core.errors import (
    ExitCode,
    PatchtoolError,
    error_class,
)
from patchtool.series.lint import (
    MESSAGE_ADVICE,
    MESSAGE_RULES,
    WHITESPACE_FIX,
    Rule,
)
from patchtool.store.model import (
    DEVICE_FILE,
)

OFFLINE_SKIP = "offline"  # skipped_summaries' reason for the records marked offline
CHECKS = ("config", "source", "series", "safety", "apply", "export", "lint")
_SEVERITY = (
    ExitCode.INTERNAL,  # a bug in patchtool (an offline check that reached the network)
    ExitCode.UNSAFE,
    ExitCode.INTEGRITY,
    ExitCode.NOT_FOUND,
    ExitCode.NETWORK,
    ExitCode.CONFLICT,
    ExitCode.STALE,
)


@dataclass(frozen=True)
class CheckRecord:
    device: str
    base: str  # "" for the device's own files
    check: str
    ok: bool
    details: tuple[str, ...] = ()
    exit_code: ExitCode = ExitCode.OK  # for a failure: the code its problem maps to
    # Not run: offline without the base's source, or an earlier check of the base
    # failed (its record carries the code), or the public part only.
    skipped: bool = False
    duration: float = 0.0  # seconds this check took (0 for one that did not run)
    # What to do about this failure: the hint of the error it records, or the one
    # its findings call for (lint); the run's hint is made of its records' own.
    hint: str | None = None
    # A skipped source record: offline, and the base's source is not in the cache.
    offline: bool = False

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "device": self.device,
            "base": self.base,
            "check": self.check,
            "ok": None if self.skipped else self.ok,
            "details": list(self.details),
            "duration_s": round(self.duration, 3),
        }
        if self.skipped:
            data["skipped"] = True
        return data


@dataclass
class CheckReport:
    records: list[CheckRecord] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckRecord]:
        return [r for r in self.records if not r.ok]

    def skipped_summaries(self) -> list[str]:
        """One line per reason bases went unchecked against their source: offline
        without it in the cache, or an earlier failure (base.toml invalid), each
        with the bases ("device/base") it kept from their source."""
        by_reason: dict[str, set[str]] = {}
        for r in self.records:
            if r.skipped and r.check == "source":
                reason = OFFLINE_SKIP if r.offline else r.details[0].removeprefix("not run: ")
                by_reason.setdefault(reason, set()).add(f"{r.device}/{r.base}")
        passed = not [r for r in self.failed if r.exit_code != ExitCode.OK]
        lines = []
        for reason, found in sorted(by_reason.items(), key=lambda item: item[0] != OFFLINE_SKIP):
            bases = sorted(found)
            if reason == OFFLINE_SKIP:
                lines.append(
                    f"offline: the source, safety, apply and export checks of {len(bases)} "
                    f"base(s) were skipped, their source is not in the cache: {', '.join(bases)}"
                    + ("; every check that ran passed" if passed else "")
                )
            else:
                checks = {
                    r.check for r in self.records if r.skipped and f"{r.device}/{r.base}" in found
                }
                named = [c for c in CHECKS if c in checks]
                lines.append(
                    f"the {', '.join(named[:-1])} and {named[-1]} checks of {len(bases)} base(s) "
                    f"were not run, {reason}: {', '.join(bases)}"
                )
        return lines

    @property
    def exit_code(self) -> ExitCode:
        return worst_code(self.records)

    def matrix(self) -> dict[str, Any]:
        """`check --json`: one entry per device and base, in the serial order, each
        with the command that checks it alone (a CI matrix's `include` list, the
        shape `list --json` gives), its outcome, exit code and duration, and its
        records (the device's own record heads every entry of the device). A
        device whose device.toml fails, or that has no base, is one entry with
        base null."""
        device_records: dict[str, list[CheckRecord]] = {}
        bases: dict[str, dict[str, list[CheckRecord]]] = {}
        for record in self.records:
            if not record.base:
                device_records.setdefault(record.device, []).append(record)
                bases.setdefault(record.device, {})
            else:
                bases.setdefault(record.device, {}).setdefault(record.base, []).append(record)
        entries = []
        for device, found in bases.items():
            own = device_records.get(device, [])
            groups: dict[str | None, list[CheckRecord]] = {None: []} if not found else {}
            groups.update(found)
            for base, records in groups.items():
                group = [*own, *records]
                command = f"patchtool check -d {device}"
                code = worst_code(group)
                entries.append(
                    {
                        "device": device,
                        "base": base,
                        "command": command + (f" --commit-id {base}" if base else ""),
                        "ok": code == ExitCode.OK,
                        "exit_code": int(code),
                        "duration_s": round(sum(r.duration for r in group), 3),
                        "checks": [r.to_json() for r in group],
                    }
                )
        return {
            "ok": self.exit_code == ExitCode.OK,
            "exit_code": int(self.exit_code),
            "include": entries,
        }

    def raise_for_failures(self) -> None:
        failed = [r for r in self.failed if r.exit_code != ExitCode.OK]
        if failed:
            names = ", ".join(f"{r.device}/{r.base or DEVICE_FILE} {r.check}" for r in failed)
            counted = f"{len(failed)} check(s) failed: {names}"
            hint = failure_hints(failed) or "Fix what the report above lists and run check again."
            if self.exit_code == ExitCode.INTERNAL:
                hint = "A check failed on a bug in patchtool: run again with --debug and report it."
            # The class of the most serious code: the exit code is the class's.
            raise error_class(self.exit_code)(counted, hint=hint)


def failure_hints(failed: list[CheckRecord]) -> str:
    """One line per distinct hint of the failures, each led by the devices and
    bases ("device/base", or the device for its own files) it came from, in
    the order first met; the lines after the first indented under `hint: `. One
    hint alone is not led: the error's line names every failure it came from."""
    sources: dict[str, list[str]] = {}
    for r in failed:
        if r.hint:
            where = f"{r.device}/{r.base}" if r.base else r.device
            found = sources.setdefault(r.hint, [])
            if where not in found:
                found.append(where)
    if len(sources) == 1:
        return next(iter(sources))
    lines = [f"{', '.join(where)}: {hint}" for hint, where in sources.items()]
    return "\n      ".join(lines)


def worst_code(records: list[CheckRecord]) -> ExitCode:
    """The most serious exit code among failed records (OK if none failed)."""
    codes = {r.exit_code for r in records if not r.ok and r.exit_code != ExitCode.OK}
    for code in _SEVERITY:
        if code in codes:
            return code
    return min(codes) if codes else ExitCode.OK


def lint_hint(device: str, base_id: str, rules: Collection[Rule]) -> str:
    """What fixes these lint findings, by their rules: a commit's message or lines
    are fixed in the build tree's commits; a private patch's recipients by an
    export, which encrypts it anew to device.toml's recipients."""
    tree = f"`patchtool unpatch --device-type {device} --commit-id {base_id}`"
    parts = []
    if set(rules) - {"recipients"}:
        parts.append(
            "Lint problems are fixed in the build tree's commits "
            f"({tree} makes the tree): `git commit --amend` for the last commit or "
            "`git rebase -i patchtool/base` (mark a commit `reword` for its message, `edit` "
            f"for its lines) for earlier ones, then `patchtool patch --device-type {device}`"
            + (
                f"; trailing whitespace goes from every commit at once with `{WHITESPACE_FIX}`"
                if "whitespace" in rules
                else ""
            )
            + (f"; {MESSAGE_ADVICE}" if set(rules) & MESSAGE_RULES else "")
            + "."
        )
    if "recipients" in rules:
        parts.append(
            "A private patch is encrypted anew to device.toml's recipients by an export: "
            f"make the tree with a key that opens it ({tree} --identity FILE), then run "
            f"`patchtool patch --device-type {device}` and commit the store."
        )
    return " ".join(parts)


def failure_record(device: str, base_id: str, check: str, error: PatchtoolError) -> CheckRecord:
    details = [*error.message.splitlines()]
    return CheckRecord(
        device, base_id, check, False, tuple(details), error.exit_code, hint=error.hint
    )


def skipped_records(
    device: str, base_id: str, checks: tuple[str, ...], why: str
) -> list[CheckRecord]:
    """Checks not run because an earlier one of the base failed: skipped (no code of
    their own; the failure that stopped them has one)."""
    return [
        CheckRecord(device, base_id, c, False, (f"not run: {why}",), skipped=True) for c in checks
    ]
