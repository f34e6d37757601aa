"""Which files are complete: the thread that turns hints and scans into complete files.

Events (intake/events.py) and scans (intake/scan.py) only name paths; this thread
`lstat`s them, feeds what it sees to the settler (intake/settle.py) with the clock, looks
again at the candidates it says are due, and tells the journal of each file that stood
still and that no process holds open for writing (`Place.being_written`: a file is opened
for that question only, never read). Symlinks and anything but regular files are skipped,
and a path whose folder resolves outside its watch is ignored.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from syncd.config import WatchConfig
from syncd.control.degraded import INOTIFY, SETTLER, Backoff, Degraded
from syncd.errors import PermanentError
from syncd.files import Identity, Vanished, locate
from syncd.intake.events import Pollers
from syncd.intake.inotify import InotifyWatches
from syncd.intake.routing import inotify_takes, inside, route, takers
from syncd.intake.scan import Known, Scanner, ScanStats
from syncd.intake.settle import Seen, Settler
from syncd.journal.patience import StorageFault

log = logging.getLogger(__name__)

RETRY_SETTLED = 1.0
"""Seconds before a settled file the journal could not take is offered to it again."""

ROOT_LOOK = 2.0
"""Seconds between looks at each watch's own folder. Nothing above it is watched, so that
it was removed and made again, or mounted over, shows only to a look; then its watches are
added again and it is scanned, and while it is missing `degraded` says so."""
STILL_WRITTEN_LOOK = 1.0
"""Seconds at least between looks at a file a process holds open for writing; its close,
an event, usually ends the wait before."""

MISSED = 10.0
"""Seconds after a scan that missed folders for want of descriptors before the next."""

Complete = Callable[[Path, WatchConfig, Identity], None]
"""Told of each file that is complete; the journal decides whether it is new."""
Batch = Callable[[Callable[[], None]], None]
"""Runs the `Complete` calls of one settle round together (the journal's group commit)."""
BATCH = 256
"""Files a batch at most: a longer one would hold the journal from the workers."""


class Watcher:
    """Turns events and scans into complete files, on threads of its own."""

    def __init__(
        self,
        watches: tuple[WatchConfig, ...],
        settle_seconds: float,
        complete: Complete,
        known: Known,
        batch: Batch = lambda work: work(),
        faults: Degraded | None = None,
        rescan_interval: float = 0.0,
    ) -> None:
        self.watches = watches
        self._faults = faults or Degraded()
        self._roots_looked = 0.0
        self.rescan_interval = rescan_interval
        """A full scan this often (0: only at start and after an inotify queue overflow)."""
        self._scanned = time.monotonic()
        self._complete = complete
        self._batch = batch
        self._cond = threading.Condition()
        self._hints: dict[Path, bool] = {}
        self._folders: set[Path] = set()
        self._rescan = False
        self._settler = Settler(settle_seconds)
        """Only the settler thread touches it, but for `forget` and `pending` (locked)."""
        self._inotify = InotifyWatches(self, self.request_rescan)
        self._scanner = Scanner(known, self._inotify.add, lambda: self._stopped, tidy=True)
        self._stopped = False
        self._pollers = Pollers(self)
        self._thread = threading.Thread(target=self._settle_loop, name="settler", daemon=True)

    @property
    def scans(self) -> ScanStats:
        return self._scanner.stats

    @property
    def settle_seconds(self) -> float:
        return self._settler.settle_seconds

    @settle_seconds.setter
    def settle_seconds(self, seconds: float) -> None:
        with self._cond:
            self._settler.settle_seconds = seconds

    # -- life cycle --------------------------------------------------------------------

    def start(self) -> None:
        """Observers first, then the scan, which adds each folder's inotify watch before it
        lists it: a change during the scan is caught by one of them."""
        self._inotify.roots = {os.fsencode(w.path) for w in self.watches}
        self._inotify.start()
        if self._inotify.unavailable:
            self._faults.set(INOTIFY, self._inotify.unavailable)
        self._pollers.start(self.watches)
        self._thread.start()
        self.request_rescan()

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        self._pollers.stop()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._inotify.stop()

    def alive(self) -> bool:
        return self._thread.is_alive() and self._inotify.alive() and self._pollers.alive()

    def apply(self, watches: tuple[WatchConfig, ...]) -> None:
        """New watches from a reload: drop the inotify watches of folders no watch takes any
        more, then a full scan, as at start: it watches the folders the new watches take
        (a new path, or one that became recursive) and finds the files they now take."""
        for gone in {w.path for w in self.watches} - {w.path for w in watches}:
            self._faults.clear(_component(os.fsencode(gone)))
        self.watches = watches
        self._inotify.roots = {os.fsencode(w.path) for w in watches}
        self._inotify.keep(lambda folder: inotify_takes(takers(watches, os.fsdecode(folder))))
        self._pollers.replace(watches)
        self.request_rescan()

    # -- hints: called on watchdog's threads, so they only enqueue ----------------------

    def hint(self, path: Path, quick: bool) -> None:
        """Something happened at `path`."""
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
            self._settler.forget(path)

    def request_rescan(self) -> None:
        with self._cond:
            self._rescan = True
            self._cond.notify_all()

    def pending(self) -> int:
        with self._cond:
            return len(self._settler) + len(self._hints)

    # -- the settler thread ------------------------------------------------------------

    def _settle_loop(self) -> None:
        backoff = Backoff()
        while True:
            with self._cond:
                while not self._stopped and not (self._hints or self._folders or self._rescan):
                    now = time.monotonic()
                    settle = self._settler.next_due()
                    due = self._roots_looked + ROOT_LOOK
                    due = due if settle is None else min(settle, due)
                    if due <= now:
                        break
                    self._cond.wait(due - now)
                if self._stopped:
                    return
                hints, self._hints = self._hints, {}
                folders, self._folders = self._folders, set()
                rescan, self._rescan = self._rescan, False
            try:
                if rescan:
                    self._scanned = time.monotonic()
                    self._scanner.full(self.watches, self._found)
                if folders:
                    self._scanner.folders(self.watches, sorted(folders), self._found)
                for path, quick in hints.items():
                    self._observe(path, quick)
                self._settle_due()
                if time.monotonic() >= self._roots_looked + ROOT_LOOK:
                    self._look_at_roots()
                    interval = self.rescan_interval
                    if interval and time.monotonic() >= self._scanned + interval:
                        self.request_rescan()
                    elif self._scanner.missed and time.monotonic() >= self._scanned + MISSED:
                        self._scanner.missed = False
                        self.request_rescan()
            except StorageFault:  # the journal cannot be read or written: look again later
                self._again_after(backoff, rescan, folders)
            except Exception as exc:  # a defect: what this pass took is found again
                log.exception("the settler hit an unexpected error; it scans again")
                self._faults.set(SETTLER, f"unexpected {type(exc).__name__}; scanning again")
                self._again_after(backoff, True, set())
            else:
                self._faults.clear(SETTLER)
                backoff.reset()

    def _again_after(self, backoff: Backoff, rescan: bool, folders: set[Path]) -> None:
        """A failed pass: its scans are asked for again, once the backoff has passed."""
        with self._cond:
            self._rescan = self._rescan or rescan
            self._folders |= folders
            if not self._stopped:
                self._cond.wait(backoff.failed())

    def _look_at_roots(self) -> None:
        """See ROOT_LOOK. A watch's folder is scanned again when the kernel dropped its
        inotify watch or its poll ended (removed, perhaps made again with the same inode
        number; unmounted), or when it is no longer the folder last listed (moved away and
        made again, mounted on): then its old watches go first."""
        self._roots_looked = time.monotonic()
        replaced = []
        for root in sorted(self._inotify.roots):
            try:
                st = os.stat(root)
            except OSError:
                st = None
            if st is None or not stat.S_ISDIR(st.st_mode):
                self._faults.set(_component(root), "its folder is gone; found again once back")
                continue
            listed = self._scanner.roots.get(root)
            dropped = self._inotify.dropped(root) or self._pollers.stopped(root)
            if dropped or listed not in (None, (st.st_dev, st.st_ino)):
                self._inotify.unwatch(root)
                replaced.append(Path(os.fsdecode(root)))
            self._faults.clear(_component(root))
        if replaced:
            log.info("watch folders replaced, scanned again: %s", ", ".join(map(str, replaced)))
            self._pollers.replace(self.watches)
            self._scanner.folders(self.watches, replaced, self._found)

    def _found(self, path: Path, st: os.stat_result) -> bool:
        """A scan found a new or changed file: a candidate unless it is one already."""
        if path in self._settler:
            return False
        self._observe(path, False, st)
        return True

    def _observe(self, path: Path, quick: bool, st: os.stat_result | None = None) -> None:
        try:
            st = st or os.lstat(path)
        except OSError:
            self._drop(path)
            return
        if not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                self._scanner.folders(self.watches, [path], self._found)
            return
        if route(self.watches, path) is None:
            return
        with self._cond:
            self._settler.observe(path, Seen.of(st, time.time()), quick, time.monotonic())

    def _settle_due(self) -> None:
        with self._cond:
            due = self._settler.due(time.monotonic())
        complete: list[tuple[Path, WatchConfig, Identity, Seen]] = []
        for path in due:
            if self._stopped:  # what is not journaled yet, the next start's scan finds
                return
            try:
                st: os.stat_result | None = os.lstat(path)
            except OSError:
                st = None
            seen = Seen.of(st, time.time()) if st and stat.S_ISREG(st.st_mode) else None
            with self._cond:
                settled = self._settler.settled(path, seen, time.monotonic())
            if not settled or st is None or seen is None:
                continue
            watch = route(self.watches, path)
            if watch is None or not inside(watch, path):
                continue
            if _being_written(watch, path):  # a writer paused, its file still open
                with self._cond:
                    wait = max(self.settle_seconds, STILL_WRITTEN_LOOK)
                    self._settler.retry(path, seen, time.monotonic() + wait)
                continue
            complete.append((path, watch, Identity.of(st), seen))
        # Journaled a batch at a time (one commit for a burst); those the journal cannot
        # take now are offered to it again later. In path order: hosts of a fleet that see
        # the same files then insert them in the same order, which cannot deadlock.
        complete.sort(key=lambda found: os.fsencode(found[0]))
        for start in range(0, len(complete), BATCH):
            if self._stopped:
                return
            try:
                self._batch(partial(self._complete_each, complete[start : start + BATCH]))
            except StorageFault:
                with self._cond:
                    for path, _, _, seen in complete[start:]:
                        self._settler.retry(path, seen, time.monotonic() + RETRY_SETTLED)
                raise

    def _complete_each(self, complete: list[tuple[Path, WatchConfig, Identity, Seen]]) -> None:
        for path, watch, identity, _ in complete:
            self._complete(path, watch, identity)

    def _drop(self, path: Path) -> None:
        with self._cond:
            self._settler.forget(path)


def _component(root: bytes) -> str:
    """A watch's entry in `degraded` while its folder is missing."""
    return f"watch {os.fsdecode(root)}"


def _being_written(watch: WatchConfig, path: Path) -> bool:
    try:
        with locate(watch.path, path) as place:
            return place.being_written()
    except (Vanished, PermanentError):
        return False  # gone, or not ours to open: the worker will say which
    except OSError:  # no descriptor to spare (files.SCARCE): cannot tell yet, look again
        return True
