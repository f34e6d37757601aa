"""One file's way from the journal to its sidecar: open, hash, deduplicate, upload, record.

A worker runs `Pipeline.process` on a row it has claimed. The file is opened from its
watch root one folder at a time without following symlinks, and without blocking (a FIFO
never hangs a worker); its caption and sidecar are reached through the same folder
descriptor. It is hashed streamed, and checked again after the upload: a file that
changed meanwhile is queued afresh and never recorded with the wrong hash.

Once uploaded, the row goes on its way to `done` through work/finish.py.
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
from syncd.control.degraded import Degraded
from syncd.control.logs import log_fields
from syncd.errors import PermanentError, RateLimited, RetryableError
from syncd.files import (
    SCARCE,
    Identity,
    Place,
    Vanished,
    identity_of,
    locate,
    media_type,
    sha256_of,
)
from syncd.intake.routing import route
from syncd.journal.codec import storable
from syncd.journal.states import State, allowed
from syncd.journal.store import UNREADABLE, Decision, Row, Store
from syncd.services import ready
from syncd.services.base import AwaitCallback, Interrupted, Job, Uploader
from syncd.services.loading import load
from syncd.services.metering import metered
from syncd.work.descriptors import Shortage
from syncd.work.finish import Finisher
from syncd.work.flow import Flow, Hold, TooLarge
from syncd.work.outcomes import DUPLICATE, FAILED, Outcomes
from syncd.work.progress import InFlight, Upload

log = logging.getLogger(__name__)

UNROUTED = "no [[watch]] routes it to its service now; it goes on once one does"
"""The reason a file is held while the configuration does not route it (a reload removed
its [[watch]] or its service): not a failure, for a config written in two steps is soon
whole again; not forgotten, for its progress (a TON session, a posted note) must survive."""


class FileChanged(Exception):
    """The file is not the one the journal row describes any more."""


class JobStop:
    """A job's one stop, asked before each step: the daemon stops, its service is paused,
    or the journal no longer lets this host write for the row (in a fleet, another host
    took it over)."""

    def __init__(self, stopping: threading.Event, flow: Flow, journal: Store, row: Row) -> None:
        self._stopping = stopping
        self._flow = flow
        self._journal = journal
        self._row = row
        self.lost = False

    def is_set(self) -> bool:
        if self._stopping.is_set() or self._flow.paused(self._row.service):
            return True
        self.lost = self.lost or not self._journal.holds(self._row)
        return self.lost


class JournalStore:
    """A service's step store, kept in the row; a save refused stops the work: the file
    changed, or (fleet mode) the claim went to another host."""

    def __init__(self, journal: Store, row: Row, stop: JobStop) -> None:
        self._journal = journal
        self._row = row
        self._stop = stop

    def load(self) -> dict[str, Any]:
        return self._journal.load_progress(self._row)

    def save(self, progress: dict[str, Any]) -> None:
        if not self._journal.save_progress(self._row, progress):
            raise Interrupted if self._stop.is_set() else FileChanged


class Pipeline:
    def __init__(
        self,
        journal: Store,
        watches: Callable[[], tuple[WatchConfig, ...]],
        stopping: threading.Event,
        outcomes: Outcomes,
        completed: Callable[[Row], None],
        flow: Flow,
        faults: Degraded | None = None,
    ) -> None:
        self.journal = journal
        self.faults = faults or Degraded()
        self.watches = watches
        self.stopping = stopping
        self.outcomes = outcomes
        self.finisher = Finisher(
            journal, self.place, outcomes, completed, self.mark_failed, self.faults
        )
        self.flow = flow
        self.in_flight = InFlight()
        self.hashing = InFlight()
        self.shortage = Shortage(journal, self.faults)
        self.services: dict[str, ServiceConfig] = {}
        self.uploaders: dict[str, Uploader] = {}

    def use(self, services: dict[str, ServiceConfig], uploaders: dict[str, Uploader]) -> None:
        """New service settings apply to uploads that start from now on."""
        self.services, self.uploaders = services, uploaders

    def place(self, path: Path) -> Place:
        """`path`'s folder, opened from the root of the watch that takes it (files.locate)."""
        watch = route(self.watches(), path)
        if watch is None:
            raise Vanished(path)
        return locate(watch.path, path)

    def process(self, row: Row) -> None:
        path = Path(os.fsdecode(row.path))
        fields = log_fields(path, row.service)
        if self.failed_if_damaged(row) or not self._may_go(row):
            return
        if row.state is State.UPLOADED:
            # Claimed without its sidecar: its host died between the upload and the sidecar.
            service = self.services.get(row.service)
            if service is not None:
                self.finisher.finish(row, service)
            return
        try:
            with self.place(path) as place, place.open_regular() as file:
                self.shortage.opened()
                self._check_links(path, file)
                self._process_open(row, place, file, fields)
        except Vanished:
            if self.routes(row.path, row.service):
                self.journal.forget_missing(row.path)
            else:
                self._hold_unrouted(row)
        except FileChanged:
            log.info("%s changed while it was being handled; starting over", path, extra=fields)
        except Interrupted:  # nothing journaled of the hash: the next start hashes it again
            log.info("%s: hashing stopped by the shutdown", path, extra=fields)
        except PermanentError as exc:
            log.warning("%s", exc, extra=fields)
            self.mark_failed(row, str(exc))
        except OSError as exc:
            if exc.errno in SCARCE:
                self.shortage.met(row, exc)
            self.fail(row, f"{path}: cannot read: {exc.strerror or exc}")

    def _check_links(self, path: Path, file: BufferedReader) -> None:
        """A file with other names may be one from outside every watch, linked in."""
        links = os.fstat(file.fileno()).st_nlink
        watch = route(self.watches(), path)
        if links > 1 and watch is not None and not watch.allow_hard_links:
            raise PermanentError(
                f"{path}: has {links} names (hard links); set allow_hard_links = true on its"
                " [[watch]] to upload such files"
            )

    def _may_go(self, row: Row, counted_in: ServiceConfig | None = None) -> bool:
        """Whether flow control lets the file on; if not, it is held (or failed, when it is
        larger than any day's quota). With `counted_in`, the file is counted in its quota."""
        try:
            hold = self.flow.hold_of(row.service, row.identity.size)
            if hold is None and counted_in is not None:
                hold = self.flow.admit(counted_in, row.id, row.identity.size)
        except TooLarge as exc:
            self.mark_failed(row, str(exc))
            return False
        if hold is not None:
            self._hold(row, hold)
            return False
        return True

    def routes(self, path: bytes, service: str) -> bool:
        """Whether this host's configuration takes the file to `service`: a [[watch]] routes
        its path and the service is configured."""
        return (
            service in self.services and route(self.watches(), Path(os.fsdecode(path))) is not None
        )

    def _hold_unrouted(self, row: Row) -> None:
        log.warning("%s: %s", os.fsdecode(row.path), UNROUTED, extra=log_fields(row.path))
        if self.journal.mark_held(row, UNROUTED, None) and self.routes(row.path, row.service):
            # A reload routed it again meanwhile, its catch-up maybe before this hold.
            self.journal.release_routed(UNROUTED, lambda path, _: path == row.path)

    def catch_up(self, wake: Callable[[], None]) -> None:
        """At start, after a reload and with each rescan: sidecars of uploaded rows, and the
        files held for want of a route go on where they were once this host's configuration
        routes them again (in a fleet, another host's routes are its own to follow); `wake`
        is told once they are due, and after a reload in any case (new limits, services)."""
        self.finish_uploaded()
        released = self.journal.release_routed(UNROUTED, self.routes)
        if released:
            log.info("%d files routed again go on where they were", released)
        wake()

    def _hold(self, row: Row, hold: Hold) -> None:
        """Not a failure and no request: the file waits for the service's hold to end."""
        self.journal.mark_held(row, hold.reason, hold.until)

    def fail(self, row: Row, reason: str) -> None:
        """A failure no retry will mend (an I/O error, a bug): shown until `syncd retry`."""
        log.error("%s", reason, extra=log_fields(row.path, row.service, State.FAILED))
        current = self.journal.get(row.id)
        if current is None or current.fence != row.fence:
            return  # another host took the file over: its failure is not ours to record
        if allowed(current.state, State.FAILED):
            self.mark_failed(current, reason)

    def mark_failed(self, row: Row, reason: str) -> bool:
        """Every way a file fails for good ends here, so it is counted once."""
        failed = self.journal.mark_failed(row, storable(reason))
        if failed:
            self.outcomes.finished(row.service, FAILED, row.identity.size, None)
        return failed

    def failed_if_damaged(self, row: Row) -> bool:
        """A row whose stored data cannot be read is failed, with that reason."""
        damaged = row.progress.get(UNREADABLE)
        if damaged is None:
            return False
        columns = " and ".join(damaged) if isinstance(damaged, list) else "data"
        self.fail(row, f"{os.fsdecode(row.path)}: its journal entry is damaged ({columns})")
        return True

    def _process_open(
        self, row: Row, place: Place, file: BufferedReader, fields: dict[str, str]
    ) -> None:
        path = place.path
        identity = identity_of(file)
        digest = None
        if row.sha256 is None or not identity.same_version(row.identity):
            tracked = Upload(str(path), row.service, identity.size)
            report = self.hashing.begin(row.id, tracked)

            def progress(done: int) -> None:
                if self.stopping.is_set():  # a hash of 100 GiB must not hold a stop for minutes
                    raise Interrupted
                report(done)

            try:
                digest = sha256_of(file, progress)
            finally:
                self.hashing.end(row.id)
            if identity_of(file) != identity:
                self.journal.mark_changed(row)
                raise FileChanged
        service = self.services.get(row.service)
        uploader = self.uploaders.get(row.service)
        uploader = None if service is None or uploader is None else ready(uploader)
        # One commit for `hashed` and the decision (`uploading` for a new file): a crash
        # after it resumes from `hashed` (recover), before it from `seen`.
        hashed, decision = self.journal.batch(lambda: self._begin(row, digest, identity, uploader))
        if hashed is None:
            raise FileChanged
        if service is None or uploader is None:
            self._hold_unrouted(hashed)  # a reload took its service away while it was hashed
            return
        if decision is None:
            raise FileChanged
        answer, row = decision
        if answer is Decision.DUPLICATE:
            assert row.duplicate_of is not None
            log.info("%s duplicates %s", path, os.fsdecode(row.duplicate_of), extra=fields)
            self.finisher.finish(row, service, place, DUPLICATE)
        elif answer is Decision.UNCHANGED:
            log.info("%s: its content was uploaded already: not uploaded again", path)
            self.finisher.finish(row, service, place, DUPLICATE)
        elif answer is Decision.UPLOAD and self._may_go(row, counted_in=service):
            # (Asked again: a pause or a hold may have come while the file was hashed.)
            self._upload(row, place, file, service, uploader, fields)

    def _begin(
        self, row: Row, digest: str | None, identity: Identity, uploader: Uploader | None
    ) -> tuple[Row | None, tuple[Decision, Row] | None]:
        """Inside a batch: `hashed` if hashed now (None: the row is stale, marked changed),
        then the decision on the upload (None: stale, or no uploader to ask)."""
        hashed = row if digest is None else self.journal.mark_hashed(row, digest, identity)
        if hashed is None:
            self.journal.mark_changed(row)
            return None, None
        if uploader is None:
            return hashed, None
        return hashed, self.journal.begin_upload(hashed, uploader.still_valid)

    def _upload(
        self,
        row: Row,
        place: Place,
        file: BufferedReader,
        service: ServiceConfig,
        uploader: Uploader,
        fields: dict[str, str],
    ) -> None:
        assert row.sha256 is not None
        path = place.path
        progress = self.in_flight.begin(row.id, Upload(str(path), row.service, row.identity.size))
        stop = JobStop(self.stopping, self.flow, self.journal, row)
        job = Job(
            path=path,
            file=file,
            size=row.identity.size,
            sha256=row.sha256,
            media_type=media_type(path),
            caption=place.read_caption() if service.captioned else None,
            store=JournalStore(self.journal, row, stop),
            progress=progress,
            stopping=stop,
            row_id=row.id,
        )
        log.debug("uploading %s to %s", path, row.service, extra=fields)
        try:
            with metered(self.flow.meter(row.service)):
                outcome = uploader.upload(job)
        except RateLimited as exc:
            log.warning("%s; the whole service waits", exc, extra=fields)
            hold = self.flow.hold_of(row.service)
            self._hold(row, hold or self.flow.rate_limited(row.service, exc.retry_after))
            return
        except RetryableError as exc:
            delay: float = load("syncd.services.http").retry_delay(row.attempts, exc.retry_after)
            log.warning("%s; next try in %.1f s", exc, delay, extra=fields)
            self.journal.mark_retry(row, str(exc), time.time() + delay)
            self.outcomes.retrying(row.service)
            return
        except PermanentError as exc:
            log.error("%s: %s", path, exc, extra=fields)
            self.mark_failed(row, str(exc))
            return
        except Interrupted:
            hold = None if stop.lost else self.flow.hold_of(row.service)
            if stop.lost:
                log.warning("%s: another host took this upload over", path, extra=fields)
            elif hold is not None:
                log.info("%s: stopped between chunks: %s", path, hold.reason, extra=fields)
                self._hold(row, hold)
            else:
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
            not identity_of(file).same_version(row.identity)
            or place.mode_if_unchanged(row.identity) is None
        ):
            self.journal.mark_changed(row)
            raise FileChanged
        uploaded = self.journal.mark_uploaded(row, outcome)
        if uploaded is not None:
            self.finisher.finish(uploaded, service, place)

    def finish_uploaded(self) -> None:
        """Rows uploaded but without their sidecar (a crash, a full disk) get it now: at start,
        with every periodic rescan, and while sidecars are degraded, with backoff."""
        for listed in self.journal.in_state(State.UPLOADED):
            row = self.journal.get(listed.id)  # a worker may have finished it since the list
            if row is None or row.state is not State.UPLOADED:
                continue
            # Unrouted, its sidecar waits (its folder is reached through its watch).
            if not self.routes(row.path, row.service) or self.failed_if_damaged(row):
                continue
            if not self.finisher.finish(row, self.services[row.service]):
                return
        self.finisher.mended()

    def mend(self) -> None:
        """While sidecars are degraded, try the waiting ones again once their backoff is up."""
        if self.finisher.mend_due():
            self.finish_uploaded()
