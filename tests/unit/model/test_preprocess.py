"""The fast preprocessing equals the checkpoint's own image processor: pixel for pixel, and within
cosine 0.9999 of the resulting embedding, also for a large camera-like JPEG through the image loader."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw
from transformers import SiglipImageProcessor

from search.images.loader import ImageLimits, decode_image
from search.model.encoder import Encoder
from search.model.preprocess import ImagePreprocessor
from tests.support.images import patterned_image

LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=40_000_000)


def photo_jpeg(size: tuple[int, int] = (1024, 768)) -> bytes:
    """A camera-like JPEG: smooth gradients, shapes with hard edges, fine noise."""
    width, height = size
    x = np.linspace(0, 1, width)[None, :]
    y = np.linspace(0, 1, height)[:, None]
    base = np.stack([200 * x + 30 * y, 120 + 80 * np.sin(6 * x + 3 * y), 90 + 120 * y * x], axis=-1)
    noise = np.random.default_rng(0).normal(0, 6, base.shape)
    picture = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(picture)
    draw.rectangle((200, 150, 620, 500), fill=(235, 225, 205), outline=(40, 40, 40), width=6)
    draw.ellipse((650, 300, 950, 700), fill=(30, 90, 160))
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def reference_pixels(processor: object, images: list[Image.Image]) -> np.ndarray:
    return processor(images=images, return_tensors="np")["pixel_values"]


def test_pixels_equal_the_checkpoints_processor_on_the_tiny_model(encoder: Encoder):
    images = [patterned_image(seed, size=(30 + 7 * seed, 50)) for seed in range(5)]
    images.append(Image.new("RGBA", (40, 40), (10, 200, 30, 128)).convert("RGB"))
    ours = encoder.preprocess(images)
    np.testing.assert_allclose(ours, reference_pixels(encoder.image_processor, images), atol=1e-5)


def test_embeddings_of_a_large_jpeg_equal_the_processors_within_1e_4(encoder: Encoder):
    data = photo_jpeg()
    # The reference decodes in full with PIL; ours goes through the one image loader (reduced decoding
    # where it applies), then the fast preprocessing.
    full = Image.open(io.BytesIO(data)).convert("RGB")
    ours = encoder.embed_pixels(encoder.preprocess([decode_image(data, LIMITS)]))
    reference = encoder.embed_pixels(reference_pixels(encoder.image_processor, [full]))
    assert float(ours[0] @ reference[0]) >= 0.9999


def test_a_512px_bilinear_processor_like_siglip2_base_is_matched_on_a_large_jpeg():
    # The settings of google/siglip2-base-patch16-512's preprocessor_config.json.
    processor = SiglipImageProcessor(
        size={"height": 512, "width": 512},
        resample=Image.Resampling.BILINEAR,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    picture = Image.open(io.BytesIO(photo_jpeg())).convert("RGB")
    ours = ImagePreprocessor(processor)([picture])
    assert ours.shape == (1, 3, 512, 512)
    np.testing.assert_allclose(ours, reference_pixels(processor, [picture]), atol=1e-5)
