"""A large resumable TON upload over loopback: syncd vs a bare client, and syncd's memory.

Baseline: bare_client.py doing the resumable protocol by hand (init, then the same 8 MiB
chunks read from the same file with Content-Range, to 201; one requests Session, OAuth1)
against the same sandbox in the same run. syncd gets the file renamed into its watched
folder, complete and closed (the page cache holds it for both). The two take turns on the
same files, with the idle daemon running throughout; best of 3 each. The sandbox keeps
what it receives on /dev/shm: its own disk writeback made the figures swing by +-30%
from run to run. Figures:

(a) upload phase: syncd's first TON request (the sandbox's request journal) -> sidecar,
    vs the bare client's total: what syncd's resumable client costs over the wire. The
    wire span alone (first request -> last reply, both measured by the sandbox) is shown too.
(b) drop -> sidecar, settle excluded, hashing included, vs the bare client's total:
    what a user waits for beyond the settle they configured.
(c) peak RSS of the daemon while it uploads a 200 MiB and a 2 GiB file, with the idle
    daemon's RSS before the drop: memory must be O(chunk), flat in the file's size.
Issue 3.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from common import (
    Control,
    Daemon,
    Figure,
    GiB,
    KiB,
    MiB,
    RssSampler,
    bare_client,
    base_config,
    fmt_bytes,
    parse_args,
    print_table,
    proc_status_kib,
    ratio_figure,
    sandbox,
    sidecar_time,
    warm,
    workdir,
    write_random,
)

CHUNK = 8 * MiB
SETTLE = 0.2
"""settle_seconds; a rename into place settles after min(0.5 s, settle_seconds)."""
UPLOAD_TARGET = 0.9
DROP_TARGET = 0.7
RSS_ALLOWANCE = CHUNK + 64 * MiB
RUNS = 3
"""Timed uploads: the best of this many, for syncd and the bare client alike."""
FLAT_TOLERANCE = 8 * MiB
"""Peaks this close together count as flat in the file's size."""


@dataclass(frozen=True, slots=True)
class Timed:
    """One timed syncd upload; times in seconds."""

    upload: float
    """First TON request -> sidecar."""
    drop_to_sidecar: float
    """File complete (renamed into place) -> sidecar, settle included."""
    to_first_request: float
    """File complete -> first TON request: settle and hashing."""
    wire: float
    """First TON request -> last TON reply, by the sandbox's clock."""
    peak_rss: int


def drop(daemon: Daemon, staged: Path, folder: Path, done: int) -> tuple[float, Path, int]:
    """Rename `staged` into the watched folder; (when it was complete, its path, peak RSS)."""
    target = folder / staged.name
    with RssSampler(daemon.pid) as rss:
        complete = time.time()
        staged.rename(target)
        daemon.wait_counts(timeout=1800, interval=0.1, done=done)
    return complete, target, rss.peak_bytes


def only_complete_session(control: Control, total: int) -> None:
    """Check that one session got exactly the file, then forget it (frees the sandbox's copy)."""
    sessions = control.ton_sessions()
    if len(sessions) != 1 or not sessions[0]["complete"]:
        raise RuntimeError(f"expected one complete session: {sessions}")
    if sessions[0]["bytes_received"] != total:
        raise RuntimeError(f"{sessions[0]['bytes_received']} bytes sent for {total}")
    control.reset()


def idle_rss(daemon: Daemon) -> int:
    """VmRSS of the daemon once started, scanned and quiet, in bytes."""
    daemon.wait_scan(30)
    os.sync()
    time.sleep(1.0)
    return proc_status_kib(daemon.pid, "VmRSS") * KiB


def timed_pair(
    daemon: Daemon, control: Control, staged: Path, watched: Path, done: int
) -> tuple[float, float, Timed]:
    """The bare client, then syncd, on the same file: (bare total, bare wire span, syncd)."""
    size = staged.stat().st_size
    os.sync()  # no dirty pages of the last write to throttle the sandbox's writes
    bare = bare_client("resumable", control.url, str(staged), str(CHUNK))["seconds"]
    first, last = control.ton_span()
    only_complete_session(control, size)
    os.sync()
    complete, path, peak = drop(daemon, staged, watched, done)
    appeared = sidecar_time(path)
    first_request, last_reply = control.ton_span()
    only_complete_session(control, size)
    os.unlink(path)
    timed = Timed(
        upload=appeared - first_request,
        drop_to_sidecar=appeared - complete,
        to_first_request=first_request - complete,
        wire=last_reply - first_request,
        peak_rss=peak,
    )
    return bare, last - first, timed


def rss_run(
    daemon: Daemon, control: Control, staging: Path, watched: Path, size: int, done: int
) -> int:
    """Peak RSS while `daemon` uploads a fresh file of `size` bytes."""
    staged = staging / f"rss-{done}.mp4"
    write_random(staged, size)
    os.sync()
    peak = drop(daemon, staged, watched, done)[2]
    only_complete_session(control, size)
    os.unlink(watched / staged.name)
    return peak


def rss_figure(label: str, peak: int, idle: int) -> Figure:
    return Figure(
        f"(c) peak RSS, {label}",
        fmt_bytes(peak),
        f"idle {fmt_bytes(idle)}",
        None,
        f"<= {fmt_bytes(RSS_ALLOWANCE)}",
        peak <= RSS_ALLOWANCE,
    )


def seconds(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}" for v in values) + " s"


def main() -> None:
    args = parse_args(__doc__)
    size = 256 * MiB if args.quick else GiB
    small, large = 200 * MiB, 512 * MiB if args.quick else 2 * GiB
    with workdir("ton") as root, sandbox(root, in_memory=True) as control:
        staging, watched = root / "staging", root / "drop"
        watched.mkdir()
        config = base_config(
            root,
            control.url,
            [{"path": str(watched)}],
            daemon={"settle_seconds": SETTLE},
            service={"chunk_size": CHUNK},
        )
        bare: list[float] = []
        bare_wire: list[float] = []
        timed: list[Timed] = []
        done = 0
        with Daemon(root, config) as daemon:
            daemon.start()
            idle = idle_rss(daemon)
            for n in range(RUNS):
                staged = staging / f"timed-{n}.mp4"
                write_random(staged, size)
                warm(staged)
                done += 1
                total, wire, ours = timed_pair(daemon, control, staged, watched, done)
                bare.append(total)
                bare_wire.append(wire)
                timed.append(ours)
            same: list[int] = []
            for rss_size in (small, large):
                done += 1
                same.append(rss_run(daemon, control, staging, watched, rss_size, done))
        fresh: list[tuple[int, int]] = []
        for rss_size in (small, large):
            with Daemon(root, config) as daemon:
                daemon.start()
                fresh_idle = idle_rss(daemon)
                done += 1
                peak = rss_run(daemon, control, staging, watched, rss_size, done)
                fresh.append((fresh_idle, peak))

    mib = size / MiB
    best_bare = min(bare)
    small_label, large_label = f"{fmt_bytes(small)} file", f"{fmt_bytes(large)} file"
    figures = [
        ratio_figure(
            "(a) upload phase speed",
            mib / min(t.upload for t in timed),
            mib / best_bare,
            "MiB/s",
            at_least=UPLOAD_TARGET,
        ),
        ratio_figure(
            "(a) wire span speed (sandbox)",
            mib / min(t.wire for t in timed),
            mib / min(bare_wire),
            "MiB/s",
        ),
        ratio_figure(
            "(b) drop->sidecar - settle",
            mib / (min(t.drop_to_sidecar for t in timed) - SETTLE),
            mib / best_bare,
            "MiB/s",
            at_least=DROP_TARGET,
        ),
        rss_figure(f"{small_label}, fresh daemon", fresh[0][1], fresh[0][0]),
        rss_figure(f"{large_label}, fresh daemon", fresh[1][1], fresh[1][0]),
        rss_figure(f"{small_label}, upload #{RUNS + 1}", same[0], idle),
        rss_figure(f"{large_label}, upload #{RUNS + 2}", same[1], idle),
    ]
    flat = abs(fresh[1][1] - fresh[0][1]) <= FLAT_TOLERANCE
    print_table(
        f"resumable TON upload of {mib:.0f} MiB, chunk {fmt_bytes(CHUNK)}, over loopback",
        figures,
        [
            f"best of {RUNS}, taking turns. bare client total: {seconds(bare)}, wire span:"
            f" {seconds(bare_wire)}",
            f"syncd upload phase: {seconds([t.upload for t in timed])}, wire span:"
            f" {seconds([t.wire for t in timed])}",
            f"syncd drop->sidecar (settle {SETTLE} s included):"
            f" {seconds([t.drop_to_sidecar for t in timed])}; drop->first TON request"
            f" (settle + hashing): {seconds([t.to_first_request for t in timed])}",
            "peak RSS of the timed uploads (#1-#3 in one daemon): "
            + ", ".join(fmt_bytes(t.peak_rss) for t in timed),
            "'upload #N' = the Nth resumable upload in one daemon (workers=4); fresh daemons:"
            f" peak flat in file size (within {fmt_bytes(FLAT_TOLERANCE)}): "
            + ("yes" if flat else "NO"),
        ],
    )


if __name__ == "__main__":
    main()
