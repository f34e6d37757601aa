"""The cycle collector is paused while the daemon starts, and only then (control/collector.py);
the daemon's switch interval is set once (control/switching.py).

A restart over tens of thousands of done files allocates much and frees next to nothing, so
the collector waits till the start-up scan is done; it must come back then (a daemon runs
for months), for anyone who only imports the command line, and after START_LIMIT whatever
happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from conftest import base_config, wait_until

from syncd.control.switching import SWITCH_INTERVAL

OBSERVER = textwrap.dedent(
    """
    import gc, os, sys, threading, time

    def watch():
        seen, switch = gc.isenabled(), sys.getswitchinterval()
        with open(os.environ["GC_RECORD"], "a") as record:
            record.write(f"enabled={seen}\\n")
            record.flush()
            while True:
                now = gc.isenabled()
                if now != seen:
                    state = "resumed" if now else "paused"
                    record.write(f"{state} frozen={gc.get_freeze_count()}\\n")
                    record.flush()
                    seen = now
                if sys.getswitchinterval() != switch:
                    switch = sys.getswitchinterval()
                    record.write(f"switch interval={switch}\\n")
                    record.flush()
                time.sleep(0.002)

    threading.Thread(target=watch, daemon=True).start()
    """
)
"""A sitecustomize that records, from before the first import, each time the collector is
turned off or on in the process it runs in, and each change of its switch interval."""


def _observed_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(OBSERVER)
    python_path = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    return {"PYTHONPATH": python_path, "GC_RECORD": str(tmp_path / "gc.record")}


def _record(tmp_path: Path) -> list[str]:
    """The collector's states as recorded (the switch interval's changes apart)."""
    return [line for line in _lines(tmp_path) if not line.startswith("switch")]


def _lines(tmp_path: Path) -> list[str]:
    path = tmp_path / "gc.record"
    return path.read_text().splitlines() if path.exists() else []


def test_the_daemon_resumes_the_collector_once_its_start_up_scan_is_done(
    tmp_path, sandbox, make_daemon
):
    drop = tmp_path / "drop"
    drop.mkdir()
    for n in range(20):
        (drop / f"f{n}.txt").write_bytes(b"x" * n)
    daemon = make_daemon(
        base_config(tmp_path, sandbox.url, [{"path": str(drop)}]), **_observed_env(tmp_path)
    )
    daemon.start()
    daemon.wait_counts(done=20)
    record = wait_until(
        lambda: (lines := _record(tmp_path)) and lines[-1].startswith("resumed") and lines,
        5,  # well under START_LIMIT (10 s): the scan's end resumed it, not the limit
        "the collector resumed",
    )
    assert record[0] == "enabled=True" and record[1].startswith("paused")
    assert int(record[-1].split("=")[1]) > 0  # what the start built is frozen
    assert "scan of 20 files took" in daemon.log()
    # and its threads hand the GIL over sooner (control/switching.py), set once
    assert [line for line in _lines(tmp_path) if line.startswith("switch")] == [
        f"switch interval={SWITCH_INTERVAL}"
    ]


def test_importing_the_command_line_leaves_the_collector_running(tmp_path):
    """A test run or a tool importing syncd's modules gets its collector back at once."""
    script = (
        "import gc, sys, syncd.cli;"
        " print(gc.isenabled(), gc.get_freeze_count() > 0, sys.getswitchinterval())"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.split() == ["True", "True", str(sys.getswitchinterval())], done.stderr


def test_a_start_that_takes_start_limit_resumes_it_even_so(tmp_path):
    script = textwrap.dedent(
        """
        import gc, time
        from syncd.control import collector
        collector.pause(0.2)
        paused = not gc.isenabled()
        deadline = time.monotonic() + 10
        while not gc.isenabled() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(paused, gc.isenabled(), gc.get_freeze_count() > 0)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.split() == ["True", "True", "True"], done.stderr
