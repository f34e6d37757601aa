"""Webhooks end to end: signed events for every done and failed file, a receiver that is down
for a while, and a kill -9 with deliveries pending; the sandbox's receiver checks every
signature itself and records what it got."""

from __future__ import annotations

import hashlib
import os
import re
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

from conftest import SandboxClient, base_config, wait_until
from harness import RunningDaemon, free_port, scrape

from syncd.sandbox import credentials

FILES = int(os.environ.get("SYNCD_TEST_WEBHOOK_FILES", "100"))
"""Done files in the first test (105 deliveries at the full size, the default)."""


def hooks_config(tmp_path: Path, sandbox: SandboxClient, **extra: Any) -> dict[str, Any]:
    secret = tmp_path / "webhook_secret"
    secret.write_text(credentials.WEBHOOK_SECRET + "\n")
    config = base_config(tmp_path, sandbox.url, **extra)
    config["services"]["bad"] = {
        **config["services"]["ads"],
        "bucket": credentials.TON_BUCKET_FORBIDDEN,
    }
    for name in ("ads", "bad"):
        (tmp_path / name).mkdir()
    config["watch"] = [{"path": str(tmp_path / n), "service": n} for n in ("ads", "bad")]
    config["webhook"] = [
        {
            "url": f"{sandbox.url}/hooks/webhook",
            "events": ["done", "failed"],
            "secret_file": str(secret),
        }
    ]
    return config


def received(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return list(sandbox.get("hooks/webhooks"))


def drop(folder: Path, count: int, tag: str) -> dict[str, str]:
    """`count` distinct small files; their sha256 by path."""
    hashes = {}
    for n in range(count):
        path = folder / f"{tag}-{n:03d}.bin"
        data = f"{tag} {n}\n".encode() * 50
        path.write_bytes(data)
        hashes[str(path)] = hashlib.sha256(data).hexdigest()
    return hashes


def by_id(deliveries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every distinct event by id; a duplicate must be the very same event."""
    events: dict[str, dict[str, Any]] = {}
    for delivery in deliveries:
        assert delivery["signature_valid"], delivery
        event = delivery["event"]
        assert events.setdefault(event["id"], event) == event, "two events with one id"
    return events


def wait_none_pending(daemon: RunningDaemon) -> None:
    """The outbox empty, nothing failing: a receiver has an event before its sender has
    the answer and deletes the row, so this is waited for, not read once."""
    nothing = {"pending": 0, "failing": []}
    wait_until(lambda: daemon.status()["webhooks"] == nothing, 30, "no delivery pending")


def test_every_done_and_failed_file_is_announced(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(hooks_config(tmp_path, sandbox)).start()
    done = drop(tmp_path / "ads", FILES, "ok")
    failed = drop(tmp_path / "bad", 5, "no")
    daemon.wait_counts(done=FILES, failed=5, timeout=300)
    wait_until(lambda: len(received(sandbox)) >= FILES + 5, 120, "every delivery")
    deliveries = received(sandbox)
    assert len(deliveries) == FILES + 5
    assert all(d["signature_valid"] for d in deliveries)
    assert all(d["content_type"] == "application/json" for d in deliveries)
    events = by_id(deliveries)
    assert len(events) == FILES + 5
    for event in events.values():
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["at"])
        assert event["type"] == "ton"
    done_events = {e["path"]: e for e in events.values() if e["event"] == "done"}
    failed_events = {e["path"]: e for e in events.values() if e["event"] == "failed"}
    assert set(done_events) == set(done) and set(failed_events) == set(failed)
    for path, event in done_events.items():
        assert event["service"] == "ads" and event["sha256"] == done[path]
        assert event["size"] == Path(path).stat().st_size
        assert event["result"]["location"].startswith("/1.1/ton/")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["result"]["expires"])
        assert "error" not in event
    for path, event in failed_events.items():
        assert event["service"] == "bad" and event["sha256"] == failed[path]
        assert "HTTP 403" in event["error"] and "result" not in event
    wait_none_pending(daemon)


def test_a_receiver_down_for_a_while_gets_everything_later(tmp_path, sandbox, make_daemon):
    port = free_port()
    config = hooks_config(tmp_path, sandbox)
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    daemon = make_daemon(config).start()
    sandbox.post("hooks/down", {"seconds": 10, "how": "503"})
    first = drop(tmp_path / "ads", 20, "first")
    daemon.wait_counts(done=20, timeout=120)
    # While it is down, the failing deliveries show in status and in the metrics.
    failing = wait_until(lambda: daemon.status()["webhooks"]["failing"], 30, "a failing delivery")
    assert "HTTP 503" in failing[0]["error"] and failing[0]["receiver"] == sandbox.url
    assert failing[0]["attempts"] >= 1 and failing[0]["event"] == "done"
    shown = daemon.cli("status")
    assert "webhook deliveries failing" in shown.stdout and "HTTP 503" in shown.stdout
    samples, _ = scrape(f"http://127.0.0.1:{port}/metrics")
    assert samples[("syncd_webhook_failing", ())] >= 1
    assert samples[("syncd_webhook_pending", ())] >= 1
    assert samples[("syncd_webhook_deliveries_total", (("outcome", "failed"),))] >= 1
    assert received(sandbox) == []

    # Up again: every event arrives; then down once more, refusing connections this time.
    events = wait_until(lambda: len(e := by_id(received(sandbox))) == 20 and e, 120, "20 events")
    sandbox.post("hooks/down", {"seconds": 5, "how": "refuse"})
    second = drop(tmp_path / "ads", 10, "second")
    daemon.wait_counts(done=30, timeout=120)
    events = wait_until(lambda: len(e := by_id(received(sandbox))) == 30 and e, 120, "30 events")
    assert {e["path"] for e in events.values()} == set(first) | set(second)
    assert len({(e["path"], e["event"]) for e in events.values()}) == 30, "one id per event"
    wait_none_pending(daemon)


def test_deliveries_pending_at_a_kill_are_made_after_the_restart(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(hooks_config(tmp_path, sandbox)).start()
    sandbox.post("hooks/down", {"seconds": 3600, "how": "refuse"})
    files = drop(tmp_path / "ads", 10, "kill")
    daemon.wait_counts(done=10, timeout=120)
    wait_until(lambda: daemon.status()["webhooks"]["pending"] == 10, 30, "10 pending")
    daemon.kill()
    sandbox.post("hooks/down", {"seconds": 0})
    daemon.start()
    events = wait_until(lambda: len(e := by_id(received(sandbox))) == 10 and e, 120, "10 events")
    assert {e["path"] for e in events.values()} == set(files)
    grouped: dict[str, list[str]] = defaultdict(list)
    for event in events.values():
        grouped[event["path"]].append(event["id"])
    assert all(len(ids) == 1 for ids in grouped.values())


def test_a_webhook_added_by_a_reload_starts_delivering(tmp_path, sandbox, make_daemon):
    config = hooks_config(tmp_path, sandbox)
    hooks = config.pop("webhook")
    daemon = make_daemon(config).start()
    drop(tmp_path / "ads", 1, "before")
    daemon.wait_counts(done=1)
    daemon.write_config({**config, "webhook": hooks})
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in daemon.log(), 30, "the reload")
    after = drop(tmp_path / "ads", 2, "after")
    daemon.wait_counts(done=3)
    events = wait_until(lambda: len(e := by_id(received(sandbox))) == 2 and e, 60, "2 events")
    assert {e["path"] for e in events.values()} == set(after), "only events after the reload"


def test_a_name_that_is_not_utf8_arrives_as_valid_utf8_json(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(hooks_config(tmp_path, sandbox)).start()
    (tmp_path / "ads" / "caf\udce9.bin").write_bytes(b"latin-1 name\n")  # b"caf\xe9.bin"
    daemon.wait_counts(done=1)
    [event] = wait_until(lambda: list(by_id(received(sandbox)).values()), 60, "the event")
    assert event["path"] == str(tmp_path / "ads" / "caf\\xe9.bin")
    event["path"].encode("utf-8")  # no lone surrogate, which strict JSON parsers refuse


def test_a_failure_naming_a_file_that_is_not_utf8_arrives_as_valid_utf8_json(
    tmp_path, sandbox, make_daemon
):
    """The error of a failed file may name it: its stray bytes come as `\\xNN` there too."""
    daemon = make_daemon(hooks_config(tmp_path, sandbox)).start()
    (tmp_path / "elsewhere.bin").write_bytes(b"two names\n")
    os.link(tmp_path / "elsewhere.bin", tmp_path / "ads" / "caf\udce9.bin")  # refused
    daemon.wait_counts(failed=1)
    [event] = wait_until(lambda: list(by_id(received(sandbox)).values()), 60, "the event")
    assert event["event"] == "failed" and "hard links" in event["error"]
    assert str(tmp_path / "ads" / "caf\\xe9.bin") in event["error"]
    event["error"].encode("utf-8")  # no lone surrogate, which strict JSON parsers refuse


def test_a_webhook_without_a_secret_is_delivered_unsigned(tmp_path, sandbox, make_daemon):
    """The contract signs with `secret_file` when it is given; a receiver that checks nothing
    is configured without one, and gets the same events with no signature header."""
    config = hooks_config(tmp_path, sandbox)
    config["webhook"] = [{"url": f"{sandbox.url}/hooks/webhook/unsigned", "events": ["done"]}]
    daemon = make_daemon(config).start()
    done = drop(tmp_path / "ads", 2, "plain")
    daemon.wait_counts(done=2)
    wait_until(lambda: len(received(sandbox)) >= 2, 60, "two deliveries")
    deliveries = received(sandbox)
    assert [d["signature"] for d in deliveries] == [None, None]
    assert {d["event"]["path"] for d in deliveries} == set(done)
    assert all(d["event"]["event"] == "done" for d in deliveries)


UNLOADABLE_URLLIB3 = '''\
"""urllib3 whose import is cut short, as one short of descriptors is, until a flag file
exists; then the real one, loaded in its place."""
import importlib
import os
import sys

if not os.path.exists(os.environ["SYNCD_TEST_URLLIB3_FLAG"]):
    raise OSError(24, "Too many open files")
shim = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != shim]
del sys.modules["urllib3"]
sys.modules["urllib3"] = importlib.import_module("urllib3")
'''


def test_a_sender_whose_http_client_cannot_load_yet_delivers_once_it_can(
    tmp_path, sandbox, make_daemon
):
    """The sender loads urllib3 at its start; cut short there (no descriptor to spare), it
    says so once and tries again, where its thread ended and no event was ever delivered."""
    shim = tmp_path / "shim"
    (shim / "urllib3").mkdir(parents=True)
    (shim / "urllib3" / "__init__.py").write_text(UNLOADABLE_URLLIB3)
    flag = tmp_path / "urllib3-loads"
    daemon = make_daemon(
        hooks_config(tmp_path, sandbox), PYTHONPATH=str(shim), SYNCD_TEST_URLLIB3_FLAG=str(flag)
    ).start()
    wait_until(lambda: "[Errno 24] Too many open files" in daemon.log(), 30, "the failed load")
    flag.touch()
    done = drop(tmp_path / "ads", 2, "ok")
    daemon.wait_counts(done=2)
    events = wait_until(lambda: len(e := by_id(received(sandbox))) == 2 and e, 60, "2 events")
    assert {e["path"] for e in events.values()} == set(done)
    assert daemon.log().count("webhooks wait: cannot load") == 1
    wait_none_pending(daemon)
