"""A database outage in fleet mode: the daemon rides it out (no thread dies, nothing is lost)
and goes on when the database is back. The outage is this test's database refusing and
dropping connections, so the session's PostgreSQL serves the other tests meanwhile."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from fleet_harness import Fleet
from harness import base_config, free_port, scrape, sidecar_of, wait_until
from test_systemd import NotifyListener


def outage(postgres_cluster: Any, url: str, on: bool) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS {'false' if on else 'true'}")
        if on:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname=%s",
                (name,),
            )


def test_a_database_outage_is_ridden_out_and_work_goes_on(
    tmp_path, sandbox, postgres_cluster, postgres_url
):
    port = free_port()
    fleet = Fleet(
        tmp_path,
        sandbox,
        postgres_url,
        postgres_cluster.password_file,
        hosts=1,
        workers=1,
        services=("ads",),
        extra={"metrics": {"listen": f"127.0.0.1:{port}"}},
    )
    try:
        fleet.start()
        [daemon] = fleet.daemons
        before = [fleet.drop_file("ads", f"before-{n}.bin", os.urandom(4096)) for n in range(3)]
        fleet.wait_sidecars(before, timeout=60)
        outage(postgres_cluster, postgres_url, on=True)
        during = [fleet.drop_file("ads", f"during-{n}.bin", os.urandom(4096)) for n in range(3)]

        def degraded() -> bool:
            samples, _ = scrape(f"http://127.0.0.1:{port}/metrics")
            return samples.get(("syncd_degraded", (("component", "journal"),))) == 1

        wait_until(degraded, 60, "the journal shown as degraded")
        assert "journal degraded: the journal database is unavailable" in daemon.log()
        outage(postgres_cluster, postgres_url, on=False)
        fleet.wait_sidecars(during, timeout=120)
        after = [fleet.drop_file("ads", f"after-{n}.bin", os.urandom(4096)) for n in range(3)]
        fleet.wait_sidecars(after, timeout=60)
        assert daemon.process is not None and daemon.process.poll() is None
        assert "journal works again" in daemon.log()
        assert "Traceback" not in daemon.log()
        received = fleet.uploads([*before, *during, *after])
        assert set(received.values()) == {1}, received
        assert all(sidecar_of(p).exists() for p in during)
    finally:
        outage(postgres_cluster, postgres_url, on=False)
        fleet.close()


def test_hooks_stop_at_once_while_the_database_is_out(postgres_cluster, postgres_url):
    """The hook runners' journal calls wait out an outage; stopping them (SIGTERM) must not
    wait with them, or the daemon outlives systemd's TimeoutStopSec. Two runners: one waits
    in the failed files' cursor, the other in the claim of a queued hook."""
    import threading

    from syncd.control.degraded import JOURNAL, Degraded
    from syncd.journal.patience import Calls, persevering
    from syncd.journal.postgres import PostgresStore
    from syncd.outputs.hooks import RUNNERS, Hooks
    from syncd.work.descriptors import Shortage

    assert RUNNERS >= 2
    store = PostgresStore(postgres_url, postgres_cluster.password, "host-a", 30.0)
    faults = Degraded()
    journal = persevering(store, faults, Calls())
    hooks = Hooks(journal, lambda: (), lambda: {}, Shortage(journal, faults))
    try:
        outage(postgres_cluster, postgres_url, on=True)
        hooks.start()
        wait_until(lambda: faults.has(JOURNAL), 30, "the runners meeting the outage")
        stopping = threading.Thread(target=hooks.stop, daemon=True)
        stopping.start()
        stopping.join(5)
        assert not stopping.is_alive(), "stop() waited for a runner waiting out the outage"
    finally:
        outage(postgres_cluster, postgres_url, on=False)
        hooks.loop.stop(30)  # the runners end once their journal calls go through
        store.close()


def test_an_outage_is_told_by_status_and_systemd_status(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    """While the database is out, `syncd status` cannot answer: it says why and exits 1
    (0 would tell a script all is well), as `syncd pause` does (not 2, a usage error), and
    STATUS= says the journal is degraded rather than keeping the last figures."""
    import json
    import signal
    import subprocess

    (tmp_path / "drop").mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["journal"] = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        daemon = make_daemon(config, NOTIFY_SOCKET=str(notify.path)).start()
        wait_until(lambda: notify.with_line("READY=1"), 30, "READY=1")
        outage(postgres_cluster, postgres_url, on=True)
        unavailable = "the journal database is unavailable"
        wait_until(
            lambda: [m for _, m in notify.messages if f"degraded: journal: {unavailable}" in m],
            30,
            "STATUS= saying the journal is degraded",
        )
        shown = daemon.cli("status")
        assert shown.returncode == 1 and shown.stdout.startswith(f"error: {unavailable}")
        raw = daemon.cli("status", "--json")
        assert raw.returncode == 1 and json.loads(raw.stdout)["error"].startswith(unavailable)
        watching = subprocess.Popen(
            [daemon.python, "-m", "syncd", "status", "--watch", "-c", str(daemon.config_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=daemon.env,
        )
        try:
            assert watching.stdout is not None
            line = watching.stdout.readline()
        finally:
            watching.send_signal(signal.SIGINT)
            watching.communicate(timeout=30)
        assert f"error: {unavailable}" in line, "not an empty daemon's figures"
        paused = daemon.cli("pause")
        assert paused.returncode == 1, "the daemon's failure, not a usage error (exit 2)"
        assert paused.stderr.startswith(f"syncd: {unavailable}"), paused.stderr
        outage(postgres_cluster, postgres_url, on=False)
        wait_until(lambda: daemon.cli("status").returncode == 0, 30, "status answering again")
    finally:
        outage(postgres_cluster, postgres_url, on=False)
        notify.close()


def test_a_reload_while_the_database_is_out_keeps_the_daemon_and_takes_hold(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    """SIGHUP during an outage: the new configuration is in force (here a new watch), and
    the daemon lives on (the reload's journal write, pruning the webhook outbox, waits)."""
    import signal

    for name in ("drop", "more"):
        (tmp_path / name).mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["journal"] = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    daemon = make_daemon(config).start()
    try:
        outage(postgres_cluster, postgres_url, on=True)
        wait_until(lambda: "journal degraded" in daemon.log(), 30, "the outage met")
        config["watch"].append({"path": str(tmp_path / "more"), "service": "ads"})
        daemon.write_config(config)
        daemon.signal(signal.SIGHUP)
        wait_until(lambda: "configuration reloaded" in daemon.log(), 30, "the reload")
        assert daemon.process is not None and daemon.process.poll() is None, daemon.log()[-2000:]
    finally:
        outage(postgres_cluster, postgres_url, on=False)
    dropped = tmp_path / "more" / "new.bin"
    dropped.write_bytes(os.urandom(1024))
    wait_until(lambda: sidecar_of(dropped).exists(), 60, "the new watch's file uploaded")
    assert daemon.stop() == 0


def test_a_reload_asked_while_the_start_waits_for_the_database_is_done_once_it_is_reached(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    """SIGHUP to a daemon still starting (here waiting at boot for its database; as much,
    for a moment, any start) was the signal's default: the end of the process. It is kept
    instead, and done once the daemon can act: the configuration written meanwhile is in
    force."""
    import signal

    for name in ("drop", "more"):
        (tmp_path / name).mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["journal"] = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    daemon = make_daemon(config)
    try:
        outage(postgres_cluster, postgres_url, on=True)
        daemon.start(wait=False)
        wait_until(lambda: "waiting for it" in daemon.log(), 30, "the start waiting")
        config["watch"].append({"path": str(tmp_path / "more"), "service": "ads"})
        daemon.write_config(config)
        daemon.signal(signal.SIGHUP)
        daemon.signal(signal.SIGHUP)
    finally:
        outage(postgres_cluster, postgres_url, on=False)
    wait_until(  # poll_status: an AssertionError at once if the daemon is gone
        lambda: daemon.poll_status() and "configuration reloaded" in daemon.log(),
        60,
        "the reload, once started",
    )
    watched = {w["path"] for w in daemon.status()["watches"]}
    assert watched == {str(tmp_path / "drop"), str(tmp_path / "more")}, watched
    dropped = tmp_path / "more" / "new.bin"
    dropped.write_bytes(os.urandom(1024))
    wait_until(lambda: sidecar_of(dropped).exists(), 60, "the new watch's file uploaded")
    assert daemon.stop() == 0


def test_a_start_while_the_database_is_out_waits_for_it(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    """A host started while its database refuses connections (both rebooting, say) does not
    exit to be given up on by systemd's start limit: it waits, STATUS= saying why and the
    start timeout pushed on, and comes up once the database is back. The watchdog is pinged
    through a later outage (a restart would not bring the database back); `run --once`
    still says at once that it cannot reach its journal (exit 1)."""
    (tmp_path / "drop").mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["journal"] = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    config["daemon"]["healthcheck_url"] = f"{sandbox.url}/hc/outage"
    config["daemon"]["healthcheck_interval"] = "1s"
    notify = NotifyListener(tmp_path / "notify.sock")

    def pings(kind: str, after: float) -> list[dict[str, Any]]:
        return [p for p in sandbox.get("hooks/pings") if p["kind"] == kind and p["at"] > after]

    try:
        outage(postgres_cluster, postgres_url, on=True)
        daemon = make_daemon(config, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
        once = daemon.cli("run", "--once")
        assert once.returncode == 1, once
        assert "cannot use the journal database" in once.stderr
        daemon.start(wait=False)
        waiting = wait_until(
            lambda: [m for _, m in notify.messages if m.startswith("STATUS=waiting: ")],
            30,
            "STATUS= saying what the start waits for",
        )
        assert "not currently accepting connections" in waiting[0], waiting
        wait_until(  # its own datagram, right after STATUS=
            lambda: [m for _, m in notify.messages if m.startswith("EXTEND_TIMEOUT_USEC=")],
            10,
            "the start timeout pushed back",
        )
        assert not notify.with_line("READY=1")
        assert daemon.process is not None and daemon.process.poll() is None, daemon.log()
        assert "waiting for it" in daemon.log()
        outage(postgres_cluster, postgres_url, on=False)
        wait_until(lambda: notify.with_line("READY=1"), 60, "READY=1 once the database is back")
        assert "the journal is reached" in daemon.log()
        dropped = tmp_path / "drop" / "after.bin"
        dropped.write_bytes(os.urandom(4096))
        wait_until(lambda: sidecar_of(dropped).exists(), 60, "the file dropped after the wait")
        outage(postgres_cluster, postgres_url, on=True)
        wait_until(
            lambda: [m for _, m in notify.messages if "degraded: journal: " in m],
            30,
            "STATUS= saying the journal is degraded",
        )
        degraded_at = time.monotonic()
        wait_until(
            lambda: [t for t, _ in notify.with_line("WATCHDOG=1") if t > degraded_at + 3],
            30,
            "WATCHDOG=1 pinged on through the outage",
        )
        assert daemon.process.poll() is None
        fail = wait_until(lambda: pings("fail", 0), 30, "the health check's /fail ping")
        assert "journal" in fail[-1]["body"], fail
        outage(postgres_cluster, postgres_url, on=False)
        wait_until(lambda: pings("ok", fail[-1]["at"]), 60, "an ok ping once it is back")
        assert "Traceback" not in daemon.log()
    finally:
        outage(postgres_cluster, postgres_url, on=False)
        notify.close()


def freeze(postgres_cluster: Any) -> list[int]:
    """SIGSTOP the server's postmaster (no new connection either) and every process it
    started: a hung server, which answers nothing and refuses nothing. Every child, not only
    the backends `pg_stat_activity` lists for the daemon's database: a backend still starting
    up (a pool's new connection) is listed without its database, and could go on serving."""
    import signal

    import psycopg

    with psycopg.connect(postgres_cluster.dsn(), autocommit=True) as admin:
        own = admin.execute("SELECT pg_backend_pid()").fetchone()[0]
        stat = Path(f"/proc/{own}/stat").read_text()
    postmaster = int(stat.rsplit(")", 1)[1].split()[1])
    os.kill(postmaster, signal.SIGSTOP)
    frozen = [postmaster]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if parent == postmaster:
            with contextlib.suppress(ProcessLookupError):  # exited meanwhile
                os.kill(int(entry.name), signal.SIGSTOP)
                frozen.append(int(entry.name))
    assert len(frozen) > 1
    return frozen


def thaw(frozen: list[int]) -> None:
    import signal

    for pid in frozen:
        with contextlib.suppress(ProcessLookupError):  # the admin query's backend, gone
            os.kill(pid, signal.SIGCONT)


def test_status_is_answered_while_the_database_is_frozen(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    """A database server stopped dead (SIGSTOP of its processes here; a hung host alike)
    gives no error and no timeout: its kernel acknowledges every byte, and a journal read
    waits for ever (a new connection, for its 10 s connect timeout, then the pool's 30 s).
    `syncd status` is still answered, each time, within its client's timeout: it says the
    journal is not answering (exit 1, not 3 "no daemon"), and answers as before once the
    database moves again."""
    (tmp_path / "drop").mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["journal"] = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    daemon = make_daemon(config).start()
    frozen = freeze(postgres_cluster)
    try:
        for _ in range(3):  # the first waits on the journal; the next ones behind it
            shown = daemon.cli("status")
            assert shown.returncode == 1, shown
            assert shown.stdout.startswith("error: syncd is running but has not answered"), shown
            assert "its journal is not answering" in shown.stdout
    finally:
        thaw(frozen)
    wait_until(lambda: daemon.cli("status").returncode == 0, 60, "status answered again")
    assert daemon.stop() == 0


def test_the_watchdog_is_pinged_while_the_database_is_frozen(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    """A hung database holds the main loop in a journal read, which never ends: systemd's
    watchdog is pinged on all the same (a restart would not bring the database back, as for
    a database that refuses), and STATUS= says what the daemon waits for."""
    (tmp_path / "drop").mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["journal"] = {"url": postgres_url, "password_file": str(postgres_cluster.password_file)}
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        daemon = make_daemon(config, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
        daemon.start()
        wait_until(lambda: notify.with_line("WATCHDOG=1"), 30, "the first WATCHDOG=1")
        frozen = freeze(postgres_cluster)
        frozen_at = time.monotonic()
        try:
            (tmp_path / "drop" / "new.bin").write_bytes(b"journaled once it moves again")
            wait_until(
                lambda: [m for _, m in notify.messages if "journal not answering" in m],
                15,
                "STATUS= saying the journal is not answering",
            )
            wait_until(
                lambda: [t for t, _ in notify.with_line("WATCHDOG=1") if t > frozen_at + 8],
                20,
                "WATCHDOG=1 pinged on through the freeze",
            )
            during = [t for t, _ in notify.with_line("WATCHDOG=1") if t > frozen_at]
            gaps = [b - a for a, b in zip([frozen_at, *during], during, strict=False)]
            assert max(gaps) < 2.0, gaps  # never as long as WATCHDOG_USEC
        finally:
            thaw(frozen)
        wait_until(lambda: sidecar_of(tmp_path / "drop" / "new.bin").exists(), 60, "the upload")
        assert daemon.process is not None and daemon.process.poll() is None
        assert daemon.stop() == 0
    finally:
        notify.close()
