"""`syncd status --watch` during a 200 MiB resumable upload, which a sandbox slowdown keeps
going for a while: in a real pseudo-terminal the bar advances; piped, plain lines."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest
from conftest import RunningDaemon, base_config, wait_until
from rich.console import Console
from test_ton_resumable import write_random

from syncd.cli.watch import LiveView, summary_line

MiB = 1024 * 1024
SIZE = 200 * MiB
SENT = re.compile(rb"(\d+\.\d)/200\.0 MiB")
ANSI = re.compile(r"\x1b\[")


@pytest.fixture
def slow_upload(tmp_path, sandbox, make_daemon) -> RunningDaemon:
    """A daemon in the middle of a 200 MiB upload that takes half a minute or more."""
    (tmp_path / "drop").mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(tmp_path / "drop")}])
    config["services"]["ads"]["chunk_size"] = "4MiB"
    sandbox.fault(method="PUT", path="^/1\\.1/ton/", delay_ms=600, count=1000)
    daemon = make_daemon(config).start()
    write_random(tmp_path / "drop" / "big.mp4", SIZE, 7)
    wait_until(
        lambda: (u := daemon.status()["uploads"]) and u[0]["sent"] > 0, 120, "the upload to start"
    )
    return daemon


def watch_argv(daemon: RunningDaemon) -> list[str]:
    return ["-m", "syncd", "status", "--watch", "-c", str(daemon.config_path)]


def test_watch_in_a_terminal_shows_a_bar_that_advances(slow_upload):
    env = {**slow_upload.env, "TERM": "xterm-256color", "LC_ALL": "C.UTF-8"}
    child = pexpect.spawn(
        sys.executable, watch_argv(slow_upload), env=env, dimensions=(40, 160), timeout=60
    )
    try:
        seen: list[float] = []
        screen = b""
        while len(set(seen)) < 3:
            child.expect(SENT)
            seen.append(float(child.match.group(1)))
            screen += child.before + child.after
        assert seen == sorted(seen) and seen[-1] > seen[0], seen
        child.expect(rb"[\d.]+ [kMG]?B/s")  # the rate, after the bytes
        child.expect(rb"\d+:\d\d:\d\d")  # the ETA, after the rate
        screen += child.before + child.after
        assert "━".encode() in screen  # the bar itself
        assert b"big.mp4 -> ads" in screen
        child.sendintr()
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, (child.exitstatus, child.signalstatus)


@pytest.mark.parametrize("sigint", ["default", "ignored"])
def test_watch_piped_prints_plain_lines(slow_upload, sigint):
    """Ctrl-C (SIGINT) ends it, also when it was started with SIGINT ignored, as a shell
    script's `&` starts it (a CI job run in the background did: the view never ended)."""
    # An ignored signal stays ignored across exec; a handler of Python's becomes the default.
    inherited = signal.SIG_IGN if sigint == "ignored" else signal.default_int_handler
    previous = signal.signal(signal.SIGINT, inherited)
    try:
        watching = subprocess.Popen(
            [sys.executable, *watch_argv(slow_upload)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=slow_upload.env,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    try:
        assert watching.stdout is not None
        lines = [watching.stdout.readline() for _ in range(3)]
    finally:
        watching.send_signal(signal.SIGINT)
        _, errors = watching.communicate(timeout=30)
    assert watching.returncode == 0, errors
    for line in lines:
        assert re.match(r"\d\d:\d\d:\d\d ", line), line
        assert "files: " in line and not ANSI.search(line), line
    assert any("1 uploading (" in line and "of 200.0 MiB" in line for line in lines), lines


def test_watch_without_a_daemon_exits_3(tmp_path):
    config = base_config(tmp_path, "http://127.0.0.1:9")
    daemon = RunningDaemon(tmp_path, config)
    result = subprocess.run(
        [sys.executable, *watch_argv(daemon)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "not running" in result.stderr
    assert not Path(daemon.socket).exists()


def test_the_live_view_shows_holds_failures_and_escapes_names():
    """What a reply with holds and failures looks like (flow control fills `held`)."""
    reply = {
        "version": "0.1.0",
        "pid": 1,
        "uptime_s": 75,
        "counts": {"seen": 0, "held": 1, "done": 2, "failed": 1},
        "uploads": [{"path": "/w/big\x1b[2J.mp4", "service": "ads", "sent": 10, "total": 100}],
        "hashing": [],
        "paused": ["ads"],
        "held": [{"path": "/w/h.bin", "service": "ads", "reason": "paused", "until": None}],
        "failures": [
            {
                "path": "/w/f.bin",
                "service": "ads",
                "error": "HTTP 403",
                "at": "2026-11-30T05:00:00Z",
            }
        ],
    }
    console = Console(record=True, width=160, force_terminal=False)
    console.print(LiveView().render(reply))
    text = console.export_text()
    assert "up 1m15s" in text and "files: 1 held, 2 done, 1 failed" in text
    assert "/w/big\\x1b[2J.mp4 -> ads" in text and "\x1b" not in text
    assert "paused: ads" in text and "/w/h.bin" in text
    assert "recent failures" in text and "HTTP 403" in text
    assert summary_line(reply).startswith("1 uploading (10 B of 100 B, 0 B/s); files: 1 held")
