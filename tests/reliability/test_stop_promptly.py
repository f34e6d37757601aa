"""SIGTERM at awkward moments: during the start-up scan of a large tree, and while a worker
hashes a file of gigabytes. The first SIGTERM stops the taking of new work at once and ends
local work (a scan, a hash) at its next step: nothing of it is journaled half, and the next
start does it again. Full scale: RELIABILITY_SCALE=7 (21,000 files).
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import SCALE, base_config, wait_until
from harness import RunningDaemon, SandboxClient

WORKERS = 2


def journal_states(root: Path) -> dict[str, int]:
    with sqlite3.connect(root / "state" / "journal.sqlite") as db:
        return dict(db.execute("SELECT state, count(*) FROM files GROUP BY state").fetchall())


def ton_uploads_since(sandbox: SandboxClient, since: float) -> int:
    return sum(
        1 for r in sandbox.requests() if r["path"].startswith("/1.1/ton/") and r["started"] > since
    )


def test_sigterm_during_the_startup_scan_starts_no_new_upload(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    drop = tmp_path / "drop"
    for folder in range(30 * SCALE):
        (drop / f"d{folder:03d}").mkdir(parents=True)
        for n in range(100):
            (drop / f"d{folder:03d}" / f"f{n}.txt").write_bytes(b"%d-%d" % (folder, n))
    config: dict[str, Any] = base_config(
        tmp_path, sandbox.url, [{"path": str(drop)}], workers=WORKERS, settle_seconds="0s"
    )
    daemon = make_daemon(config).start()  # the status socket answers before the scan runs
    signalled = time.time()
    daemon.signal(signal.SIGTERM)
    assert daemon.process is not None
    assert daemon.process.wait(60) == 0
    # At most the files the workers had claimed when the signal came; none after it.
    assert ton_uploads_since(sandbox, signalled) <= WORKERS
    assert "Traceback" not in daemon.log()
    assert set(journal_states(tmp_path)) <= {"seen", "uploading", "retry_wait", "done"}


def test_sigterm_while_hashing_a_huge_file_stops_the_hash(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(drop)}])).start()
    daemon.wait_scan()
    huge = drop / "huge.bin"
    subprocess.run(["truncate", "-s", "8G", str(huge)], check=True)  # sparse: no disk taken

    def hashing() -> bool:
        reply = daemon.poll_status()
        return bool(reply and any(h["hashed"] > 0 for h in reply["hashing"]))

    wait_until(hashing, what="the hash under way", interval=0.01)
    daemon.signal(signal.SIGTERM)
    assert daemon.process is not None
    assert daemon.process.wait(60) == 0
    assert "hashing stopped by the shutdown" in daemon.log()
    assert journal_states(tmp_path) == {"seen": 1}  # no digest of a hash not finished
    assert not [r for r in sandbox.requests() if r["path"].startswith("/1.1/ton/")]


def test_signals_in_a_storm_then_sigterm_stop_the_daemon(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    """A Python signal handler runs in the main thread between any two of its steps, also
    while that thread holds a lock or runs another handler: one that took a lock (an Event's
    `set`) deadlocked the daemon when a signal came at such a moment, and it never stopped.
    A storm of SIGHUPs (a configuration tool reloading in a loop) makes that moment come."""
    drop = tmp_path / "drop"
    drop.mkdir()
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(drop)}])).start()
    daemon.wait_scan()
    for _ in range(3000):
        daemon.signal(signal.SIGHUP)
    (drop / "after-the-storm.bin").write_bytes(b"still working")
    daemon.wait_counts(done=1)
    assert daemon.stop(timeout=20) == 0
