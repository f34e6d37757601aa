"""The TwitPic emulator against protocols.md 4 and 8, driven by a bare client."""

from __future__ import annotations

import hashlib
import re
import time
import tracemalloc
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from syncd.sandbox.credentials import TWITPIC_API_KEY

from . import samples
from .sandbox_client import VERIFY_CREDENTIALS, Box, echo

UPLOAD = "/2/upload.json"
REJECTED = {
    "errors": [{"code": 401, "message": "Could not authenticate you (header rejected by twitter)."}]
}
VERIFY_V1 = "https://api.twitter.com/1/account/verify_credentials.json"
MiB = 1 << 20


def stored_files(tmp_path: Path) -> list[Path]:
    """The media files the emulator keeps (the box fixture's data dir is tmp_path/data)."""
    return list((tmp_path / "data" / "twitpic").iterdir())


def upload(
    box: Box,
    media: bytes | None = b"",
    *,
    name: str = "picture.png",
    media_type: str = "image/png",
    path: str = UPLOAD,
    headers: dict[str, str] | None = None,
    **fields: str,
) -> requests.Response:
    """A multipart upload with a fresh echo; `media=None` leaves the part out."""
    form = {"key": TWITPIC_API_KEY, "message": "a caption", **fields}
    files = None if media is None else {"media": (name, media, media_type)}
    sent = echo() if headers is None else headers
    return box.call("POST", path, signed=False, data=form, files=files, headers=sent)


def test_png_upload(box: Box) -> None:
    data = samples.png(220, 84)
    reply = upload(box, data, message="test")
    assert reply.status_code == 200, reply.text
    assert reply.headers["X-RateLimit-Limit"] == reply.headers["X-RateLimit-Remaining"] == "500"
    body = reply.json()
    assert re.fullmatch(r"[0-9a-z]{6}", body["id"])
    assert body["url"] == f"http://twitpic.com/{body['id']}"
    assert (body["text"], body["width"], body["height"]) == ("test", 220, 84)
    assert (body["size"], body["type"]) == (len(data), "png")
    assert body["user"] == {"id": 1000000001, "screen_name": "syncd_demo"}
    assert body["timestamp"].endswith(" +0000")
    assert abs(parsedate_to_datetime(body["timestamp"]).timestamp() - time.time()) < 60

    (stored,) = box.get("twitpic/uploads")
    assert stored["sha256"] == hashlib.sha256(data).hexdigest()
    assert (stored["filename"], stored["content_type"]) == ("picture.png", "image/png")
    assert (stored["id"], stored["url"], stored["message"]) == (body["id"], body["url"], "test")
    assert (stored["size"], stored["type"]) == (len(data), "png")


@pytest.mark.parametrize(
    ("data", "kind", "size"),
    [
        (samples.jpeg(640, 480), "jpg", (640, 480)),
        (samples.jpeg(3, 2, exif=60000), "jpg", (3, 2)),
        (samples.gif(48, 32), "gif", (48, 32)),
        (samples.png(1, 1), "png", (1, 1)),
    ],
)
def test_image_types_and_sizes(box: Box, data: bytes, kind: str, size: tuple[int, int]) -> None:
    body = upload(box, data, media_type="application/octet-stream").json()
    assert (body["type"], body["width"], body["height"]) == (kind, *size)


@pytest.mark.parametrize("kind", ["mp4", "mov", "3gp", "avi", "flv", "wmv", "mpeg"])
def test_video_types(box: Box, kind: str) -> None:
    reply = upload(box, samples.video(kind), name=f"clip.{kind}", media_type="video/mp4")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert (body["type"], body["size"], body["width"], body["height"]) == (kind, 4096, None, None)


@pytest.mark.parametrize(
    "data",
    [b"plain text, not media " * 10, samples.bmp(), samples.tiff(), samples.video("webm"), b"x"],
)
def test_unsupported_types_are_400(box: Box, tmp_path: Path, data: bytes) -> None:
    reply = upload(box, data)
    assert reply.status_code == 400
    assert reply.json()["errors"][0]["code"] == 400
    assert box.get("twitpic/uploads") == []
    assert stored_files(tmp_path) == []


def test_xml_variant(box: Box) -> None:
    reply = upload(box, samples.png(5, 7), path="/2/upload.xml", message="in xml")
    assert reply.status_code == 200
    assert reply.headers["Content-Type"].startswith("application/xml")
    image = ET.fromstring(reply.content)
    assert image.tag == "image"
    assert image.findtext("url") == f"http://twitpic.com/{image.findtext('id')}"
    assert (image.findtext("text"), image.findtext("width"), image.findtext("height")) == (
        "in xml",
        "5",
        "7",
    )
    assert image.findtext("user/screen_name") == "syncd_demo"
    refused = upload(box, samples.png(), path="/2/upload.xml", headers={})
    assert refused.status_code == 401
    assert ET.fromstring(refused.content).findtext("error/code") == "401"


def test_numbers_as_strings(box: Box) -> None:
    box.post("settings", {"twitpic": {"numbers_as_strings": True}})
    body = upload(box, samples.gif(10, 20), message="").json()
    assert (body["width"], body["height"], body["text"]) == ("10", "20", "")
    assert body["size"] == str(len(samples.gif(10, 20)))


# -- the echo (protocols.md 3, 8) ---------------------------------------------------------


@pytest.mark.parametrize(
    "drop", ["X-Auth-Service-Provider", "X-Verify-Credentials-Authorization", "both"]
)
def test_missing_echo_header_is_401(box: Box, drop: str) -> None:
    headers = {k: v for k, v in echo().items() if drop not in (k, "both")}
    reply = upload(box, samples.png(), headers=headers)
    assert (reply.status_code, reply.json()) == (401, REJECTED)


@pytest.mark.parametrize(
    "provider",
    [
        "http://api.twitter.com/1.1/account/verify_credentials.json",
        "https://api.twitter.com/2/account/verify_credentials.json",
        "https://evil.example/1.1/account/verify_credentials.json",
        "https://api.twitter.com/1.1/account/verify_credentials.xml",
    ],
)
def test_untrusted_provider_is_401(box: Box, provider: str) -> None:
    reply = upload(box, samples.png(), headers=echo(provider))
    assert (reply.status_code, reply.json()) == (401, REJECTED)


def test_v1_provider_and_query_are_accepted(box: Box) -> None:
    assert upload(box, samples.png(), headers=echo(VERIFY_V1)).status_code == 200
    with_query = VERIFY_CREDENTIALS + "?application_id=42"
    assert upload(box, samples.png(), headers=echo(with_query)).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda: echo(client_secret="wrong"), id="wrong-secret"),
        pytest.param(lambda: echo(signed_url=VERIFY_V1), id="signed-for-another-url"),
        pytest.param(lambda: echo(timestamp=str(int(time.time()) - 400)), id="stale"),
        pytest.param(lambda: echo(resource_owner_key="1-unknown"), id="unknown-token"),
    ],
)
def test_bad_echo_is_401(box: Box, headers: Any) -> None:
    reply = upload(box, samples.png(), headers=headers())
    assert (reply.status_code, reply.json()) == (401, REJECTED)


def test_replayed_echo_is_401(box: Box) -> None:
    headers = echo()
    assert upload(box, samples.png(), headers=headers).status_code == 200
    assert upload(box, samples.png(), headers=headers).status_code == 401


# -- the form (protocols.md 4, 8) ---------------------------------------------------------


@pytest.mark.parametrize("missing", ["key", "message", "media"])
def test_missing_field_is_400(box: Box, missing: str) -> None:
    form = {"key": TWITPIC_API_KEY, "message": "m"}
    form.pop(missing, None)
    files = {"media": ("a.png", samples.png(), "image/png")}
    if missing == "media":
        files = {"other": ("a.png", samples.png(), "image/png")}
    reply = box.call("POST", UPLOAD, signed=False, data=form, files=files, headers=echo())
    assert reply.status_code == 400
    assert missing in reply.json()["errors"][0]["message"]
    assert box.get("twitpic/uploads") == []


def test_empty_key_is_missing_and_unknown_key_is_401(box: Box) -> None:
    assert upload(box, samples.png(), key="").status_code == 400
    reply = upload(box, samples.png(), key="not-a-key")
    assert reply.status_code == 401
    assert reply.json()["errors"][0]["code"] == 401
    assert box.get("twitpic/uploads") == []


def test_non_multipart_body_is_400(box: Box) -> None:
    form = {"key": TWITPIC_API_KEY, "message": "m", "media": "bytes"}
    reply = box.call("POST", UPLOAD, signed=False, data=form, headers=echo())
    assert reply.status_code == 400


def test_truncated_multipart_is_400(box: Box) -> None:
    request = requests.Request(
        "POST",
        box.url + UPLOAD,
        data={"key": TWITPIC_API_KEY, "message": "m"},
        files={"media": ("a.png", samples.png(), "image/png")},
        headers=echo(),
    ).prepare()
    assert isinstance(request.body, bytes)
    request.body = request.body[: -len(b"--\r\n") - 10]
    request.headers["Content-Length"] = str(len(request.body))
    reply = box.http.send(request, timeout=10)
    assert reply.status_code == 400
    assert "multipart" in reply.json()["errors"][0]["message"]
    assert box.get("twitpic/uploads") == []


def test_size_limits_are_per_kind(box: Box, tmp_path: Path) -> None:
    box.post("settings", {"twitpic": {"image_max": 2000, "video_max": 3000}})
    too_big = upload(box, samples.jpeg(exif=2000))
    assert too_big.status_code == 413
    assert upload(box, samples.jpeg(exif=1000)).status_code == 200
    assert upload(box, samples.video("mp4", 3000)).status_code == 200
    assert upload(box, samples.video("mp4", 3001)).status_code == 413
    assert len(box.get("twitpic/uploads")) == len(stored_files(tmp_path)) == 2


def test_reset_forgets_uploads_and_their_files(box: Box, tmp_path: Path) -> None:
    assert upload(box, samples.png()).status_code == 200
    assert len(stored_files(tmp_path)) == 1
    box.post("reset", {})
    assert box.get("twitpic/uploads") == []
    assert stored_files(tmp_path) == []


def test_fault_in_twitpic_shape(box: Box) -> None:
    box.fault(path="^/2/upload", status=503, retry_after=5)
    reply = upload(box, samples.png())
    assert (reply.status_code, reply.headers["Retry-After"]) == (503, "5")
    assert reply.json() == {"errors": [{"code": 503, "message": "Service Unavailable"}]}
    assert upload(box, samples.png()).status_code == 200


def test_wrong_method_is_405(box: Box) -> None:
    reply = box.call("GET", UPLOAD, signed=False)
    assert (reply.status_code, reply.headers["Allow"]) == (405, "POST")
    assert reply.json()["errors"][0]["code"] == 405


def test_large_upload_is_streamed(box: Box) -> None:
    """50 MiB through a chunked multipart body: the server's memory stays flat."""
    size = 50 * MiB
    boundary = "syncd-test-boundary"
    piece = samples.video("mp4", MiB)
    expected = hashlib.sha256()

    def body() -> Iterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="key"\r\n\r\n'
            f"{TWITPIC_API_KEY}\r\n--{boundary}\r\n"
            'Content-Disposition: form-data; name="message"\r\n\r\nbig\r\n'
            f"--{boundary}\r\n"
            'Content-Disposition: form-data; name="media"; filename="big.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        for _ in range(size // MiB):
            expected.update(piece)
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    headers = {**echo(), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    tracemalloc.start()
    try:
        reply = box.call("POST", UPLOAD, signed=False, data=body(), headers=headers, timeout=60)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert reply.status_code == 200, reply.text
    assert (reply.json()["size"], reply.json()["type"]) == (size, "mp4")
    (stored,) = box.get("twitpic/uploads")
    assert stored["sha256"] == expected.hexdigest()
    assert peak < 16 * MiB, f"peak {peak / MiB:.1f} MiB while receiving 50 MiB"
