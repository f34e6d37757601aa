"""Settling as a pure function: observations and a clock in hand, no disk, no sleeps."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from syncd.intake.settle import QUICK_SETTLE, Seen, Settler

PATH = Path("/watch/a.jpg")


def seen(size: int = 100, mtime: int = 0, ino: int = 7, age: float = 0.0) -> Seen:
    """A regular file as lstat shows it: (dev, inode, size, mtime_ns, ctime_ns)."""
    return Seen((1, ino, size, mtime, mtime), age)


class Look:
    """The watcher's side of the loop: at each due time, look again at what the file is
    then (`file_at(t)`, None once it is gone) until the settler calls it complete."""

    def __init__(self, settler: Settler, file_at: Callable[[float], Seen | None]) -> None:
        self.settler = settler
        self.file_at = file_at
        self.looks: list[float] = []

    def until_complete(self, limit: float = 1000.0) -> float | None:
        """The clock time at which PATH is complete; None if it never is (it went away)."""
        while (now := self.settler.next_due()) is not None and now <= limit:
            assert self.settler.due(now) == [PATH]
            self.looks.append(now)
            if self.settler.settled(PATH, self.file_at(now), now):
                return now
        return None


def test_close_after_write_settles_after_the_quick_wait():
    settler = Settler(5.0)
    settler.observe(PATH, seen(), quick=True, now=10.0)
    assert settler.next_due() == 10.0 + QUICK_SETTLE
    assert settler.due(10.4) == []
    assert settler.due(10.5) == [PATH]
    assert settler.settled(PATH, seen(), 10.5)
    assert PATH not in settler and len(settler) == 0
    assert settler.next_due() is None


def test_without_a_close_the_full_settle_time_is_needed():
    settler = Settler(5.0)
    settler.observe(PATH, seen(), quick=False, now=10.0)
    assert settler.next_due() == 15.0
    assert settler.due(14.9) == []


def test_a_quick_hint_for_an_unchanged_file_shortens_the_wait():
    """Created (slow), then closed with nothing written since: the close counts."""
    settler = Settler(5.0)
    settler.observe(PATH, seen(), quick=False, now=10.0)
    settler.observe(PATH, seen(), quick=True, now=10.2)
    assert settler.next_due() == 10.5
    settler.observe(PATH, seen(), quick=False, now=10.3)
    assert settler.next_due() == 10.5, "a later slow hint does not undo the close"


def test_rename_into_place_of_an_old_file_completes_at_once():
    """A file written elsewhere long ago and moved in: its mtime says it stood still."""
    settler = Settler(5.0)
    settler.observe(PATH, seen(age=3600.0), quick=True, now=50.0)
    assert settler.due(50.0) == [PATH]
    assert settler.settled(PATH, seen(age=3600.0), 50.0)


def test_rename_into_place_of_a_fresh_file_waits_the_quick_settle():
    settler = Settler(5.0)
    settler.observe(PATH, seen(age=0.1), quick=True, now=50.0)
    assert settler.next_due() == 50.0 - 0.1 + QUICK_SETTLE


def test_slow_writer_is_never_complete_while_it_writes():
    """A write every 0.3 s for 20 s, no close in between (events carry no writes): each
    second look sees a new size and restarts the wait; complete settle_seconds after
    the last write, not before."""
    settle, last_write = 2.0, 20.0

    def file_at(t: float) -> Seen:
        writes = int(min(t, last_write) / 0.3)
        return seen(size=100 * (writes + 1), mtime=writes)

    settler = Settler(settle)
    settler.observe(PATH, file_at(0.0), quick=False, now=0.0)
    look = Look(settler, file_at)
    done = look.until_complete()
    assert done is not None
    assert done >= last_write + settle - 0.3
    assert done <= last_write + 2 * settle
    assert all(t <= done for t in look.looks)
    assert len(look.looks) >= last_write / settle, "looked again after every change"


def test_a_file_that_shrinks_starts_its_wait_again():
    """Truncated and rewritten shorter (an editor saving in place) just before the look."""
    settler = Settler(1.0)
    settler.observe(PATH, seen(size=5000, mtime=1), quick=False, now=0.0)
    assert not settler.settled(PATH, seen(size=10, mtime=2), 1.0)
    assert settler.next_due() == 2.0
    assert settler.due(1.9) == []
    assert settler.settled(PATH, seen(size=10, mtime=2), 2.0)


def test_inode_replaced_at_the_same_path_is_a_new_file():
    """Same size and times, another inode (written beside and renamed over): not still."""
    settler = Settler(1.0)
    settler.observe(PATH, seen(ino=7), quick=True, now=0.0)
    assert not settler.settled(PATH, seen(ino=8), 0.5)
    assert settler.next_due() == 1.5, "the replacement waits the full time, not the quick"
    assert settler.settled(PATH, seen(ino=8), 1.5)


def test_a_change_with_a_close_keeps_the_quick_wait():
    settler = Settler(5.0)
    settler.observe(PATH, seen(size=1), quick=False, now=0.0)
    settler.observe(PATH, seen(size=2), quick=True, now=1.0)
    assert settler.next_due() == 1.0 + QUICK_SETTLE


def test_found_by_a_scan_with_an_old_mtime_completes_soon():
    settler = Settler(5.0)
    settler.observe(PATH, seen(age=86400.0), quick=False, now=100.0)
    assert settler.due(100.0) == [PATH]
    partly = Path("/watch/b.jpg")
    settler.observe(partly, seen(age=3.0), quick=False, now=100.0)
    assert settler.next_due() == 100.0
    settler.settled(PATH, seen(age=86400.0), 100.0)
    assert settler.next_due() == 102.0, "untouched for 3 s: 2 s of the 5 s left"


def test_a_clock_step_into_the_future_does_not_count_as_still():
    """mtime ahead of the wall clock (negative age): wait from now, not before."""
    settler = Settler(5.0)
    settler.observe(PATH, seen(age=-30.0), quick=False, now=0.0)
    assert settler.next_due() == 5.0


def test_settle_seconds_below_quick_settle():
    settler = Settler(0.2)
    settler.observe(PATH, seen(), quick=True, now=0.0)
    assert settler.next_due() == 0.2
    other = Path("/watch/b.jpg")
    settler.observe(other, seen(), quick=False, now=0.0)
    assert settler.due(0.2) == [PATH, other]


def test_a_reload_changes_the_wait_of_the_next_observation():
    settler = Settler(5.0)
    settler.settle_seconds = 1.0
    settler.observe(PATH, seen(), quick=False, now=0.0)
    assert settler.next_due() == 1.0


def test_gone_or_forgotten_is_no_longer_a_candidate():
    settler = Settler(1.0)
    settler.observe(PATH, seen(), quick=True, now=0.0)
    assert not settler.settled(PATH, None, 0.5)
    assert PATH not in settler and settler.next_due() is None
    settler.observe(PATH, seen(), quick=True, now=1.0)
    settler.forget(PATH)
    assert len(settler) == 0
    assert not settler.settled(PATH, seen(), 2.0), "a look at a forgotten path finds nothing"


def test_seen_of_an_lstat_result(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"12345")
    st = os.lstat(path)
    look = Seen.of(st, st.st_mtime + 2.5)
    assert look.signature == (st.st_dev, st.st_ino, 5, st.st_mtime_ns, st.st_ctime_ns)
    assert abs(look.age - (2.5 - max(0.0, st.st_ctime - st.st_mtime))) < 1e-6
