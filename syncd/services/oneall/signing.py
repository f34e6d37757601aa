"""The media server's URLs: tokens signed with a key kept in `state_dir`, and what a URL
may serve. Apart from the server itself, so that the OneAll uploader and the callback
bookkeeping use them without loading an HTTP server."""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from syncd.errors import SyncdError
from syncd.files import Identity

KEY_FILE = "media.key"
MEDIA = "media"
CALLBACK = "callback"


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
            key = os.urandom(32)
            with os.fdopen(fd, "wb") as out:
                out.write(key)
                out.flush()
                os.fsync(out.fileno())
        if len(key) < 32:
            raise SyncdError(f"{path}: the media server's key is damaged; remove it")
        return cls(key, public_url)

    def token(self, purpose: str, row_id: int, expires: float) -> str:
        import hashlib  # with hmac: OpenSSL, loaded at the first OneAll upload, not at start
        import hmac

        payload = f"{purpose}.{row_id}.{int(expires)}"
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:20]
        return payload + "." + base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def check(self, purpose: str, token: str) -> int | None:
        """The row id a valid, unexpired token for `purpose` names; None otherwise."""
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != purpose:
            return None
        import hmac

        expected = self.token(purpose, digits(parts[1]), digits(parts[2]))
        if not hmac.compare_digest(expected.encode(), token.encode()):
            return None
        if digits(parts[2]) < time.time():
            return None
        return digits(parts[1])

    def media_url(self, row_id: int, name: str, expires: float) -> str:
        return f"{self.public_url}/media/{self.token(MEDIA, row_id, expires)}/{quote(name)}"

    def callback_url(self, row_id: int, expires: float) -> str:
        return f"{self.public_url}/callback/{self.token(CALLBACK, row_id, expires)}"


def digits(text: str) -> int:
    """A decimal number from a URL or a header; -1 for anything else."""
    return int(text) if text.isdigit() else -1


@dataclass(frozen=True, slots=True)
class Servable:
    """What the journal says a row being pushed is: where it lies and what it must be."""

    path: Path
    identity: Identity
    media_type: str
