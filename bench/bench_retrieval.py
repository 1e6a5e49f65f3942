"""Product-level search latency at catalog scale: vector-only vs hybrid vs facets vs filters, same run.

A catalog of N products with three images each (3N vectors, random low-rank-ish unit vectors), titles
with brands, colour words and SKU codes, typed attributes (price, color), in SQLite (FTS5 + attribute
tables as migrations create them), with the server's default index (``--index auto``: IVF-SQ8 past 50k
vectors) or the exact one (``--index flat``, where the vector side costs the same in every path). Text encoding is left out on purpose: each query's
text embedding is a precomputed vector (``PrecomputedTexts``), so the numbers are everything after the
model (revision check, FAISS, grouping images into products, full-text query, fusion, SQL filters and
facets, reading the result rows). Setup writes rows with bulk SQL (the schema the migrations create);
what is timed is ``ProductService.search`` as the API calls it.

    .venv/bin/python bench/bench_retrieval.py [--products 100000] [--dim 768] [--queries 60] [--index auto|flat]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _common import median, percentile, write_result

BRANDS = ("acme", "borealis", "corvin", "dunmore", "elkstone", "fjordal", "gantry", "halvard")
COLORS = ("red", "blue", "green", "black", "white", "beige", "grey", "oak")
CATEGORIES = tuple(f"category {i}" for i in range(20))


class PrecomputedTexts:
    """Stands in for the text tower: a fixed vector per query text (encoding is not what is timed)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])


def fill(url: str, products: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Bulk-insert the catalog; returns the image vectors (row i = image id i + 1)."""
    from sqlalchemy import create_engine, insert, text

    from search.catalog.schema import Product, ProductAttribute, ProductImage, attribute_rows, search_document

    centres = rng.standard_normal((200, dim)).astype(np.float32)
    engine = create_engine(url)
    all_vectors = np.zeros((products * 3, dim), np.float32)
    now = datetime(2026, 11, 28, tzinfo=UTC)
    with engine.begin() as conn:
        for start in range(0, products, 5000):
            stop = min(products, start + 5000)
            rows, images, attributes = [], [], []
            for i in range(start, stop):
                attrs = {"color": COLORS[i % len(COLORS)], "price": round(float(rng.uniform(1, 200)), 2)}
                title = f"{BRANDS[i % len(BRANDS)].title()} {COLORS[(i * 7) % len(COLORS)]} tile {'TKQ'[i % 3]}X-{10000 + i}"
                category = CATEGORIES[i % len(CATEGORIES)]
                rows.append(
                    {
                        "id": i + 1,
                        "external_id": f"p{i:07d}",
                        "title": title,
                        "category": category,
                        "attributes": attrs,
                        "search_text": search_document(f"p{i:07d}", title, category, attrs),
                        "revision": 1,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                attributes += attribute_rows(i + 1, attrs)
            vectors = centres[rng.integers(0, len(centres), (stop - start) * 3)]
            vectors = vectors + 0.5 * rng.standard_normal(vectors.shape).astype(np.float32)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            all_vectors[start * 3 : stop * 3] = vectors
            for n, vector in enumerate(vectors):
                product = start + n // 3
                images.append(
                    {
                        "id": start * 3 + n + 1,
                        "product_id": product + 1,
                        "position": n % 3,
                        "image_ref": f"https://img.example/{product}/{n % 3}.jpg",
                        "embedding": vector.astype("<f4").tobytes(),
                        "embedding_dim": dim,
                        "embedding_model": "bench/retrieval",
                        "revision": 1,
                    }
                )
            conn.execute(insert(Product), [{**row, "attributes": row["attributes"]} for row in rows])
            conn.execute(insert(ProductImage), images)
            conn.execute(insert(ProductAttribute), attributes)
        conn.execute(text("UPDATE catalog_state SET revision = 1"))
    engine.dispose()
    return all_vectors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--index", choices=("auto", "flat"), default="auto")
    args = parser.parse_args()

    from search.catalog import Catalog
    from search.catalog.db import migrate
    from search.catalog.filters import Filters
    from search.catalog.query import Example, SearchQuery
    from search.images.store import ImageStore
    from search.index.spec import IndexSpec
    from search.wiring import build_products

    rng = np.random.default_rng(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate(url)
        started = time.perf_counter()
        vectors = fill(url, args.products, args.dim, rng)
        setup_s = time.perf_counter() - started
        texts = {}
        for q in range(args.queries):
            kind = q % 3
            if kind == 0:
                text = f"{BRANDS[q % len(BRANDS)]} {COLORS[q % len(COLORS)]} tile"
            elif kind == 1:
                text = f"{'TKQ'[q % 3]}X-{10000 + int(rng.integers(args.products))}"
            else:
                text = f"{COLORS[q % len(COLORS)]} matte"
            query = vectors[int(rng.integers(len(vectors)))] + 0.8 * rng.standard_normal(args.dim).astype(
                np.float32
            ) / np.sqrt(args.dim)
            texts[text] = (query / np.linalg.norm(query)).astype(np.float32)
        started = time.perf_counter()
        service = build_products(
            Catalog.open(url),
            model="bench/retrieval",
            index_path=Path(tmp) / "index.faiss",
            image_store=ImageStore(Path(tmp) / "images"),
            dim=args.dim,
            encoder=PrecomputedTexts(texts),  # type: ignore[arg-type]
            index_spec=IndexSpec(kind=args.index),
        )
        build_s = time.perf_counter() - started
        index_description = service.index.describe()["description"]
        price = Filters.parse({"price": {"gte": 20, "lt": 80}, "color": {"in": ["red", "blue", "oak"]}}, 100)
        paths = {
            "vector": dict(mode="vector"),
            "hybrid": dict(mode="hybrid"),
            "lexical": dict(mode="lexical"),
            "vector + facets (category, color)": dict(mode="vector", facets=["category", "color"]),
            "hybrid + facets (category, color)": dict(mode="hybrid", facets=["category", "color"]),
            "vector + filter (price range, color in)": dict(mode="vector", filters=price),
            "hybrid + filter + facets": dict(mode="hybrid", filters=price, facets=["category", "color"]),
        }
        for name, options in paths.items():
            samples = []
            service.search(SearchQuery([Example(text=next(iter(texts)))], k=args.k, **options))  # warm
            for text in texts:
                begun = time.perf_counter()
                service.search(SearchQuery([Example(text=text)], k=args.k, **options))
                samples.append(time.perf_counter() - begun)
            rows.append(
                {"path": name, "p50_ms": median(samples) * 1000, "p95_ms": percentile(samples, 95) * 1000}
            )
        service.catalog.close()

    base = rows[0]["p50_ms"]
    print(
        f"{args.products:,} products x 3 images = {3 * args.products:,} vectors, {args.dim}-d, "
        f"index: {index_description}, "
        f"k={args.k}, {len(texts)} queries per path (setup {setup_s:.0f} s, index build {build_s:.0f} s)"
    )
    print("| path | p50 | p95 | p50 vs vector-only |")
    print("|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['path']} | {row['p50_ms']:.1f} ms | {row['p95_ms']:.1f} ms | {row['p50_ms'] / base:.2f}x |"
        )
    print(f"results: {write_result('retrieval', {'args': vars(args), 'rows': rows})}")


if __name__ == "__main__":
    main()
