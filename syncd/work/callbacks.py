"""OneAll's side of the work: which rows the media server may serve, and video callbacks.

A video upload ends in `awaiting_callback`; OneAll later posts the outcome to a signed
URL. A callback can overtake the answer to its own request, so one that arrives while
the row is still `uploading` is kept in the row's progress and applied once the row
waits. A row whose deadline passes with no callback is failed.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

from syncd.control.logs import log_fields
from syncd.files import media_type
from syncd.journal.states import IN_FLIGHT, State
from syncd.journal.store import Row, Store
from syncd.services.oneall.mediaserver import Servable
from syncd.services.oneall.uploader import callback_outcome
from syncd.work.pipeline import Pipeline

log = logging.getLogger(__name__)

EARLY_CALLBACK = "early_callback"
"""Where a callback that arrived before its request's answer waits (in the row's progress)."""


class Callbacks:
    def __init__(self, journal: Store, pipeline: Pipeline) -> None:
        self._journal = journal
        self._pipeline = pipeline

    def servable(self, row_id: int) -> Servable | None:
        """What the media server may send for `row_id`: only files being pushed."""
        row = self._journal.get(row_id)
        if row is None or row.state not in IN_FLIGHT:
            return None
        path = Path(os.fsdecode(row.path))
        return Servable(path, row.identity, media_type(path))

    def receive(self, row_id: int, data: dict[str, Any]) -> bool:
        """A OneAll callback; one that overtakes its own request's answer is kept for later."""
        row = self._journal.get(row_id)
        if row is not None and row.state is State.UPLOADING:
            return self._journal.save_progress(row, {**row.progress, EARLY_CALLBACK: data})
        if row is None or row.state is not State.AWAITING_CALLBACK:
            return False
        return self._complete(row, data)

    def check(self) -> None:
        """Apply callbacks that came early; fail the rows whose deadline has passed."""
        for row in self._journal.in_state(State.AWAITING_CALLBACK):
            if EARLY_CALLBACK in row.progress:
                self._complete(row, row.progress[EARLY_CALLBACK])
        for row in self._journal.overdue_callbacks(time.time()):
            service = self._pipeline.services.get(row.service)
            timeout = getattr(service, "callback_timeout", 0.0)
            reason = f"{row.service}: no callback from OneAll within {timeout:g} s"
            log.error("%s: %s", os.fsdecode(row.path), reason, extra=log_fields(row.path))
            self._journal.mark_failed(row, reason)

    def _complete(self, row: Row, data: dict[str, Any]) -> bool:
        service = self._pipeline.services.get(row.service)
        outcome = callback_outcome(data)
        if isinstance(outcome, str) or service is None:
            reason = f"{row.service}: OneAll reported: {outcome}"
            log.error("%s: %s", os.fsdecode(row.path), reason, extra=log_fields(row.path))
            return self._journal.mark_failed(row, reason)
        uploaded = self._journal.mark_uploaded(row, outcome)
        if uploaded is None:
            return False
        self._pipeline.finish(uploaded, service)
        return True
