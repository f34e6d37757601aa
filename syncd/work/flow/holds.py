"""The service-wide holds (a used-up quota, a 429's rate limit), in memory and in the journal.

A change is made in memory at once and written to the journal outside every lock that
others wait on: a worker's write may wait out a journal outage (a 429 met on a full disk),
and pause, resume and the main loop's tick, which the watchdog's pings depend on, must not
wait with it. One thread writes at a time; a change made while it writes is left to it,
and it writes again until it has written the latest. Holds are read back from the journal
(a restart's, or in a fleet another host's) only while no write of this host's is pending.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from syncd.work.flow.quota import StateStore

HOLDS_KEY = "holds"
"""The journal's flow value of the service-wide holds: name -> [reason, until, stops]."""


@dataclass(frozen=True, slots=True)
class Hold:
    """Why a service takes no uploads, and till when."""

    reason: str
    until: float | None
    """Epoch seconds on the flow clock; None until someone resumes it (a pause)."""
    stops_requests: bool = False
    """A rate limit: even the next request of an upload under way waits. A quota stops only
    uploads that have not started (one it let through goes on to the end)."""


Change = Callable[[dict[str, Hold]], list[str]]
"""Changes the holds in place; the services it changed."""


class Holds:
    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._lock = threading.Lock()
        self._writing = threading.Lock()
        """Held by the one thread writing the holds to the journal."""
        self._changes = 0
        """Changes made so far; the writer writes until it has written the last."""
        self._holds: dict[str, Hold] = {}

    def load(self) -> None:
        """The holds as the journal keeps them, unless it has not got this host's latest."""
        with self._lock:
            if self._writing.locked():
                return
            self._holds = {
                name: Hold(str(reason), until, bool(stops))
                for name, (reason, until, stops) in (
                    self._store.flow_state(HOLDS_KEY) or {}
                ).items()
            }

    def get(self, service: str) -> Hold | None:
        return self._holds.get(service)

    def items(self) -> list[tuple[str, Hold]]:
        with self._lock:
            return sorted(self._holds.items())

    def change(self, change: Change) -> list[str]:
        """`change` the holds now, and write them to the journal (see above)."""
        with self._lock:
            changed = change(self._holds)
            if not changed:
                return changed
            self._changes += 1
            if not self._writing.acquire(blocking=False):
                return changed
        try:
            while True:
                with self._lock:
                    written = self._changes
                    holds = {
                        n: [h.reason, h.until, h.stops_requests] for n, h in self._holds.items()
                    }
                self._store.save_flow_state(HOLDS_KEY, holds)
                with self._lock:
                    if self._changes == written:
                        self._writing.release()
                        return changed
        except BaseException:
            self._writing.release()
            raise
