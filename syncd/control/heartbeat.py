"""systemd's watchdog, pinged from a thread of its own.

The main loop reads the journal on every turn (the health check's ping, STATUS=, its
chores). A hung database or disk raises nothing and times nothing out: a read just does not
end, and the main loop, pinging by itself, went silent; systemd then killed a daemon that a
restart cannot help (the watchdog is to be pinged through a journal outage, README "Running
a fleet"). So this thread pings while the main loop's last turn found every part alive and
that turn is either recent or still waiting on a journal call; a main loop stuck anywhere
else is a hang of syncd's own, and systemd's restart is the cure. Once the journal has kept
a call waiting `JOURNAL_SLOW`, STATUS= says so (the main loop cannot), until it turns again.
"""

from __future__ import annotations

import threading
import time

from syncd.control.notify import Notifier
from syncd.journal.patience import Calls

FRESH = 1.5
"""A main loop turn counts as recent for this many ping intervals (it turns every one)."""
JOURNAL_SLOW = 4.0
"""Seconds a journal call may wait before STATUS= says the journal is not answering (as a
status reply does after as long: control/exchange.py)."""


class Heartbeat:
    """Runs only with a watchdog armed (`Notifier.watchdog_interval`)."""

    def __init__(self, notifier: Notifier, calls: Calls) -> None:
        self._notifier = notifier
        self._interval = notifier.watchdog_interval or 0.0
        self._calls = calls
        self._main = threading.get_ident()
        """The main loop's thread: the one building the daemon."""
        self._turned = time.monotonic()
        self._healthy = True
        """Until the main loop's first turn, what READY=1 said."""
        self._said_slow = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> None:
        if self._interval:
            self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def turned(self, healthy: bool) -> bool:
        """The main loop's turn, and whether its health check passed; True when STATUS=
        said the journal was slow meanwhile (the main loop says what it has to say again)."""
        self._turned, self._healthy = time.monotonic(), healthy
        said, self._said_slow = self._said_slow, False
        return said

    def _run(self) -> None:
        while not self._stopped.wait(self._interval / 2):
            now = time.monotonic()
            recent = now - self._turned < FRESH * self._interval
            if self._healthy and (recent or self._calls.since(self._main) is not None):
                self._notifier.watchdog()
            oldest = self._calls.oldest()
            if oldest is not None and now - oldest >= JOURNAL_SLOW:
                self._said_slow = True
                self._notifier.status(
                    f"degraded: journal not answering for {now - oldest:.0f} s"
                    " (a hung database or disk): waiting for it"
                )
