"""typer, imported without rich: every cli module takes `typer` from here.

typer imports rich (and with it rich.markdown, pygments' lexers, markdown_it) as
it loads, about half of patchtool's start-up, though rich only renders help and
usage errors. Here typer is loaded while `import rich` fails, and the two names
typer.core keeps for rich are filled with stand-ins that import the real rich and
typer.rich_utils the first time they are read. A run that shows help or a usage
error then renders exactly as typer always does; any other run never loads them.

typer treats the app's markup mode alike either way: its `Default(...)` marker is
compared only with "rich", "markdown" and None, which it never equals. If typer
was imported before this module (a test, an embedding program), it is used as it
is. tests/test_cli_start.py checks that help and usage errors are the same bytes
both ways.
"""

from __future__ import annotations

import sys
from typing import Any

# The names typer.core gives rich and typer.rich_utils (typer 0.15; the test checks).
RICH_NAMES = ("rich", "rich_utils")


class _RichOnFirstUse:
    """Stands for `rich` or `typer.rich_utils` in typer.core until read."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        import rich
        import typer.core
        import typer.rich_utils

        for name, module in zip(RICH_NAMES, (rich, typer.rich_utils), strict=True):
            setattr(typer.core, name, module)
        return getattr(getattr(typer.core, self._name), attribute)


def _import_typer_without_rich() -> None:
    if "typer" in sys.modules:
        return
    before = sys.modules.get("rich")
    sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` raises ImportError
    try:
        import typer.core
    finally:
        if before is None:
            del sys.modules["rich"]
        else:
            sys.modules["rich"] = before
    for name in RICH_NAMES:
        if getattr(typer.core, name, None) is None:
            setattr(typer.core, name, _RichOnFirstUse(name))


_import_typer_without_rich()

import typer  # noqa: E402

__all__ = ["typer"]
