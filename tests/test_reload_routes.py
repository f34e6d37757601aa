"""Reloads that are briefly wrong cost no file for good: a file a reload (or a restart) leaves
without a route waits, held with the reason, and goes on from where it was once a reload or
a restart routes it again; a reload of a file with no [[watch]] at all (an editor's truncate
before its write) is refused, the running watches kept."""

from __future__ import annotations

import copy
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import SandboxClient, read_sidecar, sidecar_exists, wait_until
from harness import RunningDaemon
from test_oneall import waiting_video
from test_pipeline_e2e import drop, ton_config
from test_ton_resumable import only_session, small_chunks, write_random

from syncd.services.oneall.signer import CALLBACK, Signer

MiB = 1024 * 1024
TOTAL = 4 * MiB
CHUNK = 128 * 1024


def reload(daemon: RunningDaemon, config: dict[str, Any] | str) -> None:
    """Write `config` (a dict, or the file's raw text) and SIGHUP; wait for the outcome."""
    done = daemon.log().count("configuration reloaded") + daemon.log().count("reload refused")
    if isinstance(config, str):
        daemon.config_path.write_text(config)
    else:
        daemon.write_config(config)
    daemon.signal(signal.SIGHUP)

    def answered() -> bool:
        log = daemon.log()
        return log.count("configuration reloaded") + log.count("reload refused") > done

    wait_until(answered, 20, "the reload")


def without_drop_watch(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The config with the drop folder's [[watch]] gone (another watch stays)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    edited = copy.deepcopy(config)
    edited["watch"] = [{"path": str(elsewhere), "service": "ads"}]
    return edited


def out_of_work(daemon: RunningDaemon) -> dict[str, Any] | None:
    """The status once no file is queued or in flight (whatever became of them)."""
    reply = daemon.poll_status()
    if reply is None or reply["uploads"]:
        return None
    busy = ("seen", "hashed", "uploading", "retry_wait")
    return None if any(reply["counts"][state] for state in busy) else reply


UNROUTED = "no [[watch]] routes it"


def assert_held(reply: dict[str, Any], path: Path, reason: str = UNROUTED) -> None:
    """`syncd status` showed the file waiting, and why."""
    assert [(h["path"], h["until"]) for h in reply["held"]] == [(str(path), None)]
    assert reason in reply["held"][0]["reason"]


def renamed_service(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The config with the service renamed, its [[watch]] following: the old name's files
    have no service (one pass of a two-pass rename)."""
    edited = copy.deepcopy(config)
    edited["services"]["ads-renamed"] = edited["services"].pop("ads")
    for watch in edited["watch"]:
        watch["service"] = "ads-renamed"
    return edited


def without_watch_or_service(config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    """The drop folder's [[watch]] and its service both gone."""
    return renamed_service(without_drop_watch(config, tmp_path), tmp_path)


@dataclass
class UnderWay:
    """A 4 MiB TON upload partway through, slowly, beside a file a 4xx failed for good."""

    config: dict[str, Any]
    daemon: RunningDaemon
    path: Path
    digest: str
    refused: Path


def upload_under_way(tmp_path: Path, sandbox: SandboxClient, make_daemon: Any) -> UnderWay:
    config = small_chunks(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    refused = tmp_path / "drop" / "refused.txt"
    sandbox.fault(method="POST", path="/1.1/ton/", status=400, count=1)
    drop(refused, b"refused by the service")
    daemon.wait_counts(failed=1)
    sandbox.clear_faults()
    sandbox.fault(method="PUT", path="/1.1/ton/", delay_ms=100, count=10_000)
    path = tmp_path / "drop" / "big.bin"
    digest = write_random(path, TOTAL, 11)
    wait_until(
        lambda: any(s["received"] >= TOTAL // 4 for s in sandbox.ton_sessions()),
        60,
        "a quarter of the file at the server",
    )
    return UnderWay(config, daemon, path, digest, refused)


def assert_resumed(sandbox: SandboxClient, upload: UnderWay, resent: int) -> None:
    """Done in its one session, at most `resent` bytes sent twice, one sidecar; the file
    the 4xx failed is failed still."""
    upload.daemon.wait_counts(done=1, failed=1, held=0)
    session = only_session(sandbox)
    assert session["complete"] and session["received"] == TOTAL
    assert session["bytes_received"] - TOTAL <= resent
    assert read_sidecar(upload.path)["sha256"] == upload.digest
    assert sorted(p.name for p in upload.path.parent.iterdir()) == [
        "big.bin",
        "big.bin.syncd.toml",
        "refused.txt",
    ]
    reply = upload.daemon.status()
    assert [f["path"] for f in reply["failures"]] == [str(upload.refused)]


@pytest.mark.parametrize(
    ("edit", "reason"),
    # A service renamed while its file was held by the pause: the pause's end cannot
    # release it (no such service then); the reload that brings the service back does.
    [(without_drop_watch, UNROUTED), (renamed_service, "paused")],
)
def test_a_reload_that_drops_a_route_holds_the_upload_until_one_routes_it_again(
    tmp_path, sandbox, make_daemon, edit, reason
):
    upload = upload_under_way(tmp_path, sandbox, make_daemon)
    daemon = upload.daemon
    # Out of flight between two chunks (a pause), then its route is gone, then the pause
    # ends: it waits, held with the reason, and sends nothing.
    assert daemon.cli("pause").returncode == 0
    daemon.wait_counts(held=1, failed=1)
    reload(daemon, edit(upload.config, tmp_path))
    assert daemon.cli("resume").returncode == 0
    unrouted = wait_until(lambda: out_of_work(daemon), 30, "the file out of the workers' hands")
    assert 0 < only_session(sandbox)["bytes_received"] < TOTAL
    reload(daemon, upload.config)
    assert_resumed(sandbox, upload, resent=0)  # no confirmed byte sent twice
    assert_held(unrouted, upload.path, reason)


@pytest.mark.parametrize("edit", [without_watch_or_service, renamed_service])
def test_a_restart_without_the_route_holds_the_upload_and_one_with_it_resumes(
    tmp_path, sandbox, make_daemon, edit
):
    """The start-up path: kill -9 mid-upload, started again without its route (held, not
    forgotten nor failed), then restarted with it back (resumed, same session)."""
    upload = upload_under_way(tmp_path, sandbox, make_daemon)
    daemon = upload.daemon
    daemon.kill()
    sandbox.clear_faults()
    daemon.write_config(edit(upload.config, tmp_path))
    daemon.start()
    unrouted = wait_until(lambda: out_of_work(daemon), 30, "the file out of the workers' hands")
    daemon.stop()
    daemon.write_config(upload.config)
    daemon.start()
    assert_resumed(sandbox, upload, resent=CHUNK)  # at most the chunk the kill cut
    assert_held(unrouted, upload.path)


def test_a_reload_of_an_empty_file_is_refused_and_the_watches_go_on(tmp_path, sandbox, make_daemon):
    config = ton_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    daemon.wait_scan()
    for truncated in ("", "  \n# being rewritten\n"):
        reload(daemon, truncated)
    refusals = [line for line in daemon.log().splitlines() if "reload refused" in line]
    assert len(refusals) == 2, refusals
    for line in refusals:
        assert (
            f"{daemon.config_path}: [[watch]]: none at all, while the running configuration has 1"
            in line
        )
    assert "configuration reloaded" not in daemon.log()
    path = drop(tmp_path / "drop" / "after.txt", b"dropped after the truncated reloads")
    daemon.wait_counts(done=1)
    assert sidecar_exists(path)
    assert daemon.status()["watches"] == [{"path": str(tmp_path / "drop"), "service": "ads"}]
    reload(daemon, config)  # the whole file again: taken as usual
    assert "configuration reloaded" in daemon.log()


@pytest.mark.parametrize("first_part", ["empty", "one watch"])
def test_a_reload_met_by_a_file_still_being_written_reads_it_again(
    tmp_path, sandbox, make_daemon, first_part
):
    """A config tool that truncates the file, signals (SIGHUP), and only then writes the
    rest: the reload reads the file again while it is still changing, and takes the whole
    file. What it met first is neither refused for good (empty) nor taken in place of the
    rest (a first part that parses: the first [[watch]] alone)."""
    config = ton_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    daemon.wait_scan()
    (tmp_path / "more").mkdir()
    edited = copy.deepcopy(config)
    edited["watch"].append({"path": str(tmp_path / "more"), "service": "ads"})
    if first_part == "empty":
        daemon.config_path.write_text("")
    else:
        daemon.write_config(config)
    daemon.signal(signal.SIGHUP)
    time.sleep(0.5)  # the slow writer: the reload meets the first part alone
    daemon.write_config(edited)
    wait_until(
        lambda: "configuration reloaded" in daemon.log() or "reload refused" in daemon.log(),
        20,
        "the reload",
    )
    assert "reload refused" not in daemon.log()
    watched = {w["path"] for w in daemon.status()["watches"]}
    assert watched == {str(tmp_path / "drop"), str(tmp_path / "more")}, watched


def test_a_callback_that_comes_while_a_reload_left_its_video_unrouted_is_kept(
    tmp_path, sandbox, make_daemon
):
    """A OneAll video waits for its callback; a reload takes its [[watch]] and service away;
    the callback comes: it is kept (not failed), and the reload that routes the video again
    writes its sidecar."""
    daemon, config, clip = waiting_video(tmp_path, sandbox, make_daemon, 20_000)
    edited = copy.deepcopy(config)
    del edited["services"]["social"]
    edited["watch"] = [{"path": str(tmp_path / "social" / "elsewhere"), "service": "ads"}]
    (tmp_path / "social" / "elsewhere").mkdir()
    reload(daemon, edited)
    signer = Signer((tmp_path / "state" / "media.key").read_bytes(), "unused")
    url = config["media_server"]["public_url"]
    url += f"/{CALLBACK}/{signer.token(CALLBACK, 1, 1, time.time() + 60)}"
    envelope = {"response": {"result": {"data": {"video_id": "424242"}}}}
    assert requests.post(url, json=envelope, timeout=10).status_code == 200
    counts = daemon.status()["counts"]
    assert (counts["failed"], counts["awaiting_callback"]) == (0, 1)
    assert "its callback is kept" in daemon.log()
    assert not sidecar_exists(clip)
    reload(daemon, config)
    daemon.wait_counts(done=1, awaiting_callback=0)
    assert read_sidecar(clip)["result"]["video_id"] == "424242"
