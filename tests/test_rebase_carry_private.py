"""Private patches in a carry and a forecast: they take part with the key (the
stored ciphertext kept byte for byte when the patch is kept), a carry without
the key is refused as a rebase is (exit 3), and a forecast names a private
patch's conflict by its positions only.

The world is test_private.py's: devA on demo 1.0 with a.patch, a private
patch (the decode path: function_20 and demo/decode.py) and c.patch.
"""

from __future__ import annotations

import json

from helpers import commit_all, make_sdist
from test_private import MARKER, PrivateWorld, private  # noqa: F401 (fixture)
from test_rebase import demo_11_files
from test_rebase_kill import demo_12_files


def folder_files(world: PrivateWorld, version: str) -> dict[str, bytes]:
    folder = world.world.store / "devA" / f"demo-{version}"
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if ".patch" in p.name}


def test_private_patches_are_carried_with_the_key_and_refused_without(
    private: PrivateWorld,  # noqa: F811
) -> None:
    world = private
    build = str(world.world.build)
    for version, files in (("1.1", demo_11_files()), ("1.2", demo_12_files())):
        make_sdist(world.world.sdist.parent / f"demo-{version}.tar.gz", f"demo-{version}", files,
                   modes={"tools/run.sh": 0o755})  # fmt: skip
    moved = world.cli("rebase", "-d", "devA", "--dir", build, "--onto", "1.1",
                      identity=world.identity)  # fmt: skip
    assert moved.code == 0, moved.output
    before = folder_files(world, "1.1")
    assert any(name.endswith(".patch.age") for name in before)

    assert world.cli("unpatch", "-d", "devA", "--dir", build, "-c", "1.0",
                     identity=world.identity).code == 0  # fmt: skip
    core = world.tree / "demo" / "core.py"
    core.write_text(core.read_text().replace("return 5\n", "return 'five'\n"))
    commit_all(world.tree, "Return words from function_5")
    exported = world.cli("patch", "-d", "devA", "--dir", build, identity=world.identity)
    assert exported.code == 0, exported.output

    refused = world.cli("rebase", "-d", "devA", "--dir", build, "-c", "1.0", "--onto", "1.1")
    assert refused.code == 3, refused.output
    assert "private patch(es) need a key to read" in refused.stderr
    assert folder_files(world, "1.1") == before

    carried = world.cli("rebase", "-d", "devA", "--dir", build, "-c", "1.0", "--onto", "1.1",
                        identity=world.identity)  # fmt: skip
    assert carried.code == 0, carried.output
    after = folder_files(world, "1.1")
    assert {n: after[n] for n in before} == before  # the ciphertext too
    assert "return-words-from-function-5.patch" in after
    report = (world.world.store / "devA" / "demo-1.1" / "rebase-report.md").read_text()
    assert MARKER not in report

    forecast = world.cli("rebase", "-d", "devA", "--dir", build, "-c", "1.0", "--onto", "1.2",
                         "--dry-run", "--json", identity=world.identity)  # fmt: skip
    assert forecast.code == 4, forecast.output
    (entry,) = json.loads(forecast.stdout)["forecasts"]
    conflicting = [p for p in entry["patches"] if p["outcome"] == "conflict"]
    assert [(p["private"], p["conflicts"]) for p in conflicting] == [
        (True, ["file 1: 1 conflict hunk(s) at lines 62-66"])
    ]
    assert MARKER not in forecast.stdout and "demo/core.py" not in forecast.stdout
