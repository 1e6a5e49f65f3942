"""A synthetic catalog whose titles and vectors carry the truth, for measuring hybrid ranking.

Titles hold a brand word and a SKU code ("Acme Halden TX-4471"), so only the lexical side can match a
SKU or a brand; a share of titles also names a colour, sometimes the wrong one (as merchants' titles
do). What a product *looks like* is only in its vectors. With random weights no picture means anything,
so the visual truth is simulated: each look has a direction, and a product's image vectors are that
direction plus noise. The directions are either the encoder's own text embeddings of the look
descriptions (so a real text query lands on its look: the tests) or random unit vectors with simulated
query embeddings (the weight measurement in bench/bench_hybrid.py). Lexical truth is real SQL
full-text search either way.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from search.catalog.records import ImageWrite, ProductWrite

BRANDS = ("acme", "borealis", "corvin", "dunmore", "elkstone", "fjordal", "gantry", "halvard")
COLORS = ("red", "blue", "green", "black")
PATTERNS = ("striped", "dotted", "checked")
LOOKS = tuple(f"{color} {pattern}" for color, pattern in itertools.product(COLORS, PATTERNS))
NAMES = ("halden", "marlow", "osprey", "quarry", "sable", "tamsin", "umber", "vesper")
CATEGORIES = ("floor", "wall", "outdoor")


@dataclass
class HybridCatalog:
    writes: list[ProductWrite]
    brand: dict[str, str]  # product id -> brand
    look: dict[str, int]  # product id -> index into LOOKS
    sku: dict[str, str]  # product id -> SKU code
    directions: np.ndarray  # (looks, dim): where each look's images point

    def sku_queries(self) -> list[tuple[str, set[str]]]:
        return [(code, {pid}) for pid, code in self.sku.items()]

    def look_queries(self) -> list[tuple[str, int, set[str]]]:
        """(description, look, products with that look)."""
        return [(LOOKS[i], i, {p for p, look in self.look.items() if look == i}) for i in range(len(LOOKS))]

    def brand_look_queries(self) -> list[tuple[str, int, set[str]]]:
        """("<brand> <look>", look, products of that brand with that look)."""
        return [
            (
                f"{brand} {LOOKS[i]}",
                i,
                {p for p, look in self.look.items() if look == i and self.brand[p] == brand},
            )
            for brand, i in itertools.product(BRANDS, range(len(LOOKS)))
        ]


def build_hybrid_catalog(
    count: int,
    directions: np.ndarray,
    *,
    images_per_product: int = 3,
    noise: float = 0.3,
    color_in_title: float = 0.0,
    wrong_color: float = 0.3,
    model: str = "hybrid-sample",
    seed: int = 0,
) -> HybridCatalog:
    """``directions``: one unit vector per look (LOOKS order). ``noise``: the image noise's norm
    relative to the direction. ``color_in_title``: share of titles naming a colour, of which
    ``wrong_color`` name the wrong one."""
    rng = np.random.default_rng(seed)
    dim = directions.shape[1]
    catalog = HybridCatalog([], {}, {}, {}, directions)
    for i in range(count):
        pid = f"hp-{i:06d}"
        brand, look = BRANDS[i % len(BRANDS)], int(rng.integers(len(LOOKS)))
        code = f"{'TXQ'[i % 3]}{'KMR'[i // 3 % 3]}-{4000 + i}"
        words = [brand.title(), NAMES[i % len(NAMES)].title()]
        if rng.random() < color_in_title:
            color = LOOKS[look].split()[0]
            if rng.random() < wrong_color:
                color = str(rng.choice([c for c in COLORS if c != color]))
            words.append(color)
        images = []
        for n in range(images_per_product):
            vector = directions[look] + noise * rng.standard_normal(dim) / np.sqrt(dim)
            vector = (vector / np.linalg.norm(vector)).astype(np.float32)
            images.append(
                ImageWrite(f"https://img.example/{pid}/{n}.jpg", embedding=vector, embedding_model=model)
            )
        catalog.writes.append(ProductWrite(pid, " ".join([*words, code]), CATEGORIES[i % 3], {}, images))
        catalog.brand[pid], catalog.look[pid], catalog.sku[pid] = brand, look, code
    return catalog


def random_directions(dim: int, seed: int = 0) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((len(LOOKS), dim))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def simulated_query(direction: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """What a trained model's text embedding of a look description would be: near its direction."""
    vector = direction + noise * rng.standard_normal(direction.shape[0]) / np.sqrt(direction.shape[0])
    return (vector / np.linalg.norm(vector)).astype(np.float32)
