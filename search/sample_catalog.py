"""A synthetic product catalog for demos, tests and benchmarks (real product photos are not available).

Every product gets a distinct combination of category, colour and pattern, drawn as a picture that a
model (even a random one) can tell apart, plus a manifest row with title, category and attributes.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

from PIL import Image, ImageDraw

CATEGORIES = (
    "ceramic tile",
    "porcelain tile",
    "natural stone",
    "mosaic tile",
    "wood flooring",
    "vinyl flooring",
)
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
FINISHES = ("matte", "glossy", "textured")


def _draw(pattern: str, color: tuple[int, int, int], size: int, rng: random.Random) -> Image.Image:
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


def write_sample_catalog(out_dir: Path, count: int, *, seed: int = 0, size: int = 256) -> Path:
    """Write ``count`` images and ``manifest.csv`` into ``out_dir``; returns the manifest path."""
    rng = random.Random(seed)
    combos = list(itertools.product(CATEGORIES, COLORS, PATTERNS))
    rng.shuffle(combos)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "title", "category", "color", "pattern", "finish"])
        for number in range(count):
            category, color, pattern = combos[number % len(combos)]
            finish = FINISHES[number % len(FINISHES)]
            product_id = f"sku-{number:05d}"
            fmt, extension = ("PNG", "png") if number % 5 == 0 else ("JPEG", "jpg")
            relative = f"images/{product_id}.{extension}"
            _draw(pattern, COLORS[color], size, rng).save(out_dir / relative, fmt)
            title = f"{color.capitalize()} {finish} {pattern} {category}"
            writer.writerow([product_id, relative, title, category, color, pattern, finish])
    return manifest
