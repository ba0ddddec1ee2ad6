"""Named kill points for fault-injection tests.

`kill_point("unpatch:before-swap")` does nothing unless the environment variable
PATCHTOOL_KILL_AT names that point; then the process kills itself with SIGKILL,
exactly as an out-of-memory killer or a cancelled CI job would. The tests use
this to prove that a run killed at any point leaves the store and the previous
build tree intact, and that the next run recovers without help.
"""

from __future__ import annotations

import os
import signal

VARIABLE = "PATCHTOOL_KILL_AT"


def kill_point(name: str) -> None:
    if os.environ.get(VARIABLE) == name:
        os.kill(os.getpid(), signal.SIGKILL)


PAUSE_VARIABLE = "PATCHTOOL_PAUSE_AT"
PAUSE_FOLDER_VARIABLE = "PATCHTOOL_PAUSE_DIR"


def pause_point(name: str) -> None:
    """Stop at a named point until a test lets the run go on, to act between two
    steps of a run (a commit made in a tree while unpatch replaces it).

    When PATCHTOOL_PAUSE_AT names the point, the run writes a line to the FIFO
    `$PATCHTOOL_PAUSE_DIR/reached` (blocking until the test reads it) and then
    waits to read the FIFO `$PATCHTOOL_PAUSE_DIR/resume`. No timing involved."""
    if os.environ.get(PAUSE_VARIABLE) != name:
        return
    folder = os.environ[PAUSE_FOLDER_VARIABLE]
    with open(os.path.join(folder, "reached"), "w") as reached:
        reached.write(name + "\n")
    with open(os.path.join(folder, "resume")) as resume:
        resume.read()
