"""kill -9 at random moments during mixed uploads to all four services.

Every file ends with one sidecar holding its own sha256; a service holds a piece of work
twice only when a kill fell between the service's commit and the journal's (the one window
no client can close); a resumable TON upload re-sends at most one chunk per kill; and the
journal passes SQLite's integrity check.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SCALE, wait_until
from mixed import (
    CHUNK,
    Dropper,
    check_sidecars,
    check_twice_explained,
    integrity,
    lost_callbacks,
    mixed_config,
    resent_bytes,
    slow_down,
)


def half_done_session(sandbox) -> bool:
    return any(0 < s["received"] < s["total"] for s in sandbox.ton_sessions())


JOURNAL_WINDOW = 1.0
"""Seconds from a service's answer to the journal's commit, generous for a loaded machine."""


@pytest.mark.timeout(300 * SCALE + 120)
def test_random_kills_during_mixed_uploads(tmp_path, sandbox, make_daemon, figures):
    rng = random.Random(11)
    slow_down(sandbox)
    daemon = make_daemon(mixed_config(tmp_path, sandbox)).start()
    dropper = Dropper(tmp_path, rng)
    files = dropper.batch()
    kills: list[float] = []
    for round_ in range(3 * SCALE):
        if round_ == 0:  # one kill is aimed at a resumable TON upload half done
            wait_until(lambda: half_done_session(sandbox), 60, "a resumable upload under way")
        else:
            time.sleep(rng.uniform(0.3, 2.0))  # the kill lands wherever the work has got to
        kills.append(time.time())
        daemon.kill()
        if rng.random() < 0.5:
            files += dropper.batch()  # files arriving while syncd is down
        daemon.start()
        if rng.random() < 0.5:
            files += dropper.batch()

    def settled() -> dict[str, Any] | None:
        reply = daemon.status()
        counts = reply["counts"]
        over = counts["done"] + counts["failed"] == len(files) and not counts["awaiting_callback"]
        return reply if over else None

    reply = wait_until(settled, 240 * SCALE, "every file done (or its callback lost)")
    failures = reply["failures"]
    daemon.stop()
    figures["kills"] = len(kills)
    figures["files"] = len(files)
    lost = lost_callbacks(sandbox, files)
    assert {Path(f["path"]) for f in failures} == lost, failures
    assert all("no callback" in f["error"] for f in failures)
    figures["videos_whose_every_callback_fell_while_down"] = len(lost)
    check_sidecars(tmp_path, [path for path in files if path not in lost])
    check_twice_explained(sandbox, kills, JOURNAL_WINDOW, figures)
    resent = resent_bytes(sandbox)
    figures["ton_resent_bytes"] = resent
    figures["ton_resent_chunks_per_kill"] = round(resent / CHUNK / len(kills), 2)
    assert resent <= len(kills) * CHUNK
    assert integrity(tmp_path) == "ok"
