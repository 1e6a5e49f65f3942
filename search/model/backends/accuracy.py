"""The accuracy check every converted model passes before it serves: cosine to float32 transformers.

Probe inputs are fixed (seeded), so a check is repeatable; the float32 reference outputs and the
checkpoint's logit scale and bias are taken from the transformers model the conversion starts from.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from search.model.backends.base import RuntimeChoice, min_cosine
from search.model.backends.export_cache import MIN_COSINE

log = logging.getLogger(__name__)

PROBES = 6  # 4 drawings + 2 noisy block pictures


def probe_inputs(config: object, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Fixed probe inputs, and token ids. Pictures: product-like drawings (flat colours, stripes,
    checks, dots: where int8 was measured to fall below 0.999 on siglip2-base although noise-like
    probes passed) and blocks with noise, scaled to [-1, 1] as SigLIP's processors do."""
    from search.model.backends.probe_pictures import COLORS, draw_pattern

    rng = np.random.default_rng(seed)
    size = int(config.vision_config.image_size)
    pixels = np.empty((PROBES, 3, size, size), np.float32)
    drawings = [("checks", "beige"), ("stripes", "oak"), ("dots", "slate"), ("diagonal", "terracotta")]
    for i, (pattern, color) in enumerate(drawings):
        picture = draw_pattern(pattern, COLORS[color], size, random.Random(seed + i))
        pixels[i] = np.asarray(picture, np.float32).transpose(2, 0, 1) / 127.5 - 1
    for i in range(len(drawings), PROBES):
        cells = 2 + 2 * i  # coarse to fine blocks
        blocks = rng.choice([-1.0, -0.5, 0.0, 0.7, 1.0], (3, cells, cells))
        repeat = size // cells + 1
        picture = np.repeat(np.repeat(blocks, repeat, axis=1), repeat, axis=2)[:, :size, :size]
        pixels[i] = np.clip(picture + rng.normal(0, 0.05, picture.shape), -1, 1)
    length = int(config.text_config.max_position_embeddings)
    vocab = int(config.text_config.vocab_size)
    ids = np.zeros((PROBES, length), np.int64)
    for row, words in enumerate(rng.integers(2, min(length, 16), PROBES)):
        ids[row, :words] = rng.integers(1, vocab, words)
    return pixels, ids


@dataclass
class Reference:
    """Probe inputs and what float32 transformers answers for them."""

    pixels: np.ndarray
    ids: np.ndarray
    image: np.ndarray
    text: np.ndarray
    logit_scale: float
    logit_bias: float

    @classmethod
    def of(cls, model: object) -> Reference:
        import torch

        pixels, ids = probe_inputs(model.config)
        with torch.inference_mode():
            image = model.get_image_features(pixel_values=torch.from_numpy(pixels)).pooler_output.numpy()
            text = model.get_text_features(input_ids=torch.from_numpy(ids)).pooler_output.numpy()
            scale = float(model.logit_scale.float().exp().item())
            bias = float(model.logit_bias.float().item())
        return cls(pixels, ids, image, text, scale, bias)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            pixels=self.pixels,
            ids=self.ids,
            image=self.image,
            text=self.text,
            logits=np.array([self.logit_scale, self.logit_bias], np.float64),
        )

    @classmethod
    def load(cls, path: Path) -> Reference:
        with np.load(path) as saved:
            scale, bias = saved["logits"].tolist()
            return cls(saved["pixels"], saved["ids"], saved["image"], saved["text"], scale, bias)

    def check(
        self,
        choice: RuntimeChoice,
        image_features: Callable[[np.ndarray], np.ndarray],
        text_features: Callable[[np.ndarray], np.ndarray],
    ) -> dict:
        """The manifest facts of a converted model: its cosines to float32 and whether it may serve."""
        cosine = {
            "image": min_cosine(image_features(self.pixels), self.image),
            "text": min_cosine(text_features(self.ids), self.text),
        }
        accepted = min(cosine.values()) >= MIN_COSINE
        log.info("%s: cosine to float32 %s -> %s", choice, cosine, "accepted" if accepted else "REFUSED")
        return {
            "runtime": choice.runtime,
            "precision": choice.precision,
            "cosine": cosine,
            "accepted": accepted,
            "logit_scale": self.logit_scale,
            "logit_bias": self.logit_bias,
        }
