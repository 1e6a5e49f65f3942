"""Product-like drawings: flat colours, stripes, checks, dots, diagonals and gradients.

The runtimes' accuracy check probes every conversion with such pictures (int8 was measured to fall
below 0.999 on them while noise-like probes passed), and the sample catalog draws its products with
the same function. Changing a drawing changes the probes: bump ``export_cache.CHECK_VERSION`` then.
"""

from __future__ import annotations

import itertools
import random

from PIL import Image, ImageDraw

COLORS = {
    "beige": (222, 204, 170),
    "white": (245, 245, 240),
    "charcoal": (54, 54, 58),
    "terracotta": (190, 90, 60),
    "sage": (140, 165, 130),
    "navy": (30, 45, 90),
    "oak": (180, 130, 80),
    "slate": (100, 110, 125),
    "ochre": (205, 150, 40),
    "rose": (215, 150, 160),
}
PATTERNS = ("solid", "stripes", "checks", "dots", "diagonal", "gradient")


def draw_pattern(pattern: str, color: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
    accent = tuple(255 - c for c in color)
    image = Image.new("RGB", (size, size), color)
    draw = ImageDraw.Draw(image)
    step = max(4, size // rng.randint(4, 10))
    if pattern == "stripes":
        for x in range(0, size, step * 2):
            draw.rectangle([x, 0, x + step - 1, size], fill=accent)
    elif pattern == "checks":
        for x, y in itertools.product(range(0, size, step), repeat=2):
            if (x // step + y // step) % 2:
                draw.rectangle([x, y, x + step - 1, y + step - 1], fill=accent)
    elif pattern == "dots":
        for x, y in itertools.product(range(step // 2, size, step), repeat=2):
            r = step // 3
            draw.ellipse([x - r, y - r, x + r, y + r], fill=accent)
    elif pattern == "diagonal":
        for offset in range(-size, size, step * 2):
            draw.polygon(
                [(offset, 0), (offset + step, 0), (offset + step + size, size), (offset + size, size)],
                fill=accent,
            )
    elif pattern == "gradient":
        for x in range(size):
            t = x / max(1, size - 1)
            draw.line(
                [(x, 0), (x, size)],
                fill=tuple(int(c * (1 - t) + a * t) for c, a in zip(color, accent, strict=True)),
            )
    # A little seeded noise so no two products are pixel-identical.
    for _ in range(size // 2):
        x, y = rng.randrange(size), rng.randrange(size)
        draw.point((x, y), fill=tuple(rng.randrange(256) for _ in range(3)))
    return image
