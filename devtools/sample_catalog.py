"""A synthetic product catalog for demos, tests and benchmarks (real product photos are not available).

Every product gets a distinct combination of category, colour and pattern, drawn as a picture that a
model (even a random one) can tell apart, plus a manifest row with title, category and attributes as a
real catalog has them: a supplier's SKU code (``TX-4400`` upwards: the README's lexical example finds
``TX-4471``), a brand and a price (for range filters and sorting).
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
BRANDS = ("Arden", "Bellstone", "Corvina", "Dunmore", "Eskola")
# A square metre's price band per category (EUR): stone and wood cost more than vinyl.
PRICE_BANDS = {
    "ceramic tile": (12, 40),
    "porcelain tile": (18, 60),
    "natural stone": (45, 120),
    "mosaic tile": (30, 90),
    "wood flooring": (35, 95),
    "vinyl flooring": (9, 30),
}
FIRST_SKU_CODE = 4400


def sku_code(number: int) -> str:
    """The supplier's code of product ``number``: TX-4400, TX-4401, ..."""
    return f"TX-{FIRST_SKU_CODE + number}"


def write_sample_catalog(out_dir: Path, count: int, *, seed: int = 0, size: int = 256) -> Path:
    """Write ``count`` images and ``manifest.csv`` into ``out_dir``; returns the manifest path."""
    rng = random.Random(seed)
    prices = random.Random(seed + 1)  # its own draws: the pictures stay those of earlier versions
    combos = list(itertools.product(CATEGORIES, COLORS, PATTERNS))
    rng.shuffle(combos)
    images_dir = out_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.csv"
    with manifest.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["id", "image", "title", "category", "color", "pattern", "finish", "sku", "brand", "price"]
        )
        for number in range(count):
            category, color, pattern = combos[number % len(combos)]
            finish = FINISHES[number % len(FINISHES)]
            product_id = f"sku-{number:05d}"
            fmt, extension = ("PNG", "png") if number % 5 == 0 else ("JPEG", "jpg")
            relative = f"images/{product_id}.{extension}"
            draw_pattern(pattern, COLORS[color], size, rng).save(out_dir / relative, fmt)
            brand = BRANDS[number % len(BRANDS)]
            low, high = PRICE_BANDS[category]
            price = round(prices.uniform(low, high), 1) - 0.01  # shelf prices: 24.99
            title = f"{brand} {color} {finish} {pattern} {category}"
            code = sku_code(number)
            writer.writerow(
                [product_id, relative, title, category, color, pattern, finish, code, brand, f"{price:.2f}"]
            )
    return manifest
