"""The other side of syncd's alerts: a webhook receiver and a healthchecks.io-style endpoint.

Written from DESIGN.md "Alerts", not from syncd's sender: the receiver checks
`X-Syncd-Signature: sha256=HEX` as the HMAC-SHA256 of the raw body under the sandbox's
webhook secret (`/hooks/webhook/unsigned` takes any body: a receiver configured without
one), and keeps every delivery (valid or not, parsed or not) for the control API.
The health endpoint keeps each ping: `/hc/UUID` (plain) and `/hc/UUID/fail` (with its body).

Both can be made unavailable for a while (`POST /_sandbox/hooks/down`), answering 503 or
resetting the connection, to show that deliveries are retried and nothing is lost.

Control API: `GET /_sandbox/hooks/webhooks`, `GET /_sandbox/hooks/pings`,
`POST /_sandbox/hooks/down {"seconds": S, "how": "503" | "refuse"}` (seconds 0: up again).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterable
from typing import Any

from syncd.sandbox.context import Context
from syncd.sandbox.credentials import WEBHOOK_SECRET
from syncd.sandbox.web import (
    FORM_MAX,
    ConnectionDropped,
    Exchange,
    Reply,
    Route,
    control_error,
    error,
    json_reply,
    route,
)

SIGNATURE_HEADER = "X-Syncd-Signature"
DOWN_HOW = ("503", "refuse")
DOWN_MAX = 3600


def signature_valid(header: str | None, body: bytes) -> bool:
    """`sha256=HEX`, the HMAC-SHA256 of exactly these bytes under the shared secret."""
    if header is None or not header.startswith("sha256="):
        return False
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header.removeprefix("sha256=").strip().lower(), expected)


class HooksService:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._lock = threading.Lock()
        self._deliveries: list[dict[str, Any]] = []
        self._pings: list[dict[str, Any]] = []
        self._down_until = 0.0
        self._down_how = "503"

    def routes(self) -> Iterable[Route]:
        yield route("POST", "/hooks/webhook", self.webhook)
        yield route("POST", "/hooks/webhook/unsigned", self.unsigned_webhook)
        yield route("GET", r"/hc/(?P<uuid>[\w-]+)", self.ping)
        yield route("POST", r"/hc/(?P<uuid>[\w-]+)", self.ping)
        yield route("GET", r"/hc/(?P<uuid>[\w-]+)/fail", self.fail)
        yield route("POST", r"/hc/(?P<uuid>[\w-]+)/fail", self.fail)
        yield route("GET", "/_sandbox/hooks/webhooks", self.list_deliveries)
        yield route("GET", "/_sandbox/hooks/pings", self.list_pings)
        yield route("POST", "/_sandbox/hooks/down", self.go_down)

    def reset(self) -> None:
        with self._lock:
            self._deliveries.clear()
            self._pings.clear()
            self._down_until = 0.0

    def _refuse_while_down(self) -> None:
        with self._lock:
            down, how = time.monotonic() < self._down_until, self._down_how
        if not down:
            return
        if how == "refuse":
            raise ConnectionDropped
        raise error(503, "The receiver is down for maintenance.")

    def webhook(self, ex: Exchange, signed: bool = True) -> Reply:
        """A receiver that checks every signature (`signed`), or one that takes any body."""
        self._refuse_while_down()
        body = ex.body.read_all(FORM_MAX)
        valid = signature_valid(ex.header(SIGNATURE_HEADER), body)
        try:
            event = json.loads(body)
        except ValueError:
            event = None
        with self._lock:
            self._deliveries.append(
                {
                    "at": self._ctx.clock.now(),
                    "signature_valid": valid,
                    "signature": ex.header(SIGNATURE_HEADER),
                    "content_type": ex.header("Content-Type"),
                    "event": event,
                }
            )
        if signed and not valid:
            raise error(401, "The signature does not match the body.")
        return json_reply(200, {"ok": True})

    def unsigned_webhook(self, ex: Exchange) -> Reply:
        return self.webhook(ex, signed=False)

    def ping(self, ex: Exchange) -> Reply:
        return self._record_ping(ex, "ok")

    def fail(self, ex: Exchange) -> Reply:
        return self._record_ping(ex, "fail")

    def _record_ping(self, ex: Exchange, kind: str) -> Reply:
        self._refuse_while_down()
        body = ex.body.read_all(FORM_MAX).decode("utf-8", "replace")
        with self._lock:
            self._pings.append(
                {
                    "uuid": ex.group("uuid"),
                    "kind": kind,
                    "method": ex.method,
                    "at": self._ctx.clock.now(),
                    "body": body,
                }
            )
        return Reply(200, {"Content-Type": "text/plain"}, b"OK")

    def list_deliveries(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, list(self._deliveries))

    def list_pings(self, ex: Exchange) -> Reply:
        with self._lock:
            return json_reply(200, list(self._pings))

    def go_down(self, ex: Exchange) -> Reply:
        spec = ex.json()
        seconds = spec.get("seconds") if isinstance(spec, dict) else None
        how = spec.get("how", "503") if isinstance(spec, dict) else None
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds <= DOWN_MAX
            or how not in DOWN_HOW
        ):
            raise control_error(
                f'give {{"seconds": s}} with 0 <= s <= {DOWN_MAX}, and "how": "503" or "refuse"'
            )
        with self._lock:
            self._down_until = time.monotonic() + seconds
            self._down_how = str(how)
        return json_reply(200, {"down_for": seconds, "how": how})
