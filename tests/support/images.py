"""Test pictures: plain and patterned images, encoded, and base64 for JSON bodies."""

from __future__ import annotations

import base64
import io

from PIL import Image


def image_bytes(
    color: tuple[int, ...] = (200, 30, 30),
    size: tuple[int, int] = (64, 48),
    fmt: str = "PNG",
    mode: str = "RGB",
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, fmt)
    return buffer.getvalue()


def patterned_image(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """A picture that differs from other seeds in colour and structure (random weights need contrast)."""
    image = Image.new("RGB", size, ((seed * 67) % 256, (seed * 131) % 256, (seed * 29) % 256))
    step = 4 + seed % 7
    pixels = image.load()
    for x in range(size[0]):
        for y in range(size[1]):
            if ((x // step) + (y // step)) % 2:
                pixels[x, y] = ((seed * 17) % 256, 255 - (seed * 53) % 256, (seed * 97) % 256)
    return image


def encode_png(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
