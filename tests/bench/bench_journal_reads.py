"""The journal reads of a metrics scrape and of `run --once`'s check, over a million files.

A journal keeps every file it uploaded (for deduplication and restarts), so a long-lived one
is mostly `done` rows. Each read is timed, best of 3, in the real SQLite store over a
journal of 1,000,000 rows (quick 100,000; 999 in 1,000 done, the rest failed, three
services), against a full `SELECT COUNT(*) FROM files` on the same journal, the cost of
reading every row once. `--before SRC` (`git archive COMMIT syncd | tar -x -C SRC`) runs
another source tree too, in a process of its own, for a before/after in one run.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under PYTHONSAFEPATH (--before)
from common import in_process_variants, print_table, ratio_figure

SERVICES = ("ads", "photos", "notes")


def _state(n: int) -> str:
    return "failed" if n % 1000 == 0 else "done"


def timings(rows: int) -> dict[str, float]:
    """Best of 3 seconds of each read (in this process, which imports the syncd on its path)."""
    from syncd.journal.sqlite import SqliteStore

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "journal.sqlite"
        store = SqliteStore(path)
        now = time.time()
        with sqlite3.connect(path) as db:
            db.executemany(
                "INSERT INTO files (path, service, state, dev, inode, size, mtime_ns, due,"
                " updated_at, queued_at, priority, rank, uploaded_at)"
                " VALUES (?, ?, ?, 1, ?, 4096, 1, 0, ?, ?, 0, 0, ?)",
                (
                    (b"/w/%08d" % n, SERVICES[n % 3], _state(n), n, now, now, now - n)
                    for n in range(rows)
                ),
            )
        reads: dict[str, Callable[[], object]] = {
            "count every row": lambda: store._read("SELECT COUNT(*) FROM files"),
            "counts (status, metrics)": store.counts,
            "oldest_pending (metrics)": store.oldest_pending,
            "last_success (metrics)": store.last_success,
            "once_outcome (run --once, each second)": lambda: store.once_outcome(3),
        }
        best = {}
        for name, read in reads.items():
            seconds = []
            for _ in range(3):
                started = time.perf_counter()
                read()
                seconds.append(time.perf_counter() - started)
            best[name] = min(seconds)
        store.close()
        return best


def main() -> None:
    rows, measured = in_process_variants(__doc__, timings, quick=100_000, full=1_000_000)
    figures = []
    for label, best in measured:
        floor = best.pop("count every row") * 1000
        figures += [
            ratio_figure(f"{label}{read}", seconds * 1000, floor, "ms")
            for read, seconds in best.items()
        ]
    print_table(f"journal reads over {rows:,} files (baseline: count every row)", figures)


if __name__ == "__main__":
    main()
