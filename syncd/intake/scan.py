"""Reconciliation scans: whatever the events missed, found by walking the watched folders.

A full scan runs at start, after an inotify queue overflow and every `rescan_interval`; a
folder scan runs for each folder created or moved in. Files the journal already holds with
the same identity are skipped, every other file goes to the settler as a candidate.

The walk is iterative (a stack, not recursion): a tree deeper than Python's recursion
limit is walked like any other. Symlinks are never followed: each folder is listed (and
watched) through a descriptor that `files.open_folder` checked is the folder its path names,
so a folder swapped for a symlink at any moment leads nowhere.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from syncd.config import WatchConfig
from syncd.files import GONE, SCARCE, open_folder
from syncd.intake.routing import (
    IGNORED_PREFIXES,
    IGNORED_SUFFIXES,
    accepts,
    inotify_takes,
    takers,
    takes_every_name,
)
from syncd.outputs.sidecar import remove_left_temp

log = logging.getLogger(__name__)

Known = Callable[[bytes], dict[bytes, tuple[int, int, int, int]]]
"""The identities the journal holds of the files directly in a folder (its path ending in
"/"), so a scan skips what is done: asked a folder at a time, it holds no more."""
Found = Callable[[Path, os.stat_result], bool]
"""Told of each file that is new or changed; True when it became a new candidate."""
WatchFolder = Callable[[bytes, int], None]
"""Adds the inotify watch of a folder (its path, and the descriptor the scan opened it as),
just before the scan lists it: one walk does both, and whatever appears after the listing
raises an event."""
ENCODING, ERRORS = sys.getfilesystemencoding(), sys.getfilesystemencodeerrors()
_encode = str.encode
"""`os.fsencode` without its Python-level call: a scan encodes every name of every folder."""
DOT = ord(".")
"""A name's first byte when it is a dot-file (as a sidecar's temp file is)."""


@dataclass(slots=True)
class ScanStats:
    """The last full scan, for `syncd status` and STATUS=."""

    running: bool = False
    count: int = 0
    files: int = 0
    seconds: float = 0.0
    folders: int = 0
    """Folders under inotify watches it walked: each takes one of the user's inotify watches."""


class Scanner:
    """Runs the scans for the watcher's thread and keeps the full scans' figures."""

    def __init__(
        self,
        known: Known | None,
        watch_folder: WatchFolder,
        stopped: Callable[[], bool] = lambda: False,
        tidy: bool = False,
    ) -> None:
        self._known = known
        """None: every file is new to the scan (a dry run plans them all)."""
        self._watch_folder = watch_folder
        self._stopped = stopped
        """The daemon stops: a scan ends at the next folder (the next start scans again)."""
        self._tidy = tidy
        """Remove the sidecar temp files that writes cut short left (not in a dry run, which
        writes nothing): the scans are what walks every folder."""
        self.stats = ScanStats()
        self.missed = False
        """A folder could not be listed for want of descriptors (files.SCARCE): the watcher
        scans again a little later, for nothing else would find what it holds."""
        self.roots: dict[bytes, tuple[int, int]] = {}
        """Each watch's own folder as last listed (device, inode): nothing above a watch is
        watched, so only a look at these tells that one was replaced (see Watcher)."""

    def full(self, watches: tuple[WatchConfig, ...], found: Found) -> None:
        """Every watched folder, against the journal's identities."""
        self.stats.running = True
        started = time.monotonic()
        try:
            roots = list(dict.fromkeys(w.path for w in watches))
            self.stats.files, self.stats.folders = self.folders(watches, roots, found, self._known)
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
        known: Known | None = None,
    ) -> tuple[int, int]:
        """Tell `found` of the files below `folders` that `known` does not hold as they
        are (all of them without it), with the identity they have now, watching each
        folder an inotify watch takes before listing it. Returns how many files the
        watches take, and how many of the folders walked are inotify's to watch.

        The hot loop of a rescan over tens of thousands of done files: folders are routed
        once, the built-in ignores tested on bytes, names matched by one regex (not at
        all with the default patterns), and only files that turn out new or changed
        become Path objects.
        """
        tidy = self._tidy
        new = seen = watched = 0
        stack = [os.fsencode(f) for f in folders]
        while stack and not self._stopped():
            folder = stack.pop()
            folder_takers = takers(watches, os.fsdecode(folder))
            if not folder_takers:
                continue
            a_root = any(not below for _, below in folder_takers)  # a watch's own folder
            try:
                opened = open_folder(folder)
            except OSError as exc:
                self.missed |= exc.errno in SCARCE
                if exc.errno not in GONE or a_root:
                    log.warning("cannot read folder %s: %s", os.fsdecode(folder), exc.strerror)
                continue  # a folder below a watch gone (or swapped) since it was seen
            try:
                if a_root:
                    listed = os.fstat(opened)
                    self.roots[folder] = (listed.st_dev, listed.st_ino)
                if inotify_takes(folder_takers):
                    self._watch_folder(folder, opened)
                    watched += 1
                with os.scandir(opened) as listing:
                    entries = list(listing)
                every_name = any(takes_every_name(watch) for watch, _ in folder_takers)
                prefix = folder.rstrip(b"/") + b"/"  # a watch of / itself lists "/etc", not "//etc"
                held: dict[bytes, tuple[int, int, int, int]] | None = None
                """The journal's identities of the folder's files, read at its first file."""
                for entry in entries:
                    name = _encode(entry.name, ENCODING, ERRORS)
                    if name.endswith(IGNORED_SUFFIXES) or name.startswith(IGNORED_PREFIXES):
                        if tidy and name[0] == DOT and remove_left_temp(opened, name):
                            log.info(
                                "removed %s, left by a sidecar write cut short",
                                os.fsdecode(prefix + name),
                            )
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(prefix + name)
                        continue
                    if not every_name and not any(
                        accepts(w, entry.name, below + entry.name) for w, below in folder_takers
                    ):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    seen += 1
                    path = prefix + name
                    if held is None:
                        held = {} if known is None else known(prefix)
                    if held.get(path) == (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns):
                        continue
                    if found(Path(os.fsdecode(path)), st):
                        new += 1
            except OSError as exc:
                self.missed |= exc.errno in SCARCE
                log.warning("cannot read folder %s: %s", os.fsdecode(folder), exc.strerror)
            finally:
                os.close(opened)
        if new:
            log.info("scan found %d new or changed files", new)
        return seen, watched
