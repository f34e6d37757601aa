"""The watcher in-process: routing, the stability backstop, rescans, symlinks."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import wait_until

from syncd.config import WatchConfig
from syncd.control.degraded import SETTLER, Degraded
from syncd.files import Identity
from syncd.intake.routing import IGNORED, IGNORED_PREFIXES, IGNORED_SUFFIXES, route
from syncd.intake.scan import Scanner
from syncd.intake.watcher import Watcher


class Completed:
    """Records what the watcher reports complete, as the journal would be told."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[tuple[Path, str, Identity]] = []

    def __call__(self, path: Path, watch: WatchConfig, identity: Identity) -> None:
        with self.lock:
            self.items.append((path, watch.service, identity))

    def paths(self) -> list[Path]:
        with self.lock:
            return [p for p, _, _ in self.items]


@pytest.fixture
def watching(tmp_path: Path) -> Iterator[Callable[..., tuple[Watcher, Completed]]]:
    started: list[Watcher] = []

    def start(*watches: WatchConfig, settle: float = 0.5) -> tuple[Watcher, Completed]:
        completed = Completed()
        watcher = Watcher(tuple(watches), settle, completed, lambda folder: {})
        watcher.start()
        started.append(watcher)
        return watcher, completed

    yield start
    for watcher in started:
        watcher.stop()


def watch(path: Path, service: str = "s", **options: object) -> WatchConfig:
    path.mkdir(parents=True, exist_ok=True)
    return WatchConfig(path=path.resolve(), service=service, **options)  # type: ignore[arg-type]


def test_route_first_match_patterns_and_ignores(tmp_path):
    notes = watch(tmp_path / "drop", "notes", include=("*.txt",))
    photos = watch(tmp_path / "drop", "photos", exclude=("*.raw",))
    flat = watch(tmp_path / "flat", "flat", recursive=False)
    watches = (notes, photos, flat)
    drop = tmp_path.resolve() / "drop"
    assert route(watches, drop / "a.txt") is notes
    assert route(watches, drop / "sub" / "a.jpg") is photos
    assert route(watches, drop / "a.raw") is None
    for ignored in ("a.jpg.syncd.toml", "a.jpg.caption", ".hidden", "x.part", "y.tmp", "z~"):
        assert route(watches, drop / ignored) is None, ignored
    assert route(watches, drop / ".git" / "config") is None
    assert route(watches, drop / ".~tmp~" / "a.jpg") is None
    assert route(watches, tmp_path.resolve() / "flat" / "a") is flat
    assert route(watches, tmp_path.resolve() / "flat" / "sub" / "a") is None
    assert route(watches, tmp_path.resolve() / "elsewhere" / "a") is None


def test_the_scans_byte_test_ignores_what_the_patterns_ignore():
    names = ["a.jpg", "a.jpg.syncd.toml", "x.caption", ".hidden", ".", "x.part", "y.tmp"]
    names += ["z~", "d.crdownload", "tmp", "a.tmp.jpg", "caption", "a~b", "é.jpg", "~"]
    for name in names:
        raw = os.fsencode(name)
        by_bytes = raw.startswith(IGNORED_PREFIXES) or raw.endswith(IGNORED_SUFFIXES)
        assert by_bytes == bool(IGNORED.match(name)), name


def test_polling_observer_never_closes_yet_files_complete(tmp_path, watching):
    """PollingObserver emits no close events: only the stability check can finish a file."""
    folder = watch(tmp_path / "polled", poll_interval=0.1)
    _, completed = watching(folder, settle=0.5)
    path = folder.path / "growing.bin"
    with path.open("wb") as out:
        for _ in range(5):
            out.write(os.urandom(1000))
            out.flush()
            threading.Event().wait(0.2)  # the writer's pace under test
    wait_until(lambda: completed.paths() == [path], 10, "the file completed once")
    assert completed.items[0][2].size == 5000


def test_files_present_at_start_are_found(tmp_path):
    folder = watch(tmp_path / "drop")
    old = folder.path / "sub" / "old.txt"
    old.parent.mkdir()
    old.write_text("was here first")
    completed = Completed()
    watcher = Watcher((folder,), 5.0, completed, lambda folder: {})
    try:
        watcher.start()
        wait_until(lambda: completed.paths() == [old], 10, "the old file")
    finally:
        watcher.stop()


def test_symlinks_and_outside_folders_are_never_reported(tmp_path, watching):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    folder = watch(tmp_path / "drop")
    (folder.path / "link.txt").symlink_to(outside / "secret.txt")
    (folder.path / "linked-folder").symlink_to(outside, target_is_directory=True)
    _, completed = watching(folder)
    marker = folder.path / "marker.txt"
    marker.write_text("m")
    wait_until(lambda: marker in completed.paths(), 10, "the marker")
    assert completed.paths() == [marker]


def test_known_files_are_skipped_by_the_scan(tmp_path):
    folder = watch(tmp_path / "drop")
    done = folder.path / "done.txt"
    done.write_text("uploaded before")
    fresh = folder.path / "fresh.txt"
    fresh.write_text("new")
    known = {os.fsencode(done): Identity.of(done.lstat())}
    asked: list[bytes] = []

    def known_in(folder: bytes) -> dict[bytes, tuple[int, int, int, int]]:
        asked.append(folder)
        return {path: tuple(ident) for path, ident in known.items() if path.startswith(folder)}

    completed = Completed()
    watcher = Watcher((folder,), 0.2, completed, known_in)
    try:
        watcher.start()
        wait_until(lambda: completed.paths() == [fresh], 10, "only the new file")
        wait_until(lambda: watcher.scans.count >= 1, 10, "the scan")
        assert completed.paths() == [fresh]
        assert asked == [os.fsencode(folder.path) + b"/"], "the folder's, once"
    finally:
        watcher.stop()


def test_a_pass_that_meets_a_defect_is_done_again_not_dropped(tmp_path):
    """The first file told to the journal raises, as a bug in it would: the file that
    settled in that pass is found by the scan the settler asks for, not at the next
    start, and `degraded` names the settler until a pass goes through."""
    folder = watch(tmp_path / "drop")
    completed = Completed()
    faults = Degraded()
    raised: list[Path] = []
    degraded_when_found_again: list[bool] = []

    def complete(path: Path, watch: WatchConfig, identity: Identity) -> None:
        if not raised:
            raised.append(path)
            raise RuntimeError("a defect")
        degraded_when_found_again.append(faults.has(SETTLER))
        completed(path, watch, identity)

    watcher = Watcher((folder,), 0.2, complete, lambda folder: {}, faults=faults)
    try:
        watcher.start()
        wait_until(lambda: watcher.scans.count >= 1, 10, "the start's scan")
        path = folder.path / "a.bin"
        path.write_bytes(b"x")
        wait_until(lambda: raised == [path], 10, "the defect")
        wait_until(lambda: completed.paths() == [path], 10, "the file, found again")
        assert degraded_when_found_again == [True]
        wait_until(lambda: not faults.has(SETTLER), 10, "the settler cleared")
    finally:
        watcher.stop()


def test_a_reload_that_makes_a_watch_recursive_watches_its_subfolders(tmp_path, watching):
    """The reload's scan finds what the wider watch now takes and adds the subfolders'
    inotify watches: a file written there later is reported with no rescan to come."""
    flat = watch(tmp_path / "drop", recursive=False)
    sub = flat.path / "sub"
    sub.mkdir()
    old = sub / "old.txt"
    old.write_text("there before the reload")
    watcher, completed = watching(flat, settle=0.2)
    wait_until(lambda: watcher.scans.count >= 1, 10, "the start-up scan")
    assert completed.paths() == []
    watcher.apply((WatchConfig(path=flat.path, service="s", recursive=True),))
    wait_until(lambda: completed.paths() == [old], 10, "the file the reload's scan finds")
    scans = watcher.scans.count
    new = sub / "new.txt"
    new.write_text("written after the reload")
    wait_until(lambda: completed.paths() == [old, new], 10, "the file inotify reports")
    assert watcher.scans.count == scans, "found by its event, not by a scan"


def test_a_folder_gone_before_its_scan_is_no_warning_a_missing_watch_is(tmp_path, caplog):
    """Folders come and go under a watch (an application's temporary ones); a watch whose
    own folder is missing is the operator's to know."""
    folder = watch(tmp_path / "drop")
    scanner = Scanner(None, lambda folder, opened: None)
    with caplog.at_level(logging.WARNING, logger="syncd.intake.scan"):
        scanner.folders((folder,), [folder.path / "gone"], lambda path, st: True)
        assert caplog.records == []
        folder.path.rmdir()
        scanner.full((folder,), lambda path, st: True)
    assert [r.getMessage() for r in caplog.records] == [
        f"cannot read folder {folder.path}: No such file or directory"
    ]


@pytest.mark.parametrize("poll", [0.0, 0.2], ids=["inotify", "polled"])
def test_a_watch_folder_made_again_at_once_is_watched_again(watching, tmp_path, poll):
    """`rm -rf drop && mkdir drop` between two looks, the new folder often with the old
    inode number: the kernel dropped the watch (or watchdog ended the poll), so the folder
    is scanned and watched again (end to end: tests/test_pipeline_e2e.py)."""
    folder = watch(tmp_path / "drop", poll_interval=poll)
    watcher, completed = watching(folder, settle=0.2)
    wait_until(lambda: watcher.scans.count >= 1, 10, "the start-up scan")
    (folder.path / "before.bin").write_bytes(b"before")
    wait_until(lambda: completed.paths() == [folder.path / "before.bin"], 10, "the first file")
    shutil.rmtree(folder.path)
    folder.path.mkdir()
    (folder.path / "after.bin").write_bytes(b"after")
    wanted = [folder.path / "after.bin", folder.path / "before.bin"]
    wait_until(lambda: sorted(completed.paths()) == wanted, 20, "the file in the new folder")
