"""Daily quotas per service: files and bytes counted per quota day, kept in the journal.

A quota day starts at the service's `quota_reset` (local time); the count is stored with
the start of the day it belongs to, so a restart keeps it and a new day starts it afresh.
A file counts once a day: its retries and its resumption after a pause are not new files.
The count lists the day's files that may come back for that reason; those done since are
dropped from it now and then, so that it holds what is in flight, not the whole day.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from syncd.config import ServiceConfig
from syncd.work.flow.clock import Clock

QUOTA_PREFIX = "quota:"
"""The journal's flow value of a service's count, under this prefix and its name."""
PRUNE_FROM = 256
"""Files a day's count lists before it is first cleared of those that are done; then each
time it has grown to twice what was left. Every admit rewrites the count: listing the whole
day made an admit cost as much as the files before it (3 ms each at 20,000 a day)."""


class StateStore(Protocol):
    """Small named values that flow control keeps across restarts (JSON-able)."""

    def flow_state(self, key: str) -> Any: ...

    def save_flow_state(self, key: str, value: Any) -> None: ...

    def change_flow_state(self, key: str, change: Callable[[Any], Any]) -> None:
        """`change` the value atomically (a fleet's hosts count against one quota)."""

    def not_done(self, ids: list[int]) -> set[int]:
        """Those of the files `ids` that are still there and not done."""


class TooLarge(Exception):
    """A file larger than the service's whole daily byte quota: no day will take it."""


class Quotas:
    def __init__(self, store: StateStore, clock: Clock) -> None:
        self._store = store
        self._clock = clock
        self._prune_at: dict[str, int] = {}
        """Per count: how many files it lists when it is next cleared of the done ones."""

    def admit(self, service: ServiceConfig, file_id: int, size: int) -> tuple[float, str] | None:
        """None when the file fits today's quota (it is counted, once a day), else the
        moment the quota resets and the limit it meets ("daily_bytes = 5000"). TooLarge
        when no day's quota can take it."""
        if not service.daily_files and not service.daily_bytes:
            return None
        self.check_size(service, size)
        now = self._clock.now()
        day = self._clock.last_time_of_day(service.quota_reset, now)
        key = f"{QUOTA_PREFIX}{service.name}"
        full: str | None = None
        listed: list[int] = []

        def count(stored: Any) -> Any:
            nonlocal full, listed
            files, sent, counted = _usage(stored, day)
            full = None
            listed = counted
            if file_id in counted:
                return stored
            if service.daily_files and files + 1 > service.daily_files:
                full = f"daily_files = {service.daily_files}"
            elif service.daily_bytes and sent + size > service.daily_bytes:
                full = f"daily_bytes = {service.daily_bytes}"
            if full:
                return stored
            return [day, files + 1, sent + size, [*counted, file_id]]

        self._store.change_flow_state(key, count)
        if len(listed) >= self._prune_at.get(key, PRUNE_FROM):
            self._prune(key, day, listed)
        if full is None:
            return None
        return self._clock.next_time_of_day(service.quota_reset, now), full

    def _prune(self, key: str, day: float, listed: list[int]) -> None:
        """Drops from `day`'s count the files of `listed` (what the admit saw) done since
        they were counted: they do not come back to be admitted. Those counted meanwhile
        stay."""
        looked_at = set(listed)
        left = self._store.not_done(listed)

        def drop(stored: Any) -> Any:
            files, sent, counted = _usage(stored, day)
            if not counted:
                return stored  # another day's count by now
            return [day, files, sent, [i for i in counted if i in left or i not in looked_at]]

        self._store.change_flow_state(key, drop)
        self._prune_at[key] = max(PRUNE_FROM, 2 * len(left))

    @staticmethod
    def check_size(service: ServiceConfig, size: int) -> None:
        """TooLarge when the file is larger than the whole daily byte quota."""
        if service.daily_bytes and size > service.daily_bytes:
            raise TooLarge(
                f"{service.name}: the file ({size} bytes) is larger than the daily_bytes quota"
                f" ({service.daily_bytes} bytes)"
            )

    def remaining(self, service: ServiceConfig) -> dict[str, int]:
        """What is left of today's quota, per unit that has one."""
        files, sent, _ = self._used(service, self._clock.now())
        left = {}
        if service.daily_files:
            left["files"] = max(0, service.daily_files - files)
        if service.daily_bytes:
            left["bytes"] = max(0, service.daily_bytes - sent)
        return left

    def _used(self, service: ServiceConfig, now: float) -> tuple[int, int, list[int]]:
        day = self._clock.last_time_of_day(service.quota_reset, now)
        return _usage(self._store.flow_state(f"{QUOTA_PREFIX}{service.name}"), day)


def _usage(stored: Any, day: float) -> tuple[int, int, list[int]]:
    """Files and bytes counted on `day` (the start of the quota day), and the journal ids
    of those files; nothing for a count of another day."""
    if not isinstance(stored, list) or len(stored) != 4 or stored[0] != day:
        return 0, 0, []
    return int(stored[1]), int(stored[2]), list(stored[3])
