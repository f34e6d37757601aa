"""What every benchmark shares: the sandbox, the daemon as a subprocess, clocks and a table.

The daemon runs exactly as the end-to-end tests run it (`python -m syncd run -c CONFIG`,
see tests/conftest.py) against the in-process sandbox over loopback. Every wait has a
deadline, every daemon started is stopped (SIGTERM, then SIGKILL), every temporary folder
is removed. Baseline clients run in a subprocess of their own (bare_client.py), as the
daemon does, so neither side shares the sandbox's interpreter and GIL.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import requests
import tomli_w

from syncd.sandbox import credentials
from syncd.sandbox.server import Sandbox
from syncd.status import ask

T = TypeVar("T")
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
BENCH_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SIDECAR_SUFFIX = ".syncd.toml"


# -- command line and the printed table --------------------------------------------------


def parse_args(doc: str | None) -> argparse.Namespace:
    """Every benchmark takes `--quick` (smaller sizes, for a run of the whole set)."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a faster run")
    return parser.parse_args()


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured figure against its baseline; `ratio` is what the target is about."""

    name: str
    value: str
    baseline: str
    ratio: float | None
    target: str
    passed: bool | None
    """None: reported only, no target."""


def ratio_figure(
    name: str,
    value: float,
    baseline: float,
    unit: str,
    at_least: float | None = None,
    at_most: float | None = None,
) -> Figure:
    """value / baseline checked against `>= at_least` or `<= at_most`."""
    ratio = value / baseline if baseline else float("inf")
    if at_least is not None:
        target, passed = f">= {at_least:g}x", ratio >= at_least
    elif at_most is not None:
        target, passed = f"<= {at_most:g}x", ratio <= at_most
    else:
        target, passed = "-", None
    return Figure(name, f"{value:.3f} {unit}", f"{baseline:.3f} {unit}", ratio, target, passed)


def print_table(title: str, figures: list[Figure], notes: list[str] | None = None) -> None:
    rows = [("figure", "syncd", "baseline", "ratio", "target", "result")]
    for f in figures:
        verdict = "-" if f.passed is None else "PASS" if f.passed else "MISS"
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}x"
        rows.append((f.name, f.value, f.baseline, ratio, f.target, verdict))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(f"\n== {title}")
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    for note in notes or []:
        print(f"  * {note}")
    sys.stdout.flush()


# -- waiting and timing --------------------------------------------------------------------


def wait_until(
    probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; RuntimeError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def best_of(runs: int, measure: Callable[[], float]) -> float:
    return min(measure() for _ in range(runs))


def timed_shell(command: str) -> float:
    """Wall seconds of one shell command, which must succeed."""
    started = time.perf_counter()
    subprocess.run(command, shell=True, check=True, timeout=600)
    return time.perf_counter() - started


def fmt_bytes(size: float) -> str:
    return f"{size / MiB:.1f} MiB"


# -- files -----------------------------------------------------------------------------------


@contextlib.contextmanager
def workdir(name: str) -> Iterator[Path]:
    """A fresh folder under /tmp, removed afterwards whatever happens."""
    with tempfile.TemporaryDirectory(prefix=f"syncd-bench-{name}-", dir="/tmp") as tmp:
        yield Path(tmp)


def write_random(path: Path, size: int, piece: int = 4 * MiB) -> None:
    """`size` bytes of os.urandom (unique content: syncd deduplicates by sha256)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as out:
        left = size
        while left:
            n = min(left, piece)
            out.write(os.urandom(n))
            left -= n


def warm(path: Path) -> None:
    """Read a file once so that it sits in the page cache."""
    with path.open("rb") as file:
        while file.read(8 * MiB):
            pass


def sidecar_of(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def sidecar_time(path: Path) -> float:
    """When the sidecar of `path` appeared: its ctime, which the atomic rename sets."""
    return os.stat(sidecar_of(path)).st_ctime


# -- the process under test: /proc -------------------------------------------------------------


def proc_status_kib(pid: int, key: str) -> int:
    """A `kB` line of /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_seconds(pid: int) -> float:
    """utime + stime of all of a process's threads, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


class RssSampler:
    """Peak RSS of a process over a stretch of time: VmHWM, reset at the start through
    /proc/PID/clear_refs; where the kernel refuses that, VmRSS polled every `interval` s
    (polling runs a thread in this process, beside the sandbox, so it is the fallback)."""

    def __init__(self, pid: int, interval: float = 0.01) -> None:
        self.pid = pid
        self.interval = interval
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            self._thread = threading.Thread(target=self._poll, name="rss", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is None:
            self.peak_kib = proc_status_kib(self.pid, "VmHWM")
        else:
            self._stop.set()
            self._thread.join(5)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
            self._stop.wait(self.interval)

    @property
    def peak_bytes(self) -> int:
        return self.peak_kib * KiB


# -- the sandbox -------------------------------------------------------------------------------


class Control:
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

    def delete(self, path: str) -> None:
        self.http.delete(f"{self.url}/_sandbox/{path}", timeout=30).raise_for_status()

    def fault(self, **spec: Any) -> None:
        self.post("faults", spec)

    def reset(self) -> None:
        """Forget objects, sessions, requests, faults and settings (stored bytes too)."""
        self.post("reset", {})

    def requests(self) -> list[dict[str, Any]]:
        return list(self.get("requests"))

    def ton_sessions(self) -> list[dict[str, Any]]:
        return list(self.get("ton/sessions"))

    def ton_span(self) -> tuple[float, float]:
        """(first TON request started, last TON reply finished), sandbox-clock epoch time."""
        ton = [r for r in self.requests() if r["path"].startswith("/1.1/ton/")]
        return float(min(r["started"] for r in ton)), float(max(r["finished"] or 0 for r in ton))


@contextlib.contextmanager
def sandbox(root: Path, in_memory: bool = False) -> Iterator[Control]:
    """The sandbox in this process, its stored bytes under `root`; with `in_memory`, in a
    temporary folder on /dev/shm when there is one, so that the emulator's own disk writes
    (and their writeback) do not add noise to a throughput figure about the client."""
    with contextlib.ExitStack() as stack:
        data_dir = root / "sandbox-data"
        if in_memory and Path("/dev/shm").is_dir():
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(dir="/dev/shm")))
        server = stack.enter_context(Sandbox(data_dir=data_dir))
        control = Control(server.url)
        stack.callback(control.http.close)
        yield control


# -- the daemon --------------------------------------------------------------------------------


def base_config(
    root: Path,
    sandbox_url: str,
    watches: list[dict[str, Any]],
    daemon: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A config as tests/conftest.py builds it: the sandbox account, one TON service "ads"."""
    return {
        "daemon": {
            "state_dir": str(root / "state"),
            "status_socket": str(root / "run" / "status.sock"),
            "log_level": "info",
            **(daemon or {}),
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
                **(service or {}),
            }
        },
        "watch": [{"service": "ads", **w} for w in watches],
    }


class Daemon:
    """`python -m syncd run -c CONFIG` in a subprocess; its log goes to ROOT/daemon.log."""

    def __init__(self, root: Path, config: dict[str, Any]) -> None:
        self.root = root
        self.config = config
        self.config_path = root / "config.toml"
        self.log_path = root / "daemon.log"
        self.socket = Path(config["daemon"]["status_socket"])
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        """time.monotonic() just before the process was spawned."""
        self.config_path.write_text(tomli_w.dumps(config))
        os.chmod(self.config_path, 0o600)
        self.env = {
            k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")
        }

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, wait: bool = True) -> Daemon:
        assert self.process is None or self.process.poll() is not None
        with self.log_path.open("ab") as log:
            self.started_at = time.monotonic()
            self.process = subprocess.Popen(
                [PYTHON, "-m", "syncd", "run", "-c", str(self.config_path)],
                stdout=log,
                stderr=log,
                env=self.env,
            )
        if wait:
            wait_until(self.answers, 60, "the status socket", interval=0.02)
        return self

    def answers(self) -> bool:
        return self.poll_status() is not None

    def poll_status(self) -> dict[str, Any] | None:
        """The status reply; None while nobody answers; RuntimeError once syncd has exited."""
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"syncd exited {self.process.returncode}:\n{self.log()[-4000:]}")
        try:
            reply = ask(self.socket, {"command": "status"}, timeout=2)
        except Exception:
            return None
        return reply if "pid" in reply else None

    def status(self) -> dict[str, Any]:
        return ask(self.socket, {"command": "status"}, timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_counts(self, timeout: float, interval: float = 0.1, **wanted: int) -> dict[str, int]:
        """Poll `syncd status` until every count named in `wanted` has that value."""

        def probe() -> dict[str, int] | None:
            reply = self.poll_status()
            if reply is None:
                return None
            counts: dict[str, int] = reply["counts"]
            if counts.get("failed"):
                raise RuntimeError(f"uploads failed: {json.dumps(reply['failures'])}")
            return counts if all(counts.get(k) == v for k, v in wanted.items()) else None

        return wait_until(probe, timeout, f"counts {wanted}", interval)

    def wait_scan(self, timeout: float, interval: float = 0.05) -> dict[str, Any]:
        """The status reply once the start-up full scan has completed."""

        def probe() -> dict[str, Any] | None:
            reply = self.poll_status()
            return reply if reply is not None and reply["scan"]["completed"] >= 1 else None

        return wait_until(probe, timeout, "the start-up scan", interval)

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout`."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """kill -9, as a crash or a power cut would stop it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the baseline client --------------------------------------------------------------------


def bare_client(*args: str, timeout: float = 1800) -> dict[str, Any]:
    """Run bare_client.py in a subprocess and return the JSON it prints."""
    done = subprocess.run(
        [PYTHON, str(BENCH_DIR / "bare_client.py"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"bare_client.py {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result
