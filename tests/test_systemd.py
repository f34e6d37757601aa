"""The daemon as a systemd service: notify protocol, watchdog, reload, socket activation."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SandboxClient, base_config, sidecar_exists, wait_until

try:
    import systemd.daemon  # noqa: F401

    HAVE_SYSTEMD_PYTHON = True
except ImportError:
    HAVE_SYSTEMD_PYTHON = False


class NotifyListener:
    """A NOTIFY_SOCKET as systemd binds it, recording every datagram with its time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []
        self._stop = False
        self._thread = threading.Thread(target=self._receive, name="notify-listener")
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.sock.close()

    def with_line(self, line: str) -> list[tuple[float, str]]:
        return [(t, m) for t, m in self.messages if line in m.split("\n")]

    def first_index(self, prefix: str) -> int | None:
        for index, (_, message) in enumerate(self.messages):
            if any(part.startswith(prefix) for part in message.split("\n")):
                return index
        return None


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    listener = NotifyListener(tmp_path / "notify.sock")
    yield listener
    listener.close()


def hide_systemd_python(tmp_path: Path) -> dict[str, str]:
    """An environment in which `import systemd` fails, to prove the built-in protocol."""
    shim = tmp_path / "no-systemd"
    (shim / "systemd").mkdir(parents=True)
    (shim / "systemd" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
    return {"PYTHONPATH": f"{shim}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def drop_config(tmp_path: Path, sandbox: SandboxClient) -> dict[str, Any]:
    config = base_config(tmp_path, sandbox.url)
    (tmp_path / "drop").mkdir(exist_ok=True)
    config["watch"] = [{"path": str(tmp_path / "drop"), "service": "ads"}]
    return config


@pytest.mark.parametrize("with_systemd_python", [False, True], ids=["builtin", "systemd-python"])
def test_ready_watchdog_status_stopping(
    tmp_path, sandbox, make_daemon, notify, with_systemd_python
):
    if with_systemd_python and not HAVE_SYSTEMD_PYTHON:
        pytest.skip("systemd-python is not installed")
    env = {} if with_systemd_python else hide_systemd_python(tmp_path)
    daemon = make_daemon(
        drop_config(tmp_path, sandbox),
        NOTIFY_SOCKET=str(notify.path),
        WATCHDOG_USEC="2000000",
        **env,
    ).start()
    wait_until(lambda: notify.with_line("READY=1"), 10, "READY=1")
    ready_at = notify.with_line("READY=1")[0][0]
    wait_until(
        lambda: len([t for t, _ in notify.with_line("WATCHDOG=1") if t - ready_at <= 3.0]) >= 2,
        10,
        "two WATCHDOG=1 within 3 s of READY=1",
    )
    (tmp_path / "drop" / "a.txt").write_bytes(b"a")
    daemon.wait_counts(done=1)
    wait_until(
        lambda: any("1 done" in m for _, m in notify.messages if m.startswith("STATUS=")),
        10,
        "a STATUS= line counting the upload",
    )
    daemon.signal(signal.SIGTERM)
    assert daemon.stop() == 0
    assert notify.with_line("STOPPING=1")
    assert "hidden by the test" not in daemon.log()


def test_reload_adds_a_watch_and_keeps_in_flight_uploads(tmp_path, sandbox, make_daemon, notify):
    config = drop_config(tmp_path, sandbox)
    daemon = make_daemon(config, NOTIFY_SOCKET=str(notify.path)).start()
    wait_until(lambda: notify.with_line("READY=1"), 10, "READY=1")
    sandbox.fault(method="POST", path="/1.1/ton/", delay_ms=2500, count=1)
    slow = tmp_path / "drop" / "in-flight.bin"
    slow.write_bytes(os.urandom(100_000))
    wait_until(lambda: daemon.status()["uploads"], 10, "the upload in flight")
    added = tmp_path / "added"
    added.mkdir()
    early = added / "already-there.txt"
    early.write_bytes(b"was there before the reload")
    config["watch"].append({"path": str(added), "service": "ads"})
    daemon.write_config(config)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: notify.first_index("RELOADING=1") is not None, 10, "RELOADING=1")
    reloading = notify.first_index("RELOADING=1")
    assert reloading is not None
    assert "MONOTONIC_USEC=" in notify.messages[reloading][1]
    wait_until(
        lambda: any("READY=1" in m.split("\n") for _, m in notify.messages[reloading + 1 :]),
        10,
        "READY=1 after the reload",
    )
    late = added / "after-reload.txt"
    late.write_bytes(b"dropped after the reload")
    daemon.wait_counts(done=3)
    assert sidecar_exists(slow) and sidecar_exists(early) and sidecar_exists(late)


def test_reload_with_a_broken_config_keeps_the_old_one(tmp_path, sandbox, make_daemon, notify):
    config = drop_config(tmp_path, sandbox)
    daemon = make_daemon(config, NOTIFY_SOCKET=str(notify.path)).start()
    broken = dict(config)
    broken["daemon"] = {**config["daemon"], "wokers": 3}
    daemon.write_config(broken)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "reload refused" in daemon.log(), 10, "the refusal in the log")
    assert "wokers" in daemon.log()
    (tmp_path / "drop" / "still.txt").write_bytes(b"still watched")
    daemon.wait_counts(done=1)
    assert daemon.process is not None and daemon.process.poll() is None


def test_reload_names_what_waits_for_a_restart(tmp_path, sandbox, make_daemon):
    config = drop_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    changed = {**config, "daemon": {**config["daemon"], "workers": 7, "one_cpu": False}}
    changed["metrics"] = {"listen": "127.0.0.1:9"}
    daemon.write_config(changed)
    daemon.signal(signal.SIGHUP)
    wait_until(lambda: "configuration reloaded" in daemon.log(), 10, "the reload")
    log = daemon.log()
    assert "[daemon] workers changes only when syncd restarts" in log
    assert "[daemon] one_cpu changes only when syncd restarts" in log
    assert "[metrics] changes only when syncd restarts" in log
    assert "status_socket changes" not in log and "[journal] changes" not in log


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="needs systemd-socket-activate"
)
def test_socket_activation_is_used(tmp_path, sandbox, make_daemon):
    config = drop_config(tmp_path, sandbox)
    daemon = make_daemon(config)
    socket_path = Path(config["daemon"]["status_socket"])
    socket_path.parent.mkdir(parents=True)
    with daemon.log_path.open("ab") as log:
        # systemd-socket-activate execs syncd in its own process: the same pid.
        daemon.process = subprocess.Popen(
            [
                "systemd-socket-activate",
                "-l",
                str(socket_path),
                "--fdname=status",
                sys.executable,
                "-m",
                "syncd",
                "run",
                "-c",
                str(daemon.config_path),
            ],
            stdout=log,
            stderr=log,
            env=daemon.env,
        )
    try:
        wait_until(socket_path.exists, 10, "the activated socket")
        shown = daemon.cli("status", "--json")
        assert shown.returncode == 0, shown.stderr + daemon.log()
        assert '"counts"' in shown.stdout
        (tmp_path / "drop" / "via-activation.txt").write_bytes(b"x")
        daemon.wait_counts(done=1)
    finally:
        assert daemon.stop() == 0, daemon.log()
    assert socket_path.exists(), "an activated socket belongs to systemd: never removed by syncd"


def test_secrets_from_the_credentials_directory(tmp_path, sandbox, make_daemon):
    """LoadCredential= puts secrets in $CREDENTIALS_DIRECTORY; the config only names them."""
    config = drop_config(tmp_path, sandbox)
    account = config["accounts"]["main"]
    credentials_dir = tmp_path / "credentials"
    credentials_dir.mkdir(mode=0o700)
    for key in ("consumer_secret", "access_token_secret"):
        (credentials_dir / key).write_text(account.pop(key) + "\n")
        (credentials_dir / key).chmod(0o400)
        account[f"{key}_file"] = "${CREDENTIALS_DIRECTORY}/" + key
    daemon = make_daemon(config, CREDENTIALS_DIRECTORY=str(credentials_dir))
    daemon.config_path.chmod(0o644)  # no secret inside: readable by others is fine
    daemon.start()
    (tmp_path / "drop" / "signed.txt").write_bytes(b"signed with a credential")
    daemon.wait_counts(done=1)
