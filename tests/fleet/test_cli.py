"""The fleet's commands: `syncd check` reaches the journal, `syncd journal copy` fills it."""

from __future__ import annotations

import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import RunningDaemon, base_config, free_port

from syncd.files import Identity
from syncd.journal.sqlite import SqliteStore
from syncd.journal.states import State
from syncd.journal.store import Decision

FAR_FUTURE = datetime(2099, 1, 1, tzinfo=UTC)
"""A TON result's expiry that keeps it valid."""


def syncd_with(tmp_path: Path, journal: dict[str, Any] | None, **env: str) -> RunningDaemon:
    """A config (not a running daemon) to run `syncd COMMAND -c CONFIG` with."""
    (tmp_path / "drop").mkdir(exist_ok=True)
    config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": str(tmp_path / "drop")}])
    if journal is not None:
        config["journal"] = journal
    return RunningDaemon(tmp_path, config, {**os.environ, **env})


def test_check_connects_and_reports_the_schema(tmp_path, postgres_cluster, postgres_url):
    from syncd.journal.pg_schema import MIGRATIONS  # psycopg: the fleet extra's
    from syncd.journal.postgres import PostgresStore

    journal = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    fresh = syncd_with(tmp_path, journal).cli("check")
    assert fresh.returncode == 0, fresh.stderr
    assert (
        f"journal {postgres_url}: schema 0 of {len(MIGRATIONS)}; migrated when syncd starts"
        in fresh.stdout
    )
    PostgresStore(postgres_url, postgres_cluster.password, "host-a", 30.0).close()
    current = syncd_with(tmp_path, journal).cli("check")
    assert f"journal {postgres_url}: schema {len(MIGRATIONS)}, current" in current.stdout
    (tmp_path / "wrong").write_text("not-the-password\n")
    wrong = {**journal, "password_file": str(tmp_path / "wrong")}
    refused = syncd_with(tmp_path, wrong).cli("check")
    assert refused.returncode == 1
    assert refused.stdout == "", "nothing is called ok before the journal is reached"
    assert refused.stderr.startswith(f"syncd: {postgres_url}: cannot use the journal database:")
    assert postgres_cluster.password not in refused.stderr + refused.stdout


def test_journal_copy_moves_a_sqlite_journal_into_postgresql(
    tmp_path, postgres_cluster, postgres_url
):
    from syncd.journal.postgres import PostgresStore

    sqlite = SqliteStore(tmp_path / "state" / "journal.sqlite")
    for n in range(3):
        sqlite.record_seen(f"/drop/{n}".encode(), "ads", Identity(1, n, 10, 20))
    row = sqlite.claim(10.0**10)
    assert row is not None
    hashed = sqlite.mark_hashed(row, "a" * 64, row.identity)
    assert hashed is not None
    decision = sqlite.begin_upload(hashed, lambda result: True)
    assert decision is not None and decision[0] is Decision.UPLOAD
    assert sqlite.save_progress(decision[1], {"offset": 8})
    sqlite.close()
    joining = syncd_with(tmp_path, None, PGPASSWORD=postgres_cluster.password)
    copied = joining.cli("journal", "copy", "--to", postgres_url)
    assert copied.returncode == 0, copied.stderr
    assert copied.stdout.strip().startswith("copied 3 files from ")
    fleet = PostgresStore(postgres_url, postgres_cluster.password, "host-a", 30.0)
    try:
        assert set(fleet.known_in(b"/drop/")) == {b"/drop/0", b"/drop/1", b"/drop/2"}
        [moved] = fleet.in_state(State.HASHED)
        assert moved.path == row.path and moved.progress == {"offset": 8}, "resumes where it stood"
    finally:
        fleet.close()
    again = joining.cli("journal", "copy", "--to", postgres_url)
    assert "copied 0 files" in again.stdout and "3 were there already" in again.stdout
    bad = joining.cli("journal", "copy", "--to", "https://db/x")
    assert bad.returncode == 2 and "--to: expected a URL such as postgresql://" in bad.stderr


def test_dry_run_reads_the_fleets_journal_and_writes_nothing(
    tmp_path, postgres_cluster, postgres_url
):
    from syncd.journal.postgres import PostgresStore

    journal = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    syncd = syncd_with(tmp_path, journal)
    done = tmp_path / "drop" / "done.bin"
    done.write_bytes(b"uploaded by another host")
    other = tmp_path / "drop" / "new.bin"
    other.write_bytes(b"nobody has this one")
    empty = syncd.cli("run", "--once", "--dry-run")
    assert empty.returncode == 0, empty.stderr
    assert "dry run: 2 to upload, 0 duplicates, 0 already uploaded" in empty.stdout
    fleet = PostgresStore(postgres_url, postgres_cluster.password, "host-b", 30.0)
    try:
        identity = Identity.of(done.stat())
        fleet.record_seen(os.fsencode(done), "ads", identity)
        row = fleet.claim(10.0**10)
        assert row is not None
        sha = hashlib.sha256(done.read_bytes()).hexdigest()
        hashed = fleet.mark_hashed(row, sha, identity)
        assert hashed is not None
        decision = fleet.begin_upload(hashed, lambda result: True)
        assert decision is not None
        assert fleet.mark_uploaded(decision[1], {"id": "7", "expires": FAR_FUTURE})
        folder = os.fsencode(done.parent) + b"/"
        before = fleet.counts(), fleet.known_in(folder)
        planned = syncd.cli("run", "--once", "--dry-run")
        assert planned.returncode == 0, planned.stderr
        assert f"{done}: ads, 24 bytes, single, already uploaded" in planned.stdout
        assert "dry run: 1 to upload, 0 duplicates, 1 already uploaded" in planned.stdout
        assert (fleet.counts(), fleet.known_in(folder)) == before, "the dry run wrote something"
    finally:
        fleet.close()


def test_journal_copy_keeps_each_waiting_file_in_its_place_in_the_queue(
    tmp_path, postgres_cluster, postgres_url
):
    from syncd.journal.postgres import PostgresStore

    drop = tmp_path / "drop"
    drop.mkdir()
    sizes = {"small.bin": 10, "large.bin": 30, "middle.bin": 20}
    sqlite = SqliteStore(tmp_path / "state" / "journal.sqlite")
    for inode, (name, size) in enumerate(sizes.items(), start=1):
        sqlite.record_seen(os.fsencode(drop / name), "ads", Identity(1, inode, size, 20))
    sqlite.close()
    watch = {"path": str(drop), "order": "largest", "priority": 3}
    config = base_config(tmp_path, "http://127.0.0.1:9", [watch])
    joining = RunningDaemon(
        tmp_path, config, {**os.environ, "PGPASSWORD": postgres_cluster.password}
    )
    copied = joining.cli("journal", "copy", "--to", postgres_url)
    assert copied.returncode == 0, copied.stderr
    fleet = PostgresStore(postgres_url, postgres_cluster.password, "host-a", 30.0)
    try:
        taken = []
        while (row := fleet.claim(10.0**10)) is not None:
            taken.append(os.path.basename(os.fsdecode(row.path)))
        assert taken == ["large.bin", "middle.bin", "small.bin"], "the watch's order, kept"
        with fleet._write() as db:
            priorities = {
                r["priority"] for r in db.execute("SELECT priority FROM files").fetchall()
            }
        assert priorities == {3}
    finally:
        fleet.close()


def test_status_prints_the_fleets_hosts_escaped(
    tmp_path, make_daemon, postgres_cluster, postgres_url
):
    """A host's name comes from the shared database, which every host (and whoever owns
    one) writes: `syncd status` prints it escaped, on its own line, like a file name."""
    import psycopg

    from syncd.control.printable import printable

    (tmp_path / "drop").mkdir()
    config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": str(tmp_path / "drop")}])
    config["journal"] = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    daemon = make_daemon(config).start()
    hostile = "evil\x1b[2J\n  forged (pid 1): heartbeat 0.0 s ago, 0 claims\x07"
    with psycopg.connect(postgres_url, password=postgres_cluster.password) as db:
        db.execute(
            "INSERT INTO hosts (host_id, pid, version, started_at, heartbeat_at)"
            " VALUES (%s, 7, '0.1', 0, 0)",
            (hostile,),
        )
    shown = daemon.cli("status")
    assert shown.returncode == 0, shown.stderr
    fleet = shown.stdout.split("\nfleet:\n")[1].splitlines()
    assert any(line.startswith(f"  {printable(hostile)} (pid 7): heartbeat ") for line in fleet)
    assert not any(line.startswith("  forged") for line in fleet), fleet
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout


def test_a_newer_or_unreachable_database_is_exit_1_with_one_line(
    tmp_path, postgres_cluster, postgres_url
):
    """A runtime failure (exit 1), not a configuration error (2, which systemd's
    RestartPreventExitStatus= never retries): the database may come back, syncd be upgraded."""
    import psycopg

    from syncd.journal.pg_schema import MIGRATIONS

    with psycopg.connect(postgres_url, password=postgres_cluster.password) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        db.execute("INSERT INTO schema_version VALUES (%s)", (len(MIGRATIONS) + 1,))
    journal = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    newer = (
        f"syncd: {postgres_url}: the journal's schema is version {len(MIGRATIONS) + 1},"
        f" newer than this syncd knows ({len(MIGRATIONS)}): upgrade syncd on this host\n"
    )
    for command in (("check",), ("run",)):
        refused = syncd_with(tmp_path, journal).cli(*command)
        assert (refused.returncode, refused.stdout, refused.stderr) == (1, "", newer), command
    port = free_port()  # nobody listens there
    gone = {**journal, "url": f"postgresql://postgres@127.0.0.1:{port}/syncd"}
    # `run` itself waits for a database that does not answer (test_outage.py); --once not
    for command in (("check",), ("run", "--once")):
        refused = syncd_with(tmp_path, gone).cli(*command)
        assert refused.returncode == 1 and refused.stdout == "", command
        assert (
            refused.stderr.startswith(
                f"syncd: postgresql://postgres@127.0.0.1:{port}/syncd: cannot use the journal"
                " database: "
            )
            and refused.stderr.count("\n") == 1
        ), refused.stderr
