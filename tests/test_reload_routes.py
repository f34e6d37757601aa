"""Reloads that are briefly wrong cost no file for good: a file a reload (or a restart) leaves
without a route waits, held with the reason, and goes on from where it was once a reload or
a restart routes it again; a reload of a file with no [[watch]] at all (an editor's truncate
before its write) is refused, the running watches kept."""

from __future__ import annotations

import copy
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxClient, read_sidecar, sidecar_exists, wait_until
from harness import RunningDaemon
from test_pipeline_e2e import drop, ton_config
from test_ton_resumable import only_session, small_chunks, write_random

MiB = 1024 * 1024
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


def refuse_one_upload(sandbox: SandboxClient, daemon: RunningDaemon, path: Path) -> None:
    """`path` failed for good by a 4xx: it must stay failed whatever the reloads."""
    sandbox.fault(method="POST", path="/1.1/ton/", status=400, count=1)
    drop(path, b"refused by the service")
    daemon.wait_counts(failed=1)
    sandbox.clear_faults()


def still_failed(daemon: RunningDaemon, path: Path) -> None:
    reply = daemon.status()
    assert reply["counts"]["failed"] == 1
    assert [f["path"] for f in reply["failures"]] == [str(path)]
    assert not sidecar_exists(path)


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


@pytest.mark.parametrize(
    ("edit", "reason"),
    # A service renamed while its file was held by the pause: the pause's end cannot
    # release it (no such service then); the reload that brings the service back does.
    [(without_drop_watch, UNROUTED), (renamed_service, "paused")],
)
def test_a_reload_that_drops_a_route_holds_the_upload_until_one_routes_it_again(
    tmp_path, sandbox, make_daemon, edit, reason
):
    config = small_chunks(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    refused = tmp_path / "drop" / "refused.txt"
    refuse_one_upload(sandbox, daemon, refused)
    sandbox.fault(method="PUT", path="/1.1/ton/", delay_ms=100, count=10_000)
    path = tmp_path / "drop" / "big.bin"
    total = 4 * MiB
    digest = write_random(path, total, 11)
    wait_until(
        lambda: any(s["received"] >= total // 4 for s in sandbox.ton_sessions()),
        60,
        "a quarter of the file at the server",
    )
    # Out of flight between two chunks (a pause), then its route is gone, then the pause
    # ends: it waits, held with the reason, and sends nothing.
    assert daemon.cli("pause").returncode == 0
    daemon.wait_counts(held=1, failed=1)
    reload(daemon, edit(config, tmp_path))
    assert daemon.cli("resume").returncode == 0
    unrouted = wait_until(lambda: out_of_work(daemon), 30, "the file out of the workers' hands")
    received = only_session(sandbox)["bytes_received"]
    assert 0 < received < total
    reload(daemon, config)
    daemon.wait_counts(done=1, failed=1, held=0)
    session = only_session(sandbox)
    assert session["complete"] and session["received"] == total
    assert session["bytes_received"] == total, "no confirmed byte was sent twice"
    assert read_sidecar(path)["sha256"] == digest
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "big.bin",
        "big.bin.syncd.toml",
        "refused.txt",
    ]
    still_failed(daemon, refused)
    assert_held(unrouted, path, reason)


@pytest.mark.parametrize("edit", [without_watch_or_service, renamed_service])
def test_a_restart_without_the_route_holds_the_upload_and_one_with_it_resumes(
    tmp_path, sandbox, make_daemon, edit
):
    """The start-up path: kill -9 mid-upload, started again without its route (held, not
    forgotten nor failed), then restarted with it back (resumed, same session)."""
    config = small_chunks(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    refused = tmp_path / "drop" / "refused.txt"
    refuse_one_upload(sandbox, daemon, refused)
    sandbox.fault(method="PUT", path="/1.1/ton/", delay_ms=100, count=10_000)
    path = tmp_path / "drop" / "big.bin"
    total = 4 * MiB
    digest = write_random(path, total, 12)
    wait_until(
        lambda: any(s["received"] >= total // 4 for s in sandbox.ton_sessions()),
        60,
        "a quarter of the file at the server",
    )
    daemon.kill()
    sandbox.clear_faults()
    daemon.write_config(edit(config, tmp_path))
    daemon.start()
    unrouted = wait_until(lambda: out_of_work(daemon), 30, "the file out of the workers' hands")
    daemon.stop()
    daemon.write_config(config)
    daemon.start()
    daemon.wait_counts(done=1, failed=1, held=0)
    session = only_session(sandbox)
    assert session["complete"] and session["received"] == total
    assert session["bytes_received"] - total <= CHUNK, "at most the chunk cut by the kill again"
    assert read_sidecar(path)["sha256"] == digest
    still_failed(daemon, refused)
    assert_held(unrouted, path)


def test_a_reload_of_an_empty_file_is_refused_and_the_watches_go_on(tmp_path, sandbox, make_daemon):
    config = ton_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    daemon.wait_scan()
    for truncated in ("", "  \n# being rewritten\n"):
        reload(daemon, truncated)
    refusals = [line for line in daemon.log().splitlines() if "reload refused" in line]
    assert len(refusals) == 2, refusals
    for line in refusals:
        assert f"{daemon.config_path}: [[watch]]: none at all, while 1 are running" in line
    assert "configuration reloaded" not in daemon.log()
    path = drop(tmp_path / "drop" / "after.txt", b"dropped after the truncated reloads")
    daemon.wait_counts(done=1)
    assert sidecar_exists(path)
    assert daemon.status()["watches"] == [{"path": str(tmp_path / "drop"), "service": "ads"}]
    reload(daemon, config)  # the whole file again: taken as usual
    assert "configuration reloaded" in daemon.log()
