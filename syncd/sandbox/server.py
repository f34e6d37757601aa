"""The sandbox's HTTP server: `Sandbox` for tests and `syncd run --sandbox`, `main` for the CLI.

A ThreadingHTTPServer speaking HTTP/1.1 with keep-alive, one thread per connection; every
reply has a Content-Length. A reset is a real TCP RST (SO_LINGER 0), which is what a
client sees when a server or a middlebox drops it mid-request.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import socket
import socketserver
import struct
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from tempfile import TemporaryDirectory
from types import TracebackType
from typing import Any

from syncd.control import signals
from syncd.sandbox import credentials
from syncd.sandbox.app import App
from syncd.sandbox.web import PIECE, Body, ConnectionDropped, Exchange, HttpError, Reply, http_date

log = logging.getLogger("syncd.sandbox")

REASONS = {308: "Resume Incomplete"}
"""TON's reason phrase for 308, from Google's resumable protocol (protocols.md 2.4)."""
STOP_POLL = 0.02
"""How often the accept loop looks for a stop request: what `stop()` may wait for."""
IDLE_TIMEOUT = 120.0
"""Seconds a connection may sit idle or stall mid-body before the server drops it."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "syncd-sandbox"
    timeout = IDLE_TIMEOUT
    # Headers and body go out in separate writes; with Nagle on, the second waits for the
    # client's delayed ACK (40 ms a reply on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def _dispatch(self) -> None:
        try:
            body = Body(self.rfile, self.headers, self.server.app.link.current.bytes_per_second)
        except HttpError as exc:
            self._send(exc.reply)
            return
        ex = Exchange(self.command, self.path, self.headers, body, self.server.authority)
        try:
            self.server.app.serve(ex, self._send)
        except ConnectionDropped:
            self._reset()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _dispatch

    def _send(self, reply: Reply) -> None:
        if reply.raw is not None or reply.trickle_ms is not None:
            self._send_raw(reply)
            return
        try:
            self.send_response(reply.status, REASONS.get(reply.status))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(reply.content_length))
            if reply.close:
                self.send_header("Connection", "close")
            self.end_headers()
            if reply.stream is None:
                self.wfile.write(reply.body)
                return
            while piece := reply.stream.read(PIECE):
                self.wfile.write(piece)
        finally:
            if reply.stream is not None:
                reply.stream.close()

    def _send_raw(self, reply: Reply) -> None:
        """A fault's answer: verbatim bytes, or a whole reply a byte at a time; then close."""
        self.close_connection = True
        data = reply.raw if reply.raw is not None else self._rendered(reply)
        pause = (reply.trickle_ms or 0) / 1000
        try:
            if not pause:
                self.wfile.write(data)
                return
            for index in range(len(data)):
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
                if self.server.app.pause(pause):
                    return
        except OSError:
            return  # the client gave up: what a trickle is for
        finally:
            if reply.stream is not None:
                reply.stream.close()

    def _rendered(self, reply: Reply) -> bytes:
        body = reply.body if reply.stream is None else reply.stream.read()
        phrase = REASONS.get(reply.status) or self.responses.get(reply.status, ("",))[0]
        lines = [f"HTTP/1.1 {reply.status} {phrase}", f"Server: {self.server_version}"]
        lines += [f"Date: {self.date_time_string()}", "Connection: close"]
        lines += [f"{name}: {value}" for name, value in reply.headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body

    def _reset(self) -> None:
        """Close with RST before any response: linger 0 discards, never a polite FIN."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True

    def version_string(self) -> str:
        return self.server_version

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The Date header follows the sandbox clock, so a client sees the skew it is given."""
        return http_date(self.server.app.clock.now() if timestamp is None else timestamp)

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            log.info("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: App, verbose: bool) -> None:
        self.app = app
        self.verbose = verbose
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds
        # without DNS; the sandbox has no use for it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.socket.getsockname()[:2]
        self.server_name, self.server_port = host, port
        # host:port as it appears in a URL; also the Host of a request that sends none.
        self.authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Wake every connection thread (idle keep-alive or mid-body) so it ends now."""
        with self._open_lock:
            for sock in self._open:
                with contextlib.suppress(OSError):  # already closed by its thread
                    sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that goes away while being answered is normal in fault tests.
        log.debug("connection from %s failed", client_address, exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class Sandbox:
    """All emulators on one loopback port, served from a background thread.

    `data_dir` receives the uploaded bytes (a temporary folder, removed on stop, when None);
    everything else is kept in memory and forgotten on stop.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        *,
        verbose: bool = False,
    ) -> None:
        self._address = (host, port)
        self._data_dir = data_dir
        self._verbose = verbose
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmp: TemporaryDirectory[str] | None = None

    def start(self) -> Sandbox:
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        if self._data_dir is None:
            self._tmp = TemporaryDirectory(prefix="syncd-sandbox-")
            data_dir = Path(self._tmp.name)
        else:
            data_dir = self._data_dir
            data_dir.mkdir(parents=True, exist_ok=True)
        self._stopping.clear()
        kind = _Server6 if ":" in self._address[0] else _Server
        try:
            self._server = kind(self._address, App(data_dir, self._stopping), self._verbose)
        except BaseException:
            self._cleanup_tmp()
            raise
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": STOP_POLL},
            name=f"syncd-sandbox-{self.url}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, end every connection, wait for their threads, remove temp data."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.app.close()
        server.shutdown()
        server.close_connections()
        server.server_close()  # joins the connection threads
        thread.join()
        self._server = self._thread = None
        self._cleanup_tmp()

    @property
    def url(self) -> str:
        """The base URL every service `endpoint` can point at, e.g. http://127.0.0.1:41234."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running")
        return f"http://{self._server.authority}"

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _cleanup_tmp(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def _listen_address(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def banner(url: str, data_dir: Path | None) -> str:
    """What `syncd sandbox` prints on start: where it listens and what it accepts."""
    return "\n".join(
        [
            f"syncd sandbox listening on {url}  (control API: {url}/_sandbox/)",
            f"data: {data_dir or 'a temporary folder, removed on exit'}",
            "",
            "# Twitter account (TON, statuses/update, OAuth Echo):",
            f'consumer_key = "{credentials.CONSUMER_KEY}"',
            f'consumer_secret = "{credentials.CONSUMER_SECRET}"',
            f'access_token = "{credentials.ACCESS_TOKEN}"',
            f'access_token_secret = "{credentials.ACCESS_TOKEN_SECRET}"',
            f"# user: @{credentials.USER.screen_name} (id {credentials.USER.id})",
            "# TON buckets: ta_partner (X-TON-Expires required), syncd, forbidden (403)",
            f'# twitpic api_key = "{credentials.TWITPIC_API_KEY}"',
            f'# twitlonger api_key = "{credentials.TWITLONGER_API_KEY}"',
            f'# oneall public_key = "{credentials.ONEALL_PUBLIC_KEY}"',
            f'# oneall private_key = "{credentials.ONEALL_PRIVATE_KEY}"',
            f'# oneall identity_token = "{credentials.ONEALL_IDENTITY_TOKEN}"',
            f"# webhook receiver: {url}/hooks/webhook, secret"
            f' "{credentials.WEBHOOK_SECRET}"; health checks: {url}/hc/ANY-UUID',
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """`syncd sandbox`: serve until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="syncd sandbox", description="Serve local emulators of every service syncd uses."
    )
    parser.add_argument(
        "--listen",
        type=_listen_address,
        default=("127.0.0.1", 8700),
        metavar="HOST:PORT",
        help="address to listen on (default 127.0.0.1:8700; port 0 picks a free one)",
    )
    parser.add_argument("--data-dir", type=Path, help="keep uploaded bytes here")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)

    host, port = args.listen
    sandbox = Sandbox(host, port, args.data_dir, verbose=args.verbose)
    try:
        sandbox.start()
    except OSError as exc:
        print(f"syncd sandbox: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    stopping = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.getsignal(sig) for sig in stopping}
    signals.take(stopping, lambda signum: stop.set())  # never in a handler: see there
    try:
        print(banner(sandbox.url, args.data_dir), flush=True)
        stop.wait()
    finally:
        sandbox.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
