"""`syncd run --sandbox`: the daemon on the local emulators, with no credentials or network.

Without `-c`, a demo folder `./syncd-demo/` gets a drop folder per service and a config
(0600: it holds the sandbox's public test credentials inline) pointed at the sandbox.
With `-c`, that config is used with every endpoint pointed at the sandbox.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import tomli_w

from syncd.config import Config, ServiceConfig, load
from syncd.sandbox import credentials
from syncd.sandbox.server import Sandbox

DEMO_DIR = Path("syncd-demo")
ARCHIVING = "ton-then-archive"
"""A drop folder that empties itself: uploaded files (with sidecars) move to ./archive."""
ENDPOINT_KEYS = ("endpoint", "twitter_endpoint")


def _free_port() -> int:
    """A loopback port for the media server, whose public URL must be known in advance."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def demo_config(folder: Path, sandbox_url: str, media_port: int) -> dict[str, Any]:
    """A config routing one drop folder per service type to the sandbox."""
    twitter = {"account": "demo", "endpoint": sandbox_url}
    services: dict[str, dict[str, Any]] = {
        "ton": {"type": "ton", "bucket": credentials.TON_BUCKET_TA_PARTNER, **twitter},
        "twitpic": {"type": "twitpic", "api_key": credentials.TWITPIC_API_KEY, **twitter},
        "twitlonger": {
            "type": "twitlonger",
            "api_key": credentials.TWITLONGER_API_KEY,
            "twitter_endpoint": sandbox_url,
            **twitter,
        },
        "oneall": {
            "type": "oneall",
            "endpoint": sandbox_url,
            "public_key": credentials.ONEALL_PUBLIC_KEY,
            "private_key": credentials.ONEALL_PRIVATE_KEY,
            "identity_token": credentials.ONEALL_IDENTITY_TOKEN,
        },
    }
    return {
        "daemon": {
            "state_dir": str(folder / "state"),
            "status_socket": str(folder / "status.sock"),
            "settle_seconds": 1.0,
        },
        "accounts": {
            "demo": {
                "consumer_key": credentials.CONSUMER_KEY,
                "consumer_secret": credentials.CONSUMER_SECRET,
                "access_token": credentials.ACCESS_TOKEN,
                "access_token_secret": credentials.ACCESS_TOKEN_SECRET,
            }
        },
        "services": services,
        "media_server": {
            "listen": f"127.0.0.1:{media_port}",
            "public_url": f"http://127.0.0.1:{media_port}",
        },
        "watch": [
            *({"path": str(folder / name), "service": name} for name in services),
            {
                "path": str(folder / ARCHIVING),
                "service": "ton",
                "after_upload": "archive",
                "archive_to": str(folder / "archive"),
            },
        ],
    }


def _write_demo(sandbox_url: str) -> Path:
    folder = DEMO_DIR.absolute()
    data = demo_config(folder, sandbox_url, _free_port())
    for watch in data["watch"]:
        Path(watch["path"]).mkdir(parents=True, exist_ok=True)
    (folder / "archive").mkdir(exist_ok=True)
    path = folder / "config.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        tomli_w.dump(data, out)
    os.chmod(path, 0o600)
    return path


def _pointed_at(service: ServiceConfig, url: str) -> ServiceConfig:
    changes: dict[str, Any] = {key: url for key in ENDPOINT_KEYS if hasattr(service, key)}
    return dataclasses.replace(service, **changes)


@contextmanager
def sandboxed(config_path: Path | None) -> Iterator[tuple[Path, Config]]:
    """A running sandbox and the config to run the daemon with against it."""
    with Sandbox() as sandbox:
        if config_path is None:
            config_path = _write_demo(sandbox.url)
            config = load(config_path)
            print(f"sandbox serving on {sandbox.url}")
            for watch in config.watches:
                then = f", then moved to {watch.archive_to}" if watch.archive_to else ""
                print(f"drop files into {watch.path} ({watch.service}{then})")
            print(f"then: syncd status -c {config_path}")
        else:
            loaded = load(config_path)
            services = {n: _pointed_at(s, sandbox.url) for n, s in loaded.services.items()}
            config = dataclasses.replace(loaded, services=services)
            print(f"sandbox serving on {sandbox.url}; every endpoint points at it")
        yield config_path, config
