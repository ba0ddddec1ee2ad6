"""Named kill points for fault-injection tests.

`kill_point("export:after-stage")` does nothing unless the environment variable
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
