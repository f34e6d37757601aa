"""A daemon that runs out of file descriptors (a low LimitNOFILE=, ulimit -n): no file fails
or is lost for it, no thread spins on it, and it is said once a spell, not once a file.

The daemon is starved exactly: its soft limit is set to the descriptors it holds, so no
open, accept or socket succeeds; then given room again.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from conftest import SCALE, base_config, wait_until
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


def test_a_shortage_met_while_the_services_load_fails_no_file(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    """A few descriptors to spare, not none: eight workers load requests (a file for each
    module), open files, folders and connections, and meet the limit at any step of it, the
    loading of the services and the sidecar's included. Once there is room again every file
    goes: none failed ("internal error: module 'requests' has no attribute ..."), none left
    `uploaded` without its sidecar until some later rescan."""
    drop = tmp_path / "drop"
    drop.mkdir()
    config = base_config(tmp_path, sandbox.url, [{"path": str(drop)}], workers=8)
    daemon = make_daemon(config).start()
    daemon.wait_scan()
    old = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    held = {int(fd) for fd in os.listdir(f"/proc/{daemon.pid}/fd")}
    lowest_free = min(set(range(len(held) + 1)) - held)
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (lowest_free + 5, old[1]))
    count = 10 * SCALE
    for n in range(count):
        (drop / f"file-{n}.bin").write_bytes(os.urandom(1000))

    def worked_through() -> bool:  # the log, not the status: its socket may be starved too
        log = daemon.log()
        return log.count(" INFO uploaded ") + log.count("internal error") >= count // 2

    # At most a while: the limit can leave no descriptor free at all, and nothing moves.
    with contextlib.suppress(AssertionError):
        wait_until(worked_through, 15, "half the files worked through while short")
    assert "open files degraded: Too many open files" in daemon.log()
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, old)
    daemon.wait_counts(done=count, timeout=150)  # any failed ends it; backoffs reach 60 s


def test_an_extension_module_loaded_at_first_use_short_of_descriptors_is_a_shortage() -> None:
    """OpenSSL's _hashlib (the first hash) or _csv (under requests, the first upload) is
    loaded by dlopen, which reports EMFILE only in its message, as an ImportError: that is a
    shortage (the file waits), not an internal error (the file failed for good)."""
    probe = textwrap.dedent(
        """
        import os, resource, sys
        from syncd.files import scarce_import
        assert "_csv" not in sys.modules
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, hard))
        held = []
        try:
            while True:
                held.append(os.open("/dev/null", os.O_RDONLY))
        except OSError:
            pass
        try:
            import _csv
        except ImportError as exc:
            short = scarce_import(exc)
            print(short.errno if short is not None else None)
        print(scarce_import(ModuleNotFoundError("No module named 'nothing_here'")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.split() == [str(errno.EMFILE), "None"], done.stdout + done.stderr


def test_a_codec_first_needed_short_of_descriptors_does_not_fail_every_later_connection(
    sandbox: SandboxClient,
) -> None:
    """urllib3 encodes each host with the idna codec; imported at its first lookup, the codec
    met the shortage there (unicodedata's dlopen, refused here as it is when short), and
    `encodings` took it for unknown for good. It loads with the services now: their load is
    what is short, and once there is room, a connection goes."""
    probe = textwrap.dedent(
        f"""
        import sys
        from syncd.services.loading import load

        def connect():
            transport = load("syncd.services.transport").Transport()
            try:
                print(transport.open("GET", "{sandbox.url}/", None, None, None, None).status)
            except Exception as exc:
                print(type(exc).__name__, exc)

        sys.modules["unicodedata"] = None  # its dlopen fails as it does short of descriptors
        try:
            load("syncd.services.http")
        except ImportError as exc:
            print("short:", exc)
        else:
            connect()
        del sys.modules["unicodedata"]  # room again
        connect()
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.splitlines()[-1:] == ["404"], done.stdout + done.stderr


HOOK = """
import os, sys
with open(sys.argv[1], "a") as out:
    out.write(os.environ["SYNCD_PATH"] + "\\n")
"""


def test_a_hook_short_of_descriptors_waits_and_runs_once_there_is_room(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Callable[..., RunningDaemon]
) -> None:
    """A hook is the operator's program: a shortage that keeps it from starting (a pipe, its
    stdin) passes, as it does for a file, so the hook waits in the queue and runs once there
    is room; it is not failed for good ("cannot run ...: Too many open files")."""
    drop = tmp_path / "drop"
    drop.mkdir()
    script, ran = tmp_path / "hook.py", tmp_path / "ran.txt"
    script.write_text(HOOK)
    watch = {"path": str(drop), "on_done": [sys.executable, str(script), str(ran)]}
    daemon = make_daemon(base_config(tmp_path, sandbox.url, [watch], workers=1)).start()
    daemon.wait_scan()
    (drop / "first.bin").write_bytes(b"warms the connection and the hook runner up")
    wait_until(ran.exists, 60, "the first file's hook")
    old = resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE)
    held = {int(fd) for fd in os.listdir(f"/proc/{daemon.pid}/fd")}
    lowest_free = min(set(range(len(held) + 1)) - held)
    # Room for a file's folder, the file and its sidecar; not for a hook's five (its stdin,
    # the pipe of its output and the one that reports its exec).
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, (lowest_free + 4, old[1]))
    (drop / "second.bin").write_bytes(b"done while descriptors are short")
    wait_until(lambda: "Too many open files" in daemon.log(), 60, "the hook meeting it")
    resource.prlimit(daemon.pid, resource.RLIMIT_NOFILE, old)
    wait_until(lambda: len(ran.read_text().splitlines()) == 2, 60, "the second file's hook")
    daemon.wait_counts(done=2, timeout=60)
    status = wait_until(lambda: daemon.poll_status(), 30, "a status reply")
    assert status["failing_hooks"] == []
    assert "hook for" not in daemon.log(), "a hook was failed by the shortage"
