"""Workspace file previews from their first bytes (maze/api/previews.py): images made here byte by
byte (no imaging library), text, CSV and binary."""

from __future__ import annotations

import struct
import zlib

from maze.api.previews import TEXT_BYTES, image_info, preview


def png(width: int, height: int) -> bytes:
    """A real PNG: grey pixels, one IDAT."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def jpeg(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 3000) + b"E" * 3000  # metadata before the frame
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + exif + sof0 + b"\xff\xd9"


def test_png_jpeg_gif_webp_bmp_dimensions() -> None:
    assert image_info(png(7, 3)) == ("image/png", 7, 3)
    assert image_info(jpeg(640, 480)) == ("image/jpeg", 640, 480)
    assert image_info(b"GIF89a" + struct.pack("<HH", 12, 34) + b"\x00" * 10) == ("image/gif", 12, 34)
    vp8x = (
        b"RIFF"
        + b"\x00" * 4
        + b"WEBP"
        + b"VP8X"
        + b"\x00" * 8
        + (99).to_bytes(3, "little")
        + (49).to_bytes(3, "little")
    )
    assert image_info(vp8x) == ("image/webp", 100, 50)
    bmp = b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, 20, -10)
    assert image_info(bmp) == ("image/bmp", 20, 10)
    assert image_info(b"hello") is None
    assert image_info(b"\x89PNG\r\n\x1a\n") == ("image/png", None, None)  # cut before its header


def test_an_image_is_known_by_its_bytes_not_its_name() -> None:
    shown = preview("photo.txt", "text/plain", png(2, 2), True, 50, 20)
    assert (shown.kind, shown.content_type, shown.width, shown.height) == ("image", "image/png", 2, 2)


def test_text_first_lines() -> None:
    shown = preview("a.txt", "text/plain", b"one\ntwo\nthree\n", True, 2, 20)
    assert shown.kind == "text" and shown.lines == ["one", "two"] and shown.truncated
    whole = preview("a.txt", "text/plain", b"one\ntwo", True, 50, 20)
    assert whole.lines == ["one", "two"] and not whole.truncated


def test_a_read_cut_midway_drops_its_partial_line_and_character() -> None:
    head = ("x" * 10 + "\n").encode() * 3 + "é".encode()[:1]  # cut inside a 2-byte character
    shown = preview("a.log", "text/plain", head, False, 50, 20)
    assert shown.kind == "text" and shown.lines == ["x" * 10] * 3 and shown.truncated


def test_long_text_is_bounded() -> None:
    shown = preview("a.txt", "text/plain", b"y" * (TEXT_BYTES * 2), False, 50, 20)
    assert shown.kind == "text" and shown.truncated and all(len(line) <= 4096 for line in shown.lines or [])


def test_csv_header_and_rows_parsed() -> None:
    data = b'name,comment\nann,"hello, world"\nbob,"two\nlines"\ncid,x\n'
    shown = preview("people.csv", "text/csv", data, True, 50, 2)
    assert shown.kind == "csv"
    assert shown.columns == ["name", "comment"]
    assert shown.rows == [["ann", "hello, world"], ["bob", "two\nlines"]]
    assert shown.truncated
    tsv = preview("t.tsv", "text/tab-separated-values", b"a\tb\n1\t2\n", True, 50, 20)
    assert (tsv.columns, tsv.rows, tsv.truncated) == (["a", "b"], [["1", "2"]], False)


def test_binary_and_invalid_utf8() -> None:
    assert preview("a.bin", "application/octet-stream", b"\x00\x01\x02", True, 50, 20).kind == "binary"
    assert preview("a.txt", "text/plain", b"\xff\xfe\xfa", True, 50, 20).kind == "binary"
    assert preview("empty.txt", "text/plain", b"", True, 50, 20).lines == []
