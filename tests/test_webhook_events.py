"""Service-level webhook events end to end: pause and resume, a used-up daily quota; each
received by the sandbox's receiver (which checks the signature itself), and only the events
a `[[webhook]]` lists. (`degraded` is in reliability/test_disk_full.py: it takes a full disk.)"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from conftest import SandboxClient, base_config, wait_until
from flowkit import make_file
from test_webhooks import by_id, received

from syncd.sandbox import credentials

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
FILE_FIELDS = {"path", "type", "sha256", "size", "result", "error"}


def webhook(tmp_path: Path, sandbox: SandboxClient, events: list[str]) -> list[dict[str, Any]]:
    """A config's `[[webhook]]`: the sandbox's receiver, for `events`."""
    secret = tmp_path / "webhook_secret"
    secret.write_text(credentials.WEBHOOK_SECRET + "\n")
    return [{"url": f"{sandbox.url}/hooks/webhook", "events": events, "secret_file": str(secret)}]


def events_config(
    tmp_path: Path, sandbox: SandboxClient, events: list[str], **services: Any
) -> dict[str, Any]:
    config = base_config(tmp_path, sandbox.url)
    config["services"]["ads"].update(services)
    (tmp_path / "ads").mkdir()
    config["watch"] = [{"path": str(tmp_path / "ads"), "service": "ads"}]
    config["webhook"] = webhook(tmp_path, sandbox, events)
    return config


def service_events(sandbox: SandboxClient) -> list[dict[str, Any]]:
    """Distinct events received (signatures valid), in the order they came."""
    return list(by_id(received(sandbox)).values())


def test_pause_and_resume_are_announced_with_valid_signatures(tmp_path, sandbox, make_daemon):
    config = events_config(tmp_path, sandbox, ["paused", "resumed", "done"])
    daemon = make_daemon(config).start()
    paused = daemon.cli("pause", "ads")
    assert paused.returncode == 0, paused.stderr
    assert daemon.cli("pause", "ads").returncode == 0, "pausing again is no new event"
    make_file(tmp_path / "ads" / "while-paused.bin", 2000, seed=1)
    daemon.wait_counts(held=1)
    resumed = daemon.cli("resume")
    assert resumed.returncode == 0, resumed.stderr
    daemon.wait_counts(done=1)
    events = wait_until(lambda: len(e := service_events(sandbox)) == 3 and e, 60, "3 events")
    assert [e["event"] for e in events] == ["paused", "resumed", "done"]
    for event in events[:2]:
        assert event["service"] == "ads" and re.fullmatch(RFC3339, event["at"])
        assert not FILE_FIELDS & set(event), event
    assert events[2]["path"].endswith("while-paused.bin")
    assert all(d["signature_valid"] for d in received(sandbox))
    wait_until(lambda: daemon.status()["webhooks"]["pending"] == 0, 30, "nothing pending")


def test_a_used_up_quota_is_announced_once_and_unlisted_events_are_not_sent(
    tmp_path, sandbox, make_daemon
):
    quota = 3
    config = events_config(tmp_path, sandbox, ["quota_exhausted"], daily_files=quota)
    daemon = make_daemon(config).start()
    for n in range(quota + 3):
        make_file(tmp_path / "ads" / f"f{n}.bin", 1000, seed=n)
    daemon.wait_counts(done=quota, held=3)
    [event] = wait_until(lambda: service_events(sandbox), 60, "the quota_exhausted event")
    assert event["event"] == "quota_exhausted" and event["service"] == "ads"
    assert "daily_files = 3 used up" in event["reason"]
    assert re.fullmatch(RFC3339, event["until"]) and not FILE_FIELDS & set(event)
    daemon.stop()  # a restart meets the same hold: still one event for the day
    daemon.start()
    daemon.wait_scan()
    daemon.wait_counts(done=quota, held=3)
    wait_until(lambda: daemon.status()["webhooks"]["pending"] == 0, 30, "nothing pending")
    assert len(received(sandbox)) == 1, "done is not listed, and the quota is announced once"


def test_a_failing_service_event_shows_in_status_by_its_service(tmp_path, sandbox, make_daemon):
    config = events_config(tmp_path, sandbox, ["paused"])
    daemon = make_daemon(config).start()
    sandbox.post("hooks/down", {"seconds": 30, "how": "503"})
    assert daemon.cli("pause", "ads").returncode == 0
    failing = wait_until(lambda: daemon.status()["webhooks"]["failing"], 30, "a failing delivery")
    assert failing[0]["event"] == "paused" and failing[0]["service"] == "ads"
    assert failing[0]["path"] == "" and failing[0]["component"] is None
    shown = daemon.cli("status").stdout
    assert f"{sandbox.url} paused of ads (attempt " in shown, shown
