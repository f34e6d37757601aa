"""Mixed work for all four services, and the checks every crash or chaos run ends with:
one sidecar per file with the right sha256, and which uploads the services got twice."""

from __future__ import annotations

import hashlib
import random
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import SandboxClient, read_sidecar
from sandbox.samples import png, video
from test_echo_services import echo_config
from test_oneall import oneall_config

CHUNK = 256 * 1024
"""The TON chunk size of these runs: small, so that a kill lands mid-upload."""
SERVICES = ("ads", "photos", "notes", "social")
COMMITS = {
    # service -> (method, path prefix): the requests after which the service holds the work
    "ads": (("POST", "/1.1/ton/bucket/"), ("PUT", "/1.1/ton/")),
    "photos": (("POST", "/2/upload"),),
    "notes": (("POST", "/2/posts"), ("POST", "/1.1/statuses/update")),
    "social": (("POST", "/push/"),),
}


def mixed_config(tmp_path: Path, sandbox: SandboxClient, **daemon: Any) -> dict[str, Any]:
    """TON (single and resumable), TwitPic, TwitLonger with tweets, OneAll with callbacks."""
    sandbox.post(
        "settings",
        {
            "ton": {"min_chunk": 64 * 1024},
            # Re-delivered for about 9 s: longer than a restart takes, so a callback sent
            # while syncd was down usually arrives once it is back (see lost_callbacks).
            "oneall": {"callback_delay": 0.3, "callback_retry": True, "callback_retry_delay": 3},
        },
    )
    config = echo_config(tmp_path, sandbox)
    social = oneall_config(tmp_path, sandbox)
    config["services"]["social"] = {**social["services"]["social"], "callback_timeout": "30s"}
    config["media_server"] = social["media_server"]
    config["daemon"].update(workers=4, **daemon)
    config["services"]["ads"].update(resumable_threshold="1MiB", chunk_size=CHUNK)
    config["watch"] = []
    for name in SERVICES:
        (tmp_path / name).mkdir(exist_ok=True)
        config["watch"].append({"path": str(tmp_path / name), "service": name})
    return config


def slow_down(sandbox: SandboxClient, delay_ms: int = 80) -> None:
    """Every service request waits a little, so that kills land in the middle of work."""
    for path in ("/1.1/ton/", "/2/upload", "/2/posts", "/1.1/statuses/", "/push/"):
        sandbox.fault(path=path, delay_ms=delay_ms, count=1_000_000)


@dataclass
class Dropper:
    """Writes unique files for every service; `batch` is one round of each kind."""

    root: Path
    rng: random.Random
    made: int = 0

    def batch(self) -> list[Path]:
        files = []
        for _ in range(6):
            size = self.rng.randint(1, 300_000)
            files.append(self._write("ads", "bin", self.rng.randbytes(size)))
        for _ in range(2):
            size = self.rng.randint(1024 * 1024 + 1, 3 * 1024 * 1024)
            files.append(self._write("ads", "bin", self.rng.randbytes(size)))
        for _ in range(4):
            files.append(self._write("photos", "png", png(100 + self.made, 40)))
        for _ in range(4):
            text = f"Note {self.made}: {self.rng.random()} " * self.rng.randint(1, 20)
            files.append(self._write("notes", "txt", text.encode()))
        for _ in range(3):
            files.append(self._write("social", "png", png(60 + self.made, 30)))
        files.append(self._write("social", "mp4", video("mp4", 20_000 + self.made)))
        return files

    def _write(self, service: str, suffix: str, data: bytes) -> Path:
        self.made += 1
        path = self.root / service / f"f-{self.made}.{suffix}"
        temp = path.with_name(f".{path.name}.part")
        temp.write_bytes(data)
        temp.rename(path)
        return path


def lost_callbacks(sandbox: SandboxClient, files: Iterable[Path]) -> set[Path]:
    """Videos whose every callback the sandbox sent while syncd was down (it gave up): syncd
    cannot know their outcome, and rightly fails them once `callback_timeout` passes. A video
    pushed twice (a kill cut the first push off) is lost only if neither callback came."""
    videos = sandbox.get("oneall/videos")
    delivered = {v["sha256"] for v in videos if v["callback"] == "delivered"}
    given_up = {v["sha256"] for v in videos if v["callback"] == "failed"} - delivered
    return {p for p in files if hashlib.sha256(p.read_bytes()).hexdigest() in given_up}


def check_sidecars(tmp_path: Path, files: Iterable[Path]) -> None:
    """One sidecar per file, recording the file's own sha256, and no stray sidecar."""
    files = list(files)
    for path in files:
        assert read_sidecar(path)["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    sidecars = sorted(p for name in SERVICES for p in (tmp_path / name).glob("*.syncd.toml"))
    assert sidecars == sorted(p.with_name(p.name + ".syncd.toml") for p in files)


def uploads_twice(sandbox: SandboxClient) -> dict[str, int]:
    """Per service, how many pieces of work the service holds more than once."""
    ton = Counter(o["sha256"] for o in sandbox.ton_objects())
    twitpic = Counter(u["sha256"] for u in sandbox.get("twitpic/uploads"))
    posts = Counter(p["content"] for p in sandbox.get("twitlonger/posts"))
    tweets = Counter(s.get("text") for s in sandbox.get("twitter/statuses"))
    pictures = Counter(p["sha256"] for p in sandbox.get("oneall/pictures"))
    videos = Counter(v["sha256"] for v in sandbox.get("oneall/videos"))

    def extra(counts: Counter[Any]) -> int:
        return sum(n - 1 for n in counts.values() if n > 1)

    return {
        "ads": extra(ton),
        "photos": extra(twitpic),
        "notes": extra(posts) + extra(tweets),
        "social": extra(pictures) + extra(videos),
    }


def _service_of(request: dict[str, Any]) -> str | None:
    """The service whose work a successful (or cut-off) request committed, if it did."""
    status = request["status"]
    if status is not None and not 200 <= status < 300:
        return None
    for service, commits in COMMITS.items():
        for method, prefix in commits:
            if request["method"] == method and request["path"].startswith(prefix):
                return service
    return None


def duplicate_windows(
    sandbox: SandboxClient, kills: list[float], journal_window: float
) -> dict[str, list[float | None]]:
    """Per service, for each piece of work it got twice, the time from the service's answer
    to the kill that explains it (negative: the kill fell while the request was in flight);
    None when no kill explains it.

    TON single uploads, TwitLonger posts and tweets have a body that is the same at every
    attempt, so the very request sent twice is known; TwitPic's multipart boundary and
    OneAll's signed URL change, so for those any commit request a kill cut off counts.
    """
    keyed: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    loose: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for request in sandbox.requests():
        service = _service_of(request)
        if service is None or not request["body_len"]:
            continue
        if service in ("ads", "notes") and request["method"] == "POST":
            keyed[(service, request["body_sha256"])].append(request)
        else:
            loose[service].append(request)

    def explained(request: dict[str, Any]) -> float | None:
        finished = request["finished"] or request["started"]
        for kill in kills:
            if request["started"] <= kill <= finished + journal_window:
                return kill - finished
        return None

    windows: dict[str, list[float | None]] = {service: [] for service in SERVICES}
    for (service, _), attempts in keyed.items():
        windows[service] += [explained(r) for r in attempts[:-1]]
    twice = uploads_twice(sandbox)
    for service in ("photos", "social"):
        cut = sorted(w for w in map(explained, loose[service]) if w is not None)
        windows[service] += cut[: twice[service]]
        windows[service] += [None] * (twice[service] - len(cut))
    return windows


def check_twice_explained(
    sandbox: SandboxClient, kills: list[float], journal_window: float, figures: Any
) -> None:
    """Every piece of work a service holds twice has a kill to explain it; the counts and
    their windows (ms) go into the figures."""
    twice = uploads_twice(sandbox)
    windows = duplicate_windows(sandbox, kills, journal_window)
    for service in SERVICES:
        figures[f"{service}_twice"] = twice[service]
        shown = [None if w is None else round(w * 1000) for w in windows[service]]
        figures[f"{service}_twice_windows_ms"] = shown
        assert None not in windows[service], (service, shown)


def resent_bytes(sandbox: SandboxClient) -> int:
    """Body bytes TON received beyond what it kept: chunks cut by a kill or sent again."""
    return sum(int(s["bytes_received"]) - int(s["received"]) for s in sandbox.ton_sessions())


def integrity(tmp_path: Path) -> str:
    with sqlite3.connect(tmp_path / "state" / "journal.sqlite") as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])
