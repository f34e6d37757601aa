"""The status socket: one JSON line in, one JSON line out, then close.

The server answers on a thread of its own from the moment it is bound, before READY=1.
A malformed request gets `{"error": ...}` and the daemon carries on. The socket is 0600,
or 0660 with `status_group`; systemd may pass it already bound (socket activation).
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from syncd.errors import DaemonNotRunning, SyncdError

log = logging.getLogger(__name__)

MAX_REQUEST = 1024 * 1024
TIMEOUT = 5.0

Handler = Callable[[dict[str, Any]], dict[str, Any]]


class StatusServer:
    def __init__(self, path: Path, handler: Handler, group: str = "") -> None:
        self.path = path
        self._handler = handler
        self._group = group
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._serve, name="status", daemon=True)
        self._closing = False
        self._owned = False
        """A socket we bound is removed at close; one systemd passed belongs to systemd."""

    def start(self, passed: socket.socket | None = None) -> None:
        """Bind (or take the socket systemd passed) and answer from now on."""
        self._owned = passed is None
        self._socket = passed if passed is not None else self._bind()
        self._thread.start()

    def _bind(self) -> socket.socket:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise SyncdError(f"{self.path.parent}: {exc.strerror}") from None
        try:
            if stat.S_ISSOCK(os.lstat(self.path).st_mode):
                self._refuse_if_answered()
                self.path.unlink()
        except FileNotFoundError:
            pass
        gid = -1
        if self._group:
            try:
                gid = grp.getgrnam(self._group).gr_gid
            except KeyError:
                raise SyncdError(f"[daemon] status_group: no group named {self._group!r}") from None
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
        sock.listen(16)
        return sock

    def _refuse_if_answered(self) -> None:
        try:
            ask(self.path, {"command": "status"}, timeout=1.0)
        except DaemonNotRunning:
            return
        raise SyncdError(f"{self.path}: another syncd is already running")

    def close(self) -> None:
        self._closing = True
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
            self._socket.close()
            if self._owned:
                self.path.unlink(missing_ok=True)
        if self._thread.is_alive():
            self._thread.join(timeout=2)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _serve(self) -> None:
        assert self._socket is not None
        while not self._closing:
            try:
                conn, _ = self._socket.accept()
            except OSError:
                if self._closing:
                    return
                continue
            with conn:
                conn.settimeout(TIMEOUT)
                try:
                    conn.sendall(self._answer(conn) + b"\n")
                except OSError:
                    continue

    def _answer(self, conn: socket.socket) -> bytes:
        line = _read_line(conn)
        try:
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("the request must be a JSON object")
            reply = self._handler(request)
        except ValueError as exc:
            reply = {"error": f"malformed request: {exc}"}
        except Exception as exc:
            log.exception("the status handler failed")
            reply = {"error": f"internal error: {type(exc).__name__}"}
        return json.dumps(reply).encode()


def _read_line(conn: socket.socket) -> bytes:
    data = b""
    while b"\n" not in data and len(data) < MAX_REQUEST:
        try:
            piece = conn.recv(65536)
        except TimeoutError:
            break
        if not piece:
            break
        data += piece
    return data.split(b"\n", 1)[0]


def ask(path: Path, request: dict[str, Any], timeout: float = TIMEOUT) -> dict[str, Any]:
    """Send one request to the daemon; DaemonNotRunning when nobody answers."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        with sock:
            sock.connect(os.fsdecode(path))
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
