"""A daemon that runs out of file descriptors (a low LimitNOFILE=, ulimit -n): no file fails
or is lost for it, no thread spins on it, and it is said once a spell, not once a file.

The daemon is starved exactly: its soft limit is set to the descriptors it holds, so no
open, accept or socket succeeds; then given room again.
"""

from __future__ import annotations

import contextlib
import os
import resource
from collections.abc import Callable
from pathlib import Path

from conftest import SCALE, base_config
from harness import RunningDaemon, SandboxClient

from syncd.control.status import ask
from syncd.errors import DaemonNotRunning


def starve(daemon: RunningDaemon) -> tuple[int, int]:
    """No descriptor to spare from now on (the soft limit at its lowest free descriptor,
    until a client finds the status socket unable to take it); the limits it had."""
    old = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    for _ in range(20):
        held = {int(fd) for fd in os.listdir(f"/proc/{daemon.pid}/fd")}
        lowest_free = min(set(range(len(held) + 1)) - held)
        resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (lowest_free, old[1]))
        try:
            ask(daemon.socket, {"command": "status"}, timeout=2)
        except DaemonNotRunning:
            return old
    raise AssertionError("the daemon could not be starved of descriptors")


def test_files_wait_out_a_shortage_of_descriptors_and_none_fails(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}], workers=8)
    daemon = make_daemon(config).start()
    daemon.wait_scan()
    limits = starve(daemon)
    count = 20 * SCALE
    for n in range(count):
        (drop / f"file-{n}.bin").write_bytes(os.urandom(1000))
    # While the files settle and the workers meet them, a client the status socket cannot
    # take: no spinning on it (that wrote thousands of lines a second), said once a spell.
    with contextlib.suppress(DaemonNotRunning):
        ask(daemon.socket, {"command": "status"}, timeout=3)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, limits)
    daemon.wait_counts(done=count, timeout=120)  # any file failed ends this wait
    log = daemon.log()
    assert 1 <= log.count("status socket: cannot accept a client: Too many open files") <= 3
    assert "status socket: accepting clients again" in log
