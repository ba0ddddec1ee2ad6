"""What `rebase --dry-run` and `check --forecast` print: the forecasts as text,
JSON or Markdown, then exit 4 if a patch would conflict. One home, so that the
two commands print a forecast alike."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from patchtool.cli import context

if TYPE_CHECKING:
    from patchtool.trees.forecast import Forecast


def show_forecasts(found: list[Forecast], as_json: bool, markdown: bool) -> None:
    """Print the forecasts; raise (exit 4) if a patch of any would conflict."""
    from patchtool.trees.forecast import forecasts_json, forecasts_markdown, raise_for_conflicts

    if as_json:
        context.emit_json(forecasts_json(found))
    elif markdown:
        sys.stdout.write(forecasts_markdown(found))
    else:
        for forecast in found:
            totals = ", ".join(f"{n} {o}" for o, n in forecast.totals().items() if n)
            head = f"{forecast.device}  {forecast.base} -> {forecast.onto}"
            print(f"{head}: {totals or 'no patches'}")
            for number, patch in enumerate(forecast.patches, start=1):
                print(f"  {number:>3}  {patch.outcome:16}  {patch.name}")
                for conflict in patch.conflicts:
                    print(f"         {conflict}")
    raise_for_conflicts(found)
