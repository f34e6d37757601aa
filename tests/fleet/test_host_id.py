"""One live daemon per host_id (journal/pg_hosts.py): two daemons given one host_id (a cloned
VM, a second start by mistake) must not both work as that host. Before this, the second's
start took the first's claims as a crash's and uploaded its files in flight a second time.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fleet_harness import Fleet, MiB
from harness import RunningDaemon, SandboxClient, wait_until

LEASE = 3.0


@pytest.fixture
def twins(
    tmp_path: Path, sandbox: SandboxClient, postgres_cluster: Any, postgres_url: str
) -> Iterator[Callable[..., Fleet]]:
    """Two daemons, each its own state folder and socket, both configured as host_id
    "host-1", over one drop folder and one database."""
    made: list[Fleet] = []

    def make(**options: Any) -> Fleet:
        options = {"lease": LEASE, "services": ("ads",), "workers": 2, **options}
        fleet = Fleet(
            tmp_path, sandbox, postgres_url, postgres_cluster.password_file, hosts=2, **options
        )
        made.append(fleet)
        second = fleet.daemons[1]
        second.config["journal"]["host_id"] = "host-1"
        second.write_config(second.config)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


def heartbeat_age(fleet: Fleet, password: str) -> float:
    import psycopg

    with psycopg.connect(fleet.url, password=password) as db:
        found = db.execute("SELECT heartbeat_at FROM hosts WHERE host_id='host-1'").fetchone()
    assert found is not None
    return time.time() - float(found[0])


def uploading(daemon: RunningDaemon) -> bool:
    return any(u["sent"] > 0 for u in daemon.poll_status()["uploads"])


def test_a_second_daemon_with_the_same_host_id_refuses_to_start(twins, sandbox):
    fleet = twins()
    first, second = fleet.daemons
    first.start()
    sandbox.post("settings", {"link": {"bytes_per_second": 256 * 1024}})
    # Single requests (below the resumable threshold): a second start that took them over
    # would send each one again while the first's request is still under way.
    paths = [fleet.drop_file("ads", f"a-{n}.bin", os.urandom(700 * 1024)) for n in range(4)]
    wait_until(lambda: uploading(first), 60, "the first daemon uploading", interval=0.05)
    second.start(wait=False)
    assert second.process is not None
    try:
        code = second.process.wait(60)
    except Exception:
        pytest.fail(f"the second daemon runs beside the first:\n{second.log()[-3000:]}")
    log = second.log()
    assert code == 2, log
    assert "Traceback" not in log
    [line] = [x for x in log.splitlines() if "host_id" in x]
    assert line.startswith(f"syncd: {second.config_path}: [journal] ")
    assert f'host_id "host-1" is in use by another running syncd: pid {first.pid} on ' in line
    assert os.uname().nodename in line
    sandbox.post("settings", {"link": {"bytes_per_second": 0}})
    fleet.wait_sidecars(paths, timeout=120)
    assert [p for p, n in fleet.uploads(paths).items() if n != 1] == []
    assert [h["pid"] for h in first.status()["fleet"]] == [first.pid]


def test_a_stale_heartbeat_is_taken_over_and_the_process_that_lost_it_writes_nothing(
    twins, sandbox, postgres_cluster
):
    """The first daemon is frozen past its lease (its heartbeat stale), the second starts as
    host-1 and takes over; the first wakes to find its host_id taken: degraded, it claims
    nothing, and neither its rows nor its sidecars are written twice."""
    fleet = twins()
    first, second = fleet.daemons
    first.start()
    sandbox.post("settings", {"link": {"bytes_per_second": 2 * MiB}})
    # Resumable uploads: a host that lost its claim stops at its next chunk.
    paths = [fleet.drop_file("ads", f"slow-{n}.bin", os.urandom(4 * MiB)) for n in range(3)]
    wait_until(lambda: uploading(first), 60, "the first daemon uploading", interval=0.05)
    first.signal(signal.SIGSTOP)
    try:
        wait_until(
            lambda: heartbeat_age(fleet, postgres_cluster.password) > LEASE + 1,
            LEASE + 30,
            "the frozen daemon's heartbeat to go stale",
        )
        second.start()
        assert f'took host_id "host-1" over from pid {first.pid} on ' in second.log()
    finally:
        first.signal(signal.SIGCONT)

    def displaced() -> list[dict[str, Any]]:
        return [d for d in first.status()["degraded"] if d["component"] == "fleet"]

    [fault] = wait_until(displaced, 30, "the first daemon to find its host_id taken")
    assert f'host_id "host-1" was taken over by pid {second.pid}' in fault["reason"]
    assert first.log().count(f"fleet degraded: {fault['reason']}") == 1
    sandbox.post("settings", {"link": {"bytes_per_second": 0}})
    fleet.wait_sidecars(paths, timeout=120)
    assert [p for p, n in fleet.uploads(paths).items() if n != 1] == []
    # The first takes no new work: the second does all of it.
    fresh = [fleet.drop_file("ads", f"new-{n}.bin", os.urandom(64 * 1024)) for n in range(4)]
    fleet.wait_sidecars(fresh, timeout=60)
    for path in [*paths, *fresh]:
        assert f"uploaded {path}" not in first.log()
    assert all(f"uploaded {p}" in second.log() for p in fresh)
    assert [h["pid"] for h in second.status()["fleet"]] == [second.pid]
    assert displaced(), "still degraded while the second holds host-1"


def test_a_daemon_killed_and_restarted_at_once_takes_its_host_id_back_without_waiting(twins):
    """A crash restarted by systemd on the same machine: the predecessor's process is gone,
    so its fresh heartbeat is not waited for (the lease is a minute here)."""
    fleet = twins(lease=60.0)
    first = fleet.daemons[0]
    first.start()
    killed = first.pid
    first.kill()
    started = time.monotonic()
    first.start()
    assert time.monotonic() - started < 30
    assert f'took host_id "host-1" over from pid {killed} on ' in first.log()
    assert [h["pid"] for h in first.status()["fleet"]] == [first.pid]


def test_of_two_daemons_started_together_with_one_host_id_exactly_one_runs(twins):
    fleet = twins()
    for daemon in fleet.daemons:
        daemon.start(wait=False)

    def settled() -> tuple[RunningDaemon, RunningDaemon] | None:
        exited = [d for d in fleet.daemons if d.process is not None and d.process.poll() == 2]
        answering = [d for d in fleet.daemons if d.process is not None and d.process.poll() is None]
        if len(exited) == 1 and len(answering) == 1 and answering[0].poll_status():
            return answering[0], exited[0]
        return None

    running, refused = wait_until(settled, 60, "one daemon running, the other refused")
    assert f'host_id "host-1" is in use by another running syncd: pid {running.pid}' in (
        refused.log()
    )
    assert [h["pid"] for h in running.status()["fleet"]] == [running.pid]
