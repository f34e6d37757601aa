"""Webhooks (DESIGN.md, "Alerts"): events POSTed as signed JSON from a durable outbox.

The journal writes an outbox row per subscribed `[[webhook]]` in the same transaction as
the state change it reports, so an event exists exactly when its change does, across any
crash. This thread only delivers: due rows in order, each POSTed with
`X-Syncd-Signature: sha256=HEX` (HMAC-SHA256 of the exact body), deleted on a 2xx, kept
with a backoff on anything else, which holds back every row for that receiver: a receiver
that is down gets one attempt per backoff step, however many events wait for it.
Delivery is at least once: a receiver dedups on `id`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from syncd.config import WebhookConfig
from syncd.errors import RetryableError, SyncdError
from syncd.journal.patience import StorageFault, patiently
from syncd.journal.store import Delivery, Outbox
from syncd.services.loading import load

if TYPE_CHECKING:
    from syncd.services.http import ServiceHttp

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Syncd-Signature"
BATCH = 50
IDLE_WAIT = 1.0
"""The longest a new event waits for the sender to look (the journal does not wake it)."""


def signature(secret: str, body: bytes) -> str:
    import hashlib  # OpenSSL's: loaded by the first signed delivery, not at every start
    import hmac

    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def rfc3339(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _json_value(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise TypeError(f"cannot send {type(value).__name__}")


def body_of(delivery: Delivery, service_type: str | None) -> bytes:
    """The event as the contract spells it; `result` for done, `error` for failed; a name's
    bytes that are not UTF-8 as `\\xNN` (the body stays valid UTF-8 JSON for strict parsers). A
    service-level event has no file fields at all: id, event, at, `service` when it names
    one, and its own (component and reason for degraded; reason and until for a quota)."""
    if delivery.detail is not None:
        fields: dict[str, Any] = {"id": delivery.event_id, "event": delivery.event}
        fields["at"] = rfc3339(delivery.at)
        if delivery.service:
            fields["service"] = delivery.service
        return _json({**fields, **delivery.detail})
    event: dict[str, Any] = {
        "id": delivery.event_id,
        "event": delivery.event,
        "at": rfc3339(delivery.at),
        "path": delivery.path.decode("utf-8", "backslashreplace"),
        "service": delivery.service,
        "type": service_type,
        "sha256": delivery.sha256,
        "size": delivery.size,
    }
    if delivery.error is not None:
        event["error"] = delivery.error
    else:
        event["result"] = delivery.result
    return _json(event)


def _json(event: dict[str, Any]) -> bytes:
    return json.dumps(event, default=_json_value, separators=(",", ":")).encode()


def shown_target(url: str) -> str:
    """A receiver as status and logs name it: its host only (a URL may carry a token)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


class _Poster(Protocol):
    """What a delivery needs of services.http.ServiceHttp (loaded by the sender thread)."""

    def send(
        self,
        method: str,
        url: str,
        *,
        expect: Collection[int],
        headers: Mapping[str, str] | None = None,
        data: Any = None,
    ) -> object: ...


class Webhooks:
    """The delivering thread. `service_types` maps a service name to its type."""

    def __init__(
        self,
        outbox: Outbox,
        webhooks: tuple[WebhookConfig, ...],
        service_types: Callable[[], Mapping[str, str]],
        delivered: Callable[[bool], None],
        waiting: Callable[[], None],
    ) -> None:
        """`waiting`: writes the service-level events that wait for the journal (alerts.py)."""
        self._outbox = outbox
        self._write_waiting = waiting
        self._service_types = service_types
        self._count = delivered
        self._secrets: dict[str, str | None] = {}
        self._unpruned: dict[str, tuple[str, ...]] | None = None
        """Receivers whose outbox a reload could not prune yet (the journal out of reach)."""
        self._stop = threading.Event()
        self._unloaded = False
        """The HTTP client could not be loaded last round (said once)."""
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self.use(webhooks)

    def use(self, webhooks: tuple[WebhookConfig, ...]) -> None:
        """Which receivers get which events, from now on (start and reload). With the
        journal out of reach the outbox is pruned by `catch_up` once it is back."""
        self._secrets = {hook.url: hook.secret for hook in webhooks}
        self._unpruned = {hook.url: hook.events for hook in webhooks}
        with contextlib.suppress(StorageFault):
            self.catch_up()

    def catch_up(self) -> None:
        """The outbox pruned of receivers no longer configured, if a reload could not yet
        (the daemon's main loop calls this every tick; StorageFault: not yet)."""
        if self._unpruned is None:
            return
        dropped = self._outbox.subscribe(self._unpruned)
        self._unpruned = None
        if dropped:
            log.warning("dropped %d webhook deliveries to receivers no longer configured", dropped)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=15)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        http: ServiceHttp | None = None
        try:
            while not self._stop.is_set():
                try:
                    self._write_waiting()
                    http = http or self._http()
                    if http is not None:
                        with patiently():  # the outbox waits out a full disk (patience.py)
                            self._round(http)
                except Exception:
                    log.exception("the webhook sender hit an unexpected error; it goes on")
                self._stop.wait(IDLE_WAIT)
        finally:
            if http is not None:
                http.close()

    def _http(self) -> ServiceHttp | None:
        """urllib3 loads here, with the first webhook configured, not at every start. A load
        cut short (no descriptor to spare: a module is a file to open) is tried again the
        next round, said once: the thread must not end with it, nor the deliveries."""
        try:
            http: ServiceHttp = load("syncd.services.http").ServiceHttp("webhook")
        except (ImportError, OSError) as exc:
            if not self._unloaded:
                log.warning("webhooks wait: cannot load their HTTP client: %s", exc)
            self._unloaded = True
            return None
        self._unloaded = False
        return http

    def _round(self, http: _Poster) -> None:
        """Deliver what is due, a batch at a time, until nothing is or a receiver fails."""
        while not self._stop.is_set():
            due = self._outbox.due(time.time(), BATCH)
            failing: set[str] = set()
            for delivery in due:
                if delivery.target not in failing and not self._deliver(delivery, http):
                    failing.add(delivery.target)
                if self._stop.is_set():
                    return
            if failing or len(due) < BATCH:
                return

    def _deliver(self, delivery: Delivery, http: _Poster) -> bool:
        if delivery.target not in self._secrets:
            return True  # unsubscribed meanwhile; use() has dropped it
        secret = self._secrets[delivery.target]
        body = body_of(delivery, self._service_types().get(delivery.service))
        headers = {"Content-Type": "application/json"}
        if secret is not None:
            headers[SIGNATURE_HEADER] = signature(secret, body)
        try:
            http.send("POST", delivery.target, expect=range(200, 300), headers=headers, data=body)
        except SyncdError as exc:
            retry_after = exc.retry_after if isinstance(exc, RetryableError) else None
            delay: float = load("syncd.services.http").retry_delay(
                delivery.attempts + 1, retry_after
            )
            due = time.time() + delay
            self._outbox.failed(delivery.seq, str(exc), due)
            self._count(False)
            log.warning(
                "webhook %s to %s failed (attempt %d): %s",
                delivery.event,
                shown_target(delivery.target),
                delivery.attempts + 1,
                exc,
            )
            return False
        self._outbox.delivered(delivery.seq)
        self._count(True)
        return True
