"""A periodic rescan over a journal of a million done files: its memory and its journal hold.

Every `rescan_interval` (1 h by default) the daemon walks its watches and skips each file
the journal holds with the same identity. Here a tree of 1,000,000 empty files (quick
100,000) in folders of 1,000, every one journaled as done with its identity, is scanned by
syncd's own Scanner and SQLite store in this process: the scan's peak RSS above the RSS
before it (VmHWM, reset through clear_refs), against the RSS of the journal's own file
size as a yardstick; its time; and the longest single read of the journal's identities,
during which the journal's lock is held and every worker waits. `--before SRC` runs another
source tree too (`git archive COMMIT syncd | tar -x -C SRC`), in a process of its own.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under PYTHONSAFEPATH (--before)
from common import MiB, in_process_variants, print_table, proc_status_kib, ratio_figure

PER_FOLDER = 1000
TARGET_MIB = 64
"""The scan's peak above its start, at most: flat in the journal's size, not 330 MiB."""


def _tree(root: Path, files: int) -> list[tuple[bytes, int, int, int, int]]:
    """The files, created empty, and their identities."""
    made = []
    for n in range(files):
        folder = root / f"d{n // PER_FOLDER:04d}"
        if n % PER_FOLDER == 0:
            folder.mkdir()
        path = folder / f"f{n:07d}.csv"
        path.touch()
        st = path.lstat()
        made.append((os.fsencode(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return made


def measure(files: int) -> dict[str, Any]:
    """The scan's figures (in this process, which imports the syncd on its path)."""
    from syncd.config import WatchConfig
    from syncd.intake.scan import Scanner
    from syncd.journal.sqlite import SqliteStore

    base = Path(tempfile.mkdtemp(prefix="syncd-rescan-", dir="/dev/shm"))
    try:
        root = base / "watch"
        root.mkdir()
        made = _tree(root, files)
        journal = base / "journal.sqlite"
        store = SqliteStore(journal)
        with sqlite3.connect(journal) as db:
            db.executemany(
                "INSERT INTO files (path, service, state, dev, inode, size, mtime_ns, due,"
                " updated_at, queued_at, priority, rank, uploaded_at)"
                " VALUES (?, 's', 'done', ?, ?, ?, ?, 0, 0, 0, 0, 0, 0)",
                made,
            )
        del made
        # The tree's syncd: a folder's identities at a time, or (before) the journal's at once.
        read = getattr(store, "known_in", None) or store.known
        longest = 0.0

        def known(*folder: bytes) -> dict[bytes, tuple[int, int, int, int]]:
            nonlocal longest
            started = time.perf_counter()
            try:
                return read(*folder)
            finally:
                longest = max(longest, time.perf_counter() - started)

        new: list[Path] = []
        scanner = Scanner(known, lambda folder, opened: None)
        watches = (WatchConfig(path=root, service="s"),)
        Path("/proc/self/clear_refs").write_text("5")
        before = proc_status_kib(os.getpid(), "VmRSS")
        started = time.perf_counter()
        scanner.full(watches, lambda path, st: not new.append(path))
        seconds = time.perf_counter() - started
        peak = proc_status_kib(os.getpid(), "VmHWM")
        if new or scanner.stats.files != files:
            raise RuntimeError(f"the scan took {len(new)} files for new, saw {scanner.stats}")
        store.close()
        return {
            "peak_mib": (peak - before) / 1024,
            "journal_mib": journal.stat().st_size / MiB,
            "seconds": seconds,
            "longest": longest,
        }
    finally:
        shutil.rmtree(base)


def main() -> None:
    files, measured = in_process_variants(__doc__, measure, quick=100_000, full=1_000_000)
    figures = []
    for label, got in measured:
        figures += [
            ratio_figure(
                f"{label}scan's peak RSS above its start",
                got["peak_mib"],
                got["journal_mib"],
                "MiB",
            ),
            ratio_figure(
                f"{label}longest journal read (its lock held)",
                got["longest"] * 1000,
                got["seconds"] * 1000,
                "ms",
            ),
        ]
    notes = [
        f"{label}scan {got['seconds']:.2f} s; peak {got['peak_mib']:.1f} MiB above the start"
        f" (target <= {TARGET_MIB} MiB: {'PASS' if got['peak_mib'] <= TARGET_MIB else 'MISS'})"
        for label, got in measured
    ]
    print_table(
        f"a rescan over {files:,} done files (baselines: the journal's size; the scan's time)",
        figures,
        notes,
    )


if __name__ == "__main__":
    main()
