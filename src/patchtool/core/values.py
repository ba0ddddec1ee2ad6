"""Typed readers of the values of a parsed configuration table (TOML), and the
one "did you mean" of every unknown name.

Each reader names the file and the key of a value that is missing, of the wrong
type or out of bounds (IntegrityError, exit 6). Reads no file itself.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from patchtool.core.errors import IntegrityError, UnsafeInputError, quoted
from patchtool.core.fsutil import check_name

# A project name as PEP 508 spells it; at most this many in skip-build-requires.
_PROJECT_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,98}[A-Za-z0-9])?$")
_SKIP_BUILD_REQUIRES_LIMIT = 32
# A name PEP 503 leaves as it is: lower case, single dashes between its parts.
_CANONICAL_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def canonical_name(name: str) -> str:
    """A project's name as PEP 503 puts it (`Setuptools_SCM` is `setuptools-scm`):
    packaging.utils.canonicalize_name, the one normalisation. A name that is
    already canonical (most are) is returned as it is, without importing
    packaging.utils, whose import costs every command that reads a device.toml."""
    if _CANONICAL_NAME.fullmatch(name):
        return name
    from packaging.utils import canonicalize_name

    return str(canonicalize_name(name))


def did_you_mean(value: str, choices: Iterable[str]) -> str:
    """The one "did you mean" of an unknown name, in one wording: the choice
    closest to `value` (difflib's closest match) as `; did you mean 'x'?`, to
    end the sentence that names the unknown value; "" when no choice is close."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    if not close:
        return ""
    return f"; did you mean {quoted(close[0])}?"


def check_keys(path: Path, table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    for key in table:
        if key not in allowed:
            suggestion = did_you_mean(key, sorted(allowed))
            valid = ", ".join(sorted(allowed))
            raise IntegrityError(
                f"{path}: unknown key {where}{quoted(key)}{suggestion}",
                hint=f"Valid keys here: {valid}.",
            )


def require(path: Path, table: Mapping[str, Any], key: str, kind: type, where: str = "") -> Any:
    if key not in table:
        raise IntegrityError(f"{path}: missing key {where}{quoted(key)}")
    value = table[key]
    if not isinstance(value, kind):
        raise IntegrityError(
            f"{path}: key {where}{quoted(key)} must be a {kind.__name__}, "
            f"not {type(value).__name__}"
        )
    return value


def string_list(path: Path, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise IntegrityError(f"{path}: key {where}{quoted(key)} must be a list of strings")
    return tuple(value)


def project_names(path: Path, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    """A short list of project names, canonical (PEP 503: `Setuptools_SCM` is
    `setuptools-scm`), each once."""
    names = string_list(path, table, key, where)
    if len(names) > _SKIP_BUILD_REQUIRES_LIMIT:
        raise IntegrityError(
            f"{path}: key {where}{quoted(key)} lists {len(names)} names; "
            f"at most {_SKIP_BUILD_REQUIRES_LIMIT} are allowed"
        )
    canonical: list[str] = []
    for name in names:
        if not _PROJECT_NAME.match(name):
            raise IntegrityError(
                f"{path}: key {where}{quoted(key)} holds {quoted(name)}, "
                "which is not a project name",
                hint="Give names as in pyproject.toml's [build-system] requires, "
                'without versions, e.g. "cmake".',
            )
        name = canonical_name(name)
        if name not in canonical:
            canonical.append(name)
    return tuple(canonical)


def bounded_int(
    path: Path,
    table: Mapping[str, Any],
    key: str,
    where: str,
    default: int,
    low: int,
    high: int,
) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise IntegrityError(
            f"{path}: key {where}{quoted(key)} must be a whole number from {low} to {high}, "
            f"not {quoted(value)}"
        )
    return value


def subtable(path: Path, data: Mapping[str, Any], key: str) -> dict[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise IntegrityError(f"{path}: [{key}] must be a table")
    return table


def optional(
    path: Path, table: Mapping[str, Any], key: str, kind: type, where: str, default: Any
) -> Any:
    return require(path, table, key, kind, where) if key in table else default


def safe_name(path: Path, kind: str, value: str) -> str:
    """A name that becomes a path component (cache repository, build tree, base
    folder): refused with the store file named."""
    try:
        return check_name(kind, value)
    except UnsafeInputError as error:
        raise UnsafeInputError(f"{path}: {error.message}", error.hint) from None
