"""A total deadline per HTTP exchange that holds through every phase.

Socket timeouts bound each wait, not the exchange: a server that trickles a byte every
few seconds never trips one, and http.client reads headers line by line and bodies until
a piece is full. So every exchange registers here, its connections are noted as urllib3
uses them, and one watcher thread shuts the socket down when the deadline passes: the
blocked send or receive returns at once, whatever phase it is in, and the exchange knows
it ran out of time.
"""

from __future__ import annotations

# urllib3 encodes every host with the idna codec as it connects. Looked up for the first
# time, the codec is imported; short of descriptors, that import fails (the dlopen of
# unicodedata) and `encodings` caches the codec as unknown for the life of the process:
# every later connection could fail its file ("LookupError: unknown encoding: idna").
# Imported here, it loads with the services, where a shortage is one the file waits out.
import encodings.idna  # noqa: F401
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from urllib3 import PoolManager, ProxyManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

IDLE_EXIT = 2.0
"""Seconds the watcher thread outlives the last exchange (a daemon keeps no idle thread),
and the longest it sleeps while exchanges run (it is not woken as each ends)."""


class Exchange:
    """One request and its reply, with the monotonic time by which both must be done."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds
        self.expired = False
        self.connections: list[HTTPConnection] = []


class _Watcher:
    """The one thread that cuts exchanges off at their deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._exchanges: set[Exchange] = set()
        self._thread: threading.Thread | None = None
        self._wakes_at: float | None = None
        """When the thread wakes next: the earliest deadline, IDLE_EXIT at the latest;
        None: there is no thread."""
        self._ended = 0.0
        """When the last exchange ended (monotonic): the thread leaves IDLE_EXIT after."""

    def add(self, exchange: Exchange) -> None:
        with self._cond:
            self._exchanges.add(exchange)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="http-deadlines", daemon=True
                )
                self._thread.start()
            # Woken only for a deadline before it wakes anyway (a second or more away,
            # it wakes within IDLE_EXIT): a wake a request would be two thread switches.
            if self._wakes_at is None or exchange.deadline < self._wakes_at:
                self._cond.notify()

    def remove(self, exchange: Exchange) -> None:
        """Not woken either: it finds the exchange gone when it wakes."""
        with self._cond:
            self._exchanges.discard(exchange)
            self._ended = time.monotonic()

    def note(self, exchange: Exchange, connection: HTTPConnection) -> None:
        with self._cond:
            exchange.connections.append(connection)
            if exchange.expired:
                _abort(connection)

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for exchange in self._exchanges:
                    if exchange.deadline <= now and not exchange.expired:
                        exchange.expired = True
                        for connection in exchange.connections:
                            _abort(connection)
                waiting = [e.deadline for e in self._exchanges if not e.expired]
                if waiting:
                    self._wakes_at = min(min(waiting), now + IDLE_EXIT)
                elif self._exchanges:  # cut off already, not yet ended by their threads
                    self._wakes_at = now + IDLE_EXIT
                elif now < self._ended + IDLE_EXIT:
                    self._wakes_at = self._ended + IDLE_EXIT
                else:
                    self._thread = self._wakes_at = None  # the next exchange starts another
                    return
                self._cond.wait(max(0.01, self._wakes_at - now))


_watcher = _Watcher()
_current = threading.local()


def _abort(connection: HTTPConnection) -> None:
    """Shut the socket down under whoever is blocked on it (the base class's shutdown, so
    a TLS socket is cut the same way and its state is left to its owner)."""
    sock: Any = connection.sock
    sock = getattr(sock, "socket", sock)  # urllib3's TLS-in-TLS wrapper
    if isinstance(sock, socket.socket):
        with suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


@contextmanager
def exchange_within(seconds: float) -> Iterator[Exchange]:
    """Run one exchange on this thread under a total deadline of `seconds`."""
    exchange = Exchange(seconds)
    _current.exchange = exchange
    _watcher.add(exchange)
    try:
        yield exchange
    finally:
        _watcher.remove(exchange)
        _current.exchange = None


def _noted(connection: HTTPConnection) -> None:
    exchange = getattr(_current, "exchange", None)
    if exchange is not None:
        _watcher.note(exchange, connection)


class _Connection(HTTPConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _noted(self)
        super().request(*args, **kwargs)


class _TlsConnection(HTTPSConnection):
    def request(self, *args: Any, **kwargs: Any) -> None:
        _noted(self)
        super().request(*args, **kwargs)


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TlsPool(HTTPSConnectionPool):
    ConnectionCls = _TlsConnection


_POOLS = {"http": _Pool, "https": _TlsPool}


def pools(**settings: Any) -> PoolManager:
    """urllib3's pools, whose connections report to the exchange that uses them."""
    manager = PoolManager(**settings)
    manager.pool_classes_by_scheme = _POOLS
    return manager


def proxied_pools(proxy: str, **settings: Any) -> ProxyManager:
    """The same, through an HTTP(S) proxy."""
    manager = ProxyManager(proxy, **settings)
    manager.pool_classes_by_scheme = _POOLS
    return manager
