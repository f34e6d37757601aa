"""Upload rates: one bucket for the total, whose rate the timetable sets, and one per service.

Every body syncd sends passes through `take` piece by piece (services/http.py calls it),
so a new limit, from a reload or from the timetable, applies to uploads in flight.
"""

from __future__ import annotations

import threading
import time

from syncd.config import DaemonConfig, ServiceConfig
from syncd.work.flow.bucket import TokenBucket
from syncd.work.flow.clock import Clock

SCHEDULE_CHECK = 0.5
"""How often the timetable is looked at while bytes flow: a switch applies within this."""


def scheduled_rate(schedule: tuple[tuple[int, int], ...], default: int, minute: int) -> int:
    """The rate of the last entry at or before `minute`; before the first, the day's last."""
    if not schedule:
        return default
    rate = schedule[-1][1]
    for start, entry_rate in schedule:
        if start <= minute:
            rate = entry_rate
    return rate


class Bandwidth:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self.total = TokenBucket()
        self._services: dict[str, TokenBucket] = {}
        self._daemon: DaemonConfig | None = None
        self._lock = threading.Lock()
        self._next_check = 0.0

    def use(self, daemon: DaemonConfig, services: dict[str, ServiceConfig]) -> None:
        """Limits from a (re)loaded configuration, for uploads in flight too."""
        with self._lock:
            self._daemon = daemon
            for name, service in services.items():
                self._services.setdefault(name, TokenBucket()).set_rate(service.bandwidth)
            for name in set(self._services) - set(services):
                self._services[name].set_rate(0)
        self.refresh()

    def refresh(self) -> None:
        """The total as the timetable has it now."""
        self._next_check = time.monotonic() + SCHEDULE_CHECK
        daemon = self._daemon
        if daemon is None:
            return
        local = self._clock.local()
        minute = local.hour * 60 + local.minute
        self.total.set_rate(scheduled_rate(daemon.bandwidth_schedule, daemon.bandwidth, minute))

    def take(self, service: str, amount: int) -> None:
        """Block until `amount` bytes of `service` may leave."""
        if time.monotonic() >= self._next_check:
            self.refresh()
        bucket = self._services.get(service)
        if bucket is not None:
            bucket.take(amount)
        self.total.take(amount)
