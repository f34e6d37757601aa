"""Nothing outside a watch root is read, and no sidecar lands outside the file's folder,
whatever is swapped for a symlink and whenever (DESIGN.md, "Trust boundaries")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import SCALE, base_config, read_sidecar, sidecar_exists, wait_until
from watchdog.observers.inotify_c import (
    CallbackId,
    InotifyConstants,
    InotifyEvent,
    InotifyFD,
    Mask,
)

from syncd.config import WatchConfig
from syncd.files import Place, Vanished, locate
from syncd.intake.scan import Scanner
from syncd.intake.watcher import Watcher
from syncd.outputs import sidecar

MARKER = b"OUTSIDE-THE-WATCH " * 64
"""Bytes that live only outside the watch: the sandbox must never receive them."""


def test_locate_never_goes_through_a_symlinked_folder(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret").write_bytes(MARKER)
    (root / "a" / "file").write_bytes(b"inside")
    with locate(root, root / "a" / "file") as place, place.open_regular() as file:
        assert file.read() == b"inside"
    (root / "link").symlink_to(outside)
    with pytest.raises(Vanished):
        locate(root, root / "link" / "secret")
    with pytest.raises(Vanished):
        locate(root, outside / "secret")
    with pytest.raises(Vanished):
        locate(root, root / ".." / "outside" / "secret")
    (root / "file-link").symlink_to(outside / "secret")
    with locate(root, root / "file-link") as place, pytest.raises(Vanished):
        place.open_regular()


def test_opening_under_a_swap_loop_never_reads_outside(tmp_path, figures):
    """The race itself, hammered: a check of the resolved folder followed by an open by path
    (what syncd did before) read the outside file about once in 1,500 tries here; opening
    one folder at a time never does."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "sub" / "f").write_bytes(b"inside")
    (outside / "f").write_bytes(MARKER)
    stop = threading.Event()
    swapper = threading.Thread(
        target=_swap_loop, args=(root / "sub", root / ".real", outside, stop, 0.0)
    )
    swapper.start()
    tries = inside = 0
    deadline = time.monotonic() + 3 * SCALE
    try:
        while time.monotonic() < deadline:
            tries += 1
            try:
                with locate(root, root / "sub" / "f") as place, place.open_regular() as file:
                    data = file.read()
            except Vanished:
                continue
            assert data == b"inside"
            inside += 1
    finally:
        stop.set()
        swapper.join(10)
    figures["tries"] = tries
    figures["opened_inside"] = inside
    assert inside > 0


def test_a_sidecar_goes_where_the_file_was_opened_even_after_a_swap(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    outside.mkdir()
    (root / "a" / "file").write_bytes(b"inside")
    place: Place = locate(root, root / "a" / "file")
    with place:
        (root / "a").rename(root / ".moved")
        (root / "a").symlink_to(outside)
        sidecar.write(place, 'service = "x"\n', 0o666)
    assert list(outside.iterdir()) == []
    written = root / ".moved" / "file.syncd.toml"
    assert written.read_text() == 'service = "x"\n'
    assert written.stat().st_mode & 0o777 == 0o644  # never more than 0644
    assert sorted(p.name for p in (root / ".moved").iterdir()) == ["file", "file.syncd.toml"]


def _swap_loop(
    folder: Path, hidden: Path, outside: Path, stop: threading.Event, pause: float = 0.0001
) -> int:
    """Swap `folder` for a symlink to `outside` and back, as fast as it goes."""
    swaps = 0
    while not stop.is_set():
        folder.rename(hidden)
        folder.symlink_to(outside)
        time.sleep(pause)
        folder.unlink()
        hidden.rename(folder)
        swaps += 1
        time.sleep(pause)
    return swaps


def test_folder_swapped_for_a_symlink_in_a_loop_during_a_burst(
    tmp_path, sandbox, make_daemon, figures
):
    drop, outside = tmp_path / "drop", tmp_path / "outside"
    sub, hidden = drop / "sub", drop / ".sub-real"
    sub.mkdir(parents=True)
    outside.mkdir()
    count = 60 * SCALE
    for n in range(count):  # same names outside: a swap at the wrong moment would read them
        (outside / f"f-{n}.bin").write_bytes(MARKER + b"%d" % n)
    marker_sums = {hashlib.sha256(MARKER + b"%d" % n).hexdigest() for n in range(count)}
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}], workers=4)
    config["daemon"]["settle_seconds"] = 0.2
    daemon = make_daemon(config).start()
    real = os.open(sub, os.O_RDONLY | os.O_DIRECTORY)
    stop = threading.Event()
    swaps: list[int] = []
    swapper = threading.Thread(target=lambda: swaps.append(_swap_loop(sub, hidden, outside, stop)))
    swapper.start()
    try:
        sums = set()
        for n in range(count):  # written into the real folder, wherever it is at the moment
            data = os.urandom(1000) + b"%d" % n
            fd = os.open(f"f-{n}.bin", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=real)
            os.write(fd, data)
            os.close(fd)
            sums.add(hashlib.sha256(data).hexdigest())
            time.sleep(0.01)
        time.sleep(2)  # keep swapping while the last files settle and upload
    finally:
        stop.set()
        swapper.join(10)
        os.close(real)
    figures["swaps"] = swaps[0]
    daemon.wait_counts(done=count, timeout=120)
    received = {o["sha256"] for o in sandbox.ton_objects()}
    bodies = {r["body_sha256"] for r in sandbox.requests()}
    assert not received & marker_sums and not bodies & marker_sums
    assert received == sums
    for n in range(count):
        assert read_sidecar(sub / f"f-{n}.bin")["sha256"] in sums
    assert sorted(p.name for p in outside.iterdir()) == sorted(f"f-{n}.bin" for n in range(count))
    figures["files"] = count


def test_hard_links_are_refused_unless_allowed(tmp_path, sandbox, make_daemon):
    drop, allowed, elsewhere = tmp_path / "drop", tmp_path / "allowed", tmp_path / "elsewhere"
    for folder in (drop, allowed, elsewhere):
        folder.mkdir()
    (elsewhere / "key").write_bytes(b"a key from elsewhere")
    (elsewhere / "shared").write_bytes(b"shared on purpose")
    config = base_config(
        tmp_path,
        sandbox.url,
        [{"path": str(drop)}, {"path": str(allowed), "allow_hard_links": True}],
    )
    daemon = make_daemon(config).start()
    os.link(elsewhere / "key", drop / "key")
    os.link(elsewhere / "shared", allowed / "shared")
    daemon.wait_counts(done=1, failed=1)
    (failure,) = daemon.status()["failures"]
    assert failure["path"] == str(drop / "key") and "hard links" in failure["error"]
    assert not sidecar_exists(drop / "key") and sidecar_exists(allowed / "shared")
    digest = hashlib.sha256(b"a key from elsewhere").hexdigest()
    assert digest not in {o["sha256"] for o in sandbox.ton_objects()}


def test_a_world_writable_file_gets_a_sidecar_no_one_else_may_change(
    tmp_path, sandbox, make_daemon
):
    (tmp_path / "drop").mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}]))
    daemon.start()
    path = tmp_path / "drop" / "open.txt"
    path.write_bytes(b"anyone may write me")
    os.chmod(path, 0o666)
    daemon.wait_counts(done=1)
    assert path.with_name("open.txt.syncd.toml").stat().st_mode & 0o777 == 0o644


class _Opened:
    """Records every time `folder` itself is opened (a listing begins with that), through
    an inotify watch of the test's own."""

    def __init__(self, folder: Path) -> None:
        self.count = 0
        self._fd = InotifyFD()
        opens = Mask(InotifyConstants.IN_OPEN)
        self._fd.add_callback(os.fsencode(folder), opens, self, CallbackId(1))
        self._fd.start()

    def on_event(self, event: InotifyEvent) -> None:
        if not event.name:
            self.count += 1

    def on_watch_deleted(self, wd: object) -> None:
        pass

    def on_queue_overflow(self) -> None:
        pass

    def close(self) -> None:
        self._fd.stop()
        self._fd.join(5)


def _outside_tree(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "deeper").mkdir(parents=True)
    (outside / "secret.bin").write_bytes(MARKER)
    (outside / "deeper" / "more.bin").write_bytes(MARKER)
    return outside


def test_a_scan_never_lists_or_watches_a_folder_swapped_for_a_symlink(tmp_path):
    """The folder an event named is a symlink by the time its scan comes (the race a
    writer in the watch can win at will): nothing below it is listed, watched or found."""
    outside = _outside_tree(tmp_path)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "sub").symlink_to(outside)
    (drop / "real").mkdir()
    (drop / "real" / "mine.bin").write_bytes(b"mine")
    watch = WatchConfig(path=drop, service="s")
    opened = _Opened(outside)
    watched: list[bytes] = []
    found: list[Path] = []
    try:
        scanner = Scanner(None, lambda folder, fd: watched.append(folder))
        scanner.folders((watch,), [drop / "sub", drop / "real"], lambda p, st: not found.append(p))
        scanner.full((watch,), lambda p, st: not found.append(p))
        time.sleep(0.2)  # the test's own inotify reader reports asynchronously
        assert opened.count == 0, "a folder outside the watch was listed"
    finally:
        opened.close()
    assert found == [drop / "real" / "mine.bin"] * 2
    assert sorted(watched) == sorted([os.fsencode(drop / "real")] * 2 + [os.fsencode(drop)])


def test_a_polled_watch_never_lists_through_a_symlink(tmp_path):
    """A symlink to a folder inside a polled (network) watch is not walked by the polls."""
    outside = _outside_tree(tmp_path)
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "link").symlink_to(outside)
    completed: list[Path] = []
    watch = WatchConfig(path=drop, service="s", poll_interval=0.1)
    opened = _Opened(outside)
    watcher = Watcher(
        (watch,), 0.2, lambda path, w, identity: completed.append(path), lambda folder: {}
    )
    watcher.start()
    try:
        wait_until(lambda: watcher.scans.count >= 1, 30, "the start-up scan")
        (drop / "mine.bin").write_bytes(b"mine")
        wait_until(lambda: completed == [drop / "mine.bin"], 30, "the file polled in the watch")
        assert opened.count == 0, "a folder outside the watch was listed"
    finally:
        watcher.stop()
        opened.close()


WITHOUT_PROC = """
import json, os, sys
from pathlib import Path
from syncd.config import WatchConfig
from syncd.intake import inotify
from syncd.intake.scan import Scanner

class Hints:
    def hint(self, path, quick): pass
    def hint_folder(self, path): pass
    def forget(self, path): pass

drop = Path(sys.argv[1])
watches = inotify.InotifyWatches(Hints(), lambda: None)
watches.start()
found = []
watch = WatchConfig(path=drop, service="s")
Scanner(None, watches.add).full((watch,), lambda path, st: not found.append(str(path)))
print(json.dumps({"proc": inotify.PROC_MOUNTED, "found": found, "watching": watches.watching()}))
watches.stop()
"""


def test_without_proc_a_scan_opens_each_folder_from_the_root_down(tmp_path):
    """Where /proc is not mounted (some containers), folders are opened one component at a
    time from `/` instead, and a folder swapped for a symlink still leads nowhere."""
    outside = _outside_tree(tmp_path)
    drop = tmp_path / "drop"
    (drop / "real").mkdir(parents=True)
    (drop / "real" / "mine.bin").write_bytes(b"mine")
    (drop / "sub").symlink_to(outside)
    hide_proc = "mount -t tmpfs none /proc"
    probe = ["unshare", "--mount", "sh", "-c", hide_proc]
    if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
        pytest.skip("no mount namespace to hide /proc in (unshare needs CAP_SYS_ADMIN)")
    command = [*probe[:-1], f'{hide_proc} && exec "$0" -c "$1" "$2"', sys.executable, WITHOUT_PROC]
    run = subprocess.run([*command, drop], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == {
        "proc": False,
        "found": [str(drop / "real" / "mine.bin")],
        "watching": 2,
    }
