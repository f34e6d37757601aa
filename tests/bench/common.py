"""What every benchmark shares: the sandbox, the daemon as a subprocess, clocks and a table.

The daemon runs exactly as the end-to-end tests run it, through the same harness
(tests/harness.py: `python -m syncd run -c CONFIG`), against the in-process sandbox over
loopback. Every wait has a
deadline, every daemon started is stopped (SIGTERM, then SIGKILL), every temporary folder
is removed. Baseline clients run in a subprocess of their own (bare_client.py), as the
daemon does, so neither side shares the sandbox's interpreter and GIL.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import harness  # noqa: E402 - found through the line above
from harness import RunningDaemon as Daemon  # noqa: E402
from harness import SandboxClient as Control  # noqa: E402
from harness import sidecar_of, wait_until  # noqa: E402

import syncd  # noqa: E402
from syncd.sandbox.server import Sandbox  # noqa: E402

__all__ = ["Control", "Daemon", "sidecar_of", "wait_until"]
KiB = 1 << 10
MiB = 1 << 20
GiB = 1 << 30
PYTHON = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

PACKAGE = Path(syncd.__file__).parent

# The daemon starts from bytecode, as an installed syncd does (`pip install` compiles it):
# on a fresh clone, or with PYTHONDONTWRITEBYTECODE set, every start would compile syncd's
# sources again, a fifth of a restart's CPU that no user pays.
compileall.compile_dir(PACKAGE, quiet=1)


# -- command line and the printed table --------------------------------------------------


def parse_args(
    doc: str | None, more: Callable[[argparse.ArgumentParser], object] | None = None
) -> argparse.Namespace:
    """Every benchmark takes `--quick` (smaller sizes, for a run of the whole set); `more`
    adds a benchmark's own options."""
    parser = argparse.ArgumentParser(description=(doc or "").strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a faster run")
    if more is not None:
        more(parser)
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


def populate(root: Path, folders: int, per_folder: int = 100) -> int:
    """`folders` x `per_folder` distinct files of 64-1024 bytes under `root`, 50 folders
    to a group (root/gNN/dNNN/rNNN.csv); returns how many."""
    count = 0
    for f in range(folders):
        folder = root / f"g{f // 50:02d}" / f"d{f:03d}"
        folder.mkdir(parents=True)
        for n in range(per_folder):
            (folder / f"r{n:03d}.csv").write_bytes(os.urandom(64 + (n * 37) % 960))
            count += 1
    return count


def warm(path: Path) -> None:
    """Read a file once so that it sits in the page cache."""
    with path.open("rb") as file:
        while file.read(8 * MiB):
            pass


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
    return sum(cpu_times(pid))


def cpu_times(pid: int) -> tuple[float, float]:
    """(utime, stime) of all of a process's threads, from /proc/PID/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


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


def installed_python(root: Path, package: Path = PACKAGE) -> str:
    """An interpreter with syncd (`package`: this checkout's, or another source tree's)
    installed under `root` as `pip install .` leaves it: the package and its bytecode in
    site-packages, without the editable install's import hook (a few hundredths of a second
    at every start, paid only by developers). The dependencies come from this interpreter's
    site-packages, named in a path file (whose folder's own .pth hooks are not run)."""
    venv = root / "installed"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    target = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (target / "syncd-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    shutil.copytree(package, target / "syncd", ignore=shutil.ignore_patterns("__pycache__"))
    compileall.compile_dir(target / "syncd", quiet=1)
    return str(python)


# -- the daemon --------------------------------------------------------------------------------


def base_config(
    root: Path,
    sandbox_url: str,
    watches: list[dict[str, Any]],
    daemon: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The tests' config (harness.base_config) at log level info: debug lines would be part
    of what is measured."""
    config = harness.base_config(
        root, sandbox_url, watches, **{"log_level": "info", **(daemon or {})}
    )
    config["services"]["ads"].update(service or {})
    return config


def daemon_env(source: Path | None) -> dict[str, str] | None:
    """The daemon's environment when it is to run from another syncd source tree (a
    `git worktree` of an older commit, to measure before and after in one run); None: this
    tree's, as installed."""
    if source is None:
        return None
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
    env["PYTHONPATH"] = str(source.resolve())
    env["PYTHONSAFEPATH"] = "1"  # `python -m` would put the working folder's syncd/ first
    return env


def in_process_variants(
    doc: str | None, measure: Callable[[int], Any], quick: int, full: int
) -> tuple[int, list[tuple[str, Any]]]:
    """For benchmarks that time syncd's code in-process: `measure(size)` runs in a child
    Python of this tree, and with `--before SRC` of that tree too (as `daemon_env` runs the
    daemon), each printing its JSON. Returns the size and (label prefix, measured) per tree.
    In the child, measures, prints, and exits."""

    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--before", type=Path, help="a syncd source tree to compare")
        parser.add_argument("--child", type=int, help=argparse.SUPPRESS)

    args = parse_args(doc, options)
    if args.child:
        print(json.dumps(measure(args.child)))
        sys.exit(0)
    size = quick if args.quick else full
    trees: list[tuple[str, Path | None]] = [("", None)]
    if args.before is not None:
        trees = [("before: ", args.before), ("syncd: ", None)]
    script = sys.modules["__main__"].__file__
    assert script is not None
    measured = []
    for label, source in trees:
        out = subprocess.run(
            [PYTHON, script, "--child", str(size)],
            env=daemon_env(source),
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        ).stdout
        measured.append((label, json.loads(out)))
    return size, measured


def uploaded_tree(root: Path, sandbox_url: str, folders: int) -> tuple[Daemon, Path, int, float]:
    """`populate(root / "tree", folders)`, uploaded by a daemon (`workers = 8`) until every
    file is done, for the benchmarks of a restart over done files. Returns that daemon
    (stopped, ready to start again), the tree, the file count and the upload's seconds."""
    tree = root / "tree"
    count = populate(tree, folders)
    config = base_config(
        root, sandbox_url, [{"path": str(tree)}], daemon={"workers": 8, "settle_seconds": 0.2}
    )
    daemon = Daemon(root, config)
    with daemon:
        started = time.monotonic()
        daemon.start()
        daemon.wait_counts(timeout=1800, interval=1.0, done=count)
        return daemon, tree, count, time.monotonic() - started


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
