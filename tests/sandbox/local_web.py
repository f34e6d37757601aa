"""A tiny loopback web server standing in for syncd's media server in the OneAll tests:
it serves files for OneAll to fetch and records the callbacks OneAll posts back."""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True, slots=True)
class Callback:
    path: str
    content_type: str
    body: Any


class LocalWeb:
    """`files[path] = bytes` are served on GET; every POST is a callback, answered with
    the next status in `statuses` (200 once they run out)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.statuses: deque[int] = deque()
        self.callbacks: list[Callback] = []
        self._changed = threading.Condition()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        host, port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{port}"

    def __enter__(self) -> LocalWeb:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def serve(self, path: str, data: bytes) -> str:
        self.files[path] = data
        return self.url + path

    def wait_for_callbacks(self, count: int, timeout: float = 10) -> list[Callback]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.callbacks) >= count, timeout)
            return list(self.callbacks)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        web = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                data = web.files.get(self.path)
                self.send_response(200 if data is not None else 404)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()
                self.wfile.write(data or b"")

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with web._changed:
                    status = web.statuses.popleft() if web.statuses else 200
                    callback = Callback(self.path, self.headers["Content-Type"], json.loads(raw))
                    web.callbacks.append(callback)
                    web._changed.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
