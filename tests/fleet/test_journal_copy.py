"""`syncd journal copy` end to end: a host leaves work pending in its SQLite journal (a paused
service holding a file, a file in the trash, a hook cut short, webhook deliveries to a
receiver that is down, a OneAll video awaiting its callback), stops, copies its journal into
PostgreSQL and starts in fleet mode on the same folders: it goes on as after a restart."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from collections import Counter
from typing import Any

from harness import RunningDaemon, base_config, sidecar_of, wait_until
from journal.test_store import hashed
from sandbox.samples import video
from test_oneall import oneall_config

from syncd.journal.sqlite import SqliteStore
from syncd.journal.states import State
from syncd.journal.store import Decision
from syncd.sandbox import credentials
from syncd.services.oneall.signer import KEY_FILE

BLOCK_ONCE = """
import os, sys, time
path, marker, record = os.environ["SYNCD_PATH"], sys.argv[1], sys.argv[2]
if not os.path.exists(marker):
    with open(marker, "w") as out:
        out.write(str(os.getpid()))
    time.sleep(600)
with open(record, "a") as out:
    out.write(path + "\\n")
"""
"""An on_done hook that hangs on its first run (the stop kills it, and it stays queued) and
records its file on the next."""


def joined(config: dict[str, Any], cluster: Any, url: str) -> dict[str, Any]:
    return {**config, "journal": {"url": url, "password_file": str(cluster.password_file)}}


def copy_into(daemon: RunningDaemon, cluster: Any, url: str) -> tuple[str, str]:
    copied = RunningDaemon(
        daemon.root, daemon.config, {**os.environ, "PGPASSWORD": cluster.password}
    ).cli("journal", "copy", "--to", url)
    assert copied.returncode == 0, copied.stderr
    return copied.stdout, copied.stderr


def test_a_host_joining_a_fleet_keeps_its_pending_work(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    secret = tmp_path / "webhook_secret"
    secret.write_text(credentials.WEBHOOK_SECRET + "\n")
    script, marker, record = tmp_path / "hook.py", tmp_path / "marker", tmp_path / "record"
    script.write_text(BLOCK_ONCE)
    for folder in ("drop", "later", "arch"):
        (tmp_path / folder).mkdir()
    archive = tmp_path / "archive"
    blocker = archive / "sub"
    archive.mkdir()
    blocker.write_bytes(b"a file where the archive needs a folder: the move waits")
    config = base_config(tmp_path, sandbox.url)
    config["services"]["later"] = dict(config["services"]["ads"])
    config["watch"] = [
        {
            "path": str(tmp_path / "drop"),
            "service": "ads",
            "after_upload": "delete",
            "trash_retention": "1h",
            "on_done": [sys.executable, str(script), str(marker), str(record)],
        },
        {"path": str(tmp_path / "later"), "service": "later"},
        {
            "path": str(tmp_path / "arch"),
            "service": "ads",
            "after_upload": "archive",
            "archive_to": str(archive),
        },
    ]
    config["webhook"] = [
        {"url": f"{sandbox.url}/hooks/webhook", "events": ["done"], "secret_file": str(secret)}
    ]
    sandbox.post("hooks/down", {"seconds": 3600, "how": "refuse"})
    host = make_daemon(config).start()
    assert host.cli("pause", "later").returncode == 0
    trashed = tmp_path / "drop" / "trashed.bin"
    trashed.write_bytes(b"uploaded, then deleted into the trash")
    held = tmp_path / "later" / "held.bin"
    held.write_bytes(b"held by the pause")
    moving = tmp_path / "arch" / "sub" / "moving.bin"
    moving.parent.mkdir()
    moving.write_bytes(b"to be archived")
    host.wait_counts(done=2, held=1)
    wait_until(marker.exists, 30, "the done hook running (and hanging)")
    wait_until(lambda: host.status()["action_errors"], 30, "the archive waiting")
    wait_until(lambda: host.status()["webhooks"]["pending"] == 2, 30, "deliveries pending")
    assert host.stop() == 0
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        pending = dict(db.execute("SELECT CAST(path AS TEXT), event_id FROM outbox").fetchall())
    blocker.unlink()

    out, err = copy_into(host, postgres_cluster, postgres_url)
    assert out.startswith("copied 3 files from "), out
    assert "carried: 2 after-upload actions, 1 hooks, 2 webhook deliveries" in out
    assert "flow control values" in out and err == ""

    sandbox.post("hooks/down", {"seconds": 0})
    fleet = make_daemon(joined(config, postgres_cluster, postgres_url)).start()
    status = fleet.status()
    assert status["paused"] == ["later"], "the pause holds"
    assert status["counts"]["held"] == 1 and status["counts"]["done"] == 2
    wait_until(lambda: record.exists(), 30, "the queued hook run")
    wait_until(lambda: (archive / "sub" / "moving.bin").exists(), 30, "the archive done")
    assert not moving.exists() and fleet.status()["pending_actions"] == 0
    delivered = wait_until(
        lambda: len(d := sandbox.get("hooks/webhooks")) == 2 and d, 30, "the deliveries made"
    )
    assert {d["event"]["path"]: d["event"]["id"] for d in delivered} == pending, "same events"
    restored = fleet.cli("restore", str(trashed))
    assert restored.returncode == 0, restored.stderr
    assert trashed.read_bytes() == b"uploaded, then deleted into the trash"
    assert fleet.cli("resume", "later").returncode == 0
    fleet.wait_counts(done=3, held=0)
    uploads = Counter(o["sha256"] for o in sandbox.ton_objects())
    assert sorted(uploads.values()) == [1, 1, 1], "each file uploaded once"
    assert len(record.read_text().splitlines()) == 1, "the hook ran once after the copy"
    deliveries = wait_until(
        lambda: len(d := sandbox.get("hooks/webhooks")) == 3 and d, 30, "the third delivery"
    )
    paths = sorted(d["event"]["path"] for d in deliveries)
    assert paths == sorted(map(str, [held, trashed, moving])), "one delivery each, none twice"
    assert fleet.stop() == 0


def test_a_video_awaiting_its_callback_completes_in_the_fleet(
    tmp_path, sandbox, make_daemon, postgres_cluster, postgres_url
):
    sandbox.post("settings", {"oneall": {"callback_delay": 4.0, "callback_retry": True}})
    config = oneall_config(tmp_path, sandbox)
    host = make_daemon(config).start()
    clip = tmp_path / "social" / "clip.mp4"
    clip.write_bytes(video("mp4", 100_000))
    host.wait_counts(awaiting_callback=1)
    assert host.stop() == 0
    out, err = copy_into(host, postgres_cluster, postgres_url)
    assert out.startswith("copied 1 files from ") and err == ""
    fleet = make_daemon(joined(config, postgres_cluster, postgres_url)).start()
    fleet.wait_counts(done=1, awaiting_callback=0)
    [pushed] = sandbox.get("oneall/videos")
    assert pushed["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    result = sidecar_of(clip).read_text()
    assert pushed["video_id"] in result, "the callback's video, pushed once"
    assert fleet.stop() == 0


def test_a_video_whose_callback_cannot_reach_it_in_the_fleet_fails_saying_why(
    tmp_path, postgres_cluster, postgres_url
):
    """The fleet has a media key of its own: the URL the host gave OneAll will not verify."""
    from syncd.journal.postgres import PostgresStore

    (tmp_path / "state").mkdir()
    (tmp_path / "state" / KEY_FILE).write_bytes(b"h" * 32)
    host = SqliteStore(tmp_path / "state" / "journal.sqlite")
    waiting = hashed(host, os.fsencode(tmp_path / "drop" / "clip.mp4"))
    decision = host.begin_upload(waiting, lambda result: True)
    assert decision is not None and decision[0] is Decision.UPLOAD
    assert host.mark_awaiting(decision[1], 10.0**10)
    host.close()
    fleet = PostgresStore(postgres_url, postgres_cluster.password, "other", 30.0)
    try:
        assert fleet.shared_key(KEY_FILE, lambda: b"f" * 32) == b"f" * 32
        config = base_config(tmp_path, "http://127.0.0.1:9", [{"path": str(tmp_path / "drop")}])
        (tmp_path / "drop").mkdir()
        out, err = copy_into(RunningDaemon(tmp_path, config, {}), postgres_cluster, postgres_url)
        assert out.startswith("copied 1 files")
        reason = (
            "ads: OneAll's callback cannot reach it after `syncd journal copy` (the fleet's"
            " media key is another); `syncd retry` pushes it again"
        )
        assert err == f"syncd: warning: {tmp_path / 'drop' / 'clip.mp4'}: failed: {reason}\n"
        [failed] = fleet.in_state(State.FAILED)
        assert failed.error == reason
    finally:
        fleet.close()
