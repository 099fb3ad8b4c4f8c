"""What a workspace file's preview shows, from its first bytes: pure functions (no I/O).

- an image (PNG, JPEG, GIF, WebP, BMP, recognised by its magic bytes): its type and dimensions;
- CSV or TSV (by the path's extension) that reads as UTF-8: its header and first rows, parsed by
  the csv module;
- other UTF-8 text (no NUL byte): its first lines;
- anything else: its type and size only.
"""

from __future__ import annotations

import codecs
import csv
import io
from typing import Literal

from msgspec import Struct

HEAD_BYTES = 256 * 1024  # read of a file for its preview: room for a JPEG's metadata before its size
TEXT_BYTES = 64 * 1024  # of which a text or CSV preview shows at most this much
MAX_LINE_CHARS = 4096  # a longer line (or CSV cell) is cut, and the preview says `truncated`

Kind = Literal["text", "csv", "image", "binary"]


class Preview(Struct, frozen=True):
    kind: Kind
    content_type: str
    truncated: bool = False
    lines: list[str] | None = None
    columns: list[str] | None = None
    rows: list[list[str]] | None = None
    width: int | None = None
    height: int | None = None


def preview(path: str, content_type: str, head: bytes, whole: bool, max_lines: int, max_rows: int) -> Preview:
    """The preview of a file from its first bytes `head` (`whole`: that is all of it)."""
    image = image_info(head)
    if image is not None:
        kind, width, height = image
        return Preview(kind="image", content_type=kind, width=width, height=height)
    complete = whole and len(head) <= TEXT_BYTES  # the text shown is all of the file
    text = _utf8(head[:TEXT_BYTES], final=complete)
    if text is None:
        return Preview(kind="binary", content_type=content_type)
    lower = path.lower()
    if lower.endswith((".csv", ".tsv")):
        table = _csv(text, "\t" if lower.endswith(".tsv") else ",", complete, max_rows)
        if table is not None:
            return Preview(kind="csv", content_type=content_type, **table)  # type: ignore[arg-type]
    lines = text.splitlines()
    truncated = not complete
    if truncated and lines and not text.endswith(("\n", "\r")):
        lines.pop()  # the last line was cut by the read
    if len(lines) > max_lines:
        lines, truncated = lines[:max_lines], True
    if any(len(line) > MAX_LINE_CHARS for line in lines):
        lines, truncated = [line[:MAX_LINE_CHARS] for line in lines], True
    return Preview(kind="text", content_type=content_type, truncated=truncated, lines=lines)


def _utf8(data: bytes, final: bool) -> str | None:
    """The text, or None when it is not UTF-8 text (a NUL byte, an invalid sequence; a sequence
    cut by the end of the read is fine when it is not the end of the file)."""
    if b"\x00" in data:
        return None
    try:
        text: str = codecs.getincrementaldecoder("utf-8")().decode(data, final=final)
    except UnicodeDecodeError:
        return None
    return text.removeprefix("\ufeff")


def _csv(text: str, delimiter: str, whole: bool, max_rows: int) -> dict[str, object] | None:
    if not whole:
        end = max(text.rfind("\n"), text.rfind("\r"))
        text = text[: end + 1] if end >= 0 else ""
    try:
        rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error:
        return None  # not CSV after all: shown as text
    truncated = not whole
    if rows:
        columns, body = rows[0], rows[1:]
    else:
        columns, body = [], []
    if len(body) > max_rows:
        body, truncated = body[:max_rows], True
    cells = [columns, *body]
    if any(len(cell) > MAX_LINE_CHARS for row in cells for cell in row):
        columns = [c[:MAX_LINE_CHARS] for c in columns]
        body = [[c[:MAX_LINE_CHARS] for c in row] for row in body]
        truncated = True
    return {"columns": columns, "rows": body, "truncated": truncated}


def image_info(head: bytes) -> tuple[str, int | None, int | None] | None:
    """(content type, width, height) of an image recognised by its magic bytes; the dimensions are
    None when they are not within `head`. None: not an image this knows."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(head) >= 24 and head[12:16] == b"IHDR":
            return "image/png", int.from_bytes(head[16:20]), int.from_bytes(head[20:24])
        return "image/png", None, None
    if head[:6] in (b"GIF87a", b"GIF89a"):
        if len(head) >= 10:
            return "image/gif", _le(head, 6, 2), _le(head, 8, 2)
        return "image/gif", None, None
    if head.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(head)
        return "image/jpeg", width, height
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        width, height = _webp_size(head)
        return "image/webp", width, height
    if head[:2] == b"BM" and len(head) >= 26 and int.from_bytes(head[14:18], "little") >= 12:
        width = int.from_bytes(head[18:22], "little", signed=True)
        height = int.from_bytes(head[22:26], "little", signed=True)
        return "image/bmp", abs(width), abs(height)
    return None


def _le(data: bytes, at: int, size: int) -> int:
    return int.from_bytes(data[at : at + size], "little")


# start-of-frame markers (baseline, progressive, lossless...): not DHT (C4), JPG (C8) or DAC (CC)
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(data: bytes) -> tuple[int | None, int | None]:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None, None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD9)):  # markers without a length
            at += 2
            continue
        length = int.from_bytes(data[at + 2 : at + 4])
        if marker in _SOF:
            if at + 9 > len(data):
                return None, None
            return int.from_bytes(data[at + 7 : at + 9]), int.from_bytes(data[at + 5 : at + 7])
        if length < 2:
            return None, None
        at += 2 + length
    return None, None


def _webp_size(data: bytes) -> tuple[int | None, int | None]:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30:
        return _le(data, 26, 2) & 0x3FFF, _le(data, 28, 2) & 0x3FFF
    if chunk == b"VP8L" and len(data) >= 25:
        bits = _le(data, 21, 4)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(data) >= 30:
        return _le(data, 24, 3) + 1, _le(data, 27, 3) + 1
    return None, None
