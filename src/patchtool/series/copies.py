"""How much a series' copy and rename sections make git read and write again,
bounded before git reads the series (`check_copies`, called where a series is
applied or committed). A bound, not a reading: which of its names git takes
does not matter here, as every candidate counts at its largest."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from patchtool.core.errors import IntegrityError
from patchtool.core.fsutil import shown_path
from patchtool.core.gitops import Git
from patchtool.core.gitpatch import git_text, unquote
from patchtool.series.binary import binary_hunks
from patchtool.series.safety import GITLINK_MODE
from patchtool.store.model import PatchLimits, limit_hint

# A `copy from`/`copy to` section is a hundred bytes of patch that make git read
# its source whole into memory and write it again; two thousand of them
# amplify one large base file without bound. The extended header lines that
# make a section a copy or a rename, as git reads them (apply.c: a line starts
# with the keyword; a later line of a kind overrides an earlier one).
_SECTION_START = re.compile(rb"^diff --git ", re.M)
_COPY_LINE = re.compile(
    rb"^(copy from|copy to|rename from|rename to|rename old|rename new) (.*)$", re.M
)
_SOURCE_KEYWORDS = (b"copy from", b"rename from", b"rename old")

COPY_WHAT = (
    "Nothing was applied. git reads each copied or renamed file whole into memory "
    "and writes it again: copy fewer files"
)


@dataclass(frozen=True)
class CopySection:
    line: int  # its `diff --git` line, from 1
    sources: tuple[str, ...]  # every name a source line gives (git takes the last)
    target: str  # the name its last `copy to`/`rename to` line gives ("" if none)


def copy_sections(data: bytes) -> list[CopySection]:
    """Every section of `data` with a copy or rename line, with the names those
    lines give. A bound, not git's reading: a section git reads as a copy starts
    with `diff --git` and holds such a line; which of its names git takes does
    not matter to the caller, which counts the largest."""
    starts = [match.start() for match in _SECTION_START.finditer(data)]
    sections: list[CopySection] = []
    line = 1
    counted = 0
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(data)
        found = list(_COPY_LINE.finditer(data, start, end))
        if not found:
            continue
        line += data.count(b"\n", counted, start)
        counted = start
        sources = tuple(_c_name(m[2]) for m in found if m[1] in _SOURCE_KEYWORDS)
        targets = [_c_name(m[2]) for m in found if m[1] not in _SOURCE_KEYWORDS]
        sections.append(CopySection(line, sources, targets[-1] if targets else ""))
    return sections


def _c_name(raw: bytes) -> str:
    """A name as git writes it in a header line (C-quoted when it starts with `"`),
    read by git's one quoted-name reader (core/gitpatch.unquote)."""
    return unquote(git_text(raw.rstrip(b"\r")))


def check_copies(
    git: Git,
    base: dict[str, tuple[str, str]],
    patches: Sequence[tuple[str, bytes]],
    limits: PatchLimits,
) -> None:
    """Refuse a series whose copy and rename sections make git produce more than
    `copy-patch-bytes` in one patch or `copy-series-bytes` in all (exit 6),
    before git reads it. `base` is the tree the series applies to (path -> mode,
    blob id: `TreeJudge.entries` of the base); `patches` are (label, bytes).

    Each section counts the largest file it could copy: a source's size in the
    base (from its blob's header), or the size an earlier copy gave it, plus
    what every patch so far could have added to any file (its bytes and its
    binary hunks' declared sizes); a source that is neither counts as the
    largest file the tree can hold by then. An upper bound, never less than
    what git writes."""
    found = [(label, data, copy_sections(data)) for label, data in patches]
    if not any(sections for _, _, sections in found):
        return
    sizes = _base_sizes(git, base)
    largest_base = max(sizes.values(), default=0)
    produced: dict[str, int] = {}
    growth = series_total = 0
    for label, data, sections in found:
        growth += len(data) + _declared_binary(data)
        patch_total = 0
        for section in sections:
            known = [produced.get(name, sizes.get(name)) for name in section.sources]
            origin = [size for size in known if size is not None]
            if not origin:
                origin = [max(largest_base, max(produced.values(), default=0))]
            size = max(origin) + growth
            patch_total += size
            series_total += size
            if section.target:
                produced[section.target] = max(origin)
            where = (
                f"{label}: line {section.line}: the copy or rename to "
                f"{shown_path(section.target or '?')}"
            )
            if patch_total > limits.copy_patch_bytes:
                raise IntegrityError(
                    f"{where} makes its copies and renames {patch_total} bytes together, "
                    f"more than the limit of {limits.copy_patch_bytes}",
                    hint=limit_hint("copy-patch-bytes", COPY_WHAT),
                )
            if series_total > limits.copy_series_bytes:
                raise IntegrityError(
                    f"{where} makes the series' copies and renames {series_total} bytes "
                    f"together, more than the limit of {limits.copy_series_bytes}",
                    hint=limit_hint("copy-series-bytes", COPY_WHAT),
                )


def _declared_binary(data: bytes) -> int:
    """What `data`'s binary hunks declare they inflate to, together (a delta
    whose header cannot be read was refused by check_size)."""
    return sum(
        declared
        for hunk in binary_hunks(data)
        if hunk.kind == "literal" or hunk.result is not None
        for _, declared in hunk.sizes()
    )


def _base_sizes(git: Git, base: dict[str, tuple[str, str]]) -> dict[str, int]:
    """path -> size of every file and link of `base`, from one `cat-file --batch-check`."""
    oids = sorted({oid for mode, oid in base.values() if mode != GITLINK_MODE})
    if not oids:
        return {}
    out = git.run("cat-file", "--batch-check", input="".join(f"{o}\n" for o in oids).encode())
    by_oid: dict[str, int] = {}
    for line in out.stdout.decode("ascii", "replace").splitlines():
        fields = line.split(" ")
        if len(fields) == 3 and fields[2].isdigit():
            by_oid[fields[0]] = int(fields[2])
    return {path: by_oid.get(oid, 0) for path, (mode, oid) in base.items() if mode != GITLINK_MODE}
