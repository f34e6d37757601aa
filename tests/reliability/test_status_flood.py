"""The status socket under floods: many clients at once, clients that stall, and huge lines.

A person asking `syncd status` during a flood still gets an answer quickly; a client that
stalls holds nobody up and is cut off at its deadline; a 1 MiB line of 350,000 JSON
objects is refused before it is parsed, and costs the daemon no lasting memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from conftest import SCALE, base_config

from syncd.control.exchange import MAX_REQUEST, TIMEOUT
from syncd.control.status import MAX_CLIENTS, ask, connect

HUGE = b"[" + b"{}," * 350_000 + b"{}]\n"
"""About 1 MiB: 350,000 JSON objects on one line."""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def huge_request(path: Path) -> bytes:
    """Send the huge line; the reply (the refusal) once the daemon has closed its side. A
    full backlog (the flood's own doing) is waited out, as `syncd status` waits it out."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(TIMEOUT * 2)
        connect(client, path, time.monotonic() + TIMEOUT * 2)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.sendall(HUGE)
        try:
            return client.makefile("rb").readline()
        except ConnectionResetError:
            return b""


def timed_status(path: Path) -> float:
    started = time.monotonic()
    reply = ask(path, {"command": "status"}, timeout=30)
    assert "pid" in reply, reply
    return time.monotonic() - started


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else values[0]


def test_a_huge_line_is_refused_before_parsing(tmp_path, sandbox, make_daemon):
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}]))
    daemon.start()
    reply = json.loads(huge_request(daemon.socket))
    assert "refused" in reply["error"] and str(MAX_REQUEST) in reply["error"]
    just_under = b'{"command": "status", "pad": "' + b"x" * (MAX_REQUEST - 40) + b'"}\n'
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(daemon.socket))
        client.sendall(just_under)
        assert "pid" in json.loads(client.makefile("rb").readline())
    nested = b"[" * 60_000 + b"]" * 4_000 + b"\n"  # deep nesting inside the cap: an error
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(daemon.socket))
        client.sendall(nested[: MAX_REQUEST - 1] + b"\n")
        assert "error" in json.loads(client.makefile("rb").readline())
    assert daemon.status()["pid"] == daemon.pid


def test_a_stalled_client_holds_nobody_up_and_is_cut_off(tmp_path, sandbox, make_daemon):
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}]))
    daemon.start()
    with socket.socket(socket.AF_UNIX) as stalled:
        stalled.connect(str(daemon.socket))
        stalled.sendall(b'{"command": ')  # and nothing more
        assert timed_status(daemon.socket) < 2.0
        stalled.settimeout(TIMEOUT * 3)
        started = time.monotonic()
        assert stalled.recv(100) == b""  # closed at its deadline
        assert time.monotonic() - started < TIMEOUT + 2


def test_status_under_a_flood_of_clients_stalls_and_huge_lines(
    tmp_path, sandbox, make_daemon, figures
):
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}]))
    daemon.start()
    quiet = [timed_status(daemon.socket) for _ in range(50)]
    for _ in range(5):  # warm-up: the allocator reaches its steady state
        huge_request(daemon.socket)
    before = rss_kib(daemon.pid)

    stop = threading.Event()
    hostile = {"huge": 0, "stalled": 0}
    lock = threading.Lock()

    def stall() -> None:
        while not stop.is_set():
            with socket.socket(socket.AF_UNIX) as client:
                client.connect(str(daemon.socket))
                client.sendall(b"{")
                with lock:
                    hostile["stalled"] += 1
                stop.wait(0.5)

    def flood_huge() -> None:
        while not stop.is_set():
            huge_request(daemon.socket)
            with lock:
                hostile["huge"] += 1

    latencies: list[float] = []

    def ask_often() -> None:
        for _ in range(25 * SCALE):  # as a person or a monitoring script would, paced
            latencies.append(timed_status(daemon.socket))
            time.sleep(0.1)

    attackers = [threading.Thread(target=stall) for _ in range(80)]
    attackers += [threading.Thread(target=flood_huge) for _ in range(4)]
    people = [threading.Thread(target=ask_often) for _ in range(8)]
    for thread in attackers + people:
        thread.start()
    for thread in people:
        thread.join(300)
    stop.set()
    for thread in attackers:
        thread.join(30)
    after = rss_kib(daemon.pid)

    growth = max(0, after - before) * 1024 / max(1, hostile["huge"])
    figures["quiet_p99_ms"] = round(p99(quiet) * 1000, 1)
    figures["flood_p99_ms"] = round(p99(latencies) * 1000, 1)
    figures["flood_requests"] = len(latencies)
    figures["huge_requests"] = hostile["huge"]
    figures["stalled_clients"] = hostile["stalled"]
    figures["rss_growth_kib"] = after - before
    figures["rss_growth_per_hostile_request_bytes"] = round(growth)
    assert len(latencies) == 8 * 25 * SCALE
    assert p99(latencies) < 3.0
    assert hostile["huge"] >= 4
    assert after - before < 8 * 1024, (before, after)  # under 8 MiB however many came
    assert daemon.status()["pid"] == daemon.pid


@contextlib.contextmanager
def frozen(pid: int) -> Iterator[None]:
    """The daemon stopped (SIGSTOP) for the block: connections pile up in its backlog."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def pile_up(stack: contextlib.ExitStack, path: Path, count: int) -> int:
    """Up to `count` stalled connections (closed with `stack`) until the backlog is full."""
    for piled in range(count):
        client = stack.enter_context(socket.socket(socket.AF_UNIX))
        client.setblocking(False)
        try:
            client.connect(str(path))
        except BlockingIOError:
            return piled
    return count


def test_a_request_waiting_in_a_full_backlog_is_answered_not_evicted(
    tmp_path, sandbox, make_daemon
):
    """A flood's burst accepted at once must not evict the real client that came first:
    its request has arrived, so it is answered rather than taken for a staller."""
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}]))
    daemon.start()
    with contextlib.ExitStack() as stack, socket.socket(socket.AF_UNIX) as person:
        person.settimeout(30)
        with frozen(daemon.pid):
            person.connect(str(daemon.socket))
            person.sendall(b'{"command": "status"}\n')
            piled = pile_up(stack, daemon.socket, MAX_CLIENTS + 8)
        assert piled >= MAX_CLIENTS  # enough behind the person to evict it, oldest first
        assert "pid" in json.loads(person.makefile("rb").readline())


def test_status_waits_for_room_in_a_full_backlog(tmp_path, sandbox, make_daemon):
    """`syncd status` while the backlog is full waits for room (within its timeout)
    instead of failing at once with EAGAIN."""
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}]))
    daemon.start()
    resumed = threading.Timer(1.0, os.kill, (daemon.pid, signal.SIGCONT))
    with contextlib.ExitStack() as stack, frozen(daemon.pid):
        pile_up(stack, daemon.socket, 4 * MAX_CLIENTS)
        resumed.start()
        try:
            assert "pid" in ask(daemon.socket, {"command": "status"}, timeout=20)
        finally:
            resumed.join()
