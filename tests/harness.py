"""The real daemon in a subprocess against the sandbox over loopback, as tests and benchmarks
drive it: the sandbox's control API, a config, `syncd run`, and waits with deadlines.

Shared by tests/conftest.py (fixtures) and tests/bench/common.py (figures); it imports
nothing of pytest, so a benchmark runs without it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import requests
import tomli_w
from prometheus_client.parser import text_string_to_metric_families

from syncd.control.status import ask
from syncd.sandbox import credentials

T = TypeVar("T")
DEADLINE = 60.0
SIDECAR_SUFFIX = ".syncd.toml"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
"""Scraped samples by (name, sorted labels)."""


def wait_until(
    probe: Callable[[], T | None],
    timeout: float = DEADLINE,
    what: str = "condition",
    interval: float = 0.05,
) -> T:
    """Poll `probe` until it returns something truthy; AssertionError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    """A loopback port nobody listens on (for [metrics] listen)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    """Every sample of a /metrics page, and every family's type by name."""
    reply = requests.get(url, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"].startswith("text/plain")
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(reply.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, types


class SandboxClient:
    """The sandbox's control API under /_sandbox/."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def get(self, path: str) -> Any:
        reply = self.http.get(f"{self.url}/_sandbox/{path}", timeout=30)
        reply.raise_for_status()
        return reply.json()

    def post(self, path: str, body: dict[str, Any]) -> Any:
        reply = self.http.post(f"{self.url}/_sandbox/{path}", json=body, timeout=30)
        reply.raise_for_status()
        return reply.json()

    def fault(self, **spec: Any) -> None:
        self.post("faults", spec)

    def clear_faults(self) -> None:
        self.http.delete(f"{self.url}/_sandbox/faults", timeout=30).raise_for_status()

    def reset(self) -> None:
        """Forget objects, sessions, requests, faults and settings (stored bytes too)."""
        self.post("reset", {})

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("requests"))

    def ton_objects(self) -> list[dict[str, Any]]:
        return list(self.get("ton/objects"))

    def ton_sessions(self) -> list[dict[str, Any]]:
        return list(self.get("ton/sessions"))

    def ton_span(self) -> tuple[float, float]:
        """(first TON request started, last TON reply finished), sandbox-clock epoch time."""
        ton = [r for r in self.requests() if r["path"].startswith("/1.1/ton/")]
        return float(min(r["started"] for r in ton)), float(max(r["finished"] or 0 for r in ton))


def base_config(
    root: Path,
    sandbox_url: str,
    watches: list[dict[str, Any]] | None = None,
    **daemon: Any,
) -> dict[str, Any]:
    """The sandbox's account and one TON service "ads"; `watches` default to that service."""
    return {
        "daemon": {
            "state_dir": str(root / "state"),
            "status_socket": str(root / "run" / "status.sock"),
            "settle_seconds": 0.5,
            "log_level": "debug",
            **daemon,
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
        "watch": [{"service": "ads", **w} for w in watches or []],
    }


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


class RunningDaemon:
    """`python -m syncd run -c CONFIG` in a subprocess, its log in ROOT/daemon.log."""

    python = sys.executable
    """The interpreter syncd runs under (a benchmark may give it an installed copy)."""

    def __init__(
        self, root: Path, config: dict[str, Any], env: dict[str, str] | None = None
    ) -> None:
        self.root = root
        self.config_path = root / "config.toml"
        self.log_path = root / "daemon.log"
        self.config = config
        self.env = env or {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        """time.monotonic() just before the process was spawned."""
        self.write_config(config)

    def __enter__(self) -> RunningDaemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()

    @property
    def socket(self) -> Path:
        return Path(self.config["daemon"]["status_socket"])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def write_config(self, config: dict[str, Any]) -> None:
        self.config = config
        self.config_path.write_text(tomli_w.dumps(config))
        os.chmod(self.config_path, 0o600)

    def start(self, wait: bool = True) -> RunningDaemon:
        assert self.process is None or self.process.poll() is not None
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [self.python, "-m", "syncd", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=self.env,
            )
        if wait:
            wait_until(self.poll_status, 30, "the status socket", interval=0.02)
        return self

    def poll_status(self) -> dict[str, Any] | None:
        """The status reply; None while nobody answers; AssertionError once syncd exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"syncd exited {self.process.returncode}:\n{self.log()[-4000:]}")
        try:
            reply = ask(self.socket, {"command": "status"}, timeout=2)
        except Exception:
            return None
        return reply if "pid" in reply else None

    def status(self) -> dict[str, Any]:
        return ask(self.socket, {"command": "status"}, timeout=10)

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.python, "-m", "syncd", *args, "-c", str(self.config_path)],
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
        """SIGTERM and the exit code; kill -9 if it has not exited within `timeout`."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """kill -9, as a crash or a power cut would stop it."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)

    def wait_counts(
        self, timeout: float = DEADLINE, interval: float = 0.05, **wanted: int
    ) -> dict[str, int]:
        """Poll the status until every count named in `wanted` has that value; a failure
        nobody waits for ends the wait at once, with the daemon's own reasons."""

        def probe() -> dict[str, int] | None:
            reply = self.poll_status()
            if reply is None:
                return None
            counts: dict[str, int] = reply["counts"]
            if counts.get("failed") and "failed" not in wanted:
                raise AssertionError(f"uploads failed: {json.dumps(reply['failures'])}")
            return counts if all(counts.get(k) == v for k, v in wanted.items()) else None

        try:
            return wait_until(probe, timeout, f"counts {wanted}", interval)
        except AssertionError as exc:
            raise AssertionError(
                f"{exc}\n{json.dumps(self.status())}\n{self.log()[-4000:]}"
            ) from None

    def wait_scan(self, timeout: float = DEADLINE) -> dict[str, Any]:
        """The status reply once the start-up full scan has completed."""

        def probe() -> dict[str, Any] | None:
            reply = self.poll_status()
            return reply if reply is not None and reply["scan"]["completed"] >= 1 else None

        return wait_until(probe, timeout, "the start-up scan")
