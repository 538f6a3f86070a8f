"""The type of a stored blob: the bytes decide (libmagic), the name refines within the same family, and
a name never turns bytes into active content the sniffer did not see."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib

import pytest

from satellite.media_type import detect, is_active

CSV_LIKE = b"name,age,city\nbob,3,paris\nann,4,rome\n" * 5
PLAIN = b"just some words, written down\n"
HTML = b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>"
SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>'


def a_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("contents.txt", "hello")
    return buffer.getvalue()


def a_png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))


@pytest.mark.parametrize(
    ("head", "name", "expected"),
    [
        # Text: the name says which text it is.
        (CSV_LIKE, "notes.txt", ("text/plain", "txt")),
        (CSV_LIKE, "table.csv", ("text/csv", "csv")),
        (CSV_LIKE, None, ("text/csv", "csv")),
        (PLAIN, "readme.md", ("text/markdown", "md")),
        # One container, several uses: the name says which.
        (
            a_zip(),
            "report.docx",
            ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
        ),
        (a_zip(), "book.epub", ("application/epub+zip", "epub")),
        (a_zip(), "archive.zip", ("application/zip", "zip")),
        # Different families: the bytes win.
        (a_zip(), "notes.txt", ("application/zip", "zip")),
        (a_png(), "photo.jpg", ("image/png", "png")),
        # A name never makes active content of bytes the sniffer did not see as such.
        (PLAIN, "page.html", ("text/plain", "txt")),
        (PLAIN, "drawing.svg", ("text/plain", "txt")),
        (PLAIN, "app.js", ("text/plain", "txt")),
        (b"\x00\x01\x02\xff" * 300, "page.html", ("application/octet-stream", "bin")),
        # But what the sniffer saw stays what it is, and a text name may make it inert.
        (HTML, "page.html", ("text/html", "html")),
        (HTML, None, ("text/html", "html")),
        (HTML, "page.txt", ("text/plain", "txt")),
        (SVG, "drawing.svg", ("image/svg+xml", "svg")),
    ],
)
def test_the_type_rule(head, name, expected):
    assert detect(head, name) == expected


def test_active_types():
    assert is_active("text/html") and is_active("image/svg+xml") and is_active("application/rss+xml")
    assert not is_active("text/plain") and not is_active("image/png")
