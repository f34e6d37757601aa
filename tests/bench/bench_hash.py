"""SHA-256 of a large file: syncd's `sha256_of` vs `openssl dgst -sha256`, in the same run.

Every file is hashed before upload, so hashing speed bounds how fast a large drop can start
uploading. openssl uses the CPU's SHA instructions (coreutils sha256sum does not), so it is
the honest ceiling. The file sits in the page cache for both; best of 3 each. Issue 2.
"""

from __future__ import annotations

import time
from pathlib import Path

from common import (
    GiB,
    MiB,
    best_of,
    parse_args,
    print_table,
    ratio_figure,
    timed_shell,
    warm,
    workdir,
    write_random,
)

from syncd.files import sha256_of

TARGET = 0.9
"""syncd's speed / openssl's speed, at least."""


def syncd_seconds(path: Path) -> float:
    with path.open("rb") as file:
        started = time.perf_counter()
        sha256_of(file)
        return time.perf_counter() - started


def main() -> None:
    args = parse_args(__doc__)
    size = 256 * MiB if args.quick else GiB
    with workdir("hash") as root:
        path = root / "big.bin"
        write_random(path, size)
        warm(path)
        ours = best_of(3, lambda: syncd_seconds(path))
        theirs = best_of(3, lambda: timed_shell(f"openssl dgst -sha256 {path} > /dev/null"))
    mib = size / MiB
    print_table(
        f"SHA-256 of {mib:.0f} MiB (page cache, best of 3)",
        [ratio_figure("hash speed", mib / ours, mib / theirs, "MiB/s", at_least=TARGET)],
        [f"syncd {ours:.3f} s, openssl {theirs:.3f} s (openssl includes its process start)"],
    )


if __name__ == "__main__":
    main()
