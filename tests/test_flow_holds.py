"""Holds end to end: daily quotas, a service-wide 429, pause and resume.

The daemon's clock is moved with its knob (flowkit.ClockKnob) to cross a quota reset or a
rate-limit horizon at once: the 429 waits 60 s on the daemon's clock, not in the test.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from datetime import timedelta

from conftest import base_config, read_sidecar, sidecar_exists, wait_until
from flowkit import ClockKnob, MiB, make_file
from harness import free_port, scrape
from test_flow_bandwidth import two_services

from syncd.control.status import ask
from syncd.sandbox import credentials


def test_daily_files_quota_holds_the_rest_until_the_reset(tmp_path, sandbox, make_daemon):
    knob = ClockKnob(tmp_path)
    today = knob.set_utc(23, 59)
    config = base_config(tmp_path, sandbox.url, workers=2)
    config["services"]["ads"].update(daily_files=10, quota_reset="00:00")
    drop = tmp_path / "drop"
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    files = [make_file(drop / f"f{n:02}.txt", 1000, seed=n) for n in range(25)]
    daemon = make_daemon(config, **knob.env).start()
    daemon.wait_counts(done=10, held=15)
    midnight = (today + timedelta(days=1)).replace(hour=0, minute=0)
    held = daemon.status()["held"]
    assert len(held) == 15
    assert {h["until"] for h in held} == {midnight.strftime("%Y-%m-%dT%H:%M:%SZ")}
    assert all("daily_files" in h["reason"] for h in held), held
    assert len(sandbox.ton_objects()) == 10
    shown = daemon.cli("status").stdout
    assert (
        "15 held" in shown
        and f"f24.txt (ads): quota: daily_files = 10 used up, until {midnight:%Y-%m-%dT%H:%M:%SZ}"
        in shown
    ), shown

    # The count and the hold survive a restart: no request, still 15 held.
    daemon.stop()
    requests_before = len(sandbox.requests())
    daemon.start()
    daemon.wait_scan()
    assert daemon.wait_counts(done=10, held=15)["failed"] == 0
    assert len(sandbox.requests()) == requests_before

    knob.advance(120)  # 00:01 the next day: ten more
    daemon.wait_counts(done=20, held=5)
    knob.advance(86400)  # and the day after, the last five
    daemon.wait_counts(done=25, held=0)
    assert all(sidecar_exists(f) for f in files)
    assert len(sandbox.ton_objects()) == 25


def test_429_with_rate_limit_reset_holds_the_whole_service(tmp_path, sandbox, make_daemon):
    knob = ClockKnob(tmp_path)
    config = two_services(tmp_path, sandbox.url)
    # One ads upload at a time: none can be under way beside the one the 429 answers.
    config["services"]["ads"]["max_parallel"] = 1
    limited = f"/1.1/ton/bucket/{credentials.TON_BUCKET_TA_PARTNER}"
    sandbox.fault(method="POST", path=limited, status=429, retry_after=60, count=1)
    for n in range(5):
        make_file(tmp_path / "ads" / f"a{n}.bin", 1000, seed=n)
        make_file(tmp_path / "ads2" / f"b{n}.bin", 1000, seed=10 + n)
    daemon = make_daemon(config, **knob.env).start()
    daemon.wait_counts(done=5, held=5)
    reply = daemon.status()
    assert {h["service"] for h in reply["held"]} == {"ads"}
    assert all("429" in h["reason"] for h in reply["held"])
    [hold] = reply["service_holds"]
    assert hold["service"] == "ads"
    ads_requests = [r for r in sandbox.requests() if r["path"].startswith(limited)]
    assert [r["status"] for r in ads_requests] == [429], "one request, then the service waits"

    # Nothing more goes to ads while its clock is short of the reset, whatever comes in.
    make_file(tmp_path / "ads" / "late.bin", 1000, seed=99)
    daemon.wait_counts(done=5, held=6)
    assert len([r for r in sandbox.requests() if r["path"].startswith(limited)]) == 1
    knob.advance(61)
    daemon.wait_counts(done=11, held=0)
    first_after = min(
        r["started"]
        for r in sandbox.requests()
        if r["path"].startswith(limited) and r["status"] == 201
    )
    assert first_after >= ads_requests[0]["finished"]


def test_pause_stops_a_resumable_upload_at_a_chunk_boundary_and_resume_continues(
    tmp_path, sandbox, make_daemon
):
    """200 MiB in 8 MiB chunks at 40 MiB/s: pause after a few chunks, restart, resume."""
    config = base_config(tmp_path, sandbox.url, bandwidth="40MiB")
    config["services"]["ads"].update(chunk_size="8MiB")
    config["metrics"] = {"listen": f"127.0.0.1:{free_port()}"}
    drop = tmp_path / "drop"
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    path = make_file(drop / "film.mov", 200 * MiB, seed=3)
    daemon = make_daemon(config).start()

    def confirmed() -> int:
        sessions = sandbox.ton_sessions()
        return int(sessions[0]["received"]) if sessions else 0

    wait_until(lambda: confirmed() >= 24 * MiB, 60, "three chunks confirmed")
    # Through the socket (the CLI's start-up could outlast the upload on a loaded machine).
    assert ask(daemon.socket, {"command": "pause", "services": ["ads"]}) == {"paused": ["ads"]}
    paused_at = time.time()
    daemon.wait_counts(held=1, uploading=0)
    reply = daemon.status()
    assert reply["paused"] == ["ads"]
    assert "paused (syncd resume): ads" in daemon.cli("status").stdout
    port = daemon.config["metrics"]["listen"].rsplit(":", 1)[1]
    samples, _ = scrape(f"http://127.0.0.1:{port}/metrics")
    assert samples[("syncd_paused", (("service", "ads"),))] == 1
    unknown = daemon.cli("pause", "nosuch")
    assert unknown.returncode == 2 and "no such service: nosuch" in unknown.stderr
    assert reply["held"][0]["path"] == str(path) and reply["held"][0]["reason"] == "paused"

    def chunks() -> list[dict]:
        return [r for r in sandbox.requests() if r["method"] == "PUT" and r["content_range"]]

    late = [r for r in chunks() if r["started"] > paused_at]
    assert len(late) <= 1, "only the chunk under way when the pause came may start after it"
    stopped_at = len(chunks())

    daemon.stop()
    daemon.start()
    daemon.wait_scan()
    assert daemon.status()["paused"] == ["ads"]
    assert daemon.wait_counts(held=1)["done"] == 0
    assert len(chunks()) == stopped_at, "no request while paused, across a restart"

    resumed = daemon.cli("resume")
    assert resumed.returncode == 0 and "nothing is paused" in resumed.stdout, resumed.stderr
    daemon.wait_counts(done=1, timeout=120)
    inits = [r for r in sandbox.requests() if r["method"] == "POST"]
    assert len(inits) == 1, "resume continued the session it had, no new one"
    starts = [
        int(r["content_range"].split()[1].split("-")[0])
        for r in chunks()
        if "*" not in r["content_range"]
    ]
    assert starts == sorted(set(starts)), "no byte sent twice: one session, continued"
    side = read_sidecar(path)
    [stored] = sandbox.ton_objects()
    assert stored["sha256"] == side["sha256"] and side["size"] == 200 * MiB


def test_daily_bytes_quota_holds_what_does_not_fit_and_fails_what_never_can(
    tmp_path, sandbox, make_daemon
):
    config = base_config(tmp_path, sandbox.url, workers=1)
    # A files quota beside it that is far from used up: the hold names the bytes.
    config["services"]["ads"].update(daily_bytes="5000", daily_files=100)
    port = free_port()
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    drop = tmp_path / "drop"
    # Largest first: the file no day can take fails before the quota holds the service.
    config["watch"] = [{"path": str(drop), "service": "ads", "order": "largest"}]
    for n in range(3):
        make_file(drop / f"f{n}.bin", 2000, seed=n)
    huge = make_file(drop / "huge.bin", 6000, seed=9)
    daemon = make_daemon(config).start()
    daemon.wait_counts(done=2, held=1, failed=1)
    reply = daemon.status()
    [failure] = reply["failures"]
    assert failure["path"] == str(huge) and "larger than the daily_bytes quota" in failure["error"]
    assert "daily_bytes = 5000 used up" in reply["held"][0]["reason"]
    assert reply["quota_remaining"] == {"ads": {"files": 98, "bytes": 1000}}
    samples, _ = scrape(f"http://127.0.0.1:{port}/metrics")
    assert samples[("syncd_quota_remaining", (("service", "ads"), ("unit", "bytes")))] == 1000
    assert samples[("syncd_paused", (("service", "ads"),))] == 0
    uploads = (("outcome", "failed"), ("service", "ads"))
    assert samples[("syncd_uploads_total", uploads)] == 1  # the huge file counts as failed
    assert len(sandbox.ton_objects()) == 2


def test_held_files_show_the_hold_in_force_once_another_ends(tmp_path, sandbox, make_daemon):
    """A pause ended under a used-up quota leaves its files held by the quota, and a quota
    day ended under a pause leaves them held by the pause: status never names a hold that
    is over."""
    knob = ClockKnob(tmp_path)
    today = knob.set_utc(12, 0)
    config = base_config(tmp_path, sandbox.url)
    config["services"]["ads"].update(daily_files=1, quota_reset="00:00")
    drop = tmp_path / "drop"
    drop.mkdir()
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    daemon = make_daemon(config, **knob.env).start()
    make_file(drop / "a.txt", 100, seed=1)
    make_file(drop / "b.txt", 100, seed=2)
    daemon.wait_counts(done=1, held=1)
    assert daemon.cli("pause").returncode == 0
    make_file(drop / "c.txt", 100, seed=3)
    daemon.wait_counts(done=1, held=2)

    def held_by(reason: str, until: str | None) -> Callable[[], object]:
        def probe() -> object:
            held = daemon.status()["held"]
            return all((h["reason"], h["until"]) == (reason, until) for h in held) and held

        return probe

    assert daemon.cli("resume").returncode == 0
    midnight = (today + timedelta(days=1)).replace(hour=0, minute=0)
    quota = ("quota: daily_files = 1 used up", f"{midnight:%Y-%m-%dT%H:%M:%SZ}")
    wait_until(held_by(*quota), 30, "both held by the quota once the pause ended")
    assert daemon.cli("pause").returncode == 0
    knob.advance(13 * 3600)  # the next quota day, still paused
    wait_until(held_by("paused", None), 30, "both held by the pause once the quota day ended")
    assert len(sandbox.ton_objects()) == 1
    assert daemon.cli("resume").returncode == 0
    daemon.wait_counts(done=2, held=1)


def test_a_changed_quota_releases_what_now_fits(tmp_path, sandbox, make_daemon):
    """A quota's hold is the daemon's own sum, so a reload or a restart does it again: a
    raised or removed quota lets held files go at once, and a still-full one holds the rest
    under its new limit."""
    config = base_config(tmp_path, sandbox.url)
    config["services"]["ads"].update(daily_files=1)
    drop = tmp_path / "drop"
    drop.mkdir()
    config["watch"] = [{"path": str(drop), "service": "ads"}]
    daemon = make_daemon(config).start()
    for n in range(4):
        make_file(drop / f"f{n}.txt", 100, seed=n)
    daemon.wait_counts(done=1, held=3)
    config["services"]["ads"].update(daily_files=2)
    daemon.write_config(config)
    daemon.signal(signal.SIGHUP)
    daemon.wait_counts(done=2, held=2)
    assert {h["reason"] for h in daemon.status()["held"]} == {"quota: daily_files = 2 used up"}
    daemon.stop()
    del config["services"]["ads"]["daily_files"]
    daemon.write_config(config)
    daemon.start()
    daemon.wait_counts(done=4, held=0)
    assert daemon.status()["service_holds"] == []
