"""Flow control's state and decisions: parallel slots, pauses, service-wide holds, quotas.

Every hold is service-wide (DESIGN.md, "Flow control"): a pause, a used-up quota and a
429 with `x-rate-limit-reset` each stop a whole service, and its waiting files are `held`
with the reason and the release time until the hold ends. Pauses, holds and quota counts
are kept in the journal, so a restart keeps them, and in a fleet every host shares them
(read again on each tick). `max_parallel` counts this host's uploads only.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from syncd.config import Config, ServiceConfig
from syncd.errors import RateLimited
from syncd.outputs.alerts import PAUSED as PAUSED_EVENT
from syncd.outputs.alerts import QUOTA_EXHAUSTED, RESUMED
from syncd.outputs.webhooks import rfc3339
from syncd.work.flow.bandwidth import Bandwidth
from syncd.work.flow.clock import Clock, Steps
from syncd.work.flow.holds import Hold, Holds
from syncd.work.flow.quota import Quotas, StateStore

log = logging.getLogger(__name__)

EVERY = "*"
"""Stands in the paused set for "every service", also those configured later."""
PAUSED = "paused"
PAUSED_KEY = "paused"
"""The journal's flow value of the services paused (EVERY: all)."""
QUOTA_HOLD = "quota:"
"""How the reason of a quota's hold begins."""


def _quota(service: ServiceConfig) -> tuple[int, int, int]:
    return service.daily_files, service.daily_bytes, service.quota_reset


class FlowStore(StateStore, Protocol):
    def hold_waiting(self, service: str, reason: str, until: float | None) -> int:
        """Every file of `service` waiting for a worker becomes held."""
        ...

    def release_held(self, service: str) -> int:
        """Every held file of `service` waits for a worker again."""
        ...

    def shift_retries(self, seconds: float) -> int:
        """The wall clock stepped by `seconds`: retry due times move as much."""
        ...


class HasService(Protocol):
    @property
    def service(self) -> str: ...


R = TypeVar("R", bound=HasService)


class ServiceMeter:
    """Flow control for one upload's requests (services/http.py's Meter)."""

    def __init__(self, flow: Flow, service: str) -> None:
        self._flow = flow
        self._service = service

    def pace(self, amount: int) -> None:
        self._flow.bandwidth.take(self._service, amount)

    def before_request(self) -> None:
        """A rate limit stops even the next step of an upload under way (a pause lets
        requests go on: chunked uploads stop at a chunk boundary by themselves)."""
        hold = self._flow.hold_of(self._service)
        if hold is not None and hold.stops_requests and hold.until is not None:
            left = max(0.0, hold.until - self._flow.clock.now())
            raise RateLimited(f"{self._service}: held: {hold.reason}", left)

    def rate_limited(self, retry_after: float) -> None:
        self._flow.rate_limited(self._service, retry_after)


class FlowGauges:
    """Flow control as the metrics read it (control/metrics.py's FlowView)."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow

    def paused(self) -> set[str]:
        return set(self._flow.paused_names())

    def quota_remaining(self) -> dict[tuple[str, str], int]:
        return self._flow.quota_left()


class Announce(Protocol):
    """outputs/alerts.py's Alerts.announce: a service-level webhook event happened."""

    def __call__(
        self, event: str, service: str | None = None, once: str | None = None, **detail: Any
    ) -> None: ...


class Flow:
    def __init__(
        self, store: FlowStore, clock: Clock, wake: Callable[[], None], announce: Announce
    ) -> None:
        """`announce`: the webhook events paused, resumed and quota_exhausted."""
        self.clock = clock
        self.steps = Steps()
        self._announce = announce
        self.bandwidth = Bandwidth(clock)
        self.quotas = Quotas(store, clock)
        self._store = store
        self._wake = wake
        self._lock = threading.Lock()
        self._claiming = threading.Lock()
        self._services: dict[str, ServiceConfig] = {}
        self._active: Counter[str] = Counter()
        self._paused: set[str] = set()
        self._holds = Holds(store)
        self._load()

    def _load(self) -> None:
        """Pauses and holds as the journal keeps them: a restart's, or (in a fleet, whose
        journal every host shares) another host's."""
        with self._lock:  # as pause and resume write them
            self._paused = set(self._store.flow_state(PAUSED_KEY) or ())
        self._holds.load()

    def meter(self, service: str) -> ServiceMeter:
        return ServiceMeter(self, service)

    def use(self, config: Config) -> None:
        """The limits of a (re)loaded configuration; in-flight uploads take them too."""
        before, self._services = self._services, dict(config.services)
        self.bandwidth.use(config.daemon, config.services)
        self._requota(
            lambda name: name in before and _quota(before[name]) != _quota(self._services[name])
        )
        # A service new at this load (at start, every one): its files a crash left held by a
        # hold that had just ended, or that a pause's end did not release while a reload had
        # taken the service away, go on (those still held are held by the hold in force).
        for name in sorted(self._services.keys() - before.keys()):
            if self.hold_of(name) is None:
                self._store.release_held(name)
        self._wake()

    def _requota(self, changed: Callable[[str], bool]) -> None:
        """A quota's hold is the daemon's own sum against the limits of its time: once they
        change, or today's quota has room again (a restart with a raised one), it ends and
        the held files meet the quota anew (held again, costing no request, when they still
        do not fit)."""
        self._end_holds(
            lambda name, hold: (
                hold.reason.startswith(QUOTA_HOLD)
                and name in self._services
                and (changed(name) or all(self.quotas.remaining(self._services[name]).values()))
            ),
            "quota changed, hold ended",
        )

    def _end_holds(self, ends: Callable[[str, Hold], bool], why: str) -> None:
        """The holds `ends` picks are over: their services' held files are released (or
        held by what still holds them)."""

        def end(holds: dict[str, Hold]) -> list[str]:
            ended = [name for name, hold in holds.items() if ends(name, hold)]
            for name in ended:
                del holds[name]
            return ended

        ended = self._holds.change(end)
        for name in ended:
            log.info("%s: %s", name, why)
            self._release(name)

    # -- slots -------------------------------------------------------------------------

    def claim(self, take: Callable[[frozenset[str]], R | None]) -> R | None:
        """`take` the next row, skipping services whose `max_parallel` is reached. Claims
        are one at a time; `take` may wait out a journal outage, so `_lock` (which pause,
        resume and the main loop's tick take) is not held across it."""
        with self._claiming:
            with self._lock:
                full = self.full()
            row = take(full)
            if row is not None:
                with self._lock:
                    self._active[row.service] += 1
            return row

    def full(self) -> frozenset[str]:
        """Services with as many uploads in flight as `max_parallel` allows."""
        return frozenset(
            name
            for name, service in self._services.items()
            if service.max_parallel and self._active[name] >= service.max_parallel
        )

    def finished(self, service: str) -> bool:
        """One upload of `service` is over; True when that freed a slot others waited for."""
        with self._lock:
            was_full = service in self.full()
            self._active[service] -= 1
            return was_full

    # -- holds -------------------------------------------------------------------------

    def paused(self, service: str) -> bool:
        return EVERY in self._paused or service in self._paused

    def hold_of(self, service: str, size: int | None = None) -> Hold | None:
        """Why `service` may not start an upload now, if it may not. TooLarge (given the
        file's `size`) for a file no day's quota can take: no hold would ever end."""
        if size is not None and service in self._services:
            self.quotas.check_size(self._services[service], size)
        if self.paused(service):
            return Hold(PAUSED, None)
        return self._holds.get(service)

    def admit(self, service: ServiceConfig, file_id: int, size: int) -> Hold | None:
        """Count the file against the quota; the hold when it does not fit."""
        full = self.quotas.admit(service, file_id, size)
        if full is None:
            return None
        until, limit = full
        hold = self.hold(service.name, f"{QUOTA_HOLD} {limit} used up", until)
        self._announce(  # once a quota day, however many files (or hosts) meet the hold
            QUOTA_EXHAUSTED,
            service.name,
            once=f"{QUOTA_EXHAUSTED}:{service.name}:{until:.0f}",
            reason=hold.reason,
            until=rfc3339(until),
        )
        return hold

    def rate_limited(self, service: str, retry_after: float) -> Hold:
        until = self.clock.now() + retry_after
        return self.hold(service, "rate limited (HTTP 429)", until, stops_requests=True)

    def hold(self, service: str, reason: str, until: float, stops_requests: bool = False) -> Hold:
        """Hold the whole of `service` until `until` (flow clock)."""
        hold = Hold(reason, until, stops_requests)

        def put(holds: dict[str, Hold]) -> list[str]:
            holds[service] = hold
            return [service]

        self._holds.change(put)
        self._store.hold_waiting(service, reason, until)
        log.warning("%s held until %s: %s", service, self.clock.local(until).isoformat(), reason)
        return hold

    def tick(self) -> None:
        """Take in what other hosts of a fleet decided, and end the holds whose time has
        come; called from the daemon's main loop."""
        self._load()
        stepped = self.steps.stepped()
        if stepped < 0:  # (forward: what waits is due sooner; nothing is lost)
            self._stepped_back(stepped)
        now = self.clock.now()
        self._end_holds(lambda _, hold: hold.until is not None and hold.until <= now, "hold ended")
        self.bandwidth.refresh()

    def _stepped_back(self, seconds: float) -> None:
        """Retries and rate limits are delays counted from when they were given: they move
        with the clock (quota days and timetables are the wall clock's own: they stay)."""

        def move(holds: dict[str, Hold]) -> list[str]:
            moved = {
                name: replace(hold, until=hold.until + seconds)
                for name, hold in holds.items()
                if hold.stops_requests and hold.until is not None
            }
            holds.update(moved)
            return list(moved)

        moved = self._holds.change(move)
        if self._store.shift_retries(seconds) or moved:
            log.warning(
                "the wall clock stepped back %.0f s: retries and rate limits keep their delays",
                -seconds,
            )
            self._wake()

    def _release(self, service: str) -> None:
        """One hold of `service` ended: its held files wait for a worker again, or, while
        another hold is still in force (a pause, a quota), are held by that one instead."""
        still = self.hold_of(service)
        if self._store.release_held(service) and still is None:
            self._wake()
        if still is not None:
            self._store.hold_waiting(service, still.reason, still.until)

    # -- pause and resume ----------------------------------------------------------------

    def pause(self, services: Iterable[str]) -> list[str]:
        """Pause `services` (none named: every one); the names now paused."""
        names = set(services) or {EVERY}
        before, after = self._change_paused(lambda paused: paused | names)
        for name in self._services if EVERY in names else names:
            self._store.hold_waiting(name, PAUSED, None)
        for name in sorted(after - before):
            self._announce(PAUSED_EVENT, name)
        return self.paused_names()

    def resume(self, services: Iterable[str]) -> list[str]:
        """Resume `services` (none named: every one); the names still paused."""
        names = set(services)

        def resumed(paused: set[str]) -> set[str]:
            if not names:
                return set()
            if EVERY in paused:
                return set(self._services) - names
            return paused - names

        before, after = self._change_paused(resumed)
        for name in sorted(before - after):
            self._release(name)
            self._announce(RESUMED, name)
        return self.paused_names()

    def _change_paused(self, change: Callable[[set[str]], set[str]]) -> tuple[set[str], set[str]]:
        """Change the paused set where the journal keeps it, atomically: in a fleet the one
        host whose change it is announces it, once. The service names paused before and after."""
        seen: dict[str, set[str]] = {}

        def apply(stored: Any) -> list[str]:
            seen["before"] = set(stored or ())
            seen["after"] = change(seen["before"])
            return sorted(seen["after"])

        with self._lock:
            self._store.change_flow_state(PAUSED_KEY, apply)
            self._paused = seen["after"]
        return self._named(seen["before"]), self._named(seen["after"])

    def _named(self, paused: set[str]) -> set[str]:
        return set(self._services) if EVERY in paused else paused

    def paused_names(self) -> list[str]:
        return sorted(self._named(self._paused))

    # -- status --------------------------------------------------------------------------

    def quota_left(self) -> dict[tuple[str, str], int]:
        """(service, unit) -> what is left of today's quota; unit `files` or `bytes`."""
        return {
            (name, unit): left
            for name, service in self._services.items()
            for unit, left in self.quotas.remaining(service).items()
        }

    def status(self) -> dict[str, Any]:
        """Flow control's part of the status reply."""
        return {
            "paused": self.paused_names(),
            "bandwidth": {
                "total": self.bandwidth.total.rate,
                "services": {
                    name: s.bandwidth for name, s in self._services.items() if s.bandwidth
                },
            },
            "service_holds": [
                {"service": name, "reason": h.reason, "until": h.until}
                for name, h in self._holds.items()
            ],
            "quota_remaining": {
                name: left
                for name, service in self._services.items()
                if (left := self.quotas.remaining(service))
            },
        }
