"""The TON emulator against protocols.md 2 and 8, driven by a bare signed client."""

from __future__ import annotations

import hashlib
import os
import socket
from urllib.parse import urlsplit

import pytest
import requests

from .sandbox_client import SMALL, TIMEOUT, Box, oauth


def test_single_upload_round_trip(box: Box) -> None:
    data = os.urandom(5000)
    reply = box.ton_post(
        data, bucket="ta_partner", media="image/jpeg", **{"X-TON-Expires": box.expires()}
    )
    assert reply.status_code == 201
    assert reply.headers["Content-Length"] == "0"
    location = reply.headers["Location"]
    assert location.startswith("/1.1/ton/bucket/ta_partner/") and location.endswith(".jpg")
    for name in ("x-rate-limit-limit", "x-rate-limit-remaining", "x-rate-limit-reset"):
        assert reply.headers[name].isdigit()
    assert "x-response-time" in reply.headers

    (obj,) = box.get("ton/objects")
    assert obj["sha256"] == hashlib.sha256(data).hexdigest()
    assert (obj["size"], obj["content_type"], obj["location"]) == (5000, "image/jpeg", location)
    assert box.call("GET", location).content == data


def test_chunked_transfer_encoding_body(box: Box) -> None:
    pieces = [os.urandom(3000), os.urandom(1), os.urandom(70000)]
    reply = box.ton_post(iter(pieces))
    assert reply.status_code == 201
    (entry,) = box.get("requests")
    assert entry["headers"]["Transfer-Encoding"] == "chunked"
    (obj,) = box.get("ton/objects")
    assert obj["sha256"] == hashlib.sha256(b"".join(pieces)).hexdigest()


@pytest.mark.parametrize(
    ("bucket", "headers", "status"),
    [
        ("nope", {}, 400),
        ("forbidden", {}, 403),
        ("ta_partner", {}, 403),  # X-TON-Expires missing
        ("syncd", {"X-TON-Expires": "tomorrow"}, 400),
        ("syncd", {"Content-Type": "application/x-www-form-urlencoded"}, 400),
    ],
)
def test_single_upload_refusals(
    box: Box, bucket: str, headers: dict[str, str], status: int
) -> None:
    reply = box.ton_post(b"x=1", bucket=bucket, **headers)
    assert reply.status_code == status
    if status == 403:
        assert reply.content == b""


def test_expires_beyond_seven_days(box: Box) -> None:
    assert box.ton_post(b"data", **{"X-TON-Expires": box.expires(8)}).status_code == 400
    box.settings(clamp_expires=True)
    assert box.ton_post(b"data", **{"X-TON-Expires": box.expires(8)}).status_code == 201
    (obj,) = box.get("ton/objects")
    assert obj["expires"] == pytest.approx(box.get("clock")["now"] + 7 * 86400, abs=5)


def test_single_upload_at_the_limit_is_413(box: Box) -> None:
    box.settings(single_max=1000)
    assert box.ton_post(b"x" * 1000).status_code == 413
    assert box.ton_post(b"x" * 999).status_code == 201
    assert box.ton_post(iter([b"x" * 600, b"x" * 600])).status_code == 413
    assert len(box.get("ton/objects")) == 1


def test_object_expires(box: Box) -> None:
    location = box.ton_post(b"short-lived", **{"X-TON-Expires": box.expires(1)}).headers["Location"]
    assert box.call("GET", location).status_code == 200
    box.post("clock", {"advance": 86400 + 1})
    assert box.call("GET", location).status_code == 404


def test_resumable_happy_path(box: Box) -> None:
    box.settings(**SMALL)
    data = os.urandom(2048 + 4096 + 100)
    reply = box.call(
        "POST",
        "/1.1/ton/bucket/syncd?resumable=true",
        data=b"",
        headers={
            "Content-Type": "video/mp4",
            "X-TON-Content-Type": "video/mp4",
            "X-TON-Content-Length": str(len(data)),
        },
    )
    assert reply.status_code == 201
    assert reply.headers["X-TON-Min-Chunk-Size"] == "1024"
    assert reply.headers["X-TON-Max-Chunk-Size"] == "4096"
    assert "GMT" in reply.headers["Expires"]
    location = reply.headers["Location"]
    path, _, query = location.partition("?")
    assert query.startswith("resumable=true&resumeId=") and query.split("=")[-1].isdigit()

    first = box.ton_put(location, data[:2048], 0, len(data))
    assert (first.status_code, first.headers["Range"]) == (308, "bytes=0-2047")
    assert first.headers["Content-Length"] == "0"
    second = box.ton_put(location, data[2048:6144], 2048, len(data))
    assert (second.status_code, second.headers["Range"]) == (308, "bytes=0-6143")
    last = box.ton_put(location, data[6144:], 6144, len(data))
    assert (last.status_code, last.headers["Location"]) == (201, path)

    (obj,) = box.get("ton/objects")
    assert obj["sha256"] == hashlib.sha256(data).hexdigest()
    assert box.session(location)["chunks"] == [2048, 4096, 100]
    assert box.call("GET", path).content == data
    # A retry of the final chunk whose 201 was lost gets the same 201 again.
    again = box.ton_put(location, data[6144:], 6144, len(data))
    assert (again.status_code, again.headers["Location"]) == (201, path)


def test_data_location_shape(box: Box) -> None:
    box.settings(location_shape="data", range_prefix=False, **SMALL)
    location = box.ton_init(1500)
    assert location.startswith("/1.1/ton/data/syncd/1000000001/")
    reply = box.ton_put(location, b"a" * 1024, 0, 1500)
    assert (reply.status_code, reply.headers["Range"]) == (308, "0-1023")
    assert box.ton_put(location, b"b" * 476, 1024, 1500).status_code == 201
    assert box.call("GET", location.split("?")[0]).content == b"a" * 1024 + b"b" * 476


def test_init_refusals(box: Box) -> None:
    def init(**headers: str) -> int:
        base = {"Content-Type": "video/mp4", "X-TON-Content-Type": "video/mp4"}
        base["X-TON-Content-Length"] = "10"
        url = "/1.1/ton/bucket/syncd?resumable=true"
        return box.call("POST", url, data=b"", headers={**base, **headers}).status_code

    assert init() == 201
    assert init(**{"X-TON-Content-Type": "video/webm"}) == 400
    assert init(**{"X-TON-Content-Length": "0"}) == 400
    assert init(**{"X-TON-Content-Length": "ten"}) == 400


def test_misaligned_and_oversize_chunks(box: Box) -> None:
    box.settings(**SMALL)
    location = box.ton_init(10000)
    assert box.ton_put(location, b"x" * 1000, 0, 10000).status_code == 400  # not a multiple
    assert box.ton_put(location, b"x" * 5120, 0, 10000).status_code == 400  # over max
    assert box.ton_put(location, b"x" * 1024, 0, 9999).status_code == 400  # wrong total
    assert box.session(location)["received"] == 0


def test_wrong_offset(box: Box) -> None:
    box.settings(**SMALL)
    location = box.ton_init(4096)
    nothing = box.ton_put(location, b"x" * 1024, 1024, 4096)
    assert nothing.status_code == 400 and "Range" not in nothing.headers
    assert box.ton_put(location, b"x" * 1024, 0, 4096).status_code == 308
    ahead = box.ton_put(location, b"x" * 1024, 2048, 4096)
    assert (ahead.status_code, ahead.headers["Range"]) == (400, "bytes=0-1023")
    box.settings(strict_offsets=False)
    lenient = box.ton_put(location, b"x" * 1024, 2048, 4096)
    assert (lenient.status_code, lenient.headers["Range"]) == (308, "bytes=0-1023")


def test_repeated_chunk_is_a_no_op(box: Box) -> None:
    box.settings(**SMALL)
    location = box.ton_init(4096)
    for _ in range(2):
        reply = box.ton_put(location, b"x" * 1024, 0, 4096)
        assert (reply.status_code, reply.headers["Range"]) == (308, "bytes=0-1023")
    session = box.session(location)
    assert (session["received"], session["bytes_received"], session["chunks"]) == (
        1024,
        2048,
        [1024],
    )


def test_status_query(box: Box) -> None:
    box.settings(**SMALL)
    location = box.ton_init(3000)
    empty = box.ton_put(location, b"", 0, 3000)
    assert empty.status_code == 308 and "Range" not in empty.headers
    box.ton_put(location, b"x" * 2048, 0, 3000)
    assert box.ton_put(location, b"", 0, 3000).headers["Range"] == "bytes=0-2047"
    box.ton_put(location, b"x" * 952, 2048, 3000)
    done = box.ton_put(location, b"", 0, 3000)
    assert (done.status_code, done.headers["Location"]) == (201, location.split("?")[0])
    box.settings(status_query=False)
    assert box.ton_put(location, b"", 0, 3000).status_code == 405


def test_forgotten_session_is_404(box: Box) -> None:
    box.settings(**SMALL)
    location = box.ton_init(3000)
    assert box.post("ton/forget", {"location": location}) == {"forgotten": 1}
    assert box.ton_put(location, b"x" * 1024, 0, 3000).status_code == 404
    assert box.ton_put(location, b"", 0, 3000).status_code == 404
    box.ton_init(3000)
    box.ton_init(3000)
    assert box.post("ton/forget", {}) == {"forgotten": 2}
    assert box.get("ton/sessions") == []


@pytest.mark.parametrize("expired_status", [410, 404])
def test_expired_session(box: Box, expired_status: int) -> None:
    box.settings(session_ttl=5, expired_status=expired_status, **SMALL)
    location = box.ton_init(3000)
    assert box.ton_put(location, b"x" * 1024, 0, 3000).status_code == 308
    box.post("clock", {"advance": 6})
    assert box.ton_put(location, b"x" * 1024, 1024, 3000).status_code == expired_status
    assert box.ton_put(location, b"", 0, 3000).status_code == expired_status


@pytest.mark.parametrize(("partial", "kept"), [("none", 1024), ("aligned", 3072)])
def test_reset_mid_chunk(box: Box, partial: str, kept: int) -> None:
    box.settings(partial_chunk=partial, **SMALL)
    location = box.ton_init(8192)
    assert box.ton_put(location, b"a" * 1024, 0, 8192).status_code == 308
    box.fault(method="PUT", path="/1.1/ton/", reset_after_bytes=2500)
    with pytest.raises(requests.ConnectionError):
        box.ton_put(location, b"b" * 4096, 1024, 8192)
    session = box.session(location)
    assert session["bytes_received"] == 1024 + 2500
    assert session["received"] == kept
    assert session["chunks"] == [1024]
    query = box.ton_put(location, b"", 0, 8192)
    assert query.headers["Range"] == f"bytes=0-{kept - 1}"
    rest = b"b" * (8192 - kept)
    while rest:
        piece, rest = rest[:4096], rest[4096:]
        reply = box.ton_put(location, piece, 8192 - len(rest) - len(piece), 8192)
    assert reply.status_code == 201
    (obj,) = box.get("ton/objects")
    assert obj["sha256"] == hashlib.sha256(b"a" * 1024 + b"b" * 7168).hexdigest()
    dropped = [e for e in box.get("requests") if e["status"] is None]
    assert [(e["fault"], e["body_len"]) for e in dropped] == [(1, 2500)]


def test_reset_connection_fault(box: Box) -> None:
    box.fault(path="^/1\\.1/ton/bucket/syncd$", reset_connection=True)
    with pytest.raises(requests.ConnectionError):
        box.ton_post(os.urandom(100_000))
    assert box.ton_post(b"fine").status_code == 201  # count 1: used up
    assert box.get("faults") == []


def test_chunked_transfer_encoding_chunk(box: Box) -> None:
    box.settings(**SMALL)
    location = box.ton_init(3000)

    def put(pieces: list[bytes], first: int, last: int) -> requests.Response:
        headers = {"Content-Type": "video/mp4", "Content-Range": f"bytes {first}-{last}/3000"}
        return box.call("PUT", location, data=iter(pieces), headers=headers)

    assert put([b"a" * 1000, b"a" * 1048], 0, 2047).status_code == 308
    assert put([b"b" * 900, b"b" * 100], 2048, 2999).status_code == 400  # 48 bytes short
    assert put([b"b" * 952, b"b"], 2048, 2999).status_code == 400  # one byte long
    assert box.session(location)["received"] == 2048
    assert put([b"b" * 952], 2048, 2999).status_code == 201
    (obj,) = box.get("ton/objects")
    assert obj["sha256"] == hashlib.sha256(b"a" * 2048 + b"b" * 952).hexdigest()


def _status_without_content_length(box: Box, method: str, path: str, **headers: str) -> int:
    """A signed request with no body and no Content-Length (requests always adds one)."""
    prepared = requests.Request(method, box.url + path, headers=headers, auth=oauth()).prepare()
    lines = [f"{method} {path} HTTP/1.1", f"Host: {urlsplit(box.url).netloc}", "Connection: close"]
    for name, value in prepared.headers.items():
        if name.lower() != "content-length":
            lines.append(f"{name}: {value.decode() if isinstance(value, bytes) else value}")
    address = urlsplit(box.url)
    with socket.create_connection((address.hostname, address.port), timeout=TIMEOUT) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        return int(sock.makefile("rb").readline().split()[1])


def test_init_and_status_query_require_content_length_0(box: Box) -> None:
    """protocols.md 8: the init requires `Content-Length: 0`; 2.5: so does the query."""
    media = {"Content-Type": "video/mp4", "X-TON-Content-Type": "video/mp4"}
    init = {**media, "X-TON-Content-Length": "10"}
    path = "/1.1/ton/bucket/syncd?resumable=true"
    assert _status_without_content_length(box, "POST", path, **init) == 400
    location = box.ton_init(10)
    query = {"Content-Type": "video/mp4", "Content-Range": "bytes */10"}
    assert _status_without_content_length(box, "PUT", location, **query) == 400
    assert box.ton_put(location, b"", 0, 10).status_code == 308
