"""Components that cannot do their job for now, and why: the status reply's `degraded`.

A disk that fills up or a device that returns I/O errors is not a reason to lose a thread
or restart the daemon: the component that hits it says so here, pauses and tries again
with backoff, and clears its entry once it works again. Status and STATUS= show the list;
workers take no new file while sidecars cannot be written (a journal write that meets a
full disk waits by itself, see journal/patience.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

JOURNAL = "journal"
"""The journal cannot be written (SQLite reports the disk full, or an I/O error)."""
SIDECARS = "sidecars"
"""A sidecar cannot be written for a passing reason (disk full, I/O error)."""
DESCRIPTORS = "open files"
"""Files cannot be opened for want of descriptors (files.SCARCE): they wait, then go on."""
INOTIFY = "inotify"
"""No inotify instance to spare: changes are found by rescans only."""
SETTLER = "settler"
"""A pass of intake's settler met a defect: it scans again, with backoff, until one passes."""
FLEET = "fleet"
"""Another process took this one's host_id over (journal/pg_hosts.py): no new work here."""


class Degraded:
    """Safe to share between threads; `changes` counts updates, for STATUS=."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._faults: dict[str, tuple[str, float]] = {}
        self._listeners: list[Callable[[str, str], None]] = []
        self.changes = 0

    def listen(self, became_degraded: Callable[[str, str], None]) -> None:
        """Call `became_degraded(component, reason)` on every move into degraded (once per
        fault, not per failed attempt). It is called from inside the failing component, the
        journal's fault handling among them: it must not write to the journal itself."""
        self._listeners.append(became_degraded)

    def set(self, component: str, reason: str) -> None:
        with self._lock:
            old = self._faults.get(component)
            if old is not None and old[0] == reason:
                return
            self._faults[component] = (reason, time.time() if old is None else old[1])
            self.changes += 1
        if old is None:
            log.warning("%s degraded: %s; pausing and trying again", component, reason)
            for listener in self._listeners:
                try:  # whoever reports the fault must not fail for want of an alert
                    listener(component, reason)
                except Exception:
                    log.exception("cannot announce that %s is degraded", component)

    def clear(self, component: str) -> None:
        with self._lock:
            if self._faults.pop(component, None) is None:
                return
            self.changes += 1
            self._lock.notify_all()
        log.warning("%s works again; resuming", component)

    def has(self, component: str) -> bool:
        with self._lock:
            return component in self._faults

    def wait_clear(self, component: str, timeout: float) -> bool:
        """Wait up to `timeout` for `component`'s fault to clear; True once it has none."""
        with self._lock:
            return self._lock.wait_for(lambda: component not in self._faults, timeout)

    def components(self) -> list[str]:
        """What is degraded now: the metrics' `syncd_degraded{component}`."""
        with self._lock:
            return sorted(self._faults)

    def snapshot(self) -> list[dict[str, Any]]:
        """The status reply's `degraded`: `since` an RFC 3339 time."""
        with self._lock:
            faults = sorted(self._faults.items())
        return [
            {
                "component": component,
                "reason": reason,
                "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(since)),
            }
            for component, (reason, since) in faults
        ]

    def summary(self) -> str:
        """One line for STATUS=, empty when all is well."""
        with self._lock:
            faults = sorted(self._faults.items())
        return "; ".join(f"degraded: {c}: {reason}" for c, (reason, _) in faults)


class Backoff:
    """When to try a degraded component again: 1 s, doubling, up to a minute."""

    FIRST = 1.0
    LONGEST = 60.0

    def __init__(self) -> None:
        self.delay = self.FIRST

    def failed(self) -> float:
        """The delay to wait now; the next one is longer."""
        delay, self.delay = self.delay, min(self.delay * 2, self.LONGEST)
        return delay

    def reset(self) -> None:
        self.delay = self.FIRST
