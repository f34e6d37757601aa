"""How file system events become hints, and the polling observers of network folders.

inotify events are hints, not facts (ENGINEERING.md): the kernel coalesces them, drops
them on queue overflow, and close events are missing for files moved in or written in a
folder created a moment before. So an event only names a path to look at; the watcher's
thread decides (intake/watcher.py). inotify's own events come through intake/inotify.py;
a watch with a `poll_interval` (a network folder, where inotify sees no remote writes) is
polled by a watchdog `PollingObserver`, whose events `_Events` turns into the same hints.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
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
from watchdog.observers.api import BaseObserver

from syncd.config import WatchConfig
from syncd.files import open_folder
from syncd.intake.routing import ignored_name

EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileDeletedEvent,
]
"""What a polling observer reports (it never sees a close: the stability check finishes
its files)."""

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
    return ignored_name(os.fsencode(path).rpartition(b"/")[2])


def _allow_deep_trees() -> None:
    """watchdog's polling snapshot walks the tree recursively, once per level on Python
    3.11: with the default limit of 1,000 a deeper tree raises RecursionError in its
    thread. Room for the deepest tree a path can name, above what is on the stack
    already (the frames are small: 8 MiB of thread stack holds them many times over)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000 + DEEPEST_TREE))


def _listing(path: str | None) -> Iterator[os.DirEntry[str]]:
    """A polled folder's entries, read through a descriptor `open_folder` checked: the
    polling snapshot lists by path, and a folder swapped for a symlink on the way would
    lead it outside. Such a folder lists as empty (symlinks themselves are never walked:
    the snapshot tells folders by `lstat`)."""
    try:
        opened = open_folder(os.fsencode(path or "."))
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return iter(())
        raise
    try:
        with os.scandir(opened) as listing:
            return iter(list(listing))
    finally:
        os.close(opened)


class Pollers:
    """One watchdog polling observer per watch with a `poll_interval`, listing through
    `_listing` and telling folders by `lstat`."""

    def __init__(self, hints: Hints) -> None:
        self._handler = _Events(hints)
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
        from watchdog.observers.polling import PollingObserverVFS  # network folders only

        _allow_deep_trees()
        for path, recursive, interval in sorted(polled):
            observer = PollingObserverVFS(os.lstat, _listing, polling_interval=interval)
            folder = os.fsdecode(path)
            observer.schedule(self._handler, folder, recursive=recursive, event_filter=EVENTS)
            observer.daemon = True
            observer.start()
            self._observers.append(observer)

    def _unobserve(self) -> None:
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(timeout=5)
