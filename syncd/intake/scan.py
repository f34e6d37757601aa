"""Reconciliation scans: whatever the events missed, found by walking the watched folders.

A full scan runs at start, after an inotify queue overflow and every `rescan_interval`; a
folder scan runs for each folder created or moved in. Files the journal already holds with
the same identity are skipped, every other file goes to the settler as a candidate.

Every walk here is iterative (a stack, not recursion): a tree deeper than Python's
recursion limit is walked like any other. Symlinks are never followed.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from syncd.config import WatchConfig
from syncd.intake.routing import IGNORED_BYTES, accepts, takers

log = logging.getLogger(__name__)

T = TypeVar("T")
Known = Callable[[], dict[bytes, tuple[int, int, int, int]]]
"""The identities the journal already holds, so a scan skips what is done."""
Found = Callable[[Path, os.stat_result], bool]
"""Told of each file that is new or changed; True when it became a new candidate."""


@dataclass(slots=True)
class ScanStats:
    """The last full scan, for `syncd status` and STATUS=."""

    running: bool = False
    count: int = 0
    files: int = 0
    seconds: float = 0.0


def walk(
    roots: Iterable[bytes], enter: Callable[[bytes], T | None], warn: bool = True
) -> Iterator[tuple[bytes, T, list[os.DirEntry[bytes]]]]:
    """Each folder below `roots` that `enter` gives a value for, with that value and its
    entries, the built-in ignored names left out; the subfolders of a folder not entered
    are not visited. Depth first, by a stack; symlinks are listed, never followed. An
    unreadable folder is skipped, with a warning when `warn`."""
    stack = list(roots)
    while stack:
        folder = stack.pop()
        value = enter(folder)
        if value is None:
            continue
        try:
            with os.scandir(folder) as listing:
                entries = [e for e in listing if not IGNORED_BYTES.match(e.name)]
        except OSError as exc:
            if warn:
                log.warning("cannot read folder %s: %s", os.fsdecode(folder), exc.strerror)
            continue
        stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        yield folder, value, entries


def count_folders(watches: tuple[WatchConfig, ...]) -> int:
    """inotify needs one watch per folder; fs.inotify.max_user_watches caps them per user."""
    total = 0
    for watch in watches:
        if watch.poll_interval > 0:
            continue
        if not watch.recursive:
            total += 1
            continue
        total += sum(1 for _ in walk([os.fsencode(watch.path)], lambda _: True, warn=False))
    return total


class Scanner:
    """Runs the scans for the watcher's thread and keeps the full scans' figures."""

    def __init__(self, known: Known) -> None:
        self._known = known
        self.stats = ScanStats()

    def full(self, watches: tuple[WatchConfig, ...], found: Found) -> None:
        """Every watched folder, against the journal's identities."""
        self.stats.running = True
        started = time.monotonic()
        try:
            roots = [w.path for w in watches]
            self.stats.files = self.folders(watches, roots, found, self._known())
        finally:
            self.stats.running = False
            self.stats.count += 1
            self.stats.seconds = time.monotonic() - started
        log.info("scan of %d files took %.2f s", self.stats.files, self.stats.seconds)

    def folders(
        self,
        watches: tuple[WatchConfig, ...],
        folders: list[Path],
        found: Found,
        known: dict[bytes, tuple[int, int, int, int]] | None = None,
    ) -> int:
        """Tell `found` of the files below `folders` not in `known` (all of them without
        it), with the identity they have now; returns how many files the watches take.

        The hot loop of a rescan over tens of thousands of done files: folders are routed
        once, names matched by one regex, paths kept as bytes, and only files that turn
        out new or changed become Path objects.
        """
        known = known or {}
        new = seen = 0

        def enter(folder: bytes) -> list[tuple[WatchConfig, str]] | None:
            return takers(watches, os.fsdecode(folder)) or None

        for _, folder_takers, entries in walk((os.fsencode(f) for f in folders), enter):
            for entry in entries:
                if not entry.is_file(follow_symlinks=False):
                    continue
                name = os.fsdecode(entry.name)
                if not any(accepts(watch, name, below + name) for watch, below in folder_takers):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                seen += 1
                if known.get(entry.path) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                    continue
                if found(Path(os.fsdecode(entry.path)), st):
                    new += 1
        if new:
            log.info("scan found %d new or changed files", new)
        return seen
