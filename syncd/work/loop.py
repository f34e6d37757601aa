"""Threads that repeat one step until stopped, sleeping between steps unless woken.

A step's journal writes wait out a full disk, I/O errors or (fleet mode) an unreachable
database with backoff, the journal shown degraded meanwhile (journal/patience.py), as the
upload workers' do: the after-upload actions and the hooks pause rather than fail or lose
their thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from syncd.journal.patience import patiently

log = logging.getLogger(__name__)

Step = Callable[[], float]
"""One round of work; returns how long to sleep before the next (0: at once)."""


class Loop:
    """`count` threads running `step`; an error in a step is logged and the loop goes on, and
    a journal that cannot be written or reached is waited for with backoff."""

    def __init__(self, name: str, step: Step, count: int = 1) -> None:
        self._step = step
        self._cond = threading.Condition()
        self._stop = False
        self._woken = 0
        """Counts wake-ups, so one during a step is not lost to the wait after it."""
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{n}", daemon=True)
            for n in range(1, count + 1)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Ask the threads to stop after their current step; wait `timeout` for them."""
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def stopping(self) -> bool:
        with self._cond:
            return self._stop

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    def wake(self) -> None:
        with self._cond:
            self._woken += 1
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                woken = self._woken
            try:
                with patiently():
                    wait = self._step()
            except Exception:
                log.exception("%s hit an unexpected error; it goes on", self._threads[0].name)
                wait = 1.0
            with self._cond:
                if not self._stop and wait > 0 and woken == self._woken:
                    self._cond.wait(wait)
