"""The worker pool: `workers` threads, each claiming the next due row and working it."""

from __future__ import annotations

import logging
import os
import threading
import time

from syncd.journal.store import Store
from syncd.work.pipeline import Pipeline

log = logging.getLogger(__name__)


class Workers:
    """`count` threads, each claiming the next due row and running it through the pipeline."""

    def __init__(self, count: int, journal: Store, pipeline: Pipeline) -> None:
        self._journal = journal
        self._pipeline = pipeline
        self._cond = threading.Condition()
        self._stop = False
        self._generation = 0
        """Counts wake-ups, so a wake between an empty claim and the wait is not lost."""
        self._threads = [
            threading.Thread(target=self._loop, name=f"worker-{n}", daemon=True)
            for n in range(1, count + 1)
        ]

    def start(self) -> None:
        self._pipeline.sidecars.start()
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
        """The workers, then the sidecar committer once it has committed what they handed over."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in self._threads):
            return False
        self._pipeline.sidecars.stop()
        return self._pipeline.sidecars.join(max(0.0, deadline - time.monotonic()))

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads) and self._pipeline.sidecars.alive()

    def _loop(self) -> None:
        held: int | None = None
        """The row worked last, released in one commit with the next claim."""
        while not self._stop:
            with self._cond:
                generation = self._generation
            with self._journal.batch():
                if held is not None:
                    self._journal.release(held)
                row = self._journal.claim(time.time())
            held = None
            if row is None:
                due = self._journal.next_due()
                with self._cond:
                    if self._stop:
                        return
                    if generation == self._generation:
                        self._cond.wait(None if due is None else max(0.01, due - time.time()))
                continue
            self.wake()  # pass the baton: if more rows are due, the next idle worker takes one
            held = row.id
            try:
                self._pipeline.process(row)
            except Exception as exc:
                log.exception("unexpected error on %s", os.fsdecode(row.path))
                self._pipeline.fail(row, f"internal error: {type(exc).__name__}: {exc}")
        if held is not None:
            self._journal.release(held)
