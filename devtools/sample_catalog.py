"""A synthetic product catalog for demos, tests and benchmarks (real product photos are not available).

Every product gets a distinct combination of category, colour and pattern, drawn as a picture that a
model (even a random one) can tell apart, plus a manifest row with title, category and attributes.
"""

from __future__ import annotations

import csv
import itertools
import random
from pathlib import Path

from search.model.backends.probe_pictures import COLORS, PATTERNS, draw_pattern

CATEGORIES = (
    "ceramic tile",
    "porcelain tile",
    "natural stone",
    "mosaic tile",
    "wood flooring",
    "vinyl flooring",
)
FINISHES = ("matte", "glossy", "textured")


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
            draw_pattern(pattern, COLORS[color], size, rng).save(out_dir / relative, fmt)
            title = f"{color.capitalize()} {finish} {pattern} {category}"
            writer.writerow([product_id, relative, title, category, color, pattern, finish])
    return manifest
