"""inotify as the scans add it, folder by folder: real kernel events in `tmp_path`."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from syncd.files import open_folder
from syncd.intake.inotify import InotifyWatches
from syncd.intake.inotify_fd import READ_SIZE

QUEUE_LIMIT = Path("/proc/sys/fs/inotify/max_queued_events")


class Recorded:
    """The hints the watches give, in order (the Hints protocol, as the watcher takes them)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[str, Path, bool]] = []
        self.rescans = 0
        self.hold = threading.Event()
        self.hold.set()

    def hint(self, path: Path, quick: bool) -> None:
        self.hold.wait(60)
        with self.lock:
            self.items.append(("hint", path, quick))

    def hint_folder(self, path: Path) -> None:
        with self.lock:
            self.items.append(("folder", path, False))

    def forget(self, path: Path) -> None:
        with self.lock:
            self.items.append(("forget", path, False))

    def rescan(self) -> None:
        with self.lock:
            self.rescans += 1

    def taken(self) -> list[tuple[str, Path, bool]]:
        with self.lock:
            items, self.items = self.items, []
            return items


def watch(watches: InotifyWatches, folder: Path) -> None:
    """What a scan does before it lists `folder`."""
    opened = open_folder(os.fsencode(folder))
    try:
        watches.add(os.fsencode(folder), opened)
    finally:
        os.close(opened)


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[tuple[InotifyWatches, Recorded, Path]]:
    hints = Recorded()
    watches = InotifyWatches(hints, hints.rescan)
    watches.start()
    root = tmp_path / "drop"
    root.mkdir()
    watch(watches, root)
    yield watches, hints, root
    hints.hold.set()
    watches.stop()
    assert not watches.alive()
    assert "inotify" not in {t.name for t in threading.enumerate()}, "the reader thread ended"


def settled(hints: Recorded, count: int) -> list[tuple[str, Path, bool]]:
    """The next `count` hints, once they have all come."""
    seen: list[tuple[str, Path, bool]] = []
    wait_until(lambda: seen.extend(hints.taken()) or len(seen) >= count, 10, f"{count} hints")
    return seen


def test_a_watched_folders_events_become_hints(recorded):
    watches, hints, root = recorded
    photo = root / "a.jpg"
    photo.write_bytes(b"jpeg")
    assert settled(hints, 2) == [("hint", photo, False), ("hint", photo, True)]
    renamed = root / "b.jpg"
    photo.rename(renamed)
    assert settled(hints, 2) == [("forget", photo, False), ("hint", renamed, True)]
    (root / "b.jpg.syncd.toml").write_text("ours")
    (root / ".hidden").write_text("not taken")
    renamed.unlink()
    assert settled(hints, 1) == [("forget", renamed, False)], "our sidecar and dot-files: none"
    (root / "sub").mkdir()
    assert settled(hints, 1) == [("folder", root / "sub", False)]
    assert watches.watching() == 1, "a new folder is watched by the scan its hint asks for"


def test_a_folder_moved_away_or_deleted_loses_its_watches(recorded, tmp_path):
    watches, hints, root = recorded
    deeper = root / "sub" / "deeper"
    deeper.mkdir(parents=True)
    gone = root / "gone"
    gone.mkdir()
    for folder in (root / "sub", deeper, gone):
        watch(watches, folder)
    settled(hints, 2)
    assert watches.watching() == 4
    (root / "sub").rename(tmp_path / "away")
    gone.rmdir()
    wait_until(lambda: watches.watching() == 1, 10, "the watches below the folders to go")
    (tmp_path / "away" / "deeper" / "outside.jpg").write_bytes(b"no longer ours")
    marker = root / "marker.jpg"
    marker.write_bytes(b"m")
    events = settled(hints, 2)
    assert [path for _, path, _ in events] == [marker, marker]


def test_a_kernel_queue_overflow_asks_for_a_rescan(recorded, caplog):
    """The reader held in the first hint while more events than the kernel queues come."""
    _, hints, root = recorded
    limit = int(QUEUE_LIMIT.read_text())
    if limit > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many files to overflow it")
    hints.hold.clear()
    # Two events a file (created, closed after writing); the reader may have taken a whole
    # read's worth (32 bytes an event with these names) before it met the held hint.
    for number in range(limit // 2 + READ_SIZE // 32 + 100):
        (root / f"{number}.bin").write_bytes(b"")
    assert hints.rescans == 0
    hints.hold.set()
    wait_until(lambda: hints.rescans == 1, 30, "the rescan an overflow asks for")
    assert "inotify's queue overflowed" in caplog.text  # an operator learns events were lost
