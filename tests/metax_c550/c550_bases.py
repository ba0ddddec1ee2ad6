"""The bases of the store's metax_C550 series, and which tests run on which.

The series was written for vLLM 0.7.2 (HOME_BASE) and carried to newer bases
by `patchtool rebase`. A test marked `carried` (or one of its parameters
marked so) runs on every base; every other test on 0.7.2 only. What a base's
tree has (vLLM 0.8's fused_experts, the series' prefill kernel) is known from
the store before any tree is built, which is when pytest deselects the tests
a tree lacks the code for; SeriesBase.check holds each built tree to it."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPOSITORY = Path(__file__).resolve().parents[2]
SERIES = REPOSITORY / "patches" / "metax_C550"
FUSED_MOE = Path("vllm/model_executor/layers/fused_moe/fused_moe.py")
HOME_BASE = "0.7.2"  # the tree `real_vllm` makes: the base the kernels were written on
MARKERS = ("vllm_08", "prefill_kernel")


@dataclass(frozen=True)
class SeriesBase:
    """A base of metax_C550, and which of the markers' code its tree has."""

    version: str
    vllm_08: bool  # fused_experts has expert_map and int8 w8a8 (vLLM 0.8 on)
    prefill_kernel: bool  # the series carries fused_moe_prefill_kernel to it

    def lacks(self) -> set[str]:
        """The markers whose tests are deselected on this base."""
        return {name for name in MARKERS if not getattr(self, name)}

    def check(self, tree: Path) -> None:
        """The built tree has what the collection assumed."""
        found = found_in(tree, self.version)
        assert found == self, f"{tree}: the tree is {found}; the collection assumed {self}"


def found_in(tree: Path, version: str) -> SeriesBase:
    """What a tree's fused_moe.py has (for a tree given by PATCHTOOL_C550_TREE,
    this is what decides)."""
    source = (tree / FUSED_MOE).read_text("utf-8")
    return SeriesBase(version, "expert_map" in source, "fused_moe_prefill_kernel" in source)


def series_bases() -> dict[str, SeriesBase]:
    """The store's bases of metax_C550 by version: vLLM's own version says
    whether fused_experts is 0.8's, the series' patches whether it carries the
    prefill kernel."""
    bases = {}
    for folder in sorted(SERIES.glob("vllm-*")):
        version = tomllib.loads((folder / "base.toml").read_text())["version"]
        names = [line for line in (folder / "series").read_text().splitlines()
                 if line and not line.startswith("#")]  # fmt: skip
        prefill = any("+def fused_moe_prefill_kernel(" in (folder / name).read_text()
                      for name in names)  # fmt: skip
        major, minor = (int(part) for part in version.split(".")[:2])
        bases[version] = SeriesBase(version, (major, minor) >= (0, 8), prefill)
    return bases


def is_carried(marks: Iterable[Any]) -> bool:
    """Whether a test's marks (pytest Marks) carry it to every base: a `carried`
    mark, or a parameter of a `parametrize` mark marked `carried`."""
    for mark in marks:
        if mark.name == "carried":
            return True
        if mark.name == "parametrize":
            values = mark.args[1] if len(mark.args) > 1 else mark.kwargs.get("argvalues", ())
            if any(m.name == "carried" for value in values for m in getattr(value, "marks", ())):
                return True
    return False
