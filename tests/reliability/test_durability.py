"""Steps that cannot be taken back are committed durably, and a journal that meets a full
disk says so, waits where waiting is safe, and fails fast where it is not."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from conftest import base_config

from syncd.control.degraded import JOURNAL, Degraded
from syncd.files import Identity
from syncd.journal.patience import Calls, StorageFault, patiently, persevering
from syncd.journal.sqlite import SqliteStore


def test_saved_steps_are_committed_with_synchronous_full(tmp_path):
    store = SqliteStore(tmp_path / "journal.sqlite")
    try:
        store.record_seen(b"/drop/a", "notes", Identity(1, 2, 3, 4))
        row = store.claim(time.time())
        assert row is not None
        statements: list[str] = []
        store._db.set_trace_callback(statements.append)
        assert store.save_progress(row, {"post": {"id": "abc"}})
        durable = statements
        statements = []
        store._db.set_trace_callback(statements.append)
        store.mark_failed(row, "an ordinary change")
        store._db.set_trace_callback(None)
    finally:
        store.close()
    first, *middle, last = durable
    assert first == "PRAGMA synchronous=FULL" and last == "PRAGMA synchronous=NORMAL"
    assert middle[0] == "BEGIN IMMEDIATE" and middle[-1] == "COMMIT"
    assert any("progress" in statement for statement in middle)
    assert not any("synchronous" in statement for statement in statements)


class FlakyStore:
    """Meets a full disk `failures` times, then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.changes = 7

    def record(self, value: int) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise StorageFault("journal.sqlite: database or disk is full")
        return value * 2


def test_a_patient_call_waits_out_the_fault_and_clears_it(monkeypatch):
    monkeypatch.setattr(time, "sleep", lambda seconds: None)
    faults = Degraded()
    store = persevering(FlakyStore(failures=3), faults, Calls())
    seen: list[list[dict[str, str]]] = []
    real_set = faults.set

    def spy(component: str, reason: str) -> None:
        real_set(component, reason)
        seen.append(faults.snapshot())

    monkeypatch.setattr(faults, "set", spy)
    with patiently():
        assert store.record(21) == 42
    assert seen and seen[0][0]["component"] == JOURNAL and "full" in seen[0][0]["reason"]
    assert faults.snapshot() == [] and store.changes == 7


def test_an_impatient_call_fails_fast_and_leaves_the_fault_shown():
    faults = Degraded()
    store = persevering(FlakyStore(failures=1), faults, Calls())
    with pytest.raises(StorageFault):
        store.record(1)  # the main loop or a socket: never blocks
    assert faults.has(JOURNAL)
    assert store.record(2) == 4  # what failed works again
    assert not faults.has(JOURNAL)


def test_a_batch_refused_at_its_start_is_cleared_by_the_next_batch_that_commits(tmp_path):
    """Another process's lock refuses a batch before any call inside it runs: the fault is
    the batch's own, and the next batch that commits shows the journal writes again."""
    path = tmp_path / "journal.sqlite"
    faults = Degraded()
    store = persevering(SqliteStore(path), faults, Calls())
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    identity = Identity(1, 2, 3, 4)
    with pytest.raises(StorageFault):
        store.batch(lambda: store.record_seen(b"/w/a", "ads", identity))
    assert faults.has(JOURNAL)
    holder.execute("ROLLBACK")
    holder.close()
    assert store.batch(lambda: store.record_seen(b"/w/a", "ads", identity))
    assert not faults.has(JOURNAL)


def _damage(journal: Path) -> None:
    """Garbage over every page but the first: the header still says SQLite, the rows do not."""
    size = journal.stat().st_size
    with journal.open("r+b") as file:
        for offset in range(4096, size, 4096):
            file.seek(offset)
            file.write(bytes(range(256)) * 16)


def test_a_damaged_journal_stops_the_daemon_with_one_line_saying_what_to_do(
    tmp_path, sandbox, make_daemon
):
    config = base_config(tmp_path, sandbox.url)
    drop = tmp_path / "drop"
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    for n in range(40):
        (drop / f"f{n:02}.bin").parent.mkdir(exist_ok=True)
        (drop / f"f{n:02}.bin").write_bytes(b"%d" % n * 3000)
    daemon = make_daemon(config).start()
    daemon.wait_counts(done=40)
    assert daemon.stop() == 0
    journal = Path(config["daemon"]["state_dir"]) / "journal.sqlite"
    _damage(journal)
    daemon.start(wait=False)
    assert daemon.process is not None
    assert daemon.process.wait(60) == 1
    log = daemon.log()
    assert f"syncd: {journal}: the journal is damaged" in log
    assert "sqlite3" in log and ".recover" in log
    assert "Traceback" not in log
