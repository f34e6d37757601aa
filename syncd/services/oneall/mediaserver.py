"""The media server OneAll fetches files from, and where it posts video callbacks.

OneAll does not take the file: it downloads it from a URL we give (protocols.md 6.3/6.4).
So this serves exactly the files being pushed, each at a URL whose token names the
file's journal entry, what the URL is for, and an expiry, signed with HMAC-SHA256 under a
key kept 0600 in `state_dir` (so URLs stay valid across restarts while a video waits), or in
fleet mode in the shared journal (so any host serves media and takes callbacks).
A request whose token is forged, expired or meant for something else is refused before
the filesystem is touched; a file that changed since it was hashed is never served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

from syncd.errors import SyncdError
from syncd.files import Identity

log = logging.getLogger(__name__)

KEY_FILE = "media.key"
MEDIA = "media"
CALLBACK = "callback"
MAX_CALLBACK = 1024 * 1024
PIECE = 1024 * 1024
RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Signer:
    """Makes and checks the tokens in media and callback URLs."""

    def __init__(self, key: bytes, public_url: str) -> None:
        self._key = key
        self.public_url = public_url.rstrip("/")

    @classmethod
    def from_state_dir(cls, state_dir: Path, public_url: str) -> Signer:
        """The key is made once and kept, so URLs outlive a restart."""
        path = state_dir / KEY_FILE
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            key = path.read_bytes()
        else:
            key = secrets.token_bytes(32)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
                out.flush()
                os.fsync(out.fileno())
        if len(key) < 32:
            raise SyncdError(f"{path}: the media server's key is damaged; remove it")
        return cls(key, public_url)

    @classmethod
    def shared(cls, shared_key: Callable[[str, Callable[[], bytes]], bytes], url: str) -> Signer:
        """Fleet mode: one key for every host, made by the first that asks."""
        return cls(shared_key(KEY_FILE, lambda: secrets.token_bytes(32)), url)

    def token(self, purpose: str, row_id: int, expires: float) -> str:
        payload = f"{purpose}.{row_id}.{int(expires)}"
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:20]
        return payload + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def check(self, purpose: str, token: str) -> int | None:
        """The row id a valid, unexpired token for `purpose` names; None otherwise."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != purpose:
            return None
        expected = self.token(purpose, _int(parts[1]), _int(parts[2]))
        if not hmac.compare_digest(expected.encode(), token.encode()):
            return None
        if _int(parts[2]) < time.time():
            return None
        return _int(parts[1])

    def media_url(self, row_id: int, name: str, expires: float) -> str:
        return f"{self.public_url}/media/{self.token(MEDIA, row_id, expires)}/{quote(name)}"

    def callback_url(self, row_id: int, expires: float) -> str:
        return f"{self.public_url}/callback/{self.token(CALLBACK, row_id, expires)}"


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


@dataclass(frozen=True, slots=True)
class Servable:
    """What the journal says a row being pushed is: where it lies and what it must be."""

    path: Path
    identity: Identity
    media_type: str


Lookup = Callable[[int], Servable | None]
"""The row's file, if the row is one being pushed right now."""
Callback = Callable[[int, dict[str, Any]], bool]
"""Hands a callback's JSON to the daemon; False when the row is not waiting for one."""


class MediaServer:
    def __init__(
        self, host: str, port: int, signer: Signer, lookup: Lookup, callback: Callback
    ) -> None:
        self.signer = signer
        self._lookup = lookup
        self._callback = callback
        handler = type("Handler", (_Handler,), {"server_side": self})
        try:
            self._httpd = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise SyncdError(f"[media_server] listen {host}:{port}: {exc.strerror}") from None
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="mediaserver", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def alive(self) -> bool:
        return self._thread.is_alive()


class _Handler(BaseHTTPRequestHandler):
    server_side: MediaServer
    protocol_version = "HTTP/1.1"
    server_version = "syncd-media"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("media server: " + format, *args)

    def _plain(self, status: int, text: str = "") -> None:
        body = (text or self.responses.get(status, ("",))[0]).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._serve_media()

    def do_HEAD(self) -> None:
        self._serve_media()

    def do_POST(self) -> None:
        parts = self.path.split("?", 1)[0].split("/")
        length = _int(self.headers.get("Content-Length", ""))
        if len(parts) != 3 or parts[1] != CALLBACK or not 0 <= length <= MAX_CALLBACK:
            self._plain(404)
            return
        row_id = self.server_side.signer.check(CALLBACK, parts[2])
        if row_id is None:
            self._plain(403)
            return
        try:
            data = json.loads(self.rfile.read(length))
        except ValueError:
            self._plain(400, "the callback is not JSON")
            return
        if not isinstance(data, dict):
            self._plain(400, "the callback is not a JSON object")
            return
        if self.server_side._callback(row_id, data):
            self._plain(200, "ok")
        else:
            self._plain(409, "nothing is waiting for this callback")

    def do_PUT(self) -> None:
        self._plain(405)

    do_DELETE = do_PATCH = do_PUT

    def _serve_media(self) -> None:
        parts = self.path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[1] != MEDIA:
            self._plain(404)
            return
        row_id = self.server_side.signer.check(MEDIA, parts[2])
        servable = None if row_id is None else self.server_side._lookup(row_id)
        if servable is None:
            self._plain(403)
            return
        try:
            fd = os.open(servable.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            self._plain(404)
            return
        with os.fdopen(fd, "rb") as file:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not Identity.of(st).same_version(servable.identity):
                self._plain(409, "the file changed since it was hashed")
                return
            os.set_blocking(fd, True)
            self._send_file(file, st.st_size, servable.media_type)

    def _send_file(self, file: Any, size: int, media_type: str) -> None:
        first, last = 0, size - 1
        wanted = RANGE.match(self.headers.get("Range", "").strip())
        if wanted and (wanted.group(1) or wanted.group(2)):
            if wanted.group(1):
                first = int(wanted.group(1))
                last = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            else:
                first = max(0, size - int(wanted.group(2)))
            if first > last or first >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(last - first + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Cache-Control", "private, no-store")
        self.end_headers()
        if self.command == "HEAD":
            return
        file.seek(first)
        remaining = last - first + 1
        while remaining > 0:
            piece = file.read(min(PIECE, remaining))
            if not piece:
                break
            self.wfile.write(piece)
            remaining -= len(piece)
