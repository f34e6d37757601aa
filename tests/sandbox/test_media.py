"""The shared media helpers: streamed multipart parsing, sniffing, sizes, storing."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from syncd.sandbox.media import (
    MultipartError,
    MultipartReader,
    TooLarge,
    image_size,
    multipart_boundary,
    sniff,
    store,
)

from . import samples

# Data that contains most of a delimiter, to catch a parser that cuts on a prefix.
TRICKY = b"a\r\n--bound\r\n--boundar" + bytes(range(256)) * 40 + b"\r\n-"


def multipart(
    files: dict[str, tuple[str, bytes, str]], fields: dict[str, str]
) -> tuple[bytes, str]:
    request = requests.Request("POST", "http://x/", data=fields, files=files).prepare()
    assert isinstance(request.body, bytes)
    return request.body, request.headers["Content-Type"]


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def parse(data: bytes, content_type: str, size: int) -> list[tuple[str, str | None, str, bytes]]:
    boundary = multipart_boundary(content_type)
    assert boundary is not None
    return [
        (part.name, part.filename, part.content_type, b"".join(part.chunks))
        for part in MultipartReader(pieces(data, size), boundary)
    ]


@pytest.mark.parametrize("size", [1, 2, 7, 39, 1000, 1 << 20])
def test_parts_survive_any_piece_boundaries(size: int) -> None:
    body, content_type = multipart(
        {"media": ("näme.bin", TRICKY, "video/mp4")}, {"key": "k", "message": ""}
    )
    assert parse(body, content_type, size) == [
        ("key", None, "text/plain", b"k"),
        ("message", None, "text/plain", b""),
        ("media", "näme.bin", "video/mp4", TRICKY),
    ]


def test_unread_parts_are_skipped_and_preamble_ignored() -> None:
    body, content_type = multipart({"a": ("a", b"1" * 5000, "x/y"), "b": ("b", b"2", "x/y")}, {})
    boundary = multipart_boundary(content_type)
    assert boundary is not None
    names = [part.name for part in MultipartReader([b"preamble\r\n" + body], boundary)]
    assert names == ["a", "b"]


@pytest.mark.parametrize(
    "cut",
    [
        lambda body: body[:-4],  # no closing "--"
        lambda body: body[:-30],  # ends inside the data
        lambda body: body.replace(b"Content-Disposition", b"Content-Dispensation"),
        lambda body: body.replace(b'; name="key"', b""),
        lambda body: b"no boundary anywhere",
    ],
)
def test_malformed_bodies(cut: object) -> None:
    body, content_type = multipart({"media": ("a", b"data", "x/y")}, {"key": "k"})
    assert callable(cut)
    with pytest.raises(MultipartError):
        parse(cut(body), content_type, 10)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/mixed; boundary=a",
    ],
)
def test_not_a_form_boundary(value: str | None) -> None:
    assert multipart_boundary(value) is None
    assert multipart_boundary('multipart/form-data; boundary="a b"') == b"a b"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (samples.png(), "png"),
        (samples.jpeg(), "jpeg"),
        (samples.gif(), "gif"),
        (samples.bmp(), "bmp"),
        (samples.tiff(), "tiff"),
        *((samples.video(kind), kind) for kind in samples.VIDEO_HEADS),
        (b"\x1a\x45\xdf\xa3" + b"\x00" * 20 + b"matroska", "mkv"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "mov"),
        (b"BM plain text that starts with BM", None),
        (b"", None),
        (b"hello", None),
    ],
)
def test_sniff(data: bytes, expected: str | None) -> None:
    assert sniff(data[:64]) == expected


def test_image_sizes() -> None:
    assert image_size(io.BytesIO(samples.png(3, 4)), "png") == (3, 4)
    assert image_size(io.BytesIO(samples.gif(5, 6)), "gif") == (5, 6)
    assert image_size(io.BytesIO(samples.jpeg(7, 8, exif=65000)), "jpeg") == (7, 8)
    assert image_size(io.BytesIO(samples.bmp()), "bmp") == (1, 1)
    assert image_size(io.BytesIO(samples.tiff()), "tiff") is None
    assert image_size(io.BytesIO(b"\xff\xd8\xff"), "jpeg") is None
    assert image_size(io.BytesIO(b"\x89PNG"), "png") is None


def test_store_judges_once_and_cleans_up(tmp_path: Path) -> None:
    seen: list[str | None] = []

    def judge(fmt: str | None) -> int:
        seen.append(fmt)
        return 5000

    data = samples.video("mp4", 5000)
    stored = store(pieces(data, 10), tmp_path / "ok", judge)
    assert (stored.size, stored.format, seen) == (5000, "mp4", ["mp4"])
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "ok").read_bytes() == data

    with pytest.raises(TooLarge):
        store(pieces(data + b"!", 10), tmp_path / "big", judge)
    assert not (tmp_path / "big").exists()
    short = store([b"GIF89a"], tmp_path / "short", judge)
    assert (short.format, seen[-1]) == ("gif", "gif")

    def refuse(fmt: str | None) -> int:
        raise ValueError(fmt)

    with pytest.raises(ValueError, match="None"):
        store([b"?" * 100], tmp_path / "refused", refuse)
    assert not (tmp_path / "refused").exists()
