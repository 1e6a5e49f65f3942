"""Image inputs become the right pixels: orientation, transparency, animation, formats, base64 forms."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from search.errors import BadInput
from search.images.loader import ImageLimits, decode_image
from tests.support.images import b64, encode_png, image_bytes, patterned_image

LIMITS = ImageLimits(max_bytes=10_000_000, max_pixels=10_000_000)
WHITE = (255, 255, 255)


def save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def embedding(inference, value: str) -> np.ndarray:
    return np.array(inference({"inputs": value, "parameters": {"mode": "image_embedding"}})[0]["embedding"])


def close(a: tuple[int, ...], b: tuple[int, ...], tolerance: int = 8) -> bool:
    return all(abs(x - y) <= tolerance for x, y in zip(a, b, strict=True))


# Orientation -------------------------------------------------------------------------------------------------


def test_exif_orientation_6_rotates_the_picture():
    # Stored 64 wide x 32 high, left half red, right half blue; orientation 6 = rotate 90 degrees clockwise.
    stored = Image.new("RGB", (64, 32), (255, 0, 0))
    stored.paste((0, 0, 255), (32, 0, 64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    picture = decode_image(save(stored, "JPEG", exif=exif, quality=95), LIMITS)
    assert picture.size == (32, 64)
    assert close(picture.getpixel((16, 8)), (255, 0, 0))  # the left half is now on top
    assert close(picture.getpixel((16, 56)), (0, 0, 255))


def test_exif_orientation_changes_the_embedding(inference):
    stored = patterned_image(3, size=(64, 32))
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = embedding(inference, b64(save(stored, "JPEG", exif=exif, quality=95)))
    upright = embedding(inference, b64(save(stored.rotate(-90, expand=True), "JPEG", quality=95)))
    as_stored = embedding(inference, b64(save(stored, "JPEG", quality=95)))
    assert np.abs(rotated - upright).max() < np.abs(rotated - as_stored).max()


# Transparency --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "color", "fmt"),
    [
        ("RGBA", (0, 0, 0, 0), "PNG"),
        ("LA", (0, 0), "PNG"),
        ("RGBA", (0, 0, 0, 0), "WEBP"),
    ],
)
def test_transparent_pixels_are_composited_on_white(mode, color, fmt):
    data = save(Image.new(mode, (16, 16), color), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    picture = decode_image(data, LIMITS)
    assert picture.mode == "RGB"
    assert picture.getpixel((8, 8)) == WHITE


def test_transparent_palette_gif_is_composited_on_white():
    image = Image.new("P", (16, 16), 0)
    image.putpalette([0, 0, 0] * 256)
    picture = decode_image(save(image, "GIF", transparency=0), LIMITS)
    assert picture.getpixel((8, 8)) == WHITE


def test_half_transparent_pixels_blend_towards_white():
    picture = decode_image(save(Image.new("RGBA", (8, 8), (0, 0, 0, 128)), "PNG"), LIMITS)
    assert close(picture.getpixel((4, 4)), (127, 127, 127), tolerance=2)


def test_transparent_image_embeds_like_the_same_image_on_white(inference):
    transparent = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    transparent.paste((200, 30, 30, 255), (8, 8, 24, 24))
    on_white = Image.new("RGB", (32, 32), WHITE)
    on_white.paste((200, 30, 30), (8, 8, 24, 24))
    np.testing.assert_allclose(
        embedding(inference, b64(save(transparent, "PNG"))),
        embedding(inference, b64(save(on_white, "PNG"))),
        atol=1e-6,
    )


# Animation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG"])
def test_animated_image_gives_its_first_frame(fmt):
    first, second = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = save(first, fmt, save_all=True, append_images=[second], duration=100, loop=0, **options)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    assert close(decode_image(data, LIMITS).getpixel((8, 8)), (255, 0, 0))


# Formats ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP"])
def test_supported_formats_are_accepted(inference, fmt):
    result = inference({"inputs": b64(image_bytes(fmt=fmt)), "parameters": {"mode": "image_embedding"}})
    assert len(result[0]["embedding"]) == 32


def test_multi_picture_jpeg_from_a_camera_is_accepted_as_jpeg():
    first, second = Image.new("RGB", (16, 16), (255, 0, 0)), Image.new("RGB", (16, 16), (0, 0, 255))
    data = save(first, "MPO", save_all=True, append_images=[second])
    assert Image.open(io.BytesIO(data)).format == "MPO"  # what Pillow calls a JPEG with an MP extension
    assert close(decode_image(data, LIMITS).getpixel((8, 8)), (255, 0, 0))


@pytest.mark.parametrize("size", [(1, 1), (1, 2000), (2000, 1)])
def test_tiny_and_extreme_aspect_ratio_images_are_embedded(inference, size):
    result = inference({"inputs": b64(image_bytes(size=size)), "parameters": {"mode": "image_embedding"}})
    assert len(result[0]["embedding"]) == 32


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM", "TGA"])
def test_other_formats_are_refused(fmt):
    with pytest.raises(BadInput, match="not a supported image"):
        decode_image(image_bytes(fmt=fmt), LIMITS)


@pytest.mark.parametrize("mode", ["L", "1", "CMYK", "P", "I;16"])
def test_other_pixel_modes_become_rgb(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    picture = decode_image(save(Image.new(mode, (8, 8)), fmt), LIMITS)
    assert picture.mode == "RGB"


def test_16_bit_white_stays_white():
    image = Image.new("I;16", (8, 8))
    image.putdata([65535] * 64)
    assert decode_image(save(image, "PNG"), LIMITS).getpixel((4, 4)) == WHITE


def test_pixel_limit_is_checked_before_decoding():
    data = save(Image.new("L", (300, 300)), "PNG")  # under 1 KB on disk, 90,000 pixels
    with pytest.raises(BadInput, match="90000 pixels"):
        decode_image(data, ImageLimits(max_bytes=10_000, max_pixels=50_000))


# Base64 and data URIs ----------------------------------------------------------------------------------------


def test_base64_with_newlines_and_spaces_is_tolerated(inference):
    data = encode_png(patterned_image(5))
    compact = embedding(inference, b64(data))
    wrapped = base64.encodebytes(data).decode()  # a newline every 76 characters
    assert "\n" in wrapped
    spaced = " ".join(b64(data)[i : i + 10] for i in range(0, len(b64(data)), 10))
    crlf = "\r\n" + base64.encodebytes(data).decode().replace("\n", "\r\n")
    for variant in (wrapped, spaced, crlf):
        np.testing.assert_allclose(embedding(inference, variant), compact, atol=1e-6)


def test_base64_without_padding_is_tolerated(inference):
    data = encode_png(patterned_image(6))
    text = b64(data)
    assert text.endswith("=")
    np.testing.assert_allclose(embedding(inference, text.rstrip("=")), embedding(inference, text), atol=1e-6)


def test_data_uri_gives_the_same_picture_as_raw_base64(inference):
    data = encode_png(patterned_image(7))
    np.testing.assert_allclose(
        embedding(inference, f"data:image/png;base64,{b64(data)}"), embedding(inference, b64(data)), atol=1e-6
    )


@pytest.mark.parametrize("mime", ["text/plain", "application/octet-stream", "text/html"])
def test_data_uri_with_a_non_image_type_is_refused(inference, mime):
    value = f"data:{mime};base64,{b64(image_bytes())}"
    with pytest.raises(BadInput, match="image/"):
        inference({"inputs": value, "parameters": {"mode": "image_embedding"}})


def test_data_uri_without_base64_is_refused(inference):
    with pytest.raises(BadInput, match="data URI"):
        inference({"inputs": "data:image/png,abc", "parameters": {"mode": "image_embedding"}})


def test_data_uri_payload_that_is_not_an_image_is_refused(inference):
    with pytest.raises(BadInput, match="not a supported image"):
        inference(
            {"inputs": f"data:image/png;base64,{b64(b'hello')}", "parameters": {"mode": "image_embedding"}}
        )
