"""End-to-end harness: the real daemon in a subprocess against the sandbox over loopback.

Every wait is bounded by a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
import tomli_w

from syncd.sandbox import credentials
from syncd.sandbox.server import Sandbox
from syncd.status import ask

T = TypeVar("T")
DEADLINE = 60.0


def wait_until(probe: Callable[[], T], timeout: float = DEADLINE, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


class SandboxClient:
    """The sandbox's control API, as a test drives it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def get(self, path: str) -> Any:
        reply = self.http.get(f"{self.url}/_sandbox/{path}", timeout=10)
        reply.raise_for_status()
        return reply.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        reply = self.http.post(f"{self.url}/_sandbox/{path}", json=body, timeout=10)
        reply.raise_for_status()
        return reply.json()

    def fault(self, **spec: Any) -> None:
        self.post("faults", spec)

    def clear_faults(self) -> None:
        self.http.delete(f"{self.url}/_sandbox/faults", timeout=10).raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("requests"))

    def ton_objects(self) -> list[dict[str, Any]]:
        return list(self.get("ton/objects"))

    def ton_sessions(self) -> list[dict[str, Any]]:
        return list(self.get("ton/sessions"))


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxClient]:
    with Sandbox(data_dir=tmp_path / "sandbox-data") as server:
        yield SandboxClient(server.url)


class RunningDaemon:
    """`syncd run` in a subprocess, with its log in a file the test can read."""

    def __init__(self, root: Path, config: dict[str, Any], env: dict[str, str]) -> None:
        self.root = root
        self.config_path = root / "config.toml"
        self.log_path = root / "daemon.log"
        self.config = config
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None
        self.write_config(config)

    @property
    def socket(self) -> Path:
        return Path(self.config["daemon"]["status_socket"])

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_path.write_text(tomli_w.dumps(config))
        os.chmod(self.config_path, 0o600)

    def start(self, wait: bool = True) -> RunningDaemon:
        assert self.process is None or self.process.poll() is not None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "syncd", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=self.env,
            )
        if wait:
            wait_until(self._answers, 30, "the status socket")
        return self

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"syncd exited {self.process.returncode}:\n{self.log()}")
        try:
            return "pid" in ask(self.socket, {"command": "status"}, timeout=2)
        except Exception:
            return False

    def status(self) -> dict[str, Any]:
        return ask(self.socket, {"command": "status"})

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "syncd", *args, "-c", str(self.config_path)],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=60,
            check=False,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def wait_counts(self, timeout: float = DEADLINE, **wanted: int) -> dict[str, int]:
        def probe() -> dict[str, int] | None:
            counts: dict[str, int] = self.status()["counts"]
            return counts if all(counts.get(k) == v for k, v in wanted.items()) else None

        try:
            return wait_until(probe, timeout, f"counts {wanted}")
        except AssertionError:
            raise AssertionError(
                f"counts never reached {wanted}: {json.dumps(self.status())}\n{self.log()[-4000:]}"
            ) from None


def base_config(root: Path, sandbox_url: str) -> dict[str, Any]:
    """A config with the sandbox's account and a TON service; tests add watches."""
    return {
        "daemon": {
            "state_dir": str(root / "state"),
            "status_socket": str(root / "run" / "status.sock"),
            "settle_seconds": 0.5,
            "log_level": "debug",
        },
        "accounts": {
            "main": {
                "consumer_key": credentials.CONSUMER_KEY,
                "consumer_secret": credentials.CONSUMER_SECRET,
                "access_token": credentials.ACCESS_TOKEN,
                "access_token_secret": credentials.ACCESS_TOKEN_SECRET,
            }
        },
        "services": {
            "ads": {
                "type": "ton",
                "account": "main",
                "bucket": credentials.TON_BUCKET_TA_PARTNER,
                "endpoint": sandbox_url,
            }
        },
        "watch": [],
    }


@pytest.fixture
def make_daemon(tmp_path: Path) -> Iterator[Callable[..., RunningDaemon]]:
    """Build (not start) a daemon; every one built is stopped at the end of the test."""
    built: list[RunningDaemon] = []
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}

    def make(config: dict[str, Any], **extra_env: str) -> RunningDaemon:
        daemon = RunningDaemon(tmp_path, config, {**env, **extra_env})
        built.append(daemon)
        return daemon

    yield make
    for daemon in built:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.kill()


def read_sidecar(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.with_name(path.name + ".syncd.toml").read_text())


def sidecar_exists(path: Path) -> bool:
    return path.with_name(path.name + ".syncd.toml").exists()


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """A test that leaves threads running has not cleaned up after itself."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        time.sleep(0.05)
    raise AssertionError(f"threads leaked: {[t.name for t in leaked]}")
