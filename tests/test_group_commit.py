"""kill -9 while group commits are in flight: claims released with the next claim, `hashed`
and `uploading` in one commit, and the sidecar writer's batches (sidecars placed, folders
fsync'd once, many rows `done` in one transaction).

`SYNCD_TEST_BURST` sets the burst's size: CI runs 300 files, the full scale is 5,000.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from conftest import read_sidecar, wait_until
from test_pipeline_e2e import drop, journal_states, ton_config

BURST = int(os.environ.get("SYNCD_TEST_BURST", "300"))
WORKERS = 4
KILLS_AT = (0.2, 0.5, 0.8)
"""Fractions of the burst done when each kill -9 comes."""


def test_kill_9_during_a_burst_uploads_nothing_twice_and_leaves_one_sidecar_each(
    tmp_path: Path, sandbox, make_daemon
) -> None:
    config = ton_config(tmp_path, sandbox, workers=WORKERS, settle_seconds=0.2)
    daemon = make_daemon(config).start()
    sandbox.fault(path="/1.1/ton/", delay_ms=5, count=10 * BURST)
    files = [
        drop(tmp_path / "drop" / f"f{n:05d}.bin", os.urandom(1000 + n % 3000)) for n in range(BURST)
    ]
    for fraction in KILLS_AT:
        wanted = int(BURST * fraction)
        wait_until(lambda n=wanted: daemon.status()["counts"]["done"] >= n, 300, f"{wanted} done")
        daemon.kill()
        daemon.start()
    daemon.wait_counts(timeout=600, done=BURST)

    assert journal_states(tmp_path) == {"done": BURST}
    objects = {o["location"]: o for o in sandbox.ton_objects()}
    for path in files:
        side = read_sidecar(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert side["sha256"] == digest
        assert objects[side["result"]["location"]]["sha256"] == digest
    names = sorted(p.name for p in (tmp_path / "drop").iterdir())
    assert names == sorted([p.name for p in files] + [p.name + ".syncd.toml" for p in files])
    # Uploaded twice only where a POST was answered but not yet journaled as the kill came:
    # at most one a worker a kill.
    posts = [r for r in sandbox.requests() if r["method"] == "POST" and "/ton/" in r["path"]]
    assert BURST <= len(posts) <= BURST + WORKERS * len(KILLS_AT)
