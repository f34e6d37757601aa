"""5,000 small files dropped at once into a TON folder: files/s end to end vs a bare loop.

syncd: first file written -> last sidecar (hash, journal, POST, sidecar with fsync, for
every file; `workers = 4`). Baseline: bare_client.py POSTing the same files one after the
other with one requests Session and OAuth1, same headers, same sandbox, same run, once
before and once after syncd (best of the two; the sandbox is reset between runs). The
settle wait (`settle_seconds`, a latency paid once, not per file) counts against syncd;
the rate without it and the rate of the upload phase alone (first TON request -> last
sidecar) are shown too. Issue 2.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from common import (
    Daemon,
    KiB,
    bare_client,
    base_config,
    cpu_seconds,
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
SETTLE = 0.2


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


def main() -> None:
    args = parse_args(__doc__)
    count = 2000 if args.quick else 5000
    contents = make_contents(count)
    with workdir("small") as root, sandbox(root) as control:
        bare_paths = write_all(root / "bare", contents)
        listing = root / "bare.list"
        listing.write_text("".join(f"{p}\n" for p in bare_paths))
        bare = [bare_client("single", control.url, str(listing))["seconds"]]
        control.reset()

        drop = root / "drop"
        drop.mkdir()
        config = base_config(
            root,
            control.url,
            [{"path": str(drop)}],
            daemon={"workers": WORKERS, "settle_seconds": SETTLE},
        )
        with Daemon(root, config) as daemon:
            daemon.start()
            daemon.wait_scan(30)
            cpu_before = cpu_seconds(daemon.pid)
            started = time.time()
            paths = write_all(drop, contents)
            written = time.time()
            daemon.wait_counts(timeout=600, done=count)
            cpu_used = cpu_seconds(daemon.pid) - cpu_before
            last = max(sidecar_time(p) for p in paths)
            first_request = control.ton_span()[0]
        if len(control.get("ton/objects")) != count:
            raise RuntimeError("the sandbox does not hold every upload")
        control.reset()
        bare.append(bare_client("single", control.url, str(listing))["seconds"])

    bare_rate = count / min(bare)

    e2e = last - started
    figures = [
        ratio_figure("end to end", count / e2e, bare_rate, "files/s", at_least=TARGET),
        ratio_figure(
            "without settle", count / (e2e - SETTLE), bare_rate, "files/s", at_least=TARGET
        ),
        ratio_figure("upload phase", count / (last - first_request), bare_rate, "files/s"),
    ]
    print_table(
        f"{count} files of 1-4 KiB dropped at once (workers={WORKERS}, settle_seconds={SETTLE})",
        figures,
        [
            f"syncd: {e2e:.2f} s from the first file written to the last sidecar; writing the "
            f"files took {written - started:.2f} s; first TON request after "
            f"{first_request - started:.2f} s",
            "bare loop, before and after syncd (best counts): "
            + ", ".join(f"{b:.2f} s" for b in bare),
            f"daemon CPU: {cpu_used:.2f} s ({cpu_used / count * 1000:.2f} ms a file)",
        ],
    )


if __name__ == "__main__":
    main()
