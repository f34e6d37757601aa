"""The chaos of the other reliability tests all at once, for minutes: HTTP chaos on every
service, kill -9 and clean stops at random moments, SIGHUP reloads, files written slowly,
renamed into place, deleted and rewritten while they settle, bursts of small files and one
large resumable TON upload. Then mixed.py's checks: one sidecar per file with its own sha256,
nothing lost, a piece of work held twice only where a kill explains it.

Long by nature, so it runs only when SYNCD_SOAK_SECONDS is set (README, "Development"):
    SYNCD_SOAK_SECONDS=300 pytest -s tests/reliability/test_soak.py
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from mixed import (
    CHUNK,
    Dropper,
    check_sidecars,
    check_twice_explained,
    integrity,
    lost_callbacks,
    mixed_config,
    resent_bytes,
)
from test_http_chaos import PATHS
from test_kill9 import JOURNAL_WINDOW

SECONDS = float(os.environ.get("SYNCD_SOAK_SECONDS", "0"))
LARGE = 24 * 1024 * 1024
"""The resumable TON upload: ~100 chunks, so kills and resets land inside it."""
BUSY = ("seen", "hashed", "uploading", "retry_wait", "held", "uploaded", "awaiting_callback")
"""The states of a file on its way (held too: a hold left at the end is a finding)."""


def unsettled_writes(root: Path, rng: random.Random, made: int) -> list[Path]:
    """Files that give the settle logic a hard time: one written slowly in place, one
    deleted and rewritten before it settles, one deleted for good; the paths that remain."""
    slow = root / "ads" / f"slow-{made}.bin"
    with slow.open("wb") as out:
        for _ in range(rng.randint(2, 6)):
            out.write(rng.randbytes(rng.randint(1, 50_000)))
            out.flush()
            time.sleep(rng.uniform(0.05, 0.3))
    rewritten = root / "notes" / f"rewritten-{made}.txt"
    rewritten.write_text(f"first draft {made}")
    time.sleep(rng.uniform(0.0, 0.3))
    rewritten.unlink()
    rewritten.write_text(f"final text {made} {rng.random()}")
    gone = root / "ads" / f"gone-{made}.bin"
    gone.write_bytes(rng.randbytes(1000))
    time.sleep(rng.uniform(0.0, 0.2))
    gone.unlink()
    return [slow, rewritten]


def small_burst(root: Path, rng: random.Random, made: int) -> list[Path]:
    files = []
    for i in range(rng.randint(20, 60)):
        path = root / "ads" / f"small-{made}-{i}.bin"
        path.write_bytes(rng.randbytes(rng.randint(1, 2000)))
        files.append(path)
    return files


@pytest.mark.skipif(not SECONDS, reason="a soak of minutes: set SYNCD_SOAK_SECONDS to run it")
@pytest.mark.timeout(int(SECONDS) * 3 + 900)
def test_soak_everything_at_once(tmp_path, sandbox, make_daemon, figures):
    rng = random.Random(int(os.environ.get("SYNCD_SOAK_SEED", "23")))
    for path in PATHS:
        sandbox.fault(path=path, status=503, probability=0.08, count=1_000_000)
        sandbox.fault(path=path, reset_connection=True, probability=0.04, count=1_000_000)
        sandbox.fault(path=path, status=429, retry_after=1, probability=0.02, count=1_000_000)
        sandbox.fault(path=path, delay_ms=120, probability=0.3, count=1_000_000)
    sandbox.fault(
        method="PUT", path="/1.1/ton/", reset_after_bytes=70_000, probability=0.05, count=1_000_000
    )
    config = mixed_config(tmp_path, sandbox)
    # Minutes of notes and photos outrun Twitter's and TwitPic's real windows (300 and 500 in
    # 15 min), which would rightly hold those services for the rest of the window.
    sandbox.post("settings", {"twitter": {"rate_limit": 10**6}, "twitpic": {"rate_limit": 10**6}})
    daemon = make_daemon(config).start()
    large = tmp_path / "ads" / "large.bin"
    temp = large.with_name(".large.bin.part")
    temp.write_bytes(random.Random(5).randbytes(LARGE))
    temp.rename(large)
    files: list[Path] = [large]
    lock = threading.Lock()
    stop = threading.Event()

    def writer() -> None:
        wrng = random.Random(rng.random())
        dropper = Dropper(tmp_path, wrng)
        made = 0
        while not stop.is_set():
            made += 1
            kind = wrng.random()
            if kind < 0.3:
                new = dropper.batch()
            elif kind < 0.7:
                new = unsettled_writes(tmp_path, wrng, made)
            else:
                new = small_burst(tmp_path, wrng, made)
            with lock:
                files.extend(new)
            stop.wait(wrng.uniform(0.5, 3.0))

    thread = threading.Thread(target=writer, name="soak-writer")
    thread.start()
    kills: list[float] = []
    stops: list[float] = []
    reloads = 0
    deadline = time.monotonic() + SECONDS
    try:
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(1.0, 6.0))
            if rng.random() < 0.4:  # a reload, with a settle time of its own now and then
                config = daemon.config
                config["daemon"]["settle_seconds"] = rng.choice((0.5, 0.5, 1.0))
                daemon.write_config(config)
                daemon.signal(signal.SIGHUP)
                reloads += 1
            elif rng.random() < 0.2:  # a clean stop lets what is in flight finish, in time
                started = time.monotonic()
                assert daemon.stop() == 0
                stops.append(time.monotonic() - started)
                daemon.start()
            else:
                kills.append(time.time())
                daemon.kill()
                daemon.start()
    finally:
        stop.set()
        thread.join(60)
    sandbox.clear_faults()

    def settled() -> dict[str, Any] | None:
        reply = daemon.status()
        counts = reply["counts"]
        return reply if not any(counts[s] for s in BUSY) else None

    reply = wait_until(settled, 600, "every file done or failed")
    lost = lost_callbacks(sandbox, files)
    others = [f for f in reply["failures"] if Path(f["path"]) not in lost]
    figures["failed_under_chaos"] = len(others)
    for failure in others:
        assert "internal error" not in failure["error"], failure
        assert daemon.cli("retry", failure["path"]).returncode == 0
    reply = wait_until(settled, 600, "every retried file done")
    daemon.stop()
    figures["seconds"] = SECONDS
    figures["files"] = len(files)
    figures["kills"] = len(kills)
    figures["reloads"] = reloads
    figures["clean_stops"] = len(stops)
    figures["slowest_stop_s"] = round(max(stops, default=0), 1)
    figures["requests"] = len(sandbox.requests())
    figures["faulted_requests"] = sum(1 for r in sandbox.requests() if r["fault"] is not None)
    figures["videos_whose_every_callback_fell_while_down"] = len(lost)
    assert {Path(f["path"]) for f in reply["failures"]} == lost, reply["failures"]
    assert reply["counts"]["done"] == len(files) - len(lost), reply["counts"]
    check_sidecars(tmp_path, [path for path in files if path not in lost])
    check_twice_explained(sandbox, kills, JOURNAL_WINDOW, figures)
    resets = sum(1 for r in sandbox.requests() if r["fault"] and r["method"] == "PUT")
    figures["ton_resent_bytes"] = resent_bytes(sandbox)
    assert resent_bytes(sandbox) <= (len(kills) + resets) * CHUNK
    log = daemon.log()
    figures["tracebacks"] = log.count("Traceback")
    assert "Traceback" not in log
    assert integrity(tmp_path) == "ok"
