"""watchdog's polling observer for a watch with a `poll_interval` (a network folder):
listing through a checked descriptor, telling folders by `lstat`, its events made hints."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from pathlib import Path

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
from watchdog.observers.polling import PollingObserverVFS

from syncd.files import open_folder
from syncd.intake.events import Hints
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


def poll(hints: Hints, path: Path, recursive: bool, interval: float) -> PollingObserverVFS:
    """A started observer polling `path` every `interval` seconds."""
    _allow_deep_trees()
    observer = PollingObserverVFS(os.lstat, _listing, polling_interval=interval)
    observer.schedule(_Events(hints), os.fsdecode(path), recursive=recursive, event_filter=EVENTS)
    observer.daemon = True
    observer.start()
    return observer
