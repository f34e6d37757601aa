"""The status socket: one JSON line in, one JSON line out, then close.

The server answers on a thread of its own from the moment it is bound, before READY=1.
A malformed request gets `{"error": ...}` and the daemon carries on. The socket is 0600,
or 0660 with `status_group`; systemd may pass it already bound (socket activation).

Whoever may connect is still not trusted with the daemon's time or memory: one thread
serves every client at once through a selector (a slow client holds nobody up), at most
`MAX_CLIENTS` at a time (the oldest makes way for a newcomer; a client whose request is
already there is answered as it is accepted), each with `TIMEOUT` seconds for its whole
exchange, and a request longer than `MAX_REQUEST` is refused before any of it is parsed.
`ask` waits out a full backlog within its timeout.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import logging
import os
import selectors
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncd.errors import DaemonNotRunning, SyncdError

log = logging.getLogger(__name__)

MAX_REQUEST = 64 * 1024
"""The longest request line: a retry of a few hundred paths fits, and parsing it is cheap."""
TIMEOUT = 5.0
"""Seconds a client has for its whole exchange, request and reply."""
MAX_CLIENTS = 64
"""Connections held at once (each buffers at most MAX_REQUEST): a bound on memory."""
BACKLOG = 64
CONNECT_RETRY = 0.05
"""Seconds between connection attempts while the daemon's backlog is full."""
ACCEPT_PAUSE = 1.0
"""Seconds the socket is not listened to after an accept failed for want of descriptors
(EMFILE): the waiting client stays ready, so listening on would spin and flood the log."""
TOO_LONG = f"request refused: longer than {MAX_REQUEST} bytes"

Handler = Callable[[dict[str, Any]], dict[str, Any]]
Answer = Callable[[bytes], bytes]


class StatusServer:
    def __init__(self, path: Path, handler: Handler, group: str = "") -> None:
        self.path = path
        self._handler = handler
        self._group = group
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="status", daemon=True)
        self._woken, self._waker = socket.socketpair()
        """A byte on `_waker` wakes the selector, for close()."""
        self._clients: dict[int, _Client] = {}
        self._accept_paused_until = 0.0
        """While accepts fail (see ACCEPT_PAUSE): when to listen again; 0.0 when listening."""
        self._accept_failing = False
        """Said once per spell of failures, not once per client."""
        self._closing = False
        self._owned = False
        """A socket we bound is removed at close; one systemd passed belongs to systemd."""

    def start(self, passed: socket.socket | None = None) -> None:
        """Bind (or take the socket systemd passed) and answer from now on."""
        self._owned = passed is None
        self._socket = passed if passed is not None else self._bind()
        self._socket.setblocking(False)
        self._thread.start()

    def _bind(self) -> socket.socket:
        gid = self._group_id()
        try:
            self._make_folder(gid)
            folder = os.lstat(self.path.parent)
        except OSError as exc:
            raise SyncdError(f"{self.path.parent}: {exc.strerror}") from None
        if not stat.S_ISDIR(folder.st_mode) or folder.st_uid not in (0, os.geteuid()):
            raise SyncdError(
                f"{self.path.parent}: the status socket's folder must be a folder of ours"
            )
        if folder.st_mode & 0o002 and not folder.st_mode & stat.S_ISVTX:
            raise SyncdError(
                f"{self.path.parent}: other users could replace the status socket there"
                " (chmod o-w, or set [daemon] status_socket)"
            )
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self._refuse_if_answered()
                self.path.unlink()
        except FileNotFoundError:
            pass
        if gid >= 0 and (closed := _closed_to(self.path.parent, gid)) is not None:
            log.warning(
                "[daemon] status_group: members of %r cannot reach %s: %s is closed to them"
                " (chmod o+x it, or g+x and give it to that group)",
                self._group,
                self.path,
                closed,
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(os.fsdecode(self.path))
        except OSError as exc:
            sock.close()
            raise SyncdError(
                f"{self.path}: cannot listen for status requests: {exc.strerror or exc}"
            ) from None
        finally:
            os.umask(old)
        if gid >= 0:
            try:
                os.chown(self.path, -1, gid)
            except OSError as exc:
                sock.close()
                raise SyncdError(
                    f"[daemon] status_group: cannot give {self.path} to group {self._group!r}"
                    f" ({exc.strerror}); under the hardened unit use syncd.socket with"
                    " SocketGroup= and SocketMode=0660 instead"
                ) from None
            os.chmod(self.path, 0o660)
        else:
            os.chmod(self.path, 0o600)
        sock.listen(BACKLOG)
        return sock

    def _group_id(self) -> int:
        """The gid of `status_group`, -1 without one."""
        if not self._group:
            return -1
        try:
            return grp.getgrnam(self._group).gr_gid
        except KeyError:
            raise SyncdError(f"[daemon] status_group: no group named {self._group!r}") from None

    def _make_folder(self, gid: int) -> None:
        """The socket's folder, when missing: ours alone (0700), or with `status_group`
        0710 and that group's, so its members can reach the socket (not list the folder)."""
        self.path.parent.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.path.parent.mkdir(mode=0o700)
        except FileExistsError:
            return
        if gid >= 0:
            os.chown(self.path.parent, -1, gid)
            os.chmod(self.path.parent, 0o710)  # noqa: S103 - pass, not list: the socket is 0660

    def _refuse_if_answered(self) -> None:
        try:
            ask(self.path, {"command": "status"}, timeout=1.0)
        except DaemonNotRunning:
            return
        raise SyncdError(f"{self.path}: another syncd is already running")

    def close(self) -> None:
        self._closing = True
        with contextlib.suppress(OSError):
            self._waker.send(b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        if self._socket is not None:
            self._socket.close()
            if self._owned:
                self.path.unlink(missing_ok=True)
        self._waker.close()
        self._woken.close()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _serve(self) -> None:
        assert self._socket is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._socket, selectors.EVENT_READ)
            selector.register(self._woken, selectors.EVENT_READ)
            while not self._closing:
                ends = [c.deadline for c in self._clients.values()]
                if self._accept_paused_until:
                    ends.append(self._accept_paused_until)
                wait = max(0.0, min(ends) - time.monotonic()) if ends else None
                for key, _ in selector.select(wait):
                    if key.fileobj is self._socket:
                        self._accept(selector)
                    elif key.fd in self._clients:
                        self._clients[key.fd].step(self._answer)
                        self._follow(selector, self._clients[key.fd])
                now = time.monotonic()
                if self._accept_paused_until and now >= self._accept_paused_until:
                    self._accept_paused_until = 0.0
                    selector.register(self._socket, selectors.EVENT_READ)
                for client in [c for c in self._clients.values() if c.deadline <= now]:
                    client.close()
                    self._follow(selector, client)
            for client in self._clients.values():
                client.conn.close()
            self._clients.clear()

    def _accept(self, selector: selectors.BaseSelector) -> None:
        """Take every waiting client; when full, the oldest one makes room for a newcomer:
        a real client is done in milliseconds, so the oldest is the likeliest to stall."""
        assert self._socket is not None
        while True:
            try:
                conn, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    return  # that client gave up; the next one is served
                if not self._accept_failing:
                    log.warning("status socket: cannot accept a client: %s", exc.strerror)
                self._accept_failing = True
                selector.unregister(self._socket)
                self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE
                return
            if self._accept_failing:
                self._accept_failing = False
                log.info("status socket: accepting clients again")
            if len(self._clients) >= MAX_CLIENTS:
                oldest = min(self._clients.values(), key=lambda c: c.deadline)
                oldest.close()
                self._follow(selector, oldest)
            conn.setblocking(False)
            client = _Client(conn)
            self._clients[client.fd] = client
            selector.register(conn, selectors.EVENT_READ)
            # A real client has sent its request by now: answered at once, it never holds a
            # place that the rest of a flood's burst, accepted in this loop, would evict.
            client.step(self._answer)
            self._follow(selector, client)

    def _follow(self, selector: selectors.BaseSelector, client: _Client) -> None:
        """Watch the client for what it waits for next; forget it once it is done."""
        if not client.closed:
            events = selectors.EVENT_WRITE if client.reply else selectors.EVENT_READ
            selector.modify(client.conn, events)
            return
        selector.unregister(client.conn)
        client.conn.close()
        del self._clients[client.fd]

    def _answer(self, line: bytes) -> bytes:
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("the request must be a JSON object")
            reply = self._handler(request)
        except (ValueError, RecursionError) as exc:
            reply = {"error": f"malformed request: {exc}"}
        except SyncdError as exc:  # e.g. the journal's disk is full: status says degraded
            reply = {"error": str(exc)}
        except Exception as exc:
            log.exception("the status handler failed")
            reply = {"error": f"internal error: {type(exc).__name__}"}
        return json.dumps(reply).encode() + b"\n"


class _Client:
    """One connection: its request so far (at most MAX_REQUEST bytes), then its reply."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.fd = conn.fileno()
        self.deadline = time.monotonic() + TIMEOUT
        self.request = bytearray()
        self.reply = b""
        self.closed = False

    def step(self, answer: Answer) -> None:
        """Read what has come, or write what is due; never blocks."""
        try:
            if self.reply:
                self._write()
            else:
                self._read(answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()

    def _read(self, answer: Answer) -> None:
        piece = self.conn.recv(MAX_REQUEST + 1 - len(self.request))
        self.request += piece
        end = self.request.find(b"\n")
        if end >= 0 or not piece or _whole_object(self.request):
            line = bytes(self.request if end < 0 else self.request[:end])
            self.reply = answer(line)
        elif len(self.request) > MAX_REQUEST:
            self.reply = json.dumps({"error": TOO_LONG}).encode() + b"\n"
        else:
            return
        self.request = bytearray()
        self._write()

    def _write(self) -> None:
        sent = self.conn.send(self.reply)
        self.reply = self.reply[sent:]
        if not self.reply:
            self.close()

    def close(self) -> None:
        """Done with; the server unregisters and closes the connection."""
        self.closed = True


def _whole_object(request: bytearray) -> bool:
    """A JSON object sent without its newline (and the connection kept open) is a request
    too: a client waiting for the reply would otherwise wait for nothing."""
    if not request.rstrip().endswith(b"}"):
        return False
    try:
        return isinstance(json.loads(request), dict)
    except (ValueError, RecursionError):
        return False


def _closed_to(folder: Path, gid: int) -> Path | None:
    """The first of `folder` and its parents that members of group `gid` may not pass."""
    for step in (folder, *folder.parents):
        try:
            st = os.stat(step)
        except OSError:
            return step
        if not (st.st_mode & 0o001 or (st.st_gid == gid and st.st_mode & 0o010)):
            return step
    return None


def ask(path: Path, request: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon; DaemonNotRunning when nobody answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with sock:
            _connect(sock, path, time.monotonic() + timeout)
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = b""
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                data += piece
    except (FileNotFoundError, ConnectionRefusedError):
        raise DaemonNotRunning(f"syncd is not running (no daemon answers on {path})") from None
    except PermissionError:
        raise SyncdError(f"{path}: permission denied (the socket is the daemon user's)") from None
    except OSError as exc:
        raise DaemonNotRunning(f"syncd is not answering on {path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise DaemonNotRunning(f"syncd gave no valid answer on {path}") from None
    if not isinstance(reply, dict):
        raise DaemonNotRunning(f"syncd gave no valid answer on {path}")
    return reply


def _connect(sock: socket.socket, path: Path, deadline: float) -> None:
    """A full backlog (EAGAIN: a flood, or the daemon busy for a moment) is waited out
    until `deadline`, as a blocking connect would, rather than taken for no daemon."""
    while True:
        try:
            sock.connect(os.fsdecode(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(CONNECT_RETRY)
