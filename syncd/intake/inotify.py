"""inotify watches that the scans add folder by folder, read by the `InotifyFD` thread.

watchdog's observer walks a recursive watch's whole tree to add its watches, and the
start-up scan then walks the same tree again: over 20,000 done files that first walk was
~50 ms of a restart's CPU. Here a scan adds each folder's watch just before it lists the
folder (so whatever appears after the listing raises an event), a folder created or moved
in gets its watch from the folder scan its event asks for, and a folder deleted or moved
away loses the watches below it. The reader thread hands each raw event to `on_event`,
with no emitter or dispatcher thread between.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path

from syncd.files import PROC_FD
from syncd.intake.events import Hints
from syncd.intake.inotify_fd import (
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_DONT_FOLLOW,
    IN_ISDIR,
    IN_MOVED_FROM,
    IN_MOVED_TO,
    IN_ONLYDIR,
    InotifyFD,
)
from syncd.intake.routing import ignored_name

log = logging.getLogger(__name__)

MASK = IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO | IN_CLOSE_WRITE | IN_DELETE | IN_ONLYDIR
"""Not opens, reads or every write: our own hashing, uploads and sidecars would each cost
events, and a write without a close is caught by the stability check anyway (which a
created file always gets). A watched folder's own deletion comes as IN_IGNORED."""
BY_PATH = MASK | IN_DONT_FOLLOW
PROC_MOUNTED = os.path.isdir(PROC_FD)
"""A watch is added through the scan's descriptor of the folder (/proc/self/fd/N, a link
to follow); without /proc, by the folder's path, its last component never a symlink."""
UNWATCHABLE = (errno.ENOENT, errno.ENOTDIR, errno.EACCES, errno.EBADF)
"""Passed over in silence: a folder gone (or replaced by a file) between its listing's
parent and its watch, one we may not read (the listing that follows says so), or the
instance closed under a scan (the daemon stops)."""


class InotifyWatches:
    """One inotify instance and the folders it watches; its `Listener` (those methods
    run on the reader thread, so they only enqueue)."""

    def __init__(self, hints: Hints, rescan: Callable[[], None]) -> None:
        self._hints = hints
        self._rescan = rescan
        self._lock = threading.Lock()
        self._folder_of: dict[int, bytes] = {}
        self._watch_of: dict[bytes, int] = {}
        self._inotify: InotifyFD | None = None
        self.roots: set[bytes] = set()
        """The watches' own folders: nothing above them is watched, so the watcher asks
        whether the kernel `dropped` theirs."""
        self._dropped: set[bytes] = set()
        self._limit_told = False
        self.unavailable = ""

    def start(self) -> None:
        """Without an inotify instance to spare (fs.inotify.max_user_instances, EMFILE) the
        daemon runs on: rescans find every change (`unavailable` says why, for degraded)."""
        try:
            self._inotify = InotifyFD(self)
        except OSError as exc:
            self.unavailable = (
                f"cannot start inotify ({exc.strerror}): changes are found by"
                " rescans only, every rescan_interval; raise fs.inotify.max_user_instances"
            )
            return
        self._inotify.start()

    def stop(self) -> None:
        """Close the instance (the kernel drops its watches) and end the reader thread."""
        inotify, self._inotify = self._inotify, None
        if inotify is not None:
            inotify.stop()
            inotify.join(timeout=5)
        with self._lock:
            self._folder_of.clear()
            self._watch_of.clear()

    def alive(self) -> bool:
        return bool(self.unavailable) or (self._inotify is not None and self._inotify.is_alive())

    def watching(self) -> int:
        with self._lock:
            return len(self._watch_of)

    def add(self, folder: bytes, opened: int) -> None:
        """Watch `folder` from now on; a scan calls this just before it lists the folder,
        which it has `opened`. The watch goes on that very folder, named by its descriptor
        (a path could lead elsewhere by now); without /proc, by its path."""
        inotify = self._inotify
        with self._lock:
            if inotify is None or folder in self._watch_of:
                return
        try:
            if PROC_MOUNTED:
                wd = inotify.add_watch(PROC_FD + b"%d" % opened, MASK)
            else:
                wd = inotify.add_watch(folder, BY_PATH)
        except OSError as exc:
            self._not_watched(folder, exc)
            return
        with self._lock:
            self._folder_of[wd] = folder
            self._watch_of[folder] = wd

    def dropped(self, root: bytes) -> bool:
        """Whether the kernel dropped the watch of `root` (one of `roots`) since asked."""
        with self._lock:
            if root not in self._dropped:
                return False
            self._dropped.discard(root)
            return True

    def unwatch(self, folder: bytes) -> None:
        """Stop watching `folder` and every folder below it (a watch's folder replaced)."""
        self._unwatch(folder, below=True)

    def keep(self, wanted: Callable[[bytes], bool]) -> None:
        """Stop watching the folders no watch wants any more (a reload)."""
        with self._lock:
            unwanted = [folder for folder in self._watch_of if not wanted(folder)]
        for folder in unwanted:
            self._unwatch(folder, below=False)

    def _not_watched(self, folder: bytes, exc: OSError) -> None:
        if exc.errno in UNWATCHABLE:
            return
        if exc.errno == errno.ENOSPC:
            if not self._limit_told:  # once: the shortfall warning at start says what to raise
                self._limit_told = True
                log.warning(
                    "inotify watch limit reached at %s: its changes are found by rescans only;"
                    " raise fs.inotify.max_user_watches",
                    os.fsdecode(folder),
                )
            return
        log.warning("cannot watch folder %s: %s", os.fsdecode(folder), exc.strerror)

    def _unwatch(self, folder: bytes, below: bool) -> None:
        """Remove the watch of `folder` (and with `below`, of every folder under it)."""
        prefix = folder + b"/"
        with self._lock:
            gone = [f for f in self._watch_of if f == folder or (below and f.startswith(prefix))]
            wds = [self._watch_of.pop(f) for f in gone]
            for wd in wds:
                self._folder_of.pop(wd, None)
        inotify = self._inotify
        if inotify is not None:
            for wd in wds:
                inotify.rm_watch(wd)

    # -- the Listener, on the reader thread ---------------------------------------------

    def on_event(self, wd: int, mask: int, name: bytes) -> None:
        with self._lock:
            folder = self._folder_of.get(wd)
        if folder is None or not name or ignored_name(name):
            return
        path = folder + b"/" + name
        if mask & IN_ISDIR:
            if mask & (IN_CREATE | IN_MOVED_TO):
                self._hints.hint_folder(Path(os.fsdecode(path)))
            elif mask & (IN_MOVED_FROM | IN_DELETE):
                self._unwatch(path, below=True)
        elif mask & (IN_MOVED_FROM | IN_DELETE):
            self._hints.forget(Path(os.fsdecode(path)))
        else:  # closed after writing, or moved into place: a short settle; created: a full one
            self._hints.hint(Path(os.fsdecode(path)), quick=not mask & IN_CREATE)

    def on_watch_deleted(self, wd: int) -> None:
        with self._lock:
            folder = self._folder_of.pop(wd, None)
            if folder is not None and self._watch_of.get(folder) == wd:
                del self._watch_of[folder]
                if folder in self.roots:
                    self._dropped.add(folder)

    def on_queue_overflow(self) -> None:
        """More events than the kernel queues were unread: some are lost, so look again."""
        log.warning(
            "inotify's queue overflowed (over fs.inotify.max_queued_events unread): events"
            " were lost; rescanning every watch"
        )
        self._rescan()
