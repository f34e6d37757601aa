"""A daily quota's cost per file as the day fills: each admit against the files before it.

Every file a worker uploads under a `daily_files` or `daily_bytes` quota is admitted: its
count, one value in the journal, is read, changed and written in one transaction that holds
the journal. This runs the real SQLite store and the real quota code over a day of N files,
each one hashed, admitted, uploaded and done in turn as a worker would, and times the
admits alone: the last 1,000 of the day against its first 1,000 (the baseline, measured in
the same run), which should be flat. `--before SRC` (`git archive COMMIT syncd | tar -x -C
SRC`) runs another source tree too, in a process of its own, for a before/after in one run.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also under PYTHONSAFEPATH (--before)
from common import in_process_variants, print_table, ratio_figure

SLICE = 1000
"""Admits timed together: the day's first and its last."""


def one_day(files: int) -> dict[str, float]:
    """Seconds a slice of admits took, at the day's start and at its end (in this process,
    which imports the syncd on its path)."""
    from syncd.config.model import ServiceConfig
    from syncd.files import Identity
    from syncd.journal.sqlite import SqliteStore
    from syncd.work.flow.clock import Clock
    from syncd.work.flow.quota import Quotas

    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "journal.sqlite")
        quotas = Quotas(store, Clock(offset_file=""))
        service = ServiceConfig("ads", "http://127.0.0.1", daily_bytes=10**15)
        spent = 0.0
        slices: dict[str, float] = {}
        for n in range(1, files + 1):
            identity = Identity(1, n, 4096, n)
            store.record_seen(b"/w/%d" % n, "ads", identity)
            row = store.claim(10.0**10)
            assert row is not None
            row = store.mark_hashed(row, f"{n:064x}", identity)
            assert row is not None
            decision = store.begin_upload(row, lambda result: True)
            assert decision is not None
            started = time.perf_counter()
            assert quotas.admit(service, row.id, 4096) is None
            spent += time.perf_counter() - started
            uploaded = store.mark_uploaded(decision[1], {"location": "x"})
            assert uploaded is not None and store.mark_done(uploaded.id)
            store.release(row.id)
            if n == SLICE:
                slices["first"], spent = spent, 0.0
            elif n == files:
                slices["last"] = spent
            elif n == files - SLICE:
                spent = 0.0
        store.close()
        return slices


def main() -> None:
    files, measured = in_process_variants(__doc__, one_day, quick=5000, full=20000)
    figures = [
        ratio_figure(
            f"{label}admit, the day's last {SLICE:,} vs its first",
            slices["last"] / SLICE * 1000,
            slices["first"] / SLICE * 1000,
            "ms",
            at_most=1.5,
        )
        for label, slices in measured
    ]
    print_table(f"a daily_bytes quota over a day of {files:,} files", figures)


if __name__ == "__main__":
    main()
