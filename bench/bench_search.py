"""Search latency (p50/p95) at 10k and 100k vectors, excluding text encoding, flat and HNSW.

    .venv/bin/python bench/bench_search.py                       # 10k and 100k, 768-d
    .venv/bin/python bench/bench_search.py --sizes 10000 --queries 200

Synthetic, clustered, L2-normalised 768-d vectors (--data lowrank or isotropic, see clustered_vectors). Per
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


def clustered_vectors(
    n: int, dim: int, seed: int, data: str = "lowrank", clusters: int = 200, mixture_seed: int = 12345
):
    """``n`` unit vectors from one fixed mixture (catalog and queries share it; ``seed`` draws the points).

    lowrank:   clusters in a 32-d space mapped into ``dim`` dimensions plus a little noise, like real
               image embeddings, whose intrinsic dimension is far below 768;
    isotropic: clusters with full-dimensional noise: every point of a cluster is almost equally near,
               the hard case for any approximate index.
    """
    import numpy as np

    mixture = np.random.default_rng(mixture_seed)  # the same clusters for every call with this seed
    rng = np.random.default_rng(seed)
    if data == "isotropic":
        centres = mixture.standard_normal((clusters, dim)).astype(np.float32)
        labels = rng.integers(0, clusters, n)
        vectors = centres[labels] + 0.35 * rng.standard_normal((n, dim)).astype(np.float32)
    else:
        rank = 32
        projection = mixture.standard_normal((rank, dim)).astype(np.float32)
        centres = mixture.standard_normal((clusters, rank)).astype(np.float32)
        labels = rng.integers(0, clusters, n)
        latent = centres[labels] + 0.5 * rng.standard_normal((n, rank)).astype(np.float32)
        vectors = latent @ projection + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
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


def measure(service, spec, queries, far, k, n, exact, rows):
    """Time the three paths for one index; recall@k against the flat answers (returned when flat)."""
    from search.catalog.filters import Filters
    from search.catalog.query import Example, SearchQuery

    category = Filters.parse({"category": "cat3"}, 100)

    def by_vector(q, filters=None):
        return service.search(SearchQuery([Example(vector=q)], filters=filters or Filters(), k=k))

    faiss_s = time_each(queries, lambda q: service.index.search(q, k))
    service_s = time_each(queries, by_vector)
    filtered_s = time_each(queries, lambda q: by_vector(q, category))
    found = [{hit.id for hit in service.index.search(q, k)} for q in queries]
    found_far = [{hit.id for hit in service.index.search(q, k)} for q in far]
    if spec.kind == "flat":
        exact = (found, found_far)

    def recall(got: list[set[int]], truth: list[set[int]] | None) -> float | None:
        if truth is None:
            return None
        return sum(len(a & b) for a, b in zip(got, truth, strict=True)) / (k * len(got))

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
                "recall_at_k_vs_flat": recall(found, exact[0]),
                "recall_at_k_vs_flat_far_queries": recall(found_far, exact[1]),
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
    parser.add_argument("--data", choices=["lowrank", "isotropic"], default="lowrank")
    args = parser.parse_args()

    from search.catalog import Catalog, ImageWrite, ProductWrite
    from search.catalog.db import migrate
    from search.images.store import ImageStore
    from search.index.spec import IndexSpec
    from search.wiring import build_products

    model = "bench/synthetic"
    rows = []
    for n in args.sizes:
        vectors, labels = clustered_vectors(n, args.dim, seed=n, data=args.data)
        queries, _ = clustered_vectors(args.queries, args.dim, seed=n + 1, data=args.data)
        # Far queries come from other clusters: far from every catalog vector, as text queries are from
        # image embeddings (the modality gap), the hard case for a graph index.
        far, _ = clustered_vectors(args.queries, args.dim, seed=n + 2, data=args.data, mixture_seed=777)
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
                            title=f"product {i}",
                            category=f"cat{labels[i] % 20}",
                            attributes={"cluster": int(labels[i])},
                            images=[
                                ImageWrite(
                                    f"https://img.example/{i}.jpg",
                                    embedding=vectors[i],
                                    embedding_model=model,
                                )
                            ],
                        )
                        for i in range(start, min(n, start + 5000))
                    ]
                )
            rows.append({"vectors": n, "path": "setup", "sqlite_insert_s": time.perf_counter() - started})
            exact: list[set[int]] | None = None
            exact_far: list[set[int]] | None = None
            for kind in args.kinds:
                spec = IndexSpec(kind=kind)
                started = time.perf_counter()
                service = build_products(
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
                    exact, exact_far = measure(
                        service, spec, queries, far, args.k, n, (exact, exact_far), rows
                    )
                rows.append({"vectors": n, "index": kind, "path": "build", "build_s": build_s})
            catalog.close()

    print(f"{args.data} data, {args.dim}-d, k={args.k}, {args.queries} queries per path")
    print("| vectors | index | path | p50 | p95 | recall@k vs flat | recall@k, far queries |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        if "p50_ms" in row:
            near, far_recall = (
                "" if value is None else f"{value:.3f}"
                for value in (row["recall_at_k_vs_flat"], row["recall_at_k_vs_flat_far_queries"])
            )
            print(
                f"| {row['vectors']:,} | {row['index']} | {row['path']} | {row['p50_ms']:.2f} ms "
                f"| {row['p95_ms']:.2f} ms | {near} | {far_recall} |"
            )
    for row in rows:
        if "sqlite_insert_s" in row:
            print(f"{row['vectors']:,} vectors: SQLite insert {row['sqlite_insert_s']:.1f} s")
        if "build_s" in row:
            print(
                f"{row['vectors']:,} vectors: {row['index']} built from the database in {row['build_s']:.2f} s"
            )
    print(
        f"results: {write_result('search-' + args.data, {'data': args.data, 'dim': args.dim, 'k': args.k, 'rows': rows})}"
    )


if __name__ == "__main__":
    main()
