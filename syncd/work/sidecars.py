"""Sidecars made durable and their rows `done`, in batches, by one thread.

A worker places an uploaded file's sidecar (its content fsync'd, then linked under its
name: `sidecar.place`), hands the row over here and goes on to the next file. This thread
takes all that has queued up within `GATHER` of the first, fsyncs each folder once for
all of its new sidecars, then marks every row of the batch `done` in one transaction. So a
row is `done` only once its sidecar is durable, and a crash at any moment leaves at worst
`uploaded` rows, whose sidecars the next start writes again (`Pipeline.finish_uploaded`):
nothing is uploaded twice and nothing is lost.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from syncd.control.logs import log_fields
from syncd.journal.states import State
from syncd.journal.store import Row, Store
from syncd.outputs import sidecar

log = logging.getLogger(__name__)

BATCH = 256
"""Rows a transaction at most: a long batch would hold back the first row's `done`."""
GATHER = 0.05
"""Seconds the first row handed over waits for others to join its batch: a burst shares
its folder fsyncs and its commit, a lone file is `done` a moment later."""


class SidecarCommitter:
    def __init__(self, journal: Store) -> None:
        self._journal = journal
        self._cond = threading.Condition()
        self._queue: dict[int, tuple[Row, Path | None]] = {}
        """Row id -> (the uploaded row, the folder of its placed sidecar or None: no sidecar,
        the file changed or went since); a row handed over twice is committed once."""
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="sidecars", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: Row, folder: Path | None) -> None:
        """`row`'s sidecar is placed in `folder` (None: it needs none): make it `done`."""
        with self._cond:
            self._queue[row.id] = (row, folder)
            if len(self._queue) in (1, BATCH):
                self._cond.notify()

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
        while True:
            with self._cond:
                while not self._queue and not self._stop:
                    self._cond.wait()
                if not self._queue:
                    return
                if not self._stop and len(self._queue) < BATCH:
                    self._cond.wait(GATHER)  # woken early only by a full batch or a stop
                batch = [self._queue.pop(key) for key in list(self._queue)[:BATCH]]
            try:
                self._commit(batch)
            except Exception:
                # Those rows stay `uploaded`: the next periodic rescan or start mends them.
                log.exception("unexpected error committing sidecars")

    def _commit(self, batch: list[tuple[Row, Path | None]]) -> None:
        finished = [row for row, folder in batch if folder is None]
        by_folder: dict[Path, list[Row]] = {}
        for row, folder in batch:
            if folder is not None:
                by_folder.setdefault(folder, []).append(row)
        for folder, rows in by_folder.items():
            try:
                sidecar.sync_folder(folder)
            except OSError as exc:
                for row in rows:
                    cannot_write(row, exc)
                continue
            finished.extend(rows)
        with self._journal.batch():
            for row in finished:
                self._journal.mark_done(row.id)
        for row in finished:
            log.info("uploaded %s", os.fsdecode(row.path), extra=done_fields(row))


def cannot_write(row: Row, exc: OSError) -> None:
    path = os.fsdecode(row.path)
    log.error("cannot write the sidecar of %s: %s", path, exc, extra=done_fields(row))


def done_fields(row: Row) -> dict[str, str]:
    """The log fields of a line about a row that is about to be done."""
    return log_fields(row.path, row.service, State.DONE)
