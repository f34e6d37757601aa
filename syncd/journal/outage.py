"""A journal that cannot be reached (fleet mode: PostgreSQL down or cut off) is ridden out:
whoever meets it waits with backoff and tries again, logged once per outage, and the journal
shows as degraded meanwhile. No thread dies of it and no row is touched: what was in flight
stays as the journal last recorded it, and its claim runs out for whichever host is back
first."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from syncd.journal.store import JournalUnavailable
from syncd.services.http import retry_delay

log = logging.getLogger(__name__)

MAX_WAIT = 30.0
"""The longest a thread waits before asking the journal again."""


class Outage:
    """Shared by the threads that call the journal; safe between them."""

    def __init__(self, who: str) -> None:
        self._who = who
        self._lock = threading.Lock()
        self._since: float | None = None
        self._tries = 0

    def hit(self, exc: JournalUnavailable) -> float:
        """Seconds to wait before trying again."""
        with self._lock:
            if self._since is None:
                self._since = time.monotonic()
                log.warning("%s: %s; waiting for it, nothing is lost", self._who, exc)
            self._tries += 1
            tries = self._tries
        return min(MAX_WAIT, retry_delay(tries, None))

    def over(self) -> None:
        """The journal answered again."""
        if self._since is None:
            return
        with self._lock:
            if self._since is not None:
                waited = time.monotonic() - self._since
                log.warning("%s: the journal answers again after %.0f s", self._who, waited)
                self._since, self._tries = None, 0

    def degraded(self) -> Iterable[str]:
        """`journal` while it cannot be reached (the metrics' and status' degraded list)."""
        return ("journal",) if self._since is not None else ()
