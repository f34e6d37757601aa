"""Twitter-style rate limiting: a fixed 15-minute window per endpoint group.

Every TON and Twitter response carries `x-rate-limit-limit`, `-remaining` and `-reset`
(epoch seconds), as the real services send them (protocols.md 2.7, 7); when a window is
used up the request gets 429 code 88 until the window resets on the sandbox clock.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

WINDOW = 900.0
"""Twitter's rate-limit window, 15 minutes."""


@dataclass(frozen=True, slots=True)
class RateState:
    limit: int
    remaining: int
    reset: float

    def headers(self) -> dict[str, str]:
        return {
            "x-rate-limit-limit": str(self.limit),
            "x-rate-limit-remaining": str(self.remaining),
            "x-rate-limit-reset": str(math.ceil(self.reset)),
        }


class RateLimiter:
    def __init__(self) -> None:
        self._windows: dict[str, tuple[float, int]] = {}
        """group -> (window end, requests counted in it)."""
        self._lock = threading.Lock()

    def hit(self, group: str, limit: int, now: float) -> tuple[RateState, bool]:
        """Count one request; the state to report, and whether the request may proceed."""
        with self._lock:
            end, used = self._windows.get(group, (0.0, 0))
            if now >= end:
                end, used = now + WINDOW, 0
            allowed = used < limit
            if allowed:
                used += 1
            self._windows[group] = (end, used)
        return RateState(limit, max(0, limit - used), end), allowed

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
