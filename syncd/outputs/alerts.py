"""Service-level webhook events (DESIGN.md, "Alerts"): paused, resumed, quota_exhausted and
degraded, on their way into the journal's outbox, which delivers them as it does a file's.

An event gets its id and time when it happens and is written to the outbox at once when it
can be. One that the journal cannot take now (above all `degraded` for the journal itself:
its disk is full, or a fleet's database is cut off) waits here, in memory, and the webhook
sender writes it once the journal takes writes again; so the alert arrives late, not never.
Only a daemon that dies while the journal is down loses what waits here, or one killed in
the instant between a pause (or a quota's hold) being saved and its event being written: the
two are separate transactions, the change first, so an event never reports what did not
happen.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from syncd.errors import SyncdError
from syncd.journal.codec import new_event_id
from syncd.journal.store import Outbox, ServiceEvent

log = logging.getLogger(__name__)

PAUSED = "paused"
RESUMED = "resumed"
QUOTA_EXHAUSTED = "quota_exhausted"
DEGRADED = "degraded"

WAITING_MAX = 1000
"""Events kept in memory while the journal refuses them; beyond that the oldest go."""


class Alerts:
    """Safe to share between threads; `announce` never blocks on the journal."""

    def __init__(self, outbox: Outbox) -> None:
        self._outbox = outbox
        self._waiting: deque[ServiceEvent] = deque(maxlen=WAITING_MAX)
        self._writing = threading.Lock()

    def announce(
        self,
        event: str,
        service: str | None = None,
        once: str | None = None,
        write: bool = True,
        **detail: Any,
    ) -> None:
        """`event` happened now. `write=False`: leave it for the sender thread to write (a
        caller inside the journal's own fault handling must not write to it)."""
        self._waiting.append(
            ServiceEvent(new_event_id(), event, time.time(), service, detail or None, once)
        )
        if write:
            self.flush()

    def degraded(self, component: str, reason: str) -> None:
        """control/degraded.py's listener: a component has just become degraded."""
        self.announce(DEGRADED, write=False, component=component, reason=reason)

    def flush(self) -> None:
        """Write what waits into the outbox, oldest first; what the journal refuses waits on."""
        if not self._writing.acquire(blocking=False):
            return  # another thread is writing them
        try:
            while self._waiting:
                event = self._waiting[0]
                try:
                    self._outbox.emit(event)
                except SyncdError as exc:  # the journal's fault: status says degraded
                    log.debug("%s event waits for the journal: %s", event.event, exc)
                    return
                self._waiting.popleft()
        finally:
            self._writing.release()

    def waiting(self) -> int:
        return len(self._waiting)
