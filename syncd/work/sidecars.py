"""The committer: one thread that makes put sidecars durable and their rows `done` in batches.

Workers hand over each row whose sidecar they put (work/finish.py) and go on to the next
file. This thread takes all that queued up while it committed the batch before, fsyncs each
folder once for all of its new sidecars, and hands the batch back (`done`), which commits it
in one transaction. A lone file waits for no other: `done` follows its sidecar as closely as
it can. In a burst (a row handed over within GATHER of the last commit) the rows gather
until GATHER after that commit: otherwise the thread, woken by each row, commits them one
by one (measured: 1.2 rows a batch, a folder fsync and a commit for nearly every file), and
the burst shares nothing.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from syncd.journal.patience import patiently
from syncd.journal.store import Row
from syncd.outputs import sidecar

log = logging.getLogger(__name__)

BATCH = 256
"""Rows a transaction at most: a long batch would hold back the first row's `done`."""
GATHER = 0.05
"""Seconds between two commits in a burst at least: how late `done` may follow a sidecar."""


@dataclass(frozen=True, slots=True)
class Finished:
    """An uploaded row whose sidecar is put, on its way to `done`."""

    row: Row
    outcome: str
    folder: int | None
    """A descriptor of the folder its sidecar was put in, owned by the committer (closed
    once fsync'd); None: the file has no sidecar (it changed or went since the upload)."""

    @property
    def written(self) -> bool:
        return self.folder is not None


class SidecarCommitter:
    def __init__(
        self,
        done: Callable[[list[Finished]], None],
        unsynced: Callable[[Finished, sidecar.SidecarError], None],
    ) -> None:
        self._done = done
        """Commits a batch whose sidecars are durable."""
        self._unsynced = unsynced
        """Told of a row whose folder could not be fsync'd: the row stays `uploaded`."""
        self._cond = threading.Condition()
        self._queue: dict[int, Finished] = {}
        """By row id: a row handed over twice is committed once (its newer sidecar)."""
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="sidecars", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, finished: Finished) -> None:
        with self._cond:
            earlier = self._queue.pop(finished.row.id, None)
            self._queue[finished.row.id] = finished
            if len(self._queue) in (1, BATCH):
                self._cond.notify()
        if earlier is not None and earlier.folder is not None:
            os.close(earlier.folder)

    def stop(self) -> None:
        """The thread ends once what is queued is committed."""
        with self._cond:
            self._stop = True
            self._cond.notify()

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        with patiently():  # the journal unavailable (a full disk, a deadlock): commit later
            self._commit_all()

    def _commit_all(self) -> None:
        committed = -GATHER
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                # Within GATHER of the last commit: a burst, whose rows gather till then.
                while not self._stop and len(self._queue) < BATCH:
                    left = committed + GATHER - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                batch = [self._queue.pop(key) for key in list(self._queue)[:BATCH]]
            try:
                self._commit(batch)
            except Exception:
                # Those rows stay `uploaded`: the next periodic rescan or start mends them.
                log.exception("unexpected error committing sidecars")
            committed = time.monotonic()

    def _commit(self, batch: list[Finished]) -> None:
        durable = [item for item in batch if item.folder is None]
        for items in _by_folder(item for item in batch if item.folder is not None):
            try:
                assert items[0].folder is not None
                sidecar.sync_folder(items[0].folder, Path(os.fsdecode(items[0].row.path)))
            except sidecar.SidecarError as exc:
                for item in items:
                    self._unsynced(item, exc)
                continue
            finally:
                for item in items:
                    assert item.folder is not None
                    os.close(item.folder)
            durable.extend(items)
        if durable:
            self._done(durable)


def _by_folder(items: Iterable[Finished]) -> list[list[Finished]]:
    """Grouped by the folder they were put in (one fsync covers each group)."""
    groups: dict[tuple[int, int], list[Finished]] = {}
    for item in items:
        assert item.folder is not None
        st = os.fstat(item.folder)
        groups.setdefault((st.st_dev, st.st_ino), []).append(item)
    return list(groups.values())
