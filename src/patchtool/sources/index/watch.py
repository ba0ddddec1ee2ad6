"""How one fetch is watched: its total deadline, its low-speed floor and the
run's cancellation (core/cancel.py). The watch's timer thread stops a fetch by
shutting its sockets down, which ends a read blocked in any thread; the
connections of transport.py hand it their sockets as they connect.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any

from patchtool.core import cancel
from patchtool.core.errors import NetworkError
from patchtool.sources.index.settings import ENVIRONMENT, NetworkDeadlines

DEADLINE_HINT = (
    "Check the index (and the proxy) and the network; "
    f"{ENVIRONMENT['page_seconds']}, {ENVIRONMENT['low_speed_limit']} and "
    f"{ENVIRONMENT['low_speed_time']} set how long and how slow a fetch may be. On an "
    "air-gapped site pass the sdist with --sdist PATH."
)

class Watch:
    """One fetch, from its request to its last byte, watched from a timer thread:
    stopped when it runs past its deadline (`total` seconds), when fewer than
    low_speed_limit bytes a second arrive for low_speed_time seconds, or when the
    run is cancelled. Stopping shuts its sockets down, which ends a read blocked
    in any thread; the reader then calls `check`, which raises why.

    pip's `timeout` still bounds each single wait (connecting included); the
    watch bounds the whole."""

    def __init__(self, what: str, deadlines: NetworkDeadlines, total: float | None) -> None:
        self.what = what  # for messages: "the index page URL", redacted
        self._deadlines = deadlines
        self._total = total
        self._received = 0
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._stack = contextlib.ExitStack()
        self.reason: str | None = None  # "deadline", "slow" or "cancelled"

    def __enter__(self) -> Watch:
        cancel.raise_if_requested()
        self._stack.enter_context(cancel.on_cancel(lambda: self._stop("cancelled")))
        threading.Thread(target=self._run, name="patchtool-watch", daemon=True).start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        self._stack.close()

    def attach(self, sock: socket.socket) -> None:
        """A socket of this fetch (a redirect's too): shut down if it is stopped."""
        with self._lock:
            self._sockets.append(sock)
            stopped = self.reason is not None
        if stopped:
            _shut(sock)

    def count(self, received: int) -> None:
        """Bytes of the body that arrived (the reading thread is the only writer)."""
        self._received += received

    def check(self) -> None:
        """Raise why the fetch was stopped, if it was."""
        if self.reason == "cancelled":
            raise cancel.Cancelled()
        if self.reason == "deadline":
            raise NetworkError(
                f"{self.what} took more than {self._total:g} s; it was stopped",
                hint=DEADLINE_HINT,
            )
        if self.reason == "slow":
            raise NetworkError(
                f"{self.what} was stopped: fewer than {self._deadlines.low_speed_limit} bytes "
                f"a second arrived for {self._deadlines.low_speed_time:g} s",
                hint=DEADLINE_HINT,
            )

    def _stop(self, reason: str) -> None:
        with self._lock:
            if self.reason is not None:
                return
            self.reason = reason
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)

    def _run(self) -> None:
        window, floor = self._deadlines.low_speed_time, self._deadlines.low_speed_limit
        spans = [window] + ([self._total] if self._total is not None else [])
        tick = max(0.02, min(1.0, min(spans) / 10))
        start = time.monotonic()
        # (when, bytes received by then), the oldest one at most `window` old (or older)
        samples: deque[tuple[float, int]] = deque([(start, 0)])
        while not self._done.wait(tick):
            now, received = time.monotonic(), self._received
            if self._total is not None and now - start >= self._total:
                self._stop("deadline")
                return
            samples.append((now, received))
            while len(samples) > 1 and samples[1][0] <= now - window:
                samples.popleft()
            since, then = samples[0]
            if since <= now - window and received - then < floor * window:
                self._stop("slow")
                return


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


# The watch of the fetch this thread is opening: its connections attach their sockets.
opening = threading.local()


def _watched(base: type[http.client.HTTPConnection]) -> type[http.client.HTTPConnection]:
    """`base`, whose sockets are handed to the watch of the fetch that opens them,
    as soon as they are connected (before a TLS handshake or a proxy's CONNECT)."""

    class Watched(base):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            watch: Watch | None = getattr(opening, "watch", None)
            if watch is None:
                return
            # http.client connects through this attribute (socket.create_connection).
            create: Callable[..., socket.socket] = getattr(self, "_create_connection")  # noqa: B009

            def created(*args: Any, **kwargs: Any) -> socket.socket:
                sock: socket.socket = create(*args, **kwargs)
                watch.attach(sock)
                return sock

            setattr(self, "_create_connection", created)  # noqa: B010

    return Watched


HTTPConnection = _watched(http.client.HTTPConnection)
HTTPSConnection = _watched(http.client.HTTPSConnection)
