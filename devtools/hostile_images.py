"""Tiny files that declare huge pictures: the decompression-memory attacks of the hardening issue.

Shared by the memory tests and the soak (bench/soak.py), so both send the same hostile bytes.
"""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header declaring width x height grey pixels, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def plain_jpeg(side: int) -> bytes:
    """A one-colour side x side JPEG: a few hundred bytes that decode to side*side*3 bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (180, 170, 160)).save(buffer, "JPEG", quality=20)
    return buffer.getvalue()
