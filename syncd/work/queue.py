"""Where intake hands its files to the workers: each complete file journaled as `seen`, in its
watch's priority and order, and a worker woken when there is new work.

A full disk or an unreachable journal pauses intake here (`patiently`) until the file is
journaled: the file is not lost, and nothing behind it gets ahead of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from syncd.config import WatchConfig
from syncd.files import Identity
from syncd.journal.patience import patiently
from syncd.journal.store import Store
from syncd.work.flow import rank


class Queue:
    def __init__(self, journal: Store, wake: Callable[[], None]) -> None:
        self._journal = journal
        self._wake = wake

    def add(self, path: Path, watch: WatchConfig, identity: Identity) -> None:
        """Intake found a complete file."""
        encoded = os.fsencode(path)
        order = rank(watch.order, encoded, identity)
        with patiently():
            if self._journal.record_seen(encoded, watch.service, identity, watch.priority, order):
                self._wake()

    def together(self, work: Callable[[], None]) -> None:
        """A settle round's `add` calls journaled in one commit."""
        with patiently():
            self._journal.batch(work)
