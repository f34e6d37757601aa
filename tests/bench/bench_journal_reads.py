"""The journal reads of a metrics scrape and of `run --once`'s check, over a million files.

A journal keeps every file it uploaded (for deduplication and restarts), so a long-lived one
is mostly `done` rows. Each read is timed, best of 3, in the real SQLite store over a
journal of 1,000,000 rows (quick 100,000; 999 in 1,000 done, the rest failed, three
services), against a full `SELECT COUNT(*) FROM files` on the same journal, the cost of
reading every row once. `--before SRC` (`git archive COMMIT syncd | tar -x -C SRC`) runs
another source tree too, in a process of its own, for a before/after in one run.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under PYTHONSAFEPATH (--before)
from common import PYTHON, daemon_env, parse_args, print_table, ratio_figure

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
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--before", type=Path, help="a syncd source tree to compare")
        parser.add_argument("--child", type=int, help=argparse.SUPPRESS)

    args = parse_args(__doc__, options)
    if args.child:
        print(json.dumps(timings(args.child)))
        return
    rows = 100_000 if args.quick else 1_000_000
    variants: list[tuple[str, Path | None]] = [("syncd", None)]
    if args.before is not None:
        variants.insert(0, ("before", args.before))
    figures = []
    for name, source in variants:
        out = subprocess.run(
            [PYTHON, __file__, "--child", str(rows)],
            env=daemon_env(source),
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        ).stdout
        best = json.loads(out)
        floor = best.pop("count every row") * 1000
        label = "" if len(variants) == 1 else f"{name}: "
        figures += [
            ratio_figure(f"{label}{read}", seconds * 1000, floor, "ms")
            for read, seconds in best.items()
        ]
    print_table(f"journal reads over {rows:,} files (baseline: count every row)", figures)


if __name__ == "__main__":
    sys.exit(main())
