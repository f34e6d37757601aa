"""The worker pool: `workers` threads, each claiming the next due row and working it.

Flow control decides which row: the claim skips services at their `max_parallel`, and the
journal hands out rows by priority and order (work/flow/order.py).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from syncd.control import switching
from syncd.control.degraded import SIDECARS, Backoff, Degraded
from syncd.files import scarce_import
from syncd.journal.patience import StorageFault, patiently
from syncd.journal.store import Row, Store
from syncd.work.descriptors import OutOfDescriptors
from syncd.work.flow import Flow
from syncd.work.pipeline import Pipeline

log = logging.getLogger(__name__)

PAUSE_CHECK = 1.0
"""While sidecars are degraded, how often a paused worker looks whether to stop."""


class Workers:
    """`count` threads, each claiming the next due row and running it through the pipeline."""

    def __init__(
        self,
        count: int,
        journal: Store,
        pipeline: Pipeline,
        flow: Flow,
        faults: Degraded | None = None,
        idle_poll: float | None = None,
    ) -> None:
        self._journal = journal
        self._idle_poll = idle_poll
        """Fleet mode: idle workers look this often, as other hosts add rows and their
        claims run out without telling this one."""
        self._pipeline = pipeline
        self._finisher = pipeline.finisher
        self._committer = pipeline.finisher.committer
        self._flow = flow
        self._faults = faults or Degraded()
        self._cond = threading.Condition()
        self._stop = False
        self._generation = 0
        """Counts wake-ups, so a wake between an empty claim and the wait is not lost."""
        self._threads = [
            threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
            for n in range(1, count + 1)
        ]

    def start(self) -> None:
        self._committer.start()
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        """One more row may be due: one idle worker is enough to take it."""
        with self._cond:
            self._generation += 1
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            return False
        self._committer.stop()  # once it has committed what the workers handed over
        return self._committer.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and self._committer.alive()

    def _idle_wait(self, due: float | None) -> float | None:
        wait = None if due is None else max(0.01, due - time.time())
        if self._idle_poll is not None:
            wait = self._idle_poll if wait is None else min(wait, self._idle_poll)
        return wait

    def _loop(self) -> None:
        with patiently():  # a full disk pauses a worker's journal writes, never loses them
            self._work()

    def _work(self) -> None:
        backoff = Backoff()
        held: list[int] = []
        """Rows worked, released in one commit with the next claim."""
        try:
            while not self._stop:
                if not self._faults.wait_clear(SIDECARS, PAUSE_CHECK):
                    self._release(held)
                    continue  # sidecars cannot be written: take no new file until they can
                try:
                    self._turn(held)
                except (StorageFault, OutOfDescriptors):  # (the first: a store that does not
                    # persevere by itself) the row stays as the journal last recorded it
                    with self._cond:
                        if not self._stop:
                            self._cond.wait(backoff.failed())
                else:
                    backoff.reset()
        finally:
            self._release(held)

    def _turn(self, held: list[int]) -> None:
        """Release `held` and claim a row in one commit and work it, or wait until one may
        be due."""
        with self._cond:
            generation = self._generation
        row = self._flow.claim(lambda full: self._journal.batch(lambda: self._swap(held, full)))
        held.clear()
        if row is None:
            due = self._journal.next_due(self._flow.full())
            with self._cond:
                if not self._stop and generation == self._generation:
                    self._cond.wait(self._idle_wait(due))
            return
        self.wake()  # pass the baton: if more rows are due, the next idle worker takes one
        try:
            with switching.cpus_for(row.identity.size):
                self._pipeline.process(row)
        except (StorageFault, OutOfDescriptors):
            raise
        except Exception as exc:
            short = scarce_import(exc) if isinstance(exc, ImportError) else None
            if short is not None:  # a module loaded at first use, short of descriptors
                self._pipeline.shortage.met(row, short)
            log.exception("unexpected error on %s", os.fsdecode(row.path))
            self._pipeline.fail(row, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            if not self._finisher.handed_over(row):
                held.append(row.id)
            if self._flow.finished(row.service):  # the slot is free even in an outage
                self.wake()

    def _swap(self, held: list[int], full: frozenset[str]) -> Row | None:
        for row_id in held:
            self._journal.release(row_id)
        return self._journal.claim(time.time(), full)

    def _release(self, held: list[int]) -> None:
        for row_id in held:
            self._journal.release(row_id)
        held.clear()
