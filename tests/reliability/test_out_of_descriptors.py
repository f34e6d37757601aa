"""A daemon that runs out of file descriptors (a low LimitNOFILE=, ulimit -n): no file fails
or is lost for it, no thread spins on it, and it is said once a spell, not once a file.

The daemon is starved exactly: its soft limit is set to the descriptors it holds, so no
open, accept or socket succeeds; then given room again.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SCALE, base_config
from harness import RunningDaemon, SandboxClient

from syncd.control.status import ask
from syncd.errors import DaemonNotRunning


def starve(pid: int) -> tuple[int, int]:
    """No descriptor to spare from now on; the limits it had."""
    held = max(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (held + 1, old[1]))
    return old


def test_files_wait_out_a_shortage_of_descriptors_and_none_fails(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}], workers=8)
    daemon = make_daemon(config).start()
    daemon.wait_scan()
    limits = starve(daemon.pid)
    count = 20 * SCALE
    for n in range(count):
        (drop / f"file-{n}.bin").write_bytes(os.urandom(1000))
    # The status socket cannot take the client: said once, and no spinning on it (it
    # would write thousands of lines a second) while the files settle meanwhile.
    with pytest.raises(DaemonNotRunning):
        ask(daemon.socket, {"command": "status"}, timeout=3)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, limits)
    daemon.wait_counts(done=count, timeout=120)  # any file failed ends this wait
    log = daemon.log()
    assert log.count("status socket: cannot accept a client: Too many open files") == 1
    assert "status socket: accepting clients again" in log
