"""Trees deeper than Python's recursion limit (1,000 frames): start-up, scans and watches.

On Python 3.11 os.walk, os.makedirs and shutil.rmtree recurse once per level, so this
module builds and removes its trees level by level itself.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import RunningDaemon, SandboxClient, base_config, read_sidecar, wait_until

from syncd.config import WatchConfig
from syncd.intake.scan import Scanner
from syncd.intake.watcher import Watcher

DEPTH = 1200


def chain(top: Path, depth: int, name: str = "d") -> Path:
    """`depth` nested folders below `top` (one-letter names keep the deepest path far
    below PATH_MAX); returns the deepest."""
    folder = top
    for _ in range(depth):
        folder = folder / name
        folder.mkdir()
    return folder


def remove_tree(root: Path) -> None:
    """What shutil.rmtree does, without recursion: files as found, folders deepest first."""
    folders: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        folders.append(folder)
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    os.unlink(entry.path)
    for folder in reversed(folders):
        folder.rmdir()


@pytest.fixture
def deep_root(tmp_path: Path) -> Iterator[Path]:
    """A folder whose deep trees are removed at the end (pytest's own cleanup would
    hit the recursion limit)."""
    root = tmp_path / "drop"
    root.mkdir()
    yield root
    remove_tree(root)


def test_scan_and_folder_count_of_a_deep_tree(deep_root: Path) -> None:
    bottom = chain(deep_root, DEPTH) / "bottom.txt"
    bottom.write_text("found")
    chain(deep_root, 3, ".hidden")
    found: list[Path] = []

    def scan(watch: WatchConfig) -> Scanner:
        watched: list[bytes] = []
        scanner = Scanner(None, lambda folder, opened: watched.append(folder))
        scanner.full((watch,), lambda path, st: found.append(path) is None)
        assert len(watched) == len(set(watched)) == scanner.stats.folders, "each watched once"
        return scanner

    deep = scan(WatchConfig(path=deep_root, service="s"))
    assert (deep.stats.files, deep.stats.folders, found) == (1, DEPTH + 1, [bottom])
    polled = scan(WatchConfig(path=deep_root, service="s", poll_interval=30.0))
    assert (polled.stats.files, polled.stats.folders) == (1, 0), "polling needs no inotify"
    flat = scan(WatchConfig(path=deep_root, service="s", recursive=False))
    assert (flat.stats.files, flat.stats.folders) == (0, 1)


def test_polling_a_deep_tree(deep_root: Path) -> None:
    """watchdog's polling snapshot recurses once per level too; no close events, so the
    file written after the start is found by the poll and the stability check."""
    bottom = chain(deep_root, DEPTH)
    completed: list[Path] = []
    watch = WatchConfig(path=deep_root, service="s", poll_interval=0.2)
    watcher = Watcher(
        (watch,), 0.3, lambda path, w, identity: completed.append(path), lambda folder: {}
    )
    watcher.start()
    try:
        wait_until(lambda: watcher.scans.count >= 1, 30, "the start-up scan")
        late = bottom / "late.bin"
        late.write_bytes(b"x" * 100)
        wait_until(lambda: completed == [late], 30, "the file at the bottom")
        assert watcher.alive()
    finally:
        watcher.stop()


def test_daemon_on_a_deep_tree_uploads_at_the_bottom(
    tmp_path: Path,
    sandbox: SandboxClient,
    make_daemon: Callable[..., RunningDaemon],
    deep_root: Path,
) -> None:
    """Found by the start-up scan at 1,200 levels; then a 1,100-level tree moved in while
    running is watched (the folder scan its event asks for adds its watches) and its file found."""
    bottom = chain(deep_root, DEPTH)
    present = bottom / "present.bin"
    present.write_bytes(os.urandom(3000))
    config = base_config(tmp_path, sandbox.url, [{"path": str(deep_root)}])
    daemon = make_daemon(config).start()
    daemon.wait_counts(done=1, timeout=120)
    assert read_sidecar(present)["sha256"] == hashlib.sha256(present.read_bytes()).hexdigest()

    staging = tmp_path / "staging"
    staging.mkdir()
    (chain(staging, DEPTH - 100, "e") / "later.bin").write_bytes(os.urandom(5000))
    (staging / "e").rename(deep_root / "e")
    later = deep_root.joinpath(*["e"] * (DEPTH - 100), "later.bin")
    daemon.wait_counts(done=2, timeout=120)
    assert read_sidecar(later)["sha256"] == hashlib.sha256(later.read_bytes()).hexdigest()
    reply = daemon.status()
    assert reply["scan"]["completed"] >= 1 and reply["counts"]["failed"] == 0
    assert "RecursionError" not in daemon.log()
    assert daemon.stop() == 0
