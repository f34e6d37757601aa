"""A full disk under the journal or under the sidecars: no thread dies, status says
`degraded` and why, and everything resumes by itself once there is space again, with
nothing lost and nothing uploaded twice.

The disks are size-limited tmpfs mounts, which needs root; elsewhere these tests are
skipped with the reason.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SCALE, base_config, read_sidecar, wait_until
from harness import free_port, scrape
from mixed import integrity
from test_systemd import NotifyListener
from test_webhook_events import FILE_FIELDS, service_events, webhook


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 16 MiB tmpfs at tmp_path/disk, unmounted afterwards: room for the journal's WAL
    (which grows to about 4 MiB between checkpoints) once the filler is gone."""
    if os.geteuid() != 0:
        reason = "disk-full tests mount a size-limited tmpfs, which needs root"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m,mode=0700", "tmpfs", str(disk)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here: {mounted.stderr.strip()}"
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk refuses another byte."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as out:
        for piece in (65536, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    try:
                        out.write(b"\0" * piece)
                    except OSError as exc:
                        if exc.errno != errno.ENOSPC:
                            raise
                        raise OSError(errno.ENOSPC, "full") from None
    return filler


def degraded(daemon, component: str) -> dict | None:
    return next((d for d in daemon.status()["degraded"] if d["component"] == component), None)


def test_journal_on_a_full_disk_pauses_and_resumes(tmp_path, small_disk, sandbox, make_daemon):
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}])
    config["daemon"]["state_dir"] = str(small_disk / "state")
    config["webhook"] = webhook(tmp_path, sandbox, ["degraded"])
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        journal_on_a_full_disk(tmp_path, small_disk, sandbox, make_daemon, config, notify)
    finally:
        notify.close()


def journal_on_a_full_disk(tmp_path, small_disk, sandbox, make_daemon, config, notify):
    drop = tmp_path / "drop"
    daemon = make_daemon(config, NOTIFY_SOCKET=str(notify.path)).start()
    first = [drop / f"before-{n}.bin" for n in range(3)]
    for path in first:
        path.write_bytes(os.urandom(5000))
    daemon.wait_counts(done=3)
    filler = fill(small_disk)
    later = [drop / f"while-full-{n}.bin" for n in range(20 * SCALE)]
    for path in later:
        path.write_bytes(os.urandom(5000))
    fault = wait_until(lambda: degraded(daemon, "journal"), 60, "the journal reported degraded")
    assert "full" in fault["reason"], fault
    assert "DEGRADED journal: " in daemon.cli("status").stdout
    wait_until(lambda: notify.first_index("STATUS=degraded: journal: "), 10, "STATUS= degraded")
    filler.unlink()
    daemon.wait_counts(done=3 + len(later), timeout=120)
    assert daemon.status()["degraded"] == []
    # The alert could not be journaled while the journal was the fault: it comes now.
    [event] = wait_until(lambda: service_events(sandbox), 60, "the degraded event")
    assert event["event"] == "degraded" and event["component"] == "journal", event
    assert "full" in event["reason"] and not FILE_FIELDS & set(event)
    daemon.stop()
    for path in first + later:
        assert read_sidecar(path)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(sandbox.ton_objects()) == 3 + len(later)
    assert integrity(small_disk) == "ok"
    assert "Traceback" not in daemon.log()


def degraded_metric(url: str) -> dict[str, float]:
    samples, _ = scrape(url)
    return {
        dict(labels)["component"]: value
        for (name, labels), value in samples.items()
        if name == "syncd_degraded"
    }


def health_pings(sandbox) -> list[dict]:
    return [p for p in sandbox.get("hooks/pings") if p["uuid"] == "disk-check"]


def test_sidecars_on_a_full_disk_wait_and_resume(tmp_path, small_disk, sandbox, make_daemon):
    """Also what monitoring sees meanwhile: syncd_degraded{component} and URL/fail pings."""
    drop = small_disk / "drop"
    drop.mkdir()
    files = [drop / f"file-{n}.bin" for n in range(10 * SCALE)]
    for path in files:
        path.write_bytes(os.urandom(3000))
    filler = fill(small_disk)
    config = base_config(
        tmp_path,
        sandbox.url,
        [{"path": str(drop)}],
        healthcheck_url=f"{sandbox.url}/hc/disk-check",
        healthcheck_interval=1.0,
    )
    port = free_port()
    config["metrics"] = {"listen": f"127.0.0.1:{port}"}
    config["webhook"] = webhook(tmp_path, sandbox, ["degraded"])
    metrics = f"http://127.0.0.1:{port}/metrics"
    daemon = make_daemon(config).start()
    fault = wait_until(lambda: degraded(daemon, "sidecars"), 60, "sidecars reported degraded")
    [event] = wait_until(lambda: service_events(sandbox), 60, "the degraded event")
    assert event["component"] == "sidecars" and "No space left" in event["reason"], event
    assert "No space left" in fault["reason"], fault
    assert daemon.status()["counts"]["uploaded"] >= 1
    assert degraded_metric(metrics) == {"sidecars": 1.0}
    fail = wait_until(
        lambda: [p for p in health_pings(sandbox) if p["kind"] == "fail"], 30, "a /fail ping"
    )[0]
    assert fail["body"].startswith("degraded: sidecars: "), fail
    filler.unlink()
    daemon.wait_counts(done=len(files), timeout=120)
    assert daemon.status()["degraded"] == []
    assert degraded_metric(metrics) == {}
    wait_until(lambda: health_pings(sandbox)[-1]["kind"] == "ok", 30, "an ok ping again")
    assert len(service_events(sandbox)) == 1, "one event for the fault, not one per attempt"
    daemon.stop()
    for path in files:
        assert read_sidecar(path)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(sandbox.ton_objects()) == len(files)
    assert not [p for p in drop.iterdir() if p.name.startswith(".syncd-")]  # no temp left


def test_a_rate_limit_met_while_the_journal_is_full_blocks_no_one(
    tmp_path, small_disk, sandbox, make_daemon
):
    """A worker saves the 429's hold of the whole service and waits for the disk; `syncd
    pause`, `syncd status` and the main loop's WATCHDOG=1 pings go on meanwhile (systemd
    would otherwise kill a daemon that only waits), and the hold, once saved, is kept."""
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}])
    config["daemon"]["state_dir"] = str(small_disk / "state")
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        daemon = make_daemon(
            config, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="1000000"
        ).start()
        daemon.wait_scan()
        sandbox.fault(
            method="POST", path="/1.1/ton/", status=429, retry_after=3, trickle_ms=15, count=1
        )
        (drop / "limited.bin").write_bytes(os.urandom(5000))
        wait_until(
            lambda: any(r["path"].startswith("/1.1/ton/") for r in sandbox.requests()),
            30,
            "the POST that will meet the 429",
        )
        filler = fill(small_disk)
        wait_until(lambda: degraded(daemon, "journal"), 30, "the journal reported degraded")
        pings = len(notify.with_line("WATCHDOG=1"))
        started = time.monotonic()
        paused = daemon.cli("pause")
        assert time.monotonic() - started < 4.0, "pause waited for the disk"
        assert "journal" in paused.stdout + paused.stderr, paused
        assert daemon.cli("status").returncode == 0
        wait_until(
            lambda: len(notify.with_line("WATCHDOG=1")) >= pings + 3, 10, "the pings meanwhile"
        )
        filler.unlink()
        wait_until(lambda: not daemon.status()["degraded"], 60, "the disk taken again")
        daemon.wait_counts(done=1, timeout=60)
        assert daemon.status()["paused"] == []
        assert len(sandbox.ton_objects()) == 1
        assert "held until" in daemon.log()
        assert "Traceback" not in daemon.log()
    finally:
        notify.close()


def test_a_purge_met_by_a_full_journal_disk_blocks_no_status_reply(
    tmp_path, small_disk, sandbox, make_daemon
):
    """The purge's journal write waits for the disk; a `syncd restore` meanwhile says to try
    again instead of holding the status socket's one thread (and every `syncd status`)."""
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(
        tmp_path,
        sandbox.url,
        [{"path": str(drop), "after_upload": "delete", "trash_retention": "4s"}],
    )
    config["daemon"]["state_dir"] = str(small_disk / "state")
    daemon = make_daemon(config).start()
    daemon.wait_scan()
    for name in ("one.bin", "two.bin"):
        (drop / name).write_bytes(os.urandom(5000))
    trash = drop / ".syncd-trash"
    wait_until(
        lambda: all((trash / name).exists() for name in ("one.bin", "two.bin")), 60, "the trash"
    )
    filler = fill(small_disk)

    def in_trash() -> list[str]:
        return [name for name in ("one.bin", "two.bin") if (trash / name).exists()]

    wait_until(lambda: len(in_trash()) == 1, 30, "one file purged, the journal write waiting")
    [left] = in_trash()
    started = time.monotonic()
    restore = daemon.cli("restore", str(drop / left))
    assert time.monotonic() - started < 4.0, "restore waited for the disk"
    assert restore.returncode == 1 and "try again" in restore.stderr, restore
    assert daemon.cli("status").returncode == 0
    filler.unlink()
    wait_until(lambda: not any(trash.glob("*.bin")), 60, "the rest of the purge")
    wait_until(lambda: not daemon.status()["degraded"], 60, "the disk taken again")
    assert "Traceback" not in daemon.log()
