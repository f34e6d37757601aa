"""OneAll's side of the work: which rows the media server may serve, and video callbacks.

A video upload ends in `awaiting_callback`; OneAll later posts the outcome to a signed URL
that names the row and the push (attempt) it was made for. A callback is validated whole
before anything is stored, and counts only for the row's current push: a new push (a retry,
a rewritten file) gets new URLs, and the tokens of earlier ones are refused. A callback can
overtake the answer to its own request, so one that arrives while the row is still
`uploading` is kept in the row's progress and applied once the row waits; the next push
replaces the progress and so clears it. One that arrives while a reload has left the file
without a route (its [[watch]] or its service gone) is kept the same way, and applied once a
reload or a restart routes the file again (its deadline was for the callback, which came).
A replay after the outcome was recorded (OneAll re-delivers a callback whose answer it
lost) is acknowledged and changes nothing. A row whose deadline passes with no callback is
failed, and so is a row whose kept callback cannot be read: one row's data never stops the
loop.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

from syncd.control.logs import log_fields
from syncd.files import media_type
from syncd.journal.states import IN_FLIGHT, State
from syncd.journal.store import Row, Store
from syncd.services.base import Result
from syncd.services.loading import load
from syncd.work.pipeline import UNROUTED, Pipeline

if TYPE_CHECKING:
    from syncd.services.oneall.mediaapp import Servable

log = logging.getLogger(__name__)

EARLY_CALLBACK = "early_callback"
"""Where a callback that arrived before its request's answer waits (in the row's progress),
as a minimal envelope of its validated outcome."""


RECORDED = (State.UPLOADED, State.DONE)
"""The states of a row whose push's callback has been taken."""


def _envelope(outcome: Result | str) -> dict[str, Any]:
    """The smallest envelope `callback_outcome` reads back as `outcome`."""
    if isinstance(outcome, str):
        return {"response": {"request": {"status": {"flag": "error", "info": outcome}}}}
    return {"response": {"result": {"data": outcome}}}


def _oneall() -> ModuleType:
    """OneAll's uploader (and requests with it) loads only once OneAll is in use."""
    return load("syncd.services.oneall.uploader")


class Callbacks:
    def __init__(self, journal: Store, pipeline: Pipeline) -> None:
        self._journal = journal
        self._pipeline = pipeline
        self._lock = threading.Lock()
        """One callback at a time, and never while the main loop applies kept ones."""

    def _current(self, row_id: int, push: int) -> Row | None:
        """The row, if `push` is the one it is on now."""
        row = self._journal.get(row_id)
        if row is None or row.progress.get(_oneall().PUSH) != push:
            return None
        return row

    def servable(self, row_id: int, push: int) -> Servable | None:
        """What the media server may send: only a file being pushed, by this push."""
        row = self._current(row_id, push)
        if row is None or row.state not in IN_FLIGHT:
            return None
        from syncd.services.oneall.mediaapp import Servable  # loaded with the media server

        path = Path(os.fsdecode(row.path))

        def open_confined() -> IO[bytes]:
            with self._pipeline.place(path) as place:
                return place.open_regular()

        return Servable(path, row.identity, media_type(path), open_confined)

    def receive(self, row_id: int, push: int, data: Any) -> tuple[int, str]:
        """A OneAll callback: the HTTP status and text to answer it with."""
        outcome: Result | str | None = _oneall().callback_outcome(data)
        if outcome is None:
            return 400, "not a OneAll callback: neither a video_id nor an error"
        with self._lock:
            row = self._current(row_id, push)
            if row is not None and row.state is State.UPLOADING:
                if self._keep(row, outcome):
                    return 200, "ok"
            elif (
                row is not None
                and row.state is State.AWAITING_CALLBACK
                and self._complete(row, outcome)
            ):
                return 200, "ok"
            elif row is not None and row.state in RECORDED:
                # A re-delivery of the callback this push got (its answer was lost, say
                # to a kill): acknowledged, so OneAll stops re-delivering; nothing changes.
                return 200, "already recorded"
        return 409, "nothing is waiting for this callback"

    def check(self) -> None:
        """Apply callbacks that came early, or while the file had no route (once it has one
        again); fail the rows whose deadline has passed with no callback."""
        with self._lock:
            for row in self._journal.in_state(State.AWAITING_CALLBACK):
                if self._pipeline.failed_if_damaged(row):
                    continue
                if EARLY_CALLBACK in row.progress and self._pipeline.routes(row.path, row.service):
                    self._guarded(row, self._apply_early)
            for row in self._journal.overdue_callbacks(time.time()):
                if EARLY_CALLBACK not in row.progress:
                    self._guarded(row, self._expire)

    def _guarded(self, row: Row, action: Callable[[Row], object]) -> None:
        try:
            action(row)
        except Exception as exc:
            log.exception("%s: cannot handle its callback", os.fsdecode(row.path))
            self._pipeline.fail(
                row, f"{row.service}: cannot handle its callback: {type(exc).__name__}"
            )

    def _apply_early(self, row: Row) -> None:
        outcome: Result | str | None = _oneall().callback_outcome(row.progress[EARLY_CALLBACK])
        if outcome is None:
            self._fail(row, f"{row.service}: the callback kept for this file cannot be read")
        else:
            self._complete(row, outcome)

    def _expire(self, row: Row) -> None:
        service = self._pipeline.services.get(row.service)
        timeout = getattr(service, "callback_timeout", 0.0)
        self._fail(row, f"{row.service}: no callback from OneAll within {timeout:g} s")

    def _fail(self, row: Row, reason: str) -> bool:
        log.error("%s: %s", os.fsdecode(row.path), reason, extra=log_fields(row.path))
        return self._pipeline.mark_failed(row, reason)

    def _complete(self, row: Row, outcome: Result | str) -> bool:
        if isinstance(outcome, str):
            return self._fail(row, f"{row.service}: OneAll reported: {outcome}")
        if not self._pipeline.routes(row.path, row.service):
            # A reload took its [[watch]] or its service away: its sidecar could not be
            # written, so the callback is kept, and applied once the file is routed again.
            log.warning("%s: its callback is kept: %s", os.fsdecode(row.path), UNROUTED)
            return self._keep(row, outcome)
        uploaded = self._journal.mark_uploaded(row, outcome)
        if uploaded is None:
            return False
        self._pipeline.finisher.finish(uploaded, self._pipeline.services[row.service])
        return True

    def _keep(self, row: Row, outcome: Result | str) -> bool:
        """The callback kept in the row's progress, to be applied by `check`."""
        return self._journal.save_progress(
            row, {**row.progress, EARLY_CALLBACK: _envelope(outcome)}
        )
