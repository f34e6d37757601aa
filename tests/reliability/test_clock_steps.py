"""The wall clock steps (an admin's `date -s`, an NTP step, a VM restored from a snapshot):
a file waiting out a retry waits the delay it was given, not that plus an hour.

The daemon runs under libfaketime (Debian's `faketime`), its clock stepped through a file
it reads at every look; the sandbox is told the same skew, so OAuth timestamps still agree.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import base_config, wait_until
from harness import RunningDaemon, SandboxClient

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1")
STEP = -3600.0


@pytest.mark.skipif(not LIBFAKETIME.exists(), reason="libfaketime is not installed (faketime)")
@pytest.mark.parametrize(
    ("status", "waiting"), [(503, "retry_wait"), (429, "held")], ids=["retry", "rate-limit"]
)
def test_a_step_back_of_an_hour_does_not_freeze_a_wait_for_an_hour(
    tmp_path: Path,
    sandbox: SandboxClient,
    make_daemon: Callable[..., RunningDaemon],
    status: int,
    waiting: str,
) -> None:
    """A retry after a 503 (1 s), and the whole service's hold after a 429 (5 s)."""
    drop = tmp_path / "drop"
    drop.mkdir()
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    daemon = make_daemon(
        base_config(tmp_path, sandbox.url, [{"path": str(drop)}]),
        LD_PRELOAD=str(LIBFAKETIME),
        FAKETIME_TIMESTAMP_FILE=str(clock),
        FAKETIME_NO_CACHE="1",
        FAKETIME_DONT_FAKE_MONOTONIC="1",
    ).start()
    daemon.wait_scan()
    sandbox.fault(method="POST", path="/1.1/ton/", status=status, retry_after=5, count=1)
    (drop / "a.bin").write_bytes(os.urandom(1000))

    def waits() -> bool:
        reply = daemon.poll_status()
        return bool(reply and reply["counts"][waiting] == 1)

    wait_until(waits, what=f"the wait after a {status}")
    clock.write_text(f"{STEP:+.0f}\n")
    sandbox.post("clock", {"skew": STEP})
    daemon.wait_counts(done=1)  # an hour later without the fix; the deadline is a minute
    assert "the wall clock stepped back 3600 s" in daemon.log()
    assert daemon.stop() == 0


def test_a_clock_off_from_the_services_makes_files_wait_not_fail(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    sandbox.post("clock", {"skew": STEP})  # the service sees OAuth timestamps an hour off
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [{"path": str(drop)}])).start()
    daemon.wait_scan()
    (drop / "a.bin").write_bytes(os.urandom(1000))

    def waiting_for_the_clock() -> list[dict[str, str]]:
        reply = daemon.poll_status()
        return [] if reply is None else reply["retrying"]

    [retrying] = wait_until(waiting_for_the_clock, what="the retry after a 401")
    assert "the clock is off: check NTP" in retrying["error"]
    sandbox.post("clock", {"skew": 0.0})  # NTP set the clock right
    daemon.wait_counts(done=1)
