"""syncd's notion of the wall clock for flow control: schedules, quota days, holds.

`SYNCD_CLOCK_OFFSET_FILE` names a file holding seconds to add to the system clock, read
at every look at the clock. Tests and demos use it to cross a quota reset or a rate-limit
horizon without waiting for it; in production it is unset and costs nothing.
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta

OFFSET_FILE = "SYNCD_CLOCK_OFFSET_FILE"
DAY = 86400.0


STEP = 5.0
"""Seconds the wall clock must jump against the monotonic one to count as a step (NTP
slews far slower). A suspend shows as a step forward (CLOCK_MONOTONIC stops while the
machine sleeps): only steps back move due times."""


class Steps:
    """Tells of wall-clock steps (an admin's `date -s`, an NTP step, a VM restored): due
    times kept as epoch seconds (they survive restarts) would otherwise wait the step out."""

    def __init__(self) -> None:
        self._offset = time.time() - time.monotonic()

    def stepped(self) -> float:
        """Seconds the wall clock jumped since the last look (negative: back), or 0.0."""
        offset = time.time() - time.monotonic()
        step, self._offset = offset - self._offset, offset  # (a slow slew never adds up)
        return step if abs(step) >= STEP else 0.0


class Clock:
    def __init__(self, offset_file: str | None = None) -> None:
        self._file = offset_file if offset_file is not None else os.environ.get(OFFSET_FILE)

    def now(self) -> float:
        """Epoch seconds, offset when the knob says so."""
        return time.time() + self._offset()

    def local(self, when: float | None = None) -> datetime:
        return datetime.fromtimestamp(self.now() if when is None else when).astimezone()

    def next_time_of_day(self, minute: int, after: float | None = None) -> float:
        """The first moment after `after` at which the local clock reads `minute` (HH:MM), or
        reads past it for the first time, on the night the clocks skip it."""
        start = self.local(after)
        day = start.replace(second=0, microsecond=0)
        for days in range(3):
            candidate = (day + timedelta(days=days)).replace(hour=minute // 60, minute=minute % 60)
            when = _first_reading(candidate.replace(tzinfo=None))
            if when > start.timestamp():
                return when
        raise AssertionError("a time of day recurs within three days")

    def last_time_of_day(self, minute: int, at: float | None = None) -> float:
        """The latest moment at or before `at` at which the local clock read `minute`."""
        at = self.now() if at is None else at
        candidate = self.next_time_of_day(minute, at - 1.5 * DAY)
        while (following := self.next_time_of_day(minute, candidate)) <= at:
            candidate = following
        return candidate

    def _offset(self) -> float:
        if not self._file:
            return 0.0
        try:
            with open(self._file, encoding="ascii") as f:
                return float(f.read().strip() or 0)
        except (OSError, ValueError):
            return 0.0


def _first_reading(wall: datetime) -> float:
    """The first moment the local clock reads `wall` or later: in the hour that a spring
    DST change skips, the change itself (as cron does), not an hour early."""
    when = wall.astimezone().timestamp()  # astimezone() settles the day's UTC offset (DST)
    if datetime.fromtimestamp(when) == wall:
        return when
    earlier, later = sorted((when, wall.replace(fold=1).astimezone().timestamp()))
    while later - earlier > 0.001:  # the change, at a whole second, lies between the two
        middle = (earlier + later) / 2
        earlier, later = (
            (middle, later) if datetime.fromtimestamp(middle) < wall else (earlier, middle)
        )
    return float(round(later))
