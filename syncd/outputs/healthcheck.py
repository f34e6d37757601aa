"""The dead man's switch (DESIGN.md, "Alerts"): healthchecks.io-style pings.

While all is well, `healthcheck_url` is requested every `healthcheck_interval`; while
something is wrong (a failed file, a degraded component), `URL/fail` is POSTed with a
one-line summary instead. A change between the two is reported at once, not at the next
interval. If the daemon dies or hangs, the pings stop, and the service watching them
raises the alarm: that is the point of a dead man's switch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from syncd.errors import SyncdError
from syncd.services.loading import load

if TYPE_CHECKING:
    from syncd.services.http import ServiceHttp

log = logging.getLogger(__name__)

CHECK_EVERY = 1.0
"""How often the health is looked at, so that a new problem is reported within a second."""
MAX_SUMMARY = 1000

Problem = Callable[[], str | None]
"""None while healthy, else a one-line summary of what is wrong."""


def fail_url(url: str) -> str:
    """URL/fail, before any query (healthchecks.io's `?create=1`, `?rid=`)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + "/fail"))


class HealthCheck:
    def __init__(self, url: str, interval: float, problem: Problem) -> None:
        self._url = url.rstrip("/")
        self._interval = interval
        self._problem = problem
        # urllib3: only when a URL is configured
        self._http: ServiceHttp = load("syncd.services.http").ServiceHttp("healthcheck")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="healthcheck", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)
        self._http.close()

    def use(self, url: str, interval: float) -> None:
        """A reload's new settings, from the next ping on."""
        self._url, self._interval = url.rstrip("/"), interval

    def _loop(self) -> None:
        last_ping = float("-inf")
        last_problem: str | None = None
        while not self._stop.is_set():
            try:
                problem = self._problem()
            except SyncdError as exc:  # the journal cannot be read (a lost database): say so
                problem = str(exc)
            if (problem is None) != (last_problem is None) or (
                time.monotonic() - last_ping >= self._interval
            ):
                self._ping(problem)
                last_ping, last_problem = time.monotonic(), problem
            self._stop.wait(CHECK_EVERY)

    def _ping(self, problem: str | None) -> None:
        try:
            if problem is None:
                self._http.send("GET", self._url, expect=range(200, 300))
            else:
                body = " ".join(problem.split())[:MAX_SUMMARY].encode()
                headers = {"Content-Type": "text/plain; charset=utf-8"}
                self._http.send(
                    "POST", fail_url(self._url), expect=range(200, 300), headers=headers, data=body
                )
        except SyncdError as exc:
            log.warning("health check ping failed: %s", exc)
