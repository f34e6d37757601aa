"""The OneAll emulator against protocols.md 6 and 8: Basic auth, fetching from a local
server, the envelope, and video callbacks received by that server."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd.sandbox.credentials import (
    ONEALL_IDENTITY_TOKEN,
    ONEALL_PRIVATE_KEY,
    ONEALL_PUBLIC_KEY,
)
from syncd.sandbox.server import Sandbox

from . import samples
from .local_web import LocalWeb
from .sandbox_client import Box

BASE = f"/push/identities/{ONEALL_IDENTITY_TOKEN}/twitter"
AUTH = (ONEALL_PUBLIC_KEY, ONEALL_PRIVATE_KEY)
SUCCESS = {"flag": "success", "code": 200, "info": "Your request has been processed successfully"}
MiB = 1 << 20


@pytest.fixture
def web() -> Iterator[LocalWeb]:
    with LocalWeb() as server:
        yield server


def push(box: Box, kind: str, body: Any, *, auth: Any = AUTH, **kw: Any) -> requests.Response:
    payload = {"request": {"push": {kind: body}}}
    return box.call("POST", f"{BASE}/{kind}.json", signed=False, auth=auth, json=payload, **kw)


def status(reply: requests.Response) -> dict[str, Any]:
    """The envelope's status block, after checking the envelope itself."""
    request = reply.json()["response"]["request"]
    assert request["resource"].startswith("/push/")
    assert parsedate_to_datetime(request["date"]).tzinfo is not None
    found: dict[str, Any] = request["status"]
    assert found["code"] == reply.status_code
    assert found["flag"] == ("success" if reply.status_code == 200 else "error")
    return found


def data(reply: requests.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    assert status(reply) == SUCCESS
    found: dict[str, Any] = reply.json()["response"]["result"]["data"]
    return found


def refused(reply: requests.Response, code: int) -> str:
    """The info of an error envelope with HTTP status `code` (and no result)."""
    assert reply.status_code == code, reply.text
    assert "result" not in reply.json()["response"]
    info: str = status(reply)["info"]
    return info


def idle(box: Box) -> None:
    assert box.post("idle", {"timeout": 10})["idle"] is True


# -- picture ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("picture", "fmt"),
    [
        (samples.png(), "png"),
        (samples.jpeg(), "jpeg"),
        (samples.gif(), "gif"),
        (samples.bmp(), "bmp"),
        (samples.tiff(), "tiff"),
    ],
)
def test_picture(box: Box, web: LocalWeb, picture: bytes, fmt: str) -> None:
    url = web.serve(f"/media/abc/logo.{fmt}", picture)
    reply = push(box, "picture", {"url": url, "description": "OneAll Logo"})
    found = data(reply)
    assert reply.json()["response"]["request"]["resource"] == f"{BASE}/picture.json"
    assert re.fullmatch(r"[1-9]\d{17}", found["picture_id"])
    assert found == {
        "provider": "twitter",
        "object": "picture",
        "picture_id": found["picture_id"],
        "expires_in": "86400",
    }
    (shown,) = box.get("oneall/pictures")
    assert shown["sha256"] == hashlib.sha256(picture).hexdigest()
    assert (shown["size"], shown["format"], shown["url"]) == (len(picture), fmt, url)
    assert (shown["picture_id"], shown["description"]) == (found["picture_id"], "OneAll Logo")


def test_picture_size_limit_is_5_mib(box: Box, web: LocalWeb) -> None:
    fits = samples.png() + b"\0" * (5 * MiB - len(samples.png()))
    assert data(push(box, "picture", {"url": web.serve("/fits.png", fits)}))
    info = refused(push(box, "picture", {"url": web.serve("/over.png", fits + b"\0")}), 400)
    assert str(5 * MiB) in info
    assert len(box.get("oneall/pictures")) == 1


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"url": ""},
        {"url": 5},
        {"url": "ftp://example.com/a.png"},
        {"url": "/relative.png"},
        {"url": "http://127.0.0.1:1/unreachable.png"},
        {"url": "LOCAL/missing.png"},
        {"url": "LOCAL/text.png"},
        {"url": "LOCAL/clip.mp4"},
        {"url": "LOCAL/a.png", "description": 3},
    ],
)
def test_picture_refusals(box: Box, web: LocalWeb, body: dict[str, Any]) -> None:
    web.serve("/text.png", b"this is not a picture at all" * 4)
    web.serve("/clip.mp4", samples.video("mp4"))
    web.serve("/a.png", samples.png())
    if isinstance(body.get("url"), str):
        body = {**body, "url": body["url"].replace("LOCAL", web.url)}
    refused(push(box, "picture", body), 400)
    assert box.get("oneall/pictures") == []


# -- auth, identity, body -----------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer abc"},
        {"Authorization": "Basic " + "c2FuZGJveA=="},  # no colon
    ],
)
def test_bad_authorization_header_is_401(box: Box, headers: dict[str, str]) -> None:
    reply = push(box, "post", {"message": "hi"}, auth=None, headers=headers)
    info = refused(reply, 401)
    assert info.startswith("Authentication credentials are missing or incorrect: ")


@pytest.mark.parametrize(
    "auth", [(ONEALL_PUBLIC_KEY, "wrong"), ("wrong", ONEALL_PRIVATE_KEY), (ONEALL_PRIVATE_KEY, "")]
)
def test_wrong_keys_are_401(box: Box, auth: tuple[str, str]) -> None:
    refused(push(box, "post", {"message": "hi"}, auth=auth), 401)
    assert box.get("oneall/posts") == []


def test_unknown_identity_is_404(box: Box) -> None:
    reply = box.call(
        "POST",
        "/push/identities/not-a-token/twitter/post.json",
        signed=False,
        auth=AUTH,
        json={"request": {"push": {"post": {"message": "hi"}}}},
    )
    assert "not-a-token" in refused(reply, 404)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'{"request":{}}', b'{"request":{"push":{"picture":{}}}}', b""],
)
def test_bad_bodies_are_400(box: Box, body: bytes) -> None:
    reply = box.call("POST", f"{BASE}/post.json", signed=False, auth=AUTH, data=body)
    refused(reply, 400)


def test_json_labelled_as_a_form_is_read(box: Box) -> None:
    """OneAll's PHP examples send raw JSON as a form (protocols.md 6.1)."""
    body = b'{"request":{"push":{"post":{"message":"raw"}}}}'
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    reply = box.call(
        "POST", f"{BASE}/post.json", signed=False, auth=AUTH, data=body, headers=headers
    )
    assert data(reply)["object"] == "post"


def test_routing_and_faults_answer_envelopes(box: Box) -> None:
    wrong = box.call("GET", f"{BASE}/post.json", signed=False, auth=AUTH)
    refused(wrong, 405)
    refused(box.call("POST", f"{BASE}/poll.json", signed=False, auth=AUTH), 404)
    box.fault(path="^/push/", status=429, retry_after=7)
    box.fault(path="^/push/", status=502)
    limited = push(box, "post", {"message": "hi"})
    assert limited.headers["Retry-After"] == "7"
    assert refused(limited, 429) == "Too Many Requests"
    refused(push(box, "post", {"message": "hi"}), 502)
    assert data(push(box, "post", {"message": "hi"}))


# -- video --------------------------------------------------------------------------------


def queue_video(box: Box, web: LocalWeb, name: str = "clip.mp4", kind: str = "mp4") -> str:
    """Push a video served by `web`; the callback path it was given."""
    callback_path = f"/callback/{name}-token"
    body = {
        "video_url": web.serve(f"/media/{name}", samples.video(kind, 100_000)),
        "callback_url": web.url + callback_path,
    }
    found = data(push(box, "video", body))
    assert found == {
        "object": "video",
        "result": "The video has been added to the queue and will be uploaded soon.",
    }
    return callback_path


def test_video_success_callback(box: Box, web: LocalWeb) -> None:
    box.post("settings", {"oneall": {"callback_delay": 0.05}})
    callback_path = queue_video(box, web)
    (callback,) = web.wait_for_callbacks(1)
    assert (callback.path, callback.content_type) == (callback_path, "application/json")
    response = callback.body["response"]
    assert response["request"]["resource"] == f"{BASE.lstrip('/')}/video.json"
    assert response["request"]["status"] == SUCCESS
    result = response["result"]["data"]
    assert (result["provider"], result["object"]) == ("twitter", "video")
    assert re.fullmatch(r"[1-9]\d{18}", result["video_id"])
    assert parsedate_to_datetime(result["date_creation"]).tzinfo is not None

    idle(box)
    (video,) = box.get("oneall/videos")
    assert video["sha256"] == hashlib.sha256(samples.video("mp4", 100_000)).hexdigest()
    assert (video["size"], video["format"], video["video_id"]) == (
        100_000,
        "mpeg4",
        result["video_id"],
    )
    assert (video["callback"], video["date_creation"]) == ("delivered", result["date_creation"])
    (delivery,) = video["deliveries"]
    assert (delivery["url"], delivery["status"], delivery["error"]) == (
        web.url + callback_path,
        200,
        None,
    )
    # the video can now be attached to a tweet
    posted = data(push(box, "post", {"message": "look", "attachments": [result["video_id"]]}))
    assert posted["object"] == "post"


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("3gp", "3gpp"),
        ("avi", "avi"),
        ("flv", "flv"),
        ("mov", "mov"),
        ("mpeg", "mpegps"),
        ("webm", "webm"),
        ("wmv", "wmv"),
    ],
)
def test_video_formats(box: Box, web: LocalWeb, kind: str, name: str) -> None:
    box.post("settings", {"oneall": {"video_callback": "none"}})
    queue_video(box, web, f"clip.{kind}", kind)
    (video,) = box.get("oneall/videos")
    assert video["format"] == name


def test_error_callback(box: Box, web: LocalWeb) -> None:
    box.post("settings", {"oneall": {"video_callback": "error", "callback_delay": 0}})
    queue_video(box, web)
    (callback,) = web.wait_for_callbacks(1)
    response = callback.body["response"]
    assert "result" not in response
    assert response["request"]["status"] == {
        "flag": "error",
        "code": 400,
        "info": "The video could not be uploaded to Twitter: unsupported codec.",
    }
    idle(box)
    (video,) = box.get("oneall/videos")
    assert (video["outcome"], video["callback"], video["video_id"]) == ("error", "delivered", None)


def test_no_callback(box: Box, web: LocalWeb) -> None:
    box.post("settings", {"oneall": {"video_callback": "none", "callback_delay": 0}})
    queue_video(box, web)
    assert box.post("idle", {"timeout": 0}) == {"idle": True, "pending": 0}
    (video,) = box.get("oneall/videos")
    assert (video["callback"], video["deliveries"]) == ("none", [])
    assert web.callbacks == []


def test_callback_retries(box: Box, web: LocalWeb) -> None:
    settings = {"callback_delay": 0, "callback_retry": True, "callback_retry_delay": 0.01}
    box.post("settings", {"oneall": settings})
    web.statuses.extend([500, 503, 200])
    queue_video(box, web)
    idle(box)
    assert len(web.callbacks) == 3
    (video,) = box.get("oneall/videos")
    assert [d["status"] for d in video["deliveries"]] == [500, 503, 200]
    assert [d["attempt"] for d in video["deliveries"]] == [1, 2, 3]
    assert video["callback"] == "delivered"


def test_callback_failures_without_and_with_retry(box: Box, web: LocalWeb) -> None:
    box.post("settings", {"oneall": {"callback_delay": 0}})
    web.statuses.extend([500] * 10)
    queue_video(box, web)
    idle(box)
    (video,) = box.get("oneall/videos")
    assert (video["callback"], [d["status"] for d in video["deliveries"]]) == ("failed", [500])

    box.post("reset", {})
    box.post("settings", {"oneall": {"callback_delay": 0, "callback_retry": True}})
    box.post("settings", {"oneall": {"callback_retry_delay": 0}})
    body = {
        "video_url": web.serve("/media/c.mp4", samples.video("mp4")),
        "callback_url": "http://127.0.0.1:1/nobody-listens",
    }
    data(push(box, "video", body))
    idle(box)
    (video,) = box.get("oneall/videos")
    assert video["callback"] == "failed"
    assert len(video["deliveries"]) == 4  # the first attempt and 3 retries
    assert all(d["status"] is None and d["error"] for d in video["deliveries"])


@pytest.mark.parametrize(
    "body",
    [
        {"video_url": "LOCAL/media/clip.mp4"},
        {"callback_url": "LOCAL/cb"},
        {"video_url": "LOCAL/media/notes.txt", "callback_url": "LOCAL/cb"},
        {"video_url": "LOCAL/media/picture.mp4", "callback_url": "LOCAL/cb"},
        {"video_url": "LOCAL/media/unknown.bin", "callback_url": "LOCAL/cb"},
        {"video_url": "LOCAL/media/mp4-named.bin", "callback_url": "LOCAL/cb"},
        {"video_url": "LOCAL/media/missing.mp4", "callback_url": "LOCAL/cb"},
        {"video_url": "LOCAL/media/clip.mp4", "callback_url": "not a url"},
    ],
)
def test_video_refusals(box: Box, web: LocalWeb, body: dict[str, str]) -> None:
    web.serve("/media/clip.mp4", samples.video("mp4"))
    web.serve("/media/notes.txt", b"some words, not a video " * 10)
    web.serve("/media/picture.mp4", samples.png())
    web.serve("/media/unknown.bin", b"\x00" * 1000)
    web.serve("/media/mp4-named.bin", samples.video("mp4"))
    body = {key: value.replace("LOCAL", web.url) for key, value in body.items()}
    refused(push(box, "video", body), 400)
    assert box.get("oneall/videos") == []


def test_unknown_content_is_told_by_the_extension(box: Box, web: LocalWeb) -> None:
    box.post("settings", {"oneall": {"video_callback": "none"}})
    body = {
        "video_url": web.serve("/media/odd.MOV", b"\x00" * 1000),
        "callback_url": web.url + "/cb",
    }
    data(push(box, "video", body))
    assert box.get("oneall/videos")[0]["format"] == "mov"


def test_reset_cancels_pending_callbacks(box: Box, web: LocalWeb) -> None:
    box.post("settings", {"oneall": {"callback_delay": 60}})
    queue_video(box, web)
    assert box.post("idle", {"timeout": 0})["pending"] == 1
    started = time.monotonic()
    box.post("reset", {})
    assert time.monotonic() - started < 5
    assert box.post("idle", {"timeout": 0}) == {"idle": True, "pending": 0}
    assert web.callbacks == [] and box.get("oneall/videos") == []


def test_stop_cancels_pending_callbacks(tmp_path: Path, web: LocalWeb) -> None:
    with Sandbox(data_dir=tmp_path) as sandbox:
        box = Box(sandbox.url)
        box.post("settings", {"oneall": {"callback_delay": 60}})
        queue_video(box, web)
        box.http.close()
        started = time.monotonic()
    assert time.monotonic() - started < 5
    assert not [t for t in threading.enumerate() if t.name.startswith("oneall-callback")]
    assert web.callbacks == []


# -- post ---------------------------------------------------------------------------------


def test_post_with_picture(box: Box, web: LocalWeb) -> None:
    picture_id = data(push(box, "picture", {"url": web.serve("/p.png", samples.png())}))[
        "picture_id"
    ]
    body = {"message": "Hello World!", "attachments": [picture_id]}
    found = data(push(box, "post", body))
    assert re.fullmatch(r"[1-9]\d{18}", found["post_id"])
    assert found == {"provider": "twitter", "object": "post", "post_id": found["post_id"]}
    assert data(push(box, "post", {"attachments": [picture_id]}))
    (first, second) = box.get("oneall/posts")
    assert (first["post_id"], first["message"], first["attachments"]) == (
        found["post_id"],
        "Hello World!",
        [picture_id],
    )
    assert second["message"] is None

    box.post("clock", {"advance": 86401})
    info = refused(push(box, "post", body), 400)
    assert picture_id in info


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message": ""},
        {"message": "", "attachments": []},
        {"message": "x" * 281},
        {"message": "hi", "attachments": ["910890718352281600"]},
        {"message": "hi", "attachments": "910890718352281600"},
        {"message": 5},
    ],
)
def test_post_refusals(box: Box, body: dict[str, Any]) -> None:
    refused(push(box, "post", body), 400)
    assert box.get("oneall/posts") == []


def test_post_length_limit(box: Box) -> None:
    assert data(push(box, "post", {"message": "x" * 280}))
    box.post("settings", {"oneall": {"max_post_length": 10}})
    refused(push(box, "post", {"message": "x" * 11}), 400)


def test_settings_are_validated(box: Box) -> None:
    for bad in ({"video_callback": "maybe"}, {"callback_delay": -1}, {"picture_max": 0}):
        reply = box.call("POST", "/_sandbox/settings", signed=False, json={"oneall": bad})
        assert reply.status_code == 400, bad
