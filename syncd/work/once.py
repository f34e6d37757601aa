"""`syncd run --once` (DESIGN.md, "Flow control"): when the folders' files are worked off,
and how many failed (a retryable error tried more than `--retries` times counts)."""

from __future__ import annotations

import logging
from typing import Protocol

from syncd.journal.patience import StorageFault
from syncd.journal.states import State

log = logging.getLogger(__name__)

EXIT_FAILED = 4
"""`run --once` finished with failed files (DESIGN.md, "CLI")."""


class OnceStore(Protocol):
    def once_outcome(self, retries: int) -> tuple[int, int]: ...

    def counts(self) -> dict[State, int]: ...


class Scans(Protocol):
    @property
    def count(self) -> int: ...

    @property
    def running(self) -> bool: ...


class Intake(Protocol):
    @property
    def scans(self) -> Scans: ...

    def pending(self) -> int: ...


class OnceRun:
    def __init__(self, journal: OnceStore, intake: Intake, retries: int) -> None:
        self._journal = journal
        self._intake = intake
        self._retries = retries
        self._quiet = 0

    def finished(self) -> bool:
        """Every file found is worked off, on two ticks running: a file the settler has
        just handed over may not be in the journal yet."""
        scans = self._intake.scans
        quiet = scans.count >= 1 and not scans.running and not self._intake.pending()
        try:
            quiet = quiet and self._journal.once_outcome(self._retries)[0] == 0
        except StorageFault:
            quiet = False
        self._quiet = self._quiet + 1 if quiet else 0
        return self._quiet >= 2

    def failed(self) -> int:
        """How many failed; files held are said too, since a run that ends with them has
        not uploaded everything, though nothing failed."""
        _, failed = self._journal.once_outcome(self._retries)
        log.info("run --once finished: %d files failed", failed)
        held = self._journal.counts()[State.HELD]
        if held:
            log.warning(
                "run --once: %d files held, not uploaded (a paused service, a quota used up,"
                " or no [[watch]] routing them any more); they go on a later run",
                held,
            )
        return failed
