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


def smooth_picture(seed: int, size: tuple[int, int] = (160, 120)) -> Image.Image:
    """A photo-like picture: a few random colours blended smoothly (bicubic) over the frame. Re-encoding
    and resizing keep what the tiny model sees (its 32 px input); two seeds differ in colour layout."""
    import numpy as np

    cells = np.random.default_rng(seed).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return Image.fromarray(cells).resize(size, Image.Resampling.BICUBIC)


def reencoded(image: Image.Image, quality: int = 30, scale: float = 1.0) -> bytes:
    """``image`` resized by ``scale`` and saved as a JPEG of ``quality``: another file of the same picture."""
    if scale != 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
