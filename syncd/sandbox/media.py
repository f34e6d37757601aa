"""Received media, shared by TwitPic and OneAll: a streaming multipart/form-data reader,
storing a stream to a file with its sha256, format sniffing by magic bytes, image sizes.

Everything works piece by piece over an iterator of byte strings (the request `Body`, or a
fetched response), so a 1 GiB upload or download keeps memory flat. Formats are told by
content, never by file name or declared Content-Type, as the services document their limits
in terms of formats (protocols.md 4, 6.3, 6.4).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import HeaderParser
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import BinaryIO

MiB = 1 << 20
SNIFF_BYTES = 64
"""Bytes of the head the sniffer looks at (WebM's DocType sits within them)."""

IMAGE_FORMATS = frozenset({"jpeg", "png", "gif", "bmp", "tiff"})
VIDEO_FORMATS = frozenset({"mp4", "mov", "3gp", "avi", "flv", "wmv", "mpeg", "webm"})
"""Every format `sniff` names (it also says "mkv" for Matroska other than WebM)."""

_FTYP_BRANDS = {b"qt  ": "mov", b"3gp": "3gp", b"3g2": "3gp"}
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
_ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE})


def sniff(head: bytes) -> str | None:
    """The format of a file starting with `head` (at least SNIFF_BYTES of it, unless the
    file is shorter), or None when it is none of those this module knows."""
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"BM") and len(head) >= 26 and head[6:10] == b"\0\0\0\0":
        return "bmp"  # "BM" alone would take text for a bitmap; the reserved word is zero
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    if head[4:8] == b"ftyp":
        brand = head[8:12]
        return _FTYP_BRANDS.get(brand, _FTYP_BRANDS.get(brand[:3], "mp4"))
    if head[4:8] in _QUICKTIME_ATOMS:
        return "mov"  # QuickTime files that predate `ftyp`
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(_ASF_GUID):
        return "wmv"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return "mpeg"  # a program stream pack header, or an MPEG-1/2 sequence header
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:SNIFF_BYTES] else "mkv"
    return None


def image_size(file: BinaryIO, fmt: str) -> tuple[int, int] | None:
    """(width, height) of a PNG, GIF, BMP or JPEG, read with seeks (never the whole file);
    None when the format has no parser here or the header is damaged."""
    try:
        if fmt == "png":
            file.seek(16)
            return _pair(">II", file.read(8))
        if fmt == "gif":
            file.seek(6)
            return _pair("<HH", file.read(4))
        if fmt == "bmp":
            file.seek(18)
            found = _pair("<ii", file.read(8))
            return None if found is None else (abs(found[0]), abs(found[1]))
        if fmt == "jpeg":
            return _jpeg_size(file)
    except (OSError, struct.error):
        return None
    return None


def _pair(layout: str, data: bytes) -> tuple[int, int] | None:
    if len(data) != struct.calcsize(layout):
        return None
    first, second = struct.unpack(layout, data)
    return int(first), int(second)


def _jpeg_size(file: BinaryIO) -> tuple[int, int] | None:
    """Walk the marker segments to the first SOFn frame header (EXIF and ICC segments come
    first and can be tens of KiB, hence the walk rather than a fixed offset)."""
    file.seek(2)
    for _ in range(1000):
        marker = file.read(2)
        while marker[:1] == b"\xff" and marker[1:] == b"\xff":  # fill bytes
            marker = marker[1:] + file.read(1)
        if len(marker) != 2 or marker[0] != 0xFF:
            return None
        if marker[1] in (0x01, *range(0xD0, 0xD8)):  # segments without a length
            continue
        length = struct.unpack(">H", file.read(2))[0]
        if marker[1] in _JPEG_SOF:
            found = _pair(">HH", file.read(5)[1:])
            return None if found is None else (found[1], found[0])
        if marker[1] == 0xDA or length < 2:  # scan data before any frame header
            return None
        file.seek(length - 2, 1)
    return None


# -- storing a stream ---------------------------------------------------------------------


class TooLarge(Exception):
    """A stream went over the byte limit its format allows; nothing was kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes")
        self.limit = limit


Judge = Callable[[str | None], int]
"""Called once with the sniffed format (None: unknown) as soon as the head is in: returns
the byte limit for that format, or raises the service's refusal."""


@dataclass(frozen=True, slots=True)
class Stored:
    file: Path
    size: int
    sha256: str
    format: str | None


def store(pieces: Iterable[bytes], file: Path, judge: Judge) -> Stored:
    """Stream `pieces` into `file`, hashing as they go. The format is judged as soon as
    SNIFF_BYTES are in, so a wrong type or an oversize file is refused without storing it
    all. On any exception (the judge's, TooLarge, a dropped connection) `file` is removed."""
    sha = hashlib.sha256()
    head = bytearray()
    size = 0
    limit: int | None = None
    fmt: str | None = None
    try:
        with file.open("wb") as out:
            for piece in pieces:
                if limit is None and len(head) < SNIFF_BYTES:
                    head += piece[: SNIFF_BYTES - len(head)]
                    if len(head) >= SNIFF_BYTES:
                        fmt = sniff(bytes(head))
                        limit = judge(fmt)
                size += len(piece)
                if limit is not None and size > limit:
                    raise TooLarge(limit)
                out.write(piece)
                sha.update(piece)
            if limit is None:  # shorter than SNIFF_BYTES
                fmt = sniff(bytes(head))
                limit = judge(fmt)
                if size > limit:
                    raise TooLarge(limit)
    except BaseException:
        file.unlink(missing_ok=True)
        raise
    return Stored(file, size, sha.hexdigest(), fmt)


# -- multipart/form-data (RFC 7578), streamed -------------------------------------------

HEADER_MAX = 16 * 1024
"""A part's header block may be this long; multipart headers are a line or two."""
PARTS_MAX = 100


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


def multipart_boundary(content_type: str | None) -> bytes | None:
    """The boundary of a `multipart/form-data` Content-Type; None for any other type."""
    message = Message()
    message["Content-Type"] = content_type or ""
    boundary = message.get_param("boundary")
    if message.get_content_type() != "multipart/form-data" or not isinstance(boundary, str):
        return None
    if not 1 <= len(boundary) <= 70 or not boundary.isascii():
        return None
    return boundary.encode()


@dataclass(slots=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    chunks: Iterator[bytes]
    """The part's data in pieces; what is not read is skipped when the next part is."""

    def text(self, cap: int) -> str:
        """The data as UTF-8 text; MultipartError when over `cap` bytes or not UTF-8."""
        data = bytearray()
        for chunk in self.chunks:
            data += chunk
            if len(data) > cap:
                raise MultipartError(f"the field {self.name!r} is over {cap} bytes")
        try:
            return data.decode()
        except UnicodeDecodeError:
            raise MultipartError(f"the field {self.name!r} is not UTF-8") from None


class MultipartReader:
    """Parts of a multipart body, in order: `for part in MultipartReader(pieces, b)`.

    The buffer holds at most one body piece plus a boundary's length, whatever the part
    sizes. A body that ends before the closing boundary raises MultipartError.
    """

    def __init__(self, pieces: Iterable[bytes], boundary: bytes) -> None:
        self._pieces = iter(pieces)
        self._buf = bytearray(b"\r\n")  # so the first delimiter looks like the others
        self._delimiter = b"\r\n--" + boundary

    def __iter__(self) -> Iterator[Part]:
        for _ in self._data():  # the preamble
            pass
        for _ in range(PARTS_MAX):
            if not self._boundary_line():
                return
            part = self._part(self._headers())
            yield part
            for _ in part.chunks:  # what the consumer left unread
                pass
        raise MultipartError(f"more than {PARTS_MAX} parts")

    def _fill(self) -> bool:
        """Append the next body piece to the buffer; False at the end of the body."""
        for piece in self._pieces:
            if piece:
                self._buf += piece
                return True
        return False

    def _need(self, size: int) -> None:
        while len(self._buf) < size:
            if not self._fill():
                raise MultipartError("the body ends inside the multipart framing")

    def _boundary_line(self) -> bool:
        """Consume the rest of a delimiter line: False for the closing `--` delimiter."""
        self._need(2)
        if self._buf[:2] == b"--":
            return False
        while True:
            self._need(2)
            if self._buf[:2] == b"\r\n":
                del self._buf[:2]
                return True
            if self._buf[0] not in b" \t":  # transport padding (RFC 2046 5.1.1)
                raise MultipartError("garbage after a boundary")
            del self._buf[:1]

    def _headers(self) -> Message:
        self._need(2)
        if self._buf[:2] == b"\r\n":  # a part without headers
            del self._buf[:2]
            return Message()
        while (end := self._buf.find(b"\r\n\r\n")) < 0:
            if len(self._buf) > HEADER_MAX or not self._fill():
                raise MultipartError("a part's headers do not end")
        block = self._buf[:end].decode("utf-8", "replace")
        del self._buf[: end + 4]
        return HeaderParser().parsestr(block + "\r\n\r\n")

    def _part(self, headers: Message) -> Part:
        if headers.get_content_disposition() != "form-data":
            raise MultipartError("a part without Content-Disposition: form-data")
        name = headers.get_param("name", header="content-disposition")
        if name is None:
            raise MultipartError("a part without a name")
        return Part(
            name=collapse_rfc2231_value(name),
            filename=headers.get_filename(),
            content_type=headers.get_content_type(),
            chunks=self._data(),
        )

    def _data(self) -> Iterator[bytes]:
        """Data up to the next delimiter, which is consumed; a tail that might be the
        start of a delimiter stays in the buffer until more arrives."""
        keep = len(self._delimiter) - 1
        while True:
            at = self._buf.find(self._delimiter)
            if at >= 0:
                if at:
                    yield bytes(self._buf[:at])
                del self._buf[: at + len(self._delimiter)]
                return
            if len(self._buf) > keep:
                cut = len(self._buf) - keep
                yield bytes(self._buf[:cut])
                del self._buf[:cut]
            if not self._fill():
                raise MultipartError("the body ends before the closing boundary")
