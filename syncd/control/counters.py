"""What the daemon counts as it happens, and the sink it counts into without `[metrics]`.

The Prometheus registry (control/metrics.py) brings prometheus_client and waitress, a tenth
of a second of imports that a daemon without `[metrics]` would pay at every start for
counters nobody reads; it is loaded only when `[metrics]` is configured.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from syncd.work.outcomes import Outcomes


class Counters(Outcomes, Protocol):
    """The pipeline's outcomes, the services' requests and the webhook sender's deliveries."""

    def use(self, services: Iterable[str]) -> None:
        """The configured services (their series start at 0)."""

    def requested(self, service: str, code: str) -> None:
        """A request to `service` ended with HTTP status `code` ("none": no reply)."""

    def delivered(self, ok: bool) -> None:
        """A webhook delivery attempt ended."""


class Uncounted:
    """Counters nobody reads: `[metrics]` is not configured."""

    def use(self, services: Iterable[str]) -> None:
        pass

    def finished(self, service: str, outcome: str, size: int, seconds: float | None) -> None:
        pass

    def retrying(self, service: str) -> None:
        pass

    def requested(self, service: str, code: str) -> None:
        pass

    def delivered(self, ok: bool) -> None:
        pass
