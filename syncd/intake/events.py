"""How file system events become hints, and the polling observers of network folders.

inotify events are hints, not facts (ENGINEERING.md): the kernel coalesces them, drops
them on queue overflow, and close events are missing for files moved in or written in a
folder created a moment before. So an event only names a path to look at; the watcher's
thread decides (intake/watcher.py). inotify's own events come through intake/inotify.py;
a watch with a `poll_interval` (a network folder, where inotify sees no remote writes) is
polled by a watchdog `PollingObserver` (intake/polling.py, loaded only for such a watch),
whose events become the same hints.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from syncd.config import WatchConfig

if TYPE_CHECKING:
    from watchdog.observers.api import BaseObserver


class Hints(Protocol):
    """What an event can tell the watcher; called on the inotify reader's thread and the
    polling observers'."""

    def hint(self, path: Path, quick: bool) -> None: ...

    def hint_folder(self, path: Path) -> None: ...

    def forget(self, path: Path) -> None: ...


class Pollers:
    """One watchdog polling observer per watch with a `poll_interval` (intake/polling.py)."""

    def __init__(self, hints: Hints) -> None:
        self._hints = hints
        self._observers: list[BaseObserver] = []

    def start(self, watches: tuple[WatchConfig, ...]) -> None:
        self._observe(watches)

    def stop(self) -> None:
        self._unobserve()

    def replace(self, watches: tuple[WatchConfig, ...]) -> None:
        """Poll these instead (a reload)."""
        self._unobserve()
        self._observe(watches)

    def alive(self) -> bool:
        return all(o.is_alive() for o in self._observers)

    def stopped(self, root: bytes) -> bool:
        """Whether the poll of `root` has ended: watchdog ends it when the folder is gone."""
        return any(
            not emitter.is_alive()
            for observer in self._observers
            for emitter in observer.emitters
            if os.fsencode(emitter.watch.path) == root
        )

    def _observe(self, watches: tuple[WatchConfig, ...]) -> None:
        polled = {(w.path, w.recursive, w.poll_interval) for w in watches if w.poll_interval > 0}
        if not polled:
            return
        from syncd.intake.polling import poll

        self._observers += [poll(self._hints, *watch) for watch in sorted(polled)]

    def _unobserve(self) -> None:
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(timeout=5)
