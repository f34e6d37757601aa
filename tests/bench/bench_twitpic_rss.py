"""Peak RSS of the daemon while it uploads a large video to TwitPic: flat in the file's size.

The multipart body is streamed from the file (requests-toolbelt), so the daemon's peak
resident size above its idle size must not grow with the file: a 1 GiB video (quick:
256 MiB) and a 64 MiB one are uploaded by one daemon, and each peak is compared with the
idle daemon's RSS measured just before. Target: at most 64 MiB above idle. Issue 4.
"""

from __future__ import annotations

from pathlib import Path

from common import (
    Daemon,
    Figure,
    GiB,
    MiB,
    RssSampler,
    base_config,
    fmt_bytes,
    parse_args,
    print_table,
    proc_status_kib,
    sandbox,
    workdir,
    write_random,
)

from syncd.sandbox import credentials

ALLOWANCE = 64 * MiB
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"


def staged_video(folder: Path, name: str, size: int) -> Path:
    """A file TwitPic takes as an mp4 (by its first bytes), `size` bytes long."""
    path = folder / name
    write_random(path, size)
    with path.open("r+b") as out:
        out.write(MP4_HEAD)
    return path


def main() -> None:
    args = parse_args(__doc__)
    sizes = [64 * MiB, 256 * MiB if args.quick else 1 * GiB]
    with workdir("twitpic-rss") as root, sandbox(root, in_memory=True) as control:
        watched = root / "photos"
        watched.mkdir()
        staging = root / "staging"
        staging.mkdir()
        config = base_config(root, control.url, [], {"settle_seconds": 0.2})
        config["services"]["photos"] = {
            "type": "twitpic",
            "account": "main",
            "api_key": credentials.TWITPIC_API_KEY,
            "endpoint": control.url,
        }
        config["watch"] = [{"path": str(watched), "service": "photos"}]
        figures = []
        with Daemon(root, config) as daemon:
            daemon.start()
            for done, size in enumerate(sizes, start=1):
                staged = staged_video(staging, f"clip-{done}.mp4", size)
                idle = proc_status_kib(daemon.pid, "VmRSS") * 1024
                with RssSampler(daemon.pid) as rss:
                    staged.rename(watched / staged.name)
                    daemon.wait_counts(timeout=600, done=done)
                above = rss.peak_bytes - idle
                figures.append(
                    Figure(
                        f"peak RSS above idle, {fmt_bytes(size)} video",
                        fmt_bytes(above),
                        f"idle {fmt_bytes(idle)}",
                        None,
                        f"<= {fmt_bytes(ALLOWANCE)}",
                        above <= ALLOWANCE,
                    )
                )
    print_table("TwitPic upload: daemon memory while streaming a multipart body", figures)


if __name__ == "__main__":
    main()
