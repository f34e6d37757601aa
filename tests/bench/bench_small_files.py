"""5,000 small files dropped at once into a TON folder: files/s end to end vs a bare client.

syncd: first file written -> last sidecar (hash, journal, POST, sidecar with fsync, for
every file; `workers = 4`). Baselines: bare_client.py POSTing the same files with requests
and OAuth1, same headers, same sandbox, same run: from 4 threads (a Session each; the
target is about this one) and one after the other from one thread; each once before syncd
and once after each round of syncd runs (best counts; the sandbox is reset between runs).
The sandbox keeps what it receives on /dev/shm: on disk, its file an upload cost the bare
run before any syncd round (no files removed yet) far less than every later run, the
baseline's best came from that state alone (5.57 s against 7.80-8.11 s after each round;
RECENTLY_DELETED is the reason).
The settle wait (`settle_seconds`, a latency paid once, not per file) counts against
syncd; the rate without it and the rate of the upload phase alone (first TON request ->
last sidecar) are shown too, and CPU-seconds a file of the daemon and of the sandbox (this
process), which load on the machine does not inflate the way it does wall time.
`--before SRC` runs the daemon from another source tree too (`git archive COMMIT syncd |
tar -x -C SRC`), in turn with this one, for a before/after measured in one run;
`--rounds N` runs each N times (default 3, quick 1): syncd's best of N against the bare
client's best of N + 1. Nothing is removed between rounds (RECENTLY_DELETED says why).
Issues 2 and 9.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    Control,
    Daemon,
    KiB,
    bare_client,
    base_config,
    cpu_seconds,
    cpu_times,
    daemon_env,
    parse_args,
    print_table,
    ratio_figure,
    sandbox,
    sidecar_time,
    workdir,
)

TARGET = 0.7
"""syncd's files/s / the bare loop's files/s, at least."""
WORKERS = 4
BARE_THREADS = 4
"""The issue's baseline: a bare client from as many threads as syncd has workers."""
SETTLE = 0.2
RECENTLY_DELETED = 360
"""Seconds during which ext4 without a journal (this machine's root file system) will not
hand out an inode freed that recently, and finds a free one by stepping over each of them
(`recently_deleted` in the kernel's find_inode_bit). After a mass removal, every file
created in the same block group costs up to 16x more kernel time: the bench's own writer
took 0.2 s for the 5,000 files on a quiet file system and 3.3-3.8 s minutes after a
removal, and syncd's sidecars pay the same. So nothing is removed between rounds (each
has folders of its own, removed with the work folder at the end), and the bench says when
writing the files was slow (a removal on the same file system in the last minutes)."""
SLOW_WRITE = 1.0
"""Seconds the writer may take for the burst before the figure is flagged as skewed."""


def make_contents(count: int, seed: int = 2) -> list[bytes]:
    """`count` distinct random payloads of 1-4 KiB (distinct: syncd deduplicates)."""
    rng = random.Random(seed)
    return [os.urandom(rng.randint(1 * KiB, 4 * KiB)) for _ in range(count)]


def write_all(folder: Path, contents: list[bytes]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"f{n:05d}.csv" for n in range(len(contents))]
    for path, data in zip(paths, contents, strict=True):
        path.write_bytes(data)
    return paths


@dataclass
class Run:
    """One syncd run over the burst."""

    e2e: float
    """First file written -> last sidecar."""
    upload_phase: float
    """First TON request -> last sidecar."""
    written: float
    first_request: float
    daemon_user: float
    daemon_system: float
    sandbox_cpu: float


def run_syncd(
    root: Path, control: Control, contents: list[bytes], source: Path | None, name: str
) -> Run:
    """One round in folders of its own (`name`), left in place: see RECENTLY_DELETED."""
    count = len(contents)
    drop = root / f"drop-{name}"
    drop.mkdir()
    state = root / f"state-{name}"
    config = base_config(
        root,
        control.url,
        [{"path": str(drop)}],
        daemon={"workers": WORKERS, "settle_seconds": SETTLE, "state_dir": str(state)},
    )
    with Daemon(root, config, env=daemon_env(source)) as daemon:
        daemon.start()
        daemon.wait_scan(30)
        cpu_before, sandbox_before = cpu_times(daemon.pid), cpu_seconds(os.getpid())
        started = time.time()
        writer_before = time.thread_time()
        paths = write_all(drop, contents)
        writer_cpu = time.thread_time() - writer_before
        written = time.time()
        daemon.wait_counts(timeout=900, interval=0.5, done=count)
        user, system = (a - b for a, b in zip(cpu_times(daemon.pid), cpu_before, strict=True))
        sandbox_used = cpu_seconds(os.getpid()) - sandbox_before - writer_cpu
        last = max(sidecar_time(p) for p in paths)
        first_request = control.ton_span()[0]
    if len(control.get("ton/objects")) != count:
        raise RuntimeError("the sandbox does not hold every upload")
    control.reset()
    return Run(
        last - started,
        last - first_request,
        written - started,
        first_request - started,
        user,
        system,
        sandbox_used,
    )


def run_bare(control: Control, listing: Path, threads: int) -> tuple[float, float]:
    """(seconds, sandbox CPU-seconds) of the bare client over the listing."""
    sandbox_before = cpu_seconds(os.getpid())
    if threads == 1:
        seconds = bare_client("single", control.url, str(listing))["seconds"]
    else:
        seconds = bare_client("threads", str(threads), control.url, str(listing))["seconds"]
    sandbox_used = cpu_seconds(os.getpid()) - sandbox_before
    control.reset()
    return seconds, sandbox_used


def main() -> None:
    def options(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--before", type=Path, help="a syncd source tree to compare")
        parser.add_argument(
            "--rounds", type=int, help="syncd runs per variant (default 3, quick 1)"
        )

    args = parse_args(__doc__, options)
    count = 2000 if args.quick else 5000
    rounds = args.rounds or (1 if args.quick else 3)
    contents = make_contents(count)
    variants: list[tuple[str, Path | None]] = [("syncd", None)]
    if args.before is not None:
        variants.insert(0, ("before", args.before))
    runs: dict[str, list[Run]] = {name: [] for name, _ in variants}
    bare: dict[int, list[tuple[float, float]]] = {1: [], BARE_THREADS: []}
    with workdir("small") as root, sandbox(root, in_memory=True) as control:
        bare_paths = write_all(root / "bare", contents)
        listing = root / "bare.list"
        listing.write_text("".join(f"{p}\n" for p in bare_paths))
        for threads in bare:
            bare[threads].append(run_bare(control, listing, threads))
        for turn in range(rounds):
            for name, source in variants:
                runs[name].append(run_syncd(root, control, contents, source, f"{name}-{turn}"))
            for threads in reversed(bare):
                bare[threads].append(run_bare(control, listing, threads))

    def ms(seconds: float) -> str:
        return f"{seconds / count * 1000:.2f} ms"

    threaded_rate = count / min(s for s, _ in bare[BARE_THREADS])
    single_rate = count / min(s for s, _ in bare[1])
    figures = []
    notes = []
    for name, rounds in runs.items():
        label = "" if len(runs) == 1 else f"{name}: "
        run = min(rounds, key=lambda r: r.e2e)
        figures += [
            ratio_figure(
                f"{label}end to end vs {BARE_THREADS} threads",
                count / run.e2e,
                threaded_rate,
                "files/s",
                at_least=TARGET,
            ),
            ratio_figure(
                f"{label}without settle",
                count / (run.e2e - SETTLE),
                threaded_rate,
                "files/s",
                at_least=TARGET,
            ),
            ratio_figure(
                f"{label}upload phase", count / run.upload_phase, threaded_rate, "files/s"
            ),
            ratio_figure(f"{label}end to end vs 1 thread", count / run.e2e, single_rate, "files/s"),
        ]
        least = min(rounds, key=lambda r: r.daemon_user + r.daemon_system)
        notes += [
            f"{label}best of {len(rounds)}: {run.e2e:.2f} s from the first file written to "
            f"the last sidecar; writing the files took {run.written:.2f} s; first TON request "
            f"after {run.first_request:.2f} s",
            f"{label}least daemon CPU {ms(least.daemon_user + least.daemon_system)} a file "
            f"(user {ms(least.daemon_user)}, system {ms(least.daemon_system)}), sandbox CPU "
            f"{ms(least.sandbox_cpu)} a file; every round: "
            + ", ".join(ms(r.daemon_user + r.daemon_system) for r in rounds),
        ]
        if run.written > SLOW_WRITE:
            notes.append(
                f"{label}WARNING: writing the files took {run.written:.2f} s: files were removed"
                f" on this file system in the last {RECENTLY_DELETED // 60} minutes (see"
                " RECENTLY_DELETED); the figure is skewed, run again later"
            )
    for threads, timings in bare.items():
        notes.append(
            f"bare, {threads} thread(s), before syncd and after each round (best counts): "
            + ", ".join(f"{s:.2f} s" for s, _ in timings)
            + f"; sandbox CPU {ms(min(c for _, c in timings))} a file"
        )
    print_table(
        f"{count} files of 1-4 KiB dropped at once (workers={WORKERS}, settle_seconds={SETTLE})",
        figures,
        notes,
    )


if __name__ == "__main__":
    main()
