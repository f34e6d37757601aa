"""Fleet mode end to end: three daemons on this machine, each its own state folder and socket,
one shared drop folder, one PostgreSQL, one sandbox.

CI runs the file-count scenarios at a small scale; SYNCD_FLEET_SCALE=full runs what the
issue names (600 files, 20 kills): `SYNCD_FLEET_SCALE=full pytest tests/fleet`.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fleet_harness import Fleet, MiB, wait_time
from harness import SandboxClient, sidecar_of, wait_until
from sandbox.samples import video

from syncd.files import Identity
from syncd.sandbox import credentials
from syncd.sandbox.server import Sandbox

FULL = os.environ.get("SYNCD_FLEET_SCALE") == "full"
FILES = 600 if FULL else 90
KILLS = 20 if FULL else 4
LEASE = 3.0


@pytest.fixture
def make_fleet(
    tmp_path: Path, sandbox: SandboxClient, postgres_cluster: Any, postgres_url: str
) -> Iterator[Callable[..., Fleet]]:
    made: list[Fleet] = []

    def make(box: SandboxClient = sandbox, **options: Any) -> Fleet:
        fleet = Fleet(
            tmp_path, box, postgres_url, postgres_cluster.password_file, lease=LEASE, **options
        )
        made.append(fleet)
        return fleet

    yield make
    for fleet in made:
        fleet.close()


@pytest.fixture
def memory_sandbox() -> Iterator[SandboxClient]:
    """A sandbox keeping what it receives in memory (/dev/shm), so that hundreds of MiB
    arrive at the speed of the client under test, not of this machine's disk."""
    shm = Path("/dev/shm")
    with (
        tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as data,
        Sandbox(data_dir=Path(data)) as server,
    ):
        client = SandboxClient(server.url)
        yield client
        client.http.close()


def read_sidecar(path: Path) -> dict[str, Any]:
    return tomllib.loads(sidecar_of(path).read_text())


def journal_rows(fleet: Fleet, password: str) -> dict[bytes, tuple[str, float, str | None]]:
    """Every row's (state, updated_at, the host_id holding it), read straight from the
    database (`claim_owner` is HOST_ID#TOKEN, the token the holding process's)."""
    import psycopg

    with psycopg.connect(fleet.url, password=password) as db:
        found = db.execute("SELECT path, state, updated_at, claim_owner FROM files").fetchall()
    return {
        bytes(path): (state, at, owner and owner.split("#")[0]) for path, state, at, owner in found
    }


def assert_fleet_in_status(fleet: Fleet) -> None:
    hosts = [d.root.name for d in fleet.daemons]
    for daemon in fleet.daemons:
        shown = daemon.cli("status")
        assert shown.returncode == 0, shown.stderr
        assert "fleet:" in shown.stdout and all(host in shown.stdout for host in hosts)
        reply = daemon.status()
        assert sorted(h["host"] for h in reply["fleet"]) == hosts
        assert all(h["heartbeat_age_s"] < 30 for h in reply["fleet"])


def test_each_file_is_uploaded_once_with_one_sidecar_and_the_work_is_spread(make_fleet):
    fleet = make_fleet().start()
    paths = fleet.drop_mixed(FILES)
    fleet.wait_sidecars(paths, timeout=120 + FILES)
    received = fleet.uploads(paths)
    assert [p for p, n in received.items() if n != 1] == [], "each file reached its service once"
    sidecars = sorted(fleet.drop.rglob("*.syncd.toml"))
    assert sidecars == sorted(sidecar_of(p) for p in paths)
    # A sidecar is durable before its row is done and logged; those follow within moments.
    wait_until(lambda: sum(fleet.uploaded_by().values()) >= FILES, 30, "every upload logged")
    by_host = fleet.uploaded_by()
    assert sum(by_host.values()) == FILES and all(by_host.values()), by_host
    assert_fleet_in_status(fleet)
    counts = fleet.daemons[0].status()["counts"]
    assert counts["done"] == FILES and counts["failed"] == 0


def test_a_killed_hosts_resumable_upload_is_finished_by_another_in_the_same_session(
    make_fleet, memory_sandbox
):
    sandbox = memory_sandbox
    chunk, size = 8 * MiB, 400 * MiB
    ton = {"resumable_threshold": "64MiB", "chunk_size": "8MiB"}
    fleet = make_fleet(sandbox, services=("ads",), ton=ton)
    fleet.start()
    # Slowed only until the kill, so the upload can be caught at 40 %.
    sandbox.post("settings", {"link": {"bytes_per_second": 40 * MiB}})
    data = os.urandom(size)
    path = fleet.drop_file("ads", "big.bin", data)

    def holder() -> Any:
        for daemon in fleet.daemons:
            for upload in daemon.poll_status()["uploads"]:
                if upload["sent"] >= 0.4 * size:
                    return daemon
        return None

    victim = wait_until(holder, 120, "the upload at 40 %", interval=0.05)
    victim.kill()
    killed_at, killed_epoch = time.monotonic(), time.time()
    sandbox.post("settings", {"link": {"bytes_per_second": 0}})
    wait_until(lambda: sidecar_of(path).exists(), 120, "the sidecar")
    elapsed = time.monotonic() - killed_at
    [obj] = sandbox.ton_objects()
    assert obj["size"] == size
    [session] = sandbox.ton_sessions()
    assert session["complete"], "no second init: the same session went on"
    inits = [r for r in sandbox.requests() if r["method"] == "POST" and "/ton/" in r["path"]]
    assert len(inits) == 1
    resent = session["bytes_received"] - size
    assert resent <= chunk, f"re-sent {resent} bytes: more than one chunk"
    takers = [d for d in fleet.daemons if d is not victim and "uploaded " in d.log()]
    assert len(takers) == 1
    resumed = min(r["started"] for r in sandbox.requests() if r["started"] > killed_epoch)
    print(
        f"kill -9 at 40 %: resumed after {resumed - killed_epoch:.1f} s, finished after"
        f" {elapsed:.1f} s (lease {LEASE:g} s), re-sent {resent} bytes"
    )
    # The bound is on going on in the same session; the rest of the 400 MiB takes
    # what the loaded machine gives it (the wait for the sidecar bounds it).
    assert resumed - killed_epoch <= LEASE + 5, (
        f"resumed {resumed - killed_epoch:.1f} s after the kill (finished after {elapsed:.1f} s)"
    )


def test_a_host_frozen_past_its_lease_writes_nothing_for_what_it_lost(
    make_fleet, sandbox, postgres_cluster
):
    fleet = make_fleet(services=("ads",), workers=2)
    fleet.start()
    sandbox.post("settings", {"link": {"bytes_per_second": 2 * MiB}})
    paths = [fleet.drop_file("ads", f"slow-{n}.bin", os.urandom(6 * MiB)) for n in range(6)]

    def busy_host() -> Any:
        for daemon in fleet.daemons:
            uploads = daemon.poll_status()["uploads"]
            if any(u["sent"] > 0 for u in uploads):
                return daemon, [Path(u["path"]) for u in uploads]
        return None

    frozen, held = wait_until(busy_host, 120, "a host uploading", interval=0.05)
    frozen.signal(signal.SIGSTOP)
    others = [d for d in fleet.daemons if d is not frozen]
    # The others take the frozen host's rows over once its lease runs out.
    wait_time(
        LEASE + 30,
        lambda: all(
            journal_rows(fleet, postgres_cluster.password)[os.fsencode(p)][2]
            not in (None, frozen.root.name)
            for p in held
        ),
        "the frozen host's claims taken over",
    )
    frozen.signal(signal.SIGCONT)
    sandbox.post("settings", {"link": {"bytes_per_second": 0}})
    fleet.wait_sidecars(paths, timeout=120)
    lost = {os.fsencode(p) for p in held}
    wait_until(
        lambda: frozen.log().count("another host took") >= len(held),
        60,
        "the frozen host to notice its lost claims",
    )
    wait_until(  # logged once each sidecar's batch commits `done`, just after the sidecar
        lambda: all(any(f"uploaded {p}" in d.log() for d in others) for p in held),
        30,
        "the others' uploaded lines",
    )
    before = {p: sidecar_of(p).stat() for p in held}
    rows = journal_rows(fleet, postgres_cluster.password)
    for path in held:
        assert f"uploaded {path}" not in frozen.log()
    # Once it knows, it writes nothing more for them: rows and sidecars stay as they are.
    frozen_pid = frozen.pid
    assert frozen.poll_status() is not None and frozen.pid == frozen_pid
    after = journal_rows(fleet, postgres_cluster.password)
    assert {p: after[p] for p in lost} == {p: rows[p] for p in lost}
    assert all(rows[p][0] == "done" for p in lost)
    assert {p: sidecar_of(p).stat().st_mtime_ns for p in held} == {
        p: s.st_mtime_ns for p, s in before.items()
    }
    assert [p for p, n in fleet.uploads(paths).items() if n != 1] == []
    # And it picks up new work: alone now, it does all of it.
    for daemon in others:
        daemon.stop()
    fresh = [fleet.drop_file("ads", f"new-{n}.bin", os.urandom(64 * 1024)) for n in range(3)]
    fleet.wait_sidecars(fresh, timeout=60)
    assert all(f"uploaded {p}" in frozen.log() for p in fresh)


def test_a_oneall_video_waiting_for_its_callback_is_completed_by_another_host(make_fleet, sandbox):
    # Behind one public address, as a fleet's media servers are: any host serves the media
    # and takes the callback, with the key every host reads from the journal.
    sandbox.post("settings", {"oneall": {"callback_delay": 4.0, "callback_retry": True}})
    fleet = make_fleet(services=("social",), balanced=True, log_level="debug")
    fleet.start()
    clip = fleet.drop_file("social", "clip.mp4", video("mp4", 300_000))
    wait_until(
        lambda: fleet.daemons[0].poll_status()["counts"]["awaiting_callback"] == 1,
        60,
        "the video to wait for its callback",
    )
    [uploader] = [d for d in fleet.daemons if f"uploading {clip} to social" in d.log()]
    uploader.kill()
    fleet.wait_sidecars([clip], timeout=60)
    [pushed] = sandbox.get("oneall/videos")
    completed_by = wait_until(  # logged once the sidecar's batch commits, just after it
        lambda: [d for d in fleet.daemons if f"uploaded {clip}" in d.log()],
        30,
        "the uploaded line",
    )
    assert len(completed_by) == 1 and completed_by[0] is not uploader
    assert read_sidecar(clip)["result"]["video_id"] == pushed["video_id"]


def test_a_file_uploaded_by_a_host_that_died_gets_its_sidecar_from_another_mount(
    make_fleet, sandbox, postgres_cluster
):
    """The dead host saw the shared folder with another st_dev, as NFS clients do: the
    file is the same version (inode, size, mtime), so it is neither hashed nor uploaded
    again; the host that claims the row writes its sidecar from the recorded result."""
    from syncd.journal.postgres import PostgresStore

    fleet = make_fleet(hosts=1, services=("ads",))
    path = fleet.drop_file("ads", "a.bin", b"uploaded by a host that died")
    st = path.stat()
    elsewhere = Identity(st.st_dev + 1000, st.st_ino, st.st_size, st.st_mtime_ns)
    dead = PostgresStore(fleet.url, postgres_cluster.password, "host-gone", lease=1.0)
    try:
        dead.record_seen(os.fsencode(path), "ads", elsewhere)
        row = dead.claim(time.time())
        assert row is not None
        hashed = dead.mark_hashed(row, hashlib.sha256(path.read_bytes()).hexdigest(), elsewhere)
        assert hashed is not None
        decision = dead.begin_upload(hashed, lambda result: True)
        assert decision is not None
        expires = datetime.now(UTC).replace(microsecond=0) + timedelta(days=7)
        result = {"location": "/1.1/ton/data/x", "url": "http://ton/x", "expires": expires}
        assert dead.mark_uploaded(decision[1], result) is not None
    finally:
        dead.close()
    fleet.start()
    fleet.wait_sidecars([path], timeout=60)
    assert read_sidecar(path)["result"]["location"] == "/1.1/ton/data/x"
    assert sandbox.ton_objects() == [], "not uploaded again"
    # `done` follows the sidecar once the committer's batch commits: waited for, not raced
    fleet.daemons[0].wait_counts(done=1, timeout=30)


def test_random_kills_across_the_hosts_keep_the_invariants(make_fleet, sandbox):
    fleet = make_fleet().start()
    rng = random.Random(15)
    paths = fleet.drop_mixed(FILES, seed=15)
    for _ in range(KILLS):
        # The chaos schedule, not a synchronisation: a host dies at a random moment.
        time.sleep(rng.uniform(0.3, 1.5))
        victim = rng.choice(fleet.daemons)
        victim.kill()
        victim.start(wait=False)
    for daemon in fleet.daemons:
        wait_until(daemon.poll_status, 60, "the status socket")
    fleet.wait_sidecars(paths, timeout=180 + FILES)
    received = fleet.uploads(paths)
    assert all(n >= 1 for n in received.values())
    # A kill inside a single request (POST sent, answer not yet journaled) may cost one
    # more upload of that file: the documented window, at most the kills times the workers.
    again = [p for p, n in received.items() if n > 1]
    assert len(again) <= KILLS * fleet.workers, again
    assert sorted(fleet.drop.rglob("*.syncd.toml")) == sorted(sidecar_of(p) for p in paths)
    assert_fleet_in_status(fleet)


def test_after_upload_and_webhooks_run_once_across_the_fleet(tmp_path, make_fleet, sandbox):
    """An archive watch shared by three hosts: each file archived once with its sidecar
    beside it, its done hook run once, and its done event delivered with one id."""
    archive, done_log, secret = tmp_path / "archive", tmp_path / "done.log", tmp_path / "secret"
    archive.mkdir()
    secret.write_text(credentials.WEBHOOK_SECRET + "\n")
    fleet = make_fleet(
        services=("ads",),
        watch={
            "after_upload": "archive",
            "archive_to": str(archive),
            "on_done": ["sh", "-c", 'printf "%s\\n" "$SYNCD_PATH" >> "$0"', str(done_log)],
        },
        extra={
            "webhook": [
                {
                    "url": f"{sandbox.url}/hooks/webhook",
                    "events": ["done"],
                    "secret_file": str(secret),
                }
            ]
        },
    ).start()
    count = FILES // 3
    dropped = {
        f"f-{n:03d}.bin": fleet.drop_file("ads", f"f-{n:03d}.bin", os.urandom(2048 + n))
        for n in range(count)
    }
    hashes = {name: hashlib.sha256(path.read_bytes()).hexdigest() for name, path in dropped.items()}

    def archived() -> bool:
        return all(sidecar_of(archive / name).exists() for name in dropped)

    wait_until(archived, 120 + count, f"{count} files archived with their sidecars")
    assert sorted(p.name for p in archive.rglob("*") if p.is_file()) == sorted(
        [*dropped, *(sidecar_of(Path(n)).name for n in dropped)]
    )
    for name, sha in hashes.items():
        assert hashlib.sha256((archive / name).read_bytes()).hexdigest() == sha
        assert read_sidecar(archive / name)["sha256"] == sha
    assert list((fleet.drop / "ads").glob("f-*")) == [], "nothing left behind"
    uploaded = Counter(o["sha256"] for o in sandbox.ton_objects())
    assert all(uploaded[sha] == 1 for sha in hashes.values())
    archived_by = {d.root.name: d.log().count("archived ") for d in fleet.daemons}
    assert sum(archived_by.values()) == count, archived_by

    def hooks_run() -> list[str]:
        return done_log.read_text().split() if done_log.exists() else []

    wait_until(lambda: len(hooks_run()) >= count, 60, "every done hook")
    assert sorted(hooks_run()) == sorted(str(archive / name) for name in dropped)

    def events() -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for delivery in sandbox.get("hooks/webhooks"):
            assert delivery["signature_valid"], delivery
            event = delivery["event"]
            assert found.setdefault(event["id"], event) == event, "two events with one id"
        return found

    wait_until(lambda: len(events()) >= count, 60, "every done event")
    by_path = Counter(e["path"] for e in events().values())
    assert by_path == Counter(str(path) for path in dropped.values()), "one event per file"
    for daemon in fleet.daemons:
        wait_until(
            lambda d=daemon: d.status()["webhooks"]["pending"] == 0, 30, "the outbox emptied"
        )
    print(f"archived by host: {archived_by}")


def test_pause_and_resume_are_announced_once_for_the_fleet(tmp_path, make_fleet, sandbox):
    """Pausing is the fleet's: a pause asked of one host and again of another is one
    `paused` event, and a resume asked of a third one `resumed`, not one per host."""
    secret = tmp_path / "secret"
    secret.write_text(credentials.WEBHOOK_SECRET + "\n")
    hook = {
        "url": f"{sandbox.url}/hooks/webhook",
        "events": ["paused", "resumed"],
        "secret_file": str(secret),
    }
    fleet = make_fleet(services=("ads",), extra={"webhook": [hook]}).start()
    first, second, third = fleet.daemons
    assert first.cli("pause", "ads").returncode == 0
    for daemon in fleet.daemons:
        wait_until(lambda d=daemon: d.status()["paused"] == ["ads"], 30, "paused everywhere")
    assert second.cli("pause", "ads").returncode == 0
    assert third.cli("resume", "ads").returncode == 0
    for daemon in fleet.daemons:
        wait_until(lambda d=daemon: d.status()["paused"] == [], 30, "resumed everywhere")

    def events() -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for delivery in sandbox.get("hooks/webhooks"):
            assert delivery["signature_valid"], delivery
            found.setdefault(delivery["event"]["id"], delivery["event"])
        return list(found.values())

    wait_until(lambda: len(events()) >= 2, 60, "the paused and resumed events")
    for daemon in fleet.daemons:
        wait_until(lambda d=daemon: d.status()["webhooks"]["pending"] == 0, 30, "outbox empty")
    assert [(e["event"], e["service"]) for e in events()] == [
        ("paused", "ads"),
        ("resumed", "ads"),
    ]
