"""The one reporting interface between the core and the person running it.

The core calls `Reporter` methods; it never prints. The CLI passes a
`RichReporter`, which renders on stderr so that stdout stays free for
results and `--json`. A test that calls the core directly (not through the
CLI) may pass a `RecordingReporter` and read what was reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Reporter(Protocol):
    def step(self, message: str) -> None:
        """A stage of the work starts (shown as a progress line)."""

    def info(self, message: str) -> None:
        """Something worth knowing that is not a problem."""

    def warn(self, message: str) -> None:
        """Something the user should look at; the run goes on."""


class NullReporter:
    def step(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warn(self, message: str) -> None:
        pass


@dataclass
class RecordingReporter:
    lines: list[tuple[str, str]] = field(default_factory=list)

    def step(self, message: str) -> None:
        self.lines.append(("step", message))

    def info(self, message: str) -> None:
        self.lines.append(("info", message))

    def warn(self, message: str) -> None:
        self.lines.append(("warn", message))

    def text(self) -> str:
        return "\n".join(message for _, message in self.lines)


class RichReporter:
    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.console = Console(stderr=True, highlight=False, soft_wrap=True)
        self.quiet = quiet

    def step(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[bold cyan]»[/] {_escape(message)}", markup=True)

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def warn(self, message: str) -> None:
        self.console.print(f"[bold yellow]warning:[/] {_escape(message)}", markup=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)
