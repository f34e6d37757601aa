"""Several syncd daemons on one machine as a fleet: each its own state folder, socket and log
(ROOT/host-N), one shared drop folder (ROOT/drop, polled every second), one PostgreSQL
database, one sandbox. For the fleet tests and bench_fleet.py; imports nothing of pytest.

Files are written under a dot-name and renamed into place, as a copy onto a shared folder
should be; the checks read what the sandbox received, so "uploaded exactly once" is counted
on the service's side, not taken from syncd's word.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import RunningDaemon, SandboxClient, base_config, sidecar_of, wait_until
from sandbox.samples import png

from syncd.sandbox import credentials

MiB = 1 << 20
SERVICES = ("ads", "photos", "notes", "social")
UPLOADED = re.compile(r"uploaded (/\S+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Balancer:
    """What a fleet puts in front of its media servers: one public address, each connection
    passed to the first host that accepts it (so a dead host's share goes to the others)."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="balancer", daemon=True)
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            for port in self.ports:
                try:
                    host = socket.create_connection(("127.0.0.1", port), timeout=2)
                    break
                except OSError:
                    continue
            else:
                client.close()
                continue
            self._open += [client, host]
            for source, target in ((client, host), (host, client)):
                pipe = threading.Thread(target=_pipe, args=(source, target), daemon=True)
                self._threads.append(pipe)
                pipe.start()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)  # wakes the accept() of its thread
        self._server.close()
        for sock in self._open:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in [self._accepting, *self._threads]:
            thread.join(5)


def _pipe(source: socket.socket, target: socket.socket) -> None:
    with contextlib.suppress(OSError):
        source.settimeout(None)
        while data := source.recv(65536):
            target.sendall(data)
    with contextlib.suppress(OSError):
        target.shutdown(socket.SHUT_WR)


@dataclass
class Fleet:
    root: Path
    sandbox: SandboxClient
    url: str
    password_file: Path
    hosts: int = 3
    lease: float = 3.0
    workers: int = 4
    services: tuple[str, ...] = SERVICES
    ton: dict[str, Any] = field(default_factory=dict)
    log_level: str = "info"
    balanced: bool = False
    """One public_url for every host's media server, through a Balancer."""
    watch: dict[str, Any] = field(default_factory=dict)
    """Keys added to every watch (after_upload, on_done, ...)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Top-level keys added to every host's configuration ([[webhook]], ...)."""
    daemons: list[RunningDaemon] = field(default_factory=list)
    balancer: Balancer | None = None

    def __post_init__(self) -> None:
        self.drop = self.root / "drop"
        for name in self.services:
            (self.drop / name).mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")}
        ports = [free_port() for _ in range(self.hosts)]
        if self.balanced:
            self.balancer = Balancer(ports)
        for number, port in enumerate(ports, start=1):
            home = self.root / f"host-{number}"
            home.mkdir(parents=True, exist_ok=True)
            config = self.config(home, f"host-{number}", port)
            self.daemons.append(RunningDaemon(home, config, env))

    def config(self, home: Path, host_id: str, port: int) -> dict[str, Any]:
        url = self.sandbox.url
        config = base_config(home, url, workers=self.workers, log_level=self.log_level)
        config["services"]["ads"].update(
            {"resumable_threshold": "1MiB", "chunk_size": "1MiB", **self.ton}
        )
        config["services"]["photos"] = {
            "type": "twitpic",
            "account": "main",
            "api_key": credentials.TWITPIC_API_KEY,
            "endpoint": url,
        }
        config["services"]["notes"] = {
            "type": "twitlonger",
            "account": "main",
            "api_key": credentials.TWITLONGER_API_KEY,
            "endpoint": url,
            "twitter_endpoint": url,
        }
        config["services"]["social"] = {
            "type": "oneall",
            "endpoint": url,
            "public_key": credentials.ONEALL_PUBLIC_KEY,
            "private_key": credentials.ONEALL_PRIVATE_KEY,
            "identity_token": credentials.ONEALL_IDENTITY_TOKEN,
        }
        public = self.balancer.port if self.balancer else port
        config["media_server"] = {
            "listen": f"127.0.0.1:{port}",
            "public_url": f"http://127.0.0.1:{public}",
        }
        config["journal"] = {
            "url": self.url,
            "password_file": str(self.password_file),
            "host_id": host_id,
            "lease": f"{self.lease}s",
        }
        config["watch"] = [
            {"path": str(self.drop / name), "service": name, "poll_interval": "1s", **self.watch}
            for name in self.services
        ]
        return {**config, **self.extra}

    # -- life ----------------------------------------------------------------------------

    def start(self) -> Fleet:
        for daemon in self.daemons:
            daemon.start(wait=False)
        for daemon in self.daemons:
            wait_until(daemon.poll_status, 60, "the status socket", interval=0.05)
        return self

    def close(self) -> None:
        for daemon in self.daemons:
            if daemon.process is not None and daemon.process.poll() is None:
                daemon.kill()
        if self.balancer is not None:
            self.balancer.close()

    def uploaded_by(self) -> dict[str, int]:
        """Files each host logged as uploaded (its sidecar written)."""
        return {daemon.root.name: len(UPLOADED.findall(daemon.log())) for daemon in self.daemons}

    # -- files ---------------------------------------------------------------------------

    def drop_file(self, service: str, name: str, data: bytes) -> Path:
        final = self.drop / service / name
        temporary = final.with_name("." + name + ".part")
        temporary.write_bytes(data)
        os.rename(temporary, final)
        return final

    def drop_mixed(self, count: int, seed: int = 7) -> list[Path]:
        """`count` files spread over the services, each its own content: TON files from 1 KiB
        to 3 MiB (above 1 MiB resumable), PNGs for TwitPic and OneAll, texts for TwitLonger."""
        rng = random.Random(seed)
        paths = []
        for n in range(count):
            service = self.services[n % len(self.services)]
            if service == "ads":
                size = rng.choice((1024, 64 * 1024, 512 * 1024, 2 * MiB, 3 * MiB))
                data = n.to_bytes(4, "big") + rng.randbytes(size - 4)
                paths.append(self.drop_file(service, f"ad-{n:04d}.bin", data))
            elif service == "notes":
                text = f"Note {n}: " + " ".join(
                    rng.choice(("fleet", "host", "lease")) for _ in range(60)
                )
                paths.append(self.drop_file(service, f"note-{n:04d}.txt", text.encode()))
            else:
                data = png(16 + n % 97, 16 + n // 97)
                paths.append(self.drop_file(service, f"pic-{n:04d}.png", data))
        return paths

    def wait_sidecars(self, paths: list[Path], timeout: float) -> None:
        def missing() -> list[Path]:
            return [p for p in paths if not sidecar_of(p).exists()]

        try:
            wait_until(lambda: not missing(), timeout, f"{len(paths)} sidecars", interval=0.5)
        except AssertionError:
            left = missing()
            logs = "\n".join(d.log()[-3000:] for d in self.daemons)
            raise AssertionError(f"{len(left)} sidecars missing, e.g. {left[:3]}\n{logs}") from None

    # -- what the services received ------------------------------------------------------

    def uploads(self, paths: list[Path]) -> Counter[Path]:
        """How many times the services received each file."""
        by_sha: Counter[str] = Counter()
        for obj in self.sandbox.ton_objects():
            by_sha[obj["sha256"]] += 1
        for upload in self.sandbox.get("twitpic/uploads"):
            by_sha[upload["sha256"]] += 1
        for picture in self.sandbox.get("oneall/pictures"):
            by_sha[picture["sha256"]] += 1
        posts = Counter(post["content"] for post in self.sandbox.get("twitlonger/posts"))
        counted: Counter[Path] = Counter()
        for path in paths:
            data = path.read_bytes()
            if path.suffix == ".txt":
                counted[path] = posts[data.decode()]
            else:
                counted[path] = by_sha[hashlib.sha256(data).hexdigest()]
        return counted


def wait_time(timeout: float, probe: Any, what: str) -> float:
    """Seconds until `probe` holds."""
    started = time.monotonic()
    wait_until(probe, timeout, what, interval=0.05)
    return time.monotonic() - started
