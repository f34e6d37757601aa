"""Signed, expiring tokens for the media server's URLs.

A token names the file's journal entry (row id), the push (attempt) it was made for, what
the URL is for (`media` or `callback`) and an expiry, and carries an HMAC-SHA256 under a key
kept 0600 in `state_dir`, so URLs stay valid across restarts while a video waits (in fleet
mode in the shared journal, so any host serves media and takes callbacks). A new push
makes new tokens; the daemon refuses those of an earlier one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from syncd.errors import SyncdError

KEY_FILE = "media.key"
MIN_KEY = 32
"""Bytes of a key made here; a shorter one is damaged."""
MEDIA = "media"
CALLBACK = "callback"

_NUMBER = re.compile(r"[0-9]{1,18}")


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
            key = secrets.token_bytes(MIN_KEY)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
                out.flush()
                os.fsync(out.fileno())
        if len(key) < MIN_KEY:
            raise SyncdError(f"{path}: the media server's key is damaged; remove it")
        return cls(key, public_url)

    @classmethod
    def shared(cls, shared_key: Callable[[str, Callable[[], bytes]], bytes], url: str) -> Signer:
        """Fleet mode: one key for every host, made by the first that asks."""
        return cls(shared_key(KEY_FILE, lambda: secrets.token_bytes(MIN_KEY)), url)

    def token(self, purpose: str, row_id: int, push: int, expires: float) -> str:
        payload = f"{purpose}.{row_id}.{push}.{int(expires)}"
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:20]
        return payload + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def check(self, purpose: str, token: str) -> tuple[int, int] | None:
        """(row id, push) of a valid, unexpired token for `purpose`; None otherwise."""
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != purpose:
            return None
        if not all(_NUMBER.fullmatch(part) for part in parts[1:4]):
            return None
        row_id, push, expires = (int(part) for part in parts[1:4])
        expected = self.token(purpose, row_id, push, expires)
        if not hmac.compare_digest(expected.encode(), token.encode(errors="replace")):
            return None
        if expires < time.time():
            return None
        return row_id, push

    def media_url(self, row_id: int, push: int, name: str, expires: float) -> str:
        token = self.token(MEDIA, row_id, push, expires)
        return f"{self.public_url}/{MEDIA}/{token}/{quote(name)}"

    def callback_url(self, row_id: int, push: int, expires: float) -> str:
        return f"{self.public_url}/{CALLBACK}/{self.token(CALLBACK, row_id, push, expires)}"
