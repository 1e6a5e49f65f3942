"""Search latency (p50/p95) at 10k and 100k vectors, excluding text encoding, flat and HNSW.

    .venv/bin/python bench/bench_search.py                       # 10k and 100k, 768-d
    .venv/bin/python bench/bench_search.py --sizes 10000 --queries 200

Synthetic, clustered, L2-normalised 768-d vectors (what image embeddings look like to an index). Per
size and index kind (flat: exact IDMap2,FlatIP; hnsw: HNSW32 at each --ef-search), three paths timed
per query:
- faiss:    VectorIndex.search alone;
- service:  ProductService search by vector as the API runs it: the revision check, FAISS, and reading
            the k products from SQLite;
- filtered: the same with a category filter (SQL for the allowed ids, then a FAISS id selector; for
            HNSW an exact scan of the allowed vectors when they are few).
Recall@k of HNSW is measured against the flat results of the same queries.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from _common import median, percentile, write_result


def clustered_vectors(n: int, dim: int, seed: int, clusters: int = 200):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    labels = rng.integers(0, clusters, n)
    vectors = centres[labels] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, labels


def time_each(queries, work) -> list[float]:
    """Seconds per query, after one warm-up query."""
    work(queries[0])
    out = []
    for query in queries:
        started = time.perf_counter()
        work(query)
        out.append(time.perf_counter() - started)
    return out


def measure(service, spec, queries, k, n, exact, rows):
    """Time the three paths for one index; recall@k against the flat answers (returned when flat)."""
    from search.products import Filters

    category = Filters(category="cat3")
    faiss_s = time_each(queries, lambda q: service.index.search(q, k))
    service_s = time_each(queries, lambda q: service._nearest(q, k, None, None, []))
    filtered_s = time_each(queries, lambda q: service._nearest(q, k, category, None, []))
    found = [{hit.id for hit in service.index.search(q, k)} for q in queries]
    if spec.kind == "flat":
        exact = found
    recall = (
        sum(len(a & b) for a, b in zip(found, exact, strict=True)) / (k * len(queries)) if exact else None
    )
    for path, samples in (
        ("faiss", faiss_s),
        ("service", service_s),
        ("filtered (1/20 of catalog)", filtered_s),
    ):
        rows.append(
            {
                "vectors": n,
                "index": spec.describe(),
                "path": path,
                "p50_ms": median(samples) * 1000,
                "p95_ms": percentile(samples, 95) * 1000,
                "recall_at_k_vs_flat": recall,
            }
        )
    return exact


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=["flat", "hnsw"], choices=["flat", "hnsw"])
    parser.add_argument("--ef-search", type=int, nargs="+", default=[64, 256])
    args = parser.parse_args()

    from search.catalog import Catalog, ProductWrite
    from search.db import migrate
    from search.image_store import ImageStore
    from search.index_spec import IndexSpec
    from search.products import ProductService

    model = "bench/synthetic"
    rows = []
    for n in args.sizes:
        vectors, labels = clustered_vectors(n, args.dim, seed=n)
        queries, _ = clustered_vectors(args.queries, args.dim, seed=n + 1)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            migrate(url)
            catalog = Catalog.open(url)
            started = time.perf_counter()
            for start in range(0, n, 5000):
                catalog.upsert(
                    [
                        ProductWrite(
                            external_id=f"p{i}",
                            image_ref=f"https://img.example/{i}.jpg",
                            title=f"product {i}",
                            category=f"cat{labels[i] % 20}",
                            attributes={"cluster": int(labels[i])},
                            embedding=vectors[i],
                            embedding_model=model,
                        )
                        for i in range(start, min(n, start + 5000))
                    ]
                )
            rows.append({"vectors": n, "path": "setup", "sqlite_insert_s": time.perf_counter() - started})
            exact: list[set[int]] | None = None
            for kind in args.kinds:
                spec = IndexSpec(kind=kind)
                started = time.perf_counter()
                service = ProductService(
                    catalog,
                    model=model,
                    index_path=Path(tmp) / f"index-{kind}.faiss",
                    image_store=ImageStore(Path(tmp) / "images"),
                    dim=args.dim,
                    index_spec=spec,
                )
                build_s = time.perf_counter() - started
                for ef in args.ef_search if kind == "hnsw" else [None]:
                    if ef is not None:  # the same graph searched at another breadth
                        spec = dataclasses.replace(spec, hnsw_ef_search=ef)
                        service.index._store.spec = spec
                    exact = measure(service, spec, queries, args.k, n, exact, rows)
                rows.append({"vectors": n, "index": kind, "path": "build", "build_s": build_s})
            catalog.close()

    print(f"{args.dim}-d, k={args.k}, {args.queries} queries per path")
    print("| vectors | index | path | p50 | p95 | recall@k vs flat (unfiltered) |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        if "p50_ms" in row:
            recall = "" if row["recall_at_k_vs_flat"] is None else f"{row['recall_at_k_vs_flat']:.3f}"
            print(
                f"| {row['vectors']:,} | {row['index']} | {row['path']} | {row['p50_ms']:.2f} ms "
                f"| {row['p95_ms']:.2f} ms | {recall} |"
            )
    for row in rows:
        if "sqlite_insert_s" in row:
            print(f"{row['vectors']:,} vectors: SQLite insert {row['sqlite_insert_s']:.1f} s")
        if "build_s" in row:
            print(
                f"{row['vectors']:,} vectors: {row['index']} built from the database in {row['build_s']:.2f} s"
            )
    print(f"results: {write_result('search', {'dim': args.dim, 'k': args.k, 'rows': rows})}")


if __name__ == "__main__":
    main()
