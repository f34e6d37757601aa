"""A waitress server on a thread of its own: how syncd serves HTTP (metrics, OneAll media).

Top-level, beside files.py, because both control/ (metrics) and services/ (the OneAll
media server) serve with it and a service module must not import control/. The socket is
bound when the server is made, so a port in use is a clear one-line error at start; the
caller's limits (threads, connections, timeouts, header and body sizes) are passed as they
are. Stopping closes the connections from waitress' own loop, the only thread that may
touch them, and then its worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher

from syncd.errors import SyncdError

STOP_WAIT = 5.0
"""Seconds waited for waitress' loop, then for its application threads, at stop."""


class WaitressServer:
    """`failure` starts the error for a socket that cannot be bound ("[metrics] listen: ...")."""

    def __init__(
        self,
        app: Callable[..., Any],
        name: str,
        failure: str,
        server_class: type[TcpWSGIServer] = TcpWSGIServer,
        **limits: Any,
    ) -> None:
        sockets: dict[int, Any] = {}
        threads = ThreadedTaskDispatcher()  # started once bound: a refused port leaks none
        try:
            self._server: Any = server_class(
                app,
                map=sockets,
                _start=False,
                dispatcher=threads,
                expose_tracebacks=False,
                log_socket_errors=False,  # a client that goes away is no news
                **limits,
            )
        except (OSError, ValueError) as exc:
            for dispatcher in list(sockets.values()):
                dispatcher.close()
            reason = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
            raise SyncdError(f"{failure}: {reason}") from None
        threads.set_thread_count(self._server.adj.threads)
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)

    @property
    def address(self) -> tuple[str, int]:
        """The bound address (the port picked, for port 0)."""
        return str(self._server.effective_host), int(self._server.effective_port)

    def start(self) -> None:
        self._server.accept_connections()
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        server = self._server

        def close_all() -> None:
            for dispatcher in list(server._map.values()):
                if isinstance(dispatcher, HTTPChannel):
                    dispatcher.handle_close()
                elif dispatcher is not server:
                    dispatcher.close()
            server.close()

        if self._thread.is_alive():
            server.trigger.pull_trigger(close_all)
            self._thread.join(timeout=STOP_WAIT)
        else:
            server.close()
        server.task_dispatcher.shutdown(cancel_pending=True, timeout=STOP_WAIT)
