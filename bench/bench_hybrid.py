"""How the default hybrid fusion weight was chosen: ranking quality of vector, lexical and hybrid
(weighted reciprocal rank fusion) on a generated catalog whose titles and vectors carry the truth.

The catalog (devtools/sample_hybrid.py): titles hold a brand and a SKU code, some also a colour (30% of
those the wrong one); looks (colour + pattern) live only in the image vectors. The vector side is
simulated: a look description's query embedding is its look's direction plus noise (what a trained
model's text tower would give); a SKU code's or brand's embedding carries nothing about the product
(random). The lexical side is the real SQLite FTS5 query. Three query sets, each needing a side:
- sku          "TK-4017"                 truth: that product            metric: reciprocal rank
- look         "red striped"             truth: products of that look   metric: precision@10
- brand + look "acme red striped"        truth: that brand and look     metric: precision@10

    .venv/bin/python bench/bench_hybrid.py [--products 3000] [--dim 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import write_result

WEIGHTS = [0.0, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9, 1.0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=3000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--image-noise", type=float, default=0.8)
    parser.add_argument("--query-noise", type=float, default=0.8)
    parser.add_argument("--sku-queries", type=int, default=200)
    args = parser.parse_args()

    from devtools.sample_hybrid import build_hybrid_catalog, random_directions, simulated_query
    from search.catalog import Catalog
    from search.catalog.db import migrate
    from search.catalog.filters import Filters
    from search.catalog.fusion import reciprocal_rank_fusion
    from search.catalog.search import FUSION_WINDOW
    from search.images.store import ImageStore
    from search.wiring import build_products

    rng = np.random.default_rng(1)
    sample = build_hybrid_catalog(
        args.products,
        random_directions(args.dim),
        noise=args.image_noise,
        color_in_title=0.5,
        wrong_color=0.3,
        model="bench/hybrid",
    )
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate(url)
        catalog = Catalog.open(url)
        for start in range(0, len(sample.writes), 1000):
            catalog.upsert(sample.writes[start : start + 1000])
        service = build_products(
            catalog, model="bench/hybrid", index_path=Path(tmp) / "i.faiss", image_store=ImageStore(Path(tmp))
        )
        where = None  # no filter
        external = {
            record.id: record.external_id
            for record in catalog.get_by_ids(list(range(1, args.products + 1))).values()
        }

        def rankings(text: str, vector: np.ndarray) -> tuple[list[int], list[int]]:
            # The search's two candidate steps: the store's full-text ranking and the index's nearest
            # products (caught up first, as a search does).
            lexical = [pid for pid, _ in catalog.lexical(text, where, FUSION_WINDOW).ranking]
            service.finder.vectors.catch_up()
            nearest = service.finder.vectors.nearest(vector, FUSION_WINDOW, Filters(), [], None)
            return lexical, [candidate.product for candidate in nearest]

        queries = []  # (set, text, query vector, truth)
        skus = sample.sku_queries()
        for index in rng.choice(len(skus), size=min(args.sku_queries, len(skus)), replace=False):
            text, truth = skus[index]
            queries.append(
                (
                    "sku",
                    text,
                    simulated_query(random_directions(args.dim, seed=int(index) + 99)[0], 0, rng),
                    truth,
                )
            )
        for text, look, truth in sample.look_queries() * 4:
            queries.append(
                ("look", text, simulated_query(sample.directions[look], args.query_noise, rng), truth)
            )
        for text, look, truth in sample.brand_look_queries():
            queries.append(
                ("brand+look", text, simulated_query(sample.directions[look], args.query_noise, rng), truth)
            )

        def score(kind: str, ranked: list[str], truth: set[str]) -> float:
            if kind == "sku":
                return next((1 / (i + 1) for i, pid in enumerate(ranked[:10]) if pid in truth), 0.0)
            return sum(pid in truth for pid in ranked[:10]) / min(10, len(truth))

        started = time.perf_counter()
        table: dict[str, dict[str, list[float]]] = {}
        for kind, text, vector, truth in queries:
            lexical, vector_side = rankings(text, vector)
            candidates = {"vector": vector_side, "lexical": lexical}
            for weight in WEIGHTS:
                candidates[f"hybrid w={weight:.2f}"] = [
                    pid for pid, _ in reciprocal_rank_fusion(lexical, vector_side, weight)
                ]
            for name, ranked in candidates.items():
                table.setdefault(name, {}).setdefault(kind, []).append(
                    score(kind, [external[p] for p in ranked], truth)
                )
        seconds = time.perf_counter() - started
        catalog.close()

    kinds = ["sku", "look", "brand+look"]
    print(f"{args.products} products x 3 images, {args.dim}-d, {len(queries)} queries ({seconds:.1f} s)")
    print("| ranking | SKU: MRR@10 | look: P@10 | brand+look: P@10 | mean |")
    print("|---|---|---|---|---|")
    rows = []
    for name, by_kind in table.items():
        means = [float(np.mean(by_kind[kind])) for kind in kinds]
        rows.append({"ranking": name, **dict(zip(kinds, means, strict=True)), "mean": float(np.mean(means))})
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in means) + f" | {np.mean(means):.3f} |")
    best = max((row for row in rows if row["ranking"].startswith("hybrid")), key=lambda row: row["mean"])
    print(f"best hybrid weight by mean: {best['ranking']} ({best['mean']:.3f})")
    print(f"results: {write_result('hybrid-weight', {'args': vars(args), 'rows': rows})}")


if __name__ == "__main__":
    main()
