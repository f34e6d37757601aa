"""Small media files with real headers, built in memory for the TwitPic and OneAll tests."""

from __future__ import annotations

import struct
import zlib


def png(width: int = 220, height: int = 84) -> bytes:
    """A valid grey PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\0" + b"\x80" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def gif(width: int = 48, height: int = 32) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x00" * 64 + b";"


def jpeg(width: int = 640, height: int = 480, exif: int = 5000) -> bytes:
    """SOI, a JFIF APP0, a large APP1 (as EXIF makes it), then the SOF0 frame header."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b"\xff\xe1" + struct.pack(">H", exif + 2) + b"E" * exif
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00" * 3
    return b"\xff\xd8" + app0 + app1 + sof0 + b"\xff\xda" + b"\x00" * 100 + b"\xff\xd9"


def bmp() -> bytes:
    return b"BM" + struct.pack("<IHHI", 58, 0, 0, 54) + struct.pack("<Iii", 40, 1, 1) + b"\0" * 36


def tiff() -> bytes:
    return b"II*\x00" + struct.pack("<I", 8) + b"\x00" * 120


VIDEO_HEADS = {
    "mp4": b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom",
    "mov": b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  ",
    "3gp": b"\x00\x00\x00\x14ftyp3gp5\x00\x00\x00\x003gp5",
    "avi": b"RIFF\x00\x10\x00\x00AVI LIST",
    "flv": b"FLV\x01\x05\x00\x00\x00\x09",
    "wmv": bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"),
    "mpeg": b"\x00\x00\x01\xba\x44\x00\x04\x00\x04\x01",
    "webm": b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\x82\x84webm",
}


def video(kind: str, size: int = 4096) -> bytes:
    """A file that starts like a `kind` container, padded to `size` bytes."""
    head = VIDEO_HEADS[kind]
    return head + b"\x00" * (size - len(head))
