"""One file's way from the journal to its sidecar: open, hash, deduplicate, upload, record.

A worker runs `Pipeline.process` on a row it has claimed. The file is opened without
following symlinks and without blocking (a FIFO never hangs a worker), hashed streamed,
and checked again after the upload: a file that changed meanwhile is queued afresh and
never recorded with the wrong hash.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from io import BufferedReader
from pathlib import Path
from typing import Any

from syncd.config import ServiceConfig, WatchConfig
from syncd.control.logs import log_fields
from syncd.errors import PermanentError, RetryableError
from syncd.files import (
    Vanished,
    identity_of,
    media_type,
    mode_if_unchanged,
    open_regular,
    read_caption,
    sha256_of,
)
from syncd.intake.routing import inside, route
from syncd.journal.states import State, allowed
from syncd.journal.store import Decision, Row, Store
from syncd.outputs import sidecar
from syncd.services.base import AwaitCallback, Interrupted, Job, Uploader
from syncd.services.http import retry_delay
from syncd.work.progress import InFlight, Upload
from syncd.work.sidecars import SidecarCommitter, cannot_write

log = logging.getLogger(__name__)


class FileChanged(Exception):
    """The file is not the one the journal row describes any more."""


class JournalStore:
    """A service's step store, kept in the row; a save on a changed file stops the work."""

    def __init__(self, journal: Store, row: Row) -> None:
        self._journal = journal
        self._row = row

    def load(self) -> dict[str, Any]:
        return self._journal.load_progress(self._row)

    def save(self, progress: dict[str, Any]) -> None:
        if not self._journal.save_progress(self._row, progress):
            raise FileChanged


class Pipeline:
    def __init__(
        self,
        journal: Store,
        watches: Callable[[], tuple[WatchConfig, ...]],
        stopping: threading.Event,
    ) -> None:
        self.journal = journal
        self.watches = watches
        self.stopping = stopping
        self.in_flight = InFlight()
        self.hashing = InFlight()
        self.services: dict[str, ServiceConfig] = {}
        self.uploaders: dict[str, Uploader] = {}
        self.sidecars = SidecarCommitter(journal)

    def use(self, services: dict[str, ServiceConfig], uploaders: dict[str, Uploader]) -> None:
        """New service settings apply to uploads that start from now on."""
        self.services, self.uploaders = services, uploaders

    def process(self, row: Row) -> None:
        path = Path(os.fsdecode(row.path))
        fields = log_fields(path, row.service)
        try:
            watch = route(self.watches(), path)
            if watch is None or not inside(watch, path):
                raise Vanished(path)
            file = open_regular(path)
        except Vanished:
            self.journal.forget_missing(row.path)
            return
        except PermanentError as exc:
            log.warning("%s", exc, extra=fields)
            self.journal.mark_failed(row, str(exc))
            return
        with file:
            try:
                self._process_open(row, path, file, fields)
            except FileChanged:
                log.info("%s changed while it was being handled; starting over", path, extra=fields)
            except OSError as exc:
                self.fail(row, f"{path}: cannot read: {exc.strerror or exc}")

    def fail(self, row: Row, reason: str) -> None:
        """A failure no retry will mend (an I/O error, a bug): shown until `syncd retry`."""
        log.error("%s", reason, extra=log_fields(row.path, row.service, State.FAILED))
        current = self.journal.get(row.id)
        if current is not None and allowed(current.state, State.FAILED):
            self.journal.mark_failed(current, reason)

    def _process_open(
        self, row: Row, path: Path, file: BufferedReader, fields: dict[str, str]
    ) -> None:
        identity = identity_of(file)
        digest = None
        if row.sha256 is None or identity != row.identity:
            tracked = Upload(str(path), row.service, identity.size)
            try:
                digest = sha256_of(file, self.hashing.begin(row.id, tracked))
            finally:
                self.hashing.end(row.id)
            if identity_of(file) != identity:
                self.journal.mark_changed(row)
                raise FileChanged
        service = self.services.get(row.service)
        uploader = self.uploaders.get(row.service)
        # One commit for `hashed` and the decision (`uploading` for a new file): a crash
        # after it resumes from `hashed` (recover), before it from `seen`.
        with self.journal.batch():
            hashed = row if digest is None else self.journal.mark_hashed(row, digest, identity)
            if hashed is None:
                self.journal.mark_changed(row)
                decision = None
            elif service is None or uploader is None:
                reason = f"service {row.service!r} is no longer configured"
                self.journal.mark_failed(hashed, reason)
                return
            else:
                decision = self.journal.begin_upload(hashed, uploader.still_valid)
        if decision is None:
            raise FileChanged
        assert service is not None and uploader is not None
        answer, row = decision
        if answer is Decision.DUPLICATE:
            assert row.duplicate_of is not None
            log.info("%s duplicates %s", path, os.fsdecode(row.duplicate_of), extra=fields)
            self.finish(row, service)
        elif answer is Decision.UNCHANGED:
            log.info("%s changed on disk but not in content: not uploaded again", path)
            self.finish(row, service)
        elif answer is Decision.UPLOAD:
            self._upload(row, path, file, service, uploader, fields)

    def _upload(
        self,
        row: Row,
        path: Path,
        file: BufferedReader,
        service: ServiceConfig,
        uploader: Uploader,
        fields: dict[str, str],
    ) -> None:
        assert row.sha256 is not None
        progress = self.in_flight.begin(row.id, Upload(str(path), row.service, row.identity.size))
        job = Job(
            path=path,
            file=file,
            size=row.identity.size,
            sha256=row.sha256,
            media_type=media_type(path),
            caption=read_caption(path),
            store=JournalStore(self.journal, row),
            progress=progress,
            stopping=self.stopping,
            row_id=row.id,
        )
        log.debug("uploading %s to %s", path, row.service, extra=fields)
        try:
            outcome = uploader.upload(job)
        except RetryableError as exc:
            delay = retry_delay(row.attempts, exc.retry_after)
            log.warning("%s; next try in %.1f s", exc, delay, extra=fields)
            self.journal.mark_retry(row, str(exc), time.time() + delay)
            return
        except PermanentError as exc:
            log.error("%s: %s", path, exc, extra=fields)
            self.journal.mark_failed(row, str(exc))
            return
        except Interrupted:
            self.journal.mark_retry(row, "interrupted by shutdown", time.time())
            return
        except FileChanged:
            self.journal.mark_changed(row)
            raise
        finally:
            self.in_flight.end(row.id)
        if isinstance(outcome, AwaitCallback):
            self.journal.mark_awaiting(row, outcome.deadline)
            return
        if identity_of(file) != row.identity or mode_if_unchanged(path, row.identity) is None:
            self.journal.mark_changed(row)
            raise FileChanged
        uploaded = self.journal.mark_uploaded(row, outcome)
        if uploaded is not None:
            self.finish(uploaded, service)

    def finish(self, row: Row, service: ServiceConfig) -> None:
        """The sidecar of an uploaded row, placed here; made durable and `done` with others
        by the committer. A crash before `done` is mended at start."""
        path = Path(os.fsdecode(row.path))
        assert row.result is not None and row.sha256 is not None
        mode = mode_if_unchanged(path, row.identity)
        if mode is None:
            self.sidecars.submit(row, None)
            return
        text = sidecar.render(
            service=row.service,
            service_type=service.type,
            sha256=row.sha256,
            size=row.identity.size,
            uploaded_at=row.uploaded_at or time.time(),
            result=row.result,
            duplicate_of=Path(os.fsdecode(row.duplicate_of)) if row.duplicate_of else None,
        )
        try:
            placed = sidecar.place(path, text, mode)
        except OSError as exc:
            cannot_write(row, exc)
            return
        self.sidecars.submit(row, placed.parent)

    def finish_uploaded(self) -> None:
        """Rows uploaded but without their sidecar (a crash, a folder that refused the
        write) get it now: at start and with every periodic rescan."""
        for row in self.journal.in_state(State.UPLOADED):
            service = self.services.get(row.service)
            if service is not None:
                self.finish(row, service)
