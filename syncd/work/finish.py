"""An uploaded row's way to `done`: its sidecar, its after-upload actions, its outcome.

The worker that uploaded the file puts the sidecar beside it (content fsync'd, name linked:
`sidecar.put`) and hands the row to the committer thread (work/sidecars.py), which fsyncs
each folder once for a batch and then, in one transaction, tells `completed` of every row
and marks them all `done`. So a row is `done` only once its sidecar is durable, and a
crash at any moment leaves at worst `uploaded` rows, whose sidecars the next start writes
again (`Pipeline.finish_uploaded`): nothing is uploaded twice and nothing is lost.

A sidecar that cannot be written for good (a name too long, a folder in its way, a folder
that refuses us) fails the file with that reason, its upload's result kept: `syncd retry`
then writes the sidecar without uploading again. One that fails for a passing reason
(disk full, I/O) leaves the row `uploaded`, and the sidecars are tried again with backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from syncd.config import ServiceConfig
from syncd.control.degraded import SIDECARS, Backoff, Degraded
from syncd.control.logs import log_fields
from syncd.errors import PermanentError
from syncd.files import Place, Vanished
from syncd.journal.states import State
from syncd.journal.store import Row, Store
from syncd.outputs import sidecar
from syncd.work.outcomes import DONE, Outcomes
from syncd.work.sidecars import Finished, SidecarCommitter

log = logging.getLogger(__name__)


class TakenOver(Exception):
    """Fleet mode: another host claimed the row since; its sidecar is that host's to write."""


class Finisher:
    def __init__(
        self,
        journal: Store,
        place: Callable[[Path], Place],
        outcomes: Outcomes,
        completed: Callable[[Row], None],
        mark_failed: Callable[[Row, str], bool],
        faults: Degraded,
    ) -> None:
        self._journal = journal
        self._place = place
        self._outcomes = outcomes
        self._completed = completed
        """Told of a row whose sidecar is durable, before it is done (after-upload actions
        and hooks); it must be idempotent, as a crash in between calls it again."""
        self._mark_failed = mark_failed
        self.faults = faults
        self._backoff = Backoff()
        self._next_mend = 0.0
        self.committer = SidecarCommitter(self._done, self._unsynced)
        self._handed = threading.local()
        self._lock = threading.Lock()
        self._finishing: set[int] = set()
        """Rows whose sidecar is being put or is on its way to `done` with the committer: a
        catch-up (start, reload, rescan, mend) meeting a worker's row leaves it to it, so
        the sidecar, `done` and the row's hooks and webhooks come once."""

    def finish(
        self, row: Row, service: ServiceConfig, place: Place | None = None, outcome: str = DONE
    ) -> bool:
        """The sidecar of an uploaded row, put here; durable, completed and `done` with
        others by the committer. A crash before `done` is mended at start.

        False when the sidecar must wait for a passing fault (disk full, I/O) to clear: the
        row stays `uploaded`, and `mend` tries every such row again until all are written.
        """
        with self._lock:
            if row.id in self._finishing:
                self._handed.row = row.id  # on its way to `done` already
                return True
            self._finishing.add(row.id)
        self._handed.row = None
        try:
            return self._finish(row, service, place, outcome)
        finally:
            if getattr(self._handed, "row", None) != row.id:
                with self._lock:
                    self._finishing.discard(row.id)

    def _finish(self, row: Row, service: ServiceConfig, place: Place | None, outcome: str) -> bool:
        path = Path(os.fsdecode(row.path))
        try:
            if place is None:
                with self._place(path) as found:
                    folder = self._put(row, service, found)
            else:
                folder = self._put(row, service, place)
        except Vanished:
            folder = None  # the file is gone or no longer here as it was: nothing beside it
        except TakenOver:
            log.warning("%s: another host took this file over", path, extra=_done_fields(row))
            return True
        except PermanentError as exc:
            self._refused(row, f"cannot write the sidecar: {exc}")
            return True
        except sidecar.SidecarError as exc:
            return self._failed(row, exc)
        except OSError as exc:  # the folder's descriptor: out of them, say (files.SCARCE)
            return self._failed(row, sidecar.failure(path, exc))
        self.committer.submit(Finished(row, outcome, folder))
        self._handed.row = row.id
        return True

    def handed_over(self, row: Row) -> bool:
        """Whether this thread's last `finish` handed `row` to the committer, which then
        releases its claim with `done` (in a fleet, `uploaded` rows are claimable: released
        earlier, another host could take the row and write its sidecar again)."""
        handed = getattr(self._handed, "row", None) == row.id
        self._handed.row = None
        return handed

    def _put(self, row: Row, service: ServiceConfig, place: Place) -> int | None:
        """Beside the file while it is the version uploaded (a changed file gets none): a
        descriptor of its folder, for the committer to fsync, or None."""
        assert row.result is not None and row.sha256 is not None
        mode = place.mode_if_unchanged(row.identity)
        if mode is None:
            return None
        text = sidecar.render(
            service=row.service,
            service_type=service.type,
            sha256=row.sha256,
            size=row.identity.size,
            uploaded_at=row.uploaded_at or time.time(),
            result=row.result,
            duplicate_of=Path(os.fsdecode(row.duplicate_of)) if row.duplicate_of else None,
        )
        if not self._journal.holds(row):
            # Checked, then written: a host frozen longer than its lease exactly between
            # the two writes a sidecar its successor writes too, the same bytes (README).
            raise TakenOver
        sidecar.put(place, text, mode)
        return os.dup(place.folder)

    def _failed(self, row: Row, exc: sidecar.SidecarError) -> bool:
        if exc.permanent:
            self._refused(row, str(exc))
            return True
        log.warning("%s; trying again later", exc, extra=_done_fields(row))
        self.faults.set(SIDECARS, str(exc))
        self._next_mend = time.monotonic() + self._backoff.failed()
        return False

    def _refused(self, row: Row, reason: str) -> None:
        """Failed for a person to fix; the result stays, so `syncd retry` uploads nothing."""
        log.error("%s", reason, extra=log_fields(row.path, row.service, State.FAILED))
        self._mark_failed(row, f"uploaded, but {reason}; fix that, then syncd retry")

    # -- the committer's side ------------------------------------------------------------

    def _unsynced(self, finished: Finished, exc: sidecar.SidecarError) -> None:
        with self._lock:
            self._finishing.discard(finished.row.id)
        self._failed(finished.row, exc)
        self._journal.release(finished.row.id)  # its worker handed the claim over with it

    def _done(self, batch: list[Finished]) -> None:
        """Every sidecar of `batch` is durable: their actions, `done` and the claims'
        release, in one commit. Only the rows this host made `done` count as its uploads:
        in a fleet, a row whose claim ran out meanwhile (its commit waited out the
        database) was finished by the host that took it over."""
        try:
            done = self._journal.batch(lambda: self._complete(batch))
        finally:
            with self._lock:
                self._finishing.difference_update(item.row.id for item in batch)
        now = time.time()
        for item in batch:
            row = item.row
            if row.id not in done:
                log.info("%s: finished by another host", os.fsdecode(row.path))
                continue
            waited = None if row.queued_at is None else now - row.queued_at
            self._outcomes.finished(row.service, item.outcome, row.identity.size, waited)
            log.info("uploaded %s", os.fsdecode(row.path), extra=_done_fields(row))

    def _complete(self, batch: list[Finished]) -> set[int]:
        """The ids of the rows made `done`. In row order: two hosts' batches then lock
        their rows in one order (PostgreSQL would otherwise find a deadlock and roll one
        back)."""
        done = set()
        for item in sorted(batch, key=lambda item: item.row.id):
            if self._journal.mark_done(item.row.id):
                done.add(item.row.id)
                if item.written:
                    self._completed(item.row)
            self._journal.release(item.row.id)
        return done

    # -- mending -------------------------------------------------------------------------

    def mend_due(self) -> bool:
        """Sidecars are degraded and their backoff is up."""
        return self.faults.has(SIDECARS) and time.monotonic() >= self._next_mend

    def mended(self) -> None:
        """Every waiting sidecar is written: sidecars are no longer degraded."""
        self._backoff.reset()
        self.faults.clear(SIDECARS)


def _done_fields(row: Row) -> dict[str, str]:
    return log_fields(row.path, row.service, State.DONE)
