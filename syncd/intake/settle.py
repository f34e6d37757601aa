"""When a file is complete: a pure function of what was observed and when.

A hint (an inotify event, a scan) makes a path a *candidate*; a candidate is complete once
its signature (device, inode, size, mtime, ctime) has stood still for `settle_seconds`, or
for QUICK_SETTLE after a close-after-write or a rename into place. Nothing here reads the
disk or the clock: the caller passes each observation and the monotonic `now`, asks which
candidates are due, looks at them again and says what it saw. So every case is a unit test
with a clock in hand (tests/test_settle.py), and the watcher's thread does the I/O.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

QUICK_SETTLE = 0.5
"""After a close-after-write or a rename into place, a file need stand still only this long."""

Signature = tuple[int, int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns): any change means still written."""


@dataclass(frozen=True, slots=True)
class Seen:
    """One look at a regular file."""

    signature: Signature
    age: float
    """Seconds since its last change (mtime or ctime) by the wall clock when it was seen;
    a file untouched for a while counts as still since then, not since we noticed it."""

    @classmethod
    def of(cls, st: os.stat_result, wall: float) -> Seen:
        """What an lstat result says, `wall` being time.time() when it was taken."""
        return cls(
            (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns),
            wall - max(st.st_mtime, st.st_ctime),
        )


@dataclass(slots=True)
class _Candidate:
    """A file being watched until it holds still."""

    signature: Signature
    still_since: float
    """Monotonic time since when the signature has not changed."""
    quick: bool
    due: float


class Settler:
    """The candidates, and when each is due for its second look."""

    def __init__(self, settle_seconds: float) -> None:
        self.settle_seconds = settle_seconds
        self._candidates: dict[Path, _Candidate] = {}

    def __len__(self) -> int:
        return len(self._candidates)

    def __contains__(self, path: Path) -> bool:
        return path in self._candidates

    def observe(self, path: Path, seen: Seen, quick: bool, now: float) -> None:
        """`path` was seen as `seen` at `now`; `quick` after a close-after-write or a rename."""
        candidate = self._candidates.get(path)
        if candidate is None:
            still_since = now - min(max(seen.age, 0.0), self.settle_seconds)
            candidate = _Candidate(seen.signature, still_since, quick, now)
            self._candidates[path] = candidate
        elif candidate.signature != seen.signature:
            candidate.signature = seen.signature
            candidate.still_since = now
            candidate.quick = quick
        else:
            candidate.quick = candidate.quick or quick
        wait = min(QUICK_SETTLE, self.settle_seconds) if candidate.quick else self.settle_seconds
        candidate.due = max(now, candidate.still_since + wait)

    def forget(self, path: Path) -> None:
        """Gone, moved away, or no longer a regular file."""
        self._candidates.pop(path, None)

    def retry(self, path: Path, seen: Seen, due: float) -> None:
        """A settled file the journal could not take yet: a candidate again, still settled,
        due at `due`; a change meanwhile makes it settle afresh."""
        self._candidates[path] = _Candidate(seen.signature, due - self.settle_seconds, False, due)

    def next_due(self) -> float | None:
        """The monotonic time of the next second look, None with no candidates."""
        return min((c.due for c in self._candidates.values()), default=None)

    def due(self, now: float) -> list[Path]:
        """The candidates to look at again: each goes back through `settled()`."""
        return [path for path, c in self._candidates.items() if c.due <= now]

    def settled(self, path: Path, seen: Seen | None, now: float) -> bool:
        """The second look at a due candidate (`seen` None: gone, or not a regular file).
        True when it stood still: it is complete and no longer a candidate."""
        candidate = self._candidates.get(path)
        if candidate is None:
            return False
        if seen is None:
            del self._candidates[path]
            return False
        if seen.signature != candidate.signature:
            self.observe(path, seen, False, now)
            return False
        del self._candidates[path]
        return True
