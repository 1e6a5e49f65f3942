"""Pictures -> the model's pixel input, without the generic image processor's per-call overhead.

Reads everything from the checkpoint's own image processor (size, resample filter, rescale factor,
mean, std), so it computes what the model was trained on: one PIL resize, then rescale and normalise
fused into one multiply-add per channel. Thread-safe: callers run it in worker threads while the
model runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image


class ImagePreprocessor:
    def __init__(self, image_processor: object) -> None:
        size = image_processor.size
        height = getattr(size, "height", None) or size["height"]
        width = getattr(size, "width", None) or size["width"]
        self.size = (int(width), int(height))
        self.resample = Image.Resampling(int(image_processor.resample))
        self.do_resize = bool(image_processor.do_resize)
        rescale = float(image_processor.rescale_factor) if image_processor.do_rescale else 1.0
        mean = np.asarray(image_processor.image_mean, np.float32)
        std = np.asarray(image_processor.image_std, np.float32)
        if not image_processor.do_normalize:
            mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
        # (x * rescale - mean) / std == x * scale + shift
        self._scale = (rescale / std).astype(np.float32)
        self._shift = (-mean / std).astype(np.float32)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray:
        """float32 pixel values (N, 3, H, W)."""
        width, height = self.size
        out = np.empty((len(images), 3, height, width), np.float32)
        for i, image in enumerate(images):
            if image.mode != "RGB":
                image = image.convert("RGB")
            if self.do_resize and image.size != self.size:
                image = image.resize(self.size, self.resample)
            pixels = np.asarray(image, dtype=np.float32)  # H, W, 3
            out[i] = (pixels * self._scale + self._shift).transpose(2, 0, 1)
        return out
