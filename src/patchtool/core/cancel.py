"""Cancellation of a run: one process-wide event, and what stops when it is set.

The cli sets it on SIGTERM or SIGINT (`request`). The main thread then unwinds
through its `finally`s; this module makes the rest stop too, within a few
seconds, instead of at the end of whatever it was waiting for:

- every child started by `children.run` is terminated (SIGTERM, then SIGKILL
  after a grace period), and no new one starts in a worker thread (`Cancelled`
  instead). The main thread is already unwinding (the signal handler raised
  there), and its clean-up may need git: a child it starts then runs;
- every network fetch being watched (sources/index/transport.py's `Watch`) has
  its socket shut down, which ends a read blocked in any thread;
- worker threads (check's and the forecast's) see `Cancelled` at their next
  child or fetch, and `requested()` wherever they look.

`Cancelled` is a BaseException, not a PatchtoolError: no `except PatchtoolError`
(or `except Exception`) may take it for a failed check and go on.

This module prints nothing and imports nothing of patchtool's.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

_event = threading.Event()
# What `request` stops: callbacks registered by `on_cancel`, each called once.
_hooks: dict[int, Callable[[], None]] = {}
# Re-entrant: `request` runs in a signal handler, which may interrupt the main
# thread while it holds the lock in `on_cancel`.
_lock = threading.RLock()
_counter = iter(range(1 << 62))


class Cancelled(BaseException):
    """The run was cancelled (SIGTERM, SIGINT) while this thread was working."""


def requested() -> bool:
    return _event.is_set()


def raise_if_requested() -> None:
    """Raise Cancelled in a worker thread of a cancelled run. The main thread
    goes on: it is unwinding already, through clean-up that must run."""
    if _event.is_set() and threading.current_thread() is not threading.main_thread():
        raise Cancelled()


def request() -> None:
    """Cancel the run: set the event and call every registered hook (each once;
    a hook that fails does not keep the others from running)."""
    _event.set()
    with _lock:
        hooks = list(_hooks.values())
        _hooks.clear()
    for hook in hooks:
        with contextlib.suppress(Exception):
            hook()


def reset() -> None:
    """A new run in this process (tests, embedding): not cancelled."""
    with _lock:
        _event.clear()
        _hooks.clear()


def wait(seconds: float) -> bool:
    """Wait up to `seconds`; True if the run was cancelled meanwhile."""
    return _event.wait(seconds)


@contextlib.contextmanager
def on_cancel(hook: Callable[[], None]) -> Iterator[None]:
    """Call `hook` if the run is cancelled while the block runs (at once if it
    already was). It is called from the thread that cancels, so it must not
    block: shut a socket down, send a signal. What starts after the run was
    cancelled (clean-up) is not stopped: the hook is not registered then."""
    if _event.is_set():
        yield
        return
    with _lock:
        key = next(_counter)
        _hooks[key] = hook
        # Cancelled between the test above and here: `request` took the hooks
        # before this one was in, so it is called here.
        missed = _event.is_set()
        if missed:
            del _hooks[key]
    if missed:
        with contextlib.suppress(Exception):
            hook()
    try:
        yield
    finally:
        with _lock:
            _hooks.pop(key, None)
