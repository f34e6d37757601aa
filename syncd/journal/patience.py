"""Journal writes that wait out a full disk instead of losing work or a thread.

The store raises `StorageFault` when the disk is full or returns I/O errors (after rolling
its transaction back, so nothing half-done stays). `persevering()` wraps a store so that
every call which meets one marks the journal degraded and, inside `patiently()` (workers
and intake, whose work would otherwise be dropped), tries again with backoff until the
disk takes it; elsewhere (the main loop, which must keep pinging the watchdog; the status
socket and the media server, which must keep answering) it raises at once. The first call
that failed and then succeeds clears the fault.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from syncd.control.degraded import JOURNAL, Backoff, Degraded
from syncd.errors import SyncdError

log = logging.getLogger(__name__)

S = TypeVar("S")
BATCH = "batch"
"""The store's group commit: a fault is told by, and cleared by, the calls made inside."""
_patience = threading.local()


class StorageFault(SyncdError):
    """The journal's disk is full or failing; it passes once space or the device is back."""


@contextmanager
def patiently() -> Iterator[None]:
    """Journal calls made inside wait (with backoff) while the disk is full or failing."""
    before = getattr(_patience, "on", False)
    _patience.on = True
    try:
        yield
    finally:
        _patience.on = before


def opened(open_store: Callable[[], S], waiting: Callable[[str, float], None], patient: bool) -> S:
    """The store `open_store` makes, once its storage can be reached: a fleet host started
    while its database is down (both rebooting, say) waits for it, `waiting` told why and
    for how long before each new try, rather than exit and be given up on by systemd's
    start limit. Not `patient` (`run --once`): the fault is raised at once."""
    if not patient:
        return open_store()
    backoff = Backoff()
    told = False
    while True:
        try:
            store = open_store()
        except StorageFault as fault:
            if not told:
                log.warning("%s; waiting for it", fault)
                told = True
            delay = backoff.failed()
            waiting(str(fault), delay)
            time.sleep(delay)
            continue
        if told:
            log.info("the journal is reached")
        return store


def answers(ping: Callable[[], bool]) -> bool:
    """Whether the journal works, or waits out a storage fault (degraded says which): a
    restart would bring back neither the database nor the space, so the watchdog is still
    pinged."""
    try:
        return ping()
    except StorageFault:
        return True


class Calls:
    """The journal calls under way, by thread and since when: a hung database or disk
    raises nothing and times nothing out, and shows only as a call that does not end."""

    def __init__(self) -> None:
        self._since: dict[int, float] = {}
        """Thread ident -> time.monotonic() its call began (each key written by its own
        thread only)."""

    def since(self, thread: int) -> float | None:
        return self._since.get(thread)

    def oldest(self) -> float | None:
        return min(self._since.copy().values(), default=None)

    def begin(self) -> bool:
        """False for a call made inside another: the outer one counts, and ends it."""
        thread = threading.get_ident()
        if thread in self._since:
            return False
        self._since[thread] = time.monotonic()
        return True

    def end(self) -> None:
        del self._since[threading.get_ident()]


def persevering(store: S, faults: Degraded, calls: Calls) -> S:
    """`store` with every call made to wait out storage faults (see the module docstring),
    and counted in `calls` while under way."""
    return cast(S, _Persevering(store, faults, calls))


class _Persevering:
    def __init__(self, store: object, faults: Degraded, calls: Calls) -> None:
        self._store = store
        self._faults = faults
        self._calls = calls
        self._wrapped: dict[str, Callable[..., Any]] = {}
        self._failing: set[str] = set()
        """Calls that met a fault; a read that works says nothing of writes, so only the
        success of one of these clears the fault."""

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if name.startswith("_") or not callable(value):
            return value  # plain attributes (such as `changes`) are read through, live
        wrapped = self._wrapped.get(name)
        if wrapped is None:
            wrapped = self._wrapped[name] = self._persevere(value)
        return wrapped

    def _persevere(self, method: Callable[..., Any]) -> Callable[..., Any]:
        name = method.__name__

        @functools.wraps(method)
        def call(*args: Any, **kwargs: Any) -> Any:
            outermost = self._calls.begin()
            try:
                return attempts(*args, **kwargs)
            finally:
                if outermost:
                    self._calls.end()

        def attempts(*args: Any, **kwargs: Any) -> Any:
            batch: set[str] | None = getattr(_patience, "batch", None)
            if batch is not None:  # inside a batch, which waits and runs again as a whole
                batch.add(name)
                return method(*args, **kwargs)
            backoff = Backoff()
            while True:
                inner: set[str] = set()
                _patience.batch = inner if name == BATCH else None
                try:
                    result = method(*args, **kwargs)
                except StorageFault as fault:
                    self._failing |= inner or {name}
                    self._faults.set(JOURNAL, str(fault))
                    if not getattr(_patience, "on", False):
                        raise
                    time.sleep(backoff.failed())
                    continue
                finally:
                    _patience.batch = None
                if not self._failing.isdisjoint(inner | {name}):
                    # What failed works again: the disk takes writes. (A batch that failed
                    # before any call inside, at its BEGIN, is cleared by any batch's commit.)
                    self._failing.clear()
                    self._faults.clear(JOURNAL)
                return result

        return call
