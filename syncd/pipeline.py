"""One file's way from the journal to its sidecar: open, hash, deduplicate, upload, record.

A worker runs `Pipeline.process` on a row it has claimed. The file is opened without
following symlinks and without blocking (a FIFO never hangs a worker), hashed streamed,
and checked again after the upload: a file that changed meanwhile is queued afresh and
never recorded with the wrong hash.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import mimetypes
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from io import BufferedReader
from pathlib import Path
from typing import Any

from syncd import sidecar
from syncd.config import ServiceConfig
from syncd.errors import PermanentError, RetryableError
from syncd.http import retry_delay
from syncd.journal import DUPLICATE, UNCHANGED, UPLOAD, Identity, Journal, Row
from syncd.logs import log_fields
from syncd.services.base import AwaitCallback, Interrupted, Job, Uploader

log = logging.getLogger(__name__)

CAPTION_SUFFIX = ".caption"
CAPTION_MAX = 64 * 1024
OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class FileChanged(Exception):
    """The file is not the one the journal row describes any more."""


@dataclass(slots=True)
class Upload:
    """An upload in flight, as `syncd status` shows it."""

    path: str
    service: str
    total: int
    sent: int = 0
    started_sent: int = -1
    started: float = 0.0

    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        moved = self.sent - max(self.started_sent, 0)
        return moved / elapsed if elapsed > 0 else 0.0


class InFlight:
    """What the workers are uploading right now; progress is kept in memory only."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._uploads: dict[int, Upload] = {}

    def begin(self, row_id: int, upload: Upload) -> Callable[[int], None]:
        upload.started = time.monotonic()
        with self._lock:
            self._uploads[row_id] = upload

        def progress(sent: int) -> None:
            if upload.started_sent < 0:
                upload.started_sent = sent  # where a resumed upload picked up
            upload.sent = sent

        return progress

    def end(self, row_id: int) -> None:
        with self._lock:
            self._uploads.pop(row_id, None)

    def snapshot(self) -> list[Upload]:
        with self._lock:
            return list(self._uploads.values())


class JournalStore:
    """A service's step store, kept in the row; a save on a changed file stops the work."""

    def __init__(self, journal: Journal, row: Row) -> None:
        self._journal = journal
        self._row = row

    def load(self) -> dict[str, Any]:
        return self._journal.load_progress(self._row)

    def save(self, progress: dict[str, Any]) -> None:
        if not self._journal.save_progress(self._row, progress):
            raise FileChanged


def media_type(path: Path) -> str:
    return mimetypes.guess_type(path.name, strict=False)[0] or "application/octet-stream"


def read_caption(path: Path) -> str | None:
    """NAME.caption beside the file: a regular file, read as UTF-8, never a symlink."""
    caption = path.with_name(path.name + CAPTION_SUFFIX)
    try:
        fd = os.open(caption, OPEN_FLAGS)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            return None
        return file.read(CAPTION_MAX).decode("utf-8", "replace").strip()


HASH_PIECE = 1024 * 1024


def sha256_of(file: BufferedReader, progress: Callable[[int], None] | None = None) -> str:
    """Streamed in 1 MiB pieces (hashlib runs on OpenSSL's SHA instructions), reporting
    how far it got: hashing a 4 GiB file takes seconds, and status should say so."""
    file.seek(0)
    digest = hashlib.sha256()
    # No bigger than the file: a small file must not pay for a fresh 1 MiB of pages.
    view = memoryview(bytearray(max(1, min(HASH_PIECE, os.fstat(file.fileno()).st_size))))
    done = 0
    while count := file.readinto(view):
        digest.update(view[:count])
        done += count
        if progress is not None:
            progress(done)
    return digest.hexdigest()


class Pipeline:
    def __init__(
        self,
        journal: Journal,
        inside_watch: Callable[[Path], bool],
        stopping: threading.Event,
    ) -> None:
        self.journal = journal
        self.inside_watch = inside_watch
        self.stopping = stopping
        self.in_flight = InFlight()
        self.hashing = InFlight()
        self.services: dict[str, ServiceConfig] = {}
        self.uploaders: dict[str, Uploader] = {}

    def use(self, services: dict[str, ServiceConfig], uploaders: dict[str, Uploader]) -> None:
        """New service settings apply to uploads that start from now on."""
        self.services, self.uploaders = services, uploaders

    def process(self, row: Row) -> None:
        path = Path(os.fsdecode(row.path))
        fields = log_fields(path, row.service)
        try:
            file = self._open(row, path)
        except FileNotFoundError:
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
        log.error("%s", reason, extra=log_fields(row.path, row.service, "failed"))
        current = self.journal.get(row.id)
        if current is not None:
            self.journal.mark_failed(current, reason)

    def _open(self, row: Row, path: Path) -> BufferedReader:
        if not self.inside_watch(path):
            raise FileNotFoundError(path)
        try:
            fd = os.open(row.path, OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                raise FileNotFoundError(path) from None
            raise PermanentError(f"{path}: cannot read: {exc.strerror}") from None
        file = os.fdopen(fd, "rb")
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            file.close()
            raise FileNotFoundError(path)
        os.set_blocking(fd, True)
        return file

    def _identity(self, file: BufferedReader) -> Identity:
        return Identity.of(os.fstat(file.fileno()))

    def _process_open(
        self, row: Row, path: Path, file: BufferedReader, fields: dict[str, str]
    ) -> None:
        identity = self._identity(file)
        if row.sha256 is None or identity != row.identity:
            tracked = Upload(str(path), row.service, identity.size)
            try:
                digest = sha256_of(file, self.hashing.begin(row.id, tracked))
            finally:
                self.hashing.end(row.id)
            hashed = None
            if self._identity(file) == identity:
                hashed = self.journal.mark_hashed(row, digest, identity)
            if hashed is None:
                self.journal.mark_changed(row)
                raise FileChanged
            row = hashed
        service = self.services.get(row.service)
        uploader = self.uploaders.get(row.service)
        if service is None or uploader is None:
            self.journal.mark_failed(row, f"service {row.service!r} is no longer configured")
            return
        decision = self.journal.begin_upload(row, uploader.still_valid)
        if decision is None:
            raise FileChanged
        answer, row = decision
        if answer == DUPLICATE:
            assert row.duplicate_of is not None
            log.info("%s duplicates %s", path, os.fsdecode(row.duplicate_of), extra=fields)
            self.finish(row, service)
        elif answer == UNCHANGED:
            log.info("%s changed on disk but not in content: not uploaded again", path)
            self.finish(row, service)
        elif answer == UPLOAD:
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
        if (
            self._identity(file) != row.identity
            or self._mode_if_still_there(path, row.identity) is None
        ):
            self.journal.mark_changed(row)
            raise FileChanged
        uploaded = self.journal.mark_uploaded(row, outcome)
        if uploaded is not None:
            self.finish(uploaded, service)

    @staticmethod
    def _mode_if_still_there(path: Path, identity: Identity) -> int | None:
        """The file's permission bits while it is the one uploaded; None once it is not."""
        try:
            st = os.lstat(path)
        except OSError:
            return None
        return st.st_mode if Identity.of(st) == identity else None

    def finish(self, row: Row, service: ServiceConfig) -> None:
        """The sidecar of an uploaded row, then `done`; a crash in between is mended at start."""
        path = Path(os.fsdecode(row.path))
        fields = log_fields(path, row.service, "done")
        assert row.result is not None and row.sha256 is not None
        mode = self._mode_if_still_there(path, row.identity)
        if mode is not None:
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
                sidecar.write(path, text, mode)
            except OSError as exc:
                log.error("cannot write the sidecar of %s: %s", path, exc, extra=fields)
                return
        self.journal.mark_done(row.id)
        log.info("uploaded %s", path, extra=fields)
