"""Another process holding the journal's write lock (an operator's `sqlite3` session left in a
transaction, a backup tool): the daemon waits it out as it waits out a full disk. Nothing
fails and nothing is dropped, `syncd status` still answers and says why nothing moves, and
the files go on once the lock is let go."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

from conftest import base_config, read_sidecar, wait_until

HELD = "another process holds the journal's lock"


def test_a_journal_locked_by_another_process_is_waited_out(tmp_path, sandbox, make_daemon):
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}], workers=2)
    daemon = make_daemon(config).start()
    first = drop / "before.bin"
    first.write_bytes(b"before" * 500)
    daemon.wait_counts(done=1)
    journal = Path(config["daemon"]["state_dir"]) / "journal.sqlite"
    holder = sqlite3.connect(journal, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        later = [drop / f"while-locked-{n}.bin" for n in range(5)]
        for n, path in enumerate(later):
            path.write_bytes(f"while locked {n}".encode() * 300)

        def said_so() -> str | None:
            shown = daemon.cli("status")
            return shown.stdout if HELD in shown.stdout else None

        shown = wait_until(said_so, 30, "status saying the journal is locked")
        assert f"DEGRADED journal: {journal}: database is locked" in shown
        reply = daemon.status()
        assert reply["counts"]["done"] == 1 and reply["counts"]["failed"] == 0, reply
        assert len(sandbox.ton_objects()) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    daemon.wait_counts(done=1 + len(later), timeout=120)
    wait_until(lambda: daemon.status()["degraded"] == [], 10, "the fault cleared")
    assert daemon.status()["counts"]["failed"] == 0
    daemon.stop()
    for path in [first, *later]:
        assert read_sidecar(path)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(sandbox.ton_objects()) == 1 + len(later)
    assert "Traceback" not in daemon.log()
    assert "unexpected error" not in daemon.log()
