"""The sidecar writer: one thread turning uploaded rows into sidecars and `done`, in batches.

A worker hands its uploaded row over and goes on to the next file. The writer takes all
that has queued up meanwhile: each sidecar placed (its content fsync'd, then linked under
its name; by a few threads at once, so that their fsyncs share the filesystem's journal
commits instead of queueing for one each), then each folder fsync'd once for all of its
sidecars, then every row of the batch `done` in one transaction. So a row is `done` only
once its sidecar is durable, and a crash at any moment leaves at worst `uploaded` rows,
whose sidecars the next start writes (`Pipeline.finish_uploaded`): nothing is uploaded
again and nothing is lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from syncd.control.logs import log_fields
from syncd.files import mode_if_unchanged
from syncd.journal.states import State
from syncd.journal.store import Row, Store
from syncd.outputs import sidecar

log = logging.getLogger(__name__)

BATCH = 256
"""Rows written per transaction at most: a long batch would hold the first row's `done`."""
PLACERS = 8
"""Threads placing a batch's sidecars: fsync waits for the disk, and concurrent fsyncs are
committed together."""


class SidecarWriter:
    def __init__(self, journal: Store) -> None:
        self._journal = journal
        self._cond = threading.Condition()
        self._queue: dict[int, tuple[Row, str]] = {}
        """Row id -> (the uploaded row, its service's type); a row queued twice is written once."""
        self._stop = False
        self._thread = threading.Thread(target=self._loop, name="sidecars", daemon=True)
        self._placers = ThreadPoolExecutor(PLACERS, thread_name_prefix="sidecar-placer")

    def start(self) -> None:
        self._thread.start()

    def submit(self, row: Row, service_type: str) -> None:
        """`row` is uploaded (and committed so): write its sidecar, then mark it `done`."""
        with self._cond:
            self._queue[row.id] = (row, service_type)
            self._cond.notify()

    def stop(self) -> None:
        """The thread ends once what is queued is written."""
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
                    self._placers.shutdown()
                    return
                batch = [self._queue.pop(key) for key in list(self._queue)[:BATCH]]
            try:
                self._write(batch)
            except Exception:
                # Those rows stay `uploaded`: the next periodic rescan or start writes them.
                log.exception("unexpected error writing sidecars")

    def _write(self, batch: list[tuple[Row, str]]) -> None:
        finished: list[Row] = []
        wanted: list[tuple[Row, Path, str, int]] = []
        for row, service_type in batch:
            path = Path(os.fsdecode(row.path))
            mode = mode_if_unchanged(path, row.identity)
            if mode is None:
                # Changed or gone since: intake sees it again; its upload stands.
                finished.append(row)
            else:
                wanted.append((row, path, _render(row, service_type), mode))
        chunks = [wanted[n::PLACERS] for n in range(min(PLACERS, len(wanted)))]
        by_folder: dict[Path, list[Row]] = {}
        for placed in self._placers.map(_place, chunks):
            for row, folder in placed:
                by_folder.setdefault(folder, []).append(row)
        for folder, rows in by_folder.items():
            try:
                sidecar.sync_folder(folder)
            except OSError as exc:
                for row in rows:
                    _cannot_write(row, exc)
                continue
            finished.extend(rows)
        with self._journal.batch():
            for row in finished:
                self._journal.mark_done(row.id)
        for row in finished:
            log.info("uploaded %s", os.fsdecode(row.path), extra=_fields(row))


def _place(chunk: list[tuple[Row, Path, str, int]]) -> list[tuple[Row, Path]]:
    """The sidecars of `chunk` placed, with their folders; those refused are logged."""
    placed = []
    for row, path, text, mode in chunk:
        try:
            placed.append((row, sidecar.place(path, text, mode).parent))
        except OSError as exc:
            _cannot_write(row, exc)
    return placed


def _cannot_write(row: Row, exc: OSError) -> None:
    path = os.fsdecode(row.path)
    log.error("cannot write the sidecar of %s: %s", path, exc, extra=_fields(row))


def _render(row: Row, service_type: str) -> str:
    assert row.result is not None and row.sha256 is not None
    return sidecar.render(
        service=row.service,
        service_type=service_type,
        sha256=row.sha256,
        size=row.identity.size,
        uploaded_at=row.uploaded_at or time.time(),
        result=row.result,
        duplicate_of=Path(os.fsdecode(row.duplicate_of)) if row.duplicate_of else None,
    )


def _fields(row: Row) -> dict[str, str]:
    return log_fields(row.path, row.service, State.DONE)
