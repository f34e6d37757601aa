"""watchdog glue: which events inotify is asked for, how they become hints, the observers.

inotify events are hints, not facts (ENGINEERING.md): the kernel coalesces them, drops
them on queue overflow, and close events are missing for files moved in or written in a
folder created a moment before. So an event only names a path to look at; the watcher's
thread decides (intake/watcher.py).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from syncd.config import WatchConfig
from syncd.intake.routing import IGNORED_PREFIXES, IGNORED_SUFFIXES

INOTIFY_LOGGER = "watchdog.observers.inotify_c"
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
]
"""What inotify is asked for. Not opens, reads or every write: our own hashing, uploads
and sidecars would each cost events, and a write without a close is caught by the
stability check anyway (which a created file always gets)."""

DEEPEST_TREE = 4096 // 2
"""A folder path fits in PATH_MAX (4,096 bytes) and every level takes at least 2 of them
("x/"), so no tree anything can name by path is deeper than this."""


class Hints(Protocol):
    """What an event can tell the watcher; called on watchdog's threads."""

    def hint(self, path: Path, quick: bool) -> None: ...

    def hint_folder(self, path: Path) -> None: ...

    def forget(self, path: Path) -> None: ...


class _Events(FileSystemEventHandler):
    """Runs on watchdog's dispatcher thread: classify and enqueue, nothing else."""

    def __init__(self, hints: Hints) -> None:
        self._hints = hints

    def on_any_event(self, event: FileSystemEvent) -> None:
        hints = self._hints
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            target = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            hints.hint_folder(Path(os.fsdecode(target)))
        elif isinstance(event, FileMovedEvent):
            if not ignored(event.src_path):
                hints.forget(Path(os.fsdecode(event.src_path)))
            if not ignored(event.dest_path):
                hints.hint(Path(os.fsdecode(event.dest_path)), quick=True)
        elif event.is_directory or ignored(event.src_path):
            return
        elif isinstance(event, FileDeletedEvent):
            hints.forget(Path(os.fsdecode(event.src_path)))
        elif event.event_type not in ("opened", "closed_no_write"):
            hints.hint(Path(os.fsdecode(event.src_path)), quick=isinstance(event, FileClosedEvent))


def ignored(path: bytes | str) -> bool:
    """A file name intake always ignores: our sidecars and their temp files (every upload
    makes them), dot-files, partial downloads. Dropped here, on watchdog's thread, before
    they cost a hint, a wake of the settler and an lstat."""
    name = os.fsencode(path).rpartition(b"/")[2]
    return name.endswith(IGNORED_SUFFIXES) or name.startswith(IGNORED_PREFIXES)


class _OverflowHook(logging.Handler):
    """watchdog 7.1 only logs an inotify queue overflow; lost events mean a rescan."""

    def __init__(self, rescan: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._rescan = rescan

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._rescan()


def _allow_deep_trees() -> None:
    """watchdog adds recursive watches with os.walk, which recurses once per level on
    Python 3.11: with the default limit of 1,000 a deeper tree raises RecursionError in
    its threads. Room for the deepest tree a path can name, above what is on the stack
    already (the frames are small: 8 MiB of thread stack holds them many times over)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000 + DEEPEST_TREE))


class Observers:
    """The watchdog observers for a set of watches: one inotify observer for all the
    watches it can serve, one polling observer per watch with a `poll_interval`."""

    def __init__(self, hints: Hints, rescan: Callable[[], None]) -> None:
        self._handler = _Events(hints)
        self._overflow = _OverflowHook(rescan)
        self._observers: list[BaseObserver] = []

    def start(self, watches: tuple[WatchConfig, ...]) -> None:
        _allow_deep_trees()
        logging.getLogger(INOTIFY_LOGGER).addHandler(self._overflow)
        self._observe(watches)

    def stop(self) -> None:
        logging.getLogger(INOTIFY_LOGGER).removeHandler(self._overflow)
        self._unobserve()

    def replace(self, watches: tuple[WatchConfig, ...]) -> None:
        """Watch these instead (a reload)."""
        self._unobserve()
        self._observe(watches)

    def alive(self) -> bool:
        return all(o.is_alive() for o in self._observers)

    def _observe(self, watches: tuple[WatchConfig, ...]) -> None:
        inotify: BaseObserver | None = None
        scheduled: set[tuple[Path, bool, float]] = set()
        for watch in watches:
            key = (watch.path, watch.recursive, watch.poll_interval)
            if key in scheduled:
                continue
            scheduled.add(key)
            if watch.poll_interval > 0:
                from watchdog.observers.polling import PollingObserver  # network folders only

                observer: BaseObserver = PollingObserver(timeout=watch.poll_interval)
                self._observers.append(observer)
            else:
                if inotify is None:
                    inotify = Observer()
                    self._observers.append(inotify)
                observer = inotify
            path = os.fsdecode(watch.path)
            observer.schedule(self._handler, path, recursive=watch.recursive, event_filter=EVENTS)
        for observer in self._observers:
            observer.daemon = True
            observer.start()

    def _unobserve(self) -> None:
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(timeout=5)
