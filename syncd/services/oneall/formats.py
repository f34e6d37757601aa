"""What OneAll takes, told by a file's first bytes: the formats seeds 002 and 004 list, their
media types and extensions. The uploader checks a file before any request and names its
media URL by the format; the media server sends it as that format."""

from __future__ import annotations

from pathlib import PurePosixPath

SNIFF = 64
"""Bytes a format is told by: WebM's DocType lies a few dozen bytes into its EBML header."""
FORMATS = {
    "jpeg": ("image/jpeg", (".jpg", ".jpeg")),
    "png": ("image/png", (".png",)),
    "gif": ("image/gif", (".gif",)),
    "bmp": ("image/bmp", (".bmp",)),
    "tiff": ("image/tiff", (".tif", ".tiff")),
    "3gpp": ("video/3gpp", (".3gp", ".3gpp")),
    "avi": ("video/x-msvideo", (".avi",)),
    "flv": ("video/x-flv", (".flv",)),
    "mov": ("video/quicktime", (".mov",)),
    "mpeg4": ("video/mp4", (".mp4",)),
    "mpegps": ("video/mpeg", (".mpg", ".mpeg")),
    "webm": ("video/webm", (".webm",)),
    "wmv": ("video/x-ms-wmv", (".wmv",)),
}
"""Each format OneAll lists (seeds 002, 004): the media type the media server sends it as,
and its usual extensions, the first the one a media URL gets when the file's own name
carries none of them."""


def url_name(name: str, fmt: str) -> str:
    """The name a file's media URL ends in: its own, with an extension of the format its
    bytes show, since OneAll may judge a URL by its extension too (protocols.md 8)."""
    suffix = PurePosixPath(name).suffix
    known = FORMATS[fmt][1]
    if suffix in known:
        return name
    return (name[: -len(suffix)] if suffix.lower() in known else name) + known[0]


def picture_format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def video_format(head: bytes) -> str | None:
    """3gpp, avi, flv, mov, mpeg4, mpegps, webm or wmv (seed 002), by their signatures."""
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return "3gpp" if brand.startswith(b"3g") else "mov" if brand == b"qt  " else "mpeg4"
    if head[4:8] in (b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mov"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV"):
        return "flv"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpegps"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head else None  # other Matroska is not on the list
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return "wmv"
    return None
