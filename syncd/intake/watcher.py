"""Which files are complete: watchdog hints, settle detection and reconciliation scans.

inotify events are hints, not facts (ENGINEERING.md): the kernel coalesces them, drops
them on queue overflow, and close events are missing for files moved in or written in a
folder created a moment before. So every hint only makes a path a *candidate*; a
candidate is complete once its size, mtime, ctime and inode have stood still for
`settle_seconds` (0.5 s after a close-after-write or a rename into place). Scans at start,
on overflow and periodically catch whatever the events missed.

Nothing here opens a file: candidates are only `lstat`-ed, symlinks and anything but
regular files are skipped, and a path whose folder resolves outside its watch is ignored.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from syncd.config import WatchConfig
from syncd.files import Identity
from syncd.intake.routing import IGNORED_BYTES, accepts, inside, route, takers
from syncd.journal.outage import Outage
from syncd.journal.store import JournalUnavailable

log = logging.getLogger(__name__)

QUICK_SETTLE = 0.5
"""After a close-after-write or a rename into place, a file need stand still only this long."""
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

Complete = Callable[[Path, WatchConfig, Identity], None]
"""Told of each file that is complete; the journal decides whether it is new."""
Known = Callable[[], dict[bytes, tuple[int, int, int, int]]]
"""The identities the journal already holds, so a scan skips what is done."""


def _signature(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass(slots=True)
class ScanStats:
    """The last full scan, for `syncd status` and STATUS=."""

    running: bool = False
    count: int = 0
    files: int = 0
    seconds: float = 0.0


@dataclass(slots=True)
class _Candidate:
    signature: tuple[int, int, int, int, int]
    still_since: float
    """Monotonic time since when the signature has not changed."""
    quick: bool
    due: float


class Watcher:
    """Turns events and scans into complete files, on threads of its own."""

    def __init__(
        self,
        watches: tuple[WatchConfig, ...],
        settle_seconds: float,
        complete: Complete,
        known: Known,
    ) -> None:
        self.watches = watches
        self.settle_seconds = settle_seconds
        self._complete = complete
        self._known = known
        self._cond = threading.Condition()
        self._hints: dict[Path, bool] = {}
        self._folders: set[Path] = set()
        self._rescan = False
        self._candidates: dict[Path, _Candidate] = {}
        self._stopped = False
        self._observers: list[BaseObserver] = []
        self._outage = Outage("intake")
        self._settler = threading.Thread(target=self._settle_loop, name="settler", daemon=True)
        self._overflow = _OverflowHook(self.request_rescan)
        self.scans = ScanStats()

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Watches first, then the scan: a change during the scan is caught by one of them."""
        logging.getLogger(INOTIFY_LOGGER).addHandler(self._overflow)
        self._observe()
        self._settler.start()
        self.request_rescan()

    def stop(self) -> None:
        logging.getLogger(INOTIFY_LOGGER).removeHandler(self._overflow)
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._unobserve()
        if self._settler.is_alive():
            self._settler.join(timeout=5)

    def alive(self) -> bool:
        return self._settler.is_alive() and all(o.is_alive() for o in self._observers)

    def apply(self, watches: tuple[WatchConfig, ...]) -> None:
        """New watches from a reload: observe them and reconcile the folders they add."""
        added = [w.path for w in watches if w.path not in {old.path for old in self.watches}]
        self._unobserve()
        self.watches = watches
        self._observe()
        with self._cond:
            self._folders.update(added)
            self._cond.notify_all()

    def _observe(self) -> None:
        handler = _Events(self)
        inotify: BaseObserver | None = None
        scheduled: set[tuple[Path, bool, float]] = set()
        for watch in self.watches:
            key = (watch.path, watch.recursive, watch.poll_interval)
            if key in scheduled:
                continue
            scheduled.add(key)
            if watch.poll_interval > 0:
                observer: BaseObserver = PollingObserver(timeout=watch.poll_interval)
                self._observers.append(observer)
            else:
                if inotify is None:
                    inotify = Observer()
                    self._observers.append(inotify)
                observer = inotify
            observer.schedule(
                handler, os.fsdecode(watch.path), recursive=watch.recursive, event_filter=EVENTS
            )
        for observer in self._observers:
            observer.daemon = True
            observer.start()

    def _unobserve(self) -> None:
        observers, self._observers = self._observers, []
        for observer in observers:
            observer.stop()
        for observer in observers:
            observer.join(timeout=5)

    # -- hints -------------------------------------------------------------------------

    def hint(self, path: Path, quick: bool) -> None:
        """Something happened at `path`; called on watchdog's thread, so only enqueue."""
        with self._cond:
            self._hints[path] = self._hints.get(path, False) or quick
            self._cond.notify_all()

    def hint_folder(self, path: Path) -> None:
        """A folder appeared (created or moved in): what it already holds must be found."""
        with self._cond:
            self._folders.add(path)
            self._cond.notify_all()

    def forget(self, path: Path) -> None:
        with self._cond:
            self._hints.pop(path, None)
            self._candidates.pop(path, None)

    def request_rescan(self) -> None:
        with self._cond:
            self._rescan = True
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._candidates) + len(self._hints)

    # -- the settler thread ------------------------------------------------------------

    def _settle_loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopped and not (self._hints or self._folders or self._rescan):
                    now = time.monotonic()
                    due = min((c.due for c in self._candidates.values()), default=None)
                    if due is not None and due <= now:
                        break
                    self._cond.wait(None if due is None else due - now)
                if self._stopped:
                    return
                hints, self._hints = self._hints, {}
                folders, self._folders = self._folders, set()
                rescan, self._rescan = self._rescan, False
            try:
                if rescan:
                    self._full_scan()
                if folders:
                    self._scan(sorted(folders), {})
                for path, quick in hints.items():
                    self._observe_path(path, quick)
                self._settle_due()
            except JournalUnavailable as exc:
                self._outage.hit(exc)
                with self._cond:
                    self._cond.wait(1.0)
            except Exception:
                log.exception("the settler hit an unexpected error; it goes on")
            else:
                self._outage.over()

    def _observe_path(self, path: Path, quick: bool, st: os.stat_result | None = None) -> None:
        try:
            st = st or os.lstat(path)
        except OSError:
            self._candidates.pop(path, None)
            return
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                self._scan([path], {})
            return
        if route(self.watches, path) is None:
            return
        now = time.monotonic()
        signature = _signature(st)
        candidate = self._candidates.get(path)
        if candidate is None:
            # Files untouched for a while (found by a scan, or moved in with an old
            # mtime) count as still since their last change, not since we noticed them.
            age = time.time() - max(st.st_mtime, st.st_ctime)
            still_since = now - min(max(age, 0.0), self.settle_seconds)
            candidate = _Candidate(signature, still_since, quick, now)
            self._candidates[path] = candidate
        elif candidate.signature != signature:
            candidate.signature = signature
            candidate.still_since = now
            candidate.quick = quick
        else:
            candidate.quick = candidate.quick or quick
        wait = min(QUICK_SETTLE, self.settle_seconds) if candidate.quick else self.settle_seconds
        candidate.due = max(now, candidate.still_since + wait)

    def _settle_due(self) -> None:
        now = time.monotonic()
        for path in [p for p, c in self._candidates.items() if c.due <= now]:
            candidate = self._candidates[path]
            try:
                st = os.lstat(path)
            except OSError:
                del self._candidates[path]
                continue
            if not stat.S_ISREG(st.st_mode):
                del self._candidates[path]
                continue
            if _signature(st) != candidate.signature:
                self._observe_path(path, False, st)
                continue
            watch = route(self.watches, path)
            if watch is not None and inside(watch, path):
                try:
                    self._complete(path, watch, Identity.of(st))
                except JournalUnavailable:
                    candidate.due = now + 1.0  # kept: journaled once the journal answers
                    raise
            del self._candidates[path]

    def _full_scan(self) -> None:
        self.scans.running = True
        started = time.monotonic()
        try:
            self.scans.files = self._scan([w.path for w in self.watches], self._known())
        finally:
            self.scans.running = False
            self.scans.count += 1
            self.scans.seconds = time.monotonic() - started
        log.info("scan of %d files took %.2f s", self.scans.files, self.scans.seconds)

    def _scan(self, folders: list[Path], known: dict[bytes, tuple[int, int, int, int]]) -> int:
        """Make candidates of files not in `known` with the identity they have now.

        The hot loop of a rescan over tens of thousands of done files: folders are routed
        once, names matched by one regex, paths kept as bytes, and only files that turn
        out new or changed become Path objects. Symlinks are never followed.
        """
        found = seen = 0
        stack = [os.fsencode(f) for f in folders]
        while stack:
            folder = stack.pop()
            folder_takers = takers(self.watches, os.fsdecode(folder))
            if not folder_takers:
                continue
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                log.warning("cannot read folder %s: %s", os.fsdecode(folder), exc.strerror)
                continue
            for entry in entries:
                if IGNORED_BYTES.match(entry.name):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                    continue
                name = os.fsdecode(entry.name)
                if not entry.is_file(follow_symlinks=False) or not any(
                    accepts(watch, name, below + name) for watch, below in folder_takers
                ):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                seen += 1
                if known.get(entry.path) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                    continue
                path = Path(os.fsdecode(entry.path))
                if path not in self._candidates:
                    self._observe_path(path, False, st)
                    found += 1
        if found:
            log.info("scan found %d new or changed files", found)
        return seen


class _Events(FileSystemEventHandler):
    """Runs on watchdog's dispatcher thread: classify and enqueue, nothing else."""

    def __init__(self, watcher: Watcher) -> None:
        self._watcher = watcher

    def on_any_event(self, event: FileSystemEvent) -> None:
        watcher = self._watcher
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            target = event.dest_path if isinstance(event, DirMovedEvent) else event.src_path
            watcher.hint_folder(Path(os.fsdecode(target)))
        elif isinstance(event, FileMovedEvent):
            watcher.forget(Path(os.fsdecode(event.src_path)))
            watcher.hint(Path(os.fsdecode(event.dest_path)), quick=True)
        elif isinstance(event, FileDeletedEvent):
            watcher.forget(Path(os.fsdecode(event.src_path)))
        elif not event.is_directory and event.event_type not in ("opened", "closed_no_write"):
            watcher.hint(
                Path(os.fsdecode(event.src_path)), quick=isinstance(event, FileClosedEvent)
            )


class _OverflowHook(logging.Handler):
    """watchdog 7.1 only logs an inotify queue overflow; lost events mean a rescan."""

    def __init__(self, rescan: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._rescan = rescan

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._rescan()
