"""Deadlines on the network and cancellation (attack report 19, MEDIUM 4): a
server that accepts and sends nothing, or drips a byte at a time, stops a fetch
at its deadline or low-speed floor with an error that says which; SIGTERM stops
a run whose worker thread waits on such a server, within seconds, exit 143; a
second SIGTERM is not ignored.

The servers are local sockets. Deadlines are made small through the settings
(`NetworkDeadlines`) or their environment variables, never waited out by sleeps.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from helpers import SyntheticUpstream, error_lines, run_cli, write_git_base

from patchtool.core.errors import NetworkError, UsageError
from patchtool.sources.index.client import IndexClient
from patchtool.sources.index.settings import (
    IndexSettings,
    NetworkDeadlines,
    load_settings,
    network_deadlines,
)
from patchtool.sources.index.watch import DEADLINE_HINT

COMMIT = "1" * 40
GIT_HINT = "hint: Check the git server and the network; PATCHTOOL_GIT_FETCH_SECONDS sets how long a fetch may take."


@dataclass
class Server:
    """A TCP server on 127.0.0.1: reads each request, then sends `head` and then
    `drip` every `interval` seconds until the client goes (nothing at all when both
    are empty). `accepted` is set at the first connection; `closed` counts the
    connections the client ended."""

    head: bytes = b""
    drip: bytes = b""
    interval: float = 0.02
    accepted: threading.Event = field(default_factory=threading.Event)
    closed: list[int] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def start(self) -> Server:
        listener = socket.create_server(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            listener.settimeout(0.2)
            while not self.stop.is_set():
                try:
                    connection, _ = listener.accept()
                except TimeoutError:
                    continue
                threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            connection.recv(65536)
            self.accepted.set()
            try:
                connection.sendall(self.head)
                while not self.stop.wait(self.interval):
                    if self.drip:
                        connection.sendall(self.drip)
                    else:
                        # nothing to send: wait for the client to go
                        connection.settimeout(self.interval)
                        try:
                            if connection.recv(1) == b"":
                                break
                        except TimeoutError:
                            continue
            except OSError:
                pass
            self.closed.append(1)


@pytest.fixture
def server() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(**options: object) -> Server:
        started.append(Server(**options).start())  # type: ignore[arg-type]
        return started[-1]

    yield start
    for each in started:
        each.stop.set()


@pytest.fixture(autouse=True)
def no_pip_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("PIP_") or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    load_settings.cache_clear()
    yield
    load_settings.cache_clear()


def client(port: int, **deadlines: float) -> IndexClient:
    return IndexClient(IndexSettings(index_url=f"http://127.0.0.1:{port}/simple",
                                     deadlines=NetworkDeadlines(**deadlines)))  # type: ignore[arg-type]


HTML_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 100000\r\n\r\n<html>"
FILE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
             b"Content-Length: 100000\r\n\r\n")  # fmt: skip


# --------------------------------------------------------------------------- deadlines


def test_a_page_from_a_server_that_sends_nothing_stops_at_its_deadline(server: Callable[..., Server]) -> None:
    silent = server()
    with pytest.raises(NetworkError) as raised:
        client(silent.port, page_seconds=0.5).find("demo", "demo-1.0.tar.gz")
    assert raised.value.message == (
        f"the index page http://127.0.0.1:{silent.port}/simple/demo/ took more than 0.5 s; "
        "it was stopped"
    )
    assert raised.value.hint == DEADLINE_HINT
    assert int(raised.value.exit_code) == 11


def test_a_page_that_drips_stops_at_its_deadline_though_bytes_keep_coming(
        server: Callable[..., Server]) -> None:  # fmt: skip
    # 50 bytes a second: above the floor given here, so only the page deadline ends it
    dripping = server(head=HTML_HEAD, drip=b" ")
    with pytest.raises(NetworkError) as raised:
        client(dripping.port, page_seconds=1, low_speed_limit=1).find("demo", "demo-1.0.tar.gz")
    assert raised.value.message == (
        f"the index page http://127.0.0.1:{dripping.port}/simple/demo/ took more than 1 s; "
        "it was stopped"
    )


def test_a_page_slower_than_the_floor_is_stopped(server: Callable[..., Server]) -> None:
    dripping = server(head=HTML_HEAD, drip=b" ")
    with pytest.raises(NetworkError) as raised:
        client(dripping.port, low_speed_limit=1000, low_speed_time=0.5).find(
            "demo", "demo-1.0.tar.gz")  # fmt: skip
    assert raised.value.message == (
        f"the index page http://127.0.0.1:{dripping.port}/simple/demo/ was stopped: fewer "
        "than 1000 bytes a second arrived for 0.5 s"
    )


def test_a_download_slower_than_the_floor_is_stopped_and_leaves_nothing(
        server: Callable[..., Server], tmp_path: Path) -> None:  # fmt: skip
    dripping = server(head=FILE_HEAD, drip=b"x")
    url = f"http://127.0.0.1:{dripping.port}/files/demo-1.0.tar.gz"
    with pytest.raises(NetworkError) as raised:
        client(dripping.port, low_speed_limit=1000, low_speed_time=0.5).download(
            url, tmp_path / "demo-1.0.tar.gz", None)  # fmt: skip
    assert raised.value.message == (
        f"the download of {url} was stopped: fewer than 1000 bytes a second arrived for 0.5 s"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_download_from_a_server_that_sends_nothing_is_stopped(
        server: Callable[..., Server], tmp_path: Path) -> None:  # fmt: skip
    silent = server()
    url = f"http://127.0.0.1:{silent.port}/files/demo-1.0.tar.gz"
    with pytest.raises(NetworkError) as raised:
        client(silent.port, low_speed_time=0.5).download(url, tmp_path / "demo-1.0.tar.gz", None)
    assert raised.value.message == (
        f"the download of {url} was stopped: fewer than 1000 bytes a second arrived for 0.5 s"
    )


def test_the_deadlines_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert network_deadlines() == NetworkDeadlines(120.0, 1000, 60.0, 3600.0)
    monkeypatch.setenv("PATCHTOOL_PAGE_SECONDS", "2.5")
    monkeypatch.setenv("PATCHTOOL_LOW_SPEED_LIMIT", "10")
    monkeypatch.setenv("PATCHTOOL_LOW_SPEED_TIME", "3")
    monkeypatch.setenv("PATCHTOOL_GIT_FETCH_SECONDS", "4")
    assert network_deadlines() == NetworkDeadlines(2.5, 10, 3.0, 4.0)
    assert load_settings().deadlines == NetworkDeadlines(2.5, 10, 3.0, 4.0)


@pytest.mark.parametrize("variable,value,unit,default", [
    ("PATCHTOOL_PAGE_SECONDS", "0", "seconds", "120"),
    ("PATCHTOOL_GIT_FETCH_SECONDS", "soon", "seconds", "3600"),
    ("PATCHTOOL_LOW_SPEED_TIME", "inf", "seconds", "60"),
    ("PATCHTOOL_LOW_SPEED_LIMIT", "1.5", "a whole number of bytes a second", "1000"),
])  # fmt: skip
def test_a_deadline_that_is_not_a_positive_number_is_refused(
        monkeypatch: pytest.MonkeyPatch, variable: str, value: str, unit: str,
        default: str) -> None:  # fmt: skip
    monkeypatch.setenv(variable, value)
    with pytest.raises(UsageError) as raised:
        network_deadlines()
    assert raised.value.message == f"{variable}='{value}' is not a positive number"
    assert raised.value.hint == f"Set {variable} to {unit}, or unset it for the default ({default})."


def test_a_git_fetch_from_a_server_that_sends_nothing_stops_at_its_deadline(
        server: Callable[..., Server], upstream: SyntheticUpstream) -> None:  # fmt: skip
    silent = server()
    url = f"git://127.0.0.1:{silent.port}/repo.git"
    write_git_base(upstream, url, COMMIT)
    result = run_cli("--store", str(upstream.store), "check", "-d", "devA",
                     "--commit-id", "git-base", env={"PATCHTOOL_GIT_FETCH_SECONDS": "1"})  # fmt: skip
    assert result.code == 11
    assert (f"        the fetch from {url} took more than 1 s; it was stopped"
            in result.stdout.splitlines())  # fmt: skip
    assert silent.accepted.is_set()


# --------------------------------------------------------------------------- cancellation


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_sigterm_stops_a_check_whose_worker_waits_on_the_index(
        server: Callable[..., Server], upstream: SyntheticUpstream,
        monkeypatch: pytest.MonkeyPatch, jobs: str) -> None:  # fmt: skip
    silent = server()
    monkeypatch.delenv("PATCHTOOL_SDIST_PATH")
    env = {**os.environ, "PIP_INDEX_URL": f"http://127.0.0.1:{silent.port}/simple",
           "COLUMNS": "200"}  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "patchtool", "--store", str(upstream.store), "check", "-j", jobs],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        # the worker thread is now waiting for the page (deadlines at their defaults)
        assert silent.accepted.wait(60)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 143
    assert error_lines(stderr.decode()) == [
        "error: stopped by SIGTERM",
        "hint: What the run had started was cleaned up; run the same command again.",
    ]
    assert silent.closed  # the worker's connection was ended, not left to pip's timeout


SECOND_SIGTERM_SCRIPT = """
import os, signal, sys, threading
from patchtool.cli import app
with app._signals_unwind():
    try:
        print("ready", flush=True)
        threading.Event().wait()
    except app.Terminated:
        print("cleaning up", flush=True)
        threading.Event().wait()  # a clean-up that does not end
"""


def test_a_second_sigterm_ends_a_clean_up_that_hangs() -> None:
    process = subprocess.Popen([sys.executable, "-c", SECOND_SIGTERM_SCRIPT],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline() == b"cleaning up\n"
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 143
    assert stderr.decode().splitlines() == [
        "error: stopped by a second SIGTERM before the clean-up ended",
        "hint: Run the same command again: it recovers what this run left.",
    ]
