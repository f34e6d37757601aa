"""Fixtures for the end-to-end tests: the sandbox in this process, the daemon in a subprocess
(tests/harness.py), a check that no test leaves threads behind, and the reliability suite's
scale and figures.

Every wait is bounded by a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import RunningDaemon, SandboxClient, base_config, sidecar_of, wait_until
from hypothesis import HealthCheck, settings
from pgcluster import Cluster, find_binaries

from syncd.sandbox.server import Sandbox

__all__ = ["RunningDaemon", "SandboxClient", "base_config", "wait_until"]

# Property tests run a modest number of examples so the suite stays fast; set
# SYNCD_HYPOTHESIS=thorough for 500 a property.
settings.register_profile(
    "syncd",
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", settings.get_profile("syncd"), max_examples=500)
settings.load_profile(os.environ.get("SYNCD_HYPOTHESIS", "syncd"))

SCALE = max(1, int(os.environ.get("RELIABILITY_SCALE", "1")))
"""tests/reliability multiplies its work (files, kills, clients, rounds) by this. CI runs 1
(a few minutes); a soak runs it higher (README, "Development")."""
_FIGURES: list[tuple[str, dict[str, Any]]] = []


class Figures:
    """What one test measured; printed as it comes (with -s) and again at the end of the run,
    and written as JSON to $RELIABILITY_FIGURES when that is set."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, Any] = {"scale": SCALE}

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value
        print(f"{self.name}: {key} = {value}")


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Iterator[Figures]:
    recorded = Figures(request.node.name)
    yield recorded
    _FIGURES.append((recorded.name, recorded.values))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _FIGURES:
        return
    terminalreporter.section(f"reliability figures (RELIABILITY_SCALE={SCALE})")
    for name, values in _FIGURES:
        terminalreporter.write_line(f"{name}: " + ", ".join(f"{k}={v}" for k, v in values.items()))
    if target := os.environ.get("RELIABILITY_FIGURES"):
        Path(target).write_text(json.dumps(dict(_FIGURES), indent=2))


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxClient]:
    with Sandbox(data_dir=tmp_path / "sandbox-data") as server:
        client = SandboxClient(server.url)
        yield client
        client.http.close()


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


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One throwaway PostgreSQL server for the whole run (fleet mode's journal)."""
    pytest.importorskip("psycopg", reason="the fleet extra (psycopg) is not installed")
    binaries = find_binaries()
    if binaries is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql")
    cluster = Cluster(binaries).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: Cluster) -> str:
    """A fresh, empty database of its own for each test; its password is in
    `postgres_cluster.password_file`."""
    return postgres_cluster.database()


def read_sidecar(path: Path) -> dict[str, Any]:
    return tomllib.loads(sidecar_of(path).read_text())


def sidecar_exists(path: Path) -> bool:
    return sidecar_of(path).exists()


@pytest.fixture
def other_fs(tmp_path: Path) -> Iterator[Path]:
    """A folder on a file system of its own (a tmpfs): moves across file systems."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a second file system needs root")
    folder = tmp_path / "other-fs"
    folder.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)]).returncode:
        pytest.skip("mount -t tmpfs is not permitted here")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


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
