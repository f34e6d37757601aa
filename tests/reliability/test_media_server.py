"""The media server under hostile input, against the real daemon over real sockets:
a siege of idle and trickling connections, keep-alive after refusals, pipelining, absurd
framing, and callbacks bound to the push they were made for."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import SandboxClient, read_sidecar, wait_until
from sandbox.samples import png, video
from test_oneall import oneall_config

from syncd.errors import SyncdError
from syncd.services.oneall import mediaserver
from syncd.services.oneall.mediaserver import FD_RESERVE, MAX_CONNECTIONS
from syncd.services.oneall.signer import CALLBACK, MEDIA, Signer

VIDEO_ID = "1120592651986796544"


def success(video_id: str = VIDEO_ID) -> dict[str, Any]:
    return {
        "response": {
            "request": {"status": {"flag": "success", "code": 200, "info": "ok"}},
            "result": {"data": {"provider": "twitter", "object": "video", "video_id": video_id}},
        }
    }


class Media:
    """Signed URLs of the daemon's media server, made with its own key."""

    def __init__(self, tmp_path: Path, config: dict[str, Any]) -> None:
        self.base = config["media_server"]["public_url"]
        self.host, port = config["media_server"]["listen"].rsplit(":", 1)
        self.port = int(port)
        self.signer = Signer((tmp_path / "state" / "media.key").read_bytes(), self.base)

    def callback_path(self, row_id: int = 1, push: int = 1) -> str:
        return f"/{CALLBACK}/{self.signer.token(CALLBACK, row_id, push, time.time() + 600)}"

    def media_path(self, name: str, row_id: int = 1, push: int = 1) -> str:
        return f"/{MEDIA}/{self.signer.token(MEDIA, row_id, push, time.time() + 600)}/{name}"

    def post(self, path: str, body: Any, timeout: float = 10) -> requests.Response:
        return requests.post(self.base + path, json=body, timeout=timeout)

    def connect(self) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=10)


def read_response(stream: Any) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response off a buffered socket file: status, headers, body."""
    status_line = stream.readline()
    assert status_line.startswith((b"HTTP/1.1 ", b"HTTP/1.0 ")), status_line
    headers: dict[str, str] = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, stream.read(int(headers["content-length"]))


def request(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: syncd.test", f"Content-Length: {len(body)}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def awaiting_video(tmp_path: Path, sandbox: SandboxClient, make_daemon: Any, **daemon: Any) -> Any:
    """A daemon whose one video (row 1, push 1) waits for a callback nobody else sends."""
    sandbox.post("settings", {"oneall": {"video_callback": "none"}})
    config = oneall_config(tmp_path, sandbox)
    config["daemon"].update(daemon)
    (tmp_path / "drop").mkdir()
    config["watch"].append({"path": str(tmp_path / "drop"), "service": "ads"})
    running = make_daemon(config).start()
    clip = tmp_path / "social" / "clip.mp4"
    clip.write_bytes(video("mp4", 30_000))
    running.wait_counts(awaiting_callback=1)
    return running, clip, Media(tmp_path, config)


def proc_counts(pid: int) -> tuple[int, int]:
    """(threads, open file descriptors) of a process, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text()
    threads = int(
        next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:"))
    )
    return threads, len(os.listdir(f"/proc/{pid}/fd"))


@contextlib.contextmanager
def siege(media: Media, idle: int, slow: int) -> Iterator[list[socket.socket]]:
    """`idle` connections that never speak and `slow` ones sending a request head one
    byte a second, for as long as the block runs."""
    sockets = [media.connect() for _ in range(idle + slow)]
    head = request("GET", media.media_path("x.mp4"))
    stop = threading.Event()

    def trickle() -> None:
        for offset in range(len(head)):
            for sock in sockets[idle:]:
                with contextlib.suppress(OSError):
                    sock.send(head[offset : offset + 1])
            if stop.wait(1.0):
                return

    trickler = threading.Thread(target=trickle, name="trickler")
    trickler.start()
    try:
        yield sockets
    finally:
        stop.set()
        trickler.join(10)
        for sock in sockets:
            sock.close()


def test_a_siege_of_idle_and_slow_connections_does_not_stop_genuine_work(
    tmp_path, sandbox, make_daemon
):
    daemon, clip, media = awaiting_video(tmp_path, sandbox, make_daemon)
    (tmp_path / "drop" / "warm.bin").write_bytes(b"w" * 1000)  # every thread started
    daemon.wait_counts(done=1)
    threads_before, fds_before = proc_counts(daemon.pid)

    started = time.monotonic()
    with siege(media, idle=500, slow=50):
        wait_until(lambda: proc_counts(daemon.pid)[1] >= fds_before + 500, 20, "the connections")
        # A video's callback, answered and applied within 2 s of being made.
        made = time.monotonic()
        assert media.post(media.callback_path(), success(), timeout=2).status_code == 200
        daemon.wait_counts(done=2, timeout=2)
        assert time.monotonic() - made < 2
        assert read_sidecar(clip)["result"]["video_id"] == VIDEO_ID
        # A picture OneAll fetches from the media server while the siege goes on.
        (tmp_path / "social" / "logo.png").write_bytes(png())
        (tmp_path / "drop" / "other.bin").write_bytes(b"o" * 5000)  # other uploads go on
        daemon.wait_counts(done=4, timeout=20)
        push = next(r for r in sandbox.requests() if r["path"].endswith("/picture.json"))
        assert push["status"] == 200 and push["finished"] - push["started"] < 2
        threads, fds = proc_counts(daemon.pid)
        assert threads <= threads_before + 2, (threads_before, threads)
        assert fds <= MAX_CONNECTIONS + FD_RESERVE, fds
        assert daemon.stop(timeout=20) == 0  # and it stops cleanly in the middle of it
    assert time.monotonic() - started < 60


def test_keep_alive_survives_every_refusal(tmp_path, sandbox, make_daemon):
    daemon, clip, media = awaiting_video(tmp_path, sandbox, make_daemon)
    forged = Signer(b"f" * 32, media.base).token(CALLBACK, 1, 1, time.time() + 60)
    smuggled = request("POST", media.callback_path(), json.dumps(success("666")).encode())
    refusals = [
        (request("POST", f"/{CALLBACK}/{forged}", smuggled), 403),
        (request("POST", "/nowhere", smuggled), 404),
        (request("PUT", media.callback_path(), smuggled), 405),
        (request("POST", media.callback_path(), b'{"response": [' * 3000), 400),
        (request("POST", media.callback_path(), b"\xff\xfe not json"), 400),
        (request("POST", media.callback_path(), b'{"response": {"result": {}}}'), 400),
        (request("POST", media.callback_path(push=2), json.dumps(success("7")).encode()), 409),
        (request("GET", media.media_path("clip.mp4", push=2), smuggled), 403),
        (request("GET", media.media_path("clip.mp4"), Range="bytes=99999999-"), 416),
    ]
    genuine = request("POST", media.callback_path(), json.dumps(success()).encode())
    with media.connect() as sock, sock.makefile("rb") as stream:
        for raw, expected in refusals:
            sock.sendall(raw)
            status, headers, body = read_response(stream)
            assert status == expected, (raw[:60], status, body)
            assert b"Traceback" not in body and headers.get("connection") != "close"
        sock.sendall(genuine)
        assert read_response(stream)[0] == 200
    daemon.wait_counts(done=1, awaiting_callback=0)
    assert read_sidecar(clip)["result"]["video_id"] == VIDEO_ID


def test_pipelined_requests_are_answered_in_order(tmp_path, sandbox, make_daemon):
    daemon, clip, media = awaiting_video(tmp_path, sandbox, make_daemon)
    content = clip.read_bytes()
    path = media.media_path("clip.mp4")
    burst = b"".join(
        [
            request("HEAD", path),
            request("GET", path, Range="bytes=100-199"),
            request("GET", path),
            request("POST", media.callback_path(), json.dumps(success()).encode()),
        ]
    )
    with media.connect() as sock, sock.makefile("rb") as stream:
        sock.sendall(burst)
        head = stream.readline()
        assert head.startswith(b"HTTP/1.1 200"), head
        while stream.readline() != b"\r\n":
            pass  # HEAD: headers only, whatever Content-Length says
        assert read_response(stream)[::2] == (206, content[100:200])
        assert read_response(stream)[::2] == (200, content)
        assert read_response(stream)[0] == 200
    daemon.wait_counts(done=1)


def test_absurd_framing_is_refused_with_4xx(tmp_path, sandbox, make_daemon):
    daemon, _, media = awaiting_video(tmp_path, sandbox, make_daemon)
    path = media.callback_path()
    cases = [
        (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {'9' * 40}\r\n\r\n{{}}", 413),
        (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n", 400),
        (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n", 400),
        (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 20}\r\n\r\n", 413),
        (f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 20000}\r\n\r\n", 431),
        ("NONSENSE\r\n\r\n", 400),
    ]
    for raw, expected in cases:
        with media.connect() as sock, sock.makefile("rb") as stream:
            sock.sendall(raw.encode())
            status, _, body = read_response(stream)
            assert status == expected, (raw[:70], status, body)
            assert b"Traceback" not in body
    assert media.post(path, success()).status_code == 200
    daemon.wait_counts(done=1)


def test_callbacks_count_only_for_their_own_push(tmp_path, sandbox, make_daemon):
    """An early callback of a push that then fails is dropped with it; a callback or media
    URL of an earlier push is refused; a replay after completion changes nothing; a file
    rewritten since does not complete with the old video_id."""
    sandbox.post("settings", {"oneall": {"video_callback": "none"}})
    config = oneall_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    media = Media(tmp_path, config)
    # Push 1 is answered 503, slowly: its callback overtakes the answer, and is kept.
    sandbox.fault(method="POST", path="/video.json", status=503, trickle_ms=15, count=1)
    clip = tmp_path / "social" / "clip.mp4"
    clip.write_bytes(video("mp4", 20_000))
    wait_until(lambda: daemon.status()["counts"]["uploading"] == 1, 20, "push 1 in flight")
    malformed = {"response": {"result": {"data": {"video_id": {"nested": True}}}}}
    assert media.post(media.callback_path(push=1), malformed).status_code == 400  # not kept
    assert media.post(media.callback_path(push=1), success("111")).status_code == 200
    daemon.wait_counts(awaiting_callback=1, timeout=30)  # push 2, after the retry
    time.sleep(1.5)  # a main loop tick: a kept callback of push 1 would be applied now
    assert daemon.status()["counts"]["awaiting_callback"] == 1
    assert media.post(media.callback_path(push=1), success("111")).status_code == 409
    assert (
        requests.get(media.base + media.media_path("clip.mp4", push=1), timeout=10).status_code
        == 403
    )
    assert (
        requests.get(media.base + media.media_path("clip.mp4", push=2), timeout=10).status_code
        == 200
    )
    assert media.post(media.callback_path(push=2), success("222")).status_code == 200
    daemon.wait_counts(done=1, awaiting_callback=0)
    assert read_sidecar(clip)["result"]["video_id"] == "222"
    # A replay is acknowledged and changes nothing; nor does it complete the file once
    # rewritten (then it is refused: push 3 is the one waiting).
    assert media.post(media.callback_path(push=2), success("333")).status_code == 200
    assert read_sidecar(clip)["result"]["video_id"] == "222"
    clip.write_bytes(video("mp4", 20_001))
    daemon.wait_counts(awaiting_callback=1)
    assert media.post(media.callback_path(push=2), success("444")).status_code == 409
    assert media.post(media.callback_path(push=3), success("555")).status_code == 200
    daemon.wait_counts(done=1, awaiting_callback=0)
    assert read_sidecar(clip)["result"]["video_id"] == "555"


def test_rows_whose_stored_data_cannot_be_read_are_failed_and_the_daemon_goes_on(
    tmp_path, sandbox, make_daemon
):
    daemon, _, _ = awaiting_video(tmp_path, sandbox, make_daemon)
    (tmp_path / "drop" / "a.bin").write_bytes(b"a" * 100)
    daemon.wait_counts(done=1, awaiting_callback=1)
    daemon.stop()
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "journal.sqlite")) as db, db:
        kept = json.dumps({"push": 1, "early_callback": {"response": [1, {"x": None}]}})
        db.execute("UPDATE files SET progress=? WHERE id=1", (kept,))  # awaiting, kept junk
        db.execute("UPDATE files SET state='hashed', progress='{broken' WHERE id=2")
    daemon.start()
    daemon.wait_counts(failed=2)
    reasons = sorted(failure["error"] for failure in daemon.status()["failures"])
    assert "its journal entry is damaged (progress)" in reasons[0]
    assert "the callback kept for this file cannot be read" in reasons[1]
    (tmp_path / "social" / "next.png").write_bytes(png())
    daemon.wait_counts(done=1, failed=2)
    assert daemon.stop() == 0


def test_a_request_still_arriving_after_request_timeout_is_cut_off(tmp_path, monkeypatch):
    """Waitress closes idle connections; a request trickling in is closed at REQUEST_TIMEOUT
    from its first byte (the media server in this process, with the timeouts shortened)."""
    monkeypatch.setattr(mediaserver, "REQUEST_TIMEOUT", 1)
    monkeypatch.setattr(mediaserver, "CHANNEL_TIMEOUT", 1)
    signer = Signer(b"k" * 32, "http://127.0.0.1")
    server = mediaserver.MediaServer(
        "127.0.0.1", 0, signer, lambda row, push: None, lambda row, push, data: (200, "ok")
    )
    server.start()
    try:
        host, port = server.address
        with contextlib.ExitStack() as stack:
            slow, idle = (
                stack.enter_context(socket.create_connection((host, port), timeout=10))
                for _ in range(2)
            )
            started = time.monotonic()
            slow.sendall(b"GET /media/x/y HTTP/1.1\r\nX-Pad: ")
            while not select.select([slow], [], [], 0.2)[0]:  # a byte every 0.2 s, forever
                assert time.monotonic() - started < 10, "the slow request was never cut off"
                slow.send(b"a")
            assert slow.recv(100) == b""  # closed, not answered
            assert time.monotonic() - started >= 1
            assert idle.recv(100) == b""  # the idle one is gone too
    finally:
        server.stop()


def test_a_port_in_use_is_a_one_line_error_naming_the_key():
    signer = Signer(b"k" * 32, "http://127.0.0.1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SyncdError) as refused:
            mediaserver.MediaServer(
                "127.0.0.1", port, signer, lambda row, push: None, lambda row, push, data: None
            )
    assert str(refused.value) == f"[media_server] listen 127.0.0.1:{port}: Address already in use"


def test_media_is_never_opened_through_a_folder_swapped_for_a_symlink(
    tmp_path, sandbox, make_daemon
):
    """A pushed file is opened from its watch root down, one folder at a time: with its
    folder swapped for a symlink to one outside, nothing there is opened (a FIFO of the
    same name would tell) and the request is a 404."""
    sandbox.post("settings", {"oneall": {"video_callback": "none"}})
    config = oneall_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    media = Media(tmp_path, config)
    folder = tmp_path / "social" / "sub"
    folder.mkdir()
    (folder / "clip.mp4").write_bytes(video("mp4", 20_000))
    daemon.wait_counts(awaiting_callback=1)
    outside = tmp_path / "outside"
    outside.mkdir()
    fifo = outside / "clip.mp4"
    os.mkfifo(fifo)
    opened = threading.Event()

    def writer() -> None:
        with open(fifo, "wb"):  # returns once someone opens the FIFO to read
            opened.set()

    threading.Thread(target=writer, daemon=True).start()
    folder.rename(tmp_path / "social" / ".moved-away")
    folder.symlink_to(outside)
    try:
        got = requests.get(media.base + media.media_path("clip.mp4"), timeout=10)
        assert (got.status_code, opened.is_set()) == (404, False)
    finally:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # lets the writer go
