"""Running out of file descriptors (files.SCARCE): a spell said once in `degraded`, and a
file that meets it kept claimable, never failed: it passes once others are closed."""

from __future__ import annotations

import os
import time
from typing import NoReturn

from syncd.control.degraded import DESCRIPTORS, Degraded
from syncd.journal.states import State, allowed
from syncd.journal.store import Row, Store

QUIET = 30.0
"""Seconds without a file short of descriptors before `degraded` stops saying so: at the
edge of the limit files fail and pass in turns, and that is one spell, said once."""


class OutOfDescriptors(Exception):
    """The process or the system has no file descriptor to spare; the worker waits."""


class Shortage:
    def __init__(self, journal: Store, faults: Degraded) -> None:
        self._journal = journal
        self._faults = faults
        self._met_at = -QUIET

    def opened(self) -> None:
        """A file was opened, or a hook started: a spell quiet long enough is over."""
        if time.monotonic() > self._met_at + QUIET:
            self._faults.clear(DESCRIPTORS)

    def noted(self, exc: OSError) -> None:
        """A shortage was met, by a file or by a hook that could not start: said once a
        spell (degraded), not once each."""
        self._faults.set(DESCRIPTORS, f"{exc.strerror}: raise LimitNOFILE= (ulimit -n)")
        self._met_at = time.monotonic()

    def met(self, row: Row, exc: OSError) -> NoReturn:
        """Opening the file, its folder, a socket or a module found no descriptor to spare.
        The file stays claimable (an upload under way waits as a retry) and the worker waits
        (work/pool.py)."""
        self.noted(exc)
        current = self._journal.get(row.id)
        if current is not None and allowed(current.state, State.RETRY_WAIT):
            self._journal.mark_retry(current, f"{os.fsdecode(row.path)}: {exc.strerror}", 0.0)
        raise OutOfDescriptors from exc
