"""The relevance lab's costs and the weight it suggests, same run:

1. At --products (100k) products x 3 images (bench_retrieval.py's catalog, text encoding left out): p50
   of plain search against explain: true, and against sort-within-cut-off (min_vector_score chosen so
   that about --passing products pass, sorted by price; and a sort without a cut-off, the top k), in
   the vector and the hybrid mode, plus one why-not (POST /search/explain's core) per query.
2. ``evaluate`` through the service's search path: the time for --eval-queries (1,000) judged queries
   per mode on the generated catalog (devtools/sample_hybrid.py: SKU codes in titles, looks simulated
   in vectors), and ``--suggest-weight`` on a smaller mixed set (SKU, look, brand+look queries): the best
   weight's NDCG@10 against the default 0.5's.

    nice -n 10 .venv/bin/python bench/bench_relevance.py [--products 100000] [--dim 768]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import median, write_result
from bench_retrieval import BRANDS, COLORS, PrecomputedTexts, fill


def scale_part(args: argparse.Namespace) -> list[dict[str, object]]:
    from search.catalog import Catalog
    from search.catalog.db import migrate
    from search.catalog.query import Example, SearchQuery
    from search.catalog.sorting import SortKey
    from search.catalog.why_not import why_not
    from search.images.store import ImageStore
    from search.index.spec import IndexSpec
    from search.wiring import build_products

    rng = np.random.default_rng(0)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        migrate(url)
        vectors = fill(url, args.products, args.dim, rng)
        texts = {}
        for q in range(args.queries):
            text = f"{BRANDS[q % len(BRANDS)]} {COLORS[q % len(COLORS)]} tile {q}"
            query = vectors[int(rng.integers(len(vectors)))] + 0.8 * rng.standard_normal(args.dim).astype(
                np.float32
            ) / np.sqrt(args.dim)
            texts[text] = (query / np.linalg.norm(query)).astype(np.float32)
        service = build_products(
            Catalog.open(url),
            model="bench/retrieval",
            index_path=Path(tmp) / "index.faiss",
            image_store=ImageStore(Path(tmp) / "images"),
            dim=args.dim,
            encoder=PrecomputedTexts(texts),  # type: ignore[arg-type]
            index_spec=IndexSpec(kind=args.index),
        )
        index = service.index.describe()["description"]
        # Each query's cut-off: the cosine of its --passing-th product, so about that many pass.
        cuts = {}
        for text in texts:
            hits = service.search(SearchQuery([Example(text=text)], mode="vector", k=args.passing)).hits
            cuts[text] = hits[-1].score
        price = [SortKey("price", "asc")]
        paths = {
            "vector": lambda t: dict(mode="vector"),
            "vector + explain": lambda t: dict(mode="vector", explain=True),
            "vector + min_vector_score + sort price": lambda t: dict(
                mode="vector", min_vector_score=cuts[t], sort=price
            ),
            "hybrid": lambda t: dict(mode="hybrid"),
            "hybrid + explain": lambda t: dict(mode="hybrid", explain=True),
            "hybrid + min_vector_score + sort price": lambda t: dict(
                mode="hybrid", min_vector_score=cuts[t], sort=price
            ),
            "hybrid + sort price (no cut-off: top k)": lambda t: dict(mode="hybrid", sort=price),
        }
        totals: dict[str, list[int]] = {}
        for name, options in paths.items():
            samples = []
            first = next(iter(texts))
            service.search(SearchQuery([Example(text=first)], k=args.k, **options(first)))  # warm
            for text in texts:
                begun = time.perf_counter()
                answer = service.search(SearchQuery([Example(text=text)], k=args.k, **options(text)))
                samples.append(time.perf_counter() - begun)
                if answer.total is not None:
                    totals.setdefault(name, []).append(answer.total)
            rows.append({"path": name, "p50_ms": median(samples) * 1000, "queries": len(samples)})
        samples = []
        for text in texts:  # why-not of the product at rank ~50 of the hybrid ranking
            target = service.search(SearchQuery([Example(text=text)], mode="hybrid", k=50)).hits[-1]
            begun = time.perf_counter()
            why_not(
                service.finder,
                SearchQuery([Example(text=text)], mode="hybrid", k=10),
                target.record.external_id,
            )
            samples.append(time.perf_counter() - begun)
        rows.append(
            {"path": "why-not (rank ~50, hybrid)", "p50_ms": median(samples) * 1000, "queries": len(samples)}
        )
        service.catalog.close()
    base = {row["path"]: row["p50_ms"] for row in rows}
    print(
        f"{args.products} products x 3 images, {args.dim}-d, index {index}, k={args.k}, {args.queries} queries"
    )
    print("| path | p50 ms | vs plain | sorted set (median total) |")
    print("|---|---|---|---|")
    for row in rows:
        plain = base["hybrid" if "hybrid" in str(row["path"]) else "vector"]
        total = totals.get(str(row["path"]))
        shown = f"{int(np.median(total))}" if total else ""
        print(f"| {row['path']} | {row['p50_ms']:.1f} | {row['p50_ms'] / plain:.2f}x | {shown} |")
        row["median_total"] = int(np.median(total)) if total else None
    return rows


def judgements_file(path: Path, sample, queries: list[tuple[str, dict[str, int]]]) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query", "product_id", "grade"])
        for text, grades in queries:
            writer.writerows((text, pid, grade) for pid, grade in grades.items())


def evaluate_part(args: argparse.Namespace) -> dict[str, object]:
    from devtools.sample_hybrid import build_hybrid_catalog, random_directions, simulated_query
    from search.catalog import Catalog
    from search.catalog.db import migrate
    from search.images.store import ImageStore
    from search.relevance.evaluation import ServiceSearcher, evaluate, variants, weight_curve
    from search.relevance.judgements import read_judgements
    from search.wiring import build_products

    rng = np.random.default_rng(1)
    sample = build_hybrid_catalog(
        args.eval_products,
        random_directions(args.eval_dim),
        noise=0.8,
        color_in_title=0.5,
        model="bench/relevance",
    )
    texts: dict[str, np.ndarray] = {}
    sku, look, brand_look = [], [], []
    for pid, code in sample.sku.items():
        texts[code] = simulated_query(random_directions(args.eval_dim, seed=len(texts) + 99)[0], 0, rng)
        sku.append((code, {pid: 3}))
    for text, i, truth in sample.look_queries():
        texts[text] = simulated_query(sample.directions[i], 0.8, rng)
        look.append((text, {pid: 2 for pid in truth}))
    for text, i, truth in sample.brand_look_queries():
        texts[text] = simulated_query(sample.directions[i], 0.8, rng)
        same_look = [p for p, other in sample.look.items() if other == i and p not in truth][:20]
        brand_look.append((text, {**{pid: 1 for pid in same_look}, **{pid: 3 for pid in truth}}))
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'eval.db'}"
        migrate(url)
        catalog = Catalog.open(url)
        for start in range(0, len(sample.writes), 1000):
            catalog.upsert(sample.writes[start : start + 1000])
        service = build_products(
            catalog,
            model="bench/relevance",
            index_path=Path(tmp) / "i.faiss",
            image_store=ImageStore(Path(tmp)),
            dim=args.eval_dim,
            encoder=PrecomputedTexts(texts),  # type: ignore[arg-type]
        )
        searcher = ServiceSearcher(service, Path(tmp))
        thousand = Path(tmp) / "thousand.csv"
        many = look + brand_look + sku[: args.eval_queries - len(look) - len(brand_look)]
        judgements_file(thousand, sample, many)
        judged = read_judgements(thousand)
        timing = {}
        for variant in variants(["vector", "lexical", "hybrid"], [0.5]):
            begun = time.perf_counter()
            evaluate(judged, searcher, [variant], 10)
            timing[variant.name] = time.perf_counter() - begun
        out["evaluate_seconds"] = {"queries": len(judged.queries), **timing}
        balanced = Path(tmp) / "balanced.csv"
        judgements_file(balanced, sample, sku[: args.sku_queries] + look + brand_look)
        judged = read_judgements(balanced)
        weights = [round(i * 0.05, 2) for i in range(21)]
        begun = time.perf_counter()
        rows = evaluate(judged, searcher, variants(["vector", "lexical", "hybrid"], weights), 10)
        suggest_s = time.perf_counter() - begun
        best, curve = weight_curve(rows)
        out["suggest"] = {
            "queries": len(judged.queries),
            "seconds": suggest_s,
            "best_weight": best,
            "best_ndcg": dict(curve)[best],
            "default_ndcg": dict(curve)[0.5],
            "vector_ndcg": rows[0]["ndcg"],
            "lexical_ndcg": rows[1]["ndcg"],
            "curve": curve,
        }
        catalog.close()
    t = out["evaluate_seconds"]
    print(
        f"evaluate, {t['queries']} queries on {args.eval_products} products ({args.eval_dim}-d): "
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in t.items() if name != "queries")
    )
    s = out["suggest"]
    print(
        f"suggest-weight on {s['queries']} queries ({args.sku_queries} SKU, {len(look)} look, "
        f"{len(brand_look)} brand+look), "
        f"{s['seconds']:.1f} s: best w={s['best_weight']:g} NDCG@10 {s['best_ndcg']:.4f}; "
        f"default 0.5: {s['default_ndcg']:.4f}; vector {s['vector_ndcg']:.4f}, lexical {s['lexical_ndcg']:.4f}"
    )
    print("curve: " + " ".join(f"{w:g}:{n:.3f}" for w, n in s["curve"]))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--passing", type=int, default=1000, help="products above each query's cut-off")
    parser.add_argument("--index", choices=("auto", "flat"), default="auto")
    parser.add_argument("--eval-products", type=int, default=3000)
    parser.add_argument("--eval-dim", type=int, default=64)
    parser.add_argument("--eval-queries", type=int, default=1000)
    parser.add_argument("--sku-queries", type=int, default=120)
    parser.add_argument("--skip-scale", action="store_true")
    parser.add_argument("--skip-eval", action="store_true")
    parser.add_argument(
        "--faiss-threads",
        type=int,
        default=1,
        help="FAISS's OpenMP threads: on the shared, overloaded 2 cores, OpenMP's spinning made one exact "
        "search of 9,000 vectors 33 ms instead of 5 (both sides of every ratio run with the same)",
    )
    args = parser.parse_args()
    import faiss

    faiss.omp_set_num_threads(args.faiss_threads)
    result: dict[str, object] = {"args": vars(args)}
    if not args.skip_scale:
        result["scale"] = scale_part(args)
    if not args.skip_eval:
        result["evaluate"] = evaluate_part(args)
    print(f"results: {write_result('relevance', result)}")


if __name__ == "__main__":
    main()
