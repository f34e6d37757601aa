"""OneAll Push end to end: the media server, signed URLs, video callbacks."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path
from typing import Any

import requests
from conftest import SandboxClient, base_config, read_sidecar, wait_until
from sandbox.samples import png, video

from syncd.sandbox import credentials
from syncd.services.oneall.signer import CALLBACK, MEDIA, Signer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def oneall_config(tmp_path: Path, sandbox: SandboxClient, **service: Any) -> dict[str, Any]:
    config = base_config(tmp_path, sandbox.url)
    port = free_port()
    config["services"]["social"] = {
        "type": "oneall",
        "endpoint": sandbox.url,
        "public_key": credentials.ONEALL_PUBLIC_KEY,
        "private_key": credentials.ONEALL_PRIVATE_KEY,
        "identity_token": credentials.ONEALL_IDENTITY_TOKEN,
        **service,
    }
    config["media_server"] = {
        "listen": f"127.0.0.1:{port}",
        "public_url": f"http://127.0.0.1:{port}",
    }
    (tmp_path / "social").mkdir(exist_ok=True)
    config["watch"] = [{"path": str(tmp_path / "social"), "service": "social"}]
    return config


def oneall_requests(sandbox: SandboxClient) -> list[dict[str, Any]]:
    return [r for r in sandbox.requests() if r["path"].startswith("/push/")]


def test_picture_is_fetched_from_the_media_server(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(oneall_config(tmp_path, sandbox)).start()
    picture = tmp_path / "social" / "logo.png"
    (tmp_path / "social" / "logo.png.caption").write_text("Our logo")
    picture.write_bytes(png())
    daemon.wait_counts(done=1)
    fetched = sandbox.get("oneall/pictures")
    assert len(fetched) == 1
    assert fetched[0]["sha256"] == hashlib.sha256(picture.read_bytes()).hexdigest()
    assert fetched[0]["description"] == "Our logo"
    result = read_sidecar(picture)["result"]
    assert result == {"picture_id": fetched[0]["picture_id"], "expires_in": "86400"}


def test_video_completes_by_callback_across_a_restart(tmp_path, sandbox, make_daemon):
    sandbox.post("settings", {"oneall": {"callback_delay": 3.0, "callback_retry": True}})
    daemon = make_daemon(oneall_config(tmp_path, sandbox)).start()
    clip = tmp_path / "social" / "clip.mp4"
    clip.write_bytes(video("mp4", 200_000))
    daemon.wait_counts(awaiting_callback=1)
    daemon.stop()
    daemon.start()
    daemon.wait_counts(done=1, awaiting_callback=0)
    videos = sandbox.get("oneall/videos")
    assert len(videos) == 1
    assert videos[0]["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
    assert read_sidecar(clip)["result"]["video_id"] == videos[0]["video_id"]


def test_error_callback_fails_with_oneall_info(tmp_path, sandbox, make_daemon):
    sandbox.post(
        "settings",
        {"oneall": {"video_callback": "error", "callback_error_info": "unsupported codec"}},
    )
    daemon = make_daemon(oneall_config(tmp_path, sandbox)).start()
    (tmp_path / "social" / "clip.webm").write_bytes(video("webm", 10_000))
    daemon.wait_counts(failed=1)
    assert "unsupported codec" in daemon.status()["failures"][0]["error"]


def test_media_urls_end_in_the_extension_of_the_sniffed_format(tmp_path, sandbox, make_daemon):
    """OneAll is given the listed formats (seed 002) and a strict emulator refuses "a wrong
    extension or format" (protocols.md 8): a video told by its bytes, whatever its name,
    gets a URL whose name ends in its format's extension."""
    sandbox.post("settings", {"oneall": {"video_callback": "none"}})
    daemon = make_daemon(oneall_config(tmp_path, sandbox)).start()
    (tmp_path / "social" / "camera-take").write_bytes(video("mp4", 10_000))
    (tmp_path / "social" / "clip.MOV").write_bytes(video("mov", 10_000))
    (tmp_path / "social" / "old.avi").write_bytes(video("avi", 10_000))
    daemon.wait_counts(awaiting_callback=3)
    urls = sorted((v["video_url"] for v in sandbox.get("oneall/videos")), key=_name)
    assert [_name(url) for url in urls] == ["camera-take.mp4", "clip.mov", "old.avi"]
    # and served as what the bytes are, whatever the file's own name
    served = [requests.get(url, timeout=30).headers["Content-Type"] for url in urls]
    assert served == ["video/mp4", "video/quicktime", "video/x-msvideo"]


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def test_no_callback_within_the_timeout_fails(tmp_path, sandbox, make_daemon):
    sandbox.post("settings", {"oneall": {"video_callback": "none"}})
    config = oneall_config(tmp_path, sandbox, callback_timeout="2s")
    daemon = make_daemon(config).start()
    (tmp_path / "social" / "clip.avi").write_bytes(video("avi", 10_000))
    daemon.wait_counts(failed=1, timeout=30)
    assert "no callback" in daemon.status()["failures"][0]["error"]


def test_limits_are_checked_before_any_request(tmp_path, sandbox, make_daemon):
    daemon = make_daemon(oneall_config(tmp_path, sandbox)).start()
    big = tmp_path / "social" / "huge.png"
    big.write_bytes(png() + b"\x00" * (6 * 1000 * 1000))
    (tmp_path / "social" / "text.png").write_bytes(b"plain text pretending to be a picture\n")
    matroska = b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x88matroska"
    (tmp_path / "social" / "film.mkv").write_bytes(matroska + b"\x00" * 1000)  # not webm
    daemon.wait_counts(failed=3)
    reasons = {Path(f["path"]).name: f["error"] for f in daemon.status()["failures"]}
    assert "5 MB" in reasons["huge.png"]
    assert "not a picture" in reasons["text.png"]
    assert "nor a video" in reasons["film.mkv"]
    assert oneall_requests(sandbox) == []


def waiting_video(
    tmp_path: Path, sandbox: SandboxClient, make_daemon: Any, size: int
) -> tuple[Any, dict[str, Any], Path]:
    """A video pushed and waiting for a callback that the sandbox will not send (the test
    posts its own): the daemon, its config and the video."""
    sandbox.post("settings", {"oneall": {"video_callback": "none"}})
    config = oneall_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    clip = tmp_path / "social" / "clip.mp4"
    clip.write_bytes(video("mp4", size))
    daemon.wait_counts(awaiting_callback=1)
    return daemon, config, clip


def test_forged_or_expired_tokens_are_refused(tmp_path, sandbox, make_daemon):
    daemon, config, clip = waiting_video(tmp_path, sandbox, make_daemon, 50_000)
    base = config["media_server"]["public_url"]
    key = (tmp_path / "state" / "media.key").read_bytes()
    row_id, push = 1, 1
    expired = Signer(key, base)
    forged = Signer(b"x" * 32, base)
    envelope = {"response": {"result": {"data": {"video_id": "1"}}}}
    for url in (
        expired.media_url(row_id, push, "clip.mp4", time.time() - 5),
        forged.media_url(row_id, push, "clip.mp4", time.time() + 3600),
        f"{base}/{MEDIA}/garbage/clip.mp4",
    ):
        reply = requests.get(url, timeout=10)
        assert reply.status_code == 403 and clip.read_bytes()[:100] not in reply.content
    for url in (
        f"{base}/{CALLBACK}/{expired.token(CALLBACK, row_id, push, time.time() - 5)}",
        forged.callback_url(row_id, push, time.time() + 3600),
    ):
        assert requests.post(url, json=envelope, timeout=10).status_code == 403
    assert daemon.status()["counts"]["awaiting_callback"] == 1
    good = expired.media_url(row_id, push, "clip.mp4", time.time() + 60)
    served = requests.get(good, headers={"Range": "bytes=10-19"}, timeout=10)
    assert served.status_code == 206 and served.content == clip.read_bytes()[10:20]
    head = requests.head(good, timeout=10)
    assert head.status_code == 200 and head.headers["Content-Length"] == "50000"
    assert head.headers["Content-Type"] == "video/mp4" and head.content == b""
    clip.write_bytes(video("mp4", 50_001))
    assert requests.get(good, timeout=10).status_code == 409


def test_a_callback_that_overtakes_its_request_is_kept(tmp_path, sandbox, make_daemon):
    sandbox.post("settings", {"oneall": {"video_callback": "none"}})
    config = oneall_config(tmp_path, sandbox)
    daemon = make_daemon(config).start()
    sandbox.fault(method="POST", path="/push/", delay_ms=2000, count=1)
    clip = tmp_path / "social" / "early.mp4"
    clip.write_bytes(video("mp4", 20_000))
    wait_until(lambda: daemon.status()["counts"]["uploading"] == 1, 10, "the push in flight")
    signer = Signer((tmp_path / "state" / "media.key").read_bytes(), "unused")
    path = f"/{CALLBACK}/{signer.token(CALLBACK, 1, 1, time.time() + 60)}"
    envelope = {"response": {"result": {"data": {"video_id": "987654321987654321"}}}}
    url = config["media_server"]["public_url"] + path
    # "uploading" comes a moment before the push is recorded; OneAll's own callback can only
    # follow the push, and a 409 (nothing waits for it yet) changes nothing: deliver again.
    wait_until(
        lambda: requests.post(url, json=envelope, timeout=10).status_code == 200,
        10,
        "the callback taken",
    )
    daemon.wait_counts(done=1)
    assert read_sidecar(clip)["result"]["video_id"] == "987654321987654321"


def test_a_callback_delivered_again_after_it_was_recorded_is_acknowledged(
    tmp_path, sandbox, make_daemon
):
    """OneAll re-delivers a callback whose answer it did not get (syncd killed between its
    commit and its answer): the replay is acknowledged (200), so OneAll stops re-delivering
    and does not count the delivery failed, and it changes nothing."""
    daemon, config, clip = waiting_video(tmp_path, sandbox, make_daemon, 20_000)
    signer = Signer((tmp_path / "state" / "media.key").read_bytes(), "unused")
    url = config["media_server"]["public_url"]
    url += f"/{CALLBACK}/{signer.token(CALLBACK, 1, 1, time.time() + 60)}"
    envelope = {"response": {"result": {"data": {"video_id": "111"}}}}
    assert requests.post(url, json=envelope, timeout=10).status_code == 200
    daemon.wait_counts(done=1)
    sidecar = read_sidecar(clip)
    assert requests.post(url, json=envelope, timeout=10).status_code == 200
    other = {"response": {"result": {"data": {"video_id": "222"}}}}
    assert requests.post(url, json=other, timeout=10).status_code == 200
    assert read_sidecar(clip) == sidecar and sidecar["result"]["video_id"] == "111"
    assert daemon.status()["counts"]["done"] == 1
