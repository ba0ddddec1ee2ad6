"""YAML of the FlagScale tree and the typed values read from it.

A YAML file is read with PyYAML's safe loader and without anchors and aliases:
an alias repeats a node without its bytes, so a file of a few hundred bytes
nests aliases into billions of values (FlagScale's files have no use for
them). Every value that reaches a message or the terminal is one line without
control characters, and bounded.
"""

from __future__ import annotations

import re
import unicodedata

import yaml

from patchtool.core.errors import IntegrityError, quoted
from patchtool.vendors.flagscale.model import TEXT_LIMIT

_FULL_COMMIT = re.compile(r"^[0-9a-fA-F]{40}$")


class _AliasRefused(Exception):
    def __init__(self, line: int, what: str) -> None:
        super().__init__(what)
        self.line = line
        self.what = what


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with a composer that refuses an alias (`*name`) or an
    anchor (`&name`) where it meets one, before any node is built from it."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else 0
        if isinstance(event, yaml.AliasEvent):
            raise _AliasRefused(line, f"the alias {quoted('*' + str(event.anchor), 40)}")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _AliasRefused(line, f"the anchor {quoted('&' + str(anchor), 40)}")
        return super().compose_node(parent, index)  # type: ignore[arg-type]


def load_yaml(data: bytes, source: str) -> object:
    """A YAML file of the tree (UTF-8), as plain values."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise IntegrityError(
            f"{source}: is not UTF-8 text (byte {error.start})", hint="The file is damaged."
        ) from error
    try:
        loader = _NoAliasLoader(text)
        try:
            loaded: object = loader.get_single_data()
        finally:
            loader.dispose()
        return loaded
    except _AliasRefused as refused:
        raise IntegrityError(
            f"{source}: line {refused.line}: {refused.what}; patchtool reads YAML without "
            "anchors and aliases",
            hint="Write the value out where it is used: an alias can make a small file "
            "expand without bound.",
        ) from None
    except yaml.YAMLError as error:
        detail = str(error).splitlines()
        raise IntegrityError(f"{source}: not valid YAML: {' '.join(detail[:2])}") from error
    except RecursionError as error:
        raise IntegrityError(f"{source}: YAML nested too deeply") from error
    except ValueError as error:  # an integer of more digits than Python converts
        raise IntegrityError(f"{source}: not valid YAML: {quoted(str(error), 80)}") from error


def mapping(value: object, source: str, key: str) -> dict[object, object]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise IntegrityError(f"{source}: {key or 'the file'} must be a mapping")
    return value


def string_keys(value: dict[object, object], source: str, key: str) -> dict[str, object]:
    for name in value:
        if not isinstance(name, str):
            raise IntegrityError(
                f"{source}: {key or 'the file'} has a key {quoted(name)} that is not text"
            )
    return {str(name): item for name, item in value.items()}


def items(value: object, source: str, key: str) -> list[object]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise IntegrityError(f"{source}: {key} must be a list")
    return value


def string(value: object, source: str, key: str) -> str:
    if not isinstance(value, str):
        kind = "a number" if isinstance(value, (int, float)) else type(value).__name__
        raise IntegrityError(
            f"{source}: {key} is {kind} ({quoted(value)}), not text",
            hint="Quote the value in the YAML file (a version such as 0.10 reads as a number).",
        )
    return value


def string_list(value: object, source: str, key: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    return [string(item, source, key) for item in items(value, source, key)]


def line(value: str, source: str, key: str) -> str:
    """Free text from the tree that reaches messages and the terminal: one line, no
    control or format characters, bounded."""
    problem = text_problem(value)
    if problem is None and len(value) > TEXT_LIMIT:
        problem = f"is longer than {TEXT_LIMIT} characters"
    if problem is not None:
        raise IntegrityError(f"{source}: {key} {quoted(value, 40)} {problem}")
    return value


def text_problem(value: str) -> str | None:
    for character in value:
        category = unicodedata.category(character)
        if category in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            return f"holds the control character U+{ord(character):04X}"
    return None


def full_commit(value: object, source: str, key: str) -> str:
    if not isinstance(value, str) or not _FULL_COMMIT.match(value):
        raise IntegrityError(
            f"{source}: {key} {quoted(value)} is not a full 40-digit commit id",
            hint="FlagScale records full commit ids; a short one is ambiguous.",
        )
    return value.lower()
