"""The status socket: one JSON line in, one JSON line out, then close.

The server answers on a thread of its own from the moment it is bound, before READY=1.
A malformed request gets `{"error": ...}` and the daemon carries on. The socket is 0600,
or 0660 with `status_group`; systemd may pass it already bound (socket activation).

Whoever may connect is still not trusted with the daemon's time or memory: one thread
serves every client at once through a selector (a slow client holds nobody up), at most
`MAX_CLIENTS` at a time (the oldest makes way for a newcomer; a client whose request is
already there is taken up as it is accepted), each with `TIMEOUT` seconds for its whole
exchange, and a request longer than `MAX_REQUEST` is refused before any of it is parsed.
Requests are answered on a thread of their own (control/exchange.py): one whose answer
waits on a stuck journal is told so, and holds up no other client.
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

from syncd.control.exchange import TIMEOUT, Answers, Exchange, reply_line
from syncd.errors import DaemonNotRunning, SyncdError

log = logging.getLogger(__name__)

MAX_CLIENTS = 64
"""Connections held at once (each buffers at most MAX_REQUEST): a bound on memory."""
BACKLOG = 64
CONNECT_RETRY = 0.05
"""Seconds between connection attempts while the daemon's backlog is full."""
ACCEPT_PAUSE = 1.0
"""Seconds the socket is not listened to after an accept failed for want of descriptors
(EMFILE): the waiting client stays ready, so listening on would spin and flood the log."""

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class StatusServer:
    def __init__(self, path: Path, handler: Handler, group: str = "") -> None:
        self.path = path
        self._handler = handler
        self._group = group
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="status", daemon=True)
        self._woken, self._waker = socket.socketpair()
        """A byte on `_waker` wakes the selector: an answer came, or close()."""
        self._woken.setblocking(False)
        self._waker.setblocking(False)  # a full pipe: a wake is pending already
        self._answers = Answers(self._answer, self._wake)
        self._clients: dict[int, Exchange] = {}
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
        self._answers.start()
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

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._waker.send(b"x")

    def close(self) -> None:
        self._closing = True
        self._answers.stop()
        self._wake()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        if self._socket is not None:
            self._socket.close()
            if self._owned:
                self.path.unlink(missing_ok=True)
        self._waker.close()
        self._woken.close()

    def alive(self) -> bool:
        return self._thread.is_alive() and self._answers.alive()

    def _serve(self) -> None:
        assert self._socket is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._socket, selectors.EVENT_READ)
            selector.register(self._woken, selectors.EVENT_READ)
            while not self._closing:
                waiting = [c for c in self._clients.values() if c.asked is not None]
                ends = [c.deadline for c in self._clients.values()]
                ends += [c.answer_by for c in waiting]
                if self._accept_paused_until:
                    ends.append(self._accept_paused_until)
                wait = max(0.0, min(ends) - time.monotonic()) if ends else None
                for key, _ in selector.select(wait):
                    if key.fileobj is self._socket:
                        self._accept(selector)
                    elif key.fileobj is self._woken:
                        with contextlib.suppress(BlockingIOError):
                            self._woken.recv(4096)
                    elif key.fd in self._clients:
                        self._clients[key.fd].step(self._answers)
                        self._follow(selector, self._clients[key.fd])
                now = time.monotonic()
                for client, reply in self._answers.done(now, waiting):
                    if not client.closed:
                        client.answered(reply, self._answers)
                        self._follow(selector, client)
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
        """Take every waiting client; when full, one makes room for a newcomer (see
        `_make_room`): a real client sends its request in milliseconds, so the oldest still
        sending is the likeliest to stall."""
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
                self._make_room(selector)
            conn.setblocking(False)
            client = Exchange(conn)
            self._clients[client.fd] = client
            # A real client has sent its request by now: taken up at once, it never holds a
            # place that the rest of a flood's burst, accepted in this loop, would evict.
            client.step(self._answers)
            self._follow(selector, client)

    def _make_room(self, selector: selectors.BaseSelector) -> None:
        """The oldest client still sending its request makes way for a newcomer; one whose
        request has come meanwhile (a burst of accepts keeps the selector from reading it)
        is taken up instead, and the next oldest looked at."""
        while True:
            oldest = min(self._clients.values(), key=_eviction_order)
            if oldest.wanted == selectors.EVENT_READ:
                oldest.step(self._answers)
                if oldest.wanted != selectors.EVENT_READ and not oldest.closed:
                    self._follow(selector, oldest)
                    continue
            oldest.close()
            self._follow(selector, oldest)
            return

    def _follow(self, selector: selectors.BaseSelector, client: Exchange) -> None:
        """Watch the client for what it waits for next (nothing while it is answered);
        forget it once it is done."""
        wanted = 0 if client.closed else client.wanted
        if wanted != client.events:
            if not client.events:
                selector.register(client.conn, wanted)
            elif not wanted:
                selector.unregister(client.conn)
            else:
                selector.modify(client.conn, wanted)
            client.events = wanted
        if client.closed:
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
        return reply_line(reply)


def _eviction_order(client: Exchange) -> tuple[bool, float]:
    """Clients still sending their request first, the oldest first."""
    return client.wanted != selectors.EVENT_READ, client.deadline


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
            connect(sock, path, time.monotonic() + timeout)
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


def connect(sock: socket.socket, path: Path, deadline: float) -> None:
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
