"""Fleet mode: three hosts move more files per second than one when each connection is slow.

The sandbox paces every connection to LINK bytes/s (its `link` setting), as a host's uplink
would; each host runs WORKERS uploads at once. One host alone, then three hosts (three
daemons on this machine, one shared drop folder polled every second, one PostgreSQL), move
the same COUNT files of SIZE bytes to TON. Files/s over the upload phase (first TON request
-> last sidecar), and end to end (first file dropped -> last sidecar, which adds the poll
and settle latency paid once). Issue 15: three hosts >= 2.5x one.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common import (
    BENCH_DIR,
    KiB,
    MiB,
    parse_args,
    print_table,
    ratio_figure,
    sandbox,
    sidecar_time,
    workdir,
    write_random,
)

sys.path.insert(0, str(BENCH_DIR.parent))
from fleet_harness import Fleet
from pgcluster import Cluster, find_binaries

TARGET = 2.5
LINK = 1 * MiB
WORKERS = 2
SIZE = 1 * MiB


def run(root: Path, control: object, cluster: Cluster, hosts: int, count: int) -> dict[str, float]:
    """One fleet of `hosts` moving `count` files; its timings."""
    fleet = Fleet(
        root / f"fleet-{hosts}",
        control,  # type: ignore[arg-type]
        cluster.database(),
        cluster.password_file,
        hosts=hosts,
        workers=WORKERS,
        services=("ads",),
    )
    try:
        fleet.start()
        control.post("settings", {"link": {"bytes_per_second": LINK}})  # type: ignore[attr-defined]
        staging = root / f"staging-{hosts}"
        sources = []
        for n in range(count):
            source = staging / f"f{n:04d}.bin"
            write_random(source, SIZE)
            sources.append(source)
        started = time.time()
        paths = [fleet.drop_file("ads", p.name, p.read_bytes()) for p in sources]
        fleet.wait_sidecars(paths, timeout=count * SIZE / LINK * 2 + 120)
        last = max(sidecar_time(p) for p in paths)
        first_request = control.ton_span()[0]  # type: ignore[attr-defined]
        by_host = fleet.uploaded_by()
    finally:
        fleet.close()
        control.reset()  # type: ignore[attr-defined]
    return {
        "upload": count / (last - first_request),
        "e2e": count / (last - started),
        "hosts_busy": sum(1 for n in by_host.values() if n),
    }


def main() -> None:
    args = parse_args(__doc__)
    count = 45 if args.quick else 90
    binaries = find_binaries()
    if binaries is None:
        raise SystemExit("no PostgreSQL binaries (initdb, pg_ctl): apt-get install postgresql")
    cluster = Cluster(binaries).start()
    try:
        with workdir("fleet") as root, sandbox(root) as control:
            one = run(root, control, cluster, 1, count)
            three = run(root, control, cluster, 3, count)
    finally:
        cluster.stop()
    figures = [
        ratio_figure("upload phase, 3 hosts", three["upload"], one["upload"], "files/s", TARGET),
        ratio_figure("end to end, 3 hosts", three["e2e"], one["e2e"], "files/s"),
    ]
    print_table(
        f"{count} files of {SIZE // KiB} KiB to TON, each connection paced to"
        f" {LINK // KiB} KiB/s, {WORKERS} workers a host; baseline: one host",
        figures,
        [
            f"one host: {one['upload']:.2f} files/s uploading, {one['e2e']:.2f} end to end",
            f"three hosts: {three['upload']:.2f} files/s uploading, {three['e2e']:.2f} end to"
            f" end; {three['hosts_busy']:.0f} of 3 hosts uploaded files",
        ],
    )


if __name__ == "__main__":
    main()
