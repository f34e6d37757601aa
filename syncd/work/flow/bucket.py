"""A token bucket whose rate can change at any moment, also while someone waits on it."""

from __future__ import annotations

import threading
import time

BURST_SECONDS = 0.1
"""An idle bucket saves up this much of its rate: enough to smooth scheduling jitter, too
little to show in any averaging window."""
MIN_BURST = 16 * 1024
LONGEST_NAP = 0.1
"""A waiter looks again this often, so that a new rate applies within a fraction of a second."""


class TokenBucket:
    """Bytes per second; a rate of 0 lets everything through.

    A taker that finds the bucket not in debt takes what it asks for at once, which may
    drive the bucket into debt; the next taker waits until the debt is paid off. So the
    long-run rate is exact whatever the piece sizes, and a change of rate applies to the
    debt as it stands.
    """

    def __init__(self, rate: int = 0) -> None:
        self._lock = threading.Lock()
        self._rate = rate
        self._tokens = 0.0
        self._last = time.monotonic()

    @property
    def rate(self) -> int:
        return self._rate

    def set_rate(self, rate: int) -> None:
        with self._lock:
            if rate == self._rate:
                return
            self._refill(time.monotonic())
            self._rate = rate
            self._tokens = min(self._tokens, self._burst()) if rate else 0.0

    def take(self, amount: int) -> None:
        """Block until `amount` bytes may be sent."""
        while (wait := self._reserve(amount)) > 0:
            time.sleep(min(wait, LONGEST_NAP))

    def _reserve(self, amount: int) -> float:
        """0 when `amount` was taken, else the seconds until the debt is paid."""
        with self._lock:
            if not self._rate:
                return 0.0
            self._refill(time.monotonic())
            if self._tokens >= 0:
                self._tokens -= amount
                return 0.0
            return -self._tokens / self._rate

    def _refill(self, now: float) -> None:
        if self._rate:
            self._tokens = min(self._burst(), self._tokens + (now - self._last) * self._rate)
        self._last = now

    def _burst(self) -> float:
        return max(self._rate * BURST_SECONDS, MIN_BURST)
