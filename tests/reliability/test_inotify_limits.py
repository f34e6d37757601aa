"""The user's inotify limits reached: the daemon runs on, rescans finding what inotify
cannot, and says so. The limits are lowered in a user namespace of the daemon's own
(/proc/sys/user/max_inotify_*), so the machine's are never touched.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import base_config
from harness import RunningDaemon, SandboxClient


def in_own_namespace(tmp_path: Path, instances: int, watches: int) -> str:
    """An interpreter that runs syncd in a user namespace with these inotify limits."""
    probe = ["unshare", "--user", "--map-root-user", "true"]
    if shutil.which("unshare") is None or subprocess.run(probe, check=False).returncode:
        pytest.skip("no user namespaces here (unshare --user)")
    script = tmp_path / "python-in-namespace"
    limits = (
        f"echo {instances} > /proc/sys/user/max_inotify_instances &&"
        f" echo {watches} > /proc/sys/user/max_inotify_watches &&"
        f' exec {sys.executable} "$@"'
    )
    script.write_text(
        f"#!/bin/sh\nexec unshare --user --map-root-user sh -c '{limits}' sh \"$@\"\n"
    )
    script.chmod(0o755)
    return str(script)


@pytest.mark.parametrize(
    ("instances", "watches", "told"),
    [
        (0, 1_000_000, "cannot start inotify"),
        (128, 3, "inotify watch limit reached"),
    ],
    ids=["no-instance", "watches-below-folders"],
)
def test_files_arrive_by_rescans_when_inotify_limits_are_reached(
    tmp_path: Path,
    sandbox: SandboxClient,
    make_daemon: Callable[..., RunningDaemon],
    instances: int,
    watches: int,
    told: str,
) -> None:
    folders = [tmp_path / "drop" / f"w{n}" for n in range(10)]
    for folder in folders:
        folder.mkdir(parents=True)
    config = base_config(
        tmp_path, sandbox.url, [{"path": str(f)} for f in folders], rescan_interval="2s"
    )
    daemon = make_daemon(config)
    daemon.python = in_own_namespace(tmp_path, instances, watches)
    daemon.start()
    daemon.wait_scan()
    for n, folder in enumerate(folders):
        (folder / f"file-{n}.bin").write_bytes(b"x" * 100)
    daemon.wait_counts(done=len(folders))
    assert daemon.log().count(told) == 1
    assert daemon.stop() == 0
